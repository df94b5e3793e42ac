#pragma once
// Reuse of CPU tensor buffers during a generation.
//
// A denoising loop allocates the same buffers, size for size, at every step. Through glibc each
// large buffer is a fresh mapping that the kernel zero-fills page by page on first touch and
// unmaps again on free: a fifth of a 256x256 SD 1.5 UNet step on the CPU (bench/RESULTS.md).
// While a CpuBufferScope is alive, freed CPU buffers of at least kCpuBufferMinBytes are kept,
// keyed by their exact size, and handed out again to the next allocation of that size. When the
// last scope ends, the kept buffers are released. Buffers allocated outside any scope are plain
// c10::alloc_cpu/free_cpu, as LibTorch's own CPU allocator does them.
//
// The cache holds at most cpu_buffer_max_idle_bytes() of freed buffers; a buffer freed beyond
// that goes back to the system. Thread-safe; scopes may nest and may live on different threads (the
// cache is process-wide, like LibTorch's CPU allocator it wraps).
#include <cstddef>
#include <cstdint>

namespace sds {

class CpuBufferScope {
  public:
    CpuBufferScope();
    ~CpuBufferScope();
    CpuBufferScope(const CpuBufferScope&) = delete;
    CpuBufferScope& operator=(const CpuBufferScope&) = delete;
};

struct CpuBufferStats {
    int64_t hits = 0;       // allocations served from kept buffers
    int64_t misses = 0;     // allocations that went to the system while a scope was alive
    size_t idle_bytes = 0;  // freed buffers kept now
    size_t live_bytes = 0;  // buffers from this cache in use now
};

// Counters since the process started (idle/live: now).
CpuBufferStats cpu_buffer_stats();

// Smallest buffer the cache keeps: smaller ones are cheap for malloc's heap.
inline constexpr size_t kCpuBufferMinBytes = 64 * 1024;

// The most freed bytes kept at once; the default is 4 GiB, and SDS_CPU_BUFFER_CACHE_MIB
// overrides it (0 turns the cache off).
size_t cpu_buffer_max_idle_bytes();

}  // namespace sds
