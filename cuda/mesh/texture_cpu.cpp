// CPU launcher of texture sampling and mip pyramids: output pixels (or texel rows) in parallel
// (OpenMP); texel gradients scattered through ScatterAdd (per-thread copies or atomic adds) into a
// pooled scratch pyramid, then folded down into the texture's gradient. The per-element math is in
// texture.h.
#include <cstring>

#include "common/checks.h"
#include "common/scatter_cpu.h"
#include "common/scratch_cpu.h"
#include "mesh/ops.h"
#include "mesh/texture.h"

namespace scenegrad {
namespace mesh {

torch::Tensor texture_fwd_cpu(const torch::Tensor& buf, const torch::Tensor& offsets, const torch::Tensor& sizes,
                              const torch::Tensor& uv, const torch::Tensor& uv_da, const torch::Tensor& bias,
                              int64_t boundary, int64_t filter) {
    const TextureDims d = check_texture_inputs(buf, offsets, sizes, uv, uv_da, bias, boundary, filter);
    SG_CHECK_CPU(uv);
    auto out = torch::empty({uv.size(0), uv.size(1), uv.size(2), d.C}, uv.options());
    const bool mip = d.filter == kLinearMipLinear;
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_fwd_cpu", [&] {
        const scalar_t* bp = buf.data_ptr<scalar_t>();
        const scalar_t* up = uv.data_ptr<scalar_t>();
        const scalar_t* dap = mip ? uv_da.data_ptr<scalar_t>() : nullptr;
        const scalar_t* biasp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
        scalar_t* op = out.data_ptr<scalar_t>();
        with_channels(d.C, [&](auto channels) {
            constexpr int kC = decltype(channels)::value;
            SG_OMP(parallel for schedule(static))
            for (int64_t p = 0; p < d.pixels; ++p) {
                const scalar_t* tex = bp + (d.tex_batched ? (p / d.hw) * d.total * d.C : 0);
                const scalar_t lod = mip ? texture_lod(dap + 4 * p, d.sizes[0], d.sizes[1],
                                                       biasp ? biasp[p] : scalar_t(0), (scalar_t*)nullptr)
                                         : scalar_t(0);
                texture_pixel<scalar_t, kC>(tex, d, up[2 * p], up[2 * p + 1], lod, op + p * d.C);
            }
        });
    });
    return out;
}

// Adds the gradient of mip levels levels-1 .. 2 of g (one pyramid, C channels) into the level below,
// in place, skipping rows whose parent row got no gradient (texture regions nothing looked at).
template <typename T>
static void fold_coarse_levels(T* g, const MipLayout& m, int64_t C) {
    for (int l = m.levels - 1; l >= 2; --l) {
        const int h = m.sizes[2 * l - 2], w = m.sizes[2 * l - 1], w2 = m.sizes[2 * l + 1];
        const T* next = g + m.offsets[l] * C;
        SG_OMP(parallel for schedule(static))
        for (int y = 0; y < h; ++y) {
            const int py = m.sizes[2 * l] < h ? y >> 1 : y;
            if (py >= m.sizes[2 * l]) continue;
            const T* parent = next + (int64_t)py * w2 * C;
            bool any = false;
            for (int64_t k = 0; k < (int64_t)w2 * C && !any; ++k) any = parent[k] != T(0);
            if (!any) continue;
            T* row = g + (m.offsets[l - 1] + (int64_t)y * w) * C;
            for (int x = 0; x < w; ++x)
                for (int c = 0; c < C; ++c) row[x * C + c] += mip_fold_texel(next, h, w, (int)C, x, y, c);
        }
    }
}

