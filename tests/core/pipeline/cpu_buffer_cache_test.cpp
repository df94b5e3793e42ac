// The CPU buffer cache: buffers are reused by exact size inside a scope, released when the last
// scope ends, safe across threads, and invisible to the arithmetic.
#include <cmath>
#include <thread>
#include <vector>

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/group_norm.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/silu.h>
#include <gtest/gtest.h>

#include "sds/cpu_buffer_cache.h"

namespace {

constexpr int64_t kFloats = 1 << 16;  // 256 KiB: above kCpuBufferMinBytes

TEST(CpuBufferCache, ReusesAFreedBufferOfTheSameSizeInsideAScope) {
    ASSERT_GT(sds::cpu_buffer_max_idle_bytes(), 0u);
    const sds::CpuBufferScope scope;
    void* first = nullptr;
    {
        at::Tensor a = at::empty({kFloats});
        first = a.data_ptr();
    }
    EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, kFloats * sizeof(float));
    const auto before = sds::cpu_buffer_stats();
    at::Tensor b = at::empty({kFloats});
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_EQ(sds::cpu_buffer_stats().hits, before.hits + 1);
    EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, 0u);
    // Another size is a new buffer.
    at::Tensor c = at::empty({kFloats + 16});
    EXPECT_NE(c.data_ptr(), first);
    EXPECT_EQ(sds::cpu_buffer_stats().misses, before.misses + 1);
}

TEST(CpuBufferCache, SmallBuffersAreLeftToMalloc) {
    const sds::CpuBufferScope scope;
    const auto before = sds::cpu_buffer_stats();
    { at::Tensor small = at::empty({16}); }
    const auto after = sds::cpu_buffer_stats();
    EXPECT_EQ(after.misses, before.misses);
    EXPECT_EQ(after.idle_bytes, before.idle_bytes);
}

TEST(CpuBufferCache, ReleasesEverythingWhenTheLastScopeEnds) {
    at::Tensor survivor;
    {
        const sds::CpuBufferScope outer;
        {
            const sds::CpuBufferScope inner;
            at::Tensor a = at::empty({kFloats});
            survivor = at::empty({kFloats * 2});
        }
        // The inner scope's end keeps the outer scope's cache.
        EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, kFloats * sizeof(float));
    }
    EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, 0u);
    // A buffer taken inside a scope and freed after it goes back to the system.
    EXPECT_EQ(sds::cpu_buffer_stats().live_bytes, kFloats * 2 * sizeof(float));
    survivor.reset();
    EXPECT_EQ(sds::cpu_buffer_stats().live_bytes, 0u);
    EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, 0u);
}

TEST(CpuBufferCache, BuffersMayBeFreedOnAnotherThread) {
    const sds::CpuBufferScope scope;
    at::Tensor a = at::ones({kFloats});
    std::thread([t = std::move(a)]() mutable { t.reset(); }).join();
    EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, kFloats * sizeof(float));
    std::thread([] {
        const sds::CpuBufferScope other;
        at::Tensor b = at::empty({kFloats});
        EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, 0u);
    }).join();
}

// Reused buffers hold the last user's bytes, not zeros: results must not depend on that.
TEST(CpuBufferCache, ReusedDirtyBuffersGiveTheSameResults) {
    at::manual_seed(0);
    const at::Tensor x = at::randn({2, 32, 48, 48});
    const at::Tensor w = at::randn({32, 32, 3, 3});
    const at::Tensor m = at::randn({48, 48});
    auto compute = [&] {
        at::Tensor y = at::conv2d(x, w, {}, 1, 1);
        y = at::group_norm(y, 8);
        y = at::silu(y);
        y = at::matmul(y, m);
        return at::scaled_dot_product_attention(y, y, y);
    };
    const at::Tensor expected = compute();
    const sds::CpuBufferScope scope;
    for (int round = 0; round < 3; ++round) {
        {
            // Leave NaN-filled buffers of every size the computation uses.
            std::vector<at::Tensor> junk;
            for (int64_t n : {x.numel(), x.numel() * 2, int64_t{48 * 48}, expected.numel()}) {
                junk.push_back(at::full({n}, std::nan("")));
                junk.push_back(at::full({n}, std::nan("")));
            }
        }
        const at::Tensor got = compute();
        ASSERT_TRUE(at::equal(got, expected)) << "round " << round;
    }
    EXPECT_GT(sds::cpu_buffer_stats().hits, 0);
}

}  // namespace
