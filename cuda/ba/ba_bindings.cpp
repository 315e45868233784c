// Python bindings of the bundle adjustment's Schur complement (see recon/ba.py); registered from
// cuda/bindings.cpp.
#include "ba/schur_ops.h"
#include "common/dispatch.h"

namespace scenegrad {
namespace {

torch::Tensor ba_schur(const torch::Tensor& W, const torch::Tensor& V_inv, const torch::Tensor& pt,
                       const torch::Tensor& pos, const torch::Tensor& order, const torch::Tensor& starts,
                       int64_t size) {
    SG_DISPATCH(ba, ba_schur, W, W, V_inv, pt, pos, order, starts, size);
}

}  // namespace

void bind_ba_schur(pybind11::module_& m) {
    m.def("ba_schur", &ba_schur,
          "bundle adjustment: the points' terms sum W_a V^-1 W_b^T of the reduced camera system (see recon.ba)");
}

}  // namespace scenegrad
