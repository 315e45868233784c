// Python bindings of project_gaussians (see render/gaussians/project.py); registered from cuda/bindings.cpp.
#include "common/dispatch.h"
#include "gaussians/project_ops.h"

namespace scenegrad {
namespace {

using torch::Tensor;

gaussians::ProjectParams<double> params(int64_t width, int64_t height, double eps2d, double near_plane,
                                        double far_plane, double radius_clip, bool antialiased) {
    TORCH_CHECK(width > 0 && height > 0, "project_gaussians: width and height must be > 0");
    TORCH_CHECK(width < (int64_t(1) << 30) && height < (int64_t(1) << 30), "project_gaussians: image too large");
    return {eps2d, near_plane, far_plane, radius_clip, (int)width, (int)height, antialiased};
}

std::vector<Tensor> project_gaussians_fwd(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                          const Tensor& viewmats, const Tensor& Ks, int64_t width, int64_t height,
                                          double eps2d, double near_plane, double far_plane, double radius_clip,
                                          bool antialiased) {
    const auto p = params(width, height, eps2d, near_plane, far_plane, radius_clip, antialiased);
    SG_DISPATCH(gaussians, project_gaussians_fwd, means, means, quats, scales, viewmats, Ks, p);
}

std::vector<Tensor> project_gaussians_bwd(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                          const Tensor& viewmats, const Tensor& Ks, int64_t width, int64_t height,
                                          double eps2d, double near_plane, double far_plane, double radius_clip,
                                          bool antialiased, const Tensor& radii, const Tensor& v_means2d,
                                          const Tensor& v_depths, const Tensor& v_conics,
                                          const OptTensor& v_compensations, bool camera_grads) {
    const auto p = params(width, height, eps2d, near_plane, far_plane, radius_clip, antialiased);
    const Tensor vc = value_or_undefined(v_compensations);
    SG_DISPATCH(gaussians, project_gaussians_bwd, means, means, quats, scales, viewmats, Ks, p, radii, v_means2d,
                v_depths, v_conics, vc, camera_grads);
}

}  // namespace

void bind_gaussian_project(pybind11::module_& m) {
    m.def("project_gaussians_fwd", &project_gaussians_fwd,
          "EWA projection of 3D Gaussians (see render.gaussians.project_gaussians); returns radii, means2d, "
          "depths, conics and compensations (empty unless antialiased)");
    m.def("project_gaussians_bwd", &project_gaussians_bwd,
          "gradients of project_gaussians to means, quats, scales and, with camera_grads, viewmats and Ks");
}

}  // namespace scenegrad
