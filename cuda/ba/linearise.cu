// CUDA launchers of the bundle adjustment's projections (one thread per observation) and linearisation (one
// thread per point writes its V and g_p blocks and its observations' W blocks, residuals and weights, and adds
// the camera blocks U and g_c by atomic adds: a [N, C * C + C] buffer, split at the end). The math is
// linearise.h's.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ba/linearise.h"
#include "ba/linearise_ops.h"
#include "common/checks.h"
#include "common/launch_cuda.h"

namespace scenegrad {
namespace ba {
namespace {

template <int C>
__global__ void linearise_kernel(const double* __restrict__ R, const double* __restrict__ t,
                                 const double* __restrict__ X, const double* __restrict__ intr,
                                 const double* __restrict__ dist, const double* __restrict__ y,
                                 const double* __restrict__ c, const int64_t* __restrict__ cam,
                                 const int64_t* __restrict__ order, const int64_t* __restrict__ starts,
                                 const int64_t* __restrict__ cols, const double* __restrict__ cam_free,
                                 const double* __restrict__ point_free, int64_t M, int64_t loss, double scale,
                                 double min_depth, bool exact, double* cam_blocks, double* V, double* W,
                                 double* g_p, double* r, double* w) {
    const int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (p >= M) return;
    constexpr int64_t block = int64_t(C) * C + C;
    ObservationTerms<C> terms;
    double Vp[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0}, gp[3] = {0, 0, 0};
    for (int64_t i = starts[p]; i < starts[p + 1]; ++i) {
        const int64_t o = order[i], j = cam[o];
        observation_terms<C>(R + j * 9, t + j * 3, X + p * 3, intr + j * 4, dist != nullptr ? dist + j * 5 : nullptr,
                             y + o * 2, c[o], cols, cam_free + j * C, point_free[p], loss, scale, min_depth, exact,
                             terms);
        r[2 * o] = terms.r[0];
        r[2 * o + 1] = terms.r[1];
        w[o] = terms.w;
        double* cam_acc = cam_blocks + j * block;
        normal_terms<C>(terms, [cam_acc](int64_t k, double v) { atomicAdd(cam_acc + k, v); }, Vp, gp, W + o * C * 3);
    }
    for (int k = 0; k < 9; ++k) V[p * 9 + k] = Vp[k];
    for (int k = 0; k < 3; ++k) g_p[p * 3 + k] = gp[k];
}

__global__ void project_kernel(const double* __restrict__ R, const double* __restrict__ t,
                               const double* __restrict__ X, const double* __restrict__ intr,
                               const double* __restrict__ dist, const int64_t* __restrict__ cam,
                               const int64_t* __restrict__ pt, int64_t O, double min_depth, double* uv, bool* valid) {
    const int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (o < O) project_observation(R, t, X, intr, dist, cam, pt, o, min_depth, uv, valid);
}

}  // namespace

std::vector<torch::Tensor> ba_project_cuda(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                           const torch::Tensor& intr, const torch::Tensor& dist,
                                           const torch::Tensor& cam, const torch::Tensor& pt, double min_depth) {
    check_project_inputs(R, t, X, intr, dist, cam, pt);
    SG_CHECK_CUDA(R);
    const c10::cuda::CUDAGuard guard(R.device());
    const int64_t O = cam.size(0);
    torch::Tensor uv = torch::zeros({O, 2}, R.options());
    torch::Tensor valid = torch::zeros({O}, R.options().dtype(torch::kBool));
    if (O > 0) {
        cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
        project_kernel<<<blocks(O), kThreads, 0, stream>>>(
            R.data_ptr<double>(), t.data_ptr<double>(), X.data_ptr<double>(), intr.data_ptr<double>(),
            dist.size(1) == 5 ? dist.data_ptr<double>() : nullptr, cam.data_ptr<int64_t>(), pt.data_ptr<int64_t>(), O,
            min_depth, uv.data_ptr<double>(), valid.data_ptr<bool>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {uv, valid};
}

std::vector<torch::Tensor> ba_linearise_cuda(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                             const torch::Tensor& intr, const torch::Tensor& dist,
                                             const torch::Tensor& y, const torch::Tensor& c, const torch::Tensor& cam,
                                             const torch::Tensor& pt, const torch::Tensor& order,
                                             const torch::Tensor& starts, const torch::Tensor& cols,
                                             const torch::Tensor& cam_free, const torch::Tensor& point_free,
                                             int64_t loss, double scale, double min_depth, bool exact) {
    check_linearise_inputs(R, t, X, intr, dist, y, c, cam, pt, order, starts, cols, cam_free, point_free, loss);
    SG_CHECK_CUDA(R);
    const c10::cuda::CUDAGuard guard(R.device());
    const int64_t N = R.size(0), M = X.size(0), O = y.size(0);
    const int C = static_cast<int>(cam_free.size(1));
    const auto opts = R.options();
    torch::Tensor cam_blocks = torch::zeros({N, int64_t(C) * C + C}, opts), V = torch::zeros({M, 3, 3}, opts);
    torch::Tensor W = torch::zeros({O, C, 3}, opts), g_p = torch::zeros({M, 3}, opts);
    torch::Tensor r = torch::zeros({O, 2}, opts), w = torch::zeros({O}, opts);
    if (M > 0) {
        cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
        const double* dp = dist.size(1) == 5 ? dist.data_ptr<double>() : nullptr;
        dispatch_camera_params(C, [&](auto cc) {
            constexpr int Cn = decltype(cc)::value;
            if constexpr (Cn >= 6) {
                linearise_kernel<Cn><<<blocks(M), kThreads, 0, stream>>>(
                    R.data_ptr<double>(), t.data_ptr<double>(), X.data_ptr<double>(), intr.data_ptr<double>(), dp,
                    y.data_ptr<double>(), c.data_ptr<double>(), cam.data_ptr<int64_t>(), order.data_ptr<int64_t>(),
                    starts.data_ptr<int64_t>(), cols.data_ptr<int64_t>(), cam_free.data_ptr<double>(),
                    point_free.data_ptr<double>(), M, loss, scale, min_depth, exact, cam_blocks.data_ptr<double>(),
                    V.data_ptr<double>(), W.data_ptr<double>(), g_p.data_ptr<double>(), r.data_ptr<double>(),
                    w.data_ptr<double>());
            }
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    torch::Tensor U = cam_blocks.slice(1, 0, int64_t(C) * C).reshape({N, C, C});
    torch::Tensor g_c = cam_blocks.slice(1, int64_t(C) * C).contiguous();
    return {U, V, W, g_c, g_p, r, w};
}

}  // namespace ba
}  // namespace scenegrad
