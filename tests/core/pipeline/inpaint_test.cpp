// Inpainting against diffusers' StableDiffusionInpaintPipeline (tests/reference/
// make_inpaint_fixture.py): an ordinary UNet (the kept part blended back in after each step) and
// a 9-channel inpainting UNet, every sampler, strength 1 and below, image for image; the mask's
// grey-level threshold against diffusers' mask processor; only the masked area
// (padding_mask_crop); the errors.
#include <gtest/gtest.h>

#include <fstream>

#include <ATen/ops/equal.h>
#include <nlohmann/json.hpp>

#include "image_parity.h"
#include "sds/image.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("inpaint");

using sds::test::max_pixel_diff;

sds::Pipeline& pipeline(const std::string& model) {
    return sds::test::cached_pipeline(kDir / model);
}

const sds::SafeTensorsFile& expected() {
    return sds::test::fixture_expected(kDir);
}

sds::Image picture(const std::string& name) {
    return sds::test::image_of(expected().tensor(name));
}

// "init.png" -> the fixture's "init" picture.
sds::Image picture_named(const std::string& file) {
    return picture(fs::path(file).stem().string());
}

struct Case {
    std::string name;
    std::string model;
    std::string request_json;
};

std::vector<Case> cases() {
    std::vector<Case> out;
    for (const auto& c : sds::test::fixture_cases(kDir, "tiny-sd")) {
        out.push_back({c["name"], c["model"], c["request"].dump()});
    }
    return out;
}

class InpaintParity : public ::testing::TestWithParam<Case> {};

TEST_P(InpaintParity, SameImagesAsDiffusers) {
    const Case& c = GetParam();
    const auto request = sds::GenerationRequest::from_json(c.request_json);
    ASSERT_TRUE(request.is_inpaint());
    const sds::Image init = picture_named(request.init_image);
    const sds::Image mask = picture_named(request.mask_image);
    sds::test::expect_images(pipeline(c.model).generate(request, &init, &mask),
                             expected().tensor(c.name), c.name);
}

INSTANTIATE_TEST_SUITE_P(Tiny, InpaintParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return sds::test::test_name(info.param.name); });

// Only the masked area: diffusers' get_crop_region, and the image processor's aspect-keeping
// "fill" (edges stretched into the strips, Pillow's box resize) and "crop" resizes, byte for byte.
TEST(Inpaint, CropRegionAndAspectKeepingResizesAreDiffusers) {
    const at::Tensor regions = expected().tensor("crop_regions");
    const char* masks[] = {"mask_blob", "mask_blob", "mask_edge", "mask_edge", "mask"};
    ASSERT_EQ(regions.size(0), 5);
    for (int64_t k = 0; k < regions.size(0); ++k) {
        const auto r = regions[k];
        const sds::Box want{r[0].item<int>(), r[1].item<int>(), r[2].item<int>(), r[3].item<int>()};
        const sds::Box got = sds::mask_crop_region(picture(masks[k]), r[4].item<int>(),
                                                   r[5].item<int>(), r[6].item<int>());
        EXPECT_EQ(got, want) << k << ": " << got.x0 << "," << got.y0 << "," << got.x1 << ","
                             << got.y1;
    }
    for (int k = 0; k < 4; ++k) {
        const std::string n = std::to_string(k);
        const sds::Image src = picture("resize_src" + n);
        EXPECT_EQ(
            max_pixel_diff(sds::resize_fill(src, 32, 32), expected().tensor("resize_fill" + n)), 0)
            << n;
        EXPECT_EQ(
            max_pixel_diff(sds::resize_cover(src, 32, 32), expected().tensor("resize_crop" + n)), 0)
            << n;
    }
    const sds::Image black{8, 8, std::vector<uint8_t>(8 * 8 * 3, 0)};
    EXPECT_THROW(sds::mask_crop_region(black, 8, 8, 2), sds::Error);
    EXPECT_THROW(sds::crop(black, {4, 4, 12, 6}), sds::Error);
}

TEST(Inpaint, MaskIsDiffusersMaskProcessorsAfterTheResize) {
    // The stripes hold grey 128 and 127, green (grey 150) and red (grey 76), among others.
    EXPECT_TRUE(
        at::equal(sds::mask_to_tensor(picture("mask"))[0][0], expected().tensor("mask_condition")));
    EXPECT_TRUE(at::equal(sds::mask_to_tensor(sds::resize(picture("mask_big"), 32, 48))[0][0],
                          expected().tensor("mask_big_condition")));
    sds::Image grey{1, 2, {128, 128, 128, 127, 127, 127}};
    const at::Tensor m = sds::mask_to_tensor(grey);
    EXPECT_EQ(m.sizes(), (std::vector<int64_t>{1, 1, 2, 1}));
    EXPECT_EQ(m[0][0][0][0].item<float>(), 1.0f);
    EXPECT_EQ(m[0][0][1][0].item<float>(), 0.0f);
}

