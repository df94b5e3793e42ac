// sds::resize against Pillow's Lanczos resize (tests/reference/make_image_fixture.py), which
// diffusers applies to an init image whose size is not a multiple of the VAE's scale.
#include "sds/image.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "sds/error.h"
#include "test_paths.h"

namespace {

const std::filesystem::path kFixture = sds::test::fixture_dir("image");

std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Resize, SameBytesAsPillowLanczos) {
    std::ifstream in(kFixture / "resize.json");
    const auto cases = nlohmann::json::parse(in);
    ASSERT_EQ(cases.size(), 12u);
    for (const auto& c : cases) {
        const std::string name = c["file"];
        sds::Image image{c["in"][0], c["in"][1], read_bytes(kFixture / (name + ".in.rgb"))};
        const sds::Image got = sds::resize(image, c["out"][0], c["out"][1]);
        const auto want = read_bytes(kFixture / (name + ".out.rgb"));
        ASSERT_EQ(got.rgb.size(), want.size()) << name;
        size_t differing = 0;
        for (size_t i = 0; i < want.size(); ++i) {
            differing += got.rgb[i] != want[i];
        }
        EXPECT_EQ(differing, 0u) << name << " " << c.dump();
    }
}

TEST(Resize, RefusesAnEmptyTarget) {
    sds::Image image{2, 2, std::vector<uint8_t>(12, 7)};
    EXPECT_THROW(sds::resize(image, 0, 4), sds::Error);
    EXPECT_EQ(sds::resize(image, 2, 2).rgb, image.rgb);
}

}  // namespace
