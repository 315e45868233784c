// Launchers of the mesh primitives. bindings.cpp picks the CPU or CUDA one by device.
#pragma once
#include "common/aten.h"

#include <vector>

#include "mesh/antialias.h"
#include "mesh/interpolate.h"
#include "mesh/texture.h"

namespace scenegrad {
namespace mesh {

// pos [B, V, 4] clip space, tri [T, 3] int32 -> {rast [B, H, W, 4], rast_db [B, H, W, 4]}.
std::vector<torch::Tensor> rasterize_fwd_cpu(const torch::Tensor& pos, const torch::Tensor& tri,
                                             int64_t height, int64_t width);
// -> grad_pos [B, V, 4]; grad_db may be undefined (no gradient through the derivatives).
torch::Tensor rasterize_bwd_cpu(const torch::Tensor& pos, const torch::Tensor& tri,
                                const torch::Tensor& rast, const torch::Tensor& grad_rast,
                                const c10::optional<torch::Tensor>& grad_db);

// attr [B, V, A] or [V, A], rast [B, H, W, 4], rast_db [B, H, W, 4] or undefined, diff [D] int32
// -> {out [B, H, W, A], out_da [B, H, W, 2 D]}.
std::vector<torch::Tensor> interpolate_fwd_cpu(const torch::Tensor& attr, const torch::Tensor& rast,
                                               const torch::Tensor& tri, const torch::Tensor& rast_db,
                                               const torch::Tensor& diff);
// -> {grad_attr (attr's shape), grad_rast [B, H, W, 4], grad_db [B, H, W, 4] (undefined without D)}.
std::vector<torch::Tensor> interpolate_bwd_cpu(const torch::Tensor& attr, const torch::Tensor& rast,
                                               const torch::Tensor& tri, const torch::Tensor& rast_db,
                                               const torch::Tensor& diff, const torch::Tensor& grad_out,
                                               const torch::Tensor& grad_out_da);

// color [B, H, W, C], rast [B, H, W, 4], pos [B, V, 4] or [V, 4], tri [T, 3], opposite [T, 3] int32
// -> out [B, H, W, C].
torch::Tensor antialias_fwd_cpu(const torch::Tensor& color, const torch::Tensor& rast, const torch::Tensor& pos,
                                const torch::Tensor& tri, const torch::Tensor& opposite);
// -> {grad_color [B, H, W, C], grad_pos (pos's shape)}.
std::vector<torch::Tensor> antialias_bwd_cpu(const torch::Tensor& color, const torch::Tensor& rast,
                                             const torch::Tensor& pos, const torch::Tensor& tri,
                                             const torch::Tensor& opposite, const torch::Tensor& grad_out);

// tex [Bt, h0, w0, C] the texture(s) (mip level 0), coarse [Bt, total - h0 w0, C] mip levels 1 and
// up (texture_mip; no texels for one level), offsets [L] int64 and sizes [L, 2] int32 (h, w) the
// layout of the whole pyramid (texture.h), uv [B, Ho, Wo, 2], uv_da [B, Ho, Wo, 4] (mipmapped lookups; undefined otherwise), bias [B, Ho, Wo]
// level-of-detail bias or undefined, mask [B, Ho, Wo] bool (the pixels to sample; the others give 0 and
// no gradient) or undefined -> out [B, Ho, Wo, C].
torch::Tensor texture_fwd_cpu(const torch::Tensor& tex, const torch::Tensor& coarse, const torch::Tensor& offsets,
                              const torch::Tensor& sizes, const torch::Tensor& uv, const torch::Tensor& uv_da,
                              const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary, int64_t filter);
// -> {grad_tex [Bt, h0, w0, C] (the gradients of every mip level folded down into the texture), grad_uv,
// grad_uv_da, grad_lod (d loss / d lod per pixel: the bias gradient)}; grad_uv_da is undefined without
// uv_da, grad_lod without uv_da or bias.
std::vector<torch::Tensor> texture_bwd_cpu(const torch::Tensor& tex, const torch::Tensor& coarse,
                                           const torch::Tensor& offsets, const torch::Tensor& sizes,
                                           const torch::Tensor& uv, const torch::Tensor& uv_da,
                                           const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary,
                                           int64_t filter, const torch::Tensor& grad_out);
// tex [Bt, h0, w0, C] -> coarse [Bt, total - h0 w0, C]: mip levels 1 and up, laid out by offsets / sizes.
torch::Tensor texture_mip_cpu(const torch::Tensor& tex, const torch::Tensor& offsets, const torch::Tensor& sizes);

#ifdef SCENEGRAD_WITH_CUDA
torch::Tensor texture_fwd_cuda(const torch::Tensor& tex, const torch::Tensor& coarse, const torch::Tensor& offsets,
                               const torch::Tensor& sizes, const torch::Tensor& uv, const torch::Tensor& uv_da,
                               const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary, int64_t filter);
std::vector<torch::Tensor> texture_bwd_cuda(const torch::Tensor& tex, const torch::Tensor& coarse,
                                            const torch::Tensor& offsets, const torch::Tensor& sizes,
                                            const torch::Tensor& uv, const torch::Tensor& uv_da,
                                            const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary,
                                            int64_t filter, const torch::Tensor& grad_out);
torch::Tensor texture_mip_cuda(const torch::Tensor& tex, const torch::Tensor& offsets, const torch::Tensor& sizes);
torch::Tensor antialias_fwd_cuda(const torch::Tensor& color, const torch::Tensor& rast, const torch::Tensor& pos,
                                 const torch::Tensor& tri, const torch::Tensor& opposite);
std::vector<torch::Tensor> antialias_bwd_cuda(const torch::Tensor& color, const torch::Tensor& rast,
                                              const torch::Tensor& pos, const torch::Tensor& tri,
                                              const torch::Tensor& opposite, const torch::Tensor& grad_out);
std::vector<torch::Tensor> interpolate_fwd_cuda(const torch::Tensor& attr, const torch::Tensor& rast,
                                                const torch::Tensor& tri, const torch::Tensor& rast_db,
                                                const torch::Tensor& diff);
std::vector<torch::Tensor> interpolate_bwd_cuda(const torch::Tensor& attr, const torch::Tensor& rast,
                                                const torch::Tensor& tri, const torch::Tensor& rast_db,
                                                const torch::Tensor& diff, const torch::Tensor& grad_out,
                                                const torch::Tensor& grad_out_da);
std::vector<torch::Tensor> rasterize_fwd_cuda(const torch::Tensor& pos, const torch::Tensor& tri,
                                              int64_t height, int64_t width);
torch::Tensor rasterize_bwd_cuda(const torch::Tensor& pos, const torch::Tensor& tri,
                                 const torch::Tensor& rast, const torch::Tensor& grad_rast,
                                 const c10::optional<torch::Tensor>& grad_db);
#endif

// Checks shared by both launchers: shapes, dtypes, contiguity, index range.
inline void check_rasterize_inputs(const torch::Tensor& pos, const torch::Tensor& tri, int64_t height,
                                   int64_t width) {
    TORCH_CHECK(pos.dim() == 3 && pos.size(2) == 4, "pos must have shape [B, V, 4], got ", pos.sizes());
    TORCH_CHECK(tri.dim() == 2 && tri.size(1) == 3, "tri must have shape [T, 3], got ", tri.sizes());
    TORCH_CHECK(tri.scalar_type() == torch::kInt, "tri must be int32, got ", tri.scalar_type());
    TORCH_CHECK(pos.scalar_type() == torch::kFloat || pos.scalar_type() == torch::kDouble,
                "pos must be float32 or float64, got ", pos.scalar_type());
    TORCH_CHECK(pos.is_contiguous() && tri.is_contiguous(), "pos and tri must be contiguous");
    TORCH_CHECK(pos.device() == tri.device(), "pos and tri must be on the same device");
    TORCH_CHECK(height > 0 && width > 0, "resolution must be positive, got ", height, "x", width);
    TORCH_CHECK(tri.size(0) < (1 << 24), "at most 2^24 - 1 triangles (ids are stored in float32)");
}

// Checks shared by both interpolate launchers; returns the dimensions the kernels need.
inline InterpolateDims check_interpolate_inputs(const torch::Tensor& attr, const torch::Tensor& rast,
                                               const torch::Tensor& tri, const torch::Tensor& rast_db,
                                               const torch::Tensor& diff) {
    TORCH_CHECK(rast.dim() == 4 && rast.size(3) == 4, "rast must have shape [B, H, W, 4], got ", rast.sizes());
    TORCH_CHECK(attr.dim() == 2 || attr.dim() == 3, "attr must have shape [B, V, A] or [V, A], got ", attr.sizes());
    TORCH_CHECK(attr.dim() == 2 || attr.size(0) == rast.size(0), "attr batch ", attr.size(0),
                " does not match rast batch ", rast.size(0));
    TORCH_CHECK(attr.scalar_type() == rast.scalar_type(), "attr and rast must have the same dtype");
    TORCH_CHECK(tri.dim() == 2 && tri.size(1) == 3 && tri.scalar_type() == torch::kInt, "tri must be [T, 3] int32");
    TORCH_CHECK(attr.is_contiguous() && rast.is_contiguous() && tri.is_contiguous(), "inputs must be contiguous");
    TORCH_CHECK(attr.device() == rast.device() && tri.device() == rast.device(), "inputs must share a device");
    TORCH_CHECK(diff.scalar_type() == torch::kInt && diff.dim() == 1, "diff must be a 1-D int32 tensor");
    InterpolateDims d;
    d.pixels = rast.size(0) * rast.size(1) * rast.size(2);
    d.hw = rast.size(1) * rast.size(2);
    d.attr_batched = attr.dim() == 3;
    d.V = (int)attr.size(attr.dim() - 2);
    d.A = (int)attr.size(attr.dim() - 1);
    d.D = (int)diff.size(0);
    if (d.D > 0) {
        TORCH_CHECK(rast_db.defined() && rast_db.sizes() == rast.sizes() && rast_db.is_contiguous(),
                    "attribute derivatives need rast_db with rast's shape");
    }
    return d;
}

// Checks shared by both antialias launchers; returns the dimensions the kernels need.
inline AntialiasDims check_antialias_inputs(const torch::Tensor& color, const torch::Tensor& rast,
                                           const torch::Tensor& pos, const torch::Tensor& tri,
                                           const torch::Tensor& opposite) {
    TORCH_CHECK(color.dim() == 4, "color must have shape [B, H, W, C], got ", color.sizes());
    TORCH_CHECK(rast.dim() == 4 && rast.size(3) == 4 && rast.size(0) == color.size(0) &&
                    rast.size(1) == color.size(1) && rast.size(2) == color.size(2),
                "rast must have shape [B, H, W, 4] matching color, got ", rast.sizes());
    TORCH_CHECK((pos.dim() == 3 && pos.size(0) == color.size(0) && pos.size(2) == 4) ||
                    (pos.dim() == 2 && pos.size(1) == 4),
                "pos must have shape [B, V, 4] or [V, 4], got ", pos.sizes());
    TORCH_CHECK(tri.dim() == 2 && tri.size(1) == 3 && tri.scalar_type() == torch::kInt, "tri must be [T, 3] int32");
    TORCH_CHECK(opposite.sizes() == tri.sizes() && opposite.scalar_type() == torch::kInt,
                "opposite must be [T, 3] int32 (from antialias_topology)");
    TORCH_CHECK(color.scalar_type() == rast.scalar_type() && pos.scalar_type() == rast.scalar_type(),
                "color, rast and pos must have the same dtype");
    TORCH_CHECK(color.is_contiguous() && rast.is_contiguous() && pos.is_contiguous() && tri.is_contiguous() &&
                    opposite.is_contiguous(),
                "inputs must be contiguous");
    TORCH_CHECK(color.device() == rast.device() && pos.device() == rast.device() && tri.device() == rast.device() &&
                    opposite.device() == rast.device(),
                "inputs must share a device");
    AntialiasDims dm;
    dm.B = (int)color.size(0);
    dm.H = (int)color.size(1);
    dm.W = (int)color.size(2);
    dm.C = (int)color.size(3);
    dm.pos_batched = pos.dim() == 3;
    dm.V = (int)pos.size(pos.dim() - 2);
    return dm;
}

// offsets [L] int64 and sizes [L, 2] int32 on the CPU, 1 <= L <= kMaxTexLevels.
inline void check_mip_layout(const torch::Tensor& offsets, const torch::Tensor& sizes) {
    TORCH_CHECK(offsets.dim() == 1 && offsets.scalar_type() == torch::kLong, "offsets must be [L] int64");
    TORCH_CHECK(sizes.dim() == 2 && sizes.size(0) == offsets.size(0) && sizes.size(1) == 2 &&
                    sizes.scalar_type() == torch::kInt,
                "sizes must be [L, 2] int32");
    TORCH_CHECK(offsets.size(0) >= 1 && offsets.size(0) <= kMaxTexLevels, "1 to ", kMaxTexLevels, " texture levels");
    TORCH_CHECK(offsets.device().is_cpu() && sizes.device().is_cpu(), "offsets and sizes live on the CPU");
}

// Level sizes and offsets of a mip layout, checked against each other and a buffer of `total` texels.
inline MipLayout mip_layout(const torch::Tensor& offsets, const torch::Tensor& sizes, int64_t total) {
    check_mip_layout(offsets, sizes);
    MipLayout m;
    m.levels = (int)offsets.size(0);
    auto off = offsets.contiguous();
    auto sz = sizes.contiguous();
    for (int l = 0; l < m.levels; ++l) {
        m.offsets[l] = off.data_ptr<int64_t>()[l];
        m.sizes[2 * l] = sz.data_ptr<int32_t>()[2 * l];
        m.sizes[2 * l + 1] = sz.data_ptr<int32_t>()[2 * l + 1];
        TORCH_CHECK(m.sizes[2 * l] > 0 && m.sizes[2 * l + 1] > 0 &&
                        m.offsets[l] + (int64_t)m.sizes[2 * l] * m.sizes[2 * l + 1] <= total,
                    "texture level ", l, " does not fit in buf");
        if (l > 0) {
            const int h = m.sizes[2 * l - 2], w = m.sizes[2 * l - 1];
            TORCH_CHECK(m.sizes[2 * l] == (h > 1 ? h / 2 : 1) && m.sizes[2 * l + 1] == (w > 1 ? w / 2 : 1),
                        "mip level ", l, " must halve level ", l - 1);
        }
    }
    return m;
}

// Checks tex [B, h0, w0, C] against the layout and allocates coarse [B, total - h0 w0, C] for mip
// levels 1 and up; the launchers then fill it.
inline MipLayout mip_coarse_buffer(const torch::Tensor& tex, const torch::Tensor& offsets, const torch::Tensor& sizes,
                                   torch::Tensor& coarse) {
    TORCH_CHECK(tex.dim() == 4 && tex.is_contiguous(), "tex must be a contiguous [B, H, W, C] tensor");
    check_mip_layout(offsets, sizes);
    auto sz = sizes.contiguous();
    int64_t total = 0;
    for (int64_t l = 0; l < sz.size(0); ++l)
        total += (int64_t)sz.data_ptr<int32_t>()[2 * l] * sz.data_ptr<int32_t>()[2 * l + 1];
    const MipLayout m = mip_layout(offsets, sizes, total);
    TORCH_CHECK(m.sizes[0] == tex.size(1) && m.sizes[1] == tex.size(2), "level 0 must be the texture's size");
    TORCH_CHECK(m.offsets[0] == 0 && (m.levels == 1 || m.offsets[1] == tex.size(1) * tex.size(2)),
                "level 1 must follow level 0");
    coarse = torch::empty({tex.size(0), total - tex.size(1) * tex.size(2), tex.size(3)}, tex.options());
    return m;
}

// Checks shared by both texture launchers; returns the dimensions the kernels need.
inline TextureDims check_texture_inputs(const torch::Tensor& tex, const torch::Tensor& coarse,
                                       const torch::Tensor& offsets, const torch::Tensor& sizes, const torch::Tensor& uv,
                                       const torch::Tensor& uv_da, const torch::Tensor& bias,
                                       const torch::Tensor& mask, int64_t boundary, int64_t filter) {
    TORCH_CHECK(tex.dim() == 4, "tex must have shape [Bt, H, W, C], got ", tex.sizes());
    TORCH_CHECK(coarse.dim() == 3 && coarse.size(0) == tex.size(0) && coarse.size(2) == tex.size(3),
                "the coarse mip levels must have shape [Bt, texels, C] matching tex, got ", coarse.sizes());
    TORCH_CHECK(uv.dim() == 4 && uv.size(3) == 2, "uv must have shape [B, H, W, 2], got ", uv.sizes());
    TORCH_CHECK(tex.size(0) == 1 || tex.size(0) == uv.size(0), "texture batch ", tex.size(0),
                " must be 1 or match uv batch ", uv.size(0));
    TORCH_CHECK(tex.scalar_type() == uv.scalar_type() && coarse.scalar_type() == uv.scalar_type(),
                "texture and uv must have the same dtype");
    TORCH_CHECK(tex.is_contiguous() && coarse.is_contiguous() && uv.is_contiguous(),
                "texture, mip levels and uv must be contiguous");
    TORCH_CHECK(tex.device() == uv.device() && coarse.device() == uv.device(), "texture and uv must share a device");
    TORCH_CHECK(boundary >= 0 && boundary <= 2 && filter >= 0 && filter <= 2, "bad boundary or filter mode");
    if (filter == 2) {
        TORCH_CHECK(uv_da.defined() && uv_da.dim() == 4 && uv_da.size(0) == uv.size(0) &&
                        uv_da.size(1) == uv.size(1) && uv_da.size(2) == uv.size(2) && uv_da.size(3) == 4 &&
                        uv_da.is_contiguous() && uv_da.scalar_type() == uv.scalar_type() &&
                        uv_da.device() == uv.device(),
                    "mipmapped lookups need uv_da [B, H, W, 4] matching uv");
    }
    if (bias.defined()) {
        TORCH_CHECK(bias.dim() == 3 && bias.size(0) == uv.size(0) && bias.size(1) == uv.size(1) &&
                        bias.size(2) == uv.size(2) && bias.is_contiguous() && bias.scalar_type() == uv.scalar_type() &&
                        bias.device() == uv.device(),
                    "the level-of-detail bias must be [B, H, W] matching uv");
    }
    if (mask.defined()) {
        TORCH_CHECK(mask.dim() == 3 && mask.size(0) == uv.size(0) && mask.size(1) == uv.size(1) &&
                        mask.size(2) == uv.size(2) && mask.is_contiguous() && mask.scalar_type() == torch::kBool &&
                        mask.device() == uv.device(),
                    "the texture mask must be bool [B, H, W] matching uv");
    }
    TextureDims d;
    d.pixels = uv.size(0) * uv.size(1) * uv.size(2);
    d.hw = uv.size(1) * uv.size(2);
    d.tex_batched = tex.size(0) > 1;
    d.texels0 = tex.size(1) * tex.size(2);
    d.total = d.texels0 + coarse.size(1);
    d.C = (int)tex.size(3);
    d.boundary = (int)boundary;
    d.filter = (int)filter;
    const MipLayout m = mip_layout(offsets, sizes, d.total);
    TORCH_CHECK(m.sizes[0] == tex.size(1) && m.sizes[1] == tex.size(2), "level 0 must be the texture's size");
    TORCH_CHECK(m.levels == 1 || m.offsets[1] == d.texels0, "level 1 must follow level 0");
    d.levels = m.levels;
    for (int l = 0; l < m.levels; ++l) {
        d.offsets[l] = m.offsets[l];
        d.sizes[2 * l] = m.sizes[2 * l];
        d.sizes[2 * l + 1] = m.sizes[2 * l + 1];
    }
    return d;
}

}  // namespace mesh
}  // namespace scenegrad
