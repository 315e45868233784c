// Launchers of project_gaussians (see render/gaussians/project.py) and the argument checks they
// share. project_bindings.cpp picks the CPU or CUDA launcher by device; the math is in project.h.
#pragma once
#include "common/aten.h"

#include <vector>

#include "gaussians/project.h"

namespace scenegrad {
namespace gaussians {

// means [N, 3], quats [N, 4], scales [N, 3], viewmats [C, 4, 4], Ks [C, 3, 3] (float32/64) ->
// {radii [C, N] int32, means2d [C, N, 2], depths [C, N], conics [C, N, 3],
//  compensations [C, N] (an empty tensor unless antialiased)}.
std::vector<torch::Tensor> project_gaussians_fwd_cpu(const torch::Tensor& means, const torch::Tensor& quats,
                                                     const torch::Tensor& scales, const torch::Tensor& viewmats,
                                                     const torch::Tensor& Ks, const ProjectParams<double>& p);
// The inputs, the forward's radii and the output gradients (v_compensations undefined unless
// antialiased) -> {v_means [N, 3], v_quats [N, 4], v_scales [N, 3], v_viewmats [C, 4, 4], v_Ks [C, 3, 3]};
// the last two are undefined unless camera_grads.
std::vector<torch::Tensor> project_gaussians_bwd_cpu(
    const torch::Tensor& means, const torch::Tensor& quats, const torch::Tensor& scales,
    const torch::Tensor& viewmats, const torch::Tensor& Ks, const ProjectParams<double>& p, const torch::Tensor& radii,
    const torch::Tensor& v_means2d, const torch::Tensor& v_depths, const torch::Tensor& v_conics,
    const torch::Tensor& v_compensations, bool camera_grads);

#ifdef SCENEGRAD_WITH_CUDA
std::vector<torch::Tensor> project_gaussians_fwd_cuda(const torch::Tensor& means, const torch::Tensor& quats,
                                                      const torch::Tensor& scales, const torch::Tensor& viewmats,
                                                      const torch::Tensor& Ks, const ProjectParams<double>& p);
std::vector<torch::Tensor> project_gaussians_bwd_cuda(
    const torch::Tensor& means, const torch::Tensor& quats, const torch::Tensor& scales,
    const torch::Tensor& viewmats, const torch::Tensor& Ks, const ProjectParams<double>& p, const torch::Tensor& radii,
    const torch::Tensor& v_means2d, const torch::Tensor& v_depths, const torch::Tensor& v_conics,
    const torch::Tensor& v_compensations, bool camera_grads);
#endif

// The parameters in the kernels' dtype.
template <typename T>
ProjectParams<T> cast_params(const ProjectParams<double>& p) {
    return {T(p.eps2d), T(p.near_plane), T(p.far_plane), T(p.radius_clip), p.width, p.height, p.antialiased};
}

inline void check_shape(const torch::Tensor& t, std::initializer_list<int64_t> shape, const char* name,
                        const torch::Tensor& like) {
    TORCH_CHECK(t.dim() == (int64_t)shape.size(), "project_gaussians: ", name, " has shape ", t.sizes());
    int i = 0;
    for (int64_t s : shape) {
        TORCH_CHECK(t.size(i) == s, "project_gaussians: ", name, " has shape ", t.sizes());
        ++i;
    }
    TORCH_CHECK(t.is_contiguous(), "project_gaussians: ", name, " must be contiguous");
    TORCH_CHECK(t.device() == like.device(), "project_gaussians: ", name, " must be on means' device");
    if (t.scalar_type() != torch::kInt)
        TORCH_CHECK(t.scalar_type() == like.scalar_type(), "project_gaussians: ", name, " must have means' dtype");
}

// The forward's outputs, uninitialised: radii, means2d, depths, conics, compensations ([0, 0] unless
// antialiased).
inline std::vector<torch::Tensor> project_outputs(const torch::Tensor& means, int64_t C, int64_t N,
                                                  bool antialiased) {
    const auto opts = means.options();
    return {torch::empty({C, N}, opts.dtype(torch::kInt)), torch::empty({C, N, 2}, opts), torch::empty({C, N}, opts),
            torch::empty({C, N, 3}, opts), torch::empty({antialiased ? C : 0, antialiased ? N : 0}, opts)};
}

// Checks shared by the launchers; returns (C, N).
inline std::pair<int64_t, int64_t> check_project_inputs(const torch::Tensor& means, const torch::Tensor& quats,
                                                        const torch::Tensor& scales, const torch::Tensor& viewmats,
                                                        const torch::Tensor& Ks) {
    TORCH_CHECK(means.dim() == 2 && means.size(1) == 3, "project_gaussians: means must be [N, 3], got ",
                means.sizes());
    TORCH_CHECK(viewmats.dim() == 3, "project_gaussians: viewmats must be [C, 4, 4], got ", viewmats.sizes());
    const int64_t N = means.size(0), C = viewmats.size(0);
    check_shape(means, {N, 3}, "means", means);
    check_shape(quats, {N, 4}, "quats", means);
    check_shape(scales, {N, 3}, "scales", means);
    check_shape(viewmats, {C, 4, 4}, "viewmats", means);
    check_shape(Ks, {C, 3, 3}, "Ks", means);
    return {C, N};
}

inline void check_project_grads(int64_t C, int64_t N, const torch::Tensor& means, const torch::Tensor& radii,
                                const torch::Tensor& v_means2d, const torch::Tensor& v_depths,
                                const torch::Tensor& v_conics, const torch::Tensor& v_compensations,
                                bool antialiased) {
    check_shape(radii, {C, N}, "radii", means);
    TORCH_CHECK(radii.scalar_type() == torch::kInt, "project_gaussians: radii must be int32");
    check_shape(v_means2d, {C, N, 2}, "v_means2d", means);
    check_shape(v_depths, {C, N}, "v_depths", means);
    check_shape(v_conics, {C, N, 3}, "v_conics", means);
    if (antialiased && v_compensations.defined()) check_shape(v_compensations, {C, N}, "v_compensations", means);
}

}  // namespace gaussians
}  // namespace scenegrad
