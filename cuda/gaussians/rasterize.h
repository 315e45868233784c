// Per-Gaussian and per-pixel math of Gaussian rasterization (3DGS / gsplat semantics), shared by
// the CPU and CUDA launchers.
//
// A Gaussian with image-space mean m, conic (a, b, c) and pixel radius r touches the tiles that its
// box [m - r, m + r] overlaps. Each tile's Gaussians are composited front to back (sorted by
// (depth, index)) at every pixel centre p = (x + 0.5, y + 0.5) of the tile:
//     d = m - p,   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy          (skipped if sigma < 0)
//     alpha = min(0.999, opacity exp(-sigma))                      (skipped if alpha < 1/255)
//     next_T = T (1 - alpha); stop (excluding it) if next_T < 1e-4; color += alpha T c; T = next_T.
// The backward pass walks each pixel's Gaussians back to front from the final T and the index of
// the last one included, recovering T before each Gaussian as T / (1 - alpha).
#pragma once
#include <cstdint>

#include "common/hd.h"

namespace scenegrad {
namespace gaussians {

struct RasterDims {
    int C;         // cameras
    int N;         // Gaussians per camera
    int D;         // channels per Gaussian
    int W, H;      // image size in pixels
    int tile;      // tile side in pixels
    int tiles_x;   // ceil(W / tile)
    int tiles_y;   // ceil(H / tile)
    bool has_bg;   // backgrounds [C, D] given
};

// The thresholds of the compositing rule.
template <typename T>
SG_HD T alpha_max() { return T(0.999); }
template <typename T>
SG_HD T alpha_min() { return T(1.0 / 255.0); }
template <typename T>
SG_HD T t_min() { return T(1e-4); }

// The tiles a Gaussian touches: x0 <= tx < x1, y0 <= ty < y1 (empty when culled or off-image).
// The same float operations as the reference: floor((m - r) / tile), ceil((m + r) / tile).
template <typename T>
SG_HD void tile_rect(T mx, T my, int32_t radius, const RasterDims& d, int& x0, int& x1, int& y0, int& y1) {
    if (radius <= 0) {
        x0 = x1 = y0 = y1 = 0;
        return;
    }
    const T r = T(radius), ts = T(d.tile);
    const T lx = sg_floor((mx - r) / ts), hx = sg_ceil((mx + r) / ts);
    const T ly = sg_floor((my - r) / ts), hy = sg_ceil((my + r) / ts);
    x0 = (int)sg_min(sg_max(lx, T(0)), T(d.tiles_x));
    x1 = (int)sg_min(sg_max(hx, T(0)), T(d.tiles_x));
    y0 = (int)sg_min(sg_max(ly, T(0)), T(d.tiles_y));
    y1 = (int)sg_min(sg_max(hy, T(0)), T(d.tiles_y));
    if (x1 < x0) x1 = x0;
    if (y1 < y0) y1 = y0;
}

// A projected Gaussian as a pixel sees it.
template <typename T>
struct Splat {
    T mx, my;     // mean (pixels)
    T a, b, c;    // conic
    T opacity;
    T sigma_cut;  // log(255 opacity) + 1e-3: beyond it alpha < 1/255 for sure, so exp is skipped
};

// Gradient of one pixel's loss with respect to a Splat's fields.
template <typename T>
struct SplatGrad {
    T mx, my, a, b, c, opacity;
};

// alpha of splat s at pixel centre (px, py), or 0 when it is skipped (sigma < 0 or alpha < 1/255).
// Also returns dx, dy and vis = exp(-sigma) for the backward pass.
template <typename T>
SG_HD T splat_alpha(const Splat<T>& s, T px, T py, T& dx, T& dy, T& vis) {
    dx = s.mx - px;
    dy = s.my - py;
    const T sigma = T(0.5) * (s.a * dx * dx + s.c * dy * dy) + s.b * dx * dy;
    // sigma > sigma_cut implies alpha < 1/255 with a margin far above rounding: the same decision
    // as computing alpha, without the exp.
    if (sigma < T(0) || sigma > s.sigma_cut) return T(0);
    vis = sg_exp(-sigma);
    const T alpha = sg_min(alpha_max<T>(), s.opacity * vis);
    return alpha < alpha_min<T>() ? T(0) : alpha;
}

// Adds to g the gradient of a pixel's loss through alpha = min(0.999, opacity exp(-sigma)), given
// v_alpha = d loss / d alpha (no gradient where the clamp is active).
template <typename T>
SG_HD void splat_alpha_backward(const Splat<T>& s, T dx, T dy, T vis, T v_alpha, SplatGrad<T>& g) {
    if (s.opacity * vis > alpha_max<T>()) return;
    const T v_sigma = -s.opacity * vis * v_alpha;
    g.a += T(0.5) * v_sigma * dx * dx;
    g.b += v_sigma * dx * dy;
    g.c += T(0.5) * v_sigma * dy * dy;
    g.mx += v_sigma * (s.a * dx + s.b * dy);
    g.my += v_sigma * (s.b * dx + s.c * dy);
    g.opacity += vis * v_alpha;
}

// Reads Gaussian g of camera cam.
template <typename T>
SG_HD Splat<T> load_splat(const T* means2d, const T* conics, const T* opacities, int64_t cg) {
    Splat<T> s;
    s.mx = means2d[2 * cg];
    s.my = means2d[2 * cg + 1];
    s.a = conics[3 * cg];
    s.b = conics[3 * cg + 1];
    s.c = conics[3 * cg + 2];
    s.opacity = opacities[cg];
    s.sigma_cut = s.opacity > T(0) ? sg_log(T(255) * s.opacity) + T(1e-3) : T(-1);
    return s;
}

// Half-extents (ex, ey) of the region where splat s can pass the alpha test: sigma <= sigma_cut is
// the ellipse 0.5 d^T conic d <= cut, whose bounding box is |dx| <= sqrt(2 cut Sxx), |dy| <=
// sqrt(2 cut Syy) with S = conic^-1 = [c, -b; -b, a] / det. Widened by 1% and 1e-3 px against
// rounding in sigma. Returns false (no bound known) when the conic is not positive definite; a
// splat that can never pass (opacity <= 1/255) gets negative extents.
template <typename T>
SG_HD bool splat_extent(const Splat<T>& s, T& ex, T& ey) {
    const T det = s.a * s.c - s.b * s.b;
    if (!(det > T(0)) || !(s.a > T(0)) || !sg_isfinite(det)) return false;
    if (!(s.sigma_cut >= T(0))) {
        ex = ey = T(-1);
        return true;
    }
    const T k = T(2) * s.sigma_cut / det;
    ex = sg_sqrt(k * s.c) * T(1.01) + T(1e-3);
    ey = sg_sqrt(k * s.a) * T(1.01) + T(1e-3);
    return true;
}

// One step of the backward walk at a pixel, for an included Gaussian with the given alpha:
// Tr (in/out) goes from T after it to T before it; S [D] (in/out) is the colour composited behind
// it, sum_{k after} alpha_k T_k c_k. v_color [D] is d loss / d pixel colour, k_final the factor of
// d loss / d T_final (v_color . background - v_alpha_out). Hands d loss / d c_k to add_color(k, v)
// and returns d loss / d alpha.
template <typename T, typename AddColor>
SG_HD T composite_backward_step(T alpha, const T* color, int D, const T* v_color, T T_final, T k_final, T& Tr, T* S,
                                AddColor add_color) {
    const T ra = T(1) / (T(1) - alpha);
    Tr *= ra;  // T before this Gaussian
    const T w = alpha * Tr;
    T v_alpha = T(0);
    for (int k = 0; k < D; ++k) {
        add_color(k, w * v_color[k]);
        v_alpha += (color[k] * Tr - S[k] * ra) * v_color[k];
        S[k] += color[k] * w;
    }
    v_alpha -= T_final * ra * k_final;
    return v_alpha;
}

}  // namespace gaussians
}  // namespace scenegrad
