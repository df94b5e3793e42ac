// The text encoder on a CUDA GPU, against the same reference outputs as on the CPU. Registered
// only with -DSDS_TEST_CUDA=ON (the GPU machine), where a missing GPU is a failure.
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include "test_paths.h"
#include "text_encoder_parity.h"

TEST(ClipTextModelCuda, CudaIsAvailable) {
    ASSERT_TRUE(torch::cuda::is_available()) << "LibTorch sees no CUDA device";
}

TEST(ClipTextModelCuda, TinyMatchesReferenceOnCuda) {
    ASSERT_TRUE(torch::cuda::is_available());
    sds::test::check_text_encoder_parity(sds::test::fixture_dir("text_encoder_tiny"), {0, 1, 2},
                                         c10::Device(c10::kCUDA, 0));
}

TEST(ClipTextModelCuda, FullMatchesReferenceOnCuda) {
    ASSERT_TRUE(torch::cuda::is_available());
    sds::test::check_text_encoder_parity(sds::test::fixture_dir("text_encoder_full"), {0, 1},
                                         c10::Device(c10::kCUDA, 0));
}
