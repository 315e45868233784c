// CPU launcher of project_gaussians (named gaussian_project_* because the extension build names
// objects by file stem). Forward: one OpenMP loop over (camera, Gaussian) pairs. Backward: one loop
// over Gaussians, each visiting its cameras, so per-Gaussian gradients need no reduction; the
// per-camera gradients (viewmats, Ks) are summed in per-thread buffers and reduced at the end.
// The per-pair math is in project.h.
#include <vector>

#include "common/checks.h"
#include "gaussians/project_ops.h"

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

namespace scenegrad {
namespace gaussians {

using torch::Tensor;

std::vector<Tensor> project_gaussians_fwd_cpu(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                              const Tensor& viewmats, const Tensor& Ks, const ProjectParams<double>& p) {
    const auto [C, N] = check_project_inputs(means, quats, scales, viewmats, Ks);
    SG_CHECK_CPU(means);
    std::vector<Tensor> outs = project_outputs(means, C, N, p.antialiased);
    Tensor &radii = outs[0], &means2d = outs[1], &depths = outs[2], &conics = outs[3], &comps = outs[4];
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_fwd_cpu", [&] {
        using T = scalar_t;
        const ProjectParams<T> pt = cast_params<T>(p);
        const T *m = means.data_ptr<T>(), *q = quats.data_ptr<T>(), *s = scales.data_ptr<T>();
        const T *V = viewmats.data_ptr<T>(), *K = Ks.data_ptr<T>();
        int32_t* r = radii.data_ptr<int32_t>();
        T *m2 = means2d.data_ptr<T>(), *d = depths.data_ptr<T>(), *co = conics.data_ptr<T>();
        T* cp = pt.antialiased ? comps.data_ptr<T>() : nullptr;
        const int64_t CN = C * N;
        SG_OMP(parallel for schedule(static))
        for (int64_t i = 0; i < CN; ++i) {
            const int64_t c = i / N, n = i % N;
            T comp;
            r[i] = project_forward(m + 3 * n, q + 4 * n, s + 3 * n, V + 16 * c, K + 9 * c, pt, m2 + 2 * i, d[i],
                                   co + 3 * i, comp);
            if (cp != nullptr) cp[i] = comp;
        }
    });
    return outs;
}

std::vector<Tensor> project_gaussians_bwd_cpu(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                              const Tensor& viewmats, const Tensor& Ks, const ProjectParams<double>& p,
                                              const Tensor& radii, const Tensor& v_means2d, const Tensor& v_depths,
                                              const Tensor& v_conics, const Tensor& v_compensations,
                                              bool camera_grads) {
    const auto [C, N] = check_project_inputs(means, quats, scales, viewmats, Ks);
    SG_CHECK_CPU(means);
    check_project_grads(C, N, means, radii, v_means2d, v_depths, v_conics, v_compensations, p.antialiased);
    Tensor g_means = torch::zeros({N, 3}, means.options());
    Tensor g_quats = torch::zeros({N, 4}, means.options());
    Tensor g_scales = torch::zeros({N, 3}, means.options());
    Tensor g_viewmats, g_Ks;
    if (camera_grads) {
        g_viewmats = torch::zeros({C, 4, 4}, means.options());
        g_Ks = torch::zeros({C, 3, 3}, means.options());
    }
    const bool has_comp = p.antialiased && v_compensations.defined();
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_bwd_cpu", [&] {
        using T = scalar_t;
        const ProjectParams<T> pt = cast_params<T>(p);
        const T *m = means.data_ptr<T>(), *q = quats.data_ptr<T>(), *s = scales.data_ptr<T>();
        const T *V = viewmats.data_ptr<T>(), *K = Ks.data_ptr<T>();
        const int32_t* r = radii.data_ptr<int32_t>();
        const T *vm = v_means2d.data_ptr<T>(), *vd = v_depths.data_ptr<T>(), *vc = v_conics.data_ptr<T>();
        const T* vp = has_comp ? v_compensations.data_ptr<T>() : nullptr;
        T *gm = g_means.data_ptr<T>(), *gq = g_quats.data_ptr<T>(), *gs = g_scales.data_ptr<T>();
        int threads = 1;
#ifdef SCENEGRAD_OPENMP
        threads = omp_get_max_threads();
#endif
        // Per-thread camera gradients: [threads][C][16 + 9].
        std::vector<T> cam(camera_grads ? (size_t)threads * C * 25 : 0, T(0));
        SG_OMP(parallel)
        {
            int tid = 0;
#ifdef SCENEGRAD_OPENMP
            tid = omp_get_thread_num();
#endif
            T* local = camera_grads ? cam.data() + (size_t)tid * C * 25 : nullptr;
            SG_OMP(for schedule(static))
            for (int64_t n = 0; n < N; ++n) {
                for (int64_t c = 0; c < C; ++c) {
                    const int64_t i = c * N + n;
                    if (r[i] <= 0) continue;
                    T* gV = local != nullptr ? local + 25 * c : nullptr;
                    project_backward(m + 3 * n, q + 4 * n, s + 3 * n, V + 16 * c, K + 9 * c, pt, vm + 2 * i, vd[i],
                                     vc + 3 * i, vp != nullptr ? vp[i] : T(0), gm + 3 * n, gq + 4 * n, gs + 3 * n,
                                     gV, gV != nullptr ? gV + 16 : nullptr);
                }
            }
        }
        if (camera_grads) {
            T *gv = g_viewmats.data_ptr<T>(), *gk = g_Ks.data_ptr<T>();
            for (int t = 0; t < threads; ++t)
                for (int64_t c = 0; c < C; ++c) {
                    const T* src = cam.data() + ((size_t)t * C + c) * 25;
                    for (int j = 0; j < 16; ++j) gv[16 * c + j] += src[j];
                    for (int j = 0; j < 9; ++j) gk[9 * c + j] += src[16 + j];
                }
        }
    });
    return {g_means, g_quats, g_scales, g_viewmats, g_Ks};
}

}  // namespace gaussians
}  // namespace scenegrad
