// Python bindings of marching cubes (see render/iso/marching_cubes.py); registered from cuda/bindings.cpp.
#include "common/dispatch.h"
#include "iso/marching_cubes_ops.h"

namespace scenegrad {
namespace {

std::vector<torch::Tensor> marching_cubes_fwd(const torch::Tensor& values, double level, const torch::Tensor& tris,
                                              const torch::Tensor& counts) {
    SG_DISPATCH(iso, marching_cubes_fwd, values, values, level, tris, counts);
}

}  // namespace

void bind_marching_cubes(pybind11::module_& m) {
    m.def("marching_cubes_fwd", &marching_cubes_fwd,
          "marching cubes topology (see render.iso.marching_cubes): crossed grid edges and triangles");
}

}  // namespace scenegrad
