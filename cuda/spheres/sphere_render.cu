// CUDA launcher of Pulsar-style sphere rendering (see render/spheres/render.py; the math is in
// spheres.h, shared with the CPU launcher).
//
// Binning: one thread per (camera, sphere) computes its screen box, tiles and sort key (sphere_sort_key); an
// inclusive scan gives each one its slots; a second pass writes (tile, sphere, key) per slot. Two
// stable torch sorts (by key, then by tile) give each tile's list in (key, index) order, as on
// the CPU. Blending: one block per tile, one thread per pixel, the tile's spheres staged through
// shared memory in batches of one per thread; a thread stops at the same early-stop point as the
// CPU and records how many entries it examined. Backward: the same blocks replay each pixel's
// entries and add gradients to global memory with atomicAdd.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/launch_cuda.h"
#include "spheres/sphere_ops.h"
#include "spheres/spheres.h"

namespace scenegrad {
namespace spheres {
namespace {

template <typename T>
__device__ void sphere_tiles(const T* centers, const T* radii, const T* intrinsics, const SphereDims& d,
                             const Blend<T>& p, int64_t cs, int& tx0, int& tx1, int& ty0, int& ty1) {
    const T* c = centers + 3 * cs;
    const T r = radii[cs % d.N];
    const T* in = intrinsics + 4 * (cs / d.N);
    T u0, u1, v0, v1;
    tx0 = tx1 = ty0 = ty1 = 0;
    if (sphere_screen_box(c[0], c[1], c[2], r, in[0], in[1], in[2], in[3], p, d.W, d.H, u0, u1, v0, v1))
        box_tiles(u0, u1, v0, v1, d, tx0, tx1, ty0, ty1);
}

template <typename T>
__global__ void count_tiles_kernel(const T* centers, const T* radii, const T* intrinsics, SphereDims d, Blend<T> p,
                                   int64_t BN, int64_t* counts) {
    const int64_t cs = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (cs >= BN) return;
    int x0, x1, y0, y1;
    sphere_tiles(centers, radii, intrinsics, d, p, cs, x0, x1, y0, y1);
    counts[cs] = (int64_t)(x1 - x0) * (y1 - y0);
}

template <typename T>
__global__ void fill_tiles_kernel(const T* centers, const T* radii, const T* opacities, const T* intrinsics,
                                  SphereDims d, Blend<T> p, int64_t BN, const int64_t* ends, int64_t* tile_keys,
                                  int32_t* sids, T* depth_keys) {
    const int64_t cs = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (cs >= BN) return;
    int x0, x1, y0, y1;
    sphere_tiles(centers, radii, intrinsics, d, p, cs, x0, x1, y0, y1);
    int64_t slot = ends[cs] - (int64_t)(x1 - x0) * (y1 - y0);
    const int64_t base = (cs / d.N) * (int64_t)d.tiles_x * d.tiles_y;
    const int32_t s = (int32_t)(cs % d.N);
    const T key = sphere_sort_key(centers[3 * cs + 2], radii[s], opacities[s], p);
    for (int ty = y0; ty < y1; ++ty)
        for (int tx = x0; tx < x1; ++tx, ++slot) {
            tile_keys[slot] = base + (int64_t)ty * d.tiles_x + tx;
            sids[slot] = s;
            depth_keys[slot] = key;
        }
}

// Shared-memory staging of one batch: spheres then their indices.
template <typename T>
struct Staging {
    Sphere<T>* spheres;
    int32_t* ids;
    __device__ Staging(unsigned char* smem, int block_size) {
        spheres = reinterpret_cast<Sphere<T>*>(smem);
        ids = reinterpret_cast<int32_t*>(smem + sizeof(Sphere<T>) * block_size);
    }
};

// This thread's camera, tile, pixel and rank in the tile; pix is 0 past the image border.
struct TileThread {
    int block_size, cam, rank, x, y;
    int64_t tile, pix;
    bool inside;
    __device__ explicit TileThread(const SphereDims& d) {
        block_size = d.tile * d.tile;
        cam = blockIdx.z;
        tile = ((int64_t)cam * d.tiles_y + blockIdx.y) * d.tiles_x + blockIdx.x;
        x = blockIdx.x * d.tile + threadIdx.x;
        y = blockIdx.y * d.tile + threadIdx.y;
        rank = threadIdx.y * d.tile + threadIdx.x;
        inside = x < d.W && y < d.H;
        pix = inside ? ((int64_t)cam * d.H + y) * d.W + x : 0;
    }
};

template <typename T>
__device__ void stage_batch(Staging<T>& stage, const T* centers, const T* radii, const T* opacities,
                            const int32_t* flatten_ids, int64_t idx, int64_t end, int rank, int64_t cam_base,
                            const Blend<T>& p) {
    if (idx < end) {
        const int32_t s = flatten_ids[idx];
        stage.ids[rank] = s;
        stage.spheres[rank] = load_sphere(centers, radii, opacities, cam_base, s, p);
    }
}

template <typename T>
__global__ void render_kernel(const T* centers, const T* radii, const T* features, const T* opacities,
                              const T* intrinsics, const T* background, SphereDims d, Blend<T> p,
                              const int64_t* offsets, const int32_t* flatten_ids, T* out_f, T* out_a, T* out_z,
                              int32_t* out_ids, T* out_w, T* state, int32_t* last) {
    extern __shared__ __align__(16) unsigned char smem[];
    const TileThread th(d);
    Staging<T> stage(smem, th.block_size);
    const int64_t start = offsets[th.tile], end = offsets[th.tile + 1];
    const int64_t cam_base = (int64_t)th.cam * d.N;
    const int D = d.D, K = d.K;
    const T* in = intrinsics + 4 * th.cam;
    const Ray<T> ray = pixel_ray<T>(th.x, th.y, in[0], in[1], in[2], in[3], p.persp);
    T acc[kMaxFeatures];
    for (int k = 0; k < D; ++k) acc[k] = T(0);
    PixelBlend<T> pb;
    pb.init(p);
    int64_t examined = 0;
    bool done = !th.inside;
    for (int64_t batch = start; batch < end; batch += th.block_size) {
        if (__syncthreads_count(done) == th.block_size) break;
        stage_batch(stage, centers, radii, opacities, flatten_ids, batch + th.rank, end, th.rank, cam_base, p);
        __syncthreads();
        const int n = (int)(end - batch < th.block_size ? end - batch : th.block_size);
        for (int j = 0; j < n && !done; ++j) {
            const Sphere<T>& s = stage.spheres[j];
            if (s.bound < pb.stop) {
                done = true;
                break;
            }
            examined = batch + j + 1 - start;
            T h, k, z, e;
            if (!sphere_hit(s, ray, p, h, k, z, e)) continue;
            pb.add(e, s.opacity * h, z, features + (int64_t)stage.ids[j] * D, acc, D, K, stage.ids[j], p);
        }
        __syncthreads();
    }
    if (!th.inside) return;
    write_pixel(pb, acc, background, D, K, th.pix, out_f, out_a, out_z, out_ids, out_w, state);
    last[th.pix] = (int32_t)examined;
}

template <typename T>
__global__ void render_backward_kernel(const T* centers, const T* radii, const T* features, const T* opacities,
                                       const T* intrinsics, SphereDims d, Blend<T> p, const int64_t* offsets,
                                       const int32_t* flatten_ids, const T* out_f, const T* out_a, const T* out_z,
                                       const T* state, const int32_t* last, const T* v_f, const T* v_a,
                                       const T* v_z, T* grads, T* v_intrinsics) {
    extern __shared__ __align__(16) unsigned char smem[];
    const TileThread th(d);
    Staging<T> stage(smem, th.block_size);
    const int64_t start = offsets[th.tile], end = offsets[th.tile + 1];
    if (start == end) return;  // uniform over the block
    const int64_t cam_base = (int64_t)th.cam * d.N;
    const int D = d.D, row = 5 + D;
    const int64_t pix = th.pix;
    const T* in = intrinsics + 4 * th.cam;
    const Ray<T> ray = pixel_ray<T>(th.x, th.y, in[0], in[1], in[2], in[3], p.persp);
    const int64_t stop = th.inside ? (int64_t)last[pix] : 0;
    const PixelGrad<T> pg(pix, D, out_f, out_a, out_z, state, v_f, v_a, v_z, p);
    T ga = T(0), gb = T(0);
    for (int64_t batch = start; batch < end; batch += th.block_size) {
        if (__syncthreads_count(batch - start < stop) == 0) break;
        stage_batch(stage, centers, radii, opacities, flatten_ids, batch + th.rank, end, th.rank, cam_base, p);
        __syncthreads();
        const int n = (int)(end - batch < th.block_size ? end - batch : th.block_size);
        for (int j = 0; j < n && batch + j - start < stop; ++j) {
            const Sphere<T>& s = stage.spheres[j];
            T h, k, z, e;
            if (!sphere_hit(s, ray, p, h, k, z, e)) continue;
            const int64_t sid = stage.ids[j];
            T* r = grads + (cam_base + sid) * row;
            const HitGrad<T> hg = pg.hit(s, ray, h, k, z, e, features + sid * D,
                                         [r](int i, T v) { atomicAdd(r + i, v); });
            ga += hg.a;
            gb += hg.b;
        }
        __syncthreads();
    }
    if (!th.inside || stop == 0) return;
    const T fx = in[0], fy = in[1];
    T* vi = v_intrinsics + 4 * th.cam;
    atomicAdd(vi, -ga * (ray.a + ray.ox) / fx);  // u = a + ox = (x - cx) / fx
    atomicAdd(vi + 1, -gb * (ray.b + ray.oy) / fy);
    atomicAdd(vi + 2, -ga / fx);
    atomicAdd(vi + 3, -gb / fy);
}

template <typename T>
size_t staging_bytes(const SphereDims& d) {
    const size_t bytes = (sizeof(Sphere<T>) + sizeof(int32_t)) * (size_t)(d.tile * d.tile);
    TORCH_CHECK(bytes <= 48 * 1024, "sphere_render on CUDA: tile_size ", d.tile,
                " needs more than 48 KiB of shared memory for this dtype; use a smaller tile_size");
    return bytes;
}

}  // namespace

std::vector<torch::Tensor> sphere_render_fwd_cuda(SG_SPHERE_FWD_ARGS) {
    const SphereDims d = check_sphere_inputs(centers, radii, features, opacities, intrinsics, width, height, near,
                                             far, gamma, n_ids, tile_size);
    check_sphere_background(d, background, centers);
    SG_CHECK_CUDA(centers);
    TORCH_CHECK(d.D <= kMaxFeatures, "sphere_render: at most ", kMaxFeatures, " features per sphere");
    const c10::cuda::CUDAGuard guard(centers.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int64_t n_tiles = (int64_t)d.B * d.tiles_x * d.tiles_y, BN = (int64_t)d.B * d.N;
    const auto opts = centers.options();
    const auto i64 = opts.dtype(torch::kLong), i32 = opts.dtype(torch::kInt);
    auto out_f = torch::empty({d.B, d.H, d.W, d.D}, opts);
    auto out_a = torch::empty({d.B, d.H, d.W}, opts);
    auto out_z = torch::empty({d.B, d.H, d.W}, opts);
    auto out_ids = torch::empty({d.B, d.H, d.W, d.K}, i32);
    auto out_w = torch::empty({d.B, d.H, d.W, d.K}, opts);
    auto state = torch::empty({d.B, d.H, d.W, 2}, opts);
    auto last = torch::empty({d.B, d.H, d.W}, i32);
    torch::Tensor tile_offsets, flatten_ids;
    AT_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "sphere_render_fwd_cuda", [&] {
        using T = scalar_t;
        const Blend<T> p = make_blend<T>(near, far, gamma, bg_eps, cut, projection);
        const T *cp = centers.data_ptr<T>(), *rp = radii.data_ptr<T>(), *ip = intrinsics.data_ptr<T>();
        auto counts = torch::zeros({BN}, i64);
        if (BN > 0)
            count_tiles_kernel<T><<<blocks(BN), kThreads, 0, stream>>>(cp, rp, ip, d, p, BN,
                                                                      counts.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        auto ends = counts.cumsum(0);
        const int64_t M = BN > 0 ? ends[BN - 1].item<int64_t>() : 0;
        auto tile_keys = torch::empty({M}, i64);
        auto sids = torch::empty({M}, i32);
        auto depth_keys = torch::empty({M}, opts);
        if (M > 0)
            fill_tiles_kernel<T><<<blocks(BN), kThreads, 0, stream>>>(
                cp, rp, opacities.data_ptr<T>(), ip, d, p, BN, ends.data_ptr<int64_t>(),
                tile_keys.data_ptr<int64_t>(), sids.data_ptr<int32_t>(), depth_keys.data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        // Stable sorts: by key (ties keep the sphere-index order of the fill), then by tile.
        auto by_key = std::get<1>(torch::sort(depth_keys, c10::optional<bool>(true), 0, false));
        auto sorted = torch::sort(tile_keys.index_select(0, by_key), c10::optional<bool>(true), 0, false);
        auto order = by_key.index_select(0, std::get<1>(sorted));
        flatten_ids = sids.index_select(0, order).contiguous();
        auto per_tile = torch::bincount(std::get<0>(sorted), {}, n_tiles);
        tile_offsets = torch::cat({torch::zeros({1}, i64), per_tile.cumsum(0)}).contiguous();
        const dim3 grid(d.tiles_x, d.tiles_y, d.B), block(d.tile, d.tile);
        render_kernel<T><<<grid, block, staging_bytes<T>(d), stream>>>(
            cp, rp, features.data_ptr<T>(), opacities.data_ptr<T>(), ip,
            background.defined() ? background.data_ptr<T>() : nullptr, d, p, tile_offsets.data_ptr<int64_t>(),
            flatten_ids.data_ptr<int32_t>(), out_f.data_ptr<T>(), out_a.data_ptr<T>(), out_z.data_ptr<T>(),
            out_ids.data_ptr<int32_t>(), out_w.data_ptr<T>(), state.data_ptr<T>(), last.data_ptr<int32_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {out_f, out_a, out_z, out_ids, out_w, tile_offsets, flatten_ids, state, last};
}

std::vector<torch::Tensor> sphere_render_bwd_cuda(SG_SPHERE_BWD_ARGS) {
    const SphereDims d = check_sphere_inputs(centers, radii, features, opacities, intrinsics, width, height, near,
                                             far, gamma, 0, tile_size);
    check_sphere_saved(d, tile_offsets, flatten_ids, out_features, out_alpha, out_depth, pix_state, last, v_features,
                       v_alpha, v_depth, centers);
    SG_CHECK_CUDA(centers);
    const c10::cuda::CUDAGuard guard(centers.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int row = 5 + d.D;
    auto grads_all = torch::zeros({d.B, d.N, row}, centers.options());
    auto v_intrinsics = torch::zeros({d.B, 4}, centers.options());
    if (flatten_ids.numel() > 0) {
        const dim3 grid(d.tiles_x, d.tiles_y, d.B), block(d.tile, d.tile);
        AT_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "sphere_render_bwd_cuda", [&] {
            using T = scalar_t;
            render_backward_kernel<T><<<grid, block, staging_bytes<T>(d), stream>>>(
                centers.data_ptr<T>(), radii.data_ptr<T>(), features.data_ptr<T>(), opacities.data_ptr<T>(),
                intrinsics.data_ptr<T>(), d, make_blend<T>(near, far, gamma, bg_eps, 0.0, projection),
                tile_offsets.data_ptr<int64_t>(), flatten_ids.data_ptr<int32_t>(), out_features.data_ptr<T>(),
                out_alpha.data_ptr<T>(), out_depth.data_ptr<T>(), pix_state.data_ptr<T>(),
                last.data_ptr<int32_t>(), v_features.data_ptr<T>(), v_alpha.data_ptr<T>(), v_depth.data_ptr<T>(),
                grads_all.data_ptr<T>(), v_intrinsics.data_ptr<T>());
        });
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    auto v_centers = grads_all.narrow(2, 0, 3).contiguous();
    auto v_radii = grads_all.select(2, 3).sum(0);
    auto v_opacities = grads_all.select(2, 4).sum(0);
    auto v_feats = grads_all.narrow(2, 5, d.D).sum(0);
    return {v_centers, v_radii, v_feats, v_opacities, v_intrinsics};
}

}  // namespace spheres
}  // namespace scenegrad
