// Python bindings of Gaussian rasterize (see render/gaussians/rasterize.py); registered from cuda/bindings.cpp.
#include "common/dispatch.h"
#include "gaussians/rasterize_ops.h"

namespace scenegrad {
namespace {

using torch::Tensor;

std::vector<Tensor> rasterize_to_pixels_fwd(const Tensor& means2d, const Tensor& conics, const Tensor& colors,
                                            const Tensor& opacities, const Tensor& depths, const Tensor& radii,
                                            const OptTensor& backgrounds, int64_t width, int64_t height,
                                            int64_t tile_size) {
    const Tensor bg = value_or_undefined(backgrounds);
    SG_DISPATCH(gaussians, rasterize_to_pixels_fwd, means2d, means2d, conics, colors, opacities, depths, radii, bg,
                width, height, tile_size);
}

std::vector<Tensor> rasterize_to_pixels_bwd(const Tensor& means2d, const Tensor& conics, const Tensor& colors,
                                            const Tensor& opacities, const OptTensor& backgrounds, int64_t width,
                                            int64_t height, int64_t tile_size, const Tensor& tile_offsets,
                                            const Tensor& flatten_ids, const Tensor& final_T, const Tensor& last_ids,
                                            const Tensor& v_colors, const Tensor& v_alphas) {
    const Tensor bg = value_or_undefined(backgrounds);
    SG_DISPATCH(gaussians, rasterize_to_pixels_bwd, means2d, means2d, conics, colors, opacities, bg, width, height,
                tile_size, tile_offsets, flatten_ids, final_T, last_ids, v_colors, v_alphas);
}

}  // namespace

void bind_gaussian_rasterize(pybind11::module_& m) {
    m.def("rasterize_to_pixels_fwd", &rasterize_to_pixels_fwd,
          "tile-binned alpha compositing of projected Gaussians (see render.gaussians.rasterize_to_pixels); "
          "returns colors, alphas and the tile_offsets, flatten_ids, final_T, last_ids the backward needs");
    m.def("rasterize_to_pixels_bwd", &rasterize_to_pixels_bwd,
          "gradients of rasterize_to_pixels to means2d, conics, colors and opacities");
}

}  // namespace scenegrad
