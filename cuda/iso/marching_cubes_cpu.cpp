// CPU launcher of marching cubes, bit-parallel (in the spirit of Flying Edges): one pass packs the
// inside bits of the grid, 64 values of a row (fixed i, j) per word, and counts non-finite values;
// everything after works on words. Per row, the crossed edges along i, j and k are the XOR of a
// row with its neighbour rows or with itself shifted by one, and the cells with a surface are the
// bits where any of their 8 corners differ, so empty space costs a few word operations per 64
// cells. Pass 1 counts each row's vertices and triangles; prefix sums give every row its output
// offsets; pass 2 writes the vertices (edges) and the triangles, a vertex id being its row's
// offset plus popcounts of the row's crossing masks below it (per-word prefix counts from pass 1). Rows are spread over threads by
// slab (OpenMP). Output order is the reference's; the cell-edge numbering is marching_cubes.h's.
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/checks.h"
#include "iso/marching_cubes.h"
#include "iso/marching_cubes_ops.h"

namespace scenegrad {
namespace iso {
namespace {

using Word = uint64_t;

// Packed inside bits: row (i, j) is W words, bit k of the row = values[i, j, k] < level.
struct Bits {
    std::vector<Word> data;
    int64_t X, Y, Z, W;

    const Word* row(int64_t i, int64_t j) const { return data.data() + (i * Y + j) * W; }
    Word word(int64_t i, int64_t j, int64_t w) const { return row(i, j)[w]; }
    // Mask of the bits of word w that are grid points (k < Z), or edges along k (k < Z - 1).
    Word points(int64_t w) const { return mask_below(Z - 64 * w); }
    Word k_edges(int64_t w) const { return mask_below(Z - 1 - 64 * w); }
    static Word mask_below(int64_t n) { return n >= 64 ? ~Word(0) : (n <= 0 ? Word(0) : (Word(1) << n) - 1); }
    bool bit(int64_t i, int64_t j, int64_t k) const { return (word(i, j, k >> 6) >> (k & 63)) & 1; }

    // Crossing masks of row (i, j), word w: edges along i, j and k leaving each point.
    void crossings(int64_t i, int64_t j, int64_t w, Word& xc, Word& yc, Word& zc) const {
        const Word b = word(i, j, w);
        xc = i + 1 < X ? (b ^ word(i + 1, j, w)) & points(w) : 0;
        yc = j + 1 < Y ? (b ^ word(i, j + 1, w)) & points(w) : 0;
        const Word next = w + 1 < W ? word(i, j, w + 1) : 0;
        zc = (b ^ ((b >> 1) | (next << 63))) & k_edges(w);
    }

    // Cells (i, j, k) of word w with corners on both sides (requires i + 1 < X, j + 1 < Y).
    Word active_cells(int64_t i, int64_t j, int64_t w) const {
        const Word b = word(i, j, w), d = (b ^ word(i, j + 1, w)) | (b ^ word(i + 1, j, w)) | (b ^ word(i + 1, j + 1, w));
        const Word next = w + 1 < W ? word(i, j, w + 1) : 0;
        const Word dn = w + 1 < W ? (next ^ word(i, j + 1, w + 1)) | (next ^ word(i + 1, j, w + 1)) |
                                        (next ^ word(i + 1, j + 1, w + 1))
                                  : 0;
        const Word zc = b ^ ((b >> 1) | (next << 63));
        return (d | (d >> 1) | (dn << 63) | zc) & k_edges(w);
    }

    int cell_case(int64_t i, int64_t j, int64_t k) const {
        int c = 0;
        for (int corner = 0; corner < 8; ++corner)
            c |= (bit(i + (corner & 1), j + ((corner >> 1) & 1), k + ((corner >> 2) & 1)) ? 1 : 0) << corner;
        return c;
    }