// A zeroed scratch buffer from the pool for one call; given back zeroed once `zeroed` is set.
template <typename T>
struct Scratch {
    explicit Scratch(int64_t n) : p(scratch_acquire<T>(n)) {}
    ~Scratch() { scratch_release(p, zeroed); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    T* p;
    bool zeroed = false;
};

std::vector<torch::Tensor> texture_bwd_cpu(const torch::Tensor& buf, const torch::Tensor& offsets,
                                           const torch::Tensor& sizes, const torch::Tensor& uv,
                                           const torch::Tensor& uv_da, const torch::Tensor& bias, int64_t boundary,
                                           int64_t filter, const torch::Tensor& grad_out) {
    const TextureDims d = check_texture_inputs(buf, offsets, sizes, uv, uv_da, bias, boundary, filter);
    SG_CHECK_CPU(uv);
    const MipLayout m = mip_layout(offsets, sizes, d.total);
    const bool mip = d.filter == kLinearMipLinear;
    const int64_t Bt = buf.size(0), C = d.C, h0 = m.sizes[0], w0 = m.sizes[1];
    auto go = grad_out.contiguous();
    auto grad_tex = torch::empty({Bt, h0, w0, C}, buf.options());
    auto grad_uv = torch::empty_like(uv);
    auto grad_uv_da = mip ? torch::empty_like(uv_da) : torch::Tensor();
    auto grad_lod = mip ? torch::empty(uv.sizes().slice(0, 3), uv.options()) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_bwd_cpu", [&] {
        const scalar_t* bp = buf.data_ptr<scalar_t>();
        const scalar_t* up = uv.data_ptr<scalar_t>();
        const scalar_t* dap = mip ? uv_da.data_ptr<scalar_t>() : nullptr;
        const scalar_t* biasp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
        const scalar_t* gp = go.data_ptr<scalar_t>();
        scalar_t* gup = grad_uv.data_ptr<scalar_t>();
        scalar_t* gdap = mip ? grad_uv_da.data_ptr<scalar_t>() : nullptr;
        scalar_t* glp = mip ? grad_lod.data_ptr<scalar_t>() : nullptr;
        // Texel gradients of every level go to a pooled scratch pyramid: a fresh zeroed buffer the
        // size of the pyramid costs more in page faults than the scatter itself.
        Scratch<scalar_t> pyramid(buf.numel());
        scalar_t* gbp = pyramid.p;
        ScatterAdd<scalar_t> scatter(gbp, buf.numel());
        with_channels(d.C, [&](auto channels) {
            constexpr int kC = decltype(channels)::value;
            SG_OMP(parallel for schedule(static))
            for (int64_t p = 0; p < d.pixels; ++p) {
                const int64_t base = d.tex_batched ? (p / d.hw) * d.total * d.C : 0;
                scalar_t* gtex = scatter.local() + base;
                auto add = [&](int64_t texel, int c, scalar_t value) { scatter.add(gtex + texel * d.C + c, value); };
                scalar_t dlod[4];
                const scalar_t lod = mip ? texture_lod(dap + 4 * p, d.sizes[0], d.sizes[1],
                                                       biasp ? biasp[p] : scalar_t(0), dlod)
                                         : scalar_t(0);
                scalar_t gu, gv, gl;
                texture_pixel_backward<scalar_t, kC>(bp + base, d, up[2 * p], up[2 * p + 1], lod, gp + p * d.C, gu,
                                                     gv, gl, add);
                gup[2 * p] = gu;
                gup[2 * p + 1] = gv;
                if (mip) {
                    glp[p] = gl;
                    for (int k = 0; k < 4; ++k) gdap[4 * p + k] = gl * dlod[k];
                }
            }
        });
        scatter.reduce();
        // Fold the coarse levels down, then write level 0 plus level 1's share into grad_tex while
        // zeroing the scratch behind us.
        scalar_t* out = grad_tex.data_ptr<scalar_t>();
        for (int64_t b = 0; b < Bt; ++b) {
            scalar_t* g = gbp + b * d.total * C;
            fold_coarse_levels(g, m, C);
            const scalar_t* level1 = m.levels > 1 ? g + m.offsets[1] * C : nullptr;
            scalar_t* level0 = g + m.offsets[0] * C;
            scalar_t* o = out + b * h0 * w0 * C;
            // Level 1 halves both axes unless one of them has a single texel (then mip_fold_texel).
            const bool halves = m.levels > 1 && h0 > 1 && w0 > 1;
            const int64_t h1 = m.levels > 1 ? m.sizes[2] : 0, w1 = m.levels > 1 ? m.sizes[3] : 0;
            SG_OMP(parallel for schedule(static))
            for (int64_t y = 0; y < h0; ++y) {
                scalar_t* src = level0 + y * w0 * C;
                scalar_t* dst = o + y * w0 * C;
                if (halves && (y >> 1) < h1) {
                    const scalar_t* parent = level1 + (y >> 1) * w1 * C;
                    const int64_t inside = 2 * w1;  // columns with a parent texel
                    for (int64_t x = 0; x < inside; ++x)
                        for (int64_t c = 0; c < C; ++c)
                            dst[x * C + c] = src[x * C + c] + scalar_t(0.25) * parent[(x >> 1) * C + c];
                    for (int64_t i = inside * C; i < w0 * C; ++i) dst[i] = src[i];
                } else if (level1 && !halves) {
                    for (int64_t x = 0; x < w0; ++x)
                        for (int64_t c = 0; c < C; ++c)
                            dst[x * C + c] = src[x * C + c] + mip_fold_texel(level1, (int)h0, (int)w0, (int)C, (int)x,
                                                                             (int)y, (int)c);
                } else {
                    std::memcpy(dst, src, sizeof(scalar_t) * (size_t)(w0 * C));
                }
                std::memset(src, 0, sizeof(scalar_t) * (size_t)(w0 * C));
            }
            for (int l = 1; l < m.levels; ++l)
                std::memset(g + m.offsets[l] * C, 0, sizeof(scalar_t) * (size_t)m.sizes[2 * l] * m.sizes[2 * l + 1] * C);
        }
        pyramid.zeroed = true;
    });
    return {grad_tex, grad_uv, grad_uv_da, grad_lod};
}

torch::Tensor texture_mip_cpu(const torch::Tensor& tex, const torch::Tensor& offsets, const torch::Tensor& sizes) {
    SG_CHECK_CPU(tex);
    torch::Tensor buf;
    const MipLayout m = mip_buffer(tex, offsets, sizes, buf);
    const int64_t B = tex.size(0), C = tex.size(3), total = buf.size(1);
    AT_DISPATCH_FLOATING_TYPES(tex.scalar_type(), "texture_mip_cpu", [&] {
        scalar_t* bp = buf.data_ptr<scalar_t>();
        for (int l = 1; l < m.levels; ++l) {
            const int h = m.sizes[2 * l - 2], w = m.sizes[2 * l - 1], h2 = m.sizes[2 * l], w2 = m.sizes[2 * l + 1];
            SG_OMP(parallel for schedule(static))
            for (int64_t row = 0; row < B * h2; ++row) {
                const int64_t b = row / h2;
                const int y = (int)(row % h2);
                const scalar_t* prev = bp + (b * total + m.offsets[l - 1]) * C;
                scalar_t* out = bp + (b * total + m.offsets[l] + (int64_t)y * w2) * C;
                for (int x = 0; x < w2; ++x)
                    for (int c = 0; c < C; ++c) out[x * C + c] = mip_texel(prev, h, w, (int)C, x, y, c);
            }
        }
    });
    return buf;
}

}  // namespace mesh
}  // namespace scenegrad
