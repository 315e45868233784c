// Per-element math of the triangle rasterizer, shared by the CPU and CUDA launchers.
//
// Homogeneous rasterization (Olano & Greer 1997): for a triangle with clip-space vertices
// (x_i, y_i, z_i, w_i), let M = [[x0 x1 x2], [y0 y1 y2], [w0 w1 w2]] and A = M^-1. For the
// pixel whose centre has normalised device coordinates p = (px, py, 1),
//     alpha = A p,   S = alpha0 + alpha1 + alpha2,
//     lambda = alpha / S          (perspective-correct barycentrics; u = lambda0, v = lambda1)
//     z/w = (alpha . z) / (alpha . w)   (the depth; alpha . w = 1 in exact arithmetic, and
//                                         dividing by it cancels most float32 rounding)
// The pixel is covered when all alpha_i >= 0 and S > 0, which is exactly "inside the triangle
// and in front of the camera" even for triangles that cross w = 0, so no clipping is needed.
// Fragments with z/w outside [-1, 1] (before the near plane or after the far one) are dropped.
//
// Pixel (ix, iy), with rows top to bottom, has its centre at
//     px = 2 (ix + 0.5) / W - 1,     py = 1 - 2 (iy + 0.5) / H.
// (nvdiffrast puts row 0 at py = -1: its images are ours flipped upside down.)
#pragma once
#include <cmath>
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {
namespace mesh {

template <typename T>
struct TriSetup {
    T A[9];      // M^-1, row major
    T z[3];      // clip-space z of the vertices
    T w[3];      // clip-space w of the vertices
    int x0, x1;  // pixel columns that may be covered, inclusive; x1 < x0 when none
    int y0, y1;  // pixel rows that may be covered, inclusive
};

template <typename T>
SG_HD T ndc_x(int ix, int W) { return T(2) * (T(ix) + T(0.5)) / T(W) - T(1); }

template <typename T>
SG_HD T ndc_y(int iy, int H) { return T(1) - T(2) * (T(iy) + T(0.5)) / T(H); }

// Inverse of M = [[x0 x1 x2], [y0 y1 y2], [w0 w1 w2]] through the adjugate; false if singular.
template <typename T>
SG_HD bool invert_tri_matrix(const T* v0, const T* v1, const T* v2, T* A) {
    // Columns of M are the (x, y, w) of each vertex; v* point at (x, y, z, w).
    const T m00 = v0[0], m01 = v1[0], m02 = v2[0];
    const T m10 = v0[1], m11 = v1[1], m12 = v2[1];
    const T m20 = v0[3], m21 = v1[3], m22 = v2[3];
    const T c00 = m11 * m22 - m12 * m21;
    const T c01 = m12 * m20 - m10 * m22;
    const T c02 = m10 * m21 - m11 * m20;
    const T det = m00 * c00 + m01 * c01 + m02 * c02;
    if (!(det != T(0)) || !sg_isfinite(det)) return false;
    const T inv = T(1) / det;
    A[0] = c00 * inv;
    A[1] = (m02 * m21 - m01 * m22) * inv;
    A[2] = (m01 * m12 - m02 * m11) * inv;
    A[3] = c01 * inv;
    A[4] = (m00 * m22 - m02 * m20) * inv;
    A[5] = (m02 * m10 - m00 * m12) * inv;
    A[6] = c02 * inv;
    A[7] = (m01 * m20 - m00 * m21) * inv;
    A[8] = (m00 * m11 - m01 * m10) * inv;
    return true;
}

// M^-1 and the vertices' z and w of triangle idx[0..2] of the vertex array base ([V, 4]);
// false when the triangle is singular.
template <typename T>
SG_HD bool load_triangle(const T* base, const int32_t* idx, TriSetup<T>& s) {
    if (!invert_tri_matrix(base + 4 * idx[0], base + 4 * idx[1], base + 4 * idx[2], s.A)) return false;
    for (int i = 0; i < 3; ++i) {
        s.z[i] = base[4 * idx[i] + 2];
        s.w[i] = base[4 * idx[i] + 3];
    }
    return true;
}

// Does the pixel's incoming gradient (rast channels u, v, z/w and, if given, rast_db) vanish?
template <typename T>
SG_HD bool zero_gradient(const T* g, const T* gdb) {
    bool any = g[0] != T(0) || g[1] != T(0) || g[2] != T(0);
    if (gdb) any = any || gdb[0] != T(0) || gdb[1] != T(0) || gdb[2] != T(0) || gdb[3] != T(0);
    return !any;
}

// Screen bounding box of the triangle, clamped to the image; conservative (whole image) when a
// vertex is at or behind w = 0. Returns false when the triangle cannot cover any pixel.
template <typename T>
SG_HD bool setup_triangle(const T* v0, const T* v1, const T* v2, int W, int H, TriSetup<T>& s) {
    s.x0 = 0;
    s.x1 = -1;
    s.y0 = 0;
    s.y1 = -1;
    if (!(v0[3] > T(0)) && !(v1[3] > T(0)) && !(v2[3] > T(0))) return false;  // all behind
    if (!invert_tri_matrix(v0, v1, v2, s.A)) return false;
    s.z[0] = v0[2];
    s.z[1] = v1[2];
    s.z[2] = v2[2];
    s.w[0] = v0[3];
    s.w[1] = v1[3];
    s.w[2] = v2[3];
    int x0 = 0, x1 = W - 1, y0 = 0, y1 = H - 1;
    if (v0[3] > T(0) && v1[3] > T(0) && v2[3] > T(0)) {
        const T* v[3] = {v0, v1, v2};
        T xmin = T(INFINITY), xmax = T(-INFINITY), ymin = T(INFINITY), ymax = T(-INFINITY);
        for (int i = 0; i < 3; ++i) {
            // Pixel-space position (X right, Y down) of the vertex.
            const T X = (v[i][0] / v[i][3] + T(1)) * T(0.5) * T(W);
            const T Y = (T(1) - v[i][1] / v[i][3]) * T(0.5) * T(H);
            xmin = sg_min(xmin, X);
            xmax = sg_max(xmax, X);
            ymin = sg_min(ymin, Y);
            ymax = sg_max(ymax, Y);
        }
        if (!(xmax >= T(0)) || !(ymax >= T(0)) || !(xmin <= T(W)) || !(ymin <= T(H))) return false;
        // Pixel i has its centre at i + 0.5; widen by one pixel against rounding.
        x0 = (int)sg_max(T(0), sg_floor(xmin - T(0.5)) - T(1));
        y0 = (int)sg_max(T(0), sg_floor(ymin - T(0.5)) - T(1));
        x1 = (int)sg_min(T(W - 1), sg_ceil(xmax - T(0.5)) + T(1));
        y1 = (int)sg_min(T(H - 1), sg_ceil(ymax - T(0.5)) + T(1));
    }
    s.x0 = x0;
    s.x1 = x1;
    s.y0 = y0;
    s.y1 = y1;
    return x0 <= x1 && y0 <= y1;
}

// alpha = A p for p = (px, py, 1).
template <typename T>
SG_HD void tri_alpha(const T* A, T px, T py, T* alpha) {
    alpha[0] = A[0] * px + A[1] * py + A[2];
    alpha[1] = A[3] * px + A[4] * py + A[5];
    alpha[2] = A[6] * px + A[7] * py + A[8];
}

// z/w of the point with weights alpha.
template <typename T>
SG_HD T tri_depth(const TriSetup<T>& s, const T* a) {
    return (a[0] * s.z[0] + a[1] * s.z[1] + a[2] * s.z[2]) / (a[0] * s.w[0] + a[1] * s.w[1] + a[2] * s.w[2]);
}

// Coverage and depth of one pixel: whether the triangle covers it (its weights are not negative,
// their sum is positive, z/w is in [-1, 1]), and z/w (meaningful only where covered). No branches,
// so that the CPU launcher's loop over a row of pixels vectorises.
template <typename T>
SG_HD bool covers(const TriSetup<T>& s, T px, T py, T& zw) {
    T a[3];
    tri_alpha(s.A, px, py, a);
    zw = tri_depth(s, a);
    const bool inside = (a[0] >= T(0)) & (a[1] >= T(0)) & (a[2] >= T(0)) & (a[0] + a[1] + a[2] > T(0));
    return inside & (zw >= T(-1)) & (zw <= T(1));
}

// The outputs of one covered pixel: rast = (u, v, z/w, id + 1) and
// db = (du/dX, du/dY, dv/dX, dv/dY), derivatives per pixel (X right, Y down).
template <typename T>
SG_HD void pixel_outputs(const TriSetup<T>& s, T px, T py, int W, int H, T* rast, T* db) {
    T a[3];
    tri_alpha(s.A, px, py, a);
    const T S = a[0] + a[1] + a[2];
    const T l0 = a[0] / S, l1 = a[1] / S;
    rast[0] = l0;
    rast[1] = l1;
    rast[2] = tri_depth(s, a);
    const T sx = T(2) / T(W), sy = T(-2) / T(H);
    const T cx = s.A[0] + s.A[3] + s.A[6];
    const T cy = s.A[1] + s.A[4] + s.A[7];
    db[0] = (s.A[0] - l0 * cx) / S * sx;
    db[1] = (s.A[1] - l0 * cy) / S * sy;
    db[2] = (s.A[3] - l1 * cx) / S * sx;
    db[3] = (s.A[4] - l1 * cy) / S * sy;
}

// Backward of pixel_outputs. g = d loss / d (u, v, z/w), gdb = d loss / d db (may be null).
// Adds d loss / d (x, y, z, w) of each vertex to gv[0..3], gv[4..7], gv[8..11].
template <typename T>
SG_HD void pixel_outputs_backward(const TriSetup<T>& s, T px, T py, int W, int H, const T* g,
                                  const T* gdb, T* gv) {
    const T* A = s.A;
    T a[3];
    tri_alpha(A, px, py, a);
    const T S = a[0] + a[1] + a[2];
    const T lam[3] = {a[0] / S, a[1] / S, a[2] / S};
    const T sd[2] = {T(2) / T(W), T(-2) / T(H)};
    const T c[2] = {A[0] + A[3] + A[6], A[1] + A[4] + A[7]};

    T gA[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    T glam[3] = {g[0], g[1], T(0)};
    T gS = T(0);
    if (gdb != nullptr) {
        // db[2j + d] = (A[j][d] - lam_j c_d) / S * sd_d for j in {0, 1}, d in {x, y}.
        for (int j = 0; j < 2; ++j) {
            for (int d = 0; d < 2; ++d) {
                const T gd = gdb[2 * j + d];
                if (gd == T(0)) continue;
                const T D = (A[3 * j + d] - lam[j] * c[d]) / S * sd[d];
                const T k = gd * sd[d] / S;
                gA[3 * j + d] += k;                              // direct A[j][d]
                for (int i = 0; i < 3; ++i) gA[3 * i + d] -= k * lam[j];  // through c_d
                glam[j] -= k * c[d];
                gS -= gd * D / S;
            }
        }
    }
    // lambda = alpha / S and S = sum(alpha): d lambda_j / d alpha_i = (delta_ij - lambda_j) / S.
    // z/w = (alpha . z) / (alpha . w) =: Az / Aw.
    const T dot = glam[0] * lam[0] + glam[1] * lam[1] + glam[2] * lam[2];
    const T p[3] = {px, py, T(1)};
    const T Aw = a[0] * s.w[0] + a[1] * s.w[1] + a[2] * s.w[2];
    const T zw = (a[0] * s.z[0] + a[1] * s.z[1] + a[2] * s.z[2]) / Aw;
    const T gz = g[2] / Aw;
    for (int i = 0; i < 3; ++i) {
        const T galpha = (glam[i] - dot) / S + gS + gz * (s.z[i] - zw * s.w[i]);
        for (int k = 0; k < 3; ++k) gA[3 * i + k] += galpha * p[k];
        gv[4 * i + 2] += gz * a[i];        // through z_i
        gv[4 * i + 3] -= gz * zw * a[i];   // through w_i in the denominator (and via A below)
    }
    // A = M^-1: dL/dM = -A^T gA A^T.
    T t[9];  // t = A^T gA
    for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) t[3 * r + k] = A[r] * gA[k] + A[3 + r] * gA[3 + k] + A[6 + r] * gA[6 + k];
    for (int r = 0; r < 3; ++r) {
        for (int i = 0; i < 3; ++i) {
            // gM[r][i] = -(t A^T)[r][i] = -sum_k t[r][k] A[i][k]
            const T gM = -(t[3 * r + 0] * A[3 * i + 0] + t[3 * r + 1] * A[3 * i + 1] + t[3 * r + 2] * A[3 * i + 2]);
            // Row r of M: 0 -> x, 1 -> y, 2 -> w (component 3 of the vertex).
            gv[4 * i + (r == 2 ? 3 : r)] += gM;
        }
    }
}

// Order-preserving 32-bit key of a float depth, for atomicMin depth tests (smaller is nearer).
SG_HD uint32_t depth_key(float z) {
    union {
        float f;
        uint32_t u;
    } bits;
    bits.f = z;
    return (bits.u & 0x80000000u) ? ~bits.u : (bits.u | 0x80000000u);
}

}  // namespace mesh
}  // namespace scenegrad
