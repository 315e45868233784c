// CPU launcher of texture sampling and mip pyramids: output pixels (or texel rows) in parallel
// (OpenMP). The backward scatters texel gradients through a buffered ScatterAdd (pooled per-thread
// copies, or atomic adds into one), writes the coarse levels' sums into the gradient pyramid and
// folds them down to level 1, then writes level 0 once, its sums plus level 1's shares, and
// returns it. The per-element math is in texture.h.
#include <algorithm>
#include <vector>

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

#include "common/checks.h"
#include "common/outputs_cpu.h"
#include "common/scatter_cpu.h"
#include "mesh/ops.h"
#include "mesh/texture.h"

namespace scenegrad {
namespace mesh {

torch::Tensor texture_fwd_cpu(const torch::Tensor& tex, const torch::Tensor& coarse, const torch::Tensor& offsets,
                              const torch::Tensor& sizes, const torch::Tensor& uv, const torch::Tensor& uv_da,
                              const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary, int64_t filter) {
    const TextureDims d = check_texture_inputs(tex, coarse, offsets, sizes, uv, uv_da, bias, mask, boundary, filter);
    SG_CHECK_CPU(uv);
    auto out = torch::empty({uv.size(0), uv.size(1), uv.size(2), d.C}, uv.options());
    const bool mip = d.filter == kLinearMipLinear;
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_fwd_cpu", [&] {
        const scalar_t* tp = tex.data_ptr<scalar_t>();
        const scalar_t* cp = coarse.data_ptr<scalar_t>();
        const scalar_t* up = uv.data_ptr<scalar_t>();
        const scalar_t* dap = mip ? uv_da.data_ptr<scalar_t>() : nullptr;
        const scalar_t* biasp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
        scalar_t* op = out.data_ptr<scalar_t>();
        const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
        with_channels(d.C, [&](auto channels) {
            constexpr int kC = decltype(channels)::value;
            // Dynamic chunks: where the surface covers the image unevenly, static halves leave one
            // thread with most of the trilinear lookups.
            constexpr int64_t kChunk = 1024;
            SG_OMP(parallel for schedule(dynamic, 1))
            for (int64_t p0 = 0; p0 < d.pixels; p0 += kChunk) {
                // A pixel that repeats the previous pixel's lookup (the background a rasterizer leaves
                // at uv = 0, flat regions) copies its result instead of sampling again.
                int64_t prev = -1, prev_b = -1;
                scalar_t prev_u = 0, prev_v = 0, prev_lod = 0;
                for (int64_t p = p0; p < std::min(d.pixels, p0 + kChunk); ++p) {
                    if (mp && !mp[p]) {  // not sampled
                        for (int c = 0; c < d.C; ++c) op[p * d.C + c] = scalar_t(0);
                        continue;
                    }
                    int64_t b;
                    const scalar_t *level0, *rest;
                    pixel_pyramid(tp, cp, d, p, b, level0, rest);
                    const scalar_t lod = mip ? texture_lod(dap + 4 * p, d.sizes[0], d.sizes[1],
                                                           biasp ? biasp[p] : scalar_t(0), (scalar_t*)nullptr)
                                             : scalar_t(0);
                    const scalar_t u = up[2 * p], v = up[2 * p + 1];
                    scalar_t* o = op + p * d.C;
                    if (prev >= 0 && u == prev_u && v == prev_v && lod == prev_lod && b == prev_b) {
                        for (int c = 0; c < d.C; ++c) o[c] = op[prev * d.C + c];
                    } else {
                        texture_pixel<scalar_t, kC>(level0, rest, d, u, v, lod, o);
                        prev_u = u;
                        prev_v = v;
                        prev_lod = lod;
                        prev_b = b;
                    }
                    prev = p;
                }
            }
        });
    });
    return out;
}

