// Launchers of Gaussian rasterize_to_pixels (see render/gaussians/rasterize.py) and the argument
// checks they share. rasterize_bindings.cpp picks the CPU or CUDA launcher by device.
#pragma once
#include "common/aten.h"

#include <vector>

#include "gaussians/rasterize.h"

namespace scenegrad {
namespace gaussians {

// means2d [C, N, 2], conics [C, N, 3], colors [C, N, D], opacities [C, N], depths [C, N] (float32/64),
// radii [C, N] int32, backgrounds [C, D] or undefined ->
// {colors [C, H, W, D], alphas [C, H, W, 1], tile_offsets [C * tiles_y * tiles_x + 1] int64,
//  flatten_ids [M] int32 (Gaussian index per tile entry, sorted by (tile, depth, index)),
//  final_T [C, H, W], last_ids [C, H, W] int32 (entry in flatten_ids of the last included Gaussian, or -1)}.
std::vector<torch::Tensor> rasterize_to_pixels_fwd_cpu(const torch::Tensor& means2d, const torch::Tensor& conics,
                                                       const torch::Tensor& colors, const torch::Tensor& opacities,
                                                       const torch::Tensor& depths, const torch::Tensor& radii,
                                                       const torch::Tensor& backgrounds, int64_t width,
                                                       int64_t height, int64_t tile_size);
// The saved forward outputs and v_colors [C, H, W, D], v_alphas [C, H, W, 1] ->
// {v_means2d [C, N, 2], v_conics [C, N, 3], v_colors [C, N, D], v_opacities [C, N]}.
std::vector<torch::Tensor> rasterize_to_pixels_bwd_cpu(
    const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
    const torch::Tensor& opacities, const torch::Tensor& backgrounds, int64_t width, int64_t height,
    int64_t tile_size, const torch::Tensor& tile_offsets, const torch::Tensor& flatten_ids,
    const torch::Tensor& final_T, const torch::Tensor& last_ids, const torch::Tensor& v_colors,
    const torch::Tensor& v_alphas);

#ifdef SCENEGRAD_WITH_CUDA
std::vector<torch::Tensor> rasterize_to_pixels_fwd_cuda(const torch::Tensor& means2d, const torch::Tensor& conics,
                                                        const torch::Tensor& colors, const torch::Tensor& opacities,
                                                        const torch::Tensor& depths, const torch::Tensor& radii,
                                                        const torch::Tensor& backgrounds, int64_t width,
                                                        int64_t height, int64_t tile_size);
std::vector<torch::Tensor> rasterize_to_pixels_bwd_cuda(
    const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
    const torch::Tensor& opacities, const torch::Tensor& backgrounds, int64_t width, int64_t height,
    int64_t tile_size, const torch::Tensor& tile_offsets, const torch::Tensor& flatten_ids,
    const torch::Tensor& final_T, const torch::Tensor& last_ids, const torch::Tensor& v_colors,
    const torch::Tensor& v_alphas);
#endif

// Checks shared by the forward launchers; returns the dimensions the kernels need.
inline RasterDims check_raster_inputs(const torch::Tensor& means2d, const torch::Tensor& conics,
                                      const torch::Tensor& colors, const torch::Tensor& opacities,
                                      const torch::Tensor& backgrounds, int64_t width, int64_t height,
                                      int64_t tile_size) {
    TORCH_CHECK(colors.dim() == 3, "colors must have shape [C, N, D], got ", colors.sizes());
    const int64_t C = colors.size(0), N = colors.size(1), D = colors.size(2);
    TORCH_CHECK(means2d.dim() == 3 && means2d.size(0) == C && means2d.size(1) == N && means2d.size(2) == 2,
                "means2d must have shape [C, N, 2], got ", means2d.sizes());
    TORCH_CHECK(conics.dim() == 3 && conics.size(0) == C && conics.size(1) == N && conics.size(2) == 3,
                "conics must have shape [C, N, 3], got ", conics.sizes());
    TORCH_CHECK(opacities.dim() == 2 && opacities.size(0) == C && opacities.size(1) == N,
                "opacities must have shape [C, N], got ", opacities.sizes());
    for (const torch::Tensor* t : {&means2d, &conics, &colors, &opacities}) {
        TORCH_CHECK(t->is_contiguous(), "rasterize_to_pixels: inputs must be contiguous");
        TORCH_CHECK(t->scalar_type() == means2d.scalar_type(), "rasterize_to_pixels: inputs must share a dtype");
        TORCH_CHECK(t->device() == means2d.device(), "rasterize_to_pixels: inputs must share a device");
    }
    if (backgrounds.defined()) {
        TORCH_CHECK(backgrounds.dim() == 2 && backgrounds.size(0) == C && backgrounds.size(1) == D &&
                        backgrounds.is_contiguous() && backgrounds.scalar_type() == means2d.scalar_type() &&
                        backgrounds.device() == means2d.device(),
                    "backgrounds must be a contiguous [C, D] tensor like colors");
    }
    TORCH_CHECK(width >= 0 && height >= 0 && tile_size >= 1 && tile_size <= 32, "bad image or tile size");
    TORCH_CHECK(N < (int64_t(1) << 31) && D >= 1, "rasterize_to_pixels: N must fit int32 and D >= 1");
    RasterDims d;
    d.C = (int)C;
    d.N = (int)N;
    d.D = (int)D;
    d.W = (int)width;
    d.H = (int)height;
    d.tile = (int)tile_size;
    d.tiles_x = (int)((width + tile_size - 1) / tile_size);
    d.tiles_y = (int)((height + tile_size - 1) / tile_size);
    d.has_bg = backgrounds.defined();
    return d;
}

// Checks of the sort inputs of the forward pass.
inline void check_raster_sort_inputs(const RasterDims& d, const torch::Tensor& depths, const torch::Tensor& radii,
                                     const torch::Tensor& means2d) {
    TORCH_CHECK(depths.dim() == 2 && depths.size(0) == d.C && depths.size(1) == d.N && depths.is_contiguous() &&
                    depths.scalar_type() == means2d.scalar_type() && depths.device() == means2d.device(),
                "depths must be a contiguous [C, N] tensor like means2d");
    TORCH_CHECK(radii.dim() == 2 && radii.size(0) == d.C && radii.size(1) == d.N && radii.is_contiguous() &&
                    radii.scalar_type() == torch::kInt && radii.device() == means2d.device(),
                "radii must be a contiguous int32 [C, N] tensor on means2d's device");
}

// Checks of the tensors saved by the forward pass and the output gradients.
inline void check_raster_saved(const RasterDims& d, const torch::Tensor& tile_offsets, const torch::Tensor& flatten_ids,
                               const torch::Tensor& final_T, const torch::Tensor& last_ids,
                               const torch::Tensor& v_colors, const torch::Tensor& v_alphas,
                               const torch::Tensor& means2d) {
    const int64_t tiles = (int64_t)d.C * d.tiles_x * d.tiles_y;
    TORCH_CHECK(tile_offsets.dim() == 1 && tile_offsets.numel() == tiles + 1 &&
                    tile_offsets.scalar_type() == torch::kLong && tile_offsets.is_contiguous(),
                "tile_offsets must be int64 [C * tiles + 1]");
    TORCH_CHECK(flatten_ids.dim() == 1 && flatten_ids.scalar_type() == torch::kInt && flatten_ids.is_contiguous(),
                "flatten_ids must be int32 [M]");
    const int64_t pixels = (int64_t)d.C * d.H * d.W;
    TORCH_CHECK(final_T.numel() == pixels && final_T.scalar_type() == means2d.scalar_type() &&
                    final_T.is_contiguous(),
                "final_T must be [C, H, W] like means2d");
    TORCH_CHECK(last_ids.numel() == pixels && last_ids.scalar_type() == torch::kInt && last_ids.is_contiguous(),
                "last_ids must be int32 [C, H, W]");
    TORCH_CHECK(v_colors.numel() == pixels * d.D && v_colors.scalar_type() == means2d.scalar_type() &&
                    v_colors.is_contiguous(),
                "v_colors must be [C, H, W, D] like means2d");
    TORCH_CHECK(v_alphas.numel() == pixels && v_alphas.scalar_type() == means2d.scalar_type() &&
                    v_alphas.is_contiguous(),
                "v_alphas must be [C, H, W, 1] like means2d");
    for (const torch::Tensor* t : {&tile_offsets, &flatten_ids, &final_T, &last_ids, &v_colors, &v_alphas})
        TORCH_CHECK(t->device() == means2d.device(), "rasterize_to_pixels: saved tensors must share a device");
}

}  // namespace gaussians
}  // namespace scenegrad
