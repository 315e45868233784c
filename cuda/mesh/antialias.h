// Per-element math of analytic silhouette antialiasing, shared by the CPU and CUDA launchers.
//
// The method of Laine et al. 2020 (nvdiffrast): for each pair of neighbouring pixels (right or
// down) whose triangle ids differ, take the nearer of the two triangles (background is farthest)
// and look for a silhouette edge of it that crosses the segment between the two pixel centres.
// An edge is a silhouette when the triangle across it (found by `antialias_topology`) faces the
// other way in screen space, or when there is none. Measuring the crossing point `dc` from the
// centre of the pixel that the triangle covers (0) towards the other pixel (1), the discrete
// image puts the boundary at 0.5; the pixel on the wrong side of the true edge is blended with
// its neighbour by |0.5 - dc|. The blend weight depends on the edge's screen position, so
// gradients reach the vertex positions at silhouettes, which plain rasterization cannot give.
//
// Pixel-space coordinates here are scenegrad's: X right, Y down (row index), pixel centres at
// +0.5, X = (x / w + 1) W / 2 and Y = (1 - y / w) H / 2.
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {
namespace mesh {

struct AntialiasDims {
    int B, H, W, C;  // image batch, size and channels
    int V;           // vertices per batch entry of pos
    bool pos_batched;  // pos is [B, V, 4] (else [V, 4] shared by the batch)
};

// What the analysis of one pixel pair found.
template <typename T>
struct AAPair {
    int64_t pixel0, pixel1;  // the pair (pixel1 is right of or below pixel0)
    int64_t target;          // the pixel that gets blended (pixel0 or pixel1)
    T alpha;                 // out[target] += alpha (color[pixel1] - color[pixel0])
    bool clamped;            // the crossing was clamped into the segment: no position gradient
    int d;                   // 0: horizontal pair, 1: vertical pair
    T ds;                    // +1: the edge's triangle covers pixel0; -1: it covers pixel1
    int32_t va, vb;          // the silhouette edge's vertices
    T xa, ya, xb, yb;        // their pixel coordinates relative to the reference pixel centre, swapped when d = 1
};

template <typename T>
SG_HD bool aa_same_sign(T a, T b) { return (a < T(0)) == (b < T(0)); }

template <typename T>
SG_HD const T* aa_vertex(const T* pos, const AntialiasDims& dm, int64_t b, int32_t v) {
    return pos + ((dm.pos_batched ? b * dm.V : 0) + v) * 4;
}

// Pixel-space position of a clip-space vertex relative to the centre of pixel (rx, ry).
template <typename T>
SG_HD void aa_project(const T* p, const AntialiasDims& dm, int rx, int ry, T& X, T& Y) {
    const T xh = T(0.5) * T(dm.W), yh = T(0.5) * T(dm.H);
    X = p[0] / p[3] * xh + xh - (T(rx) + T(0.5));
    Y = yh - p[1] / p[3] * yh - (T(ry) + T(0.5));
}

// Analyse the pair (pixel (x, y) of image b, its right (d = 0) or lower (d = 1) neighbour).
// Returns true and fills `pair` when the pair gets blended.
template <typename T>
SG_HD bool aa_analyze(const T* pos, const int32_t* tri, const int32_t* opposite, const T* rast,
                      const AntialiasDims& dm, int64_t b, int x, int y, int d, AAPair<T>& pair) {
    if (d == 0 ? x >= dm.W - 1 : y >= dm.H - 1) return false;
    const int64_t p0 = ((b * dm.H) + y) * dm.W + x;
    const int64_t p1 = p0 + (d ? dm.W : 1);
    const int id0 = (int)rast[4 * p0 + 3] - 1, id1 = (int)rast[4 * p1 + 3] - 1;
    if (id0 == id1) return false;
    int t = id0 >= 0 ? id0 : id1;
    if (id0 >= 0 && id1 >= 0) t = rast[4 * p0 + 2] < rast[4 * p1 + 2] ? id0 : id1;
    const bool ref1 = t == id1;  // the triangle covers pixel1: measure from there
    const T ds = ref1 ? T(-1) : T(1);
    const int rx = x + (ref1 && d == 0 ? 1 : 0), ry = y + (ref1 && d == 1 ? 1 : 0);

    int32_t vi[3], oi[3];
    for (int k = 0; k < 3; ++k) {
        vi[k] = tri[3 * t + k];
        oi[k] = opposite[3 * t + k];
    }
    const T* pv[3];
    const T* po[3];
    for (int k = 0; k < 3; ++k) {
        pv[k] = aa_vertex(pos, dm, b, vi[k]);
        po[k] = oi[k] < 0 ? pv[k] : aa_vertex(pos, dm, b, oi[k]);
        if (!(pv[k][3] > T(0)) || !(po[k][3] > T(0))) return false;  // behind the camera: no AA
    }
    T X[3], Y[3], OX[3], OY[3];
    for (int k = 0; k < 3; ++k) {
        aa_project(pv[k], dm, rx, ry, X[k], Y[k]);
        aa_project(po[k], dm, rx, ry, OX[k], OY[k]);
    }
    // Orientation of the triangle and of each neighbour seen across edge k (opposite vertex k).
    const T bb = (X[1] - X[0]) * (Y[2] - Y[0]) - (X[2] - X[0]) * (Y[1] - Y[0]);
    T a[3];
    for (int k = 0; k < 3; ++k) {
        const int k1 = (k + 1) % 3, k2 = (k + 2) % 3;
        a[k] = (X[k1] - OX[k]) * (Y[k2] - OY[k]) - (X[k2] - OX[k]) * (Y[k1] - OY[k]);
    }
    if (!aa_same_sign(a[0], bb) && !aa_same_sign(a[1], bb) && !aa_same_sign(a[2], bb)) return false;
    if (d == 1) {  // work along x: swap axes for vertical pairs
        for (int k = 0; k < 3; ++k) {
            const T s = X[k];
            X[k] = Y[k];
            Y[k] = s;
        }
    }
    // Crossing of each edge with the line y = 0, measured along +x, times ds.
    T r[3];
    bool crosses[3];
    for (int k = 0; k < 3; ++k) {
        const int k1 = (k + 1) % 3, k2 = (k + 2) % 3;
        crosses[k] = !aa_same_sign(Y[k1], Y[k2]);
        const T dx = X[k2] - X[k1], dy = Y[k2] - Y[k1];
        r[k] = crosses[k] ? ds * (X[k1] * dy - Y[k1] * dx) / dy : T(-1e30);
    }
    int di = 0;
    if (r[1] > r[di]) di = 1;
    if (r[2] > r[di]) di = 2;
    const int k1 = (di + 1) % 3, k2 = (di + 2) % 3;
    const T dx = X[k2] - X[k1], dy = Y[k2] - Y[k1];
    if (!crosses[di] || !aa_same_sign(a[di], bb) || (dy < T(0) ? -dy : dy) < (dx < T(0) ? -dx : dx)) return false;
    T dc = r[di];
    const T eps = T(0.0625);  // tolerate 1/16 pixel of inaccuracy
    if (!(dc > -eps && dc < T(1) + eps)) return false;
    pair.clamped = dc < T(0) || dc > T(1);
    dc = sg_min(sg_max(dc, T(0)), T(1));
    pair.pixel0 = p0;
    pair.pixel1 = p1;
    pair.alpha = ds * (T(0.5) - dc);
    pair.target = pair.alpha > T(0) ? p0 : p1;
    pair.d = d;
    pair.ds = ds;
    pair.va = vi[k1];
    pair.vb = vi[k2];
    pair.xa = X[k1];
    pair.ya = Y[k1];
    pair.xb = X[k2];
    pair.yb = Y[k2];
    return true;
}

// Gradient of alpha (through the crossing point) with respect to the clip-space (x, y, w) of the
// edge's two vertices: adds g_alpha * d alpha / d (x, y, w) to ga[0..2] (va) and gb[0..2] (vb).
template <typename T>
SG_HD void aa_alpha_position_grad(const AAPair<T>& pr, const T* pos, const AntialiasDims& dm, int64_t b, T g_alpha,
                                  T* ga, T* gb) {
    if (pr.clamped || g_alpha == T(0)) return;
    // alpha = ds (0.5 - dc), dc = ds xc  =>  d alpha / d xc = -1.
    const T g_xc = -g_alpha;
    const T dy = pr.yb - pr.ya;
    // xc = (xa yb - xb ya) / (yb - ya)
    T gx[2] = {g_xc * pr.yb / dy, -g_xc * pr.ya / dy};
    T gy[2] = {g_xc * pr.yb * (pr.xa - pr.xb) / (dy * dy), g_xc * pr.ya * (pr.xb - pr.xa) / (dy * dy)};
    const T xh = T(0.5) * T(dm.W), yh = T(0.5) * T(dm.H);
    const int32_t verts[2] = {pr.va, pr.vb};
    T* outs[2] = {ga, gb};
    for (int e = 0; e < 2; ++e) {
        // Undo the axis swap: gradient to pixel X and Y.
        const T gX = pr.d == 1 ? gy[e] : gx[e];
        const T gY = pr.d == 1 ? gx[e] : gy[e];
        const T* p = aa_vertex(pos, dm, b, verts[e]);
        const T iw = T(1) / p[3];
        // X = x / w xh + ..., Y = yh - y / w yh - ...
        outs[e][0] += gX * xh * iw;
        outs[e][1] += -gY * yh * iw;
        outs[e][2] += (-gX * xh * p[0] + gY * yh * p[1]) * iw * iw;
    }
}

}  // namespace mesh
}  // namespace scenegrad
