// CPU launcher of Gaussian rasterize_to_pixels (named gaussian_rasterize_* because the extension
// build names objects by file stem, and mesh/rasterize_cpu.cpp exists).
// Binning (serial, O(N + M)): per-tile counts, prefix sum, fill in Gaussian-index order. Then one
// parallel region over tiles (OpenMP, dynamic schedule): stable sort of the tile's list by depth
// (ties keep index order), tile-local copies of its Gaussians, and per pixel the alphas of 16
// Gaussians at a time in one vectorised loop followed by the scalar front-to-back composite. The
// backward walks each pixel back to front from final_T / last_ids, accumulates the tile's
// gradients locally and scatters them once per (tile, Gaussian) through ScatterAdd. Kernels are
// instantiated for D = 1, 3, 4 (accumulators in registers) and any D. The math is in rasterize.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/checks.h"
#include "common/lanes_cpu.h"
#include "common/scatter_cpu.h"
#include "common/tiles.h"
#include "gaussians/rasterize.h"
#include "gaussians/rasterize_ops.h"

namespace scenegrad {
namespace gaussians {
namespace {

constexpr int kChunk = 16;  // Gaussians whose alphas are evaluated together (vectorised) per pixel
constexpr int kSub = 4;     // tiles are composited in kSub x kSub blocks, each with its own short list

// Tile-local copies of a tile's Gaussians: splats (for gradients), the same fields as arrays (for
// the vectorised alphas), and a dense colour block.
template <typename T>
struct TileSplats {
    std::vector<Splat<T>> splats;
    std::vector<T> mx, my, a, b, c, op, cut;
    std::vector<T> colors;  // [n, D]

    void load(const T* means2d, const T* conics, const T* opacities, const T* colors_in, const int32_t* ids,
              int64_t n, int64_t cam_base, int D) {
        splats.resize(n);
        for (auto* v : {&mx, &my, &a, &b, &c, &op, &cut}) v->resize(n);
        colors.resize(n * D);
        for (int64_t j = 0; j < n; ++j) {
            const int64_t cg = cam_base + ids[j];
            const Splat<T> s = load_splat(means2d, conics, opacities, cg);
            splats[j] = s;
            mx[j] = s.mx;
            my[j] = s.my;
            a[j] = s.a;
            b[j] = s.b;
            c[j] = s.c;
            op[j] = s.opacity;
            cut[j] = s.sigma_cut;
            const T* src = colors_in + cg * D;
            for (int k = 0; k < D; ++k) colors[j * D + k] = src[k];
        }
    }

    // Pixel-centre boxes outside which each Gaussian fails the alpha test (splat_extent); an
    // unbounded one gets an infinite box.
    std::vector<T> x_lo, x_hi, y_lo, y_hi;

    void compute_bounds() {
        const int64_t n = (int64_t)splats.size();
        for (auto* v : {&x_lo, &x_hi, &y_lo, &y_hi}) v->resize(n);
        for (int64_t j = 0; j < n; ++j) {
            T ex, ey;
            if (!splat_extent(splats[j], ex, ey)) ex = ey = std::numeric_limits<T>::infinity();
            x_lo[j] = mx[j] - ex;
            x_hi[j] = mx[j] + ex;
            y_lo[j] = my[j] - ey;
            y_hi[j] = my[j] + ey;
        }
    }

    // idx = the Gaussians (in order) whose box meets the pixel centres [px0, px1] x [py0, py1].
    void select(T px0, T py0, T px1, T py1, std::vector<int32_t>& idx) const {
        const int64_t n = (int64_t)x_lo.size();
        idx.resize(n);
        int64_t count = 0;
        for (int64_t j = 0; j < n; ++j) {  // branch-free: the test is a coin flip for many Gaussians
            idx[count] = (int32_t)j;
            count += (x_hi[j] >= px0) & (x_lo[j] <= px1) & (y_hi[j] >= py0) & (y_lo[j] <= py1);
        }
        idx.resize(count);
    }

