// SDXL against diffusers (tests/reference/make_sdxl_fixture.py): the UNet with its added size
// conditioning, the two text encoders' conditioning, and the images of
// StableDiffusionXLPipeline / StableDiffusionXLImg2ImgPipeline for the same seeds (txt2img and
// img2img, with and without a negative prompt, both readings of "no negative prompt", guidance
// 1, clip skip, batch 2, a size that is not square).
#include <gtest/gtest.h>

#include <fstream>

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/max.h>
#include <nlohmann/json.hpp>

#include "image_parity.h"
#include "sds/clip_text_model.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "sds/unet.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("sdxl");

const sds::SafeTensorsFile& reference() {
    static const auto f = sds::SafeTensorsFile::open(kDir / "unet.safetensors");
    return f;
}

double rel_error(const at::Tensor& got, const at::Tensor& want) {
    return ((got.to(at::kFloat) - want).abs().max() / want.abs().max()).item<double>();
}

sds::Pipeline& pipeline(const std::string& model) {
    return sds::test::cached_pipeline(kDir / model);
}

TEST(Sdxl, FolderHasBothEncodersAndItsEmptyPromptRule) {
    const auto m = sds::ModelFolder::open(kDir / "tiny-sdxl");
    EXPECT_TRUE(m.is_xl());
    EXPECT_TRUE(m.force_zeros_for_empty_prompt());
    EXPECT_EQ(m.component("text_encoder_2").class_name, "CLIPTextModelWithProjection");
    EXPECT_FALSE(sds::ModelFolder::open(kDir / "tiny-sdxl-nozeros").force_zeros_for_empty_prompt());
    const auto config = sds::UNetConfig::from_file(m.component("unet").config);
    EXPECT_TRUE(config.text_time);
    EXPECT_EQ(config.transformer_layers, (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(config.text_embeds_dim(), 24);
}

TEST(Sdxl, UNetWithAddedConditioningMatchesDiffusers) {
    const auto m = sds::ModelFolder::open(kDir / "tiny-sdxl");
    sds::UNet unet(sds::UNetConfig::from_file(m.component("unet").config));
    unet.load_weights(m.component("unet").weights);
    const auto& r = reference();
    const at::Tensor out = unet.forward(
        r.tensor("sample"), r.tensor("timestep"), r.tensor("context"),
        {.text_embeds = r.tensor("text_embeds"), .time_ids = r.tensor("time_ids"), .guidance = {}});
    EXPECT_LE(rel_error(out, r.tensor("out")), 1e-4);
    // The size ids count: other sizes give another output.
    const at::Tensor other =
        unet.forward(r.tensor("sample"), r.tensor("timestep"), r.tensor("context"),
                     {.text_embeds = r.tensor("text_embeds"),
                      .time_ids = r.tensor("time_ids") * 2,
                      .guidance = {}});
    EXPECT_GT(rel_error(other, r.tensor("out")), 1e-3);
    // Without the added conditioning an SDXL UNet refuses to run.
    EXPECT_THROW(unet.forward(r.tensor("sample"), r.tensor("timestep"), r.tensor("context")),
                 sds::Error);
}

TEST(Sdxl, PromptConditioningMatchesDiffusers) {
    auto& p = pipeline("tiny-sdxl");
    const std::string prompt = "a red fox in the snow, 4k";
    const auto [embeds, pooled] = p.encode_prompt_xl(prompt);
    const auto& r = reference();
    ASSERT_EQ(embeds.sizes(), r.tensor("prompt_embeds").sizes());
    EXPECT_LE(rel_error(embeds, r.tensor("prompt_embeds")), 1e-5);
    ASSERT_EQ(pooled.sizes(), r.tensor("pooled").sizes());
    EXPECT_LE(rel_error(pooled, r.tensor("pooled")), 1e-5);
    EXPECT_LE(rel_error(p.encode_prompt_xl(prompt, 1).first, r.tensor("prompt_embeds_skip1")),
              1e-5);
}

struct Case {
    std::string name, model, request_json;
};

std::vector<Case> cases() {
    std::vector<Case> out;
    for (const auto& c : sds::test::fixture_cases(kDir, "tiny-sdxl")) {
        out.push_back({c["name"], c["model"], c["request"].dump()});
    }
    return out;
}

const sds::SafeTensorsFile& expected() {
    return sds::test::fixture_expected(kDir);
}

class SdxlParity : public ::testing::TestWithParam<Case> {};

TEST_P(SdxlParity, SameImagesAsDiffusers) {
    const Case& c = GetParam();
    auto request = sds::GenerationRequest::from_json(c.request_json);
    if (!request.refiner.empty()) {
        request.refiner = (kDir / request.refiner).string();
    }
    const sds::Image init = sds::test::image_of(expected().tensor("init"));
    const sds::Image mask =
        request.is_inpaint() ? sds::test::image_of(expected().tensor("mask")) : sds::Image{};
    sds::test::expect_images(
        pipeline(c.model).generate(request, request.is_img2img() ? &init : nullptr,
                                   request.is_inpaint() ? &mask : nullptr),
        expected().tensor(c.name), c.name);
}

INSTANTIATE_TEST_SUITE_P(Tiny, SdxlParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return sds::test::test_name(info.param.name); });

std::string open_error(const fs::path& dir) {
    try {
        sds::Pipeline::load(dir, {});
    } catch (const sds::Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(Sdxl, RefinerHasTheSecondEncoderAloneAndAnAestheticScore) {
    const auto folder = sds::ModelFolder::open(kDir / "tiny-sdxl-refiner");
    EXPECT_TRUE(folder.is_xl() && folder.is_refiner() && folder.requires_aesthetics_score());
    EXPECT_FALSE(folder.has("text_encoder") || folder.has("tokenizer"));
    EXPECT_EQ(folder.tokenizer_dir(), folder.tokenizer_2_dir());
    const auto base = sds::ModelFolder::open(kDir / "tiny-sdxl");
    EXPECT_FALSE(base.is_refiner() || base.requires_aesthetics_score());
    EXPECT_EQ(base.tokenizer_dir(), base.dir() / "tokenizer");
    auto& refiner = pipeline("tiny-sdxl-refiner");
    EXPECT_EQ(refiner.unet().config().time_ids, 5);
    EXPECT_EQ(refiner.unet().config().text_embeds_dim(), 24);
    // The aesthetic scores change the images (the cases above match diffusers').
    sds::GenerationRequest r;
    r.prompt = "a blue disc";
    r.sampler = sds::Sampler::Euler;
    r.steps = 3;
    r.width = r.height = 32;
    r.strength = 0.6;
    r.init_image = "init.png";
    const sds::Image init = sds::test::image_of(expected().tensor("init"));
    const auto a = refiner.generate(r, &init).images.at(0);
    r.aesthetic_score = 9.0;
    const auto b = refiner.generate(r, &init).images.at(0);
    EXPECT_NE(a.rgb, b.rgb);
    // Written to single files: not something SD Studio does for a refiner.
    try {
        sds::write_original_checkpoint(
            folder, sds::test::temp_dir("sdxl_refiner") / "r.safetensors", at::kFloat);
        ADD_FAILURE() << "wrote a refiner to a single file";
    } catch (const sds::ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("an SDXL refiner"), std::string::npos) << e.what();
    }
}

TEST(Sdxl, SaysWhatItCannotRun) {
    // A base model's UNet with the second encoder alone: the UNet does not fit.
    const fs::path refiner = sds::test::temp_dir("sdxl_refiner") / "refiner";
    fs::remove_all(refiner);
    fs::copy(kDir / "tiny-sdxl", refiner, fs::copy_options::recursive);
    nlohmann::json index;
    std::ifstream(refiner / "model_index.json") >> index;
    index["text_encoder"] = {nullptr, nullptr};
    index["tokenizer"] = {nullptr, nullptr};
    std::ofstream(refiner / "model_index.json") << index.dump();
    EXPECT_NE(open_error(refiner).find("cross_attention_dim 40 (text_encoder_2's width)"),
              std::string::npos)
        << open_error(refiner);
    // A refiner whose model_index.json leaves out requires_aesthetics_score: 6 size numbers
    // do not fit its UNet, and the message says what would.
    const fs::path no_score = sds::test::temp_dir("sdxl_refiner") / "no_score";
    fs::remove_all(no_score);
    fs::copy(kDir / "tiny-sdxl-refiner", no_score, fs::copy_options::recursive);
    std::ifstream(no_score / "model_index.json") >> index;
    index.erase("requires_aesthetics_score");
    std::ofstream(no_score / "model_index.json") << index.dump();
    EXPECT_NE(open_error(no_score).find("projection_class_embeddings_input_dim 72"),
              std::string::npos)
        << open_error(no_score);
    // A second encoder of another kind (a CLIPTextModel's weights, without the projection):
    // the file and what is missing are named.
    const fs::path narrow = sds::test::temp_dir("sdxl_narrow") / "narrow";
    fs::remove_all(narrow);
    fs::copy(kDir / "tiny-sdxl", narrow, fs::copy_options::recursive);
    fs::remove_all(narrow / "text_encoder_2");
    fs::copy(kDir / "tiny-sdxl" / "text_encoder", narrow / "text_encoder_2",
             fs::copy_options::recursive);
    nlohmann::json te2;
    std::ifstream(narrow / "text_encoder_2" / "config.json") >> te2;
    te2["projection_dim"] = 24;
    std::ofstream(narrow / "text_encoder_2" / "config.json") << te2.dump();
    const std::string narrow_error = open_error(narrow);
    EXPECT_NE(narrow_error.find("text_encoder_2/model.safetensors: "), std::string::npos)
        << narrow_error;
    EXPECT_NE(narrow_error.find("the model needs are missing"), std::string::npos) << narrow_error;
    // SDXL configs for a single file.
    try {
        sds::ModelFolder::open_single_file(
            sds::test::fixture_dir("single_file") / "model.safetensors", kDir / "tiny-sdxl");
        ADD_FAILURE() << "opened a single file with SDXL configs";
    } catch (const sds::ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("are SDXL's"), std::string::npos) << e.what();
    }
}

}  // namespace
