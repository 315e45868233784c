// CPU launcher of silhouette antialiasing: rows of pixel pairs in parallel (OpenMP), blends and
// gradients scattered with atomic adds. The per-pair math is in antialias.h.
#include <vector>

#include "common/checks.h"
#include "mesh/antialias.h"
#include "mesh/ops.h"

namespace scenegrad {
namespace mesh {
namespace {

// Calls f(b, pair) for every pixel pair that aa_analyze blends, rows in parallel. A row is first
// scanned (a loop that vectorises) for the pixels whose triangle id differs from their right or
// lower neighbour's: aa_analyze blends no other pair, and most pixels are not on an edge.
template <typename T, typename F>
void for_each_blended_pair(const T* pos, const int32_t* tri, const int32_t* opposite, const T* rast,
                           const AntialiasDims& dm, F f) {
    SG_OMP(parallel)
    {
        std::vector<unsigned char> edge(dm.W);
        SG_OMP(for schedule(dynamic, 8))
        for (int64_t row = 0; row < (int64_t)dm.B * dm.H; ++row) {
            const int64_t b = row / dm.H;
            const int y = (int)(row % dm.H);
            const T* ids = rast + row * dm.W * 4 + 3;                   // rast[..., 3] of this row
            const T* below = y + 1 < dm.H ? ids + dm.W * 4 : ids;       // the last row compares with itself
            for (int x = 0; x < dm.W; ++x) {
                const int right = x + 1 < dm.W ? x + 1 : x;
                edge[x] = (ids[4 * x] != ids[4 * right]) | (ids[4 * x] != below[4 * x]);
            }
            for (int x = 0; x < dm.W; ++x) {
                if (!edge[x]) continue;
                for (int d = 0; d < 2; ++d) {
                    AAPair<T> pr;
                    if (aa_analyze(pos, tri, opposite, rast, dm, b, x, y, d, pr)) f(b, pr);
                }
            }
        }
    }
}

}  // namespace

torch::Tensor antialias_fwd_cpu(const torch::Tensor& color, const torch::Tensor& rast, const torch::Tensor& pos,
                                const torch::Tensor& tri, const torch::Tensor& opposite) {
    const AntialiasDims dm = check_antialias_inputs(color, rast, pos, tri, opposite);
    SG_CHECK_CPU(color);
    auto out = color.clone();
    AT_DISPATCH_FLOATING_TYPES(color.scalar_type(), "antialias_fwd_cpu", [&] {
        const scalar_t* cp = color.data_ptr<scalar_t>();
        const scalar_t* rp = rast.data_ptr<scalar_t>();
        const scalar_t* pp = pos.data_ptr<scalar_t>();
        const int32_t* tp = tri.data_ptr<int32_t>();
        const int32_t* op = opposite.data_ptr<int32_t>();
        scalar_t* outp = out.data_ptr<scalar_t>();
        for_each_blended_pair(pp, tp, op, rp, dm, [&](int64_t, const AAPair<scalar_t>& pr) {
            const scalar_t* c0 = cp + pr.pixel0 * dm.C;
            const scalar_t* c1 = cp + pr.pixel1 * dm.C;
            scalar_t* dst = outp + pr.target * dm.C;
            for (int c = 0; c < dm.C; ++c) {
                const scalar_t value = pr.alpha * (c1[c] - c0[c]);
                SG_OMP(atomic)
                dst[c] += value;
            }
        });
    });
    return out;
}

std::vector<torch::Tensor> antialias_bwd_cpu(const torch::Tensor& color, const torch::Tensor& rast,
                                             const torch::Tensor& pos, const torch::Tensor& tri,
                                             const torch::Tensor& opposite, const torch::Tensor& grad_out) {
    const AntialiasDims dm = check_antialias_inputs(color, rast, pos, tri, opposite);
    SG_CHECK_CPU(color);
    auto go = grad_out.contiguous();
    auto grad_color = go.clone();
    auto grad_pos = torch::zeros_like(pos);
    AT_DISPATCH_FLOATING_TYPES(color.scalar_type(), "antialias_bwd_cpu", [&] {
        const scalar_t* cp = color.data_ptr<scalar_t>();
        const scalar_t* rp = rast.data_ptr<scalar_t>();
        const scalar_t* pp = pos.data_ptr<scalar_t>();
        const int32_t* tp = tri.data_ptr<int32_t>();
        const int32_t* op = opposite.data_ptr<int32_t>();
        const scalar_t* gop = go.data_ptr<scalar_t>();
        scalar_t* gcp = grad_color.data_ptr<scalar_t>();
        scalar_t* gpp = grad_pos.data_ptr<scalar_t>();
        for_each_blended_pair(pp, tp, op, rp, dm, [&](int64_t b, const AAPair<scalar_t>& pr) {
            const scalar_t* c0 = cp + pr.pixel0 * dm.C;
            const scalar_t* c1 = cp + pr.pixel1 * dm.C;
            const scalar_t* g = gop + pr.target * dm.C;
            scalar_t* g0 = gcp + pr.pixel0 * dm.C;
            scalar_t* g1 = gcp + pr.pixel1 * dm.C;
            scalar_t g_alpha = 0;
            for (int c = 0; c < dm.C; ++c) {
                g_alpha += g[c] * (c1[c] - c0[c]);
                const scalar_t value = pr.alpha * g[c];
                SG_OMP(atomic)
                g1[c] += value;
                SG_OMP(atomic)
                g0[c] -= value;
            }
            scalar_t ga[3] = {0, 0, 0}, gb[3] = {0, 0, 0};
            aa_alpha_position_grad(pr, pp, dm, b, g_alpha, ga, gb);
            scalar_t* dst[2] = {gpp + ((dm.pos_batched ? b * dm.V : 0) + pr.va) * 4,
                                gpp + ((dm.pos_batched ? b * dm.V : 0) + pr.vb) * 4};
            const scalar_t* src[2] = {ga, gb};
            for (int e = 0; e < 2; ++e) {
                for (int k = 0; k < 3; ++k) {
                    const int comp = k == 2 ? 3 : k;  // (x, y, w)
                    SG_OMP(atomic)
                    dst[e][comp] += src[e][k];
                }
            }
        });
    });
    return {grad_color, grad_pos};
}

}  // namespace mesh
}  // namespace scenegrad
