// CUDA launcher of Gaussian rasterize_to_pixels (named gaussian_rasterize.cu because the extension
// build names objects by file stem, and mesh/rasterize.cu exists).
//
// Binning: one thread per (camera, Gaussian) counts its tiles; an exclusive scan gives each one
// its slots; a second pass writes (tile, Gaussian, depth) per slot, in Gaussian-index order. Two
// stable torch sorts (by depth, then by tile) give each tile's list in (depth, index) order, the
// same order as the CPU launcher. Compositing: one block per tile, one thread per pixel, the
// tile's Gaussians staged through shared memory in batches of one per thread (as in 3DGS).
// Backward: the same blocks walk the batches back to front; gradients go to global memory with
// atomicAdd. The per-pixel math is in rasterize.h, shared with the CPU launcher.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "gaussians/rasterize.h"
#include "gaussians/rasterize_ops.h"

namespace scenegrad {
namespace gaussians {
namespace {

template <typename T>
__global__ void count_tiles_kernel(const T* means2d, const int32_t* radii, RasterDims d, int64_t CN,
                                   int64_t* counts) {
    const int64_t cg = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (cg >= CN) return;
    int x0, x1, y0, y1;
    tile_rect(means2d[2 * cg], means2d[2 * cg + 1], radii[cg], d, x0, x1, y0, y1);
    counts[cg] = (int64_t)(x1 - x0) * (y1 - y0);
}

template <typename T>
__global__ void fill_tiles_kernel(const T* means2d, const int32_t* radii, const T* depths, RasterDims d, int64_t CN,
                                  const int64_t* ends, int64_t* tile_keys, int32_t* gids, T* depth_keys) {
    const int64_t cg = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (cg >= CN) return;
    int x0, x1, y0, y1;
    tile_rect(means2d[2 * cg], means2d[2 * cg + 1], radii[cg], d, x0, x1, y0, y1);
    int64_t slot = ends[cg] - (int64_t)(x1 - x0) * (y1 - y0);
    const int64_t base = (cg / d.N) * (int64_t)d.tiles_x * d.tiles_y;
    const int32_t g = (int32_t)(cg % d.N);
    const T depth = depths[cg];
    for (int ty = y0; ty < y1; ++ty)
        for (int tx = x0; tx < x1; ++tx, ++slot) {
            tile_keys[slot] = base + (int64_t)ty * d.tiles_x + tx;
            gids[slot] = g;
            depth_keys[slot] = depth;
        }
}

// Shared-memory staging of one batch: splats then Gaussian indices.
template <typename T>
struct Staging {
    Splat<T>* splats;
    int32_t* ids;
    __device__ explicit Staging(unsigned char* smem, int block_size) {
        splats = reinterpret_cast<Splat<T>*>(smem);
        ids = reinterpret_cast<int32_t*>(smem + sizeof(Splat<T>) * block_size);
    }
};

// Where this thread works: its camera and tile (the block), its pixel and rank in the tile; pix is
// 0 for threads past the image border (they only help stage Gaussians).
template <typename T>
struct TileThread {
    int block_size, cam, rank;
    int64_t tile, pix;
    bool inside;
    T px, py;
    __device__ explicit TileThread(const RasterDims& d) {
        block_size = d.tile * d.tile;
        cam = blockIdx.z;
        tile = ((int64_t)cam * d.tiles_y + blockIdx.y) * d.tiles_x + blockIdx.x;
        const int x = blockIdx.x * d.tile + threadIdx.x, y = blockIdx.y * d.tile + threadIdx.y;
        rank = threadIdx.y * d.tile + threadIdx.x;
        inside = x < d.W && y < d.H;
        pix = inside ? ((int64_t)cam * d.H + y) * d.W + x : 0;
        px = T(x) + T(0.5);
        py = T(y) + T(0.5);
    }
};

template <typename T>
__global__ void render_kernel(const T* means2d, const T* conics, const T* colors, const T* opacities, const T* bgs,
                              RasterDims d, const int64_t* offsets, const int32_t* flatten_ids, T* out_colors,
                              T* out_alphas, T* final_T, int32_t* last_ids) {
    extern __shared__ __align__(16) unsigned char smem[];
    const TileThread<T> th(d);
    const int block_size = th.block_size, cam = th.cam, rank = th.rank;
    const int64_t tile = th.tile, pix = th.pix;
    const bool inside = th.inside;
    const T px = th.px, py = th.py;
    Staging<T> stage(smem, block_size);
    const int64_t start = offsets[tile], end = offsets[tile + 1];
    const int64_t cam_base = (int64_t)cam * d.N;
    const int D = d.D;
    T* out = out_colors + pix * D;  // zero-initialised; this thread's pixel only
    T Tr = T(1);
    int64_t last = -1;
    bool done = !inside;
    for (int64_t batch = start; batch < end; batch += block_size) {
        if (__syncthreads_count(done) == block_size) break;
        const int64_t idx = batch + rank;
        if (idx < end) {
            const int32_t g = flatten_ids[idx];
            stage.ids[rank] = g;
            stage.splats[rank] = load_splat(means2d, conics, opacities, cam_base + g);
        }
        __syncthreads();
        const int n = (int)(end - batch < block_size ? end - batch : block_size);
        for (int j = 0; j < n && !done; ++j) {
            T dx, dy, vis;
            const T alpha = splat_alpha(stage.splats[j], px, py, dx, dy, vis);
            if (alpha == T(0)) continue;
            const T next_T = Tr * (T(1) - alpha);
            if (next_T < t_min<T>()) {
                done = true;
                break;
            }
            const T w = alpha * Tr;
            const T* c = colors + (cam_base + stage.ids[j]) * D;
            for (int k = 0; k < D; ++k) out[k] += w * c[k];
            Tr = next_T;
            last = batch + j;
        }
        __syncthreads();
    }
    if (!inside) return;
    if (bgs != nullptr)
        for (int k = 0; k < D; ++k) out[k] += Tr * bgs[(int64_t)cam * D + k];
    out_alphas[pix] = T(1) - Tr;
    final_T[pix] = Tr;
    last_ids[pix] = (int32_t)last;
}

template <typename T>
__global__ void render_backward_kernel(const T* means2d, const T* conics, const T* colors, const T* opacities,
                                       const T* bgs, RasterDims d, const int64_t* offsets, const int32_t* flatten_ids,
                                       const T* final_T, const int32_t* last_ids, const T* v_colors,
                                       const T* v_alphas, T* scratch, T* v_means2d, T* v_conics, T* v_cols,
                                       T* v_opacities) {
    extern __shared__ __align__(16) unsigned char smem[];
    const TileThread<T> th(d);
    const int block_size = th.block_size, cam = th.cam, rank = th.rank;
    const int64_t tile = th.tile, pix = th.pix;
    const bool inside = th.inside;
    const T px = th.px, py = th.py;
    Staging<T> stage(smem, block_size);
    const int64_t start = offsets[tile], end = offsets[tile + 1];
    if (start == end) return;  // uniform over the block
    const int64_t cam_base = (int64_t)cam * d.N;
    const int D = d.D;
    const int64_t last = inside ? (int64_t)last_ids[pix] : -1;
    const T* v_c = v_colors + pix * D;
    T* S = scratch + pix * D;  // zero-initialised colour composited behind, per pixel
    const T T_final = inside ? final_T[pix] : T(1);
    T k_final = inside ? -v_alphas[pix] : T(0);
    if (inside && bgs != nullptr)
        for (int k = 0; k < D; ++k) k_final += v_c[k] * bgs[(int64_t)cam * D + k];
    T Tr = T_final;
    const int64_t n_batches = (end - start + block_size - 1) / block_size;
    for (int64_t b = n_batches - 1; b >= 0; --b) {
        const int64_t batch = start + b * block_size;
        __syncthreads();
        const int64_t idx = batch + rank;
        if (idx < end) {
            const int32_t g = flatten_ids[idx];
            stage.ids[rank] = g;
            stage.splats[rank] = load_splat(means2d, conics, opacities, cam_base + g);
        }
        __syncthreads();
        const int n = (int)(end - batch < block_size ? end - batch : block_size);
        for (int j = n - 1; j >= 0; --j) {
            if (batch + j > last) continue;
            const Splat<T>& s = stage.splats[j];
            T dx, dy, vis;
            const T alpha = splat_alpha(s, px, py, dx, dy, vis);
            if (alpha == T(0)) continue;
            const int64_t cg = cam_base + stage.ids[j];
            T* gc = v_cols + cg * D;
            const T v_alpha = composite_backward_step(alpha, colors + cg * D, D, v_c, T_final, k_final, Tr, S,
                                                      [gc](int k, T v) { atomicAdd(gc + k, v); });
            SplatGrad<T> g{T(0), T(0), T(0), T(0), T(0), T(0)};
            splat_alpha_backward(s, dx, dy, vis, v_alpha, g);
            atomicAdd(v_means2d + 2 * cg, g.mx);
            atomicAdd(v_means2d + 2 * cg + 1, g.my);
            atomicAdd(v_conics + 3 * cg, g.a);
            atomicAdd(v_conics + 3 * cg + 1, g.b);
            atomicAdd(v_conics + 3 * cg + 2, g.c);
            atomicAdd(v_opacities + cg, g.opacity);
        }
    }
}

template <typename T>
size_t staging_bytes(const RasterDims& d) {
    const size_t bytes = (sizeof(Splat<T>) + sizeof(int32_t)) * (size_t)(d.tile * d.tile);
    TORCH_CHECK(bytes <= 48 * 1024, "rasterize_to_pixels on CUDA: tile_size ", d.tile,
                " needs more than 48 KiB of shared memory for this dtype; use a smaller tile_size");
    return bytes;
}

}  // namespace

std::vector<torch::Tensor> rasterize_to_pixels_fwd_cuda(const torch::Tensor& means2d, const torch::Tensor& conics,
                                                        const torch::Tensor& colors, const torch::Tensor& opacities,
                                                        const torch::Tensor& depths, const torch::Tensor& radii,
                                                        const torch::Tensor& backgrounds, int64_t width,
                                                        int64_t height, int64_t tile_size) {
    const RasterDims d = check_raster_inputs(means2d, conics, colors, opacities, backgrounds, width, height, tile_size);
    check_raster_sort_inputs(d, depths, radii, means2d);
    SG_CHECK_CUDA(means2d);
    const c10::cuda::CUDAGuard guard(means2d.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int64_t n_tiles = (int64_t)d.C * d.tiles_x * d.tiles_y;
    const int64_t CN = (int64_t)d.C * d.N;
    auto i64 = radii.options().dtype(torch::kLong);
    auto out_colors = torch::zeros({d.C, d.H, d.W, d.D}, colors.options());
    auto out_alphas = torch::empty({d.C, d.H, d.W, 1}, colors.options());
    auto final_T = torch::empty({d.C, d.H, d.W}, colors.options());
    auto last_ids = torch::empty({d.C, d.H, d.W}, radii.options());

    // Binning.
    auto counts = torch::zeros({CN}, i64);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_to_pixels_count_cuda", [&] {
        if (CN > 0)
            count_tiles_kernel<scalar_t><<<blocks(CN), kThreads, 0, stream>>>(
                means2d.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(), d, CN, counts.data_ptr<int64_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto ends = counts.cumsum(0);
    const int64_t M = CN > 0 ? ends[CN - 1].item<int64_t>() : 0;
    auto tile_keys = torch::empty({M}, i64);
    auto gids = torch::empty({M}, radii.options());
    auto depth_keys = torch::empty({M}, depths.options());
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_to_pixels_fill_cuda", [&] {
        if (M > 0)
            fill_tiles_kernel<scalar_t><<<blocks(CN), kThreads, 0, stream>>>(
                means2d.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(), depths.data_ptr<scalar_t>(), d, CN,
                ends.data_ptr<int64_t>(), tile_keys.data_ptr<int64_t>(), gids.data_ptr<int32_t>(),
                depth_keys.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // Stable sorts: by depth (ties keep the Gaussian-index order of the fill), then by tile.
    auto by_depth = std::get<1>(torch::sort(depth_keys, c10::optional<bool>(true), /*dim=*/0, /*descending=*/false));
    auto sorted = torch::sort(tile_keys.index_select(0, by_depth), c10::optional<bool>(true), 0, false);
    auto order = by_depth.index_select(0, std::get<1>(sorted));
    auto flatten_ids = gids.index_select(0, order).contiguous();
    auto per_tile = torch::bincount(std::get<0>(sorted), {}, n_tiles);
    auto tile_offsets = torch::cat({torch::zeros({1}, i64), per_tile.cumsum(0)}).contiguous();

    if (n_tiles > 0) {
        const dim3 grid(d.tiles_x, d.tiles_y, d.C), block(d.tile, d.tile);
        AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_to_pixels_fwd_cuda", [&] {
            render_kernel<scalar_t><<<grid, block, staging_bytes<scalar_t>(d), stream>>>(
                means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(),
                opacities.data_ptr<scalar_t>(), d.has_bg ? backgrounds.data_ptr<scalar_t>() : nullptr, d,
                tile_offsets.data_ptr<int64_t>(), flatten_ids.data_ptr<int32_t>(), out_colors.data_ptr<scalar_t>(),
                out_alphas.data_ptr<scalar_t>(), final_T.data_ptr<scalar_t>(), last_ids.data_ptr<int32_t>());
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return {out_colors, out_alphas, tile_offsets, flatten_ids, final_T, last_ids};
}

std::vector<torch::Tensor> rasterize_to_pixels_bwd_cuda(
    const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
    const torch::Tensor& opacities, const torch::Tensor& backgrounds, int64_t width, int64_t height,
    int64_t tile_size, const torch::Tensor& tile_offsets, const torch::Tensor& flatten_ids,
    const torch::Tensor& final_T, const torch::Tensor& last_ids, const torch::Tensor& v_colors,
    const torch::Tensor& v_alphas) {
    const RasterDims d = check_raster_inputs(means2d, conics, colors, opacities, backgrounds, width, height, tile_size);
    check_raster_saved(d, tile_offsets, flatten_ids, final_T, last_ids, v_colors, v_alphas, means2d);
    SG_CHECK_CUDA(means2d);
    const c10::cuda::CUDAGuard guard(means2d.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    auto v_means2d = torch::zeros_like(means2d);
    auto v_conics = torch::zeros_like(conics);
    auto v_cols = torch::zeros_like(colors);
    auto v_opacities = torch::zeros_like(opacities);
    const int64_t n_tiles = (int64_t)d.C * d.tiles_x * d.tiles_y;
    if (n_tiles == 0 || flatten_ids.numel() == 0) return {v_means2d, v_conics, v_cols, v_opacities};
    auto scratch = torch::zeros({d.C, d.H, d.W, d.D}, colors.options());
    const dim3 grid(d.tiles_x, d.tiles_y, d.C), block(d.tile, d.tile);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_to_pixels_bwd_cuda", [&] {
        render_backward_kernel<scalar_t><<<grid, block, staging_bytes<scalar_t>(d), stream>>>(
            means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(),
            opacities.data_ptr<scalar_t>(), d.has_bg ? backgrounds.data_ptr<scalar_t>() : nullptr, d,
            tile_offsets.data_ptr<int64_t>(), flatten_ids.data_ptr<int32_t>(), final_T.data_ptr<scalar_t>(),
            last_ids.data_ptr<int32_t>(), v_colors.data_ptr<scalar_t>(), v_alphas.data_ptr<scalar_t>(),
            scratch.data_ptr<scalar_t>(), v_means2d.data_ptr<scalar_t>(), v_conics.data_ptr<scalar_t>(),
            v_cols.data_ptr<scalar_t>(), v_opacities.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {v_means2d, v_conics, v_cols, v_opacities};
}

}  // namespace gaussians
}  // namespace scenegrad
