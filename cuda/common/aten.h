// The part of ATen the kernels and launchers use: tensors with their methods, the dtype dispatch
// macros and the few operators called by name (per-operator headers). torch/types.h would bring
// every operator's declaration, which doubles the parse time of each source (and of each .cu file
// in nvcc's three passes); only the bindings include the Python side (common/dispatch.h).
// torch::Tensor, torch::empty etc. are ATen's names (the using-directive below, as torch/types.h
// has it); dtypes are named as ATen names them (torch::kInt, torch::kLong, torch::kFloat, ...).
#pragma once
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

namespace torch {
using namespace at;  // NOLINT: the same directive as torch/types.h's
}  // namespace torch
