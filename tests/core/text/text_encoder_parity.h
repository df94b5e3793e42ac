#pragma once
// Shared by the tiny and full-size text encoder tests.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/max.h>

#include "sds/clip_text_model.h"
#include "sds/safetensors.h"

namespace sds::test {

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
    EXPECT_EQ(a.sizes(), b.sizes());
    return (a - b).abs().max().item<double>();
}

// Loads DIR/text_encoder (fp32) and compares its outputs with DIR/expected.safetensors.
inline void check_text_encoder_parity(const std::filesystem::path& dir,
                                      const std::vector<int>& clip_skips,
                                      c10::Device device = c10::Device(c10::kCPU)) {
    const auto expected = SafeTensorsFile::open(dir / "expected.safetensors");
    ClipTextModel model(ClipTextConfig::from_file(dir / "text_encoder/config.json"));
    model.load_weights({dir / "text_encoder/model.safetensors"});
    model.to(device, at::kFloat);
    const at::Tensor ids = expected.tensor("ids");
    for (int k : clip_skips) {
        const at::Tensor want = expected.tensor("out_skip" + std::to_string(k));
        const at::Tensor got = model.encode(ids, k);
        EXPECT_EQ(got.device(), device);
        const double err = max_abs_diff(got.cpu(), want);
        EXPECT_LE(err, 1e-4) << "clip_skip " << k << " on " << device;
        ::testing::Test::RecordProperty("max_abs_err_clip_skip_" + std::to_string(k),
                                        std::to_string(err));
        std::printf("%s, clip_skip %d: max abs error %.3g\n", device.str().c_str(), k, err);
    }
}

}  // namespace sds::test
