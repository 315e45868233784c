// Per-pair math of the reduced camera system of a bundle adjustment (see recon/ba.py, _solve):
// eliminating the points from the Gauss-Newton system leaves S = U - sum over points p, over every
// pair (a, b) of observations of p, of F_a W_b^T, with W_a [C, 3] an observation's camera-point
// block and F_a = W_a V_p^-1. Shared by the CPU and CUDA launchers.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/hd.h"

namespace scenegrad {
namespace ba {

constexpr int kMaxCameraParams = 16;  // 6 pose parameters and up to 10 intrinsics

// F_a = W_a V_p^-1 ([C, 3] row-major) from W_a [C, 3] and the point's inverse block Vi [3, 3] (row-major).
template <int C>
SG_HD void schur_f(const double* Wa, const double* Vi, double* Fa) {
    for (int i = 0; i < C; ++i) {
        for (int k = 0; k < 3; ++k)
            Fa[3 * i + k] = Wa[3 * i] * Vi[k] + Wa[3 * i + 1] * Vi[3 + k] + Wa[3 * i + 2] * Vi[6 + k];
    }
}

// Entry (i, j) of F_a W_b^T: the dot product of row i of F_a and row j of W_b (both [C, 3] row-major).
SG_HD double schur_entry(const double* Fa, const double* Wb, int i, int j) {
    return Fa[3 * i] * Wb[3 * j] + Fa[3 * i + 1] * Wb[3 * j + 1] + Fa[3 * i + 2] * Wb[3 * j + 2];
}

// Adds scale * F_a W_b^T at rows pos_a, columns pos_b of the row-major [S, S] matrix X through
// add(index, value). The launchers add every pair a < b of a point's observations with scale 1 and every
// a == b with scale 1/2; T = X + X^T is then the full sum (F_b W_a^T = (F_a W_b^T)^T since V_p is symmetric,
// and F_a W_a^T is symmetric), with half the scattered writes of adding both orders.
template <int C, typename Add>
SG_HD void schur_pair(const double* Fa, const double* Wb, const int64_t* pos_a, const int64_t* pos_b, int64_t S,
                      double scale, Add&& add) {
    for (int i = 0; i < C; ++i) {
        const int64_t row = pos_a[i] * S;
        for (int j = 0; j < C; ++j) add(row + pos_b[j], scale * schur_entry(Fa, Wb, i, j));
    }
}

// Calls fn(std::integral_constant<int, C>) for the camera parameter count C (1 to kMaxCameraParams), so
// the per-pair loops are unrolled for it.
template <typename Fn>
void dispatch_camera_params(int C, Fn&& fn) {
    switch (C) {
#define SG_BA_CASE(n) \
    case n: fn(std::integral_constant<int, n>{}); break;
        SG_BA_CASE(1) SG_BA_CASE(2) SG_BA_CASE(3) SG_BA_CASE(4) SG_BA_CASE(5) SG_BA_CASE(6) SG_BA_CASE(7)
        SG_BA_CASE(8) SG_BA_CASE(9) SG_BA_CASE(10) SG_BA_CASE(11) SG_BA_CASE(12) SG_BA_CASE(13) SG_BA_CASE(14)
        SG_BA_CASE(15) SG_BA_CASE(16)
#undef SG_BA_CASE
        default: break;
    }
}

}  // namespace ba
}  // namespace scenegrad
