// Single-file checkpoints in the original Stable Diffusion layout: the tiny three-level SD 1.x
// and SD 2.x models of tests/reference/make_single_file_fixture.py and
// make_single_file_sd2_fixture.py (checked there against diffusers' own single-file loader),
// SD 1.5's and SD 2.1's names against diffusers' converters, and the error a user sees for each
// kind of file SD Studio cannot run.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/max.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <torch/nn/module.h>
#include <nlohmann/json.hpp>

#include "image_parity.h"
#include "sds/clip_text_model.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "sds/unet.h"
#include "sds/vae.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("single_file");
const fs::path kFile = kDir / "model.safetensors";
const fs::path kConfig = kDir / "config";
const fs::path kSd1Config = fs::path(SDS_SOURCE_DIR) / "models" / "sd1-config";
const fs::path kSd2Dir = sds::test::fixture_dir("single_file_sd2");
const fs::path kSd2File = kSd2Dir / "model.safetensors";
const fs::path kSd2Config = fs::path(SDS_SOURCE_DIR) / "models" / "sd2-config";
const fs::path kXlDir = sds::test::fixture_dir("sdxl");  // make_sdxl_fixture.py
const fs::path kXlFile = kXlDir / "tiny-sdxl.safetensors";
const fs::path kXlFolder = kXlDir / "tiny-sdxl";
const fs::path kXlConfig = fs::path(SDS_SOURCE_DIR) / "models" / "sdxl-config";

nlohmann::json read_json(const fs::path& path) {
    nlohmann::json j;
    std::ifstream(path) >> j;
    return j;
}

TEST(OriginalLayout, Sd15NamesAreTheOnesDiffusersConvertersMapBack) {
    const nlohmann::json names = read_json(kDir / "sd15_names.json");
    const auto unet = sds::UNetConfig::from_file(kSd1Config / "unet" / "config.json");
    const auto vae = sds::VaeConfig::from_file(kSd1Config / "vae" / "config.json");
    ASSERT_EQ(names["unet"].size(), 686u);  // every tensor of SD 1.5's UNet
    for (const auto& [name, original] : names["unet"].items()) {
        EXPECT_EQ(sds::original_unet_key(name, unet), original.get<std::string>()) << name;
    }
    ASSERT_EQ(names["vae"].size(), 248u);
    for (const auto& [name, original] : names["vae"].items()) {
        EXPECT_EQ(sds::original_vae_key(name, vae), original.get<std::string>()) << name;
    }
    EXPECT_THROW(sds::original_unet_key("encoder_hid_proj.weight", unet), sds::ModelError);
    EXPECT_THROW(sds::original_vae_key("decoder.up_blocks.x.resnets.0.conv1.weight", vae),
                 sds::ModelError);
}

TEST(SingleFile, OpensWithTheConfigFoldersSettingsAndTheFilesWeights) {
    const auto m = sds::ModelFolder::open_single_file(kFile, kConfig);
    EXPECT_TRUE(m.is_single_file());
    EXPECT_EQ(m.source().filename(), "model.safetensors");
    EXPECT_EQ(m.dir().filename(), "config");
    EXPECT_EQ(m.component("scheduler").class_name, "PNDMScheduler");
    EXPECT_EQ(m.tokenizer_dir(), m.dir() / "tokenizer");
    const auto folder = sds::ModelFolder::open(kDir / "model");
    EXPECT_FALSE(folder.is_single_file());
    for (const char* name : {"unet", "vae", "text_encoder"}) {
        const auto& c = m.component(name);
        ASSERT_EQ(c.weights.size(), 1u);
        EXPECT_EQ(c.weights[0], m.source());
        EXPECT_FALSE(c.original_prefix.empty());
        // Each component counts only its own tensors of the shared file.
        EXPECT_EQ(sds::summarize_weights(c).parameters,
                  sds::summarize_weights(folder.component(name)).parameters)
            << name;
    }
    // open_any tells a file from a folder.
    EXPECT_TRUE(sds::ModelFolder::open_any(kFile, kConfig).is_single_file());
    EXPECT_FALSE(sds::ModelFolder::open_any(kDir / "model", kConfig).is_single_file());
}

