// CUDA launcher of project_gaussians (named gaussian_project.cu because the extension build names
// objects by file stem). Forward: one thread per (camera, Gaussian) pair. Backward: one thread per
// Gaussian visiting its cameras (per-Gaussian gradients without atomics); the per-camera gradients
// (viewmats, Ks) are summed over each warp with shuffles and added to global memory by one lane.
// The per-pair math is in project.h, shared with the CPU launcher.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "gaussians/project_ops.h"

namespace scenegrad {
namespace gaussians {
namespace {

template <typename T>
__global__ void project_fwd_kernel(const T* means, const T* quats, const T* scales, const T* V, const T* K,
                                   ProjectParams<T> p, int64_t C, int64_t N, int32_t* radii, T* means2d, T* depths,
                                   T* conics, T* comps) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C * N) return;
    const int64_t c = i / N, n = i % N;
    T comp;
    radii[i] = project_forward(means + 3 * n, quats + 4 * n, scales + 3 * n, V + 16 * c, K + 9 * c, p,
                               means2d + 2 * i, depths[i], conics + 3 * i, comp);
    if (comps != nullptr) comps[i] = comp;
}

template <typename T>
__device__ T warp_sum(T v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

// Every thread of a warp reaches the camera reduction (threads past N contribute zeros).
template <typename T>
__global__ void project_bwd_kernel(const T* means, const T* quats, const T* scales, const T* V, const T* K,
                                   ProjectParams<T> p, int64_t C, int64_t N, const int32_t* radii, const T* vm,
                                   const T* vd, const T* vc, const T* vp, T* g_means, T* g_quats, T* g_scales,
                                   T* g_viewmats, T* g_Ks) {
    const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = n < N;
    T gm[3] = {0, 0, 0}, gq[4] = {0, 0, 0, 0}, gs[3] = {0, 0, 0};
    for (int64_t c = 0; c < C; ++c) {
        T gV[16], gK[9];
        for (int j = 0; j < 16; ++j) gV[j] = T(0);
        for (int j = 0; j < 9; ++j) gK[j] = T(0);
        const int64_t i = c * N + n;
        if (live && radii[i] > 0)
            project_backward(means + 3 * n, quats + 4 * n, scales + 3 * n, V + 16 * c, K + 9 * c, p, vm + 2 * i,
                             vd[i], vc + 3 * i, vp != nullptr ? vp[i] : T(0), gm, gq, gs,
                             g_viewmats != nullptr ? gV : nullptr, gK);
        if (g_viewmats != nullptr) {
            const bool lane0 = (threadIdx.x & 31) == 0;
            for (int j = 0; j < 12; ++j) {
                const T v = warp_sum(gV[j]);
                if (lane0 && v != T(0)) atomicAdd(g_viewmats + 16 * c + j, v);
            }
            for (int j = 0; j < 6; ++j) {
                const T v = warp_sum(gK[j]);
                if (lane0 && v != T(0)) atomicAdd(g_Ks + 9 * c + j, v);
            }
        }
    }
    if (!live) return;
    for (int j = 0; j < 3; ++j) g_means[3 * n + j] = gm[j];
    for (int j = 0; j < 4; ++j) g_quats[4 * n + j] = gq[j];
    for (int j = 0; j < 3; ++j) g_scales[3 * n + j] = gs[j];
}

}  // namespace

std::vector<torch::Tensor> project_gaussians_fwd_cuda(const torch::Tensor& means, const torch::Tensor& quats,
                                                      const torch::Tensor& scales, const torch::Tensor& viewmats,
                                                      const torch::Tensor& Ks, const ProjectParams<double>& p) {
    const auto [C, N] = check_project_inputs(means, quats, scales, viewmats, Ks);
    SG_CHECK_CUDA(means);
    const c10::cuda::CUDAGuard guard(means.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    std::vector<torch::Tensor> outs = project_outputs(means, C, N, p.antialiased);
    torch::Tensor &radii = outs[0], &means2d = outs[1], &depths = outs[2], &conics = outs[3], &comps = outs[4];
    if (C * N == 0) return outs;
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_fwd_cuda", [&] {
        using T = scalar_t;
        project_fwd_kernel<T><<<blocks(C * N), kThreads, 0, stream>>>(
            means.data_ptr<T>(), quats.data_ptr<T>(), scales.data_ptr<T>(), viewmats.data_ptr<T>(), Ks.data_ptr<T>(),
            cast_params<T>(p), C, N, radii.data_ptr<int32_t>(), means2d.data_ptr<T>(), depths.data_ptr<T>(),
            conics.data_ptr<T>(), p.antialiased ? comps.data_ptr<T>() : nullptr);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return outs;
}

std::vector<torch::Tensor> project_gaussians_bwd_cuda(
    const torch::Tensor& means, const torch::Tensor& quats, const torch::Tensor& scales,
    const torch::Tensor& viewmats, const torch::Tensor& Ks, const ProjectParams<double>& p, const torch::Tensor& radii,
    const torch::Tensor& v_means2d, const torch::Tensor& v_depths, const torch::Tensor& v_conics,
    const torch::Tensor& v_compensations, bool camera_grads) {
    const auto [C, N] = check_project_inputs(means, quats, scales, viewmats, Ks);
    SG_CHECK_CUDA(means);
    check_project_grads(C, N, means, radii, v_means2d, v_depths, v_conics, v_compensations, p.antialiased);
    const c10::cuda::CUDAGuard guard(means.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    auto g_means = torch::zeros({N, 3}, means.options());
    auto g_quats = torch::zeros({N, 4}, means.options());
    auto g_scales = torch::zeros({N, 3}, means.options());
    torch::Tensor g_viewmats, g_Ks;
    if (camera_grads) {
        g_viewmats = torch::zeros({C, 4, 4}, means.options());
        g_Ks = torch::zeros({C, 3, 3}, means.options());
    }
    if (C * N == 0) return {g_means, g_quats, g_scales, g_viewmats, g_Ks};
    const bool has_comp = p.antialiased && v_compensations.defined();
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_bwd_cuda", [&] {
        using T = scalar_t;
        project_bwd_kernel<T><<<blocks(N), kThreads, 0, stream>>>(
            means.data_ptr<T>(), quats.data_ptr<T>(), scales.data_ptr<T>(), viewmats.data_ptr<T>(), Ks.data_ptr<T>(),
            cast_params<T>(p), C, N, radii.data_ptr<int32_t>(), v_means2d.data_ptr<T>(), v_depths.data_ptr<T>(),
            v_conics.data_ptr<T>(), has_comp ? v_compensations.data_ptr<T>() : nullptr, g_means.data_ptr<T>(),
            g_quats.data_ptr<T>(), g_scales.data_ptr<T>(), camera_grads ? g_viewmats.data_ptr<T>() : nullptr,
            camera_grads ? g_Ks.data_ptr<T>() : nullptr);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {g_means, g_quats, g_scales, g_viewmats, g_Ks};
}

}  // namespace gaussians
}  // namespace scenegrad