// Adds to `row`, row y of mip level l - 1 (C channels), its share of the gradient of level l
// (`next`, the whole level); skips a row whose parent row got no gradient (texture regions nothing
// looked at). kC > 0 fixes the channel count at compile time.
template <typename T, int kC>
static void fold_row(T* row, const T* next, const MipLayout& m, int l, int64_t C_, int y) {
    const int64_t C = kC > 0 ? kC : C_;
    const int h = m.sizes[2 * l - 2], w = m.sizes[2 * l - 1], h2 = m.sizes[2 * l], w2 = m.sizes[2 * l + 1];
    const int py = h > 1 ? y >> 1 : y;
    if (py >= h2) return;  // a dropped odd last row
    const T* parent = next + (int64_t)py * w2 * C;
    int any = 0;  // no early exit: the test vectorises
    for (int64_t k = 0; k < (int64_t)w2 * C; ++k) any |= parent[k] != T(0);
    if (!any) return;
    if (h > 1 && w > 1) {
        for (int x2 = 0; x2 < w2; ++x2) {
            T* out = row + 2 * x2 * C;
            const T* in = parent + x2 * C;
            for (int64_t c = 0; c < C; ++c) {
                const T share = T(0.25) * in[c];
                out[c] += share;
                out[C + c] += share;
            }
        }
    } else {  // the 2x1 / 1x2 / 1x1 blocks
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < C; ++c) row[x * C + c] += mip_fold_texel(next, h, w, (int)C, x, y, c);
    }
}

// Adds the gradient of every mip level of g (one pyramid, C channels) into the level below, from
// the coarsest down to level `last`, in place.
template <typename T, int kC>
static void fold_levels(T* g, const MipLayout& m, int64_t C, int last) {
    for (int l = m.levels - 1; l > last; --l) {
        const int h = m.sizes[2 * l - 2], w = m.sizes[2 * l - 1];
        SG_OMP(parallel for schedule(static))
        for (int y = 0; y < h; ++y)
            fold_row<T, kC>(g + (m.offsets[l - 1] + (int64_t)y * w) * C, g + m.offsets[l] * C, m, l, C, y);
    }
}

// Splits [0, n) into `parts` contiguous ranges of about equal weight, from the weights of blocks of
// 2^kShift items; returns the range of `part`.
static std::pair<int64_t, int64_t> balanced_range(const std::vector<int64_t>& block_weight, int kShift, int64_t n,
                                                  int parts, int part) {
    int64_t total = 0;
    for (int64_t w : block_weight) total += w;
    auto boundary = [&](int k) -> int64_t {
        if (k <= 0) return 0;
        if (k >= parts) return n;
        const int64_t target = total * k / parts;
        int64_t sum = 0, b = 0;
        while (b < (int64_t)block_weight.size() && sum + block_weight[b] <= target) sum += block_weight[b++];
        return std::min(n, b << kShift);
    };
    return {boundary(part), boundary(part + 1)};
}

