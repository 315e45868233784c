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
//
// Buffered (no target): every thread, thread 0 too, adds into pooled copies, and take() stores the
// sums into the caller's output range by range, so a freshly allocated output is written once
// instead of zero-filled first and added into (with many threads, one shared copy and atomic adds):
//
//   ScatterAdd<float> scatter(n);
//   SG_OMP(parallel for) for (...) { const auto g = scatter.local(); g.add(g.data() + i, v); }
//   SG_OMP(parallel for) for (each range [lo, hi) of a partition of [0, n)) scatter.take(out, lo, hi);
//   scatter.finish();
#pragma once
#include <algorithm>
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

    // Buffered: n zeros in pooled copies (one per thread, or one shared with atomic adds) and no
    // target; read the sums with take() and call finish().
    explicit ScatterAdd(int64_t n) : target_(nullptr), n_(n), buffered_(true) {
#ifdef SCENEGRAD_OPENMP
        const int threads = omp_get_max_threads();
#else
        const int threads = 1;
#endif
        const int64_t blocks = (n >> kBlockShift) + 1;
        int copies = 1;
        if (threads > 1 && threads <= kMaxPrivateThreads && (int64_t)threads * n * (int64_t)sizeof(T) <= kMaxPrivateBytes)
            copies = threads;
        try {
            for (int t = 0; t < copies; ++t) {
                copies_.push_back(scratch_acquire<T>(n));
                flags_.push_back(scratch_acquire<unsigned char>(blocks));
            }
        } catch (const std::bad_alloc&) {
            if (flags_.empty()) {  // not even one copy with its flags
                release(false);
                throw;
            }
            while (copies_.size() > 1) {  // keep the first copy, shared (all still zero)
                scratch_release(copies_.back(), true);
                copies_.pop_back();
            }
            while (flags_.size() > 1) {
                scratch_release(flags_.back(), true);
                flags_.pop_back();
            }
        }
        atomic_ = threads > 1 && copies_.size() == 1;
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
            add_unflagged(where, value);
            flag(where, 1);
        }

        // add() in two halves, for callers that add to a short run of elements in a row:
        // add_unflagged() for each, then flag(first, n) once for the run [first, first + n).
        void add_unflagged(T* where, T value) const {
            if (atomic_) {
                SG_OMP(atomic)
                *where += value;
            } else {
                *where += value;
            }
        }
        void flag(const T* first, int64_t n) const {
            if (!flags_) return;
            const uint64_t b0 = (uint64_t)(first - base_) >> kBlockShift;
            const uint64_t b1 = (uint64_t)(first + n - 1 - base_) >> kBlockShift;
            // A short run lies in one block or two. The loop over the blocks between is kept off
            // that path: GCC turns it into a call to memset, which cost a tenth of a texture's
            // backward when it ran for every texel.
            mark(b0);
            if (b1 != b0) {
                mark(b1);
                for (uint64_t b = b0 + 1; b < b1; ++b) mark(b);
            }
        }

       private:
        friend class ScatterAdd;
        void mark(uint64_t b) const {
            if (atomic_) {
                __atomic_store_n(&flags_[b], 1, __ATOMIC_RELAXED);
            } else {
                flags_[b] = 1;
            }
        }
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
#else
        const int t = 0;
#endif
        // Thread 0 adds into the target, thread t > 0 into copy t - 1; buffered, thread t uses copy t
        // (or the one shared copy).
        const int i = buffered_ ? (copies_.size() == 1 ? 0 : t) : t - 1;
        if (i >= 0 && i < (int)copies_.size()) {
            l.base_ = copies_[i];
            l.flags_ = flags_[i];
        }
        return l;
    }

    // Buffered: stores the sums of elements [lo, hi) into out[0, hi - lo) and zeroes what it read.
    // Disjoint ranges may be taken in parallel; take every element once, then call finish().
    void take(T* out, int64_t lo, int64_t hi) {
        for (int64_t b = lo >> kBlockShift; lo < hi && b <= (hi - 1) >> kBlockShift; ++b) {
            const int64_t s = std::max(lo, b << kBlockShift), e = std::min(hi, (b + 1) << kBlockShift);
            sum_block(out + (s - lo), b, s, e, false);
        }
    }

    // Buffered: after every element was taken, returns the copies (zero again) to the pool.
    void finish() {
        const int64_t blocks = (n_ >> kBlockShift) + 1;
        for (unsigned char* f : flags_) std::fill(f, f + blocks, (unsigned char)0);
        release(true);
    }

    // Sums the touched blocks of the private copies into the target (call after the parallel region).
    void reduce() {
        if (copies_.empty()) return;
        const int k = (int)copies_.size();
        const int64_t n = n_, blocks = (n >> kBlockShift) + 1;
        SG_OMP(parallel for schedule(static))
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t lo = b << kBlockShift, hi = std::min(n, lo + (int64_t(1) << kBlockShift));
            sum_block(target_ + lo, b, lo, hi, true);
            for (int c = 0; c < k; ++c) flags_[c][b] = 0;
        }
        release(true);
    }

   private:
    // Stores (accumulate = false) or adds the copies' sums of elements [s, e), which lie in block b,
    // into o[0, e - s), and zeroes what it read (the block's flags stay set).
    void sum_block(T* o, int64_t b, int64_t s, int64_t e, bool accumulate) const {
        bool written = accumulate;
        for (size_t c = 0; c < copies_.size(); ++c) {
            if (!flags_[c][b]) continue;
            T* src = copies_[c];
            if (written) {
                for (int64_t i = s; i < e; ++i) o[i - s] += src[i];
            } else {
                for (int64_t i = s; i < e; ++i) o[i - s] = src[i];
                written = true;
            }
            std::fill(src + s, src + e, T(0));
        }
        if (!written) std::fill(o, o + (e - s), T(0));
    }

    // Returns the copies to the scratch pool (`zeroed`: they are all zeros again, else freed).
    void release(bool zeroed) {
        for (T* copy : copies_) scratch_release(copy, zeroed);
        for (unsigned char* f : flags_) scratch_release(f, zeroed);
        copies_.clear();
        flags_.clear();
    }

    T* target_;
    int64_t n_;
    bool buffered_ = false;
    bool atomic_ = false;
    std::vector<T*> copies_;
    std::vector<unsigned char*> flags_;
};

}  // namespace scenegrad