    // This = the Gaussians idx of src (fields for alphas and colours; no splats or bounds).
    void gather(const TileSplats& src, const std::vector<int32_t>& idx, int D) {
        const size_t n = idx.size();
        for (auto* v : {&mx, &my, &a, &b, &c, &op, &cut}) v->resize(n);
        colors.resize(n * D);
        for (size_t q = 0; q < n; ++q) {
            const int32_t j = idx[q];
            mx[q] = src.mx[j];
            my[q] = src.my[j];
            a[q] = src.a[j];
            b[q] = src.b[j];
            c[q] = src.c[j];
            op[q] = src.op[j];
            cut[q] = src.cut[j];
            for (int k = 0; k < D; ++k) colors[q * D + k] = src.colors[j * D + k];
        }
    }

    // raw[q] = opacity exp(-sigma) before the 0.999 clamp (0 where the Gaussian is skipped) and
    // vis[q] = exp(-sigma) of Gaussians j0 + q, q < m, at pixel centre (px, py): splat_alpha of
    // rasterize.h as one vectorisable loop (GCC will not vectorise the clamp, a float min without
    // -ffast-math; min(0.999, raw) >= 1/255 iff raw >= 1/255, so callers clamp afterwards).
    void alphas(int64_t j0, int m, T px, T py, T* raw, T* vis) const {
        const T *MX = mx.data() + j0, *MY = my.data() + j0, *A = a.data() + j0, *B = b.data() + j0;
        const T *C = c.data() + j0, *OP = op.data() + j0, *CUT = cut.data() + j0;
        SG_OMP(simd)
        for (int q = 0; q < m; ++q) {
            const T dx = MX[q] - px, dy = MY[q] - py;
            const T sigma = T(0.5) * (A[q] * dx * dx + C[q] * dy * dy) + B[q] * dx * dy;
            const T v = lane_exp(-sigma);
            const T r = OP[q] * v;
            const bool keep = (sigma >= T(0)) & (sigma <= CUT[q]) & (r >= alpha_min<T>());
            raw[q] = keep ? r : T(0);
            vis[q] = v;
        }
    }
};

// Below about 64k (Gaussian, pixel) pairs a parallel region costs more than it saves.
inline bool worth_parallel(int64_t M, const RasterDims& d, int64_t n_tiles) {
    return n_tiles > 1 && M * d.tile * d.tile > (int64_t(1) << 16);
}

template <typename T>
struct FwdArgs {
    RasterDims d;
    const int64_t* offsets;
    int32_t* ids;
    const T *depths, *means2d, *conics, *colors, *opacities, *backgrounds;
    T *out_colors, *out_alphas, *final_T;
    int32_t* last_ids;
};

// Sorts tile t's list by depth and composites its pixels. DC > 0: the channel count, known at
// compile time (accumulators in registers); DC = 0: d.D.
template <typename T, int DC>
void forward_tile(const FwdArgs<T>& g, int64_t t) {
    const RasterDims& d = g.d;
    const int D = DC > 0 ? DC : d.D;
    const TileCoords tc = tile_coords(d, t);
    const int64_t start = g.offsets[t], n = g.offsets[t + 1] - start;
    const T* cam_depths = g.depths + (int64_t)tc.cam * d.N;
    std::stable_sort(g.ids + start, g.ids + start + n,
                     [cam_depths](int32_t i, int32_t j) { return cam_depths[i] < cam_depths[j]; });
    const T* bg = g.backgrounds ? g.backgrounds + (int64_t)tc.cam * D : nullptr;
    TileSplats<T> local, sub;
    local.load(g.means2d, g.conics, g.opacities, g.colors, g.ids + start, n, (int64_t)tc.cam * d.N, D);
    local.compute_bounds();
    std::vector<int32_t> idx;
    std::vector<T> acc_heap(DC > 0 ? 0 : D);
    T acc_fixed[DC > 0 ? DC : 1];
    T* acc = DC > 0 ? acc_fixed : acc_heap.data();
    T al[kChunk], vis[kChunk];
    for (int sy = tc.y0; sy < tc.y1; sy += kSub) {
        for (int sx = tc.x0; sx < tc.x1; sx += kSub) {
            const int ex = std::min(tc.x1, sx + kSub), ey = std::min(tc.y1, sy + kSub);
            local.select(T(sx) + T(0.5), T(sy) + T(0.5), T(ex) - T(0.5), T(ey) - T(0.5), idx);
            sub.gather(local, idx, D);
            const int64_t ns = (int64_t)idx.size();
            for (int y = sy; y < ey; ++y) {
                for (int x = sx; x < ex; ++x) {
                    const int64_t pix = ((int64_t)tc.cam * d.H + y) * d.W + x;
                    const T px = T(x) + T(0.5), py = T(y) + T(0.5);
                    for (int k = 0; k < D; ++k) acc[k] = T(0);
                    T Tr = T(1);
                    int64_t last = -1;
                    bool done = false;
                    for (int64_t j0 = 0; j0 < ns && !done; j0 += kChunk) {
                        const int m = (int)std::min<int64_t>(kChunk, ns - j0);
                        sub.alphas(j0, m, px, py, al, vis);
                        // Branch-free over skipped Gaussians (alpha 0 leaves Tr and acc exactly as they are):
                        // about half of them are skipped, in no predictable pattern.
                        for (int q = 0; q < m; ++q) {
                            const T alpha = std::min(alpha_max<T>(), al[q]);
                            const T next_T = Tr * (T(1) - alpha);
                            if (next_T < t_min<T>()) {
                                done = true;
                                break;
                            }
                            const T w = alpha * Tr;
                            const T* c = sub.colors.data() + (j0 + q) * D;
                            for (int k = 0; k < D; ++k) acc[k] += w * c[k];
                            Tr = next_T;
                            last = al[q] > T(0) ? (int64_t)idx[j0 + q] : last;
                        }
                    }
                    T* out = g.out_colors + pix * D;
                    for (int k = 0; k < D; ++k) out[k] = acc[k] + (bg ? Tr * bg[k] : T(0));
                    g.out_alphas[pix] = T(1) - Tr;
                    g.final_T[pix] = Tr;
                    g.last_ids[pix] = last < 0 ? -1 : (int32_t)(start + last);
                }
            }
        }
    }
}

template <typename T>
struct BwdArgs {
    RasterDims d;
    const int64_t* offsets;
    const int32_t* ids;
    const T *means2d, *conics, *colors, *opacities, *backgrounds, *final_T;
    const int32_t* last_ids;
    const T *v_colors, *v_alphas;
    ScatterAdd<T>* scatter;
    int row;  // gradient row per Gaussian: (mx, my, a, b, c, opacity, colour[D])
};

// Walks tile t's pixels back to front, accumulates its Gaussians' gradients locally, then scatters
// them once per Gaussian. DC as in forward_tile.
template <typename T, int DC>
void backward_tile(const BwdArgs<T>& g, int64_t t) {
    const RasterDims& d = g.d;
    const int D = DC > 0 ? DC : d.D;
    const int64_t start = g.offsets[t], n = g.offsets[t + 1] - start;
    if (n == 0) return;
    const TileCoords tc = tile_coords(d, t);
    const T* bg = g.backgrounds ? g.backgrounds + (int64_t)tc.cam * D : nullptr;
    const int64_t cam_base = (int64_t)tc.cam * d.N;
    TileSplats<T> local, sub;
    local.load(g.means2d, g.conics, g.opacities, g.colors, g.ids + start, n, cam_base, D);
    local.compute_bounds();
    std::vector<int32_t> idx;
    std::vector<SplatGrad<T>> grads(n, SplatGrad<T>{});
    std::vector<T> grad_colors(n * D, T(0));
    std::vector<T> S_heap(DC > 0 ? 0 : D);
    T S_fixed[DC > 0 ? DC : 1];
    T* S = DC > 0 ? S_fixed : S_heap.data();
    T al[kChunk], vis[kChunk];
    for (int sy = tc.y0; sy < tc.y1; sy += kSub) {
        for (int sx = tc.x0; sx < tc.x1; sx += kSub) {
            const int ex = std::min(tc.x1, sx + kSub), ey = std::min(tc.y1, sy + kSub);
            bool any = false;  // a pixel of this block composited something
            for (int y = sy; y < ey && !any; ++y)
                for (int x = sx; x < ex; ++x) any |= g.last_ids[((int64_t)tc.cam * d.H + y) * d.W + x] >= 0;
            if (!any) continue;
            local.select(T(sx) + T(0.5), T(sy) + T(0.5), T(ex) - T(0.5), T(ey) - T(0.5), idx);
            sub.gather(local, idx, D);
            for (int y = sy; y < ey; ++y) {
                for (int x = sx; x < ex; ++x) {
                    const int64_t pix = ((int64_t)tc.cam * d.H + y) * d.W + x;
                    const int64_t last = (int64_t)g.last_ids[pix] - start;
                    if (last < 0) continue;
                    const T* v_c = g.v_colors + pix * D;
                    const T T_final = g.final_T[pix];
                    T k_final = -g.v_alphas[pix];
                    if (bg)
                        for (int k = 0; k < D; ++k) k_final += v_c[k] * bg[k];
                    const T px = T(x) + T(0.5), py = T(y) + T(0.5);
                    for (int k = 0; k < D; ++k) S[k] = T(0);
                    T Tr = T_final;
                    // the sub-list position of the pixel's last Gaussian (idx is increasing)
                    const int64_t top = (int64_t)(std::upper_bound(idx.begin(), idx.end(), (int32_t)last) - idx.begin());
                    for (int64_t hi = top - 1; hi >= 0; hi -= kChunk) {
                        const int64_t j0 = std::max<int64_t>(0, hi - kChunk + 1);
                        const int m = (int)(hi - j0 + 1);
                        sub.alphas(j0, m, px, py, al, vis);
                        for (int q = m - 1; q >= 0; --q) {
                            if (al[q] == T(0)) continue;
                            const T alpha = std::min(alpha_max<T>(), al[q]);
                            const int64_t j = idx[j0 + q];
                            const Splat<T>& s = local.splats[j];
                            T* gc = grad_colors.data() + j * D;
                            const T v_alpha = composite_backward_step(alpha, sub.colors.data() + (j0 + q) * D, D, v_c,
                                                                      T_final, k_final, Tr, S,
                                                                      [gc](int k, T v) { gc[k] += v; });
                            splat_alpha_backward(s, s.mx - px, s.my - py, vis[q], v_alpha, grads[j]);
                        }
                    }
                }
            }
        }
    }
    const auto adder = g.scatter->local();
    T* target = adder.data();
    for (int64_t j = 0; j < n; ++j) {
        T* r = target + (cam_base + g.ids[start + j]) * g.row;
        const SplatGrad<T>& gr = grads[j];
        adder.add(r, gr.mx);
        adder.add(r + 1, gr.my);
        adder.add(r + 2, gr.a);
        adder.add(r + 3, gr.b);
        adder.add(r + 4, gr.c);
        adder.add(r + 5, gr.opacity);
        for (int k = 0; k < D; ++k) adder.add(r + 6 + k, grad_colors[j * D + k]);
    }
}

}  // namespace

std::vector<torch::Tensor> rasterize_to_pixels_fwd_cpu(const torch::Tensor& means2d, const torch::Tensor& conics,
                                                       const torch::Tensor& colors, const torch::Tensor& opacities,
                                                       const torch::Tensor& depths, const torch::Tensor& radii,
                                                       const torch::Tensor& backgrounds, int64_t width,
                                                       int64_t height, int64_t tile_size) {
    const RasterDims d = check_raster_inputs(means2d, conics, colors, opacities, backgrounds, width, height, tile_size);
    check_raster_sort_inputs(d, depths, radii, means2d);
    SG_CHECK_CPU(means2d);
    const int64_t per_cam = (int64_t)d.tiles_x * d.tiles_y;
    const int64_t n_tiles = d.C * per_cam;
    const int64_t CN = (int64_t)d.C * d.N;
    auto out_colors = torch::empty({d.C, d.H, d.W, d.D}, colors.options());
    auto out_alphas = torch::empty({d.C, d.H, d.W, 1}, colors.options());
    auto final_T = torch::empty({d.C, d.H, d.W}, colors.options());
    auto last_ids = torch::empty({d.C, d.H, d.W}, radii.options());
    auto tile_offsets = torch::zeros({n_tiles + 1}, radii.options().dtype(torch::kLong));
    torch::Tensor flatten_ids;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_to_pixels_fwd_cpu", [&] {
        const scalar_t* mp = means2d.data_ptr<scalar_t>();
        const scalar_t* cp = conics.data_ptr<scalar_t>();
        const scalar_t* colp = colors.data_ptr<scalar_t>();
        const scalar_t* op = opacities.data_ptr<scalar_t>();
        const scalar_t* dp = depths.data_ptr<scalar_t>();
        const int32_t* rp = radii.data_ptr<int32_t>();
        const scalar_t* bgp = d.has_bg ? backgrounds.data_ptr<scalar_t>() : nullptr;

        // 1. Tile rectangles, per-tile counts, prefix sum.
        std::vector<int32_t> rects(4 * CN);
        for (int64_t cg = 0; cg < CN; ++cg) {
            int32_t* r = rects.data() + 4 * cg;
            tile_rect(mp[2 * cg], mp[2 * cg + 1], rp[cg], d, r[0], r[1], r[2], r[3]);
        }
        int64_t* offsets = tile_offsets.data_ptr<int64_t>();
        for (int64_t cg = 0; cg < CN; ++cg) {
            const int32_t* r = rects.data() + 4 * cg;
            const int64_t base = (cg / d.N) * per_cam;
            for (int ty = r[2]; ty < r[3]; ++ty)
                for (int tx = r[0]; tx < r[1]; ++tx) ++offsets[base + (int64_t)ty * d.tiles_x + tx + 1];
        }
        for (int64_t t = 0; t < n_tiles; ++t) offsets[t + 1] += offsets[t];
        const int64_t M = offsets[n_tiles];

        // 2. Fill in Gaussian-index order, then sort each tile by depth (stable: ties by index).
        flatten_ids = torch::empty({M}, radii.options());
        int32_t* ids = flatten_ids.data_ptr<int32_t>();
        {
            std::vector<int64_t> cursor(offsets, offsets + n_tiles);
            for (int64_t cg = 0; cg < CN; ++cg) {
                const int32_t* r = rects.data() + 4 * cg;
                const int64_t base = (cg / d.N) * per_cam;
                const int32_t g = (int32_t)(cg % d.N);
                for (int ty = r[2]; ty < r[3]; ++ty)
                    for (int tx = r[0]; tx < r[1]; ++tx) ids[cursor[base + (int64_t)ty * d.tiles_x + tx]++] = g;
            }
        }

        // 3. Per tile (in parallel, one region): sort, then composite front to back.
        const FwdArgs<scalar_t> args{d,  offsets, ids, dp, mp, cp, colp, op, bgp,
                                     out_colors.data_ptr<scalar_t>(), out_alphas.data_ptr<scalar_t>(),
                                     final_T.data_ptr<scalar_t>(), last_ids.data_ptr<int32_t>()};
        const bool parallel = worth_parallel(M, d, n_tiles);
        SG_OMP(parallel for schedule(dynamic, 1) if(parallel))
        for (int64_t t = 0; t < n_tiles; ++t) {
            switch (d.D) {
                case 1: forward_tile<scalar_t, 1>(args, t); break;
                case 3: forward_tile<scalar_t, 3>(args, t); break;
                case 4: forward_tile<scalar_t, 4>(args, t); break;
                default: forward_tile<scalar_t, 0>(args, t);
            }
        }
    });
    return {out_colors, out_alphas, tile_offsets, flatten_ids, final_T, last_ids};
}

