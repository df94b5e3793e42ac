// ControlNets against diffusers (tests/reference/make_controlnet_fixture.py): the
// ControlNetModel alone (plain and guess mode), the UNet with its residuals, and
// StableDiffusionControlNetPipeline / StableDiffusionControlNetImg2ImgPipeline /
// StableDiffusionControlNetInpaintPipeline image for image (several samplers, guidance on and
// off, guess mode, start and end, two ControlNets, a conditioning image of another size,
// img2img, inpainting with the plain and an inpainting UNet, only the masked area; SDXL's
// pipelines with an SDXL ControlNet, and with the refiner after it); single ControlNet files as
// diffusers' single-file loader reads them.
#include <gtest/gtest.h>

#include <ATen/ops/abs.h>
#include <ATen/ops/equal.h>
#include <nlohmann/json.hpp>

#include "image_parity.h"
#include "sds/controlnet.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("controlnet");

const sds::SafeTensorsFile& expected() {
    return sds::test::fixture_expected(kDir);
}

sds::Pipeline& pipeline() {
    return sds::test::cached_pipeline(kDir / "tiny-sd");
}

// "control.png" -> the fixture's "control" picture.
sds::Image picture_named(const std::string& file) {
    return sds::test::image_of(expected().tensor(fs::path(file).stem().string()));
}

sds::UNetConfig unet_config() {
    return sds::UNetConfig::from_file(kDir / "tiny-sd" / "unet" / "config.json");
}

double relative_error(const at::Tensor& got, const at::Tensor& want) {
    return (got.to(at::kFloat) - want).abs().max().item<double>() /
           std::max(want.abs().max().item<double>(), 1e-12);
}

// The request of a case with its ControlNets' folders in the fixture, and their images.
struct Loaded {
    sds::GenerationRequest request;
    std::vector<sds::Image> controls;
};
Loaded load_case(const std::string& request_json) {
    Loaded out{sds::GenerationRequest::from_json(request_json), {}};
    for (auto& c : out.request.controls) {
        out.controls.push_back(picture_named(c.image));
        c.model = (kDir / c.model).string();
    }
    if (!out.request.refiner.empty()) {
        out.request.refiner = (kDir / out.request.refiner).string();
    }
    return out;
}

TEST(ControlNet, ModelMatchesDiffusersPlainAndInGuessMode) {
    const auto net =
        sds::ControlNet::load(kDir / "tiny-controlnet", unet_config(), c10::kCPU, at::kFloat);
    EXPECT_EQ(net.downscale(), 2);
    const auto& e = expected();
    for (const bool guess : {false, true}) {
        const std::string prefix = guess ? "guess" : "net";
        const sds::UNet::Residuals r =
            net.forward(e.tensor("net_sample"), e.tensor("net_t"), e.tensor("net_context"),
                        e.tensor("net_cond"), 0.7, guess);
        ASSERT_EQ(r.down.size(), 6u);  // conv_in's, 2 layers + a downsampler, 2 layers
        for (size_t k = 0; k < r.down.size(); ++k) {
            EXPECT_LE(relative_error(r.down[k], e.tensor(prefix + "_down" + std::to_string(k))),
                      1e-4)
                << prefix << " down " << k;
        }
        EXPECT_LE(relative_error(r.mid, e.tensor(prefix + "_mid")), 1e-4) << prefix;
    }
}

// The single files A1111's ControlNet extension loads: the original layout (with
// "control_model." before the names, or none, in a .pth) and diffusers' names in one file; their
// config is the model's UNet's with the conditioning embedding the file has. Each gives the
// residuals diffusers' single-file loader's model gives.
TEST(ControlNet, SingleFilesLoadAsDiffusersLoadsThem) {
    const auto& e = expected();
    for (const char* name :
         {"tiny-controlnet-x8", "tiny-controlnet-x8.safetensors", "tiny-controlnet-x8.pth",
          "tiny-controlnet-x8-diffusers.safetensors"}) {
        const auto net = sds::ControlNet::load(kDir / name, unet_config(), c10::kCPU, at::kFloat);
        EXPECT_EQ(net.downscale(), 8) << name;
        EXPECT_EQ(net.config().conditioning_embedding_out_channels,
                  (std::vector<int64_t>{16, 32, 96, 256}))
            << name;
        const sds::UNet::Residuals r =
            net.forward(e.tensor("net_sample"), e.tensor("net_t"), e.tensor("net_context"),
                        e.tensor("x8_cond"), 1.0);
        ASSERT_EQ(r.down.size(), 6u) << name;
        for (size_t k = 0; k < r.down.size(); ++k) {
            EXPECT_LE(relative_error(r.down[k], e.tensor("x8_down" + std::to_string(k))), 1e-4)
                << name << " down " << k;
        }
        EXPECT_LE(relative_error(r.mid, e.tensor("x8_mid")), 1e-4) << name;
    }
    EXPECT_EQ(
        sds::original_controlnet_key("controlnet_cond_embedding.conv_out.weight", unet_config(), 6),
        "input_hint_block.14.weight");
    EXPECT_EQ(
        sds::original_controlnet_key("controlnet_cond_embedding.blocks.5.bias", unet_config(), 6),
        "input_hint_block.12.bias");
    EXPECT_EQ(sds::original_controlnet_key("controlnet_down_blocks.3.bias", unet_config(), 6),
              "zero_convs.3.0.bias");
    EXPECT_EQ(sds::original_controlnet_key("controlnet_mid_block.weight", unet_config(), 6),
              "middle_block_out.0.weight");
    // A file of something else says so.
    try {
        sds::ControlNet::load(kDir / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors",
                              unet_config(), c10::kCPU, at::kFloat);
        ADD_FAILURE() << "a UNet loaded as a ControlNet";
    } catch (const sds::ModelError& error) {
        EXPECT_NE(std::string(error.what()).find("not a ControlNet"), std::string::npos)
            << error.what();
    }
}

