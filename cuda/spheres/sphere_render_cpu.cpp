// CPU launcher of Pulsar-style sphere rendering (see render/spheres/render.py; the math is in
// spheres.h). Binning: each (camera, sphere) gets the tiles of its projected screen box (in
// parallel), then per-tile counts, a prefix sum and a fill in sphere-index order (serial, O(N + M)).
// One parallel region over tiles (OpenMP, dynamic schedule): a sort of the tile's list by
// (Z - r, index), tile-local copies of its spheres (from per-(camera, sphere) records), and per
// pixel the online blend of its hits until the early stop. The backward recomputes each pixel's
// hits up to where the forward stopped, keeps the tile's gradients locally and scatters them once
// per (tile, sphere) through ScatterAdd.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/checks.h"
#include "common/scatter_cpu.h"
#include "common/tiles.h"
#include "spheres/sphere_ops.h"
#include "spheres/spheres.h"

namespace scenegrad {
namespace spheres {
namespace {

constexpr int kChunk = 16;  // spheres whose h is evaluated together (vectorised) per pixel

// Tile-local copies of a tile's spheres: as structs (for the scalar steps), the fields the hit test
// reads as arrays (for the vectorised h), and a dense feature block.
template <typename T>
struct TileSpheres {
    std::vector<Sphere<T>> s;
    std::vector<T> X, Y, Z, inv_r2;
    std::vector<T> f;  // [n, D]

    // The spheres ids[0 .. n) of one camera, from its precomputed records cam_spheres [N].
    void load(const Sphere<T>* cam_spheres, const T* features, const int32_t* ids, int64_t n, int D) {
        s.resize(n);
        for (auto* v : {&X, &Y, &Z, &inv_r2}) v->resize(n);
        f.resize(n * D);
        for (int64_t j = 0; j < n; ++j) {
            const Sphere<T>& sj = cam_spheres[ids[j]];
            s[j] = sj;
            X[j] = sj.X;
            Y[j] = sj.Y;
            Z[j] = sj.Z;
            inv_r2[j] = sj.inv_r2;
            const T* src = features + (int64_t)ids[j] * D;
            for (int k = 0; k < D; ++k) f[j * D + k] = src[k];
        }
    }

