// Launchers of marching cubes (see render/iso/marching_cubes.py); iso_bindings.cpp picks the CPU
// or CUDA one by device. The math is in marching_cubes.h.
#pragma once
#include "common/aten.h"

#include <vector>

namespace scenegrad {
namespace iso {

// values [X, Y, Z] float32/64 contiguous, tris [256, M, 3] int8, counts [256] int8 ->
// {edges [V, 2] int64 (flat grid indices of each vertex's edge, lower end first), faces [F, 3] int32,
//  non_finite [] int64 (the count of NaN / inf values; when > 0 the mesh is left empty)}.
std::vector<torch::Tensor> marching_cubes_fwd_cpu(const torch::Tensor& values, double level,
                                                  const torch::Tensor& tris, const torch::Tensor& counts);
#ifdef SCENEGRAD_WITH_CUDA
std::vector<torch::Tensor> marching_cubes_fwd_cuda(const torch::Tensor& values, double level,
                                                   const torch::Tensor& tris, const torch::Tensor& counts);
#endif

inline void check_marching_cubes_inputs(const torch::Tensor& values, const torch::Tensor& tris,
                                        const torch::Tensor& counts) {
    TORCH_CHECK(values.dim() == 3 && values.is_contiguous() && values.is_floating_point(),
                "marching_cubes: values must be a contiguous [X, Y, Z] float tensor, got ", values.sizes());
    TORCH_CHECK(tris.dim() == 3 && tris.size(0) == 256 && tris.size(2) == 3 && tris.scalar_type() == torch::kChar &&
                    tris.is_contiguous() && tris.device() == values.device(),
                "marching_cubes: tris must be a contiguous int8 [256, M, 3] table on values' device");
    TORCH_CHECK(counts.dim() == 1 && counts.size(0) == 256 && counts.scalar_type() == torch::kChar &&
                    counts.is_contiguous() && counts.device() == values.device(),
                "marching_cubes: counts must be a contiguous int8 [256] table on values' device");
    TORCH_CHECK(values.numel() < (int64_t(1) << 40), "marching_cubes: grid too large");
}

}  // namespace iso
}  // namespace scenegrad
