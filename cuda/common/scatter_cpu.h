// Scatter-adds from parallel CPU loops. Atomic float adds are compare-and-swap loops on x86 and
// cost about ten plain adds; with few threads it is cheaper to give each thread its own zeroed copy
// of the target (thread 0 adds into the target itself) and sum the copies at the end. Each copy
// keeps a flag per block of 2^kBlockShift elements it wrote, so the reduction (which also zeroes
// what it read) costs what was touched, not the size of the target; the copies then go back to the
// scratch pool (common/scratch_cpu.h) for the next call. With many threads, or when the copies
// could take too much memory, every add is atomic instead.
//
//   ScatterAdd<float> scatter(grad, n);
//   SG_OMP(parallel for) for (...) { const auto g = scatter.local(); g.add(g.data() + i, v); }
//   scatter.reduce();
#pragma once
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#ifdef SCENEGRAD_OPENMP
#include <omp.h>
#endif

#include "common/hd.h"
#include "common/scratch_cpu.h"

namespace scenegrad {

template <typename T>
class ScatterAdd {
   public:
    static constexpr int kMaxPrivateThreads = 4;
    static constexpr int64_t kMaxPrivateBytes = int64_t(256) << 20;
    static constexpr int kBlockShift = 10;                           // 1024 elements per touched flag

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
            const int64_t blocks = (n >> kBlockShift) + 1;
            try {
                for (int t = 1; t < threads; ++t) {
                    copies_.push_back(scratch_acquire<T>(n));
                    flags_.push_back(scratch_acquire<unsigned char>(blocks));
                }
            } catch (const std::bad_alloc&) {
                release(false);
                atomic_ = true;
            }
        }
    }
    ~ScatterAdd() { release(false); }
    ScatterAdd(const ScatterAdd&) = delete;
    ScatterAdd& operator=(const ScatterAdd&) = delete;

    // This thread's accumulation buffer and how to add into it: the target itself (no flags) or the
    // thread's private copy (with its touched-block flags). Take it once per loop body or less,
    // inside the parallel region; its add() then needs no lookup.
    class Local {
       public:
        T* data() const { return base_; }
        // Adds value at `where`, a position in data().
        void add(T* where, T value) const {
            if (atomic_) {
                SG_OMP(atomic)
                *where += value;
                return;
            }
            *where += value;
            if (flags_) flags_[(uint64_t)(where - base_) >> kBlockShift] = 1;
        }

       private:
        friend class ScatterAdd;
        T* base_;
        unsigned char* flags_;  // touched blocks of a private copy; null for the target itself
        bool atomic_;
    };

    Local local() const {
        Local l;
        l.base_ = target_;
        l.flags_ = nullptr;
        l.atomic_ = atomic_;
#ifdef SCENEGRAD_OPENMP
        const int t = omp_get_thread_num();
        if (t > 0 && !copies_.empty()) {
            l.base_ = copies_[t - 1];
            l.flags_ = flags_[t - 1];
        }
#endif
        return l;
    }

    // Sums the touched blocks of the private copies into the target (call after the parallel region).
    void reduce() {
        if (copies_.empty()) return;
        const int k = (int)copies_.size();
        const int64_t n = n_, blocks = (n >> kBlockShift) + 1;
        T* const* copies = copies_.data();
        unsigned char* const* flags = flags_.data();
        T* target = target_;
        SG_OMP(parallel for schedule(static))
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t lo = b << kBlockShift, end = lo + (int64_t(1) << kBlockShift), hi = end < n ? end : n;
            for (int c = 0; c < k; ++c) {
                if (!flags[c][b]) continue;
                T* src = copies[c];
                for (int64_t i = lo; i < hi; ++i) {
                    target[i] += src[i];
                    src[i] = T(0);
                }
                flags[c][b] = 0;
            }
        }
        release(true);
    }

   private:
    // Returns the copies to the scratch pool (`zeroed`: they are all zeros again, else freed).
    void release(bool zeroed) {
        for (T* copy : copies_) scratch_release(copy, zeroed);
        for (unsigned char* f : flags_) scratch_release(f, zeroed);
        copies_.clear();
        flags_.clear();
    }

    T* target_;
    int64_t n_;
    bool atomic_ = false;
    std::vector<T*> copies_;
    std::vector<unsigned char*> flags_;
};

}  // namespace scenegrad
