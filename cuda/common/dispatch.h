// Device dispatch of the native operations: each binding calls SG_DISPATCH(area, op, tensor, args...)
// which runs area::op_cuda(args...) for CUDA tensors and area::op_cpu(args...) otherwise. This
// choice is made here and nowhere else.
#pragma once
#include <torch/python.h>  // pybind11 and its casters for tensors: only the bindings include this header

namespace scenegrad {

using OptTensor = c10::optional<torch::Tensor>;

[[noreturn]] inline void no_cuda(const char* op) {
    TORCH_CHECK(false, op, ": got CUDA tensors, but scenegrad's native kernels were built without CUDA "
                "(torch without CUDA or no nvcc at build time); use backend='reference'");
}

inline torch::Tensor value_or_undefined(const OptTensor& t) { return t.has_value() ? *t : torch::Tensor(); }

}  // namespace scenegrad

#ifdef SCENEGRAD_WITH_CUDA
#define SG_DISPATCH(area, op, device_tensor, ...) \
    return (device_tensor).is_cuda() ? area::op##_cuda(__VA_ARGS__) : area::op##_cpu(__VA_ARGS__)
#else
#define SG_DISPATCH(area, op, device_tensor, ...)        \
    if ((device_tensor).is_cuda()) scenegrad::no_cuda(#op); \
    return area::op##_cpu(__VA_ARGS__)
#endif