// A file whose name says shuffle (control_v11e_sd15_shuffle.pth) averages its residuals over
// the picture, as diffusers' global_pool_conditions (and A1111's ControlNet extension, which
// goes by the name): guess mode's scales do not apply then.
TEST(ControlNet, AShuffleFilePoolsItsResidualsAsDiffusers) {
    const auto& e = expected();
    const fs::path dir = fs::temp_directory_path() / "sds_controlnet_test_shuffle";
    fs::create_directories(dir);
    const fs::path shuffle = dir / "control_v11e_sd15_Shuffle.pth";
    fs::copy_file(kDir / "tiny-controlnet-x8.pth", shuffle, fs::copy_options::overwrite_existing);
    const auto net = sds::ControlNet::load(shuffle, unet_config(), c10::kCPU, at::kFloat);
    EXPECT_TRUE(net.config().global_pool_conditions);
    const sds::UNet::Residuals r = net.forward(e.tensor("net_sample"), e.tensor("net_t"),
                                               e.tensor("net_context"), e.tensor("x8_cond"), 0.8,
                                               /*guess_mode=*/true);
    ASSERT_EQ(r.down.size(), 6u);
    for (size_t k = 0; k < r.down.size(); ++k) {
        EXPECT_EQ(r.down[k].size(2), 1);
        EXPECT_LE(relative_error(r.down[k], e.tensor("x8_pooled_down" + std::to_string(k))), 1e-4)
            << "down " << k;
    }
    EXPECT_LE(relative_error(r.mid, e.tensor("x8_pooled_mid")), 1e-4);
    // Other names do not pool.
    EXPECT_FALSE(
        sds::ControlNet::load(kDir / "tiny-controlnet-x8.pth", unet_config(), c10::kCPU, at::kFloat)
            .config()
            .global_pool_conditions);
    fs::remove_all(dir);
}

TEST(ControlNet, UNetAddsTheResidualsAsDiffusers) {
    const auto& e = expected();
    sds::UNet unet(unet_config());
    unet.load_weights(sds::ModelFolder::open(kDir / "tiny-sd").component("unet").weights);
    sds::UNet::Residuals r;
    ASSERT_EQ(unet.skip_count(), 6);
    for (int k = 0; k < 6; ++k) {
        r.down.push_back(e.tensor("net_down" + std::to_string(k)));
    }
    r.mid = e.tensor("net_mid");
    const at::Tensor out =
        unet.forward(e.tensor("net_sample"), e.tensor("net_t"), e.tensor("net_context"), {}, &r);
    EXPECT_LE(relative_error(out, e.tensor("unet_out")), 1e-4);
    // Without them it is another output: the residuals are not zero.
    const at::Tensor plain =
        unet.forward(e.tensor("net_sample"), e.tensor("net_t"), e.tensor("net_context"));
    EXPECT_GT(relative_error(plain, e.tensor("unet_out")), 1e-2);
    r.down.pop_back();
    EXPECT_THROW(
        unet.forward(e.tensor("net_sample"), e.tensor("net_t"), e.tensor("net_context"), {}, &r),
        sds::Error);
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

class ControlNetParity : public ::testing::TestWithParam<Case> {};

TEST_P(ControlNetParity, SameImagesAsDiffusers) {
    const Case& c = GetParam();
    const Loaded l = load_case(c.request_json);
    ASSERT_FALSE(l.request.controls.empty());
    const sds::Image init =
        l.request.is_img2img() ? picture_named(l.request.init_image) : sds::Image{};
    const sds::Image mask =
        l.request.is_inpaint() ? picture_named(l.request.mask_image) : sds::Image{};
    sds::test::expect_images(
        sds::test::cached_pipeline(kDir / c.model)
            .generate(l.request, l.request.is_img2img() ? &init : nullptr,
                      l.request.is_inpaint() ? &mask : nullptr, {}, nullptr, l.controls),
        expected().tensor(c.name), c.name);
}

INSTANTIATE_TEST_SUITE_P(Tiny, ControlNetParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return sds::test::test_name(info.param.name); });

