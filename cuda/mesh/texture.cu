// CUDA launcher of texture sampling: one thread per output pixel, texel gradients scattered with
// atomicAdd. The per-pixel math is in texture.h, shared with the CPU launcher.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "mesh/ops.h"
#include "mesh/texture.h"

namespace scenegrad {
namespace mesh {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void forward_kernel(const T* buf, const T* uv, const T* lod, TextureDims d, T* out) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= d.pixels) return;
    const T* tex = buf + (d.tex_batched ? (p / d.hw) * d.total * d.C : 0);
    texture_pixel(tex, d, uv[2 * p], uv[2 * p + 1], lod ? lod[p] : T(0), out + p * d.C);
}

template <typename T>
struct AtomicTexels {
    T* base;
    int C;
    __device__ void operator()(int64_t texel, int c, T value) const { atomicAdd(base + texel * C + c, value); }
};

template <typename T>
__global__ void backward_kernel(const T* buf, const T* uv, const T* lod, TextureDims d, const T* grad_out,
                                T* grad_buf, T* grad_uv, T* grad_lod) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= d.pixels) return;
    const int64_t base = d.tex_batched ? (p / d.hw) * d.total * d.C : 0;
    AtomicTexels<T> add{grad_buf + base, d.C};
    T gu, gv, gl;
    texture_pixel_backward(buf + base, d, uv[2 * p], uv[2 * p + 1], lod ? lod[p] : T(0), grad_out + p * d.C, gu, gv,
                           gl, add);
    grad_uv[2 * p] = gu;
    grad_uv[2 * p + 1] = gv;
    if (grad_lod) grad_lod[p] = gl;
}

inline unsigned blocks(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

}  // namespace

torch::Tensor texture_fwd_cuda(const torch::Tensor& buf, const torch::Tensor& offsets, const torch::Tensor& sizes,
                               const torch::Tensor& uv, const torch::Tensor& lod, int64_t boundary, int64_t filter) {
    const TextureDims d = check_texture_inputs(buf, offsets, sizes, uv, lod, boundary, filter);
    SG_CHECK_CUDA(uv);
    const c10::cuda::CUDAGuard guard(uv.device());
    auto out = torch::empty({uv.size(0), uv.size(1), uv.size(2), d.C}, uv.options());
    if (d.pixels == 0) return out;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_fwd_cuda", [&] {
        forward_kernel<scalar_t><<<blocks(d.pixels), kThreads, 0, stream>>>(
            buf.data_ptr<scalar_t>(), uv.data_ptr<scalar_t>(),
            d.filter == kLinearMipLinear ? lod.data_ptr<scalar_t>() : nullptr, d, out.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}

std::vector<torch::Tensor> texture_bwd_cuda(const torch::Tensor& buf, const torch::Tensor& offsets,
                                            const torch::Tensor& sizes, const torch::Tensor& uv,
                                            const torch::Tensor& lod, int64_t boundary, int64_t filter,
                                            const torch::Tensor& grad_out) {
    const TextureDims d = check_texture_inputs(buf, offsets, sizes, uv, lod, boundary, filter);
    SG_CHECK_CUDA(uv);
    const c10::cuda::CUDAGuard guard(uv.device());
    auto go = grad_out.contiguous();
    auto grad_buf = torch::zeros_like(buf);
    auto grad_uv = torch::zeros_like(uv);
    const bool mip = d.filter == kLinearMipLinear;
    auto grad_lod = mip ? torch::zeros_like(lod) : torch::Tensor();
    if (d.pixels == 0) return {grad_buf, grad_uv, grad_lod};
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_bwd_cuda", [&] {
        backward_kernel<scalar_t><<<blocks(d.pixels), kThreads, 0, stream>>>(
            buf.data_ptr<scalar_t>(), uv.data_ptr<scalar_t>(), mip ? lod.data_ptr<scalar_t>() : nullptr, d,
            go.data_ptr<scalar_t>(), grad_buf.data_ptr<scalar_t>(), grad_uv.data_ptr<scalar_t>(),
            mip ? grad_lod.data_ptr<scalar_t>() : nullptr);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {grad_buf, grad_uv, grad_lod};
}

}  // namespace mesh
}  // namespace scenegrad
