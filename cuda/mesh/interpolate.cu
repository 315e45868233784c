// CUDA launcher of attribute interpolation: one thread per pixel, vertex gradients scattered
// with atomicAdd. The per-pixel math is in interpolate.h, shared with the CPU launcher.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "mesh/interpolate.h"
#include "mesh/ops.h"

namespace scenegrad {
namespace mesh {
namespace {

template <typename T>
__global__ void forward_kernel(const T* attr, InterpolateDims d, const int32_t* tri, const T* rast, const T* db,
                               const int32_t* diff, T* out, T* out_da) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= d.pixels) return;
    interpolate_pixel(attr, d, tri, p, rast, db, diff, out + p * d.A, out_da + p * 2 * d.D);
}

template <typename T>
struct AtomicRows {
    T* rows[3];
    __device__ void operator()(int corner, int k, T value) const { atomicAdd(rows[corner] + k, value); }
};

template <typename T>
__global__ void backward_kernel(const T* attr, InterpolateDims d, const int32_t* tri, const T* rast, const T* db,
                                const int32_t* diff, const T* grad_out, const T* grad_out_da, T* grad_attr,
                                T* grad_rast, T* grad_db) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= d.pixels) return;
    const int t = (int)rast[4 * p + 3] - 1;
    if (t < 0) return;
    const int64_t b = d.attr_batched ? p / d.hw : 0;  // no division for shared attributes
    AtomicRows<T> add;
    for (int c = 0; c < 3; ++c) add.rows[c] = grad_attr + ((d.attr_batched ? b * d.V : 0) + tri[3 * t + c]) * d.A;
    interpolate_pixel_backward(attr, d, tri, p, rast, db, diff, grad_out + p * d.A,
                               grad_out_da ? grad_out_da + p * 2 * d.D : nullptr, grad_rast + 4 * p,
                               grad_db ? grad_db + 4 * p : nullptr, add);
}

}  // namespace

std::vector<torch::Tensor> interpolate_fwd_cuda(const torch::Tensor& attr, const torch::Tensor& rast,
                                                const torch::Tensor& tri, const torch::Tensor& rast_db,
                                                const torch::Tensor& diff) {
    const InterpolateDims d = check_interpolate_inputs(attr, rast, tri, rast_db, diff);
    SG_CHECK_CUDA(rast);
    const c10::cuda::CUDAGuard guard(rast.device());
    auto out = torch::empty({rast.size(0), rast.size(1), rast.size(2), d.A}, attr.options());
    auto out_da = torch::empty({rast.size(0), rast.size(1), rast.size(2), 2 * d.D}, attr.options());
    if (d.pixels == 0) return {out, out_da};
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_fwd_cuda", [&] {
        forward_kernel<scalar_t><<<blocks(d.pixels), kThreads, 0, stream>>>(
            attr.data_ptr<scalar_t>(), d, tri.data_ptr<int32_t>(), rast.data_ptr<scalar_t>(),
            d.D > 0 ? rast_db.data_ptr<scalar_t>() : nullptr, diff.data_ptr<int32_t>(), out.data_ptr<scalar_t>(),
            out_da.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {out, out_da};
}

std::vector<torch::Tensor> interpolate_bwd_cuda(const torch::Tensor& attr, const torch::Tensor& rast,
                                                const torch::Tensor& tri, const torch::Tensor& rast_db,
                                                const torch::Tensor& diff, const torch::Tensor& grad_out,
                                                const torch::Tensor& grad_out_da) {
    const InterpolateDims d = check_interpolate_inputs(attr, rast, tri, rast_db, diff);
    SG_CHECK_CUDA(rast);
    const c10::cuda::CUDAGuard guard(rast.device());
    auto go = grad_out.contiguous();
    const bool with_da = d.D > 0 && grad_out_da.defined();
    auto goda = with_da ? grad_out_da.contiguous() : torch::Tensor();
    auto grad_attr = torch::zeros_like(attr);
    auto grad_rast = torch::zeros_like(rast);
    auto grad_db = with_da ? torch::zeros_like(rast) : torch::Tensor();
    if (d.pixels == 0) return {grad_attr, grad_rast, grad_db};
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_bwd_cuda", [&] {
        backward_kernel<scalar_t><<<blocks(d.pixels), kThreads, 0, stream>>>(
            attr.data_ptr<scalar_t>(), d, tri.data_ptr<int32_t>(), rast.data_ptr<scalar_t>(),
            d.D > 0 ? rast_db.data_ptr<scalar_t>() : nullptr, diff.data_ptr<int32_t>(), go.data_ptr<scalar_t>(),
            with_da ? goda.data_ptr<scalar_t>() : nullptr, grad_attr.data_ptr<scalar_t>(),
            grad_rast.data_ptr<scalar_t>(), with_da ? grad_db.data_ptr<scalar_t>() : nullptr);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {grad_attr, grad_rast, grad_db};
}

}  // namespace mesh
}  // namespace scenegrad
