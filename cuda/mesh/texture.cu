// CUDA launcher of texture sampling and mip pyramids: one thread per output pixel (or texel; one
// launch per mip level), texel gradients scattered with atomicAdd into a gradient pyramid that is
// then folded down into level 0. The per-pixel math is in texture.h, shared with the CPU launcher.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "mesh/ops.h"
#include "mesh/texture.h"

namespace scenegrad {
namespace mesh {
namespace {

template <typename T, int kC>
__global__ void forward_kernel(const T* tex, const T* coarse, const T* uv, const T* uv_da, const T* bias,
                               const bool* mask, TextureDims d, T* out) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= d.pixels) return;
    if (mask && !mask[p]) {  // not sampled
        for (int c = 0; c < d.C; ++c) out[p * d.C + c] = T(0);
        return;
    }
    int64_t b;
    const T *level0, *rest;
    pixel_pyramid(tex, coarse, d, p, b, level0, rest);
    const T lod = uv_da ? texture_lod(uv_da + 4 * p, d.sizes[0], d.sizes[1], bias ? bias[p] : T(0), (T*)nullptr)
                        : T(0);
    texture_pixel<T, kC>(level0, rest, d, uv[2 * p], uv[2 * p + 1], lod, out + p * d.C);
}

template <typename T>
struct AtomicTexels {
    T* base;
    int C;
    __device__ void operator()(int64_t texel, T scale, const T* g) const {
        for (int c = 0; c < C; ++c) atomicAdd(base + texel * C + c, scale * g[c]);
    }
};

template <typename T, int kC>
__global__ void backward_kernel(const T* tex, const T* coarse, const T* uv, const T* uv_da, const T* bias,
                                const bool* mask, TextureDims d, const T* grad_out, T* grad_pyramid, T* grad_uv,
                                T* grad_uv_da, T* grad_lod) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= d.pixels || (mask && !mask[p])) return;  // the gradients are zero-filled
    int64_t b;
    const T *level0, *rest;
    pixel_pyramid(tex, coarse, d, p, b, level0, rest);
    AtomicTexels<T> add{grad_pyramid + b * d.total * d.C, d.C};
    T dlod[4];
    const T lod = uv_da ? texture_lod(uv_da + 4 * p, d.sizes[0], d.sizes[1], bias ? bias[p] : T(0), dlod) : T(0);
    T gu, gv, gl;
    texture_pixel_backward<T, kC>(level0, rest, d, uv[2 * p], uv[2 * p + 1], lod, grad_out + p * d.C, gu, gv, gl,
                                  add);
    grad_uv[2 * p] = gu;
    grad_uv[2 * p + 1] = gv;
    if (uv_da) {
        if (grad_lod) grad_lod[p] = gl;
        for (int k = 0; k < 4; ++k) grad_uv_da[4 * p + k] = gl * dlod[k];
    }
}

// Level `offset` (h2 x w2 texels) of the coarse buffer from the level before, at `prev` (h x w):
// the texture itself for level 1 (prev_stride texels per batch entry), else the coarse buffer.
template <typename T>
__global__ void mip_kernel(const T* prev, int64_t prev_stride, T* coarse, int64_t rest, int64_t offset, int h, int w,
                           int h2, int w2, int C, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t b = i / ((int64_t)h2 * w2);
    const int x = (int)(i % w2), y = (int)((i / w2) % h2);
    T* out = coarse + (b * rest + offset + (int64_t)y * w2 + x) * C;
    for (int c = 0; c < C; ++c) out[c] = mip_texel(prev + b * prev_stride * C, h, w, C, x, y, c);
}

template <typename T>
__global__ void mip_fold_kernel(T* grad, int64_t total, int64_t offset, int64_t next_offset, int h, int w, int C,
                                int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t b = i / ((int64_t)h * w);
    const int x = (int)(i % w), y = (int)((i / w) % h);
    const T* next = grad + (b * total + next_offset) * C;
    T* g = grad + (b * total + offset + (int64_t)y * w + x) * C;
    for (int c = 0; c < C; ++c) g[c] += mip_fold_texel(next, h, w, C, x, y, c);
}

}  // namespace