std::vector<torch::Tensor> texture_bwd_cpu(const torch::Tensor& tex, const torch::Tensor& coarse,
                                           const torch::Tensor& offsets, const torch::Tensor& sizes,
                                           const torch::Tensor& uv, const torch::Tensor& uv_da,
                                           const torch::Tensor& bias, const torch::Tensor& mask, int64_t boundary,
                                           int64_t filter, const torch::Tensor& grad_out) {
    const TextureDims d = check_texture_inputs(tex, coarse, offsets, sizes, uv, uv_da, bias, mask, boundary, filter);
    SG_CHECK_CPU(uv);
    const MipLayout m = mip_layout(offsets, sizes, d.total);
    const bool mip = d.filter == kLinearMipLinear;
    const int64_t Bt = tex.size(0), C = d.C;
    auto go = grad_out.contiguous();
    // Texel gradients of every level, in the whole pyramid's layout; level 0 is returned as is. Every
    // element is written once from the scatter's buffers (no zero fill, no second pass over level 0).
    // Pooled: a training loop frees last step's texture gradient (16 MiB for a 1024^2 RGB texture)
    // and would otherwise page-fault this one in again.
    auto grad_pyramid = pooled_empty({Bt, d.total, C}, tex.options());
    // Every pixel's entries are written below; pooled, as a training loop frees last step's.
    auto grad_uv = pooled_empty(uv.sizes(), uv.options());
    auto grad_uv_da = mip ? pooled_empty(uv_da.sizes(), uv_da.options()) : torch::Tensor();
    const bool with_lod = mip && bias.defined();  // d loss / d lod is the bias gradient, nothing else
    auto grad_lod = with_lod ? torch::empty(uv.sizes().slice(0, 3), uv.options()) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "texture_bwd_cpu", [&] {
        const scalar_t* tp = tex.data_ptr<scalar_t>();
        const scalar_t* cp = coarse.data_ptr<scalar_t>();
        const scalar_t* up = uv.data_ptr<scalar_t>();
        const scalar_t* dap = mip ? uv_da.data_ptr<scalar_t>() : nullptr;
        const scalar_t* biasp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
        const scalar_t* gp = go.data_ptr<scalar_t>();
        scalar_t* gup = grad_uv.data_ptr<scalar_t>();
        scalar_t* gdap = mip ? grad_uv_da.data_ptr<scalar_t>() : nullptr;
        scalar_t* glp = with_lod ? grad_lod.data_ptr<scalar_t>() : nullptr;
        scalar_t* gbp = grad_pyramid.data_ptr<scalar_t>();
        const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
        // Each thread takes one contiguous run of pixels (so the texels it scatters into, and so its
        // private gradient copy, overlap little with the other threads'), balanced by the incoming
        // gradient's nonzero entries (about C per pixel that has work): a surface covering the image
        // unevenly would otherwise leave one thread with most of the work.
        constexpr int kShift = 10;
        std::vector<int64_t> block_weight((d.pixels >> kShift) + 1, 0);
        SG_OMP(parallel for schedule(static))
        for (int64_t blk = 0; blk < (int64_t)block_weight.size(); ++blk) {
            const int64_t lo = blk << kShift, hi = std::min(d.pixels, lo + (int64_t(1) << kShift));
            int64_t n = (hi - lo) * C / 16;  // a pixel without gradient costs a little too
            for (int64_t k = lo * C; k < hi * C; ++k) n += gp[k] != scalar_t(0);
            block_weight[blk] = n;
        }
        ScatterAdd<scalar_t> scatter(grad_pyramid.numel());
        with_channels(d.C, [&](auto channels) {
            constexpr int kC = decltype(channels)::value;
            SG_OMP(parallel)
            {
#ifdef SCENEGRAD_OPENMP
                const int parts = omp_get_num_threads(), part = omp_get_thread_num();
#else
                const int parts = 1, part = 0;
#endif
                const auto [begin, end] = balanced_range(block_weight, kShift, d.pixels, parts, part);
                const auto local = scatter.local();
                // Runs of pixels whose incoming gradient is all zero (background composited away)
                // only write zeros.
                constexpr int64_t kRun = 64;
                for (int64_t p0 = begin; p0 < end; p0 += kRun) {
                    const int64_t p1 = std::min(end, p0 + kRun);
                    int any = 0;  // no early exit: the test vectorises
                    for (int64_t k = p0 * C; k < p1 * C; ++k) any |= gp[k] != scalar_t(0);
                    if (!any) {
                        std::fill(gup + 2 * p0, gup + 2 * p1, scalar_t(0));
                        if (mip) std::fill(gdap + 4 * p0, gdap + 4 * p1, scalar_t(0));
                        if (glp) std::fill(glp + p0, glp + p1, scalar_t(0));
                        continue;
                    }
                    for (int64_t p = p0; p < p1; ++p) {
                        if (mp && !mp[p]) {  // not sampled: no gradient
                            gup[2 * p] = gup[2 * p + 1] = scalar_t(0);
                            if (mip)
                                for (int k = 0; k < 4; ++k) gdap[4 * p + k] = scalar_t(0);
                            if (glp) glp[p] = scalar_t(0);
                            continue;
                        }
                        int64_t b;
                        const scalar_t *level0, *rest;
                        pixel_pyramid(tp, cp, d, p, b, level0, rest);
                        scalar_t* gtex = local.data() + b * d.total * C;
                        // Adds scale * g[0, C) to a texel's gradient (its touched-block flag set once).
                        auto add = [&](int64_t texel, scalar_t scale, const scalar_t* g) {
                            scalar_t* row = gtex + texel * C;
                            for (int64_t c = 0; c < (kC > 0 ? kC : C); ++c) local.add_unflagged(row + c, scale * g[c]);
                            local.flag(row, kC > 0 ? kC : C);
                        };
                        scalar_t dlod[4];
                        const scalar_t lod = mip ? texture_lod(dap + 4 * p, d.sizes[0], d.sizes[1],
                                                               biasp ? biasp[p] : scalar_t(0), dlod)
                                                 : scalar_t(0);
                        scalar_t gu, gv, gl;
                        texture_pixel_backward<scalar_t, kC>(level0, rest, d, up[2 * p], up[2 * p + 1], lod,
                                                             gp + p * C, gu, gv, gl, add);
                        gup[2 * p] = gu;
                        gup[2 * p + 1] = gv;
                        if (mip)
                            for (int k = 0; k < 4; ++k) gdap[4 * p + k] = gl * dlod[k];
                        if (glp) glp[p] = gl;
                    }
                }
            }
        });
        // The coarse levels' sums, folded down to level 1.
        const int64_t pyramid = d.total * C, coarse0 = d.texels0 * C;
        constexpr int64_t kRange = int64_t(1) << 16;
        const int64_t ranges = (pyramid - coarse0 + kRange - 1) / kRange;
        SG_OMP(parallel for schedule(static))
        for (int64_t r = 0; r < Bt * ranges; ++r) {
            const int64_t lo = (r / ranges) * pyramid + coarse0 + (r % ranges) * kRange;
            const int64_t hi = std::min(lo + kRange, (r / ranges + 1) * pyramid);
            scatter.take(gbp + lo, lo, hi);
        }
        with_channels(d.C, [&](auto channels) {
            constexpr int kC = decltype(channels)::value;
            for (int64_t b = 0; b < Bt; ++b) fold_levels<scalar_t, kC>(gbp + b * pyramid, m, C, 1);
            // Level 0, row by row: its own sums plus its share of level 1's gradient.
            const int h = m.sizes[0], w = m.sizes[1];
            SG_OMP(parallel for schedule(static))
            for (int64_t r = 0; r < Bt * h; ++r) {
                const int64_t b = r / h, lo = b * pyramid + (r % h) * w * C;
                scatter.take(gbp + lo, lo, lo + w * C);
                if (m.levels > 1)
                    fold_row<scalar_t, kC>(gbp + lo, gbp + b * pyramid + m.offsets[1] * C, m, 1, C, (int)(r % h));
            }
        });
        scatter.finish();
    });
    auto grad_tex = grad_pyramid.narrow(1, 0, d.texels0).view({Bt, m.sizes[0], m.sizes[1], C});
    return {grad_tex, grad_uv, grad_uv_da, grad_lod};
}

