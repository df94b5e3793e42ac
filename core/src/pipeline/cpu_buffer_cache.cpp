#include "sds/cpu_buffer_cache.h"

#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

namespace sds {
namespace {

size_t max_idle_from_env() {
    const char* v = std::getenv("SDS_CPU_BUFFER_CACHE_MIB");
    if (v == nullptr || *v == '\0') {
        return size_t{4} << 30;
    }
    try {
        return static_cast<size_t>(std::stoull(v)) << 20;
    } catch (const std::exception&) {
        return size_t{4} << 30;
    }
}

void release_buffer(void* p);

// Wraps LibTorch's CPU allocation (c10::alloc_cpu: aligned, the same memory it hands out itself)
// for every CPU buffer once installed, so that one deleter serves all of them (oneDNN's raw
// allocations through raw_allocate/raw_deallocate need that).
class CachingCpuAllocator final : public c10::Allocator {
  public:
    c10::DataPtr allocate(size_t n) override {
        void* p = take(n);
        return {p, p, &release_buffer, c10::Device(c10::kCPU)};
    }
    c10::DeleterFnPtr raw_deleter() const override { return &release_buffer; }
    void copy_data(void* dest, const void* src, size_t count) const override {
        default_copy_data(dest, src, count);
    }

    void* take(size_t n) {
        if (n >= kCpuBufferMinBytes) {
            std::lock_guard lock(mutex_);
            if (scopes_ > 0) {
                auto it = idle_.find(n);
                void* p = nullptr;
                if (it != idle_.end() && !it->second.empty()) {
                    p = it->second.back();
                    it->second.pop_back();
                    idle_bytes_ -= n;
                    ++hits_;
                } else {
                    p = c10::alloc_cpu(n);
                    ++misses_;
                }
                tracked_[p] = n;
                live_bytes_ += n;
                return p;
            }
        }
        return c10::alloc_cpu(n);
    }

    void give(void* p) {
        if (p == nullptr) {
            return;
        }
        {
            std::lock_guard lock(mutex_);
            auto it = tracked_.find(p);
            if (it != tracked_.end()) {
                const size_t n = it->second;
                tracked_.erase(it);
                live_bytes_ -= n;
                if (scopes_ > 0 && idle_bytes_ + n <= max_idle_) {
                    idle_[n].push_back(p);
                    idle_bytes_ += n;
                    return;
                }
            }
        }
        c10::free_cpu(p);
    }

    void enter() {
        std::lock_guard lock(mutex_);
        ++scopes_;
    }

    void leave() {
        std::vector<void*> drop;
        {
            std::lock_guard lock(mutex_);
            if (--scopes_ > 0) {
                return;
            }
            for (auto& [n, ps] : idle_) {
                drop.insert(drop.end(), ps.begin(), ps.end());
            }
            idle_.clear();
            idle_bytes_ = 0;
        }
        for (void* p : drop) {
            c10::free_cpu(p);
        }
    }

    CpuBufferStats stats() {
        std::lock_guard lock(mutex_);
        return {hits_, misses_, idle_bytes_, live_bytes_};
    }

    size_t max_idle() const { return max_idle_; }

  private:
    std::mutex mutex_;
    int scopes_ = 0;
    const size_t max_idle_ = max_idle_from_env();
    std::unordered_map<size_t, std::vector<void*>> idle_;  // by exact size
    std::unordered_map<void*, size_t> tracked_;            // live buffers taken while in a scope
    size_t idle_bytes_ = 0;
    size_t live_bytes_ = 0;
    int64_t hits_ = 0;
    int64_t misses_ = 0;
};

// Never destroyed: tensors may be freed during static destruction.
CachingCpuAllocator& cache() {
    static auto* instance = [] {
        auto* a = new CachingCpuAllocator();
        if (a->max_idle() > 0) {
            c10::SetCPUAllocator(a, /*priority=*/1);
        }
        return a;
    }();
    return *instance;
}

void release_buffer(void* p) {
    cache().give(p);
}

}  // namespace

CpuBufferScope::CpuBufferScope() {
    cache().enter();
}
CpuBufferScope::~CpuBufferScope() {
    cache().leave();
}

CpuBufferStats cpu_buffer_stats() {
    return cache().stats();
}

size_t cpu_buffer_max_idle_bytes() {
    return cache().max_idle();
}

}  // namespace sds
