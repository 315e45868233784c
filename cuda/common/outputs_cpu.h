// Output tensors of the CPU launchers, in memory kept between calls.
//
// glibc gives a large block back to the kernel when it is freed (munmap, or trimming the top of the
// heap), so a render loop that frees last iteration's outputs and allocates this iteration's takes
// a page fault for every 4 KiB it writes. On the 2-core VMs this project is measured on that cost
// 13 ms per forward of 10k spheres at 512x512 (16 MiB of outputs), a third of the whole pass.
// pooled_empty returns a tensor like torch::empty whose memory, when the tensor is freed, goes back
// to a cache for the next call instead of to the system. The cache keeps at most kMaxCachedBytes; a
// block is reused for a request between half and all of its size.
//
//   auto out = pooled_empty({B, H, W, D}, centers.options());   // uninitialised, like torch::empty
#pragma once
#include "common/aten.h"

#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace scenegrad {

class OutputPool {
   public:
    static constexpr size_t kMaxCachedBytes = size_t(512) << 20;
    static constexpr size_t kMinBytes = size_t(256) << 10;  // smaller tensors: torch::empty

    // Never destroyed: tensors still alive at exit give their blocks back after static destructors run.
    static OutputPool& instance() {
        static OutputPool* pool = new OutputPool();
        return *pool;
    }

    // A block of at least `bytes` (64-byte aligned) and its size.
    void* get(size_t bytes, size_t& size) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            size_t best = free_.size();
            for (size_t i = 0; i < free_.size(); ++i) {
                const size_t s = free_[i].bytes;
                if (s >= bytes && s / 2 <= bytes && (best == free_.size() || s < free_[best].bytes)) best = i;
            }
            if (best < free_.size()) {
                const Block b = free_[best];
                free_.erase(free_.begin() + (std::ptrdiff_t)best);
                cached_ -= b.bytes;
                size = b.bytes;
                return b.ptr;
            }
        }
        size = (bytes + 63) / 64 * 64;
        void* p = std::aligned_alloc(64, size);
        if (!p) throw std::bad_alloc();
        return p;
    }

    void put(void* p, size_t size) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (cached_ + size > kMaxCachedBytes) {
            std::free(p);
            return;
        }
        free_.push_back({p, size});
        cached_ += size;
    }

    OutputPool(const OutputPool&) = delete;
    OutputPool& operator=(const OutputPool&) = delete;

   private:
    OutputPool() = default;
    struct Block {
        void* ptr;
        size_t bytes;
    };
    std::mutex mutex_;
    std::vector<Block> free_;
    size_t cached_ = 0;
};

// torch::empty(sizes, options) for CPU tensors, from the pool when at least kMinBytes.
inline torch::Tensor pooled_empty(at::IntArrayRef sizes, const torch::TensorOptions& options) {
    int64_t numel = 1;
    for (const int64_t s : sizes) numel *= s;
    const size_t bytes = (size_t)numel * options.dtype().itemsize();
    if (bytes < OutputPool::kMinBytes || options.device().type() != torch::kCPU) return torch::empty(sizes, options);
    size_t size = 0;
    void* p = OutputPool::instance().get(bytes, size);
    return at::from_blob(p, sizes, [size](void* q) { OutputPool::instance().put(q, size); }, options);
}

}  // namespace scenegrad
