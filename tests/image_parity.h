#pragma once
// What the image parity tests share: a fixture's cases.json and expected.safetensors, fixture
// pictures ([H, W, 3] uint8 tensors) as images, the
// largest pixel difference from diffusers' images, a test name from a case name, and pipelines
// loaded once per test program on the device SDS_TEST_DEVICE names (cpu when unset; ctest's
// *_cuda_test runs with -DSDS_TEST_CUDA=ON set it to cuda).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/from_blob.h>

#include <nlohmann/json.hpp>

#include "sds/image.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"

namespace sds::test {

// A picture [H, W, 3] uint8 as an image.
inline Image image_of(const at::Tensor& picture) {
    const at::Tensor t = picture.contiguous();
    Image img;
    img.height = static_cast<int>(t.size(0));
    img.width = static_cast<int>(t.size(1));
    img.rgb.assign(t.data_ptr<uint8_t>(), t.data_ptr<uint8_t>() + t.numel());
    return img;
}

// The largest difference of any pixel channel from `want` [H, W, 3] uint8 (a failure when the
// sizes differ).
inline int max_pixel_diff(const Image& image, const at::Tensor& want) {
    const at::Tensor got = at::from_blob(const_cast<uint8_t*>(image.rgb.data()),
                                         {image.height, image.width, 3}, at::kByte);
    EXPECT_EQ(got.sizes(), want.sizes());
    if (got.sizes() != want.sizes()) {
        return 255;
    }
    return (got.to(at::kInt) - want.to(at::kInt)).abs().max().item<int>();
}

// A generation's images against diffusers' [B, H, W, 3] uint8: the same count, each at most
// `tolerance` apart (printed, for the record); returns the largest difference.
inline int expect_images(const GenerationResult& result, const at::Tensor& want,
                         const std::string& name, int tolerance = 2) {
    EXPECT_EQ(static_cast<int64_t>(result.images.size()), want.size(0)) << name;
    int worst = 0;
    for (size_t i = 0; i < result.images.size() && static_cast<int64_t>(i) < want.size(0); ++i) {
        const int diff = max_pixel_diff(result.images[i], want[static_cast<int64_t>(i)]);
        EXPECT_LE(diff, tolerance) << name << " image " << i;
        std::printf("%s image %zu: max pixel difference %d/255\n", name.c_str(), i, diff);
        worst = std::max(worst, diff);
    }
    return worst;
}

// A case name as a test name: anything but letters and digits becomes '_'.
inline std::string test_name(std::string name) {
    for (char& ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch)))
            ch = '_';
    }
    return name;
}

// SDS_TEST_DEVICE's device (cpu when unset). On a GPU, fp32 means fp32: TF32 convolutions and
// matrix products (cuDNN's default) keep only 10 mantissa bits, so they are turned off.
inline c10::Device test_device() {
    const char* name = std::getenv("SDS_TEST_DEVICE");
    const c10::Device d = parse_device(name ? name : "cpu");
    if (d.is_cuda()) {
        at::globalContext().setAllowTF32CuDNN(false);
        at::globalContext().setAllowTF32CuBLAS(false);
    }
    return d;
}

// The pipeline of `dir` on test_device() in fp32, loaded on first use and kept for the program.
inline Pipeline& cached_pipeline(const std::filesystem::path& dir) {
    static std::map<std::filesystem::path, Pipeline> loaded;
    auto it = loaded.find(dir);
    if (it == loaded.end()) {
        it = loaded.emplace(dir, Pipeline::load(dir, {.device = test_device()})).first;
    }
    return it->second;
}

// A fixture's cases.json entries; when the fixture is missing, one entry named
// "missing_fixture" (with `model` and an empty request), so that its parametrized suite fails
// instead of running nothing.
inline nlohmann::json fixture_cases(const std::filesystem::path& dir,
                                    const std::string& model = "") {
    std::ifstream in(dir / "cases.json");
    if (!in) {
        return nlohmann::json::array({{{"name", "missing_fixture"},
                                       {"model", model},
                                       {"request", nlohmann::json::object()}}});
    }
    return nlohmann::json::parse(in);
}

// A fixture's expected.safetensors (diffusers' outputs), opened once per test program.
inline const SafeTensorsFile& fixture_expected(const std::filesystem::path& dir) {
    static std::map<std::filesystem::path, std::unique_ptr<SafeTensorsFile>> opened;
    auto& f = opened[dir];
    if (!f) {
        f = std::make_unique<SafeTensorsFile>(SafeTensorsFile::open(dir / "expected.safetensors"));
    }
    return *f;
}

}  // namespace sds::test
