// Per-sphere and per-pixel math of Pulsar-style sphere rendering (render/spheres/render.py), shared
// by the CPU and CUDA launchers. The formulas are stated in render/_reference/spheres.py:
//
// A pixel's ray is o + s (a, b, 1) in the camera frame. With u = (x - cx) / fx, v = (y - cy) / fy at
// the pixel centre (x, y): perspective cameras have o = 0 and (a, b) = (u, v); orthographic ones
// o = (u, v, 0) (fx, fy in pixels per unit length) and (a, b) = 0. For a sphere with camera-frame
// centre c = (X, Y, Z) and radius r, with c' = c - o:
//     dd = a^2 + b^2 + 1,  k = (a X' + b Y' + Z) / dd,  dist2 = |c' - k (a, b, 1)|^2,  h = 1 - dist2 / r^2
//     z  = k - sqrt(r^2 h / dd)                         (front intersection, camera-frame depth)
//     hit: h > 0 and near <= z <= far;  e = opacity (1 - (z - near) / (far - near)) / gamma
//     w  = opacity h exp(e - M)      (M: the pixel's largest exponent, at least bg_eps / gamma)
// and per pixel W = sum w + exp(bg_eps / gamma - M), features = (sum w f + w_bg bg) / W,
// alpha = sum w / W, depth = sum w z / sum w.
//
// Tiles list their spheres by decreasing bound opacity (1 - (max(Z - r, near) - near) / (far - near)) /
// gamma on e (Z - r is the nearest depth any point of the sphere can have); a pixel stops at the
// first sphere whose bound is more
// than `cut` below log of its running total weight (each of the rest would weigh less than
// exp(-cut) = tolerance of the total; render_spheres' `tolerance`).
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {
namespace spheres {

constexpr int kMaxIds = 32;       // most strongest-contributor ids reported per pixel
constexpr int kMaxFeatures = 32;  // most features per sphere

struct SphereDims {
    int B;        // cameras
    int N;        // spheres
    int D;        // features per sphere
    int W, H;     // image size
    int K;        // ids per pixel
    int tile;     // tile side in pixels
    int tiles_x;  // ceil(W / tile)
    int tiles_y;  // ceil(H / tile)
};

enum Projection { kPerspective = 0, kOrthographic = 1 };

template <typename T>
struct Blend {
    T near, far, inv_range, inv_gamma, bg_exp, cut;  // inv_range = 1 / (far - near), bg_exp = bg_eps / gamma
    T persp;  // the camera's projection: 1 perspective, 0 orthographic (a factor of the rays' directions)
};

// cut = -log(tolerance) of the early stop (the backward replays the forward's stops and ignores it).
template <typename T>
Blend<T> make_blend(double near, double far, double gamma, double bg_eps, double cut, int64_t projection) {
    Blend<T> p;
    p.persp = projection == kOrthographic ? T(0) : T(1);
    p.near = T(near);
    p.far = T(far);
    p.inv_range = T(1.0 / (far - near));
    p.inv_gamma = T(1.0 / gamma);
    p.bg_exp = T(bg_eps / gamma);
    p.cut = T(cut);
    return p;
}

// The blending exponent e of a hit at depth z on a sphere of this opacity (the opacity scales it, as in
// Pulsar); branch-free, so that the CPU launcher can evaluate it for many pixels in one vectorised loop.
template <typename T>
SG_HD T depth_exponent(T z, T opacity, const Blend<T>& p) {
    return opacity * ((T(1) - (z - p.near) * p.inv_range) * p.inv_gamma);
}

// e / opacity as a line in z, e / opacity = e_at0 + z de_dz, for the backward's derivatives.
template <typename T>
struct ExponentLine {
    T de_dz, e_at0;
};

template <typename T>
SG_HD ExponentLine<T> exponent_line(const Blend<T>& p) {
    return {-p.inv_range * p.inv_gamma, (T(1) + p.near * p.inv_range) * p.inv_gamma};
}

// A tile list's sort key of a sphere (camera-frame centre depth Z, radius r): minus the largest
// exponent e any of its hits can have, so that the bounds decrease along the sorted list.
template <typename T>
SG_HD T sphere_sort_key(T Z, T r, T opacity, const Blend<T>& p) {
    return -depth_exponent(sg_max(Z - r, p.near), opacity, p);
}

// A sphere as the pixels of one camera see it.
template <typename T>
struct Sphere {
    T X, Y, Z, r, r2, inv_r2, opacity, bound;  // bound: the largest exponent e any of its hits can have
};

template <typename T>
SG_HD Sphere<T> load_sphere(const T* centers, const T* radii, const T* opacities, int64_t cam_base, int i,
                            const Blend<T>& p) {
    Sphere<T> s;
    const T* c = centers + (cam_base + i) * 3;
    s.X = c[0];
    s.Y = c[1];
    s.Z = c[2];
    s.r = radii[i];
    s.r2 = s.r * s.r;
    s.inv_r2 = T(1) / s.r2;
    s.opacity = opacities[i];
    s.bound = -sphere_sort_key(s.Z, s.r, s.opacity, p);
    return s;
}

// The ray of a pixel centre: origin (ox, oy, 0), direction (a, b, 1).
template <typename T>
struct Ray {
    T a, b, inv_dd;  // inv_dd = 1 / (a^2 + b^2 + 1)
    T ox, oy;
    T persp;  // 1 perspective, 0 orthographic
};

// The ray through normalised image coordinates (u, v); persp as Blend's. u = a + ox, v = b + oy.
template <typename T>
SG_HD Ray<T> ray_at(T u, T v, T persp) {
    Ray<T> r;
    r.a = persp * u;
    r.b = persp * v;
    r.ox = u - r.a;  // exactly 0 or u
    r.oy = v - r.b;
    r.inv_dd = T(1) / (r.a * r.a + r.b * r.b + T(1));
    r.persp = persp;
    return r;
}

template <typename T>
SG_HD Ray<T> pixel_ray(int x, int y, T fx, T fy, T cx, T cy, T persp) {
    return ray_at((T(x) + T(0.5) - cx) / fx, (T(y) + T(0.5) - cy) / fy, persp);
}

// h = 1 - dist2 / r^2 and k (the ray's closest point to the centre is k (a, b, 1)); written on
// plain values so that the CPU launcher can evaluate it for many spheres in one vectorised loop.
template <typename T>
SG_HD T sphere_h(T X, T Y, T Z, T inv_r2, T a, T b, T inv_dd, T& k) {
    k = (a * X + b * Y + Z) * inv_dd;
    const T px = X - k * a, py = Y - k * b, pz = Z - k;
    const T dist2 = px * px + py * py + pz * pz;  // |c - k d|^2: no cancellation, unlike |c|^2 - dc^2 / dd
    return T(1) - dist2 * inv_r2;
}

// The front intersection's depth given h > 0 and k (NaN for h < 0); branch-free, so that the CPU
// launcher can evaluate it for many pixels in one vectorised loop.
template <typename T>
SG_HD T sphere_z(T r2, T h, T k, T inv_dd) { return k - sg_sqrt(r2 * h * inv_dd); }

// Whether h and z make a hit: h > 0 and near <= z <= far (false for NaN).
template <typename T>
SG_HD bool is_hit(T h, T z, const Blend<T>& p) { return (h > T(0)) & (z >= p.near) & (z <= p.far); }  // no branch

// The rest of the hit test given h > 0 and k: the depth z and exponent e; false outside [near, far].
template <typename T>
SG_HD bool sphere_depth(T r2, T h, T k, T inv_dd, T opacity, const Blend<T>& p, T& z, T& e) {
    z = sphere_z(r2, h, k, inv_dd);
    if (!is_hit(h, z, p)) return false;
    e = depth_exponent(z, opacity, p);
    return true;
}

// Whether the ray hits the sphere (h > 0, near <= z <= far); then h, k, z and the exponent e.
template <typename T>
SG_HD bool sphere_hit(const Sphere<T>& s, const Ray<T>& ray, const Blend<T>& p, T& h, T& k, T& z, T& e) {
    h = sphere_h(s.X - ray.ox, s.Y - ray.oy, s.Z, s.inv_r2, ray.a, ray.b, ray.inv_dd, k);
    if (!(h > T(0))) return false;
    return sphere_depth(s.r2, h, k, ray.inv_dd, s.opacity, p, z, e);
}

// Gradients of one hit to the sphere (X, Y, Z, r) and to the ray's normalised image coordinates
// (u, v) (a, b here), given dL/dh and dL/dz.
template <typename T>
struct HitGrad {
    T X, Y, Z, r, a, b;
};

// h and k as the forward computed them (sphere_h), so that both passes agree on every hit.
template <typename T>
SG_HD HitGrad<T> sphere_hit_backward(const Sphere<T>& s, const Ray<T>& ray, T h, T k, T gh, T gz) {
    const T a = ray.a, b = ray.b, inv_dd = ray.inv_dd;
    const T X = s.X - ray.ox, Y = s.Y - ray.oy;                // c - o
    const T px = X - k * a, py = Y - k * b, pz = s.Z - k;      // c - o - k d
    const T q = s.r2 * h * inv_dd;                              // (r^2 - dist2) / dd > 0 on a hit
    const T sq = sg_sqrt(q);
    // h so small that q underflows (a measure-zero grazing ray): no gradient. Branch-free (a select at
    // the end), so that the CPU launcher can evaluate it for many pixels in one vectorised loop.
    const bool ok = sq > T(0);
    const T inv_sq = T(1) / (ok ? sq : T(1)), inv_r2 = s.inv_r2;  // one division per hit
    const T inv2sqdd = T(0.5) * inv_sq * inv_dd;  // 1 / (2 sqrt(q) dd)
    // d dist2 / d(X, Y, Z) = 2 (c - k d);  d dist2 / d(a, b) = -2 k (c - k d)_(x, y)
    const T d2X = T(2) * px, d2Y = T(2) * py, d2Z = T(2) * pz;
    const T d2a = -T(2) * k * px, d2b = -T(2) * k * py;
    const T ghr = gh * inv_r2;
    HitGrad<T> g;
    // h = 1 - dist2 / r^2;  z = k - sqrt((r^2 - dist2) / dd) with k = (a X + b Y + Z) / dd
    g.X = -ghr * d2X + gz * (a * inv_dd + d2X * inv2sqdd);
    g.Y = -ghr * d2Y + gz * (b * inv_dd + d2Y * inv2sqdd);
    g.Z = -ghr * d2Z + gz * (inv_dd + d2Z * inv2sqdd);
    g.r = T(2) * ghr * (T(1) - h) * s.r - gz * s.r * inv_sq * inv_dd;
    g.a = -ghr * d2a + gz * ((X - T(2) * a * k) * inv_dd + (d2a + T(2) * a * q) * inv2sqdd);
    g.b = -ghr * d2b + gz * ((Y - T(2) * b * k) * inv_dd + (d2b + T(2) * b * q) * inv2sqdd);
    // (u, v) move the direction (perspective) or the origin (orthographic: d/d(ox, oy) = -d/d(X, Y))
    const bool persp = ray.persp != T(0);
    g.a = persp ? g.a : -g.X;
    g.b = persp ? g.b : -g.Y;
    if (!ok) g = HitGrad<T>{T(0), T(0), T(0), T(0), T(0), T(0)};
    return g;
}

// Online accumulation of one pixel's blend: weights relative to the running max exponent M.
template <typename T>
struct PixelBlend {
    T M, sw, swz, wbg;  // running max exponent, sum of weights, of weights * depth, background weight
    T stop;             // spheres whose bound is below this weigh < exp(-cut) W each: the pixel stops
    int n_top;
    T top_w[kMaxIds];
    int32_t top_id[kMaxIds];

    T relog;            // the total weight at which `stop` is next recomputed (a log per doubling)

    SG_HD void init(const Blend<T>& p) {
        M = p.bg_exp;
        sw = swz = T(0);
        wbg = T(1);
        stop = M - p.cut;
        relog = T(2);
        n_top = 0;
    }

    // Adds a hit with exponent e, weight factor o h, depth z, features f (acc[D] the running sum of w f),
    // keeping the K strongest ids. D and K at run time.
    SG_HD void add(T e, T oh, T z, const T* f, T* acc, int D, int K, int32_t id, const Blend<T>& p) {
        if (e > M) {
            const T scale = sg_exp(M - e);
            sw *= scale;
            swz *= scale;
            wbg *= scale;
            relog *= scale;  // stop = M + log(total) - cut is unchanged by the rescale
            for (int k = 0; k < D; ++k) acc[k] *= scale;
            for (int k = 0; k < n_top; ++k) top_w[k] *= scale;
            M = e;
        }
        const T w = oh * sg_exp(e - M);
        sw += w;
        swz += w * z;
        for (int k = 0; k < D; ++k) acc[k] += w * f[k];
        const T total = sw + wbg;
        if (total >= relog) {  // stop lags by at most log 2: the pixel may examine a few more spheres
            stop = M + sg_log(total) - p.cut;
            relog = T(2) * total;
        }
        if (K > 0 && w > T(0) && (n_top < K || w > top_w[n_top - 1])) {
            int pos = n_top < K ? n_top++ : K - 1;
            while (pos > 0 && top_w[pos - 1] < w) {
                top_w[pos] = top_w[pos - 1];
                top_id[pos] = top_id[pos - 1];
                --pos;
            }
            top_w[pos] = w;
            top_id[pos] = id;
        }
    }
};

// A pixel's totals from its blend sums (PixelBlend's sw, swz, wbg): W = sw + wbg, 1 / W, alpha =
// sw / W and depth = swz / sw (0 where nothing was hit).
template <typename T>
struct PixelTotals {
    T W, inv_W, alpha, depth;
};

template <typename T>
SG_HD PixelTotals<T> pixel_totals(T sw, T swz, T wbg) {
    PixelTotals<T> t;
    t.W = sw + wbg;
    t.inv_W = T(1) / t.W;
    t.alpha = sw * t.inv_W;
    t.depth = sw > T(0) ? swz / sw : T(0);
    return t;
}

// Writes pixel pix's outputs from its blend pb and the running feature sum acc [D]: features, alpha,
// depth, the K strongest ids and their weights, and the state (M, W) the backward pass needs.
template <typename T>
SG_HD void write_pixel(const PixelBlend<T>& pb, const T* acc, const T* background, int D, int K, int64_t pix,
                       T* out_f, T* out_a, T* out_z, int32_t* out_ids, T* out_w, T* state) {
    const PixelTotals<T> t = pixel_totals(pb.sw, pb.swz, pb.wbg);
    const T W = t.W, inv_W = t.inv_W;
    for (int k = 0; k < D; ++k) out_f[pix * D + k] = (acc[k] + (background ? pb.wbg * background[k] : T(0))) * inv_W;
    out_a[pix] = t.alpha;
    out_z[pix] = t.depth;
    for (int k = 0; k < K; ++k) {
        out_ids[pix * K + k] = k < pb.n_top ? pb.top_id[k] : -1;
        out_w[pix * K + k] = k < pb.n_top ? pb.top_w[k] * inv_W : T(0);
    }
    state[2 * pix] = pb.M;
    state[2 * pix + 1] = W;
}

// The gradient of the loss to one hit's weight w, given the pixel's outputs and upstream gradients:
//   dL/dw = (sum_k gF_k (f_k - F_k) + gA (1 - A)) / W + gZ (z - Z) / sw
// F and gF: the pixel's D features and their gradients, `stride` apart.
template <typename T>
SG_HD T weight_grad(const T* f, const T* F, const T* gF, int stride, int D, T gA, T A, T gZ, T Z, T z, T inv_W,
                    T inv_sw) {
    T g = gA * (T(1) - A);
    for (int k = 0; k < D; ++k) g += gF[k * stride] * (f[k] - F[k * stride]);
    return g * inv_W + gZ * (z - Z) * inv_sw;
}

// One hit's gradients to its sphere's row and the ray: X, Y, Z, r and the ray's a, b (g), the opacity,
// and w / W, whose product with the pixel's feature gradient gF_c is the gradient to feature c.
template <typename T>
struct HitRowGrad {
    HitGrad<T> g;
    T opacity, wW;
};

// One pixel's backward pass: its forward outputs and state and the upstream gradients, and per hit
// the gradients to the sphere's row (X, Y, Z, r, opacity, features[D]) and to the ray (a, b).
template <typename T>
struct PixelGrad {
    T M, inv_W, A, Z, inv_sw, gA, gZ, de_dz, e_at0;  // e / opacity = e_at0 + z de_dz
    const T *F, *gF;  // [D] the pixel's features and their upstream gradient, `stride` apart
    int D, stride;

    PixelGrad() = default;

    SG_HD PixelGrad(int64_t pix, int D_, const T* out_f, const T* out_a, const T* out_z, const T* state,
                    const T* v_f, const T* v_a, const T* v_z, const Blend<T>& p) {
        D = D_;
        stride = 1;
        M = state[2 * pix];
        const T W = state[2 * pix + 1];
        inv_W = T(1) / W;
        A = out_a[pix];
        Z = out_z[pix];
        const T sw = A * W;
        inv_sw = sw > T(0) ? T(1) / sw : T(0);
        gA = v_a[pix];
        gZ = v_z[pix];
        F = out_f + pix * D;
        gF = v_f + pix * D;
        const ExponentLine<T> line = exponent_line(p);
        de_dz = line.de_dz;
        e_at0 = line.e_at0;
    }

    // A hit (h, k, z as the forward found them, E = exp(e - M) of its exponent e) of sphere s with
    // features f [D].
    SG_HD HitRowGrad<T> hit_grads(const Sphere<T>& s, const Ray<T>& ray, T h, T k, T z, T E, const T* f) const {
        const T w = s.opacity * h * E;  // E = exp(opacity e(z) - M)
        const T gw = weight_grad(f, F, gF, stride, D, gA, A, gZ, Z, z, inv_W, inv_sw);
        const T gz = gw * w * s.opacity * de_dz + gZ * w * inv_sw;
        HitRowGrad<T> r;
        r.g = sphere_hit_backward(s, ray, h, k, gw * s.opacity * E, gz);
        r.opacity = gw * (h * E + w * (e_at0 + z * de_dz));  // the opacity scales the weight and the exponent
        r.wW = w * inv_W;
        return r;
    }

    // The same, handing the gradient of row entry i to add(i, value); returns the ray's part.
    template <typename Add>
    SG_HD HitGrad<T> hit(const Sphere<T>& s, const Ray<T>& ray, T h, T k, T z, T e, const T* f, Add add) const {
        const HitRowGrad<T> r = hit_grads(s, ray, h, k, z, sg_exp(e - M), f);
        add(0, r.g.X);
        add(1, r.g.Y);
        add(2, r.g.Z);
        add(3, r.g.r);
        add(4, r.opacity);
        for (int c = 0; c < D; ++c) add(5 + c, gF[c] * r.wW);
        return r.g;
    }
};

// The screen-space box of a sphere's projection (pixel coordinates, before clamping): the tangent
// planes through the camera's y (x) axis (orthographic: the centre's image +- r f). Returns false
// when the sphere cannot be hit (outside [near, far]); under perspective, a sphere reaching the z <= 0
// half-space covers the whole image.
template <typename T>
SG_HD bool sphere_screen_box(T X, T Y, T Z, T r, T fx, T fy, T cx, T cy, const Blend<T>& p, int W, int H, T& u0,
                             T& u1, T& v0, T& v1) {
    if (!(Z + r >= p.near) || !(Z - r <= p.far) || !(r > T(0))) return false;
    if (p.persp == T(0)) {
        u0 = fx * (X - r) + cx;
        u1 = fx * (X + r) + cx;
        v0 = fy * (Y - r) + cy;
        v1 = fy * (Y + r) + cy;
        return true;
    }
    const T den = Z * Z - r * r;
    if (!(Z > r) || !(den > T(1e-6) * Z * Z)) {
        u0 = v0 = T(0);
        u1 = T(W);
        v1 = T(H);
        return true;
    }
    const T sx = r * sg_sqrt(X * X + den), sy = r * sg_sqrt(Y * Y + den);
    const T kx0 = (X * Z - sx) / den, kx1 = (X * Z + sx) / den;
    const T ky0 = (Y * Z - sy) / den, ky1 = (Y * Z + sy) / den;
    u0 = fx * kx0 + cx;
    u1 = fx * kx1 + cx;
    v0 = fy * ky0 + cy;
    v1 = fy * ky1 + cy;
    return true;
}

// Tiles whose pixel centres may lie in the box [u0, u1] x [v0, v1] (one pixel of margin):
// tx0 <= tx < tx1, ty0 <= ty < ty1; empty when off-image.
template <typename T>
SG_HD void box_tiles(T u0, T u1, T v0, T v1, const SphereDims& d, int& tx0, int& tx1, int& ty0, int& ty1) {
    const T ts = T(d.tile);
    const int x0 = sg_ifloor((u0 - T(1)) / ts), x1 = sg_ifloor((u1 + T(1)) / ts) + 1;
    const int y0 = sg_ifloor((v0 - T(1)) / ts), y1 = sg_ifloor((v1 + T(1)) / ts) + 1;
    tx0 = sg_max(x0, 0);
    tx1 = sg_min(x1, d.tiles_x);
    ty0 = sg_max(y0, 0);
    ty1 = sg_min(y1, d.tiles_y);
    if (tx1 < tx0) tx1 = tx0;
    if (ty1 < ty0) ty1 = ty0;
}

}  // namespace spheres
}  // namespace scenegrad
