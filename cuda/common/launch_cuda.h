// Launch geometry shared by the CUDA launchers (included from .cu files only): the threads per
// block of the one-thread-per-element kernels, and the blocks that cover n elements.
#pragma once
#include <cstdint>

namespace scenegrad {

constexpr int kThreads = 256;

inline unsigned blocks(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

}  // namespace scenegrad
