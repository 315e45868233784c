// Shared macros for code compiled by both the host C++ compiler and nvcc.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define SG_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define SG_HD inline __attribute__((always_inline))
#else
#define SG_HD inline
#endif

// OpenMP pragmas that also work inside macro arguments (AT_DISPATCH_* lambdas), and vanish
// where OpenMP is not available: SG_OMP(parallel for schedule(static)).
#ifdef SCENEGRAD_OPENMP
#define SG_PRAGMA(x) _Pragma(#x)
#define SG_OMP(x) SG_PRAGMA(omp x)
#else
#define SG_OMP(x)
#endif

namespace scenegrad {

template <typename T>
SG_HD T sg_min(T a, T b) { return a < b ? a : b; }

template <typename T>
SG_HD T sg_max(T a, T b) { return a > b ? a : b; }

template <typename T>
SG_HD bool sg_isfinite(T x) { return (x - x) == (x - x); }  // NaN and inf give NaN

#if defined(__CUDA_ARCH__)
template <typename T>
SG_HD T sg_floor(T x) { return floor(x); }
template <typename T>
SG_HD T sg_ceil(T x) { return ceil(x); }
template <typename T>
SG_HD T sg_log2(T x) { return log2(x); }
template <typename T>
SG_HD T sg_sqrt(T x) { return sqrt(x); }
template <typename T>
SG_HD T sg_exp(T x) { return exp(x); }
template <typename T>
SG_HD T sg_log(T x) { return log(x); }
#else
template <typename T>
SG_HD T sg_floor(T x) { return std::floor(x); }
template <typename T>
SG_HD T sg_ceil(T x) { return std::ceil(x); }
template <typename T>
SG_HD T sg_log2(T x) { return std::log2(x); }
template <typename T>
SG_HD T sg_sqrt(T x) { return std::sqrt(x); }
template <typename T>
SG_HD T sg_exp(T x) { return std::exp(x); }
template <typename T>
SG_HD T sg_log(T x) { return std::log(x); }
#endif

// floor(x) as an int without a libm call (x86-64 without SSE4.1 has no floor instruction), for
// x clamped to [-2^30, 2^30] first; NaN maps to -2^30.
template <typename T>
SG_HD int sg_ifloor(T x) {
    const T big = T(1 << 30);
    x = x > -big ? (x < big ? x : big) : -big;
    const int i = (int)x;
    return i - (x < T(i) ? 1 : 0);
}

}  // namespace scenegrad
