// Zeroed scratch memory for the CPU launchers, kept between calls.
//
// A backward pass that scatters into a large buffer (a texture's mip pyramid, per-thread copies of
// a gradient) would otherwise allocate and zero fresh pages on every call: page faults, the kernel
// clearing pages, and on release TLB shoot-downs across threads, which on two cores cost more than
// the scatter itself. Buffers taken from the pool are zero; whoever gives one back promises it is
// zero again (zeroing only what it wrote is usually far cheaper than a fresh allocation). The pool
// keeps at most kMaxCachedBytes and frees the rest.
//
//   float* s = scratch_acquire<float>(n);   // n zeros
//   ... use, then zero what was written ...
//   scratch_release(s, n);
#pragma once
#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace scenegrad {

class ScratchPool {
   public:
    static constexpr size_t kMaxCachedBytes = size_t(512) << 20;

    static ScratchPool& instance() {
        static ScratchPool pool;
        return pool;
    }

    // `bytes` of zeros: the smallest cached buffer that fits, else a fresh calloc.
    void* acquire(size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            size_t best = free_.size();
            for (size_t i = 0; i < free_.size(); ++i)
                if (free_[i].bytes >= bytes && (best == free_.size() || free_[i].bytes < free_[best].bytes)) best = i;
            if (best < free_.size()) {
                Block b = free_[best];
                free_.erase(free_.begin() + (std::ptrdiff_t)best);
                cached_ -= b.bytes;
                used_.push_back(b);
                return b.ptr;
            }
        }
        void* p = std::calloc(bytes, 1);
        if (!p) throw std::bad_alloc();
        std::lock_guard<std::mutex> lock(mutex_);
        used_.push_back({p, bytes});
        return p;
    }

    // Gives back a buffer from acquire(); `zeroed` says whether it is all zeros again.
    void release(void* p, bool zeroed) {
        if (!p) return;
        std::lock_guard<std::mutex> lock(mutex_);
        for (size_t i = 0; i < used_.size(); ++i) {
            if (used_[i].ptr != p) continue;
            const Block b = used_[i];
            used_.erase(used_.begin() + (std::ptrdiff_t)i);
            if (zeroed && cached_ + b.bytes <= kMaxCachedBytes) {
                free_.push_back(b);
                cached_ += b.bytes;
            } else {
                std::free(p);
            }
            return;
        }
        std::free(p);  // not from this pool
    }

    ScratchPool(const ScratchPool&) = delete;
    ScratchPool& operator=(const ScratchPool&) = delete;

   private:
    ScratchPool() = default;
    ~ScratchPool() {
        for (const Block& b : free_) std::free(b.ptr);
    }
    struct Block {
        void* ptr;
        size_t bytes;
    };
    std::mutex mutex_;
    std::vector<Block> free_, used_;
    size_t cached_ = 0;
};

template <typename T>
T* scratch_acquire(int64_t n) {
    return static_cast<T*>(ScratchPool::instance().acquire((size_t)(n > 0 ? n : 1) * sizeof(T)));
}

template <typename T>
void scratch_release(T* p, bool zeroed = true) {
    ScratchPool::instance().release(p, zeroed);
}

}  // namespace scenegrad
