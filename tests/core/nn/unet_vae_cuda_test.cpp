// The UNet and the VAE on a CUDA GPU against diffusers' fp32 CPU outputs for the tiny configs:
// fp32 (TF32 off) within 1e-4, fp16 and bf16 within their rounding. Registered only with
// -DSDS_TEST_CUDA=ON (the GPU machine), where a missing GPU is a failure.
#include <gtest/gtest.h>

#include <ATen/Context.h>
#include <torch/cuda.h>

#include "nn_parity.h"
#include "test_paths.h"

namespace {

const std::filesystem::path kDir = sds::test::fixture_dir("unet_vae_tiny");
const c10::Device kCuda(c10::kCUDA, 0);

class OnCuda : public ::testing::TestWithParam<c10::ScalarType> {
  protected:
    void SetUp() override {
        ASSERT_TRUE(torch::cuda::is_available()) << "LibTorch sees no CUDA device";
        // fp32 means fp32: TF32 convolutions (cuDNN's default) keep only 10 mantissa bits.
        at::globalContext().setAllowTF32CuDNN(false);
        at::globalContext().setAllowTF32CuBLAS(false);
    }
};

TEST_P(OnCuda, UNetMatchesDiffusers) {
    const sds::test::RunOn on{.device = kCuda, .dtype = GetParam()};
    sds::test::check_unet(kDir, "unet", {"", "_odd"}, on);
    sds::test::check_unet(kDir, "unet_sd2", {""}, on);
}

TEST_P(OnCuda, VaeMatchesDiffusers) {
    sds::test::check_vae(kDir, {.device = kCuda, .dtype = GetParam()});
}

INSTANTIATE_TEST_SUITE_P(Precisions, OnCuda,
                         ::testing::Values(at::kFloat, at::kHalf, at::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

}  // namespace
