// Launchers of Pulsar-style sphere rendering (see render/spheres/render.py) and the argument checks
// they share. sphere_bindings.cpp picks the CPU or CUDA launcher by device.
#pragma once
#include "common/aten.h"

#include <vector>

#include "spheres/spheres.h"

namespace scenegrad {
namespace spheres {

// centers [B, N, 3] (camera frame), radii [N], features [N, D], opacities [N], intrinsics [B, 4]
// (fx, fy, cx, cy), background [D] or undefined, cut = -log(tolerance) of the early stop, projection
// (spheres.h's Projection: 0 perspective, 1 orthographic) ->
// {features [B, H, W, D], alpha [B, H, W], depth [B, H, W], ids [B, H, W, K] int32, weights [B, H, W, K],
//  tile_offsets [B * tiles + 1] int64, flatten_ids [M] int32 (sorted by (tile, sort key, index)),
//  pix_state [B, H, W, 2] (M, W: the max exponent and the total weight relative to it),
//  last [B, H, W] int32 (entries of the pixel's tile list examined before it stopped)}.
#define SG_SPHERE_FWD_ARGS                                                                                  \
    const torch::Tensor &centers, const torch::Tensor &radii, const torch::Tensor &features,               \
        const torch::Tensor &opacities, const torch::Tensor &intrinsics, const torch::Tensor &background,  \
        int64_t width, int64_t height, double near, double far, double gamma, double bg_eps, double cut,    \
        int64_t n_ids, int64_t tile_size, int64_t projection
// The forward inputs and saved outputs plus v_features [B, H, W, D], v_alpha, v_depth [B, H, W] ->
// {v_centers [B, N, 3], v_radii [N], v_features [N, D], v_opacities [N], v_intrinsics [B, 4]}.
#define SG_SPHERE_BWD_ARGS                                                                                   \
    const torch::Tensor &centers, const torch::Tensor &radii, const torch::Tensor &features,                \
        const torch::Tensor &opacities, const torch::Tensor &intrinsics, int64_t width, int64_t height,     \
        double near, double far, double gamma, double bg_eps, int64_t tile_size,                            \
        const torch::Tensor &tile_offsets, const torch::Tensor &flatten_ids, const torch::Tensor &out_features, \
        const torch::Tensor &out_alpha, const torch::Tensor &out_depth, const torch::Tensor &pix_state,     \
        const torch::Tensor &last, const torch::Tensor &v_features, const torch::Tensor &v_alpha,           \
        const torch::Tensor &v_depth, int64_t projection

std::vector<torch::Tensor> sphere_render_fwd_cpu(SG_SPHERE_FWD_ARGS);
std::vector<torch::Tensor> sphere_render_bwd_cpu(SG_SPHERE_BWD_ARGS);
#ifdef SCENEGRAD_WITH_CUDA
std::vector<torch::Tensor> sphere_render_fwd_cuda(SG_SPHERE_FWD_ARGS);
std::vector<torch::Tensor> sphere_render_bwd_cuda(SG_SPHERE_BWD_ARGS);
#endif

// Checks shared by the launchers; returns the dimensions the kernels need.
inline SphereDims check_sphere_inputs(const torch::Tensor& centers, const torch::Tensor& radii,
                                      const torch::Tensor& features, const torch::Tensor& opacities,
                                      const torch::Tensor& intrinsics, int64_t width, int64_t height, double near,
                                      double far, double gamma, int64_t n_ids, int64_t tile_size) {
    TORCH_CHECK(centers.dim() == 3 && centers.size(2) == 3, "centers must have shape [B, N, 3], got ",
                centers.sizes());
    const int64_t B = centers.size(0), N = centers.size(1);
    TORCH_CHECK(features.dim() == 2 && features.size(0) == N && features.size(1) >= 1,
                "features must have shape [N, D], got ", features.sizes());
    TORCH_CHECK(radii.dim() == 1 && radii.size(0) == N, "radii must have shape [N], got ", radii.sizes());
    TORCH_CHECK(opacities.dim() == 1 && opacities.size(0) == N, "opacities must have shape [N]");
    TORCH_CHECK(intrinsics.dim() == 2 && intrinsics.size(0) == B && intrinsics.size(1) == 4,
                "intrinsics must have shape [B, 4], got ", intrinsics.sizes());
    for (const torch::Tensor* t : {&centers, &radii, &features, &opacities, &intrinsics}) {
        TORCH_CHECK(t->is_contiguous(), "sphere_render: inputs must be contiguous");
        TORCH_CHECK(t->scalar_type() == centers.scalar_type(), "sphere_render: inputs must share a dtype");
        TORCH_CHECK(t->device() == centers.device(), "sphere_render: inputs must share a device");
    }
    TORCH_CHECK(width > 0 && height > 0 && tile_size >= 1 && tile_size <= 32, "bad image or tile size");
    TORCH_CHECK(near > 0 && far > near && gamma > 0, "need 0 < near < far and gamma > 0");
    TORCH_CHECK(n_ids >= 0 && n_ids <= kMaxIds, "n_ids must be in [0, ", kMaxIds, "]");
    TORCH_CHECK(N < (int64_t(1) << 31), "sphere_render: N must fit int32");
    SphereDims d;
    d.B = (int)B;
    d.N = (int)N;
    d.D = (int)features.size(1);
    d.W = (int)width;
    d.H = (int)height;
    d.K = (int)n_ids;
    d.tile = (int)tile_size;
    d.tiles_x = (int)((width + tile_size - 1) / tile_size);
    d.tiles_y = (int)((height + tile_size - 1) / tile_size);
    return d;
}

inline void check_sphere_background(const SphereDims& d, const torch::Tensor& background,
                                    const torch::Tensor& centers) {
    if (!background.defined()) return;
    TORCH_CHECK(background.dim() == 1 && background.size(0) == d.D && background.is_contiguous() &&
                    background.scalar_type() == centers.scalar_type() && background.device() == centers.device(),
                "background must be a contiguous [D] tensor like features");
}

inline void check_sphere_saved(const SphereDims& d, const torch::Tensor& tile_offsets,
                               const torch::Tensor& flatten_ids, const torch::Tensor& out_features,
                               const torch::Tensor& out_alpha, const torch::Tensor& out_depth,
                               const torch::Tensor& pix_state, const torch::Tensor& last,
                               const torch::Tensor& v_features, const torch::Tensor& v_alpha,
                               const torch::Tensor& v_depth, const torch::Tensor& centers) {
    const int64_t tiles = (int64_t)d.B * d.tiles_x * d.tiles_y, pixels = (int64_t)d.B * d.H * d.W;
    TORCH_CHECK(tile_offsets.numel() == tiles + 1 && tile_offsets.scalar_type() == torch::kLong &&
                    tile_offsets.is_contiguous(),
                "tile_offsets must be int64 [B * tiles + 1]");
    TORCH_CHECK(flatten_ids.dim() == 1 && flatten_ids.scalar_type() == torch::kInt && flatten_ids.is_contiguous(),
                "flatten_ids must be int32 [M]");
    TORCH_CHECK(last.numel() == pixels && last.scalar_type() == torch::kInt && last.is_contiguous(),
                "last must be int32 [B, H, W]");
    for (const torch::Tensor* t : {&out_features, &v_features})
        TORCH_CHECK(t->numel() == pixels * d.D && t->scalar_type() == centers.scalar_type() && t->is_contiguous(),
                    "features images must be contiguous [B, H, W, D] like centers");
    for (const torch::Tensor* t : {&out_alpha, &out_depth, &v_alpha, &v_depth})
        TORCH_CHECK(t->numel() == pixels && t->scalar_type() == centers.scalar_type() && t->is_contiguous(),
                    "alpha and depth images must be contiguous [B, H, W] like centers");
    TORCH_CHECK(pix_state.numel() == 2 * pixels && pix_state.scalar_type() == centers.scalar_type() &&
                    pix_state.is_contiguous(),
                "pix_state must be [B, H, W, 2] like centers");
    for (const torch::Tensor* t : {&tile_offsets, &flatten_ids, &out_features, &out_alpha, &out_depth, &pix_state,
                                   &last, &v_features, &v_alpha, &v_depth})
        TORCH_CHECK(t->device() == centers.device(), "sphere_render: saved tensors must share a device");
}

}  // namespace spheres
}  // namespace scenegrad
