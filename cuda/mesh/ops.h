// Launchers of the mesh primitives. bindings.cpp picks the CPU or CUDA one by device.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace scenegrad {
namespace mesh {

// pos [B, V, 4] clip space, tri [T, 3] int32 -> {rast [B, H, W, 4], rast_db [B, H, W, 4]}.
std::vector<torch::Tensor> rasterize_fwd_cpu(const torch::Tensor& pos, const torch::Tensor& tri,
                                             int64_t height, int64_t width);
// -> grad_pos [B, V, 4]; grad_db may be undefined (no gradient through the derivatives).
torch::Tensor rasterize_bwd_cpu(const torch::Tensor& pos, const torch::Tensor& tri,
                                const torch::Tensor& rast, const torch::Tensor& grad_rast,
                                const c10::optional<torch::Tensor>& grad_db);

#ifdef SCENEGRAD_WITH_CUDA
std::vector<torch::Tensor> rasterize_fwd_cuda(const torch::Tensor& pos, const torch::Tensor& tri,
                                              int64_t height, int64_t width);
torch::Tensor rasterize_bwd_cuda(const torch::Tensor& pos, const torch::Tensor& tri,
                                 const torch::Tensor& rast, const torch::Tensor& grad_rast,
                                 const c10::optional<torch::Tensor>& grad_db);
#endif

// Checks shared by both launchers: shapes, dtypes, contiguity, index range.
inline void check_rasterize_inputs(const torch::Tensor& pos, const torch::Tensor& tri, int64_t height,
                                   int64_t width) {
    TORCH_CHECK(pos.dim() == 3 && pos.size(2) == 4, "pos must have shape [B, V, 4], got ", pos.sizes());
    TORCH_CHECK(tri.dim() == 2 && tri.size(1) == 3, "tri must have shape [T, 3], got ", tri.sizes());
    TORCH_CHECK(tri.scalar_type() == torch::kInt32, "tri must be int32, got ", tri.scalar_type());
    TORCH_CHECK(pos.scalar_type() == torch::kFloat32 || pos.scalar_type() == torch::kFloat64,
                "pos must be float32 or float64, got ", pos.scalar_type());
    TORCH_CHECK(pos.is_contiguous() && tri.is_contiguous(), "pos and tri must be contiguous");
    TORCH_CHECK(pos.device() == tri.device(), "pos and tri must be on the same device");
    TORCH_CHECK(height > 0 && width > 0, "resolution must be positive, got ", height, "x", width);
    TORCH_CHECK(tri.size(0) < (1 << 24), "at most 2^24 - 1 triangles (ids are stored in float32)");
}

}  // namespace mesh
}  // namespace scenegrad
