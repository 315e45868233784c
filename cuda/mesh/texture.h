// Per-element math of texture sampling, shared by the CPU and CUDA launchers.
//
// A texture is a mip pyramid: level 0 is the texture itself, tex [Bt, h0, w0, C], and the coarser
// levels 1, 2, ... follow one another in one buffer per batch entry, coarse [Bt, total - h0 w0, C].
// Level l has size (h_l, w_l) and starts at texel offset off_l of the whole pyramid (off_0 = 0,
// off_1 = h0 w0): texel (x, y) of level l >= 1, channel c, of batch b is
// coarse[(b * (total - off_1) + off_l - off_1 + y * w_l + x) * C + c]. Gradients use the whole
// pyramid's layout in one buffer, grad[(b * total + off_l + y * w_l + x) * C + c]. Keeping level 0
// apart spares the forward a copy of the (largest) level. Texture coordinates: u runs left to right, v top
// to bottom over [0, 1]; texel (x, y) has its centre at ((x + 0.5) / w, (y + 0.5) / h).
// Bilinear lookups read the four texels around (u w - 0.5, v h - 0.5); trilinear lookups blend
// the bilinear lookups of levels floor(lod) and floor(lod) + 1 by the fraction of lod, where lod
// comes from the screen-space derivatives of (u, v) (texture_lod).
//
// Level l + 1 of the pyramid averages 2x2 blocks of level l (an axis of size 1 stays 1; an odd
// last row or column is dropped): mip_texel builds a texel, mip_fold_texel pulls a texel's share
// of the gradient of its parent back down.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/hd.h"