void expect_same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
    const auto pa = a.named_parameters();
    const auto pb = b.named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (const auto& item : pa) {
        EXPECT_TRUE(at::equal(item.value(), pb[item.key()])) << item.key();
    }
}

// One network read from the single file and from the folder.
template <typename Model, typename Config>
void expect_file_loads_as_folder(const sds::ComponentFiles& file,
                                 const sds::ComponentFiles& folder) {
    Model ours(Config::from_file(file.config));
    ours.load_weights(file.weights, file.original_prefix);
    Model theirs(Config::from_file(file.config));
    theirs.load_weights(folder.weights);
    expect_same_parameters(ours.module(), theirs.module());
}

void expect_loads_as_folder(const fs::path& dir, const std::string& file = "model.safetensors") {
    const auto m = sds::ModelFolder::open_single_file(dir / file, dir / "config");
    const auto folder = sds::ModelFolder::open(dir / "model");
    expect_file_loads_as_folder<sds::UNet, sds::UNetConfig>(m.component("unet"),
                                                            folder.component("unet"));
    expect_file_loads_as_folder<sds::Vae, sds::VaeConfig>(m.component("vae"),
                                                          folder.component("vae"));
    auto ours = sds::ClipTextModel::load(m.component("text_encoder"));
    auto theirs = sds::ClipTextModel::load(folder.component("text_encoder"));
    expect_same_parameters(ours.module(), theirs.module());
}

TEST(SingleFile, LoadsTheSameTensorsAsTheDiffusersFolder) {
    expect_loads_as_folder(kDir);
}

using sds::test::expect_images;

void expect_diffusers_images(const fs::path& dir, const std::string& file = "model.safetensors") {
    auto pipe = sds::Pipeline::load(dir / file, {.single_file_config = dir / "config"});
    EXPECT_TRUE(pipe.model().is_single_file());
    const auto expected = sds::SafeTensorsFile::open(dir / "expected.safetensors");
    const nlohmann::json cases = read_json(dir / "cases.json");
    ASSERT_EQ(cases.size(), 2u);
    for (const auto& c : cases) {
        const auto request = sds::GenerationRequest::from_json(c["request"].dump());
        const std::string name = c["name"];
        expect_images(pipe.generate(request), expected.tensor(name), name);
    }
}

TEST(SingleFile, MakesDiffusersImagesFromTheFile) {
    expect_diffusers_images(kDir);
}

// The same checkpoint as torch.save writes it (.ckpt, as the original SD releases and many shared
// checkpoints are; diffusers' from_single_file reads it as the folder in the fixture): its
// pickle interpreted, never run, and its tensors read in place.
TEST(SingleFile, ReadsTheCkptOfTheSameModel) {
    const auto st = sds::SafeTensorsFile::open(kFile);
    const auto ckpt = sds::SafeTensorsFile::open(kDir / "model.ckpt");
    ASSERT_EQ(ckpt.tensors().size(), st.tensors().size());
    for (const auto& t : st.tensors()) {
        ASSERT_TRUE(ckpt.contains(t.name)) << t.name;
        EXPECT_TRUE(at::equal(ckpt.tensor(t.name), st.tensor(t.name))) << t.name;
    }
    EXPECT_EQ(sds::ModelFolder::single_file_kind(kDir / "model.ckpt"), sds::SingleFileKind::SD1);
    expect_loads_as_folder(kDir, "model.ckpt");
    expect_diffusers_images(kDir, "model.ckpt");
    const auto m = sds::ModelFolder::open_any(kDir / "model.ckpt", kConfig);
    EXPECT_TRUE(m.is_single_file());
    EXPECT_EQ(sds::summarize_weights(m.component("unet")).parameters,
              sds::summarize_weights(sds::ModelFolder::open(kDir / "model").component("unet"))
                  .parameters);
}

