// Python bindings of Gaussian rasterize (see render/gaussians/rasterize.py); registered from cuda/bindings.cpp.
#include "common/dispatch.h"

namespace scenegrad {

void bind_gaussian_rasterize(pybind11::module_& m) { (void)m; }

}  // namespace scenegrad
