// Per-element math of texture sampling, shared by the CPU and CUDA launchers.
//
// A texture is a mip pyramid flattened into one buffer per batch entry: level l has size
// (h_l, w_l) and starts at texel offset off_l; texel (x, y) of level l, channel c, of batch b is
// buf[(b * total + off_l + y * w_l + x) * C + c]. Texture coordinates: u runs left to right, v top
// to bottom over [0, 1]; texel (x, y) has its centre at ((x + 0.5) / w, (y + 0.5) / h).
// Bilinear lookups read the four texels around (u w - 0.5, v h - 0.5); trilinear lookups blend
// the bilinear lookups of levels floor(lod) and floor(lod) + 1 by the fraction of lod.
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {
namespace mesh {

enum TexBoundary { kWrap = 0, kClamp = 1, kZero = 2 };
enum TexFilter { kNearest = 0, kLinear = 1, kLinearMipLinear = 2 };

constexpr int kMaxTexLevels = 16;

struct TextureDims {
    int64_t pixels;   // output pixels B * Ho * Wo
    int64_t hw;       // Ho * Wo
    bool tex_batched; // buffer has one pyramid per output batch entry (else one shared)
    int64_t total;    // texels per pyramid
    int C;
    int levels;
    int boundary;
    int filter;
    int64_t offsets[kMaxTexLevels];  // first texel of each level
    int32_t sizes[2 * kMaxTexLevels];  // (h, w) of each level
};

// Index of texel x along an axis of size n under the boundary mode; -1 means "zero".
SG_HD int tex_wrap(int x, int n, int boundary) {
    if (boundary == kWrap) {
        x %= n;
        return x < 0 ? x + n : x;
    }
    if (boundary == kClamp) return x < 0 ? 0 : (x >= n ? n - 1 : x);
    return (x < 0 || x >= n) ? -1 : x;
}

// The four taps of a bilinear lookup: texel offsets (or -1) and weights, plus d weight / d (u, v).
template <typename T>
struct BilinearTaps {
    int64_t idx[4];
    T w[4];
    T dw_du[4], dw_dv[4];
};

template <typename T>
SG_HD void bilinear_taps(T u, T v, int h, int w, int64_t level_offset, int boundary, BilinearTaps<T>& taps) {
    const T x = u * T(w) - T(0.5), y = v * T(h) - T(0.5);
    const T fx0 = sg_floor(x), fy0 = sg_floor(y);
    const T ax = x - fx0, ay = y - fy0;
    const int x0 = (int)fx0, y0 = (int)fy0;
    const int xs[2] = {tex_wrap(x0, w, boundary), tex_wrap(x0 + 1, w, boundary)};
    const int ys[2] = {tex_wrap(y0, h, boundary), tex_wrap(y0 + 1, h, boundary)};
    const T wx[2] = {T(1) - ax, ax}, wy[2] = {T(1) - ay, ay};
    const T dwx[2] = {-T(w), T(w)}, dwy[2] = {-T(h), T(h)};
    for (int j = 0; j < 2; ++j) {
        for (int i = 0; i < 2; ++i) {
            const int k = 2 * j + i;
            const bool ok = xs[i] >= 0 && ys[j] >= 0;
            taps.idx[k] = ok ? level_offset + (int64_t)ys[j] * w + xs[i] : -1;
            taps.w[k] = wx[i] * wy[j];
            taps.dw_du[k] = dwx[i] * wy[j];
            taps.dw_dv[k] = wx[i] * dwy[j];
        }
    }
}

// Nearest lookup: the texel that contains (u, v), or -1.
template <typename T>
SG_HD int64_t nearest_tap(T u, T v, int h, int w, int64_t level_offset, int boundary) {
    const int x = tex_wrap((int)sg_floor(u * T(w)), w, boundary);
    const int y = tex_wrap((int)sg_floor(v * T(h)), h, boundary);
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
    l0 = (int)sg_floor(lod);
    l1 = l0 + 1;
    t = lod - T(l0);
    return inside;
}

// One output pixel: out[C] from pyramid `buf` (this pixel's batch entry), at (u, v) and lod.
template <typename T>
SG_HD void texture_pixel(const T* buf, const TextureDims& d, T u, T v, T lod, T* out) {
    const int64_t* offsets = d.offsets;
    const int32_t* sizes = d.sizes;
    for (int c = 0; c < d.C; ++c) out[c] = T(0);
    if (d.filter == kNearest) {
        const int64_t idx = nearest_tap(u, v, sizes[0], sizes[1], offsets[0], d.boundary);
        if (idx >= 0)
            for (int c = 0; c < d.C; ++c) out[c] = buf[idx * d.C + c];
        return;
    }
    int ls[2] = {0, 0};
    T t = T(0);
    if (d.filter == kLinearMipLinear) mip_pair(lod, d.levels, ls[0], ls[1], t);
    const T lw[2] = {T(1) - t, t};
    for (int m = 0; m < (t > T(0) ? 2 : 1); ++m) {
        const int L = ls[m];
        BilinearTaps<T> taps;
        bilinear_taps(u, v, sizes[2 * L], sizes[2 * L + 1], offsets[L], d.boundary, taps);
        for (int k = 0; k < 4; ++k) {
            if (taps.idx[k] < 0) continue;
            const T wk = lw[m] * taps.w[k];
            for (int c = 0; c < d.C; ++c) out[c] += wk * buf[taps.idx[k] * d.C + c];
        }
    }
}

// Backward of texture_pixel for incoming gradient g[C]: returns d loss / d (u, v, lod) through gu,
// gv, glod and hands each texel gradient to add(texel, channel, value).
template <typename T, typename Add>
SG_HD void texture_pixel_backward(const T* buf, const TextureDims& d, T u, T v, T lod, const T* g, T& gu, T& gv,
                                  T& glod, Add add) {
    const int64_t* offsets = d.offsets;
    const int32_t* sizes = d.sizes;
    gu = gv = glod = T(0);
    bool any = false;
    for (int c = 0; c < d.C; ++c) any = any || g[c] != T(0);
    if (!any) return;  // e.g. background pixels composited away: nothing to scatter
    if (d.filter == kNearest) {
        const int64_t idx = nearest_tap(u, v, sizes[0], sizes[1], offsets[0], d.boundary);
        if (idx >= 0)
            for (int c = 0; c < d.C; ++c) add(idx, c, g[c]);
        return;
    }
    int ls[2] = {0, 0};
    T t = T(0);
    const bool lod_free = d.filter == kLinearMipLinear && mip_pair(lod, d.levels, ls[0], ls[1], t);
    const T lw[2] = {T(1) - t, t};
    T level_dot[2] = {T(0), T(0)};  // g . (bilinear lookup of each level)
    const int count = ls[0] == ls[1] ? 1 : 2;
    for (int m = 0; m < count; ++m) {
        const int L = ls[m];
        BilinearTaps<T> taps;
        bilinear_taps(u, v, sizes[2 * L], sizes[2 * L + 1], offsets[L], d.boundary, taps);
        for (int k = 0; k < 4; ++k) {
            if (taps.idx[k] < 0) continue;
            T dot = T(0);
            for (int c = 0; c < d.C; ++c) {
                const T g_c = g[c];
                dot += g_c * buf[taps.idx[k] * d.C + c];
                if (lw[m] != T(0)) add(taps.idx[k], c, lw[m] * taps.w[k] * g_c);
            }
            level_dot[m] += taps.w[k] * dot;
            gu += lw[m] * taps.dw_du[k] * dot;
            gv += lw[m] * taps.dw_dv[k] * dot;
        }
    }
    if (count == 2 && lod_free) glod = level_dot[1] - level_dot[0];
}

}  // namespace mesh
}  // namespace scenegrad
