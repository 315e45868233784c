// CPU launcher of Pulsar-style sphere rendering (see render/spheres/render.py; the math is in
// spheres.h). Binning: each (camera, sphere) gets the tiles of its projected screen box (in
// parallel), then per-tile counts, a prefix sum and a fill in sphere-index order (serial, O(N + M)).
// One parallel region over tiles (OpenMP, dynamic schedule): a sort of the tile's list by
// (sort key, index), tile-local copies of its spheres (from per-(camera, sphere) records), then row
// segments of kFwdLanes pixels: each visits the tile's spheres in order (skipping those whose pixel
// box misses the segment) and blends them into all its pixels at once, in SIMD loops
// (sphere_lanes_cpu.h), until every pixel's early stop. The backward replays each pixel's blended
// hits the same way (kBwdLanes pixels), keeps the tile's gradients locally and scatters them once per
// (tile, sphere) through ScatterAdd. Large outputs come from common/outputs_cpu.h's cache.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "common/checks.h"
#include "common/lanes_cpu.h"
#include "common/outputs_cpu.h"
#include "common/scatter_cpu.h"
#include "common/tiles.h"
#include "spheres/sphere_ops.h"
#include "spheres/spheres.h"

namespace scenegrad {
namespace spheres {
namespace {

// Pixels of one image row processed together (SIMD lanes): the forward's per-sphere steps are cheap
// next to its per-sphere overhead, the backward's are not (measured: 16 and 8 are the fastest).
constexpr int kFwdLanes = 16;
constexpr int kBwdLanes = 8;

// Where a sphere may be hit: the pixels whose centres lie within a pixel of its screen box (the
// binning's margin), inclusive; empty (x0 > x1) when it cannot be hit. One int4 per (camera, sphere).
template <typename T>
void pixel_box(const T* c, T r, const T* in, const Blend<T>& p, const SphereDims& d, int32_t* box) {
    T u0, u1, v0, v1;
    box[0] = box[2] = 0;
    box[1] = box[3] = -1;
    if (!sphere_screen_box(c[0], c[1], c[2], r, in[0], in[1], in[2], in[3], p, d.W, d.H, u0, u1, v0, v1)) return;
    box[0] = sg_max(sg_ifloor(u0) - 2, 0);
    box[1] = sg_min(sg_ifloor(u1) + 2, d.W - 1);
    box[2] = sg_max(sg_ifloor(v0) - 2, 0);
    box[3] = sg_min(sg_ifloor(v1) + 2, d.H - 1);
}

// Tile-local copies of a tile's spheres (in the tile's order): the records, the fields the lane
// loops read as arrays, the pixel boxes and a dense feature block.
template <typename T>
struct TileSpheres {
    std::vector<Sphere<T>> s;
    std::vector<T> bound;
    std::vector<int32_t> box;  // [n, 4]
    std::vector<T> f;          // [n, D]

    // The spheres ids[0 .. n) of one camera, from its precomputed records and boxes [N].
    void load(const Sphere<T>* cam_spheres, const int32_t* cam_boxes, const T* features, const int32_t* ids,
              int64_t n, int D) {
        s.resize(n);
        bound.resize(n);
        box.resize(4 * n);
        f.resize(n * D);
        for (int64_t j = 0; j < n; ++j) {
            const int64_t i = ids[j];
            s[j] = cam_spheres[i];
            bound[j] = s[j].bound;
            for (int k = 0; k < 4; ++k) box[4 * j + k] = cam_boxes[4 * i + k];
            const T* src = features + i * D;
            for (int k = 0; k < D; ++k) f[j * D + k] = src[k];
        }
    }