// SD 2.x: OpenCLIP's text encoder names, q/k/v in one in_proj, one layer more than used.
TEST(OriginalLayout, Sd21TextNamesAreTheOnesDiffusersConverterMapsBack) {
    const nlohmann::json names = read_json(kSd2Dir / "sd21_text_names.json");
    ASSERT_EQ(names.size(), 23u * 16 + 4);  // every tensor of SD 2.1's text encoder
    for (const auto& [name, original] : names.items()) {
        const int part = original[1].get<int>();
        const sds::TensorSource want(original[0].get<std::string>(), part < 0 ? 0 : part,
                                     part < 0 ? 1 : 3);
        EXPECT_EQ(sds::original_openclip_key(name), want) << name;
    }
    EXPECT_THROW(sds::original_openclip_key("encoder.layers.0.self_attn.w_proj.weight"),
                 sds::ModelError);
    // A CLIPTextModelWithProjection's projection (SDXL's second encoder) is OpenCLIP's, transposed.
    EXPECT_EQ(sds::original_openclip_key("text_projection.weight"),
              sds::TensorSource::transposed_of("text_projection"));
}

TEST(SingleFileSd2, TellsTheVersionsApart) {
    EXPECT_EQ(sds::ModelFolder::single_file_kind(kFile), sds::SingleFileKind::SD1);
    EXPECT_EQ(sds::ModelFolder::single_file_kind(kSd2File), sds::SingleFileKind::SD2);
    const auto m = sds::ModelFolder::open_single_file(kSd2File, kSd2Dir / "config");
    EXPECT_EQ(m.component("text_encoder").original_prefix, sds::kOriginalOpenClipPrefix);
    EXPECT_EQ(m.component("scheduler").class_name, "DDIMScheduler");
    // The file's unused OpenCLIP layer and projection are not counted as the model's.
    const auto folder = sds::ModelFolder::open(kSd2Dir / "model");
    EXPECT_EQ(sds::summarize_weights(m.component("text_encoder")).parameters,
              sds::summarize_weights(folder.component("text_encoder")).parameters);
    EXPECT_TRUE(sds::openclip_unused("transformer.resblocks.2.ln_1.weight", 2));
    EXPECT_FALSE(sds::openclip_unused("transformer.resblocks.1.ln_1.weight", 2));
    EXPECT_TRUE(sds::openclip_unused("text_projection", 2));
    EXPECT_FALSE(sds::openclip_unused("ln_final.weight", 2));
}

// The bundled SD 2.x configs: the 768 px v-prediction model by default, and the 512 px
// epsilon "base" model's for --config.
TEST(SingleFileSd2, BundledConfigsForBothKinds) {
    const fs::path models = fs::path(SDS_SOURCE_DIR) / "models";
    const auto v = sds::ModelFolder::open_single_file(kSd2File, models / "sd2-config");
    const auto base = sds::ModelFolder::open_single_file(kSd2File, models / "sd2-base-config");
    EXPECT_EQ(v.component("scheduler").class_name, "DDIMScheduler");
    EXPECT_EQ(base.component("scheduler").class_name, "PNDMScheduler");
    const nlohmann::json vs = read_json(v.component("scheduler").config);
    const nlohmann::json bs = read_json(base.component("scheduler").config);
    EXPECT_EQ(vs["prediction_type"], "v_prediction");
    EXPECT_FALSE(bs.contains("prediction_type"));  // epsilon, diffusers' default
    EXPECT_EQ(read_json(v.component("unet").config)["sample_size"], 96);
    EXPECT_EQ(read_json(base.component("unet").config)["sample_size"], 64);
    // The rest is SD 2.1's either way.
    for (const char* c : {"text_encoder", "vae"}) {
        EXPECT_EQ(read_json(v.component(c).config), read_json(base.component(c).config)) << c;
    }
    nlohmann::json vu = read_json(v.component("unet").config);
    nlohmann::json bu = read_json(base.component("unet").config);
    vu.erase("sample_size");
    bu.erase("sample_size");
    EXPECT_EQ(vu, bu);
    EXPECT_EQ(v.tokenizer_dir().filename(), "tokenizer");
    EXPECT_TRUE(fs::exists(base.tokenizer_dir() / "tokenizer.json"));
}

TEST(SingleFileSd2, LoadsTheSameTensorsAsTheDiffusersFolder) {
    expect_loads_as_folder(kSd2Dir);
}

TEST(SingleFileSd2, MakesDiffusersImagesFromTheFile) {
    expect_diffusers_images(kSd2Dir);
}

