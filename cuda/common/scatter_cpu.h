// Scatter-adds from parallel CPU loops. Atomic float adds are compare-and-swap loops on x86 and
// cost about ten plain adds; with few threads it is cheaper to give each thread its own zeroed copy
// of the target (thread 0 adds into the target itself) and sum the copies at the end. With many
// threads, or when the copies would take too much memory, every add is atomic instead.
//
//   ScatterAdd<float> scatter(grad, n);
//   SG_OMP(parallel for) for (...) { float* g = scatter.local(); scatter.add(g + i, v); }
//   scatter.reduce();
#pragma once
#include <cstdint>
#include <cstdlib>
#include <vector>

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

#include "common/hd.h"

namespace scenegrad {

template <typename T>
class ScatterAdd {
   public:
    static constexpr int kMaxPrivateThreads = 4;
    static constexpr int64_t kMaxPrivateBytes = int64_t(8) << 20;

    ScatterAdd(T* target, int64_t n) : target_(target), n_(n) {
#ifdef SCENEGRAD_OPENMP
        const int threads = omp_get_max_threads();
#else
        const int threads = 1;
#endif
        atomic_ = threads > 1;
        if (threads > 1 && threads <= kMaxPrivateThreads &&
            (int64_t)(threads - 1) * n * (int64_t)sizeof(T) <= kMaxPrivateBytes) {
            atomic_ = false;
            for (int t = 1; t < threads; ++t) {
                // calloc: pages a thread never touches stay shared zero pages
                T* copy = static_cast<T*>(std::calloc((size_t)n, sizeof(T)));
                if (!copy) {
                    atomic_ = true;
                    break;
                }
                copies_.push_back(copy);
            }
            if (atomic_) release();
        }
    }
    ~ScatterAdd() { release(); }
    ScatterAdd(const ScatterAdd&) = delete;
    ScatterAdd& operator=(const ScatterAdd&) = delete;

    // This thread's accumulation buffer (call inside the parallel region).
    T* local() const {
#ifdef SCENEGRAD_OPENMP
        const int t = omp_get_thread_num();
        return (t == 0 || copies_.empty()) ? target_ : copies_[t - 1];
#else
        return target_;
#endif
    }

    void add(T* where, T value) const {
        if (atomic_) {
            SG_OMP(atomic)
            *where += value;
        } else {
            *where += value;
        }
    }

    // Sums the private copies into the target (call after the parallel region).
    void reduce() {
        if (copies_.empty()) return;
        const int k = (int)copies_.size();
        T* const* copies = copies_.data();
        T* target = target_;
        SG_OMP(parallel for schedule(static))
        for (int64_t i = 0; i < n_; ++i) {
            T sum = target[i];
            for (int c = 0; c < k; ++c) sum += copies[c][i];
            target[i] = sum;
        }
        release();
    }

   private:
    void release() {
        for (T* copy : copies_) std::free(copy);
        copies_.clear();
    }

    T* target_;
    int64_t n_;
    bool atomic_ = false;
    std::vector<T*> copies_;
};

}  // namespace scenegrad
