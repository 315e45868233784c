// Per-point and per-cell math of marching cubes (see render/iso/marching_cubes.py), shared by the
// CPU launcher (marching_cubes_cpu.cpp) and the CUDA launcher (marching_cubes.cu).
//
// Grid values [X, Y, Z] (flat index (i * Y + j) * Z + k). A point is inside when its value is below
// the level. Vertices live on crossed grid edges, numbered in (i, j, k, axis) order; the edge
// "(point p, axis a)" joins p and p + one step along a. Cell corners c = 0..7 sit at offsets
// (c & 1, c >> 1 & 1, c >> 2 & 1); cell edge e runs along axis e / 4 from corner mc_edge_corner(e)
// (the numbering of render/iso/tables.py). The triangle table ([256, M, 3] int8 cell-edge numbers
// and [256] int8 counts) comes from render/iso/tables.py as tensors.
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {
namespace iso {

struct McGrid {
    int64_t X, Y, Z;
    SG_HD int64_t index(int64_t i, int64_t j, int64_t k) const { return (i * Y + j) * Z + k; }
};

// Bit a set when the edge from (i, j, k) along axis a exists and is crossed.
template <typename T>
SG_HD int mc_point_edges(const T* v, const McGrid& g, int64_t i, int64_t j, int64_t k, T level) {
    const int64_t p = g.index(i, j, k);
    const bool in = v[p] < level;
    int bits = 0;
    if (i + 1 < g.X && (v[p + g.Y * g.Z] < level) != in) bits |= 1;
    if (j + 1 < g.Y && (v[p + g.Z] < level) != in) bits |= 2;
    if (k + 1 < g.Z && (v[p + 1] < level) != in) bits |= 4;
    return bits;
}

SG_HD int mc_popcount3(int bits) { return (bits & 1) + ((bits >> 1) & 1) + ((bits >> 2) & 1); }

// Case index of the cell whose lowest corner is (i, j, k) (requires i < X - 1, j < Y - 1, k < Z - 1).
template <typename T>
SG_HD int mc_cell_case(const T* v, const McGrid& g, int64_t i, int64_t j, int64_t k, T level) {
    int c = 0;
    for (int corner = 0; corner < 8; ++corner) {
        const int64_t p = g.index(i + (corner & 1), j + ((corner >> 1) & 1), k + ((corner >> 2) & 1));
        c |= (v[p] < level ? 1 : 0) << corner;
    }
    return c;
}

// Lower corner of cell edge e: edges 0-3 along i start at corners 0, 2, 4, 6; edges 4-7 along j at
// 0, 1, 4, 5; edges 8-11 along k at 0, 1, 2, 3.
SG_HD int mc_edge_corner(int e) {
    const int r = e & 3;
    return e < 4 ? 2 * r : (e < 8 ? ((r & 1) | ((r >> 1) << 2)) : r);
}

}  // namespace iso
}  // namespace scenegrad
