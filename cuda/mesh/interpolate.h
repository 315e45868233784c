// Per-element math of attribute interpolation, shared by the CPU and CUDA launchers.
//
// For a covered pixel with rast = (u, v, z/w, id + 1) on triangle (i0, i1, i2):
//     out_k = u a_k[i0] + v a_k[i1] + (1 - u - v) a_k[i2]
// and, when screen-space derivatives are requested (rast_db = du/dX, du/dY, dv/dX, dv/dY):
//     d out_k / dX = (a_k[i0] - a_k[i2]) du/dX + (a_k[i1] - a_k[i2]) dv/dX,   likewise for Y.
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {
namespace mesh {

struct InterpolateDims {
    int64_t pixels;  // B * H * W
    int64_t hw;      // H * W
    int V;           // vertices per batch entry of attr
    int A;           // attributes per vertex
    bool attr_batched;  // attr is [B, V, A] (else [V, A], shared by the batch)
    int D;           // number of attributes whose derivatives are written (0 = none)
};

template <typename T>
SG_HD const T* attr_row(const T* attr, const InterpolateDims& d, int64_t b, int32_t vertex) {
    return attr + ((d.attr_batched ? b * d.V : 0) + vertex) * d.A;
}

// One pixel of the forward pass. out [A], out_da [2 D] (may be null), diff [D] attribute indices.
template <typename T>
SG_HD void interpolate_pixel(const T* attr, const InterpolateDims& d, const int32_t* tri, int64_t p,
                             const T* rast, const T* db, const int32_t* diff, T* out, T* out_da) {
    const int t = (int)rast[4 * p + 3] - 1;
    if (t < 0) {
        for (int k = 0; k < d.A; ++k) out[k] = T(0);
        for (int k = 0; k < 2 * d.D; ++k) out_da[k] = T(0);
        return;
    }
    const int64_t b = d.attr_batched ? p / d.hw : 0;  // no division for shared attributes
    const T u = rast[4 * p], v = rast[4 * p + 1], w = T(1) - u - v;
    const T* a0 = attr_row(attr, d, b, tri[3 * t]);
    const T* a1 = attr_row(attr, d, b, tri[3 * t + 1]);
    const T* a2 = attr_row(attr, d, b, tri[3 * t + 2]);
    for (int k = 0; k < d.A; ++k) out[k] = u * a0[k] + v * a1[k] + w * a2[k];
    if (d.D > 0) {
        const T* g = db + 4 * p;
        for (int j = 0; j < d.D; ++j) {
            const int k = diff[j];
            const T e0 = a0[k] - a2[k], e1 = a1[k] - a2[k];
            out_da[2 * j] = e0 * g[0] + e1 * g[2];
            out_da[2 * j + 1] = e0 * g[1] + e1 * g[3];
        }
    }
}

// One pixel of the backward pass. Writes this pixel's gradients to (u, v) into grad_rast[0..1] and
// to rast_db into grad_db[0..3] (grad_db may be null), and hands each gradient to a vertex
// attribute to add(corner, k, value), corner in {0, 1, 2} of the triangle (the launcher scatters).
template <typename T, typename Add>
SG_HD void interpolate_pixel_backward(const T* attr, const InterpolateDims& d, const int32_t* tri, int64_t p,
                                      const T* rast, const T* db, const int32_t* diff, const T* grad_out,
                                      const T* grad_out_da, T* grad_rast, T* grad_db, Add add) {
    const int t = (int)rast[4 * p + 3] - 1;
    if (t < 0) return;
    const int64_t b = d.attr_batched ? p / d.hw : 0;  // no division for shared attributes
    const T u = rast[4 * p], v = rast[4 * p + 1], w = T(1) - u - v;
    const T* a0 = attr_row(attr, d, b, tri[3 * t]);
    const T* a1 = attr_row(attr, d, b, tri[3 * t + 1]);
    const T* a2 = attr_row(attr, d, b, tri[3 * t + 2]);
    T gu = T(0), gv = T(0);
    for (int k = 0; k < d.A; ++k) {
        const T g = grad_out[k];
        if (g == T(0)) continue;
        add(0, k, g * u);
        add(1, k, g * v);
        add(2, k, g * w);
        gu += g * (a0[k] - a2[k]);
        gv += g * (a1[k] - a2[k]);
    }
    grad_rast[0] = gu;
    grad_rast[1] = gv;
    if (d.D > 0 && grad_out_da != nullptr) {
        const T* g = db + 4 * p;
        T gdb[4] = {T(0), T(0), T(0), T(0)};
        for (int j = 0; j < d.D; ++j) {
            const int k = diff[j];
            const T gx = grad_out_da[2 * j], gy = grad_out_da[2 * j + 1];
            if (gx == T(0) && gy == T(0)) continue;
            const T e0 = a0[k] - a2[k], e1 = a1[k] - a2[k];
            const T s0 = gx * g[0] + gy * g[1];  // d loss / d e0
            const T s1 = gx * g[2] + gy * g[3];  // d loss / d e1
            add(0, k, s0);
            add(1, k, s1);
            add(2, k, -(s0 + s1));
            gdb[0] += gx * e0;
            gdb[1] += gy * e0;
            gdb[2] += gx * e1;
            gdb[3] += gy * e1;
        }
        if (grad_db != nullptr)
            for (int c = 0; c < 4; ++c) grad_db[c] = gdb[c];
    }
}

}  // namespace mesh
}  // namespace scenegrad
