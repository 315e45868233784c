// Python bindings of sphere rendering (see render/spheres/render.py); registered from cuda/bindings.cpp.
#include "common/dispatch.h"
#include "spheres/sphere_ops.h"

namespace scenegrad {
namespace {

using torch::Tensor;

std::vector<Tensor> sphere_render_fwd(const Tensor& centers, const Tensor& radii, const Tensor& features,
                                      const Tensor& opacities, const Tensor& intrinsics, const OptTensor& background,
                                      int64_t width, int64_t height, double near, double far, double gamma,
                                      double bg_eps, double cut, int64_t n_ids, int64_t tile_size,
                                      int64_t projection) {
    const Tensor bg = value_or_undefined(background);
    SG_DISPATCH(spheres, sphere_render_fwd, centers, centers, radii, features, opacities, intrinsics, bg, width,
                height, near, far, gamma, bg_eps, cut, n_ids, tile_size, projection);
}

std::vector<Tensor> sphere_render_bwd(const Tensor& centers, const Tensor& radii, const Tensor& features,
                                      const Tensor& opacities, const Tensor& intrinsics, int64_t width,
                                      int64_t height, double near, double far, double gamma, double bg_eps,
                                      int64_t tile_size, const Tensor& tile_offsets, const Tensor& flatten_ids,
                                      const Tensor& out_features, const Tensor& out_alpha, const Tensor& out_depth,
                                      const Tensor& pix_state, const Tensor& last, const Tensor& v_features,
                                      const Tensor& v_alpha, const Tensor& v_depth, int64_t projection) {
    SG_DISPATCH(spheres, sphere_render_bwd, centers, centers, radii, features, opacities, intrinsics, width, height,
                near, far, gamma, bg_eps, tile_size, tile_offsets, flatten_ids, out_features, out_alpha, out_depth,
                pix_state, last, v_features, v_alpha, v_depth, projection);
}

}  // namespace

void bind_sphere_render(pybind11::module_& m) {
    m.def("sphere_render_fwd", &sphere_render_fwd,
          "Pulsar-style sphere rendering (see render.spheres.render_spheres); returns features, alpha, depth, "
          "ids, weights and the tile_offsets, flatten_ids, pix_state, last the backward needs");
    m.def("sphere_render_bwd", &sphere_render_bwd,
          "gradients of sphere rendering to centers, radii, features, opacities and intrinsics");
}

}  // namespace scenegrad
