// CPU launcher of texture sampling and mip pyramids: output pixels (or texel rows) in parallel
// (OpenMP); texel gradients scattered through ScatterAdd (per-thread copies or atomic adds). The
// per-element math is in texture.h.
#include "common/checks.h"
#include "common/scatter_cpu.h"
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

std::vector<torch::Tensor> texture_bwd_cpu(const torch::Tensor& buf, const torch::Tensor& offsets,
                                           const torch::Tensor& sizes, const torch::Tensor& uv,
                                           const torch::Tensor& uv_da, const torch::Tensor& bias, int64_t boundary,
                                           int64_t filter, const torch::Tensor& grad_out) {
    const TextureDims d = check_texture_inputs(buf, offsets, sizes, uv, uv_da, bias, boundary, filter);
    SG_CHECK_CPU(uv);
    const bool mip = d.filter == kLinearMipLinear;
    auto go = grad_out.contiguous();
    auto grad_buf = torch::zeros_like(buf);
    auto grad_uv = torch::empty_like(uv);
    auto grad_uv_da = mip ? torch::empty_like(uv_da) : torch::Tensor();
    auto grad_lod = mip ? torch::empty(uv.sizes().slice(0, 3), uv.options()) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_bwd_cpu", [&] {
        const scalar_t* bp = buf.data_ptr<scalar_t>();
        const scalar_t* up = uv.data_ptr<scalar_t>();
        const scalar_t* dap = mip ? uv_da.data_ptr<scalar_t>() : nullptr;
        const scalar_t* biasp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
        const scalar_t* gp = go.data_ptr<scalar_t>();
        scalar_t* gbp = grad_buf.data_ptr<scalar_t>();
        scalar_t* gup = grad_uv.data_ptr<scalar_t>();
        scalar_t* gdap = mip ? grad_uv_da.data_ptr<scalar_t>() : nullptr;
        scalar_t* glp = mip ? grad_lod.data_ptr<scalar_t>() : nullptr;
        ScatterAdd<scalar_t> scatter(gbp, grad_buf.numel());
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
    });
    return {grad_buf, grad_uv, grad_uv_da, grad_lod};
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

torch::Tensor texture_mip_fold_cpu(torch::Tensor& grad_buf, const torch::Tensor& offsets, const torch::Tensor& sizes) {
    SG_CHECK_CPU(grad_buf);
    TORCH_CHECK(grad_buf.dim() == 3 && grad_buf.is_contiguous(), "grad_buf must be a contiguous [B, texels, C] tensor");
    const int64_t B = grad_buf.size(0), total = grad_buf.size(1), C = grad_buf.size(2);
    const MipLayout m = mip_layout(offsets, sizes, total);
    AT_DISPATCH_FLOATING_TYPES(grad_buf.scalar_type(), "texture_mip_fold_cpu", [&] {
        scalar_t* gp = grad_buf.data_ptr<scalar_t>();
        for (int l = m.levels - 1; l >= 1; --l) {
            const int h = m.sizes[2 * l - 2], w = m.sizes[2 * l - 1];
            SG_OMP(parallel for schedule(static))
            for (int64_t row = 0; row < B * h; ++row) {
                const int64_t b = row / h;
                const int y = (int)(row % h);
                const scalar_t* next = gp + (b * total + m.offsets[l]) * C;
                // Skip rows whose parent row got no gradient (texture regions nothing looked at).
                const int w2 = m.sizes[2 * l + 1], py = m.sizes[2 * l] < h ? y >> 1 : y;
                if (py >= m.sizes[2 * l]) continue;
                const scalar_t* parent = next + (int64_t)py * w2 * C;
                bool any = false;
                for (int64_t k = 0; k < (int64_t)w2 * C && !any; ++k) any = parent[k] != scalar_t(0);
                if (!any) continue;
                scalar_t* g = gp + (b * total + m.offsets[l - 1] + (int64_t)y * w) * C;
                for (int x = 0; x < w; ++x)
                    for (int c = 0; c < C; ++c) g[x * C + c] += mip_fold_texel(next, h, w, (int)C, x, y, c);
            }
        }
    });
    return grad_buf.narrow(1, m.offsets[0], (int64_t)m.sizes[0] * m.sizes[1]).view({B, m.sizes[0], m.sizes[1], C});
}

}  // namespace mesh
}  // namespace scenegrad
