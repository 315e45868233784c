// CPU launcher of the rasterizer: one view at a time, triangles binned into 16x16 tiles, tiles
// shaded in parallel (OpenMP), each tile keeping its own depth buffer. The per-pixel math is in
// rasterize.h.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "common/checks.h"
#include "common/outputs_cpu.h"
#include "common/scatter_cpu.h"
#include "mesh/ops.h"
#include "mesh/rasterize.h"

namespace scenegrad {
namespace mesh {
namespace {

constexpr int kTile = 16;

// One view: pos [V, 4] to rast and db [H, W, 4].
template <typename T>
void forward(const T* pos, const int32_t* tri, int NT, int H, int W, T* rast, T* db) {
    // Set-ups are plain data (76 bytes a triangle in float32: 114 MB for 1.5M triangles), in pooled
    // memory: freshly allocated, the kernel page-faults and clears all of it again on every call.
    const torch::Tensor setup_memory =
        pooled_empty({std::max<int64_t>(1, (int64_t)NT * (int64_t)sizeof(TriSetup<T>))}, at::kByte);
    TriSetup<T>* const setups = reinterpret_cast<TriSetup<T>*>(setup_memory.data_ptr<uint8_t>());
    std::unique_ptr<uint8_t[]> valid(new uint8_t[NT]);
    SG_OMP(parallel for schedule(static))
    for (int t = 0; t < NT; ++t)
        valid[t] = setup_triangle(pos + 4 * tri[3 * t], pos + 4 * tri[3 * t + 1], pos + 4 * tri[3 * t + 2], W, H,
                                  setups[t]);

    const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
    const int tiles = tiles_x * tiles_y;
    // Bins in one flat array (counting sort by tile): bin_start[tile] .. bin_start[tile + 1] list
    // triangle ids in increasing order (the depth-tie rule).
    // Calls f(bin, t) for every tile bin that valid triangle t overlaps, in increasing t: once to
    // count, once to fill.
    auto for_each_bin = [&](auto&& f) {
        for (int t = 0; t < NT; ++t) {
            if (!valid[t]) continue;
            const TriSetup<T>& s = setups[t];
            for (int ty = s.y0 / kTile; ty <= s.y1 / kTile; ++ty)
                for (int tx = s.x0 / kTile; tx <= s.x1 / kTile; ++tx) f((size_t)ty * tiles_x + tx, t);
        }
    };
    std::vector<int64_t> bin_start((size_t)tiles + 1, 0);
    for_each_bin([&](size_t bin, int32_t) { ++bin_start[bin + 1]; });
    for (size_t k = 1; k < bin_start.size(); ++k) bin_start[k] += bin_start[k - 1];
    std::unique_ptr<int32_t[]> bin_items(new int32_t[std::max<int64_t>(1, bin_start.back())]);
    std::vector<int64_t> fill(bin_start.begin(), bin_start.end() - 1);
    for_each_bin([&](size_t bin, int32_t t) { bin_items[fill[bin]++] = t; });

    std::vector<T> px(W), py(H);
    for (int i = 0; i < W; ++i) px[i] = ndc_x<T>(i, W);
    for (int i = 0; i < H; ++i) py[i] = ndc_y<T>(i, H);

    SG_OMP(parallel for schedule(dynamic, 1))
    for (int tile = 0; tile < tiles; ++tile) {
        const int ox = (tile % tiles_x) * kTile, oy = (tile / tiles_x) * kTile;
        const int ex = std::min(ox + kTile, W) - 1, ey = std::min(oy + kTile, H) - 1;
        // Nearest z/w per pixel so far (+inf: none) and its triangle (-1: none).
        T best_z[kTile * kTile];
        int32_t best_id[kTile * kTile];
        std::fill(best_z, best_z + kTile * kTile, T(INFINITY));
        std::fill(best_id, best_id + kTile * kTile, -1);
        for (int64_t k = bin_start[tile]; k < bin_start[tile + 1]; ++k) {
            const int32_t t = bin_items[k];
            const TriSetup<T>& s = setups[t];
            const int x0 = std::max(s.x0, ox), x1 = std::min(s.x1, ex);
            const int y0 = std::max(s.y0, oy), y1 = std::min(s.y1, ey);
            for (int iy = y0; iy <= y1; ++iy) {
                T* z_row = best_z + (iy - oy) * kTile;
                int32_t* id_row = best_id + (iy - oy) * kTile;
                // Selects, no branches: the loop vectorises. A tie keeps the earlier triangle.
                for (int ix = x0; ix <= x1; ++ix) {
                    T zw;
                    const int k = ix - ox;
                    const bool nearer = covers(s, px[ix], py[iy], zw) & (zw < z_row[k]);
                    z_row[k] = nearer ? zw : z_row[k];
                    id_row[k] = nearer ? t : id_row[k];
                }
            }
        }
        for (int iy = oy; iy <= ey; ++iy) {
            for (int ix = ox; ix <= ex; ++ix) {
                const int32_t t = best_id[(iy - oy) * kTile + (ix - ox)];
                const int64_t o = ((int64_t)iy * W + ix) * 4;
                if (t < 0) {  // two whole-pixel stores (four interleaved scalar pairs did not merge: rast may alias db)
                    std::memset(rast + o, 0, 4 * sizeof(T));
                    std::memset(db + o, 0, 4 * sizeof(T));
                    continue;
                }
                pixel_outputs(setups[t], px[ix], py[iy], W, H, rast + o, db + o);
                rast[o + 3] = T(t + 1);
            }
        }
    }
}

template <typename T>
void backward(const T* pos, int B, int V, const int32_t* tri, int H, int W, const T* rast, const T* grad_rast,
              const T* grad_db, T* grad_pos) {
    ScatterAdd<T> scatter(grad_pos, (int64_t)B * V * 4);
    SG_OMP(parallel for schedule(dynamic, 4))
    for (int64_t row = 0; row < (int64_t)B * H; ++row) {
        const int64_t b = row / H;
        const int iy = (int)(row % H);
        const T* base = pos + b * V * 4;
        const auto local = scatter.local();
        // The last triangle's set-up: neighbouring pixels mostly share a triangle.
        TriSetup<T> s;
        int loaded = -1;
        bool usable = false;
        for (int ix = 0; ix < W; ++ix) {
            const int64_t o = (row * W + ix) * 4;
            const int t = (int)rast[o + 3] - 1;
            if (t < 0) continue;
            const T* g = grad_rast + o;
            const T* gdb = grad_db ? grad_db + o : nullptr;
            if (zero_gradient(g, gdb)) continue;
            const int32_t* idx = tri + 3 * t;
            if (t != loaded) {
                usable = load_triangle(base, idx, s);
                loaded = t;
            }
            if (!usable) continue;
            T gv[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
            pixel_outputs_backward(s, ndc_x<T>(ix, W), ndc_y<T>(iy, H), W, H, g, gdb, gv);
            for (int i = 0; i < 3; ++i) {  // a vertex's four gradients, one touched-block flag
                T* dst = local.data() + (b * V + idx[i]) * 4;
                for (int c = 0; c < 4; ++c) local.add_unflagged(dst + c, gv[4 * i + c]);
                local.flag(dst, 4);
            }
        }
    }
    scatter.reduce();
}

}  // namespace

std::vector<torch::Tensor> rasterize_fwd_cpu(const torch::Tensor& pos, const torch::Tensor& tri,
                                             int64_t height, int64_t width) {
    check_rasterize_inputs(pos, tri, height, width);
    SG_CHECK_CPU(pos);
    const int B = (int)pos.size(0), V = (int)pos.size(1), NT = (int)tri.size(0);
    if (NT > 0) {
        const auto [lo, hi] = tri.aminmax();  // one pass over the indices
        TORCH_CHECK(lo.item<int>() >= 0 && hi.item<int>() < V, "tri holds vertex indices outside [0, ", V, ")");
    }
    // Pooled, like the set-ups: a training loop frees last step's (16 MB each at 1024^2).
    auto rast = pooled_empty({B, height, width, 4}, pos.options());
    auto db = pooled_empty({B, height, width, 4}, pos.options());
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "rasterize_fwd_cpu", [&] {
        // One view at a time: its set-ups (NT of them) stay in the pool and in cache for the next.
        const int64_t image = height * width * 4;
        for (int b = 0; b < B; ++b)
            forward<scalar_t>(pos.data_ptr<scalar_t>() + (int64_t)b * V * 4, tri.data_ptr<int32_t>(), NT, (int)height,
                              (int)width, rast.data_ptr<scalar_t>() + b * image, db.data_ptr<scalar_t>() + b * image);
    });
    return {rast, db};
}

torch::Tensor rasterize_bwd_cpu(const torch::Tensor& pos, const torch::Tensor& tri, const torch::Tensor& rast,
                                const torch::Tensor& grad_rast, const c10::optional<torch::Tensor>& grad_db) {
    check_rasterize_inputs(pos, tri, rast.size(1), rast.size(2));
    SG_CHECK_CPU(pos);
    const int B = (int)pos.size(0), V = (int)pos.size(1);
    const int H = (int)rast.size(1), W = (int)rast.size(2);
    auto gr = grad_rast.contiguous();
    torch::Tensor gdb;
    if (grad_db.has_value() && grad_db->defined()) gdb = grad_db->contiguous();
    auto grad_pos = torch::zeros_like(pos);
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "rasterize_bwd_cpu", [&] {
        backward<scalar_t>(pos.data_ptr<scalar_t>(), B, V, tri.data_ptr<int32_t>(), H, W,
                           rast.contiguous().data_ptr<scalar_t>(), gr.data_ptr<scalar_t>(),
                           gdb.defined() ? gdb.data_ptr<scalar_t>() : nullptr, grad_pos.data_ptr<scalar_t>());
    });
    return grad_pos;
}

}  // namespace mesh
}  // namespace scenegrad
