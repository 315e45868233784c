// CUDA launcher of marching cubes: one thread per grid point counts its crossed edges and one per
// cell its triangles; torch cumsums turn counts into output offsets; a second pass writes vertices
// (per point) and triangles (per cell), a vertex's id being its point's offset plus the crossed
// edges of lower axis at that point. Same output order as the CPU launcher; math in marching_cubes.h.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "iso/marching_cubes.h"
#include "iso/marching_cubes_ops.h"

namespace scenegrad {
namespace iso {
namespace {

template <typename T>
__global__ void count_kernel(const T* v, McGrid g, T level, const int8_t* ntri, int32_t* point_bits,
                             int32_t* point_count, int32_t* cell_count) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= g.X * g.Y * g.Z) return;
    const int64_t k = p % g.Z, j = (p / g.Z) % g.Y, i = p / (g.Y * g.Z);
    const int bits = mc_point_edges(v, g, i, j, k, level);
    point_bits[p] = bits;
    point_count[p] = mc_popcount3(bits);
    cell_count[p] = (i + 1 < g.X && j + 1 < g.Y && k + 1 < g.Z) ? ntri[mc_cell_case(v, g, i, j, k, level)] : 0;
}

__device__ inline int64_t vertex_id(const int32_t* bits, const int64_t* point_end, const int32_t* point_count,
                                    int64_t p, int axis) {
    return point_end[p] - point_count[p] + mc_popcount3(bits[p] & ((1 << axis) - 1));
}

template <typename T>
__global__ void write_kernel(const T* v, McGrid g, T level, const int8_t* table, int M, const int8_t* ntri,
                             const int32_t* bits, const int32_t* point_count, const int64_t* point_end,
                             const int32_t* cell_count, const int64_t* cell_end, int64_t* edges, int32_t* faces) {
    const int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= g.X * g.Y * g.Z) return;
    const int64_t strides[3] = {g.Y * g.Z, g.Z, 1};
    int64_t next = point_end[p] - point_count[p];
    for (int a = 0; a < 3; ++a)
        if (bits[p] >> a & 1) {
            edges[2 * next] = p;
            edges[2 * next + 1] = p + strides[a];
            ++next;
        }
    if (cell_count[p] == 0) return;
    const int64_t k = p % g.Z, j = (p / g.Z) % g.Y, i = p / (g.Y * g.Z);
    const int c = mc_cell_case(v, g, i, j, k, level);
    int64_t out = cell_end[p] - cell_count[p];
    for (int t = 0; t < ntri[c]; ++t, ++out)
        for (int m = 0; m < 3; ++m) {
            const int edge = table[(c * M + t) * 3 + m];
            const int corner = mc_edge_corner(edge);
            const int64_t q = g.index(i + (corner & 1), j + ((corner >> 1) & 1), k + ((corner >> 2) & 1));
            faces[3 * out + m] = (int32_t)vertex_id(bits, point_end, point_count, q, edge / 4);
        }
}

}  // namespace

std::vector<torch::Tensor> marching_cubes_fwd_cuda(const torch::Tensor& values, double level,
                                                   const torch::Tensor& tris, const torch::Tensor& counts) {
    check_marching_cubes_inputs(values, tris, counts);
    SG_CHECK_CUDA(values);
    const c10::cuda::CUDAGuard guard(values.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const McGrid g{values.size(0), values.size(1), values.size(2)};
    const int64_t P = values.numel();
    auto i32 = values.options().dtype(torch::kInt);
    auto i64 = values.options().dtype(torch::kLong);
    const torch::Tensor non_finite = (~torch::isfinite(values)).sum();
    if (P == 0 || non_finite.item<int64_t>() > 0) return {torch::empty({0, 2}, i64), torch::empty({0, 3}, i32), non_finite};
    auto bits = torch::empty({P}, i32), point_count = torch::empty({P}, i32), cell_count = torch::empty({P}, i32);
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "marching_cubes_count_cuda", [&] {
        count_kernel<scalar_t><<<blocks(P), kThreads, 0, stream>>>(
            values.data_ptr<scalar_t>(), g, (scalar_t)level, counts.data_ptr<int8_t>(), bits.data_ptr<int32_t>(),
            point_count.data_ptr<int32_t>(), cell_count.data_ptr<int32_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto point_end = point_count.cumsum(0, torch::kLong);
    auto cell_end = cell_count.cumsum(0, torch::kLong);
    const int64_t V = point_end[P - 1].item<int64_t>(), F = cell_end[P - 1].item<int64_t>();
    TORCH_CHECK(V < (int64_t(1) << 31), "marching_cubes: more than 2^31 vertices");
    auto edges = torch::empty({V, 2}, i64);
    auto faces = torch::empty({F, 3}, i32);
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "marching_cubes_fwd_cuda", [&] {
        write_kernel<scalar_t><<<blocks(P), kThreads, 0, stream>>>(
            values.data_ptr<scalar_t>(), g, (scalar_t)level, tris.data_ptr<int8_t>(), (int)tris.size(1),
            counts.data_ptr<int8_t>(), bits.data_ptr<int32_t>(), point_count.data_ptr<int32_t>(),
            point_end.data_ptr<int64_t>(), cell_count.data_ptr<int32_t>(), cell_end.data_ptr<int64_t>(),
            edges.data_ptr<int64_t>(), faces.data_ptr<int32_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {edges, faces, non_finite};
}

}  // namespace iso
}  // namespace scenegrad