namespace scenegrad {
namespace mesh {

enum TexBoundary { kWrap = 0, kClamp = 1, kZero = 2 };
enum TexFilter { kNearest = 0, kLinear = 1, kLinearMipLinear = 2 };

constexpr int kMaxTexLevels = 16;

// Level sizes and first texels of a flattened mip pyramid.
struct MipLayout {
    int levels;
    int64_t offsets[kMaxTexLevels];
    int32_t sizes[2 * kMaxTexLevels];  // (h, w) of each level
};

struct TextureDims {
    int64_t pixels;   // output pixels B * Ho * Wo
    int64_t hw;       // Ho * Wo
    bool tex_batched; // one pyramid per output batch entry (else one shared)
    int64_t total;    // texels per pyramid, all levels
    int64_t texels0;  // texels of level 0, h0 * w0 (the coarse levels hold total - texels0)
    int C;
    int levels;
    int boundary;
    int filter;
    int64_t offsets[kMaxTexLevels];  // first texel of each level
    int32_t sizes[2 * kMaxTexLevels];  // (h, w) of each level
};

// Index of texel x along an axis of size n under the boundary mode; -1 means "zero".
SG_HD int tex_wrap(int x, int n, int boundary) {
    if ((unsigned)x < (unsigned)n) return x;  // inside: every mode agrees
    if (boundary == kWrap) {
        // One period off (a bilinear tap next to the border) needs no division.
        x = x < 0 ? x + n : x - n;
        if ((unsigned)x < (unsigned)n) return x;
        x %= n;
        return x < 0 ? x + n : x;
    }
    if (boundary == kClamp) return x < 0 ? 0 : (x >= n ? n - 1 : x);
    return (x < 0 || x >= n) ? -1 : x;
}

// The 2x2 texels around (u, v) in a level of h x w texels: their columns and rows under the
// boundary mode (-1: "zero") and the linear weights along each axis.
template <typename T>
struct BilinearFootprint {
    int xs[2], ys[2];
    T wx[2], wy[2];
};

template <typename T>
SG_HD BilinearFootprint<T> bilinear_footprint(T u, T v, int h, int w, int boundary) {
    const T x = u * T(w) - T(0.5), y = v * T(h) - T(0.5);
    const int x0 = sg_ifloor(x), y0 = sg_ifloor(y);
    const T ax = x - T(x0), ay = y - T(y0);
    BilinearFootprint<T> f;
    f.xs[0] = tex_wrap(x0, w, boundary);
    f.xs[1] = tex_wrap(x0 + 1, w, boundary);
    f.ys[0] = tex_wrap(y0, h, boundary);
    f.ys[1] = tex_wrap(y0 + 1, h, boundary);
    f.wx[0] = T(1) - ax;
    f.wx[1] = ax;
    f.wy[0] = T(1) - ay;
    f.wy[1] = ay;
    return f;
}

// The four taps of a bilinear lookup: texel offsets (or -1) and weights.
template <typename T>
struct BilinearTaps {
    int64_t idx[4];
    T w[4];
};

template <typename T>
SG_HD void bilinear_taps(T u, T v, int h, int w, int64_t level_offset, int boundary, BilinearTaps<T>& taps) {
    const BilinearFootprint<T> f = bilinear_footprint(u, v, h, w, boundary);
    const int *xs = f.xs, *ys = f.ys;
    const T *wx = f.wx, *wy = f.wy;
    for (int j = 0; j < 2; ++j) {
        for (int i = 0; i < 2; ++i) {
            const int k = 2 * j + i;
            const bool ok = xs[i] >= 0 && ys[j] >= 0;
            taps.idx[k] = ok ? level_offset + (int64_t)ys[j] * w + xs[i] : -1;
            taps.w[k] = wx[i] * wy[j];
        }
    }
}

// Backward of one bilinear lookup, weighted lw, in a level of h x w texels (`texels`, C channels;
// its first texel is number `first` in the whole pyramid's layout) for incoming gradient g[C]:
// hands each tap's gradient, lw * weight * g, to add(texel, scale, g), adds d loss / d (u, v) to
// gu and gv, and returns g . lookup (d loss / d lw). The four dot products stay in registers.
template <typename T, int kC, typename Add>
SG_HD T bilinear_backward(const T* texels, int h, int w, int64_t first, int boundary, T u, T v, T lw, const T* g,
                          int C_, T& gu, T& gv, Add& add) {
    const int C = kC > 0 ? kC : C_;
    const BilinearFootprint<T> f = bilinear_footprint(u, v, h, w, boundary);
    const int *xs = f.xs, *ys = f.ys;
    const T *wx = f.wx, *wy = f.wy;
    T dots[4];  // g . texel of each tap (0 outside a "zero" border), row-major
    for (int j = 0; j < 2; ++j) {
        for (int i = 0; i < 2; ++i) {
            T dot = T(0);
            if (xs[i] >= 0 && ys[j] >= 0) {
                const int64_t idx = (int64_t)ys[j] * w + xs[i];
                const T* texel = texels + idx * C;
                for (int c = 0; c < C; ++c) dot += g[c] * texel[c];
                if (lw != T(0)) add(first + idx, lw * (wx[i] * wy[j]), g);
            }
            dots[2 * j + i] = dot;
        }
    }
    gu += lw * T(w) * (wy[0] * (dots[1] - dots[0]) + wy[1] * (dots[3] - dots[2]));
    gv += lw * T(h) * (wx[0] * (dots[2] - dots[0]) + wx[1] * (dots[3] - dots[1]));
    return wy[0] * (wx[0] * dots[0] + wx[1] * dots[1]) + wy[1] * (wx[0] * dots[2] + wx[1] * dots[3]);
}

// Nearest lookup: the texel that contains (u, v), or -1.
template <typename T>
SG_HD int64_t nearest_tap(T u, T v, int h, int w, int64_t level_offset, int boundary) {
    const int x = tex_wrap(sg_ifloor(u * T(w)), w, boundary);
    const int y = tex_wrap(sg_ifloor(v * T(h)), h, boundary);
    return (x < 0 || y < 0) ? -1 : level_offset + (int64_t)y * w + x;
}

// Mip levels and blend weight for a level of detail: levels l0 <= l1, out = (1 - t) l0 + t l1.
// Returns false when lod was clamped into [0, levels - 1] (then d out / d lod = 0).
template <typename T>
SG_HD bool mip_pair(T lod, int levels, int& l0, int& l1, T& t) {
    bool inside = true;
    if (!(lod > T(0))) {
        lod = T(0);
        inside = false;
    }
    const T top = T(levels - 1);
    if (lod >= top) {
        l0 = l1 = levels - 1;
        t = T(0);
        return false;
    }
    l0 = sg_ifloor(lod);
    l1 = l0 + 1;
    t = lod - T(l0);
    return inside;
}

// Level of detail of a lookup from da = (du/dX, du/dY, dv/dX, dv/dY) for a base level of h x w
// texels: log2 of the longer footprint axis in texels, max(|(du/dX w, dv/dX h)|, |(du/dY w, dv/dY h)|),
// plus bias. With dlod_dda, also its derivative with respect to da[4] (0 where the footprint is
// below 1e-10 texels; at a tie the X axis is taken). Without dlod_dda, a footprint of at most one
// texel and no bias give 0 without the logarithm: every lod <= 0 samples level 0 alone (mip_pair),
// as do the pixels a rasterizer left empty (da = 0).
template <typename T>
SG_HD T texture_lod(const T* da, int h, int w, T bias, T* dlod_dda) {
    const T ax = da[0] * T(w), bx = da[2] * T(h), ay = da[1] * T(w), by = da[3] * T(h);
    const T rx = ax * ax + bx * bx, ry = ay * ay + by * by;
    const bool use_x = rx >= ry;
    const T rho2 = use_x ? rx : ry;
    const T tiny = T(1e-20);
    if (dlod_dda) {
        for (int k = 0; k < 4; ++k) dlod_dda[k] = T(0);
        if (rho2 > tiny) {
            const T s = T(1) / (T(0.6931471805599453) * rho2);  // d(0.5 log2 rho2) / d(component^2) * 2
            if (use_x) {
                dlod_dda[0] = s * ax * T(w);
                dlod_dda[2] = s * bx * T(h);
            } else {
                dlod_dda[1] = s * ay * T(w);
                dlod_dda[3] = s * by * T(h);
            }
        }
    }
    if (!dlod_dda && bias == T(0) && rho2 <= T(1)) return T(0);
    return T(0.5) * sg_log2(rho2 > tiny ? rho2 : tiny) + bias;
}

// Texel (x, y), channel c, of the level below `prev` (h x w texels of C channels): the mean of
// its 2x2 (or 2x1, 1x2, 1x1 where an axis has one texel) block.
template <typename T>
SG_HD T mip_texel(const T* prev, int h, int w, int C, int x, int y, int c) {
    const int sy = h > 1 ? 2 : 1, sx = w > 1 ? 2 : 1;
    T sum = T(0);
    for (int dy = 0; dy < sy; ++dy)
        for (int dx = 0; dx < sx; ++dx) sum += prev[((int64_t)(sy * y + dy) * w + sx * x + dx) * C + c];
    return sum * (sy * sx == 4 ? T(0.25) : sy * sx == 2 ? T(0.5) : T(1));
}

// Gradient that texel (x, y), channel c, of a level of h x w texels receives from its parent in
// the next level (`next`, C channels): the parent's gradient over its block size, 0 for texels in a
// dropped odd last row or column.
template <typename T>
SG_HD T mip_fold_texel(const T* next, int h, int w, int C, int x, int y, int c) {
    const int sy = h > 1 ? 2 : 1, sx = w > 1 ? 2 : 1;
    const int h2 = h > 1 ? h / 2 : 1, w2 = w > 1 ? w / 2 : 1;
    const int px = sx == 2 ? x >> 1 : x, py = sy == 2 ? y >> 1 : y;
    if (px >= w2 || py >= h2) return T(0);
    return next[((int64_t)py * w2 + px) * C + c] * (sy * sx == 4 ? T(0.25) : sy * sx == 2 ? T(0.5) : T(1));
}

// First texel of level L of one batch entry's pyramid: level 0 is `level0`, the others are in
// `coarse` (see the layout at the top).
template <typename T>
SG_HD const T* level_texels(const T* level0, const T* coarse, const TextureDims& d, int L) {
    return L == 0 ? level0 : coarse + (d.offsets[L] - d.texels0) * d.C;
}

// The pyramid output pixel p samples (one per batch entry, or one shared): its batch entry b, that
// entry's level 0 in `tex` and coarse levels in `coarse`.
template <typename T>
SG_HD void pixel_pyramid(const T* tex, const T* coarse, const TextureDims& d, int64_t p, int64_t& b,
                         const T*& level0, const T*& coarse_b) {
    b = d.tex_batched ? p / d.hw : 0;
    level0 = tex + b * d.texels0 * d.C;
    coarse_b = coarse + b * (d.total - d.texels0) * d.C;
}

// Whether an incoming gradient g[C] has a nonzero channel (else its pixel has nothing to scatter).
template <typename T>
SG_HD bool has_gradient(const T* g, int C) {
    for (int c = 0; c < C; ++c)
        if (g[c] != T(0)) return true;
    return false;
}

// One output pixel: out[C] from this pixel's batch entry's pyramid (level0, coarse) at (u, v) and
// lod. kC > 0 fixes the channel count at compile time (the launchers use with_channels).
template <typename T, int kC = 0>
SG_HD void texture_pixel(const T* level0, const T* coarse, const TextureDims& d, T u, T v, T lod, T* out) {
    const int C = kC > 0 ? kC : d.C;
    const int32_t* sizes = d.sizes;
    // Accumulate in registers when the channel count is known (out may alias the texels for the compiler).
    T local[kC > 0 ? kC : 1];
    T* acc = kC > 0 ? local : out;
    for (int c = 0; c < C; ++c) acc[c] = T(0);
    if (d.filter == kNearest) {
        const int64_t idx = nearest_tap(u, v, sizes[0], sizes[1], int64_t(0), d.boundary);
        if (idx >= 0)
            for (int c = 0; c < C; ++c) acc[c] = level0[idx * C + c];
    } else {
        int ls[2] = {0, 0};
        T t = T(0);
        if (d.filter == kLinearMipLinear) mip_pair(lod, d.levels, ls[0], ls[1], t);
        const T lw[2] = {T(1) - t, t};
        for (int m = 0; m < (t > T(0) ? 2 : 1); ++m) {
            const int L = ls[m];
            const T* texels = level_texels(level0, coarse, d, L);
            BilinearTaps<T> taps;
            bilinear_taps(u, v, sizes[2 * L], sizes[2 * L + 1], int64_t(0), d.boundary, taps);
            for (int k = 0; k < 4; ++k) {
                if (taps.idx[k] < 0) continue;
                const T wk = lw[m] * taps.w[k];
                for (int c = 0; c < C; ++c) acc[c] += wk * texels[taps.idx[k] * C + c];
            }
        }
    }
    if (kC > 0)
        for (int c = 0; c < C; ++c) out[c] = acc[c];
}

// Backward of texture_pixel for incoming gradient g[C]: returns d loss / d (u, v, lod) through gu,
// gv, glod and hands each texel's gradient, scale * g[0, C), to add(texel, scale, g), texel numbered
// in the whole pyramid's layout (off_l + y * w_l + x).
template <typename T, int kC = 0, typename Add>
SG_HD void texture_pixel_backward(const T* level0, const T* coarse, const TextureDims& d, T u, T v, T lod, const T* g,
                                  T& gu, T& gv, T& glod, Add add) {
    const int C = kC > 0 ? kC : d.C;
    gu = gv = glod = T(0);
    if (!has_gradient(g, C)) return;  // e.g. background pixels composited away: nothing to scatter
    if (d.filter == kNearest) {
        const int64_t idx = nearest_tap(u, v, d.sizes[0], d.sizes[1], int64_t(0), d.boundary);
        if (idx >= 0) add(idx, T(1), g);
        return;
    }
    int ls[2] = {0, 0};
    T t = T(0);
    const bool lod_free = d.filter == kLinearMipLinear && mip_pair(lod, d.levels, ls[0], ls[1], t);
    const int L0 = ls[0], L1 = ls[1];
    const T dot0 = bilinear_backward<T, kC>(level_texels(level0, coarse, d, L0), d.sizes[2 * L0], d.sizes[2 * L0 + 1],
                                            d.offsets[L0], d.boundary, u, v, T(1) - t, g, C, gu, gv, add);
    if (L1 == L0 || (t == T(0) && !lod_free)) return;  // level L1 weighs 0 and lod has no gradient
    const T dot1 = bilinear_backward<T, kC>(level_texels(level0, coarse, d, L1), d.sizes[2 * L1], d.sizes[2 * L1 + 1],
                                            d.offsets[L1], d.boundary, u, v, t, g, C, gu, gv, add);
    if (lod_free) glod = dot1 - dot0;
}

// Calls f(std::integral_constant<int, kC>()) with kC = C for 1 to 4 channels, else kC = 0 (the
// count is then read from TextureDims at run time).
template <typename F>
inline void with_channels(int C, F&& f) {
    switch (C) {
        case 1: f(std::integral_constant<int, 1>()); break;
        case 2: f(std::integral_constant<int, 2>()); break;
        case 3: f(std::integral_constant<int, 3>()); break;
        case 4: f(std::integral_constant<int, 4>()); break;
        default: f(std::integral_constant<int, 0>()); break;
    }
}

}  // namespace mesh
}  // namespace scenegrad