std::vector<torch::Tensor> rasterize_to_pixels_bwd_cpu(
    const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
    const torch::Tensor& opacities, const torch::Tensor& backgrounds, int64_t width, int64_t height,
    int64_t tile_size, const torch::Tensor& tile_offsets, const torch::Tensor& flatten_ids,
    const torch::Tensor& final_T, const torch::Tensor& last_ids, const torch::Tensor& v_colors,
    const torch::Tensor& v_alphas) {
    const RasterDims d = check_raster_inputs(means2d, conics, colors, opacities, backgrounds, width, height, tile_size);
    check_raster_saved(d, tile_offsets, flatten_ids, final_T, last_ids, v_colors, v_alphas, means2d);
    SG_CHECK_CPU(means2d);
    const int64_t per_cam = (int64_t)d.tiles_x * d.tiles_y;
    const int64_t n_tiles = d.C * per_cam;
    // One gradient row per Gaussian: (mx, my, a, b, c, opacity, colour[D]); split at the end.
    const int row = 6 + d.D;
    auto grads_all = torch::zeros({d.C, d.N, row}, means2d.options());
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_to_pixels_bwd_cpu", [&] {
        const scalar_t* mp = means2d.data_ptr<scalar_t>();
        const scalar_t* cp = conics.data_ptr<scalar_t>();
        const scalar_t* colp = colors.data_ptr<scalar_t>();
        const scalar_t* op = opacities.data_ptr<scalar_t>();
        const scalar_t* bgp = d.has_bg ? backgrounds.data_ptr<scalar_t>() : nullptr;
        const int64_t* offsets = tile_offsets.data_ptr<int64_t>();
        const int32_t* ids = flatten_ids.data_ptr<int32_t>();
        const scalar_t* ftp = final_T.data_ptr<scalar_t>();
        const int32_t* lp = last_ids.data_ptr<int32_t>();
        const scalar_t* vcp = v_colors.data_ptr<scalar_t>();
        const scalar_t* vap = v_alphas.data_ptr<scalar_t>();
        // Serial runs add straight into the target (ScatterAdd's thread-0 buffer) and skip the reduction.
        ScatterAdd<scalar_t> scatter(grads_all.data_ptr<scalar_t>(), grads_all.numel());
        const bool parallel = worth_parallel(flatten_ids.numel(), d, n_tiles);
        const BwdArgs<scalar_t> args{d, offsets, ids, mp, cp, colp, op, bgp, ftp, lp, vcp, vap, &scatter, row};
        SG_OMP(parallel for schedule(dynamic, 1) if(parallel))
        for (int64_t t = 0; t < n_tiles; ++t) {
            switch (d.D) {
                case 1: backward_tile<scalar_t, 1>(args, t); break;
                case 3: backward_tile<scalar_t, 3>(args, t); break;
                case 4: backward_tile<scalar_t, 4>(args, t); break;
                default: backward_tile<scalar_t, 0>(args, t);
            }
        }
        if (parallel) scatter.reduce();
    });
    auto v_means2d = grads_all.narrow(2, 0, 2).contiguous();
    auto v_conics = grads_all.narrow(2, 2, 3).contiguous();
    auto v_opacities = grads_all.select(2, 5).contiguous();
    auto v_colors_g = grads_all.narrow(2, 6, d.D).contiguous();
    return {v_means2d, v_conics, v_colors_g, v_opacities};
}

}  // namespace gaussians
}  // namespace scenegrad