// Row y of a mip level (w2 texels) from the 2x2 blocks of the level below (rows r0 and r1), summed
// in mip_texel's order; kC > 0 fixes the channel count so the compiler vectorises the loop.
template <typename T, int kC>
static void mip_row_2x2(const T* r0, const T* r1, int w2, int64_t C_, T* out) {
    const int64_t C = kC > 0 ? kC : C_;
    for (int x = 0; x < w2; ++x)
        for (int64_t c = 0; c < C; ++c) {
            const int64_t i = 2 * x * C + c;
            out[x * C + c] = (((r0[i] + r0[i + C]) + r1[i]) + r1[i + C]) * T(0.25);
        }
}

torch::Tensor texture_mip_cpu(const torch::Tensor& tex, const torch::Tensor& offsets, const torch::Tensor& sizes) {
    SG_CHECK_CPU(tex);
    torch::Tensor coarse;
    const MipLayout m = mip_coarse_buffer(tex, offsets, sizes, coarse);
    const int64_t B = tex.size(0), C = tex.size(3), texels0 = tex.size(1) * tex.size(2), rest = coarse.size(1);
    AT_DISPATCH_FLOATING_TYPES(tex.scalar_type(), "texture_mip_cpu", [&] {
        const scalar_t* tp = tex.data_ptr<scalar_t>();
        scalar_t* cp = coarse.data_ptr<scalar_t>();
        with_channels((int)C, [&](auto channels) {
            constexpr int kC = decltype(channels)::value;
            for (int l = 1; l < m.levels; ++l) {
                const int h = m.sizes[2 * l - 2], w = m.sizes[2 * l - 1], h2 = m.sizes[2 * l], w2 = m.sizes[2 * l + 1];
                SG_OMP(parallel for schedule(static))
                for (int64_t row = 0; row < B * h2; ++row) {
                    const int64_t b = row / h2;
                    const int y = (int)(row % h2);
                    const scalar_t* prev =
                        l == 1 ? tp + b * texels0 * C : cp + (b * rest + m.offsets[l - 1] - texels0) * C;
                    scalar_t* out = cp + (b * rest + m.offsets[l] - texels0 + (int64_t)y * w2) * C;
                    if (h > 1 && w > 1) {
                        const scalar_t* r0 = prev + (int64_t)(2 * y) * w * C;
                        mip_row_2x2<scalar_t, kC>(r0, r0 + (int64_t)w * C, w2, C, out);
                    } else {
                        for (int x = 0; x < w2; ++x)
                            for (int c = 0; c < C; ++c) out[x * C + c] = mip_texel(prev, h, w, (int)C, x, y, c);
                    }
                }
            }
        });
    });
    return coarse;
}

}  // namespace mesh
}  // namespace scenegrad