// A ControlNet at scale 0 adds nothing: the images are the plain pipeline's, bit for bit; at
// scale 1 they are far from them (the fixture's ControlNets are not idle).
TEST(ControlNet, ScaleZeroIsThePlainPipelineAndScaleOneIsNot) {
    Loaded l = load_case(cases().front().request_json);
    sds::GenerationRequest plain = l.request;
    plain.controls.clear();
    const auto without = pipeline().generate(plain);
    const auto with = pipeline().generate(l.request, nullptr, nullptr, {}, nullptr, l.controls);
    l.request.controls[0].scale = 0;
    const auto zero = pipeline().generate(l.request, nullptr, nullptr, {}, nullptr, l.controls);
    ASSERT_EQ(without.images.size(), zero.images.size());
    for (size_t i = 0; i < without.images.size(); ++i) {
        EXPECT_EQ(without.images[i].rgb, zero.images[i].rgb) << i;
        int far = 0;
        for (size_t k = 0; k < with.images[i].rgb.size(); ++k) {
            far =
                std::max(far, std::abs(int(with.images[i].rgb[k]) - int(without.images[i].rgb[k])));
        }
        EXPECT_GT(far, 30) << i;
    }
}

// "invert": the image's 255 - x, as if that image had been given.
TEST(ControlNet, InvertIsTheInvertedImage) {
    Loaded l = load_case(cases().front().request_json);
    l.request.batch_count = 1;
    sds::Image inverted = l.controls[0];
    for (uint8_t& v : inverted.rgb) {
        v = static_cast<uint8_t>(255 - v);
    }
    const auto given = pipeline().generate(l.request, nullptr, nullptr, {}, nullptr,
                                           std::span<const sds::Image>(&inverted, 1));
    l.request.controls[0].preprocessor = "invert";
    const auto made = pipeline().generate(l.request, nullptr, nullptr, {}, nullptr, l.controls);
    EXPECT_EQ(given.images[0].rgb, made.images[0].rgb);
    l.request.controls[0].preprocessor = "none";
    const auto plain = pipeline().generate(l.request, nullptr, nullptr, {}, nullptr, l.controls);
    EXPECT_NE(plain.images[0].rgb, made.images[0].rgb);
}

TEST(ControlNet, ErrorsNameWhatIsWrong) {
    Loaded l = load_case(cases().front().request_json);
    l.request.batch_count = 1;
    l.request.steps = 2;
    const auto message = [&](const sds::GenerationRequest& r, std::span<const sds::Image> images) {
        try {
            pipeline().generate(r, nullptr, nullptr, {}, nullptr, images);
        } catch (const sds::Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(message(l.request, {}).find("1 in the request but 0 images"), std::string::npos);
    sds::GenerationRequest missing = l.request;
    missing.controls[0].model = (kDir / "no-such-controlnet").string();
    EXPECT_NE(message(missing, l.controls).find("no-such-controlnet"), std::string::npos);
    // A model folder is not a ControlNet: its config is the pipeline's model_index.json-less
    // unet, whose UNet weights miss the ControlNet's.
    sds::GenerationRequest unet = l.request;
    unet.controls[0].model = (kDir / "tiny-sd" / "unet").string();
    EXPECT_NE(message(unet, l.controls).find("controlnet_cond_embedding"), std::string::npos)
        << message(unet, l.controls);
    sds::GenerationRequest bad = l.request;
    bad.controls[0].end = bad.controls[0].start;
    EXPECT_THROW(bad.validate(), sds::Error);
    bad = l.request;
    bad.controls[0].preprocessor = "sobel";
    EXPECT_THROW(bad.validate(), sds::Error);
    bad.controls[0].preprocessor = "depth";  // without its Depth Anything model
    EXPECT_THROW(bad.validate(), sds::Error);
    bad.controls[0].depth_model = "depth-anything";
    bad.validate();
    bad = l.request;
    bad.controls[0].preprocessor = "canny";
    bad.validate();
    bad.controls[0].canny_low = 250;  // above the high threshold
    EXPECT_THROW(bad.validate(), sds::Error);
    // The pipeline is still usable.
    EXPECT_EQ(
        pipeline().generate(l.request, nullptr, nullptr, {}, nullptr, l.controls).images.size(),
        1u);
}

TEST(ControlNet, RequestJsonKeepsTheControls) {
    Loaded l = load_case(cases().front().request_json);
    l.request.controls[0].preprocessor = "invert";
    l.request.control_guess_mode = true;
    const auto back = sds::GenerationRequest::from_json(l.request.to_json());
    EXPECT_EQ(back.controls, l.request.controls);
    EXPECT_TRUE(back.control_guess_mode);
    const std::string a1111 = l.request.to_a1111(0, "tiny-sd");
    EXPECT_NE(a1111.find("ControlNet 0: \"Module: invert, Model: tiny-controlnet, Weight: 1"),
              std::string::npos)
        << a1111;
    // None: no key at all, as JSON written before there were ControlNets.
    sds::GenerationRequest plain;
    EXPECT_EQ(plain.to_json().find("controls"), std::string::npos);
}

}  // namespace