// Folds the gradients of every mip level of grad_pyramid [B, total, C] down into level 0, in place, and
// returns level 0 as [B, h0, w0, C].
static torch::Tensor fold_mip_gradients(torch::Tensor& grad_pyramid, const torch::Tensor& offsets,
                                        const torch::Tensor& sizes) {
    const int64_t B = grad_pyramid.size(0), total = grad_pyramid.size(1), C = grad_pyramid.size(2);
    const MipLayout m = mip_layout(offsets, sizes, total);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(grad_pyramid.scalar_type(), "texture_mip_fold_cuda", [&] {
        for (int l = m.levels - 1; l >= 1; --l) {
            const int64_t n = B * m.sizes[2 * l - 2] * m.sizes[2 * l - 1];
            mip_fold_kernel<scalar_t><<<blocks(n), kThreads, 0, stream>>>(
                grad_pyramid.data_ptr<scalar_t>(), total, m.offsets[l - 1], m.offsets[l], m.sizes[2 * l - 2],
                m.sizes[2 * l - 1], (int)C, n);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
    });
    return grad_pyramid.narrow(1, m.offsets[0], (int64_t)m.sizes[0] * m.sizes[1]).view({B, m.sizes[0], m.sizes[1], C});
}

torch::Tensor texture_fwd_cuda(const torch::Tensor& tex, const torch::Tensor& coarse, const torch::Tensor& offsets,
                               const torch::Tensor& sizes, const torch::Tensor& uv, const torch::Tensor& uv_da,
                               const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary, int64_t filter) {
    const TextureDims d = check_texture_inputs(tex, coarse, offsets, sizes, uv, uv_da, bias, mask, boundary, filter);
    SG_CHECK_CUDA(uv);
    const c10::cuda::CUDAGuard guard(uv.device());
    auto out = torch::empty({uv.size(0), uv.size(1), uv.size(2), d.C}, uv.options());
    if (d.pixels == 0) return out;
    const bool mip = d.filter == kLinearMipLinear;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_fwd_cuda", [&] {
        with_channels(d.C, [&](auto channels) {
            forward_kernel<scalar_t, decltype(channels)::value><<<blocks(d.pixels), kThreads, 0, stream>>>(
                tex.data_ptr<scalar_t>(), coarse.data_ptr<scalar_t>(), uv.data_ptr<scalar_t>(),
                mip ? uv_da.data_ptr<scalar_t>() : nullptr, bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
                mask.defined() ? mask.data_ptr<bool>() : nullptr, d,
                out.data_ptr<scalar_t>());
        });
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}

std::vector<torch::Tensor> texture_bwd_cuda(const torch::Tensor& tex, const torch::Tensor& coarse,
                                            const torch::Tensor& offsets, const torch::Tensor& sizes,
                                            const torch::Tensor& uv, const torch::Tensor& uv_da,
                                            const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary,
                                            int64_t filter, const torch::Tensor& grad_out) {
    const TextureDims d = check_texture_inputs(tex, coarse, offsets, sizes, uv, uv_da, bias, mask, boundary, filter);
    SG_CHECK_CUDA(uv);
    const c10::cuda::CUDAGuard guard(uv.device());
    const bool mip = d.filter == kLinearMipLinear;
    auto go = grad_out.contiguous();
    auto grad_pyramid = torch::zeros({tex.size(0), d.total, (int64_t)d.C}, tex.options());
    auto grad_uv = torch::zeros_like(uv);
    auto grad_uv_da = mip ? torch::zeros_like(uv_da) : torch::Tensor();
    auto grad_lod = mip && bias.defined() ? torch::zeros(uv.sizes().slice(0, 3), uv.options()) : torch::Tensor();
    if (d.pixels == 0) return {fold_mip_gradients(grad_pyramid, offsets, sizes), grad_uv, grad_uv_da, grad_lod};
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_bwd_cuda", [&] {
        with_channels(d.C, [&](auto channels) {
            backward_kernel<scalar_t, decltype(channels)::value><<<blocks(d.pixels), kThreads, 0, stream>>>(
                tex.data_ptr<scalar_t>(), coarse.data_ptr<scalar_t>(), uv.data_ptr<scalar_t>(),
                mip ? uv_da.data_ptr<scalar_t>() : nullptr, bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
                mask.defined() ? mask.data_ptr<bool>() : nullptr, d,
                go.data_ptr<scalar_t>(), grad_pyramid.data_ptr<scalar_t>(), grad_uv.data_ptr<scalar_t>(),
                mip ? grad_uv_da.data_ptr<scalar_t>() : nullptr,
                grad_lod.defined() ? grad_lod.data_ptr<scalar_t>() : nullptr);
        });
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {fold_mip_gradients(grad_pyramid, offsets, sizes), grad_uv, grad_uv_da, grad_lod};
}

torch::Tensor texture_mip_cuda(const torch::Tensor& tex, const torch::Tensor& offsets, const torch::Tensor& sizes) {
    SG_CHECK_CUDA(tex);
    const c10::cuda::CUDAGuard guard(tex.device());
    torch::Tensor coarse;
    const MipLayout m = mip_coarse_buffer(tex, offsets, sizes, coarse);
    const int64_t B = tex.size(0), C = tex.size(3), texels0 = tex.size(1) * tex.size(2), rest = coarse.size(1);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(tex.scalar_type(), "texture_mip_cuda", [&] {
        for (int l = 1; l < m.levels; ++l) {
            const int64_t n = B * m.sizes[2 * l] * m.sizes[2 * l + 1];
            const scalar_t* prev = l == 1 ? tex.data_ptr<scalar_t>()
                                          : coarse.data_ptr<scalar_t>() + (m.offsets[l - 1] - texels0) * C;
            mip_kernel<scalar_t><<<blocks(n), kThreads, 0, stream>>>(
                prev, l == 1 ? texels0 : rest, coarse.data_ptr<scalar_t>(), rest, m.offsets[l] - texels0,
                m.sizes[2 * l - 2], m.sizes[2 * l - 1], m.sizes[2 * l], m.sizes[2 * l + 1], (int)C, n);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
    });
    return coarse;
}

}  // namespace mesh
}  // namespace scenegrad