TEST(Inpaint, OverlayIsDiffusersApplyOverlayByteForByte) {
    const sds::Image got = sds::overlay_unmasked(picture("overlay_generated"),
                                                 picture("overlay_init"), picture("overlay_mask"));
    EXPECT_EQ(max_pixel_diff(got, expected().tensor("overlay_expected")), 0);
    const sds::Image init = picture("init");
    EXPECT_THROW(sds::overlay_unmasked(picture("overlay_generated"), init, init), sds::Error);
}

TEST(Inpaint, MaskBlurIsPillowsGaussianBlurByteForByte) {
    for (int radius : {1, 4, 25}) {
        const sds::Image got =
            sds::gaussian_blur(picture("overlay_mask"), static_cast<float>(radius));
        EXPECT_EQ(max_pixel_diff(got, expected().tensor("overlay_blur" + std::to_string(radius))),
                  0)
            << "radius " << radius;
    }
    EXPECT_EQ(sds::gaussian_blur(picture("init"), 0).rgb, picture("init").rgb);
}

sds::GenerationRequest small_request() {
    sds::GenerationRequest r;
    r.prompt = "a blue square";
    r.steps = 4;
    r.seed = 5;
    r.sampler = sds::Sampler::Euler;
    r.init_image = "init.png";
    r.mask_image = "mask.png";
    return r;
}

TEST(Inpaint, AnInpaintingModelOnlyInpaintsAndEveryInputIsNeeded) {
    sds::Pipeline& inpainting = pipeline("tiny-sd-inpaint");
    EXPECT_TRUE(inpainting.is_inpainting_model());
    EXPECT_FALSE(pipeline("tiny-sd").is_inpainting_model());
    const sds::Image init = picture("init"), mask = picture("mask");
    auto r = small_request();
    r.mask_image.clear();
    try {
        inpainting.generate(r, &init);
        FAIL() << "img2img ran on an inpainting model";
    } catch (const sds::Error& e) {
        EXPECT_NE(std::string(e.what()).find("inpainting model"), std::string::npos) << e.what();
    }
    r.init_image.clear();
    EXPECT_THROW(inpainting.generate(r), sds::Error);
    EXPECT_THROW(inpainting.generate(small_request(), &init), sds::Error);  // no mask given
    auto no_init = small_request();
    no_init.init_image.clear();
    EXPECT_THROW(no_init.validate(), sds::Error);
    // After the errors it still inpaints.
    EXPECT_EQ(inpainting.generate(small_request(), &init, &mask).images.size(), 1u);
}

TEST(Inpaint, TheMaskTravelsInTheRequestJson) {
    const auto r = small_request();
    const auto back = sds::GenerationRequest::from_json(r.to_json());
    EXPECT_EQ(back.mask_image, "mask.png");
    EXPECT_TRUE(back.is_inpaint());
    // Only the masked area: in the JSON, and in A1111's text as A1111 writes it.
    auto only = r;
    only.mask_padding = 24;
    EXPECT_EQ(sds::GenerationRequest::from_json(only.to_json()).mask_padding, 24);
    const std::string text = only.to_a1111();
    EXPECT_NE(text.find("Inpaint area: Only masked, Masked area padding: 24"), std::string::npos)
        << text;
    EXPECT_EQ(sds::GenerationRequest::from_a1111(text).mask_padding, 24);
    EXPECT_EQ(sds::GenerationRequest::from_a1111("x\nSteps: 5, Seed: 1, Masked area padding: 9")
                  .mask_padding,
              -1);  // the whole picture unless the area is "Only masked"
    auto txt = only;
    txt.mask_image.clear();
    txt.init_image.clear();
    EXPECT_THROW(txt.validate(), sds::Error);  // only for inpainting
}

TEST(Inpaint, ThePreviewShowsTheKeptPartFromTheFirstStep) {
    // With an ordinary UNet the step estimate is blended with the init image's latents outside
    // the mask, so the kept part is in the preview at once.
    sds::Pipeline& p = pipeline("tiny-sd");
    const sds::Image init = picture("init"), mask = picture("mask");
    auto r = small_request();
    r.strength = 1.0;
    std::vector<at::Tensor> x0;
    p.generate(r, &init, &mask, [&](const sds::StepEvent& e) { x0.push_back(e.pred_x0); });
    ASSERT_EQ(x0.size(), 4u);
    // Latent pixel (row 8, column 2) is kept by the mask; (8, 14) is repainted.
    const at::Tensor kept0 = x0.front().select(2, 8).select(2, 2);
    const at::Tensor kept3 = x0.back().select(2, 8).select(2, 2);
    EXPECT_TRUE(at::equal(kept0, kept3));
    const at::Tensor painted0 = x0.front().select(2, 8).select(2, 14);
    const at::Tensor painted3 = x0.back().select(2, 8).select(2, 14);
    EXPECT_FALSE(at::equal(painted0, painted3));
}

}  // namespace
