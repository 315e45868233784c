// CPU launchers of the bundle adjustment's projections (observations spread over threads) and linearisation:
// points are spread over threads (OpenMP, a static schedule: the same sums for the same thread count); a
// thread writes its points' V and g_p blocks and their observations' W blocks, residuals and weights, and sums
// the camera blocks U and g_c into its own buffer, the buffers added in thread order at the end. The math is
// linearise.h's.
#include <vector>

#include "ba/linearise.h"
#include "ba/linearise_ops.h"
#include "ba/schur_ops.h"
#include "common/checks.h"

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

namespace scenegrad {
namespace ba {

std::vector<torch::Tensor> ba_linearise_cpu(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                            const torch::Tensor& intr, const torch::Tensor& dist,
                                            const torch::Tensor& y, const torch::Tensor& c, const torch::Tensor& cam,
                                            const torch::Tensor& pt, const torch::Tensor& order,
                                            const torch::Tensor& starts, const torch::Tensor& cols,
                                            const torch::Tensor& cam_free, const torch::Tensor& point_free,
                                            int64_t loss, double scale, double min_depth, bool exact) {
    check_linearise_inputs(R, t, X, intr, dist, y, c, cam, pt, order, starts, cols, cam_free, point_free, loss);
    SG_CHECK_CPU(R);
    const int64_t N = R.size(0), M = X.size(0), O = y.size(0);
    const int C = static_cast<int>(cam_free.size(1));
    const int64_t* st = starts.data_ptr<int64_t>();
    const int64_t* ord = order.data_ptr<int64_t>();
    const int64_t* cm = cam.data_ptr<int64_t>();
    const int64_t* cl = cols.data_ptr<int64_t>();
    check_point_groups_cpu(pt, order, starts, "ba_linearise");
    for (int64_t i = 0; i < O; ++i) TORCH_CHECK(cm[i] >= 0 && cm[i] < N, "ba_linearise: cam out of range");
    for (int q = 0; q < C - 6; ++q)
        TORCH_CHECK(cl[q] >= kColF && cl[q] <= kColP2, "ba_linearise: unknown intrinsic column code ", cl[q]);

    const auto opts = R.options();
    torch::Tensor U = torch::zeros({N, C, C}, opts), V = torch::zeros({M, 3, 3}, opts);
    torch::Tensor W = torch::zeros({O, C, 3}, opts), g_c = torch::zeros({N, C}, opts);
    torch::Tensor g_p = torch::zeros({M, 3}, opts), r = torch::empty({O, 2}, opts), w = torch::empty({O}, opts);
    const double* Rp = R.data_ptr<double>();
    const double* tp = t.data_ptr<double>();
    const double* Xp = X.data_ptr<double>();
    const double* ip = intr.data_ptr<double>();
    const double* dp = dist.size(1) == 5 ? dist.data_ptr<double>() : nullptr;
    const double* yp = y.data_ptr<double>();
    const double* cp = c.data_ptr<double>();
    const double* cf = cam_free.data_ptr<double>();
    const double* pf = point_free.data_ptr<double>();
    double* Vo = V.data_ptr<double>();
    double* Wo = W.data_ptr<double>();
    double* gpo = g_p.data_ptr<double>();
    double* ro = r.data_ptr<double>();
    double* wo = w.data_ptr<double>();
    int threads = 1;
#ifdef SCENEGRAD_OPENMP
    if (O >= 4096) threads = omp_get_max_threads();
#endif
    const int64_t block = int64_t(C) * C + C;  // a camera's U (row-major) then g_c, in the buffers
    std::vector<std::vector<double>> buffers(threads);
    dispatch_camera_params(C, [&](auto cc) {
        constexpr int Cn = decltype(cc)::value;
        if constexpr (Cn >= 6) {
            SG_OMP(parallel num_threads(threads)) {
                int tid = 0;
#ifdef SCENEGRAD_OPENMP
                tid = omp_get_thread_num();
#endif
                std::vector<double>& buffer = buffers[tid];
                buffer.assign(N * block, 0.0);
                double* acc = buffer.data();
                ObservationTerms<Cn> terms;
                SG_OMP(for schedule(static))
                for (int64_t p = 0; p < M; ++p) {
                    for (int64_t i = st[p]; i < st[p + 1]; ++i) {
                        const int64_t o = ord[i], j = cm[o];
                        observation_terms<Cn>(Rp + j * 9, tp + j * 3, Xp + p * 3, ip + j * 4,
                                              dp != nullptr ? dp + j * 5 : nullptr, yp + o * 2, cp[o], cl,
                                              cf + j * Cn, pf[p], loss, scale, min_depth, exact, terms);
                        ro[2 * o] = terms.r[0];
                        ro[2 * o + 1] = terms.r[1];
                        wo[o] = terms.w;
                        double* cam_acc = acc + j * block;
                        normal_terms<Cn>(terms, [cam_acc](int64_t k, double v) { cam_acc[k] += v; }, Vo + p * 9,
                                         gpo + p * 3, Wo + o * Cn * 3);
                    }
                }
            }
        }
    });
    double* Uo = U.data_ptr<double>();
    double* gco = g_c.data_ptr<double>();
    for (const std::vector<double>& buffer : buffers) {
        for (int64_t j = 0; j < N; ++j) {
            const double* src = buffer.data() + j * block;
            for (int64_t k = 0; k < int64_t(C) * C; ++k) Uo[j * C * C + k] += src[k];
            for (int k = 0; k < C; ++k) gco[j * C + k] += src[C * C + k];
        }
    }
    return {U, V, W, g_c, g_p, r, w};
}

std::vector<torch::Tensor> ba_project_cpu(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                          const torch::Tensor& intr, const torch::Tensor& dist,
                                          const torch::Tensor& cam, const torch::Tensor& pt, double min_depth) {
    check_project_inputs(R, t, X, intr, dist, cam, pt);
    SG_CHECK_CPU(R);
    const int64_t N = R.size(0), M = X.size(0), O = cam.size(0);
    const int64_t* cm = cam.data_ptr<int64_t>();
    const int64_t* pts = pt.data_ptr<int64_t>();
    for (int64_t i = 0; i < O; ++i)
        TORCH_CHECK(cm[i] >= 0 && cm[i] < N && pts[i] >= 0 && pts[i] < M, "ba_project: cam or pt out of range");
    torch::Tensor uv = torch::empty({O, 2}, R.options());
    torch::Tensor valid = torch::empty({O}, R.options().dtype(torch::kBool));
    const double* Rp = R.data_ptr<double>();
    const double* tp = t.data_ptr<double>();
    const double* Xp = X.data_ptr<double>();
    const double* ip = intr.data_ptr<double>();
    const double* dp = dist.size(1) == 5 ? dist.data_ptr<double>() : nullptr;
    double* uo = uv.data_ptr<double>();
    bool* vo = valid.data_ptr<bool>();
    SG_OMP(parallel for schedule(static) if (O >= 16384))
    for (int64_t o = 0; o < O; ++o) project_observation(Rp, tp, Xp, ip, dp, cm, pts, o, min_depth, uo, vo);
    return {uv, valid};
}

}  // namespace ba
}  // namespace scenegrad
