// The Python module of scenegrad's native kernels. Each operation picks its CPU or CUDA
// launcher by the device of its first tensor, through SG_DISPATCH (common/dispatch.h).
#include <torch/python.h>

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

#include "common/dispatch.h"
#include "mesh/ops.h"

namespace scenegrad {

// Gaussian splatting, iso-surfaces, spheres and the bundle adjustment register their operations from
// their own files (cuda/gaussians/*_bindings.cpp, cuda/iso/iso_bindings.cpp, ...).
void bind_gaussian_rasterize(pybind11::module_& m);
void bind_gaussian_project(pybind11::module_& m);
void bind_marching_cubes(pybind11::module_& m);
void bind_ba(pybind11::module_& m);
void bind_sphere_render(pybind11::module_& m);

namespace {

using torch::Tensor;

std::vector<Tensor> rasterize_fwd(const Tensor& pos, const Tensor& tri, int64_t height, int64_t width) {
    SG_DISPATCH(mesh, rasterize_fwd, pos, pos, tri, height, width);
}

Tensor rasterize_bwd(const Tensor& pos, const Tensor& tri, const Tensor& rast, const Tensor& grad_rast,
                     const OptTensor& grad_db) {
    SG_DISPATCH(mesh, rasterize_bwd, pos, pos, tri, rast, grad_rast, grad_db);
}

std::vector<Tensor> interpolate_fwd(const Tensor& attr, const Tensor& rast, const Tensor& tri,
                                    const OptTensor& rast_db, const Tensor& diff) {
    const Tensor db = value_or_undefined(rast_db);
    SG_DISPATCH(mesh, interpolate_fwd, rast, attr, rast, tri, db, diff);
}

std::vector<Tensor> interpolate_bwd(const Tensor& attr, const Tensor& rast, const Tensor& tri,
                                    const OptTensor& rast_db, const Tensor& diff, const Tensor& grad_out,
                                    const OptTensor& grad_out_da) {
    const Tensor db = value_or_undefined(rast_db);
    const Tensor gda = value_or_undefined(grad_out_da);
    SG_DISPATCH(mesh, interpolate_bwd, rast, attr, rast, tri, db, diff, grad_out, gda);
}

Tensor antialias_fwd(const Tensor& color, const Tensor& rast, const Tensor& pos, const Tensor& tri,
                     const Tensor& opposite) {
    SG_DISPATCH(mesh, antialias_fwd, color, color, rast, pos, tri, opposite);
}

std::vector<Tensor> antialias_bwd(const Tensor& color, const Tensor& rast, const Tensor& pos, const Tensor& tri,
                                  const Tensor& opposite, const Tensor& grad_out) {
    SG_DISPATCH(mesh, antialias_bwd, color, color, rast, pos, tri, opposite, grad_out);
}

Tensor texture_fwd(const Tensor& tex, const Tensor& coarse, const Tensor& offsets, const Tensor& sizes,
                   const Tensor& uv, const OptTensor& uv_da, const OptTensor& bias, const OptTensor& mask,
                   int64_t boundary, int64_t filter) {
    const Tensor da = value_or_undefined(uv_da), b = value_or_undefined(bias), m = value_or_undefined(mask);
    SG_DISPATCH(mesh, texture_fwd, uv, tex, coarse, offsets, sizes, uv, da, b, m, boundary, filter);
}

std::vector<Tensor> texture_bwd(const Tensor& tex, const Tensor& coarse, const Tensor& offsets, const Tensor& sizes,
                                const Tensor& uv, const OptTensor& uv_da, const OptTensor& bias, const OptTensor& mask,
                                int64_t boundary, int64_t filter, const Tensor& grad_out) {
    const Tensor da = value_or_undefined(uv_da), b = value_or_undefined(bias), m = value_or_undefined(mask);
    SG_DISPATCH(mesh, texture_bwd, uv, tex, coarse, offsets, sizes, uv, da, b, m, boundary, filter, grad_out);
}

Tensor texture_mip(const Tensor& tex, const Tensor& offsets, const Tensor& sizes) {
    SG_DISPATCH(mesh, texture_mip, tex, tex, offsets, sizes);
}

bool with_cuda() {
#ifdef SCENEGRAD_WITH_CUDA
    return true;
#else
    return false;
#endif
}

int openmp_threads() {
#ifdef SCENEGRAD_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace
}  // namespace scenegrad

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "scenegrad native kernels (CPU and, where built, CUDA)";
    m.def("with_cuda", &scenegrad::with_cuda, "whether the CUDA launchers were compiled in");
    m.def("openmp_threads", &scenegrad::openmp_threads, "OpenMP threads of the CPU launchers (1 without OpenMP)");
    m.def("rasterize_fwd", &scenegrad::rasterize_fwd, "rasterize triangles (see scenegrad.render.mesh.rasterize)");
    m.def("rasterize_bwd", &scenegrad::rasterize_bwd, "gradient of rasterize with respect to pos");
    m.def("interpolate_fwd", &scenegrad::interpolate_fwd, "interpolate vertex attributes (see render.mesh.interpolate)");
    m.def("interpolate_bwd", &scenegrad::interpolate_bwd, "gradients of interpolate to attr, rast and rast_db");
    m.def("antialias_fwd", &scenegrad::antialias_fwd, "silhouette antialiasing (see render.mesh.antialias)");
    m.def("antialias_bwd", &scenegrad::antialias_bwd, "gradients of antialias to color and pos");
    m.def("texture_fwd", &scenegrad::texture_fwd, "texture lookups (see render.mesh.texture)");
    m.def("texture_bwd", &scenegrad::texture_bwd, "gradients of texture to the texture (mip levels folded in), uv, uv_da and lod");
    m.def("texture_mip", &scenegrad::texture_mip, "mip levels 1 and up of a texture, flattened");
    scenegrad::bind_gaussian_rasterize(m);
    scenegrad::bind_gaussian_project(m);
    scenegrad::bind_marching_cubes(m);
    scenegrad::bind_ba(m);
    scenegrad::bind_sphere_render(m);
}
