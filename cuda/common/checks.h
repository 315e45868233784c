// Argument checks shared by the CPU and CUDA launchers (torch side only, never in kernels).
#pragma once
#include "common/aten.h"

#define SG_CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define SG_CHECK_CPU(x) TORCH_CHECK((x).device().is_cpu(), #x " must be a CPU tensor")
#define SG_CHECK_CUDA(x) TORCH_CHECK((x).device().is_cuda(), #x " must be a CUDA tensor")
#define SG_CHECK_DTYPE(x, dtype) \
    TORCH_CHECK((x).scalar_type() == (dtype), #x " must have dtype " #dtype ", got ", (x).scalar_type())
#define SG_CHECK_SAME_DEVICE(x, y) \
    TORCH_CHECK((x).device() == (y).device(), #x " and " #y " must be on the same device")
