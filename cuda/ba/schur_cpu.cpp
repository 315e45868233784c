// CPU launcher of the bundle adjustment's Schur complement: points are spread over threads (OpenMP);
// each thread computes its points' F_a = W_a V_p^-1 and sums their pair terms into its own [S, S] buffer
// (the first thread into the output), and the buffers are added at the end. A system too large for a
// buffer per thread (S^2 above 2^24 entries, 128 MiB) is summed by one thread. The math is schur.h's.
#include <vector>

#include "ba/schur.h"
#include "ba/schur_ops.h"
#include "common/checks.h"

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

namespace scenegrad {
namespace ba {

torch::Tensor ba_schur_cpu(const torch::Tensor& W, const torch::Tensor& V_inv, const torch::Tensor& pt,
                           const torch::Tensor& pos, const torch::Tensor& order, const torch::Tensor& starts,
                           int64_t size) {
    check_schur_inputs(W, V_inv, pt, pos, order, starts, size);
    SG_CHECK_CPU(W);
    const int64_t O = W.size(0), M = starts.size(0) - 1, S = size;
    const int C = static_cast<int>(W.size(1));
    const int64_t* st = starts.data_ptr<int64_t>();
    const int64_t* ord = order.data_ptr<int64_t>();
    const int64_t* ps = pos.data_ptr<int64_t>();
    check_point_groups_cpu(pt, order, starts, "ba_schur");
    for (int64_t i = 0; i < O * C; ++i) TORCH_CHECK(ps[i] >= 0 && ps[i] < S, "ba_schur: pos out of range");

    torch::Tensor out = torch::zeros({S, S}, W.options());
    const double* w = W.data_ptr<double>();
    const double* vi = V_inv.data_ptr<double>();
    double* t = out.data_ptr<double>();
    int threads = 1;
#ifdef SCENEGRAD_OPENMP
    if (S * S <= (int64_t(1) << 24) && M >= 64) threads = omp_get_max_threads();
#endif
    std::vector<std::vector<double>> extra(threads > 1 ? threads - 1 : 0);
    dispatch_camera_params(C, [&](auto c) {
        constexpr int Cn = decltype(c)::value;
        SG_OMP(parallel num_threads(threads)) {
            int tid = 0;
#ifdef SCENEGRAD_OPENMP
            tid = omp_get_thread_num();
#endif
            double* acc = t;
            if (tid > 0) {
                extra[tid - 1].assign(S * S, 0.0);
                acc = extra[tid - 1].data();
            }
            auto add = [acc](int64_t index, double v) { acc[index] += v; };
            std::vector<double> F;  // F_a of the point's observations, in order
            SG_OMP(for schedule(dynamic, 64))
            for (int64_t p = 0; p < M; ++p) {
                const int64_t first = st[p], k = st[p + 1] - first;
                F.resize(k * Cn * 3);
                for (int64_t i = 0; i < k; ++i) schur_f<Cn>(w + ord[first + i] * Cn * 3, vi + p * 9, &F[i * Cn * 3]);
                for (int64_t i = 0; i < k; ++i) {
                    const int64_t a = ord[first + i];
                    const double* Fa = &F[i * Cn * 3];
                    const int64_t* pa = ps + a * Cn;
                    schur_pair<Cn>(Fa, w + a * Cn * 3, pa, pa, S, 0.5, add);
                    for (int64_t j = i + 1; j < k; ++j) {
                        const int64_t b = ord[first + j];
                        schur_pair<Cn>(Fa, w + b * Cn * 3, pa, ps + b * Cn, S, 1.0, add);
                    }
                }
            }
        }
    });
    for (auto& buffer : extra) {
        const double* src = buffer.data();
        SG_OMP(parallel for schedule(static))
        for (int64_t i = 0; i < S * S; ++i) t[i] += src[i];
    }
    out.add_(out.t().clone());  // X + X^T (schur.h)
    return out;
}

}  // namespace ba
}  // namespace scenegrad
