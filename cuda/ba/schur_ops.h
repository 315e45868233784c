// Launchers of the bundle adjustment's Schur complement (see recon/ba.py, _solve); ba_bindings.cpp picks the
// CPU or CUDA one by device. The math is in schur.h.
#pragma once
#include "common/aten.h"
#include "ba/schur.h"

namespace scenegrad {
namespace ba {

// W [O, C, 3] float64 contiguous (each observation's camera-point block); V_inv [M, 3, 3] float64 (each
// point's inverse block V_p^-1); pt [O] int64 (each observation's point); pos [O, C] int64 (the positions
// in the reduced system of each observation's camera parameters); order [O] int64 (observations grouped by
// point) and starts [M + 1] int64 (point p's observations are order[starts[p] : starts[p + 1]]) ->
// T [S, S] float64 = sum over points, over all ordered pairs (a, b) of their observations, of F_a W_b^T
// (F_a = W_a V_p^-1) placed at rows pos[a], columns pos[b].
torch::Tensor ba_schur_cpu(const torch::Tensor& W, const torch::Tensor& V_inv, const torch::Tensor& pt,
                           const torch::Tensor& pos, const torch::Tensor& order, const torch::Tensor& starts, int64_t size);
#ifdef SCENEGRAD_WITH_CUDA
torch::Tensor ba_schur_cuda(const torch::Tensor& W, const torch::Tensor& V_inv, const torch::Tensor& pt,
                            const torch::Tensor& pos, const torch::Tensor& order, const torch::Tensor& starts, int64_t size);
#endif

inline void check_schur_inputs(const torch::Tensor& W, const torch::Tensor& V_inv, const torch::Tensor& pt,
                               const torch::Tensor& pos, const torch::Tensor& order, const torch::Tensor& starts,
                               int64_t size) {
    TORCH_CHECK(W.dim() == 3 && W.size(2) == 3 && W.scalar_type() == torch::kDouble && W.is_contiguous(),
                "ba_schur: W must be a contiguous float64 [O, C, 3] tensor, got ", W.sizes());
    TORCH_CHECK(W.size(1) >= 1 && W.size(1) <= kMaxCameraParams, "ba_schur: 1 to ", kMaxCameraParams,
                " camera parameters, got ", W.size(1));
    const int64_t O = W.size(0), C = W.size(1);
    TORCH_CHECK(V_inv.dim() == 3 && V_inv.size(1) == 3 && V_inv.size(2) == 3 &&
                    V_inv.scalar_type() == torch::kDouble && V_inv.is_contiguous() && V_inv.device() == W.device(),
                "ba_schur: V_inv must be a contiguous float64 [M, 3, 3] tensor on W's device");
    TORCH_CHECK(starts.dim() == 1 && starts.size(0) == V_inv.size(0) + 1 && starts.scalar_type() == torch::kLong &&
                    starts.is_contiguous() && starts.device() == W.device(),
                "ba_schur: starts must be a contiguous int64 [M + 1] tensor on W's device");
    for (const torch::Tensor* t : {&pt, &order}) {
        TORCH_CHECK(t->dim() == 1 && t->size(0) == O && t->scalar_type() == torch::kLong && t->is_contiguous() &&
                        t->device() == W.device(),
                    "ba_schur: pt and order must be contiguous int64 [O] tensors on W's device");
    }
    TORCH_CHECK(pos.dim() == 2 && pos.size(0) == O && pos.size(1) == C && pos.scalar_type() == torch::kLong &&
                    pos.is_contiguous() && pos.device() == W.device(),
                "ba_schur: pos must be a contiguous int64 [O, C] tensor on W's device");
    TORCH_CHECK(size >= 1 && size < (int64_t(1) << 31), "ba_schur: size out of range: ", size);
}

// CPU tensors only (reads them on the host): starts [M + 1] runs from 0 to O without decreasing and
// order [O] lists each point's observations (pt [O]) in its range; else an error naming op.
inline void check_point_groups_cpu(const torch::Tensor& pt, const torch::Tensor& order, const torch::Tensor& starts,
                                   const char* op) {
    const int64_t O = pt.size(0), M = starts.size(0) - 1;
    const int64_t* st = starts.data_ptr<int64_t>();
    const int64_t* ord = order.data_ptr<int64_t>();
    const int64_t* pts = pt.data_ptr<int64_t>();
    TORCH_CHECK(st[0] == 0 && st[M] == O, op, ": starts must run from 0 to the observation count ", O);
    for (int64_t p = 0; p < M; ++p) {
        TORCH_CHECK(st[p] <= st[p + 1], op, ": starts must not decrease (point ", p, ")");
        for (int64_t i = st[p]; i < st[p + 1]; ++i)
            TORCH_CHECK(ord[i] >= 0 && ord[i] < O && pts[ord[i]] == p, op, ": order does not group the "
                        "observations by point (position ", i, ")");
    }
}

}  // namespace ba
}  // namespace scenegrad
