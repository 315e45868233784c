// CUDA launcher of the bundle adjustment's Schur complement: one thread per observation a (in point
// order) computes F_a = W_a V_p^-1 and adds the terms of a with itself and with the later observations of
// its point, by atomic adds into T. The math is schur.h's.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ba/schur.h"
#include "ba/schur_ops.h"
#include "common/checks.h"
#include "common/launch_cuda.h"

namespace scenegrad {
namespace ba {
namespace {

template <int C>
__global__ void schur_kernel(const double* __restrict__ w, const double* __restrict__ vi,
                             const int64_t* __restrict__ pt, const int64_t* __restrict__ pos,
                             const int64_t* __restrict__ order, const int64_t* __restrict__ point_end, int64_t O,
                             int64_t S, double* t) {
    const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (i >= O) return;
    const int64_t a = order[i];
    double Fa[C * 3];
    schur_f<C>(w + a * C * 3, vi + pt[a] * 9, Fa);
    const int64_t* pa = pos + a * C;
    auto add = [t](int64_t index, double v) { atomicAdd(t + index, v); };
    schur_pair<C>(Fa, w + a * C * 3, pa, pa, S, 0.5, add);
    for (int64_t k = i + 1; k < point_end[i]; ++k) {
        const int64_t b = order[k];
        schur_pair<C>(Fa, w + b * C * 3, pa, pos + b * C, S, 1.0, add);
    }
}

}  // namespace

torch::Tensor ba_schur_cuda(const torch::Tensor& W, const torch::Tensor& V_inv, const torch::Tensor& pt,
                            const torch::Tensor& pos, const torch::Tensor& order, const torch::Tensor& starts,
                            int64_t size) {
    check_schur_inputs(W, V_inv, pt, pos, order, starts, size);
    SG_CHECK_CUDA(W);
    const c10::cuda::CUDAGuard guard(W.device());
    const int64_t O = W.size(0), M = starts.size(0) - 1;
    torch::Tensor out = torch::zeros({size, size}, W.options());
    if (O == 0) return out;
    // the end (in order) of each sorted observation's point
    const torch::Tensor counts = starts.slice(0, 1).sub(starts.slice(0, 0, M));
    const torch::Tensor point_end = starts.slice(0, 1).repeat_interleave(counts, 0, O).contiguous();
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    dispatch_camera_params(static_cast<int>(W.size(1)), [&](auto c) {
        schur_kernel<decltype(c)::value><<<blocks(O), kThreads, 0, stream>>>(
            W.data_ptr<double>(), V_inv.data_ptr<double>(), pt.data_ptr<int64_t>(), pos.data_ptr<int64_t>(),
            order.data_ptr<int64_t>(), point_end.data_ptr<int64_t>(), O, size, out.data_ptr<double>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    out.add_(out.t().clone());  // X + X^T
    return out;
}

}  // namespace ba
}  // namespace scenegrad
