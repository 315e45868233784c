// Python bindings of the bundle adjustment's native operations: the projections, the linearisation and the
// Schur complement (see recon/ba.py); registered from cuda/bindings.cpp.
#include "ba/linearise_ops.h"
#include "ba/schur_ops.h"
#include "common/dispatch.h"

namespace scenegrad {
namespace {

std::vector<torch::Tensor> ba_linearise(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                        const torch::Tensor& intr, const torch::Tensor& dist, const torch::Tensor& y,
                                        const torch::Tensor& c, const torch::Tensor& cam, const torch::Tensor& pt,
                                        const torch::Tensor& order, const torch::Tensor& starts,
                                        const torch::Tensor& cols, const torch::Tensor& cam_free,
                                        const torch::Tensor& point_free, int64_t loss, double scale, double min_depth,
                                        bool exact) {
    SG_DISPATCH(ba, ba_linearise, R, R, t, X, intr, dist, y, c, cam, pt, order, starts, cols, cam_free, point_free,
                loss, scale, min_depth, exact);
}

std::vector<torch::Tensor> ba_project(const torch::Tensor& R, const torch::Tensor& t, const torch::Tensor& X,
                                      const torch::Tensor& intr, const torch::Tensor& dist, const torch::Tensor& cam,
                                      const torch::Tensor& pt, double min_depth) {
    SG_DISPATCH(ba, ba_project, R, R, t, X, intr, dist, cam, pt, min_depth);
}

torch::Tensor ba_schur(const torch::Tensor& W, const torch::Tensor& V_inv, const torch::Tensor& pt,
                       const torch::Tensor& pos, const torch::Tensor& order, const torch::Tensor& starts,
                       int64_t size) {
    SG_DISPATCH(ba, ba_schur, W, W, V_inv, pt, pos, order, starts, size);
}

}  // namespace

void bind_ba(pybind11::module_& m) {
    m.def("ba_linearise", &ba_linearise,
          "bundle adjustment: the Gauss-Newton blocks U, V, W, g_c, g_p, residuals and weights (see recon.ba)");
    m.def("ba_project", &ba_project, "bundle adjustment: every observation's projection and validity (see recon.ba)");
    m.def("ba_schur", &ba_schur,
          "bundle adjustment: the points' terms sum W_a V^-1 W_b^T of the reduced camera system (see recon.ba)");
}

}  // namespace scenegrad
