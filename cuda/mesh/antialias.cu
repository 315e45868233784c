// CUDA launcher of silhouette antialiasing: one thread per pixel (both of its pairs), blends
// and gradients scattered with atomicAdd. The per-pair math is in antialias.h.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "mesh/antialias.h"
#include "mesh/ops.h"

namespace scenegrad {
namespace mesh {
namespace {

template <typename T>
__global__ void forward_kernel(const T* color, const T* rast, const T* pos, const int32_t* tri,
                               const int32_t* opposite, AntialiasDims dm, T* out) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (int64_t)dm.B * dm.H * dm.W) return;
    const int64_t b = p / ((int64_t)dm.H * dm.W);
    const int y = (int)((p / dm.W) % dm.H), x = (int)(p % dm.W);
    for (int d = 0; d < 2; ++d) {
        AAPair<T> pr;
        if (!aa_analyze(pos, tri, opposite, rast, dm, b, x, y, d, pr)) continue;
        const T* c0 = color + pr.pixel0 * dm.C;
        const T* c1 = color + pr.pixel1 * dm.C;
        T* dst = out + pr.target * dm.C;
        for (int c = 0; c < dm.C; ++c) atomicAdd(dst + c, pr.alpha * (c1[c] - c0[c]));
    }
}

template <typename T>
__global__ void backward_kernel(const T* color, const T* rast, const T* pos, const int32_t* tri,
                                const int32_t* opposite, AntialiasDims dm, const T* grad_out, T* grad_color,
                                T* grad_pos) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (int64_t)dm.B * dm.H * dm.W) return;
    const int64_t b = p / ((int64_t)dm.H * dm.W);
    const int y = (int)((p / dm.W) % dm.H), x = (int)(p % dm.W);
    for (int d = 0; d < 2; ++d) {
        AAPair<T> pr;
        if (!aa_analyze(pos, tri, opposite, rast, dm, b, x, y, d, pr)) continue;
        const T* c0 = color + pr.pixel0 * dm.C;
        const T* c1 = color + pr.pixel1 * dm.C;
        const T* g = grad_out + pr.target * dm.C;
        T g_alpha = T(0);
        for (int c = 0; c < dm.C; ++c) {
            g_alpha += g[c] * (c1[c] - c0[c]);
            atomicAdd(grad_color + pr.pixel1 * dm.C + c, pr.alpha * g[c]);
            atomicAdd(grad_color + pr.pixel0 * dm.C + c, -pr.alpha * g[c]);
        }
        T ga[3] = {T(0), T(0), T(0)}, gb[3] = {T(0), T(0), T(0)};
        aa_alpha_position_grad(pr, pos, dm, b, g_alpha, ga, gb);
        T* da = grad_pos + ((dm.pos_batched ? b * dm.V : 0) + pr.va) * 4;
        T* db = grad_pos + ((dm.pos_batched ? b * dm.V : 0) + pr.vb) * 4;
        for (int k = 0; k < 3; ++k) {
            const int comp = k == 2 ? 3 : k;  // (x, y, w)
            atomicAdd(da + comp, ga[k]);
            atomicAdd(db + comp, gb[k]);
        }
    }
}

}  // namespace

torch::Tensor antialias_fwd_cuda(const torch::Tensor& color, const torch::Tensor& rast, const torch::Tensor& pos,
                                 const torch::Tensor& tri, const torch::Tensor& opposite) {
    const AntialiasDims dm = check_antialias_inputs(color, rast, pos, tri, opposite);
    SG_CHECK_CUDA(color);
    const c10::cuda::CUDAGuard guard(color.device());
    auto out = color.clone();
    const int64_t n = (int64_t)dm.B * dm.H * dm.W;
    if (n == 0) return out;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(color.scalar_type(), "antialias_fwd_cuda", [&] {
        forward_kernel<scalar_t><<<blocks(n), kThreads, 0, stream>>>(
            color.data_ptr<scalar_t>(), rast.data_ptr<scalar_t>(), pos.data_ptr<scalar_t>(), tri.data_ptr<int32_t>(),
            opposite.data_ptr<int32_t>(), dm, out.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}

std::vector<torch::Tensor> antialias_bwd_cuda(const torch::Tensor& color, const torch::Tensor& rast,
                                              const torch::Tensor& pos, const torch::Tensor& tri,
                                              const torch::Tensor& opposite, const torch::Tensor& grad_out) {
    const AntialiasDims dm = check_antialias_inputs(color, rast, pos, tri, opposite);
    SG_CHECK_CUDA(color);
    const c10::cuda::CUDAGuard guard(color.device());
    auto go = grad_out.contiguous();
    auto grad_color = go.clone();
    auto grad_pos = torch::zeros_like(pos);
    const int64_t n = (int64_t)dm.B * dm.H * dm.W;
    if (n == 0) return {grad_color, grad_pos};
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(color.scalar_type(), "antialias_bwd_cuda", [&] {
        backward_kernel<scalar_t><<<blocks(n), kThreads, 0, stream>>>(
            color.data_ptr<scalar_t>(), rast.data_ptr<scalar_t>(), pos.data_ptr<scalar_t>(), tri.data_ptr<int32_t>(),
            opposite.data_ptr<int32_t>(), dm, go.data_ptr<scalar_t>(), grad_color.data_ptr<scalar_t>(),
            grad_pos.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {grad_color, grad_pos};
}

}  // namespace mesh
}  // namespace scenegrad
