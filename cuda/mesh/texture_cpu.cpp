// CPU launcher of texture sampling: output pixels in parallel (OpenMP), texel gradients
// scattered with atomic adds. The per-pixel math is in texture.h.
#include "common/checks.h"
#include "mesh/ops.h"
#include "mesh/texture.h"

namespace scenegrad {
namespace mesh {

torch::Tensor texture_fwd_cpu(const torch::Tensor& buf, const torch::Tensor& offsets, const torch::Tensor& sizes,
                              const torch::Tensor& uv, const torch::Tensor& lod, int64_t boundary, int64_t filter) {
    const TextureDims d = check_texture_inputs(buf, offsets, sizes, uv, lod, boundary, filter);
    SG_CHECK_CPU(uv);
    auto out = torch::empty({uv.size(0), uv.size(1), uv.size(2), d.C}, uv.options());
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_fwd_cpu", [&] {
        const scalar_t* bp = buf.data_ptr<scalar_t>();
        const scalar_t* up = uv.data_ptr<scalar_t>();
        const scalar_t* lp = d.filter == kLinearMipLinear ? lod.data_ptr<scalar_t>() : nullptr;
        scalar_t* op = out.data_ptr<scalar_t>();
        SG_OMP(parallel for schedule(static))
        for (int64_t p = 0; p < d.pixels; ++p) {
            const scalar_t* tex = bp + (d.tex_batched ? (p / d.hw) * d.total * d.C : 0);
            texture_pixel(tex, d, up[2 * p], up[2 * p + 1], lp ? lp[p] : scalar_t(0), op + p * d.C);
        }
    });
    return out;
}

std::vector<torch::Tensor> texture_bwd_cpu(const torch::Tensor& buf, const torch::Tensor& offsets,
                                           const torch::Tensor& sizes, const torch::Tensor& uv,
                                           const torch::Tensor& lod, int64_t boundary, int64_t filter,
                                           const torch::Tensor& grad_out) {
    const TextureDims d = check_texture_inputs(buf, offsets, sizes, uv, lod, boundary, filter);
    SG_CHECK_CPU(uv);
    auto go = grad_out.contiguous();
    auto grad_buf = torch::zeros_like(buf);
    auto grad_uv = torch::zeros_like(uv);
    auto grad_lod = d.filter == kLinearMipLinear ? torch::zeros_like(lod) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_bwd_cpu", [&] {
        const scalar_t* bp = buf.data_ptr<scalar_t>();
        const scalar_t* up = uv.data_ptr<scalar_t>();
        const scalar_t* lp = d.filter == kLinearMipLinear ? lod.data_ptr<scalar_t>() : nullptr;
        const scalar_t* gp = go.data_ptr<scalar_t>();
        scalar_t* gbp = grad_buf.data_ptr<scalar_t>();
        scalar_t* gup = grad_uv.data_ptr<scalar_t>();
        scalar_t* glp = lp ? grad_lod.data_ptr<scalar_t>() : nullptr;
        SG_OMP(parallel for schedule(static))
        for (int64_t p = 0; p < d.pixels; ++p) {
            const int64_t base = d.tex_batched ? (p / d.hw) * d.total * d.C : 0;
            scalar_t* gtex = gbp + base;
            auto add = [&](int64_t texel, int c, scalar_t value) {
                SG_OMP(atomic)
                gtex[texel * d.C + c] += value;
            };
            scalar_t gu, gv, gl;
            texture_pixel_backward(bp + base, d, up[2 * p], up[2 * p + 1], lp ? lp[p] : scalar_t(0), gp + p * d.C, gu,
                                   gv, gl, add);
            gup[2 * p] = gu;
            gup[2 * p + 1] = gv;
            if (glp) glp[p] = gl;
        }
    });
    return {grad_buf, grad_uv, grad_lod};
}

}  // namespace mesh
}  // namespace scenegrad