// The fixture's file with some tensors dropped and others added, written to a scratch folder.
fs::path variant_of(const std::string& name, const std::vector<std::string>& drop_prefixes,
                    const std::vector<std::pair<std::string, at::Tensor>>& add,
                    const fs::path& file = kFile) {
    const auto src = sds::SafeTensorsFile::open(file);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& t : src.tensors()) {
        bool drop = false;
        for (const auto& p : drop_prefixes) {
            drop = drop || t.name.rfind(p, 0) == 0;
        }
        if (!drop) {
            tensors.emplace_back(t.name, src.tensor(t.name));
        }
    }
    tensors.insert(tensors.end(), add.begin(), add.end());
    const fs::path out = sds::test::temp_dir("single_file_" + name) / (name + ".safetensors");
    sds::save_safetensors(out, tensors);
    return out;
}

std::string load_error(const fs::path& file, const fs::path& config = kConfig) {
    try {
        sds::Pipeline::load(file, {.single_file_config = config});
    } catch (const sds::Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(SingleFile, SaysWhatIsWrongWithAFileItCannotRun) {
    const fs::path pickle = sds::test::temp_dir("single_file_pickle") / "model.ckpt";
    std::ofstream(pickle) << "PK\x03\x04";
    EXPECT_NE(load_error(pickle).find("model.ckpt: not a readable PyTorch checkpoint: the zip "
                                      "archive is truncated"),
              std::string::npos)
        << load_error(pickle);

    const auto both =
        variant_of("both", {}, {{"cond_stage_model.model.ln_final.weight", at::ones({4})}});
    EXPECT_NE(load_error(both).find("both.safetensors: has both a CLIP"), std::string::npos);
    const auto sdxl = variant_of("sdxl", {"cond_stage_model."},
                                 {{"conditioner.embedders.0.transformer.x", at::ones({4})}});
    EXPECT_NE(load_error(sdxl).find("sdxl.safetensors: an SDXL checkpoint without the OpenCLIP "
                                    "text encoder (conditioner.embedders.1.model.*)"),
              std::string::npos)
        << load_error(sdxl);
    const auto refiner =
        variant_of("refiner", {"cond_stage_model."},
                   {{"conditioner.embedders.0.model.ln_final.weight", at::ones({4})}});
    EXPECT_NE(load_error(refiner).find("refiner.safetensors: an SDXL checkpoint without the CLIP "
                                       "text encoder (conditioner.embedders.0.transformer.*): the "
                                       "SDXL refiner"),
              std::string::npos)
        << load_error(refiner);
    const auto lora = variant_of("lora", {"model.", "first_stage_model.", "cond_stage_model."},
                                 {{"lora_unet_down_blocks_0.alpha", at::ones({1})}});
    EXPECT_NE(load_error(lora).find("lora.safetensors: no UNet tensors (model.diffusion_model.*)"),
              std::string::npos);
    const auto no_vae = variant_of("no_vae", {"first_stage_model."}, {});
    EXPECT_NE(load_error(no_vae).find("no_vae.safetensors: has no VAE (first_stage_model.*)"),
              std::string::npos);
    const auto inpaint =
        variant_of("inpaint", {"model.diffusion_model.input_blocks.0.0.weight"},
                   {{"model.diffusion_model.input_blocks.0.0.weight", at::zeros({32, 9, 3, 3})}});
    // An inpainting checkpoint (a 9-channel first convolution) opens with the same configs, as
    // an inpainting model, which only inpaints.
    auto inpainting = sds::Pipeline::load(inpaint, {.single_file_config = kConfig});
    EXPECT_TRUE(inpainting.is_inpainting_model());
    sds::GenerationRequest txt2img;
    txt2img.steps = 2;
    EXPECT_THROW(inpainting.generate(txt2img), sds::Error);

    // A missing tensor is named as the file names it; a stray one in a model's part too, but
    // what lies outside the three models (training leftovers) is fine.
    const auto missing =
        variant_of("missing", {"model.diffusion_model.output_blocks.2.1.conv.weight"}, {});
    EXPECT_NE(
        load_error(missing).find("missing: model.diffusion_model.output_blocks.2.1.conv.weight"),
        std::string::npos);
    const auto stray = variant_of("stray", {},
                                  {{"first_stage_model.decoder.extra.weight", at::ones({2})},
                                   {"model_ema.num_updates", at::ones({1})}});
    const std::string stray_error = load_error(stray);
    EXPECT_NE(stray_error.find("do not belong to this model"), std::string::npos) << stray_error;
    EXPECT_NE(stray_error.find("first_stage_model.decoder.extra.weight"), std::string::npos);
    EXPECT_EQ(stray_error.find("model_ema"), std::string::npos);

    // Configs that do not fit the file: the shape, and where the configs came from.
    const std::string wrong = load_error(kFile, kSd1Config);
    EXPECT_NE(wrong.find("has shape [49408, 32] but the model's config expects [49408, 768]"),
              std::string::npos)
        << wrong;
    EXPECT_NE(
        wrong.find("The configs came from " + fs::absolute(kSd1Config).lexically_normal().string()),
        std::string::npos)
        << wrong;
    EXPECT_NE(load_error(kFile, "").find("needs a folder with the model's configs"),
              std::string::npos);
    EXPECT_NE(load_error(kDir / "nothing.safetensors").find("nothing.safetensors: no such file"),
              std::string::npos);
}

// An SD 2.x folder written as one file has the names the fixture's file (which diffusers
// reads) has, without what loaders leave out, and reads back as the folder.
TEST(SingleFileSd2, ExportWritesOpenClipsLayout) {
    const auto folder = sds::ModelFolder::open(kSd2Dir / "model");
    const fs::path out = sds::test::temp_dir("single_file_sd2_export") / "export.safetensors";
    sds::write_original_checkpoint(folder, out, at::kFloat);
    std::set<std::string> want;
    const auto fixture = sds::SafeTensorsFile::open(kSd2File);
    for (const auto& t : fixture.tensors()) {
        const bool model = t.name.rfind("model.diffusion_model.", 0) == 0 ||
                           t.name.rfind("first_stage_model.", 0) == 0 ||
                           t.name.rfind("cond_stage_model.model.", 0) == 0;
        const bool unused =
            t.name.rfind("cond_stage_model.model.transformer.resblocks.2.", 0) == 0 ||
            t.name == "cond_stage_model.model.text_projection" ||
            t.name == "cond_stage_model.model.logit_scale";
        if (model && !unused) {
            want.insert(t.name);
        }
    }
    std::set<std::string> got;
    const auto written = sds::SafeTensorsFile::open(out);
    for (const auto& t : written.tensors()) {
        got.insert(t.name);
    }
    EXPECT_EQ(got, want);
    const std::string qkv = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight";
    EXPECT_TRUE(at::equal(written.tensor(qkv), fixture.tensor(qkv)));
    const auto m = sds::ModelFolder::open_single_file(out, kSd2Dir / "config");
    auto ours = sds::ClipTextModel::load(m.component("text_encoder"));
    auto theirs = sds::ClipTextModel::load(folder.component("text_encoder"));
    expect_same_parameters(ours.module(), theirs.module());
}

TEST(SingleFileSd2, SaysWhatIsWrongWithAnSd2File) {
    const fs::path config = kSd2Dir / "config";
    // A layer the model uses is missing (the one after them may be).
    const auto missing = variant_of(
        "sd2_missing", {"cond_stage_model.model.transformer.resblocks.1."}, {}, kSd2File);
    EXPECT_NE(load_error(missing, config)
                  .find("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias"),
              std::string::npos)
        << load_error(missing, config);
    const auto no_extra =
        variant_of("sd2_no_extra",
                   {"cond_stage_model.model.transformer.resblocks.2.",
                    "cond_stage_model.model.text_proj", "cond_stage_model.model.logit_scale"},
                   {}, kSd2File);
    EXPECT_EQ(load_error(no_extra, config), "(no error)");
    // A stray tensor inside the text encoder is named.
    const auto stray = variant_of(
        "sd2_stray", {}, {{"cond_stage_model.model.transformer.extra", at::ones({2})}}, kSd2File);
    EXPECT_NE(load_error(stray, config).find("cond_stage_model.model.transformer.extra"),
              std::string::npos);
    // q, k and v stacked in a tensor that does not split in three.
    const auto uneven = variant_of(
        "sd2_uneven", {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"},
        {{"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias", at::ones({97})}},
        kSd2File);
    EXPECT_NE(load_error(uneven, config).find("does not split into 3 equal parts"),
              std::string::npos)
        << load_error(uneven, config);
    // SD 1.5's configs for an SD 2.x file: the sizes do not fit, and the message says whence
    // the configs came.
    const std::string wrong = load_error(kSd2File, kSd1Config);
    EXPECT_NE(wrong.find("The configs came from"), std::string::npos) << wrong;
}

// SDXL in Stability's layout (label_emb, conditioner.embedders.0/1): every tensor of SDXL 1.0's
// UNet and second text encoder (models/sdxl-config) named as diffusers' converters read them.
TEST(OriginalLayout, SdxlNamesAreTheOnesDiffusersConvertersMapBack) {
    const nlohmann::json names = read_json(kXlDir / "sdxl_names.json");
    const auto unet = sds::UNetConfig::from_file(kXlConfig / "unet" / "config.json");
    ASSERT_EQ(names["unet"].size(), 1680u);  // every tensor of SDXL 1.0's UNet
    for (const auto& [name, original] : names["unet"].items()) {
        EXPECT_EQ(sds::original_unet_key(name, unet), original.get<std::string>()) << name;
    }
    ASSERT_EQ(names["text_encoder_2"].size(), 32u * 16 + 5);  // OpenCLIP ViT-bigG's text side
    for (const auto& [name, original] : names["text_encoder_2"].items()) {
        const std::string key = original[0].get<std::string>();
        const int part = original[1].get<int>();
        const sds::TensorSource want = part == -2   ? sds::TensorSource::transposed_of(key)
                                       : part == -1 ? sds::TensorSource(key)
                                                    : sds::TensorSource(key, part, 3);
        EXPECT_EQ(sds::original_openclip_key(name), want) << name;  // "text_model." and all
    }
}

TEST(SingleFileSdxl, OpensWithSdxlConfigsAndLoadsTheFolderTensors) {
    EXPECT_EQ(sds::ModelFolder::single_file_kind(kXlFile), sds::SingleFileKind::SDXL);
    const auto m = sds::ModelFolder::open_single_file(kXlFile, kXlFolder);
    EXPECT_TRUE(m.is_single_file());
    EXPECT_TRUE(m.is_xl());
    EXPECT_TRUE(m.force_zeros_for_empty_prompt());
    EXPECT_EQ(m.component("text_encoder").original_prefix, sds::kOriginalXlTextPrefix);
    EXPECT_EQ(m.component("text_encoder_2").original_prefix, sds::kOriginalXlText2Prefix);
    const auto folder = sds::ModelFolder::open(kXlFolder);
    expect_file_loads_as_folder<sds::UNet, sds::UNetConfig>(m.component("unet"),
                                                            folder.component("unet"));
    expect_file_loads_as_folder<sds::Vae, sds::VaeConfig>(m.component("vae"),
                                                          folder.component("vae"));
    for (const char* name : {"text_encoder", "text_encoder_2"}) {
        auto ours = sds::ClipTextModel::load(m.component(name));
        auto theirs = sds::ClipTextModel::load(folder.component(name));
        expect_same_parameters(ours.module(), theirs.module());
    }
    // Each component counts its own tensors: the projection is the model's, the logit scale and
    // the position ids are not.
    for (const char* name : {"unet", "vae", "text_encoder", "text_encoder_2"}) {
        EXPECT_EQ(sds::summarize_weights(m.component(name)).parameters,
                  sds::summarize_weights(folder.component(name)).parameters)
            << name;
    }
}

TEST(SingleFileSdxl, MakesDiffusersImagesFromTheFile) {
    auto pipe = sds::Pipeline::load(kXlFile, {.single_file_config = kXlFolder});
    EXPECT_TRUE(pipe.model().is_single_file());
    const auto expected = sds::SafeTensorsFile::open(kXlDir / "expected.safetensors");
    const sds::Image init = sds::test::image_of(expected.tensor("init"));
    int compared = 0;
    for (const auto& c : read_json(kXlDir / "cases.json")) {
        const std::string name = c["name"];
        if (c["model"] != "tiny-sdxl" ||
            (name != "euler_neg_b2_wide" && name != "img_euler_s0.6_neg_b2")) {
            continue;
        }
        const auto request = sds::GenerationRequest::from_json(c["request"].dump());
        expect_images(pipe.generate(request, request.is_img2img() ? &init : nullptr),
                      expected.tensor(name), name);
        ++compared;
    }
    EXPECT_EQ(compared, 2);
}

// An SDXL folder written as one file has the fixture file's names (which diffusers reads as the
// folder), without what loaders leave out, and the same tensors.
TEST(SingleFileSdxl, ExportWritesTheLayoutDiffusersReads) {
    const fs::path out = sds::test::temp_dir("single_file_sdxl_export") / "export.safetensors";
    sds::write_original_checkpoint(sds::ModelFolder::open(kXlFolder), out, at::kFloat);
    const auto fixture = sds::SafeTensorsFile::open(kXlFile);
    std::set<std::string> want;
    for (const auto& t : fixture.tensors()) {
        const bool leftover = t.name.find("position_ids") != std::string::npos ||
                              t.name == "conditioner.embedders.1.model.logit_scale" ||
                              t.name.rfind("model_ema.", 0) == 0 || t.name == "betas" ||
                              t.name == "alphas_cumprod";
        if (!leftover) {
            want.insert(t.name);
        }
    }
    const auto written = sds::SafeTensorsFile::open(out);
    std::set<std::string> got;
    for (const auto& t : written.tensors()) {
        got.insert(t.name);
        if (want.count(t.name)) {
            EXPECT_TRUE(at::equal(written.tensor(t.name), fixture.tensor(t.name))) << t.name;
        }
    }
    EXPECT_EQ(got, want);
}

TEST(SingleFileSdxl, SaysWhatIsWrongWithAnSdxlFile) {
    // SD 1.5's configs for it, and SDXL's for an SD 1.x file.
    EXPECT_NE(load_error(kXlFile, kSd1Config)
                  .find("tiny-sdxl.safetensors: an SDXL checkpoint, but the configs of " +
                        kSd1Config.string() + " are not SDXL's (SDXL's are in models/sdxl-config)"),
              std::string::npos)
        << load_error(kXlFile, kSd1Config);
    EXPECT_NE(load_error(kFile, kXlConfig).find("are SDXL's (SD 1.5's are in models/sd1-config)"),
              std::string::npos)
        << load_error(kFile, kXlConfig);
    // SDXL 1.0's configs for the tiny file: the sizes do not fit, and whence the configs came.
    const std::string sizes = load_error(kXlFile, kXlConfig);
    EXPECT_NE(
        sizes.find("The configs came from " + fs::absolute(kXlConfig).lexically_normal().string()),
        std::string::npos)
        << sizes;
    // Without the projection (which SDXL uses) it names the tensor; without the logit scale
    // (which it does not) it runs.
    const std::string projection = "conditioner.embedders.1.model.text_projection";
    const auto no_projection = variant_of("sdxl_no_projection", {projection}, {}, kXlFile);
    EXPECT_NE(load_error(no_projection, kXlFolder).find(projection), std::string::npos)
        << load_error(no_projection, kXlFolder);
    const auto no_scale =
        variant_of("sdxl_no_scale", {"conditioner.embedders.1.model.logit_scale"}, {}, kXlFile);
    EXPECT_EQ(load_error(no_scale, kXlFolder), "(no error)");
    // A projection stored the wrong way round.
    const at::Tensor p = sds::SafeTensorsFile::open(kXlFile).tensor(projection);
    const auto flipped =
        variant_of("sdxl_flipped", {projection}, {{projection, p.t().contiguous()}}, kXlFile);
    EXPECT_NE(load_error(flipped, kXlFolder).find("has shape [24, 40]"), std::string::npos)
        << load_error(flipped, kXlFolder);
}

}  // namespace
