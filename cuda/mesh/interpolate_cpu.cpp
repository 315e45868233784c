// CPU launcher of attribute interpolation: pixels in parallel (OpenMP), vertex gradients
// scattered through ScatterAdd (per-thread copies or atomic adds). The per-pixel math is in
// interpolate.h.
#include "common/checks.h"
#include "common/outputs_cpu.h"
#include "common/scatter_cpu.h"
#include "mesh/interpolate.h"
#include "mesh/ops.h"

namespace scenegrad {
namespace mesh {

std::vector<torch::Tensor> interpolate_fwd_cpu(const torch::Tensor& attr, const torch::Tensor& rast,
                                               const torch::Tensor& tri, const torch::Tensor& rast_db,
                                               const torch::Tensor& diff) {
    const InterpolateDims d = check_interpolate_inputs(attr, rast, tri, rast_db, diff);
    SG_CHECK_CPU(rast);
    auto out = torch::empty({rast.size(0), rast.size(1), rast.size(2), d.A}, attr.options());
    auto out_da = torch::empty({rast.size(0), rast.size(1), rast.size(2), 2 * d.D}, attr.options());
    const int32_t* dp = diff.data_ptr<int32_t>();
    AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_fwd_cpu", [&] {
        const scalar_t* ap = attr.data_ptr<scalar_t>();
        const scalar_t* rp = rast.data_ptr<scalar_t>();
        const scalar_t* bp = d.D > 0 ? rast_db.data_ptr<scalar_t>() : nullptr;
        const int32_t* tp = tri.data_ptr<int32_t>();
        scalar_t* op = out.data_ptr<scalar_t>();
        scalar_t* odp = out_da.data_ptr<scalar_t>();
        SG_OMP(parallel for schedule(dynamic, 1024))  // foreground pixels cost more: balance threads
        for (int64_t p = 0; p < d.pixels; ++p)
            interpolate_pixel(ap, d, tp, p, rp, bp, dp, op + p * d.A, odp + p * 2 * d.D);
    });
    return {out, out_da};
}

std::vector<torch::Tensor> interpolate_bwd_cpu(const torch::Tensor& attr, const torch::Tensor& rast,
                                               const torch::Tensor& tri, const torch::Tensor& rast_db,
                                               const torch::Tensor& diff, const torch::Tensor& grad_out,
                                               const torch::Tensor& grad_out_da) {
    const InterpolateDims d = check_interpolate_inputs(attr, rast, tri, rast_db, diff);
    SG_CHECK_CPU(rast);
    auto go = grad_out.contiguous();
    const bool with_da = d.D > 0 && grad_out_da.defined();
    auto goda = with_da ? grad_out_da.contiguous() : torch::Tensor();
    auto grad_attr = torch::zeros_like(attr);
    // Every pixel's four entries are written below (no zero fill of two [B, H, W, 4] buffers).
    auto grad_rast = pooled_empty(rast.sizes(), rast.options());
    auto grad_db = with_da ? pooled_empty(rast.sizes(), rast.options()) : torch::Tensor();
    const int32_t* dp = diff.data_ptr<int32_t>();
    AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_bwd_cpu", [&] {
        const scalar_t* ap = attr.data_ptr<scalar_t>();
        const scalar_t* rp = rast.data_ptr<scalar_t>();
        const scalar_t* bp = d.D > 0 ? rast_db.data_ptr<scalar_t>() : nullptr;
        const int32_t* tp = tri.data_ptr<int32_t>();
        const scalar_t* gp = go.data_ptr<scalar_t>();
        const scalar_t* gdap = with_da ? goda.data_ptr<scalar_t>() : nullptr;
        scalar_t* gap = grad_attr.data_ptr<scalar_t>();
        scalar_t* grp = grad_rast.data_ptr<scalar_t>();
        scalar_t* gdbp = with_da ? grad_db.data_ptr<scalar_t>() : nullptr;
        ScatterAdd<scalar_t> scatter(gap, grad_attr.numel());
        SG_OMP(parallel for schedule(dynamic, 1024))  // foreground pixels cost more: balance threads
        for (int64_t p = 0; p < d.pixels; ++p) {
            const int t = (int)rp[4 * p + 3] - 1;
            // interpolate_pixel_backward writes (u, v) of grad_rast and, with da, all of grad_db.
            grp[4 * p + 2] = grp[4 * p + 3] = scalar_t(0);
            if (t < 0) {
                grp[4 * p] = grp[4 * p + 1] = scalar_t(0);
                if (gdbp)
                    for (int c = 0; c < 4; ++c) gdbp[4 * p + c] = scalar_t(0);
                continue;
            }
            const int64_t b = d.attr_batched ? p / d.hw : 0;
            scalar_t* rows[3];
            const auto local = scatter.local();
            for (int c = 0; c < 3; ++c) rows[c] = local.data() + ((d.attr_batched ? b * d.V : 0) + tp[3 * t + c]) * d.A;
            auto add = [&](int corner, int k, scalar_t value) { local.add(rows[corner] + k, value); };
            interpolate_pixel_backward(ap, d, tp, p, rp, bp, dp, gp + p * d.A, gdap ? gdap + p * 2 * d.D : nullptr,
                                       grp + 4 * p, gdbp ? gdbp + 4 * p : nullptr, add);
        }
        scatter.reduce();
    });
    return {grad_attr, grad_rast, grad_db};
}

}  // namespace mesh
}  // namespace scenegrad