    // h[q], k[q] of spheres j0 + q, q < m, for one ray (sphere_h of spheres.h in one vectorisable loop);
    // returns the mask of those with h > 0 (bit q), so that callers visit only them (no branch per sphere).
    unsigned chunk_h(int64_t j0, int m, const Ray<T>& ray, T* h, T* k) const {
        const T *x = X.data() + j0, *y = Y.data() + j0, *z = Z.data() + j0, *ir = inv_r2.data() + j0;
        const T a = ray.a, b = ray.b, inv_dd = ray.inv_dd;
        SG_OMP(simd)
        for (int q = 0; q < m; ++q) h[q] = sphere_h(x[q], y[q], z[q], ir[q], a, b, inv_dd, k[q]);
        unsigned mask = 0;
        for (int q = 0; q < m; ++q) mask |= unsigned(h[q] > T(0)) << q;
        return mask;
    }
};

template <typename T>
struct Common {
    SphereDims d;
    Blend<T> p;
    const int64_t* offsets;
    const Sphere<T>* spheres;  // [B * N] every sphere as each camera sees it (load_sphere)
    const T *features, *intrinsics, *background;
};

// Every (camera, sphere)'s record, computed once per pass (sequential reads; tiles then gather one
// record per entry instead of reading centers, radii and opacities separately).
template <typename T>
std::vector<Sphere<T>> load_spheres(const SphereDims& d, const T* centers, const T* radii, const T* opacities,
                                    const Blend<T>& p) {
    const int64_t BN = (int64_t)d.B * d.N;
    std::vector<Sphere<T>> out(BN);
    SG_OMP(parallel for schedule(static) if(BN > 4096))
    for (int64_t cs = 0; cs < BN; ++cs)
        out[cs] = load_sphere(centers, radii, opacities, (cs / d.N) * d.N, (int)(cs % d.N), p);
    return out;
}

// A tile list entry while sorting: its key Z - r and sphere index (ties keep the index order).
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

// Fixed feature counts: FD > 0 compiles the per-feature loops for that D (unrolled); 0 reads d.D.
template <typename T, int FD>
void forward_tile(const Common<T>& g, int64_t t, int32_t* ids, const T* keys, T* out_f, T* out_a, T* out_z,
                  int32_t* out_ids, T* out_w, T* state, int32_t* last, TileScratch<T>& scratch) {
    const SphereDims& d = g.d;
    const int D = FD > 0 ? FD : d.D, K = d.K;
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
    local.load(g.spheres + cam_base, g.features, ids + start, n, D);
    const T* in = g.intrinsics + 4 * tc.cam;
    const T* bg = g.background;
    T acc[kMaxFeatures], hs[kChunk], ks[kChunk];
    PixelBlend<T> pb;
    for (int y = tc.y0; y < tc.y1; ++y) {
        for (int x = tc.x0; x < tc.x1; ++x) {
            const int64_t pix = ((int64_t)tc.cam * d.H + y) * d.W + x;
            const Ray<T> ray = pixel_ray<T>(x, y, in[0], in[1], in[2], in[3]);
            pb.init(g.p);
            for (int k = 0; k < D; ++k) acc[k] = T(0);
            // j: the first list entry not examined. The stop is tested at chunk starts and at hits: with
            // bounds sorted, stopping at the next hit instead of at the first sphere past the bound blends
            // the same hits.
            int64_t j = 0;
            bool stopped = false;
            for (int64_t j0 = 0; j0 < n && !stopped; j0 += kChunk) {
                const int m = (int)std::min<int64_t>(kChunk, n - j0);
                if (local.s[j0].bound < pb.stop) break;
                j = j0 + m;
                for (unsigned mask = local.chunk_h(j0, m, ray, hs, ks); mask; mask &= mask - 1) {
                    const int q = __builtin_ctz(mask);
                    const int64_t i = j0 + q;
                    const Sphere<T>& s = local.s[i];
                    if (s.bound < pb.stop) {
                        stopped = true;
                        j = i;
                        break;
                    }
                    T z, e;
                    if (!sphere_depth(s.r2, hs[q], ks[q], ray.inv_dd, g.p, z, e)) continue;
                    pb.add(e, s.opacity * hs[q], z, local.f.data() + i * D, acc, D, K, ids[start + i], g.p);
                }
            }
            write_pixel(pb, acc, bg, D, K, pix, out_f, out_a, out_z, out_ids, out_w, state);
            last[pix] = (int32_t)j;
        }
    }
}

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

template <typename T, int FD>
void backward_tile(const Common<T>& g, const BwdArgs<T>& b, int64_t t, TileScratch<T>& scratch) {
    const SphereDims& d = g.d;
    const int D = FD > 0 ? FD : d.D;
    const int64_t start = g.offsets[t], n = g.offsets[t + 1] - start;
    if (n == 0) return;
    const TileCoords tc = tile_coords(d, t);
    const int64_t cam_base = (int64_t)tc.cam * d.N;
    TileSpheres<T>& local = scratch.local;
    local.load(g.spheres + cam_base, g.features, b.ids + start, n, D);
    std::vector<T>& grads = scratch.grads;
    grads.assign(n * b.row, T(0));
    const T* in = g.intrinsics + 4 * tc.cam;
    const T fx = in[0], fy = in[1];
    T g_fx = 0, g_fy = 0, g_cx = 0, g_cy = 0;
    T hs[kChunk], ks[kChunk];
    for (int y = tc.y0; y < tc.y1; ++y) {
        for (int x = tc.x0; x < tc.x1; ++x) {
            const int64_t pix = ((int64_t)tc.cam * d.H + y) * d.W + x;
            const int64_t stop = b.last[pix];
            if (stop <= 0) continue;
            const Ray<T> ray = pixel_ray<T>(x, y, in[0], in[1], in[2], in[3]);
            const PixelGrad<T> pg(pix, D, b.out_f, b.out_a, b.out_z, b.state, b.v_f, b.v_a, b.v_z, g.p);
            T ga = 0, gb = 0;
            for (int64_t j0 = 0; j0 < stop; j0 += kChunk) {
                const int m = (int)std::min<int64_t>(kChunk, stop - j0);
                for (unsigned mask = local.chunk_h(j0, m, ray, hs, ks); mask; mask &= mask - 1) {
                    const int q = __builtin_ctz(mask);
                    const int64_t j = j0 + q;
                    const Sphere<T>& s = local.s[j];
                    T z, e;
                    if (!sphere_depth(s.r2, hs[q], ks[q], ray.inv_dd, g.p, z, e)) continue;
                    T* r = grads.data() + j * b.row;
                    const HitGrad<T> hg = pg.hit(s, ray, hs[q], ks[q], z, e, local.f.data() + j * D,
                                                 [r](int i, T v) { r[i] += v; });
                    ga += hg.a;
                    gb += hg.b;
                }
            }
            // a = (u - cx) / fx, b = (v - cy) / fy
            g_cx -= ga / fx;
            g_fx -= ga * ray.a / fx;
            g_cy -= gb / fy;
            g_fy -= gb * ray.b / fy;
        }
    }
    const auto adder = b.scatter->local();
    T* target = adder.data();
    for (int64_t j = 0; j < n; ++j) {
        T* dst = target + (cam_base + b.ids[start + j]) * b.row;
        const T* src = grads.data() + j * b.row;
        for (int k = 0; k < b.row; ++k) adder.add(dst + k, src[k]);
    }
    T* vi = b.v_intrinsics + 4 * tc.cam;
    const T gi[4] = {g_fx, g_fy, g_cx, g_cy};
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
    auto out_f = torch::empty({d.B, d.H, d.W, d.D}, opts);
    auto out_a = torch::empty({d.B, d.H, d.W}, opts);
    auto out_z = torch::empty({d.B, d.H, d.W}, opts);
    auto out_ids = torch::empty({d.B, d.H, d.W, d.K}, opts.dtype(torch::kInt));
    auto out_w = torch::empty({d.B, d.H, d.W, d.K}, opts);
    auto state = torch::empty({d.B, d.H, d.W, 2}, opts);
    auto last = torch::empty({d.B, d.H, d.W}, opts.dtype(torch::kInt));
    auto tile_offsets = torch::zeros({n_tiles + 1}, opts.dtype(torch::kLong));
    torch::Tensor flatten_ids;
    AT_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "sphere_render_fwd_cpu", [&] {
        using T = scalar_t;
        const Blend<T> p = make_blend<T>(near, far, gamma, bg_eps, cut);
        const T* cp = centers.data_ptr<T>();
        const T* rp = radii.data_ptr<T>();
        const T* ip = intrinsics.data_ptr<T>();
        // 1. Screen boxes -> tile rectangles, and the sort keys Z - r.
        std::vector<int32_t> rects(4 * BN);
        std::vector<T> keys(BN);
        SG_OMP(parallel for schedule(static) if(BN > 4096))
        for (int64_t cs = 0; cs < BN; ++cs) {
            const T* c = cp + 3 * cs;
            const T r = rp[cs % d.N];
            const T* in = ip + 4 * (cs / d.N);
            int32_t* rect = rects.data() + 4 * cs;
            keys[cs] = c[2] - r;
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
        flatten_ids = torch::empty({M}, opts.dtype(torch::kInt));
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
        // 3. Per tile: sort by Z - r, blend every pixel.
        const std::vector<Sphere<T>> spheres = load_spheres(d, cp, rp, opacities.data_ptr<T>(), p);
        const Common<T> g{d, p, offsets, spheres.data(), features.data_ptr<T>(), ip,
                          background.defined() ? background.data_ptr<T>() : nullptr};
        T *fp = out_f.data_ptr<T>(), *ap = out_a.data_ptr<T>(), *zp = out_z.data_ptr<T>();
        T *wp = out_w.data_ptr<T>(), *sp = state.data_ptr<T>();
        int32_t *idp = out_ids.data_ptr<int32_t>(), *lp = last.data_ptr<int32_t>();
        const T* kp = keys.data();
        const bool parallel = worth_parallel(M + d.B, d, n_tiles);
        SG_OMP(parallel if(parallel))
        {
            TileScratch<T> scratch;
            SG_OMP(for schedule(dynamic, 1))
            for (int64_t t = 0; t < n_tiles; ++t) {
                if (d.D == 3)
                    forward_tile<T, 3>(g, t, ids, kp, fp, ap, zp, idp, wp, sp, lp, scratch);
                else
                    forward_tile<T, 0>(g, t, ids, kp, fp, ap, zp, idp, wp, sp, lp, scratch);
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
    auto grads_all = torch::zeros({d.B, d.N, row}, centers.options());
    auto v_intrinsics = torch::zeros({d.B, 4}, centers.options());
    AT_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "sphere_render_bwd_cpu", [&] {
        using T = scalar_t;
        const Blend<T> p = make_blend<T>(near, far, gamma, bg_eps, 0.0);
        const std::vector<Sphere<T>> spheres =
            load_spheres(d, centers.data_ptr<T>(), radii.data_ptr<T>(), opacities.data_ptr<T>(), p);
        const Common<T> g{d, p, tile_offsets.data_ptr<int64_t>(), spheres.data(), features.data_ptr<T>(),
                          intrinsics.data_ptr<T>(), nullptr};
        ScatterAdd<T> scatter(grads_all.data_ptr<T>(), grads_all.numel());
        const BwdArgs<T> b{flatten_ids.data_ptr<int32_t>(), out_features.data_ptr<T>(), out_alpha.data_ptr<T>(),
                           out_depth.data_ptr<T>(), pix_state.data_ptr<T>(), last.data_ptr<int32_t>(),
                           v_features.data_ptr<T>(), v_alpha.data_ptr<T>(), v_depth.data_ptr<T>(), &scatter,
                           v_intrinsics.data_ptr<T>(), row};
        const bool parallel = worth_parallel(flatten_ids.numel(), d, n_tiles);
        SG_OMP(parallel if(parallel))
        {
            TileScratch<T> scratch;
            SG_OMP(for schedule(dynamic, 1))
            for (int64_t t = 0; t < n_tiles; ++t) {
                if (d.D == 3)
                    backward_tile<T, 3>(g, b, t, scratch);
                else
                    backward_tile<T, 0>(g, b, t, scratch);
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
