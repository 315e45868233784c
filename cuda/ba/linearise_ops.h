// Launchers of the bundle adjustment's linearisation (see recon/ba.py, _linearise); ba_bindings.cpp picks the
// CPU or CUDA one by device. The math is in linearise.h.
#pragma once
#include <vector>

#include "ba/linearise.h"
#include "common/aten.h"

namespace scenegrad {
namespace ba {

// R [N, 3, 3], t [N, 3], X [M, 3], intr [N, 4] (fx, fy, cx, cy), dist [N, 5] (OpenCV) or [N, 0] (pinhole),
// y [O, 2], c [O], cam_free [N, C], point_free [M] (1 or 0): float64, contiguous, on one device; cam, pt [O]
// int64 (each observation's camera and point), order [O] and starts [M + 1] int64 (the observations grouped by
// point, as ba_schur takes them), cols [C - 6] int64 (the refined intrinsics' codes, IntrinsicColumn)
// -> {U [N, C, C], V [M, 3, 3], W [O, C, 3], g_c [N, C], g_p [M, 3], r [O, 2], w [O]}: the Gauss-Newton blocks
// summed per camera and per point, each observation's coupling block, the residuals and the IRLS weights
// (recon/ba.py, _Normal and _linearise).
std::vector<torch::Tensor> ba_linearise_cpu(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                            const torch::Tensor& intr, const torch::Tensor& dist,
                                            const torch::Tensor& y, const torch::Tensor& c, const torch::Tensor& cam,
                                            const torch::Tensor& pt, const torch::Tensor& order,
                                            const torch::Tensor& starts, const torch::Tensor& cols,
                                            const torch::Tensor& cam_free, const torch::Tensor& point_free,
                                            int64_t loss, double scale, double min_depth, bool exact);
#ifdef SCENEGRAD_WITH_CUDA
std::vector<torch::Tensor> ba_linearise_cuda(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                             const torch::Tensor& intr, const torch::Tensor& dist,
                                             const torch::Tensor& y, const torch::Tensor& c, const torch::Tensor& cam,
                                             const torch::Tensor& pt, const torch::Tensor& order,
                                             const torch::Tensor& starts, const torch::Tensor& cols,
                                             const torch::Tensor& cam_free, const torch::Tensor& point_free,
                                             int64_t loss, double scale, double min_depth, bool exact);
#endif

// The projections alone (recon/ba.py, _project without Jacobians): R, t, X, intr, dist as ba_linearise takes
// them, cam, pt [O] int64 -> {uv [O, 2] float64, valid [O] bool}.
std::vector<torch::Tensor> ba_project_cpu(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                          const torch::Tensor& intr, const torch::Tensor& dist,
                                          const torch::Tensor& cam, const torch::Tensor& pt, double min_depth);
#ifdef SCENEGRAD_WITH_CUDA
std::vector<torch::Tensor> ba_project_cuda(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                           const torch::Tensor& intr, const torch::Tensor& dist,
                                           const torch::Tensor& cam, const torch::Tensor& pt, double min_depth);
#endif

inline void check_project_inputs(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                 const torch::Tensor& intr, const torch::Tensor& dist, const torch::Tensor& cam,
                                 const torch::Tensor& pt) {
    const int64_t N = R.size(0), M = X.size(0), O = cam.size(0);
    const std::vector<int64_t> shapes[] = {{N, 3, 3}, {N, 3}, {M, 3}, {N, 4}};
    const torch::Tensor* floats[] = {&R, &t, &X, &intr};
    for (int k = 0; k < 4; ++k)
        TORCH_CHECK(floats[k]->sizes() == c10::IntArrayRef(shapes[k]) && floats[k]->scalar_type() == torch::kDouble &&
                        floats[k]->is_contiguous() && floats[k]->device() == R.device(),
                    "ba_project: R [N, 3, 3], t [N, 3], X [M, 3] and intr [N, 4] must be contiguous float64 tensors "
                    "on one device, got ", floats[k]->sizes());
    for (const torch::Tensor* x : {&cam, &pt})
        TORCH_CHECK(x->dim() == 1 && x->size(0) == O && x->scalar_type() == torch::kLong && x->is_contiguous() &&
                        x->device() == R.device(),
                    "ba_project: cam and pt must be contiguous int64 [O] tensors on R's device");
    TORCH_CHECK(dist.dim() == 2 && dist.size(0) == N && (dist.size(1) == 0 || dist.size(1) == 5) &&
                    dist.scalar_type() == torch::kDouble && dist.is_contiguous() && dist.device() == R.device(),
                "ba_project: dist must be a contiguous float64 [N, 5] or [N, 0] tensor on R's device");
}

inline void check_linearise_inputs(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                   const torch::Tensor& intr, const torch::Tensor& dist, const torch::Tensor& y,
                                   const torch::Tensor& c, const torch::Tensor& cam, const torch::Tensor& pt,
                                   const torch::Tensor& order, const torch::Tensor& starts, const torch::Tensor& cols,
                                   const torch::Tensor& cam_free, const torch::Tensor& point_free, int64_t loss) {
    const int64_t N = R.size(0), M = X.size(0), O = y.size(0);
    const int64_t C = cam_free.dim() == 2 ? cam_free.size(1) : -1;
    struct Expect {
        const torch::Tensor* x;
        const char* name;
        std::vector<int64_t> shape;
        bool integer;
    };
    const Expect expected[] = {
        {&R, "R", {N, 3, 3}, false},        {&t, "t", {N, 3}, false},
        {&X, "X", {M, 3}, false},           {&intr, "intr", {N, 4}, false},
        {&y, "y", {O, 2}, false},           {&c, "c", {O}, false},
        {&cam, "cam", {O}, true},           {&pt, "pt", {O}, true},
        {&order, "order", {O}, true},       {&starts, "starts", {M + 1}, true},
        {&cols, "cols", {C - 6}, true},     {&cam_free, "cam_free", {N, C}, false},
        {&point_free, "point_free", {M}, false},
    };
    for (const Expect& e : expected) {
        TORCH_CHECK(e.x->sizes() == c10::IntArrayRef(e.shape), "ba_linearise: ", e.name, " must have shape ",
                    c10::IntArrayRef(e.shape), ", got ", e.x->sizes());
        TORCH_CHECK(e.x->scalar_type() == (e.integer ? torch::kLong : torch::kDouble) && e.x->is_contiguous() &&
                        e.x->device() == R.device(),
                    "ba_linearise: ", e.name, " must be a contiguous ", e.integer ? "int64" : "float64",
                    " tensor on R's device");
    }
    TORCH_CHECK(C >= 6 && C <= kMaxCameraParams, "ba_linearise: 6 to ", kMaxCameraParams,
                " camera parameters, got ", C);
    TORCH_CHECK(dist.dim() == 2 && dist.size(0) == N && (dist.size(1) == 0 || dist.size(1) == 5) &&
                    dist.scalar_type() == torch::kDouble && dist.is_contiguous() && dist.device() == R.device(),
                "ba_linearise: dist must be a contiguous float64 [N, 5] or [N, 0] tensor on R's device");
    TORCH_CHECK(loss == kLinear || loss == kHuber || loss == kCauchy, "ba_linearise: unknown loss code ", loss);
}

}  // namespace ba
}  // namespace scenegrad
