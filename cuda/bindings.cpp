// The Python module of scenegrad's native kernels. Each operation picks its CPU or CUDA
// launcher here, by the device of its first tensor, and nowhere else.
#include <torch/extension.h>

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

#include "mesh/ops.h"

namespace scenegrad {
namespace {

[[noreturn]] void no_cuda(const char* op) {
    TORCH_CHECK(false, op, ": got CUDA tensors, but scenegrad's native kernels were built without CUDA "
                "(torch without CUDA or no nvcc at build time); use backend='reference'");
}

std::vector<torch::Tensor> rasterize_fwd(const torch::Tensor& pos, const torch::Tensor& tri, int64_t height,
                                         int64_t width) {
    if (pos.is_cuda()) {
#ifdef SCENEGRAD_WITH_CUDA
        return mesh::rasterize_fwd_cuda(pos, tri, height, width);
#else
        no_cuda("rasterize");
#endif
    }
    return mesh::rasterize_fwd_cpu(pos, tri, height, width);
}

torch::Tensor rasterize_bwd(const torch::Tensor& pos, const torch::Tensor& tri, const torch::Tensor& rast,
                            const torch::Tensor& grad_rast, const c10::optional<torch::Tensor>& grad_db) {
    if (pos.is_cuda()) {
#ifdef SCENEGRAD_WITH_CUDA
        return mesh::rasterize_bwd_cuda(pos, tri, rast, grad_rast, grad_db);
#else
        no_cuda("rasterize backward");
#endif
    }
    return mesh::rasterize_bwd_cpu(pos, tri, rast, grad_rast, grad_db);
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
}
