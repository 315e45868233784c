// CUDA launcher of the rasterizer. Three passes: per-triangle set-up; per-triangle scan of its
// bounding box with a 64-bit atomicMin of (depth key, triangle id), which gives the same
// nearest-then-lowest-id winner as the CPU launcher; per-pixel outputs of the winner.
// The per-pixel math is in rasterize.h, shared with the CPU launcher.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "mesh/ops.h"
#include "mesh/rasterize.h"

namespace scenegrad {
namespace mesh {
namespace {

constexpr unsigned long long kEmpty = ~0ull;

template <typename T>
__global__ void setup_kernel(const T* pos, int B, int V, const int32_t* tri, int NT, int H, int W,
                             TriSetup<T>* setups, uint8_t* valid) {
    const int64_t bt = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (bt >= (int64_t)B * NT) return;
    const int64_t b = bt / NT, t = bt % NT;
    const T* base = pos + b * V * 4;
    valid[bt] = setup_triangle(base + 4 * tri[3 * t], base + 4 * tri[3 * t + 1], base + 4 * tri[3 * t + 2], W,
                               H, setups[bt]);
}

template <typename T>
__global__ void depth_kernel(const TriSetup<T>* setups, const uint8_t* valid, int B, int NT, int H, int W,
                             unsigned long long* zbuf) {
    const int64_t bt = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (bt >= (int64_t)B * NT || !valid[bt]) return;
    const int64_t b = bt / NT;
    const uint32_t t = (uint32_t)(bt % NT);
    const TriSetup<T> s = setups[bt];
    for (int iy = s.y0; iy <= s.y1; ++iy) {
        const T py = ndc_y<T>(iy, H);
        for (int ix = s.x0; ix <= s.x1; ++ix) {
            T zw;
            if (!covers(s, ndc_x<T>(ix, W), py, zw)) continue;
            const unsigned long long key = ((unsigned long long)depth_key((float)zw) << 32) | t;
            atomicMin(zbuf + (b * H + iy) * W + ix, key);
        }
    }
}

template <typename T>
__global__ void resolve_kernel(const TriSetup<T>* setups, int B, int NT, int H, int W,
                               const unsigned long long* zbuf, T* rast, T* db) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (int64_t)B * H * W) return;
    const int64_t b = p / ((int64_t)H * W);
    const int iy = (int)((p / W) % H), ix = (int)(p % W);
    const unsigned long long key = zbuf[p];
    T* r = rast + 4 * p;
    T* d = db + 4 * p;
    if (key == kEmpty) {
        for (int c = 0; c < 4; ++c) r[c] = d[c] = T(0);
        return;
    }
    const uint32_t t = (uint32_t)(key & 0xffffffffull);
    pixel_outputs(setups[b * NT + t], ndc_x<T>(ix, W), ndc_y<T>(iy, H), W, H, r, d);
    r[3] = T(t + 1);
}

template <typename T>
__global__ void backward_kernel(const T* pos, int B, int V, const int32_t* tri, int H, int W, const T* rast,
                                const T* grad_rast, const T* grad_db, T* grad_pos) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (int64_t)B * H * W) return;
    const int t = (int)rast[4 * p + 3] - 1;
    if (t < 0) return;
    const T* g = grad_rast + 4 * p;
    const T* gdb = grad_db ? grad_db + 4 * p : nullptr;
    if (zero_gradient(g, gdb)) return;
    const int64_t b = p / ((int64_t)H * W);
    const int iy = (int)((p / W) % H), ix = (int)(p % W);
    const T* base = pos + b * V * 4;
    const int32_t* idx = tri + 3 * t;
    TriSetup<T> s;
    if (!load_triangle(base, idx, s)) return;
    T gv[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    pixel_outputs_backward(s, ndc_x<T>(ix, W), ndc_y<T>(iy, H), W, H, g, gdb, gv);
    for (int i = 0; i < 3; ++i)
        for (int c = 0; c < 4; ++c) atomicAdd(grad_pos + (b * V + idx[i]) * 4 + c, gv[4 * i + c]);
}

}  // namespace

std::vector<torch::Tensor> rasterize_fwd_cuda(const torch::Tensor& pos, const torch::Tensor& tri,
                                              int64_t height, int64_t width) {
    check_rasterize_inputs(pos, tri, height, width);
    SG_CHECK_CUDA(pos);
    const c10::cuda::CUDAGuard guard(pos.device());
    const int B = (int)pos.size(0), V = (int)pos.size(1), NT = (int)tri.size(0);
    const int H = (int)height, W = (int)width;
    if (NT > 0) {
        TORCH_CHECK(tri.min().item<int>() >= 0 && tri.max().item<int>() < V,
                    "tri holds vertex indices outside [0, ", V, ")");
    }
    auto rast = torch::empty({B, H, W, 4}, pos.options());
    auto db = torch::empty({B, H, W, 4}, pos.options());
    auto zbuf = torch::full({B, H, W}, -1, pos.options().dtype(torch::kLong));  // all bits set = empty
    auto valid = torch::empty({(int64_t)B * NT}, pos.options().dtype(torch::kByte));
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "rasterize_fwd_cuda", [&] {
        auto setups = torch::empty({(int64_t)B * NT * (int64_t)sizeof(TriSetup<scalar_t>)},
                                   pos.options().dtype(torch::kByte));
        auto* sp = reinterpret_cast<TriSetup<scalar_t>*>(setups.data_ptr<uint8_t>());
        auto* zp = reinterpret_cast<unsigned long long*>(zbuf.data_ptr<int64_t>());
        if (NT > 0) {
            setup_kernel<scalar_t><<<blocks((int64_t)B * NT), kThreads, 0, stream>>>(
                pos.data_ptr<scalar_t>(), B, V, tri.data_ptr<int32_t>(), NT, H, W, sp, valid.data_ptr<uint8_t>());
            depth_kernel<scalar_t><<<blocks((int64_t)B * NT), kThreads, 0, stream>>>(
                sp, valid.data_ptr<uint8_t>(), B, NT, H, W, zp);
        }
        resolve_kernel<scalar_t><<<blocks((int64_t)B * H * W), kThreads, 0, stream>>>(
            sp, B, NT, H, W, zp, rast.data_ptr<scalar_t>(), db.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {rast, db};
}

torch::Tensor rasterize_bwd_cuda(const torch::Tensor& pos, const torch::Tensor& tri, const torch::Tensor& rast,
                                 const torch::Tensor& grad_rast, const c10::optional<torch::Tensor>& grad_db) {
    check_rasterize_inputs(pos, tri, rast.size(1), rast.size(2));
    SG_CHECK_CUDA(pos);
    const c10::cuda::CUDAGuard guard(pos.device());
    const int B = (int)pos.size(0), V = (int)pos.size(1);
    const int H = (int)rast.size(1), W = (int)rast.size(2);
    auto r = rast.contiguous();
    auto gr = grad_rast.contiguous();
    torch::Tensor gdb;
    if (grad_db.has_value() && grad_db->defined()) gdb = grad_db->contiguous();
    auto grad_pos = torch::zeros_like(pos);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "rasterize_bwd_cuda", [&] {
        backward_kernel<scalar_t><<<blocks((int64_t)B * H * W), kThreads, 0, stream>>>(
            pos.data_ptr<scalar_t>(), B, V, tri.data_ptr<int32_t>(), H, W, r.data_ptr<scalar_t>(),
            gr.data_ptr<scalar_t>(), gdb.defined() ? gdb.data_ptr<scalar_t>() : nullptr,
            grad_pos.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return grad_pos;
}

}  // namespace mesh
}  // namespace scenegrad