    // Whether sphere j's box misses the pixels [x0, x1] of row y.
    bool misses(int64_t j, int y, int x0, int x1) const {
        const int32_t* b = box.data() + 4 * j;
        return y < b[2] || y > b[3] || b[1] < x0 || b[0] > x1;
    }
};

template <typename T>
struct Common {
    SphereDims d;
    Blend<T> p;
    const int64_t* offsets;
    const Sphere<T>* spheres;  // [B * N] every sphere as each camera sees it (load_sphere)
    const int32_t* boxes;      // [B * N, 4] their pixel boxes (pixel_box)
    const T *features, *intrinsics, *background;
};

// Every (camera, sphere)'s record and pixel box, computed once per pass (sequential reads; tiles then
// gather one record per entry instead of reading centers, radii and opacities separately).
template <typename T>
std::vector<Sphere<T>> load_spheres(const SphereDims& d, const T* centers, const T* radii, const T* opacities,
                                    const T* intrinsics, const Blend<T>& p, std::vector<int32_t>& boxes) {
    const int64_t BN = (int64_t)d.B * d.N;
    std::vector<Sphere<T>> out(BN);
    boxes.resize(4 * BN);
    SG_OMP(parallel for schedule(static) if(BN > 4096))
    for (int64_t cs = 0; cs < BN; ++cs) {
        const int64_t cam = cs / d.N;
        out[cs] = load_sphere(centers, radii, opacities, cam * d.N, (int)(cs % d.N), p);
        pixel_box(centers + 3 * cs, radii[cs % d.N], intrinsics + 4 * cam, p, d, boxes.data() + 4 * cs);
    }
    return out;
}

// A tile list entry while sorting: its key (sphere_sort_key) and sphere index (ties keep the index order).
template <typename T>
struct KeyId {
    T key;
    int32_t id;
    bool operator<(const KeyId& o) const { return key < o.key || (key == o.key && id < o.id); }
};

// Per-thread buffers reused from tile to tile.
template <typename T>
struct TileScratch {
    TileSpheres<T> local;
    std::vector<KeyId<T>> order;
    std::vector<T> grads;
};

template <typename T>
struct FwdOut {
    T *f, *a, *z, *w, *state;
    int32_t *ids, *last;
};

template <typename T>
struct BwdArgs {
    const int32_t* ids;
    const T *out_f, *out_a, *out_z, *state;
    const int32_t* last;
    const T *v_f, *v_a, *v_z;
    ScatterAdd<T>* scatter;
    T* v_intrinsics;
    int row;  // gradient row per (camera, sphere): X, Y, Z, r, opacity, features[D]
};

// The lane loops: portable, and (x86-64) with AVX2 and FMA, picked per pass by lanes_avx2().
#define SG_LANES_TARGET
namespace portable {
#include "spheres/sphere_lanes_cpu.h"
}  // namespace portable
#undef SG_LANES_TARGET
#if defined(__x86_64__) && defined(__GNUC__)
#define SG_LANES_TARGET __attribute__((target("avx2,fma")))
namespace avx2 {
#include "spheres/sphere_lanes_cpu.h"
}  // namespace avx2
#undef SG_LANES_TARGET
inline bool cpu_has_avx2() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
#else
namespace avx2 = portable;
inline bool cpu_has_avx2() { return false; }
#endif

// Whether this call runs the AVX2 loops; SCENEGRAD_CPU_LANES=portable picks the portable ones on any
// CPU (the tests run both).
inline bool lanes_avx2() {
    const char* env = std::getenv("SCENEGRAD_CPU_LANES");
    return cpu_has_avx2() && !(env && std::string(env) == "portable");
}

template <typename T, int FD, bool Ortho>
void forward_tile(const Common<T>& g, int64_t t, int32_t* ids, const T* keys, const FwdOut<T>& o,
                  TileScratch<T>& scratch, bool avx) {
    const SphereDims& d = g.d;
    const int D = FD > 0 ? FD : d.D;
    const TileCoords tc = tile_coords(d, t);
    const int64_t start = g.offsets[t], n = g.offsets[t + 1] - start;
    const int64_t cam_base = (int64_t)tc.cam * d.N;
    const T* cam_keys = keys + cam_base;
    auto& order = scratch.order;
    order.resize(n);
    for (int64_t j = 0; j < n; ++j) order[j] = {cam_keys[ids[start + j]], ids[start + j]};
    std::sort(order.begin(), order.end());
    for (int64_t j = 0; j < n; ++j) ids[start + j] = order[j].id;
    TileSpheres<T>& local = scratch.local;
    local.load(g.spheres + cam_base, g.boxes + 4 * cam_base, g.features, ids + start, n, D);
    for (int y = tc.y0; y < tc.y1; ++y)
        for (int x = tc.x0; x < tc.x1; x += kFwdLanes)
            if (avx)
                avx2::forward_lanes<T, FD, Ortho>(g, local, ids + start, n, tc.cam, y, x,
                                                  std::min(kFwdLanes, tc.x1 - x), o);
            else
                portable::forward_lanes<T, FD, Ortho>(g, local, ids + start, n, tc.cam, y, x,
                                                      std::min(kFwdLanes, tc.x1 - x), o);
}


template <typename T, int FD, bool Ortho>
void backward_tile(const Common<T>& g, const BwdArgs<T>& b, int64_t t, TileScratch<T>& scratch, bool avx) {
    const SphereDims& d = g.d;
    const int D = FD > 0 ? FD : d.D;
    const int64_t start = g.offsets[t];
    const TileCoords tc = tile_coords(d, t);
    // Only the list's prefix that some pixel blended from (the early stops end most pixels well
    // before the end of long lists): loading, zeroing and scattering the rest would only move zeros.
    int64_t n = 0;
    for (int y = tc.y0; y < tc.y1; ++y)
        for (int x = tc.x0; x < tc.x1; ++x) n = std::max<int64_t>(n, b.last[((int64_t)tc.cam * d.H + y) * d.W + x]);
    if (n == 0) return;
    const int64_t cam_base = (int64_t)tc.cam * d.N;
    TileSpheres<T>& local = scratch.local;
    local.load(g.spheres + cam_base, g.boxes + 4 * cam_base, g.features, b.ids + start, n, D);
    std::vector<T>& grads = scratch.grads;
    grads.assign(n * b.row, T(0));
    T gi[4] = {0, 0, 0, 0};  // fx, fy, cx, cy
    for (int y = tc.y0; y < tc.y1; ++y)
        for (int x = tc.x0; x < tc.x1; x += kBwdLanes)
            if (avx)
                avx2::backward_lanes<T, FD, Ortho>(g, b, local, n, tc.cam, y, x, std::min(kBwdLanes, tc.x1 - x),
                                                   grads.data(), gi);
            else
                portable::backward_lanes<T, FD, Ortho>(g, b, local, n, tc.cam, y, x,
                                                       std::min(kBwdLanes, tc.x1 - x), grads.data(), gi);
    const auto adder = b.scatter->local();
    T* target = adder.data();
    for (int64_t j = 0; j < n; ++j) {
        const T* src = grads.data() + j * b.row;
        bool hit = false;  // a sphere no blended pixel hit: nothing to add (and a random access saved)
        for (int k = 0; k < b.row; ++k) hit |= src[k] != T(0);
        if (!hit) continue;
        T* dst = target + (cam_base + b.ids[start + j]) * b.row;
        for (int k = 0; k < b.row; ++k) adder.add(dst + k, src[k]);
    }
    T* vi = b.v_intrinsics + 4 * tc.cam;
    for (int k = 0; k < 4; ++k) {
        SG_OMP(atomic)
        vi[k] += gi[k];
    }
}

// Below about 64k (sphere, pixel) pairs a parallel region costs more than it saves.
inline bool worth_parallel(int64_t M, const SphereDims& d, int64_t n_tiles) {
    return n_tiles > 1 && M * d.tile * d.tile > (int64_t(1) << 16);
}

}  // namespace

std::vector<torch::Tensor> sphere_render_fwd_cpu(SG_SPHERE_FWD_ARGS) {
    const SphereDims d = check_sphere_inputs(centers, radii, features, opacities, intrinsics, width, height, near,
                                             far, gamma, n_ids, tile_size);
    check_sphere_background(d, background, centers);
    SG_CHECK_CPU(centers);
    TORCH_CHECK(d.D <= kMaxFeatures, "sphere_render: at most ", kMaxFeatures, " features per sphere");
    const int64_t per_cam = (int64_t)d.tiles_x * d.tiles_y, n_tiles = d.B * per_cam;
    const int64_t BN = (int64_t)d.B * d.N;
    const auto opts = centers.options();
    auto out_f = pooled_empty({d.B, d.H, d.W, d.D}, opts);
    auto out_a = pooled_empty({d.B, d.H, d.W}, opts);
    auto out_z = pooled_empty({d.B, d.H, d.W}, opts);
    auto out_ids = pooled_empty({d.B, d.H, d.W, d.K}, opts.dtype(torch::kInt));
    auto out_w = pooled_empty({d.B, d.H, d.W, d.K}, opts);
    auto state = pooled_empty({d.B, d.H, d.W, 2}, opts);
    auto last = pooled_empty({d.B, d.H, d.W}, opts.dtype(torch::kInt));
    auto tile_offsets = torch::zeros({n_tiles + 1}, opts.dtype(torch::kLong));
    torch::Tensor flatten_ids;
    AT_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "sphere_render_fwd_cpu", [&] {
        using T = scalar_t;
        const Blend<T> p = make_blend<T>(near, far, gamma, bg_eps, cut, projection);
        const T* cp = centers.data_ptr<T>();
        const T* rp = radii.data_ptr<T>();
        const T* op = opacities.data_ptr<T>();
        const T* ip = intrinsics.data_ptr<T>();
        // 1. Screen boxes -> tile rectangles, and the sort keys (minus the exponents' bounds).
        std::vector<int32_t> rects(4 * BN);
        std::vector<T> keys(BN);
        SG_OMP(parallel for schedule(static) if(BN > 4096))
        for (int64_t cs = 0; cs < BN; ++cs) {
            const T* c = cp + 3 * cs;
            const T r = rp[cs % d.N];
            const T* in = ip + 4 * (cs / d.N);
            int32_t* rect = rects.data() + 4 * cs;
            keys[cs] = sphere_sort_key(c[2], r, op[cs % d.N], p);
            T u0, u1, v0, v1;
            int tx0 = 0, tx1 = 0, ty0 = 0, ty1 = 0;
            if (sphere_screen_box(c[0], c[1], c[2], r, in[0], in[1], in[2], in[3], p, d.W, d.H, u0, u1, v0, v1))
                box_tiles(u0, u1, v0, v1, d, tx0, tx1, ty0, ty1);
            rect[0] = tx0;
            rect[1] = tx1;
            rect[2] = ty0;
            rect[3] = ty1;
        }
        // 2. Counts, prefix sum, fill in sphere-index order.
        int64_t* offsets = tile_offsets.data_ptr<int64_t>();
        for (int64_t cs = 0; cs < BN; ++cs) {
            const int32_t* r = rects.data() + 4 * cs;
            const int64_t base = (cs / d.N) * per_cam;
            for (int ty = r[2]; ty < r[3]; ++ty)
                for (int tx = r[0]; tx < r[1]; ++tx) ++offsets[base + (int64_t)ty * d.tiles_x + tx + 1];
        }
        for (int64_t t = 0; t < n_tiles; ++t) offsets[t + 1] += offsets[t];
        const int64_t M = offsets[n_tiles];
        flatten_ids = pooled_empty({M}, opts.dtype(torch::kInt));
        int32_t* ids = flatten_ids.data_ptr<int32_t>();
        {
            std::vector<int64_t> cursor(offsets, offsets + n_tiles);
            for (int64_t cs = 0; cs < BN; ++cs) {
                const int32_t* r = rects.data() + 4 * cs;
                const int64_t base = (cs / d.N) * per_cam;
                const int32_t s = (int32_t)(cs % d.N);
                for (int ty = r[2]; ty < r[3]; ++ty)
                    for (int tx = r[0]; tx < r[1]; ++tx) ids[cursor[base + (int64_t)ty * d.tiles_x + tx]++] = s;
            }
        }
        // 3. Per tile: sort by key, blend every pixel.
        std::vector<int32_t> boxes;
        const std::vector<Sphere<T>> spheres = load_spheres(d, cp, rp, opacities.data_ptr<T>(), ip, p, boxes);
        const Common<T> g{d, p, offsets, spheres.data(), boxes.data(), features.data_ptr<T>(), ip,
                          background.defined() ? background.data_ptr<T>() : nullptr};
        const FwdOut<T> o{out_f.data_ptr<T>(), out_a.data_ptr<T>(), out_z.data_ptr<T>(), out_w.data_ptr<T>(),
                          state.data_ptr<T>(), out_ids.data_ptr<int32_t>(), last.data_ptr<int32_t>()};
        const T* kp = keys.data();
        const bool avx = lanes_avx2();
        const bool parallel = worth_parallel(M + d.B, d, n_tiles);
        SG_OMP(parallel if(parallel))
        {
            TileScratch<T> scratch;
            SG_OMP(for schedule(dynamic, 1))
            for (int64_t t = 0; t < n_tiles; ++t) {
                // The lanes are compiled per projection, so that the perspective ones have no ray origins.
                if (g.p.persp == T(0))
                    forward_tile<T, 0, true>(g, t, ids, kp, o, scratch, avx);
                else if (d.D == 3)
                    forward_tile<T, 3, false>(g, t, ids, kp, o, scratch, avx);
                else
                    forward_tile<T, 0, false>(g, t, ids, kp, o, scratch, avx);
            }
        }
    });
    return {out_f, out_a, out_z, out_ids, out_w, tile_offsets, flatten_ids, state, last};
}

std::vector<torch::Tensor> sphere_render_bwd_cpu(SG_SPHERE_BWD_ARGS) {
    const SphereDims d = check_sphere_inputs(centers, radii, features, opacities, intrinsics, width, height, near,
                                             far, gamma, 0, tile_size);
    check_sphere_saved(d, tile_offsets, flatten_ids, out_features, out_alpha, out_depth, pix_state, last, v_features,
                       v_alpha, v_depth, centers);
    SG_CHECK_CPU(centers);
    const int64_t n_tiles = (int64_t)d.B * d.tiles_x * d.tiles_y;
    const int row = 5 + d.D;
    auto grads_all = pooled_empty({d.B, d.N, row}, centers.options()).zero_();
    auto v_intrinsics = torch::zeros({d.B, 4}, centers.options());
    AT_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "sphere_render_bwd_cpu", [&] {
        using T = scalar_t;
        const Blend<T> p = make_blend<T>(near, far, gamma, bg_eps, 0.0, projection);
        std::vector<int32_t> boxes;
        const std::vector<Sphere<T>> spheres = load_spheres(d, centers.data_ptr<T>(), radii.data_ptr<T>(),
                                                            opacities.data_ptr<T>(), intrinsics.data_ptr<T>(), p,
                                                            boxes);
        const Common<T> g{d, p, tile_offsets.data_ptr<int64_t>(), spheres.data(), boxes.data(),
                          features.data_ptr<T>(), intrinsics.data_ptr<T>(), nullptr};
        ScatterAdd<T> scatter(grads_all.data_ptr<T>(), grads_all.numel());
        const BwdArgs<T> b{flatten_ids.data_ptr<int32_t>(), out_features.data_ptr<T>(), out_alpha.data_ptr<T>(),
                           out_depth.data_ptr<T>(), pix_state.data_ptr<T>(), last.data_ptr<int32_t>(),
                           v_features.data_ptr<T>(), v_alpha.data_ptr<T>(), v_depth.data_ptr<T>(), &scatter,
                           v_intrinsics.data_ptr<T>(), row};
        const bool avx = lanes_avx2();
        const bool parallel = worth_parallel(flatten_ids.numel(), d, n_tiles);
        SG_OMP(parallel if(parallel))
        {
            TileScratch<T> scratch;
            SG_OMP(for schedule(dynamic, 1))
            for (int64_t t = 0; t < n_tiles; ++t) {
                if (g.p.persp == T(0))
                    backward_tile<T, 0, true>(g, b, t, scratch, avx);
                else if (d.D == 3)
                    backward_tile<T, 3, false>(g, b, t, scratch, avx);
                else
                    backward_tile<T, 0, false>(g, b, t, scratch, avx);
            }
        }
        if (parallel) scatter.reduce();
    });
    auto v_centers = grads_all.narrow(2, 0, 3).contiguous();
    auto v_radii = grads_all.select(2, 3).sum(0);
    auto v_opacities = grads_all.select(2, 4).sum(0);
    auto v_feats = grads_all.narrow(2, 5, d.D).sum(0);
    return {v_centers, v_radii, v_feats, v_opacities, v_intrinsics};
}

}  // namespace spheres
}  // namespace scenegrad