    // Index, within row (i, j), of the vertex on the edge (k, axis): vertices are ordered by
    // (k, axis), so it counts every crossing below k and the lower axes at k. ``before`` holds,
    // per row and word, the row's crossings in the words before it.
    int64_t rank(const int32_t* before, int64_t i, int64_t j, int64_t k, int axis) const {
        const int64_t wk = k >> 6;
        Word xc, yc, zc;
        crossings(i, j, wk, xc, yc, zc);
        const Word below = mask_below(k & 63);
        int64_t n = before[(i * Y + j) * W + wk] + std::popcount(xc & below) + std::popcount(yc & below) +
                    std::popcount(zc & below);
        const int at = k & 63;
        if (axis >= 1) n += (xc >> at) & 1;
        if (axis >= 2) n += (yc >> at) & 1;
        return n;
    }
};

// Packs rows of values into inside bits, 64 at a time: the comparisons go to bytes in a loop the
// compiler vectorises, then eight bytes become eight bits with one multiplication. Returns the
// number of non-finite values.
static_assert(std::endian::native == std::endian::little, "pack() reads eight bytes as one little-endian word");

template <typename T>
int64_t pack(const T* v, T level, Bits& bits, bool parallel) {
    int64_t bad = 0;
    const int64_t rows = bits.X * bits.Y, Z = bits.Z, W = bits.W;
    SG_OMP(parallel for schedule(static) reduction(+ : bad) if(parallel))
    for (int64_t r = 0; r < rows; ++r) {
        const T* src = v + r * Z;
        Word* dst = bits.data.data() + r * W;
        alignas(64) uint8_t lt[64];
        for (int64_t w = 0; w < W; ++w) {
            const int64_t k0 = 64 * w, n = std::min<int64_t>(64, Z - k0);
            int64_t nonfinite = 0;
            for (int64_t k = 0; k < n; ++k) {
                const T x = src[k0 + k];
                lt[k] = x < level ? 1 : 0;
                nonfinite += (x - x == x - x) ? 0 : 1;  // NaN and inf give NaN
            }
            for (int64_t k = n; k < 64; ++k) lt[k] = 0;
            Word word = 0;
            for (int byte = 0; byte < 8; ++byte) {
                Word b;
                std::memcpy(&b, lt + 8 * byte, 8);
                word |= ((b * 0x0102040810204080ULL) >> 56) << (8 * byte);
            }
            dst[w] = word;
            bad += nonfinite;
        }
    }
    return bad;
}

}  // namespace

std::vector<torch::Tensor> marching_cubes_fwd_cpu(const torch::Tensor& values, double level,
                                                  const torch::Tensor& tris, const torch::Tensor& counts) {
    check_marching_cubes_inputs(values, tris, counts);
    SG_CHECK_CPU(values);
    Bits bits;
    bits.X = values.size(0);
    bits.Y = values.size(1);
    bits.Z = values.size(2);
    bits.W = (bits.Z + 63) / 64;
    const int64_t X = bits.X, Y = bits.Y, Z = bits.Z, W = bits.W;
    bits.data.assign(X * Y * W, 0);
    const bool parallel = X * Y * Z >= (int64_t(1) << 16);  // threads pay off from about 40^3
    int64_t bad = 0;
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "marching_cubes_pack_cpu", [&] {
        bad = pack(values.data_ptr<scalar_t>(), (scalar_t)level, bits, parallel);
    });
    auto i64 = values.options().dtype(torch::kLong);
    const torch::Tensor non_finite = torch::full({}, bad, i64);
    if (bad > 0) return {torch::empty({0, 2}, i64), torch::empty({0, 3}, values.options().dtype(torch::kInt)),
                         non_finite};

    const int M = (int)tris.size(1);
    const int8_t* table = tris.data_ptr<int8_t>();
    const int8_t* ntri = counts.data_ptr<int8_t>();
    const int64_t rows = X * Y;
    std::vector<int64_t> row_v(rows + 1, 0), row_t(rows + 1, 0);
    std::vector<int32_t> before(rows * W);  // crossings of a row in its words before each word
    SG_OMP(parallel for schedule(dynamic, 4) if(parallel))
    for (int64_t i = 0; i < X; ++i)
        for (int64_t j = 0; j < Y; ++j) {
            int64_t nv = 0, nt = 0;
            const bool cells = i + 1 < X && j + 1 < Y;
            for (int64_t w = 0; w < W; ++w) {
                Word xc, yc, zc;
                bits.crossings(i, j, w, xc, yc, zc);
                before[(i * Y + j) * W + w] = (int32_t)nv;
                nv += std::popcount(xc) + std::popcount(yc) + std::popcount(zc);
                for (Word a = cells ? bits.active_cells(i, j, w) : 0; a != 0; a &= a - 1)
                    nt += ntri[bits.cell_case(i, j, 64 * w + std::countr_zero(a))];
            }
            row_v[i * Y + j + 1] = nv;
            row_t[i * Y + j + 1] = nt;
        }
    for (int64_t r = 0; r < rows; ++r) {
        row_v[r + 1] += row_v[r];
        row_t[r + 1] += row_t[r];
    }
    TORCH_CHECK(row_v[rows] < (int64_t(1) << 31), "marching_cubes: more than 2^31 vertices");
    auto edges = torch::empty({row_v[rows], 2}, i64);
    auto faces = torch::empty({row_t[rows], 3}, values.options().dtype(torch::kInt));
    int64_t* e = edges.data_ptr<int64_t>();
    int32_t* f = faces.data_ptr<int32_t>();
    const int64_t strides[3] = {Y * Z, Z, 1};
    SG_OMP(parallel for schedule(dynamic, 4) if(parallel))
    for (int64_t i = 0; i < X; ++i)
        for (int64_t j = 0; j < Y; ++j) {
            int64_t nv = row_v[i * Y + j], nt = row_t[i * Y + j];
            const bool cells = i + 1 < X && j + 1 < Y;
            for (int64_t w = 0; w < W; ++w) {
                Word c[3];
                bits.crossings(i, j, w, c[0], c[1], c[2]);
                for (Word any = c[0] | c[1] | c[2]; any != 0; any &= any - 1) {
                    const int at = std::countr_zero(any);
                    const int64_t p = (i * Y + j) * Z + 64 * w + at;
                    for (int a = 0; a < 3; ++a)
                        if ((c[a] >> at) & 1) {
                            e[2 * nv] = p;
                            e[2 * nv + 1] = p + strides[a];
                            ++nv;
                        }
                }
                for (Word act = cells ? bits.active_cells(i, j, w) : 0; act != 0; act &= act - 1) {
                    const int64_t k = 64 * w + std::countr_zero(act);
                    const int cs = bits.cell_case(i, j, k);
                    for (int t = 0; t < ntri[cs]; ++t, ++nt)
                        for (int m = 0; m < 3; ++m) {
                            const int edge = table[(cs * M + t) * 3 + m];
                            const int corner = mc_edge_corner(edge);
                            const int64_t ri = i + (corner & 1), rj = j + ((corner >> 1) & 1);
                            const int64_t kk = k + ((corner >> 2) & 1);
                            f[3 * nt + m] = (int32_t)(row_v[ri * Y + rj] + bits.rank(before.data(), ri, rj, kk, edge / 4));
                        }
                }
            }
        }
    return {edges, faces, non_finite};
}

}  // namespace iso
}  // namespace scenegrad
