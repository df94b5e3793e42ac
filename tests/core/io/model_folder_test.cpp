// Model discovery on a tiny pipeline saved by diffusers, and the error a user sees for each
// kind of broken folder.
#include "sds/model_folder.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <iterator>

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/max.h>
#include <ATen/ops/tensor.h>
#include <nlohmann/json.hpp>

#include "sds/clip_text_model.h"
#include "sds/clip_tokenizer.h"
#include "sds/error.h"
#include "sds/safetensors.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kTiny = sds::test::fixture_dir("tiny_pipeline") / "tiny-sd";

// A private copy of the tiny pipeline to break.
fs::path copy_tiny(const std::string& name) {
    const fs::path dir = sds::test::temp_dir("mf_" + name) / "tiny-sd";
    fs::copy(kTiny, dir, fs::copy_options::recursive);
    return dir;
}

std::string open_error(const fs::path& dir, sds::Variant v = sds::Variant::Auto) {
    try {
        sds::ModelFolder::open(dir, v);
    } catch (const sds::ModelError& e) {
        return e.what();
    }
    return "(no error)";
}

void edit_json(const fs::path& path, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j;
    std::ifstream(path) >> j;
    edit(j);
    std::ofstream(path) << j.dump(2);
}

TEST(ModelFolder, FindsEveryComponentOfADiffusersFolder) {
    const auto m = sds::ModelFolder::open(kTiny);
    EXPECT_EQ(m.pipeline_class(), "StableDiffusionPipeline");
    EXPECT_EQ(m.components().size(), 5u);
    EXPECT_EQ(m.component("unet").class_name, "UNet2DConditionModel");
    EXPECT_EQ(m.component("vae").class_name, "AutoencoderKL");
    EXPECT_EQ(m.component("scheduler").class_name, "PNDMScheduler");
    EXPECT_EQ(m.component("text_encoder").weights.at(0).filename(), "model.safetensors");
    EXPECT_EQ(m.component("unet").weights.at(0).filename(), "diffusion_pytorch_model.safetensors");
    EXPECT_FALSE(m.component("unet").fp16_variant);
    EXPECT_EQ(m.component("scheduler").config.filename(), "scheduler_config.json");
    EXPECT_FALSE(m.has("safety_checker"));
}

TEST(ModelFolder, SuggestedSettingsComeFromSdstudioJson) {
    EXPECT_FALSE(sds::ModelFolder::open(kTiny).hints().guidance_scale);  // none: no file
    const fs::path dir = copy_tiny("hints");
    std::ofstream(dir / "sdstudio.json") << R"({"guidance_scale": 3, "steps": 15,
                                               "sampler": "DPM++ 2M Karras"})";
    const auto h = sds::ModelFolder::open(dir).hints();
    EXPECT_EQ(h.guidance_scale, 3.0);
    EXPECT_EQ(h.steps, 15);
    EXPECT_EQ(h.sampler, "dpmpp_2m_karras");  // A1111's name, stored as ours
    std::ofstream(dir / "sdstudio.json") << R"({"steps": 8})";
    const auto partial = sds::ModelFolder::open(dir).hints();
    EXPECT_FALSE(partial.guidance_scale);
    EXPECT_EQ(partial.steps, 8);
    // The bundled demo model suggests what it was measured best with (docs/demo-model.md).
    const auto demo = sds::ModelFolder::open(fs::path(SDS_SOURCE_DIR) / "models/demo").hints();
    EXPECT_EQ(demo.guidance_scale, 3.0);
    EXPECT_EQ(demo.sampler, "dpmpp_2m");
}

// A model whose scheduler is LCM's starts with its sampler and 4 steps, and a guidance-distilled
// one (time_cond_proj_dim) with LatentConsistencyModelPipeline's guidance too; sdstudio.json
// still has the last word.
TEST(ModelFolder, LatentConsistencyModelsSuggestTheirSamplerAndSteps) {
    const fs::path dir = copy_tiny("lcm");
    const auto retype = [&](const std::string& from, const std::string& to) {
        const fs::path index = dir / "model_index.json";
        std::ifstream in(index);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        in.close();
        text.replace(text.find(from), from.size(), to);
        std::ofstream(index) << text;
    };
    retype("PNDMScheduler", "LCMScheduler");
    auto h = sds::ModelFolder::open(dir).hints();
    EXPECT_EQ(h.sampler, "lcm");
    EXPECT_EQ(h.steps, 4);
    EXPECT_FALSE(h.guidance_scale);  // an LCM-LoRA merged into a model: its own guidance
    EXPECT_FALSE(sds::ModelFolder::open(dir).guidance_distilled());
    std::ofstream(dir / "unet" / "config.json") << R"({"time_cond_proj_dim": 256})";
    EXPECT_TRUE(sds::ModelFolder::open(dir).guidance_distilled());
    h = sds::ModelFolder::open(dir).hints();
    EXPECT_EQ(h.guidance_scale, 8.5);
    std::ofstream(dir / "sdstudio.json") << R"({"steps": 6, "guidance_scale": 5})";
    h = sds::ModelFolder::open(dir).hints();
    EXPECT_EQ(h.steps, 6);
    EXPECT_EQ(h.guidance_scale, 5.0);
    EXPECT_EQ(h.sampler, "lcm");
    retype("LCMScheduler", "PNDMScheduler");  // the guidance-distilled UNet alone hints nothing
    EXPECT_FALSE(sds::ModelFolder::open(dir).hints().sampler);
}

TEST(ModelFolderErrors, BadSuggestedSettingsNameTheFileAndKey) {
    const fs::path dir = copy_tiny("bad_hints");
    std::ofstream(dir / "sdstudio.json") << R"({"sampler": "dpm_fast"})";
    EXPECT_NE(open_error(dir).find("tiny-sd/sdstudio.json: sampler unknown sampler 'dpm_fast'"),
              std::string::npos)
        << open_error(dir);
    std::ofstream(dir / "sdstudio.json") << R"({"steps": 0})";
    EXPECT_NE(open_error(dir).find("sdstudio.json: steps must be between 1 and 1000"),
              std::string::npos)
        << open_error(dir);
    std::ofstream(dir / "sdstudio.json") << R"({"guidance_scale": "high"})";
    EXPECT_NE(open_error(dir).find("sdstudio.json"), std::string::npos) << open_error(dir);
    std::ofstream(dir / "sdstudio.json") << "{ not json";
    EXPECT_NE(open_error(dir).find("sdstudio.json"), std::string::npos) << open_error(dir);
}

TEST(ModelFolder, TextEncoderAndTokenizerLoadFromIt) {
    const auto m = sds::ModelFolder::open(kTiny);
    // diffusers with transformers 5 saves tokenizer.json only.
    const auto tok = sds::ClipTokenizer::load_folder(m.tokenizer_dir());
    EXPECT_EQ(tok.encode("a photo of a cat"), (std::vector<int32_t>{320, 1125, 539, 320, 2368}));
    const auto te = sds::ClipTextModel::load(m.component("text_encoder"));
    const auto ids = at::tensor(tok.encode_padded("a photo of a cat")).unsqueeze(0);
    EXPECT_EQ(te.encode(ids).sizes(), (std::vector<int64_t>{1, 77, 32}));
}

TEST(ModelFolder, Fp16VariantsArePickedAsAsked) {
    const fs::path dir = copy_tiny("fp16");
    const fs::path te = dir / "text_encoder";
    // fp16 only: Auto takes it, Full refuses.
    fs::rename(te / "model.safetensors", te / "model.fp16.safetensors");
    auto m = sds::ModelFolder::open(dir);
    EXPECT_TRUE(m.component("text_encoder").fp16_variant);
    EXPECT_EQ(m.component("text_encoder").weights.at(0).filename(), "model.fp16.safetensors");
    EXPECT_NE(open_error(dir, sds::Variant::Full)
                  .find("tiny-sd/text_encoder: no weights found (expected model.safetensors or "
                        "pytorch_model.bin)"),
              std::string::npos)
        << open_error(dir, sds::Variant::Full);
    // Both: Auto takes full precision, Fp16 the variant.
    fs::copy_file(te / "model.fp16.safetensors", te / "model.safetensors");
    EXPECT_FALSE(sds::ModelFolder::open(dir).component("text_encoder").fp16_variant);
    EXPECT_TRUE(
        sds::ModelFolder::open(dir, sds::Variant::Fp16).component("text_encoder").fp16_variant);
}

TEST(ModelFolder, ShardedWeightsAreFollowed) {
    const fs::path dir = copy_tiny("sharded");
    const fs::path te = dir / "text_encoder";
    const auto whole = sds::SafeTensorsFile::open(te / "model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> a, b;
    nlohmann::json map;
    for (const auto& t : whole.tensors()) {
        const bool first = t.name.find("layers.2") == std::string::npos;
        (first ? a : b).emplace_back(t.name, whole.tensor(t.name).clone());
        map[t.name] =
            first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    sds::save_safetensors(te / "model-00001-of-00002.safetensors", a);
    sds::save_safetensors(te / "model-00002-of-00002.safetensors", b);
    std::ofstream(te / "model.safetensors.index.json")
        << nlohmann::json{{"weight_map", map}}.dump();
    fs::remove(te / "model.safetensors");
    const auto m = sds::ModelFolder::open(dir);
    ASSERT_EQ(m.component("text_encoder").weights.size(), 2u);
    const auto ids = at::tensor(std::vector<int64_t>{49406, 320, 2368, 49407}).unsqueeze(0);
    const auto sharded = sds::ClipTextModel::load(m.component("text_encoder")).encode(ids);
    const auto original =
        sds::ClipTextModel::load(sds::ModelFolder::open(kTiny).component("text_encoder"))
            .encode(ids);
    EXPECT_EQ((sharded - original).abs().max().item<float>(), 0.0f);
}

TEST(ModelFolderErrors, MissingComponentInModelIndex) {
    const fs::path dir = copy_tiny("no_unet_entry");
    edit_json(dir / "model_index.json", [](auto& j) { j.erase("unet"); });
    EXPECT_NE(open_error(dir).find("tiny-sd/model_index.json: the component 'unet' is missing"),
              std::string::npos)
        << open_error(dir);
}

TEST(ModelFolderErrors, MissingComponentFolder) {
    const fs::path dir = copy_tiny("no_vae_dir");
    fs::remove_all(dir / "vae");
    EXPECT_NE(open_error(dir).find("tiny-sd/vae: the folder of the component 'vae' named in "
                                   "model_index.json is missing"),
              std::string::npos)
        << open_error(dir);
}

TEST(ModelFolderErrors, MissingConfig) {
    const fs::path dir = copy_tiny("no_config");
    fs::remove(dir / "unet/config.json");
    EXPECT_NE(open_error(dir).find("tiny-sd/unet/config.json: missing"), std::string::npos)
        << open_error(dir);
}

// PyTorch's .bin weights (sds/torch_checkpoint.h) are used where a component has no safetensors;
// cli_test makes the same images from a folder saved that way.
TEST(ModelFolder, PickleWeightsAreUsedWhenThereAreNoSafetensors) {
    const fs::path dir = copy_tiny("pickle");
    fs::remove(dir / "unet/diffusion_pytorch_model.safetensors");
    std::ofstream(dir / "unet/diffusion_pytorch_model.bin") << "PK\x03\x04 not really";
    std::ofstream(dir / "vae/diffusion_pytorch_model.bin") << "PK\x03\x04 not really";
    const auto m = sds::ModelFolder::open(dir);
    EXPECT_EQ(m.component("unet").weights.at(0).filename(), "diffusion_pytorch_model.bin");
    EXPECT_EQ(m.component("vae").weights.at(0).filename(), "diffusion_pytorch_model.safetensors");
    try {  // a broken one is named when it is read
        sds::summarize_weights(m.component("unet"));
        ADD_FAILURE() << "read a broken .bin";
    } catch (const sds::FileError& e) {
        EXPECT_NE(
            std::string(e.what()).find(
                "tiny-sd/unet/diffusion_pytorch_model.bin: not a readable PyTorch checkpoint"),
            std::string::npos)
            << e.what();
    }
}

TEST(ModelFolderErrors, NoWeightsAtAll) {
    const fs::path dir = copy_tiny("no_weights");
    fs::remove(dir / "vae/diffusion_pytorch_model.safetensors");
    EXPECT_NE(open_error(dir).find("tiny-sd/vae: no weights found"), std::string::npos)
        << open_error(dir);
}

TEST(ModelFolderErrors, NotAModelFolder) {
    const fs::path dir = sds::test::temp_dir("mf_empty");
    EXPECT_NE(open_error(dir).find("no model_index.json"), std::string::npos);
    EXPECT_NE(open_error(dir / "nope").find("not a folder"), std::string::npos);
    std::ofstream(dir / "model_index.json") << "{ not json";
    EXPECT_NE(open_error(dir).find("model_index.json: not valid JSON"), std::string::npos)
        << open_error(dir);
}

TEST(ModelFolderErrors, MissingTokenizerFiles) {
    const fs::path dir = copy_tiny("no_tokenizer_files");
    fs::remove(dir / "tokenizer/tokenizer.json");
    EXPECT_NE(open_error(dir).find("tiny-sd/tokenizer: no tokenizer files"), std::string::npos)
        << open_error(dir);
}

TEST(ModelFolderErrors, TensorShapeDisagreesWithConfig) {
    const fs::path dir = copy_tiny("shape");
    edit_json(dir / "text_encoder/config.json", [](auto& j) { j["intermediate_size"] = 40; });
    const auto m = sds::ModelFolder::open(dir);
    try {
        sds::ClipTextModel::load(m.component("text_encoder"));
        FAIL() << "no error";
    } catch (const sds::ModelError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("text_encoder/model.safetensors: tensor "
                           "'encoder.layers.0.mlp.fc1.weight' has shape [37, 32] but the "
                           "model's config expects [40, 32]"),
                  std::string::npos)
            << msg;
    }
}

TEST(ModelFolderErrors, ConfigFieldOfWrongType) {
    const fs::path dir = copy_tiny("config_type");
    edit_json(dir / "text_encoder/config.json", [](auto& j) { j["hidden_size"] = "big"; });
    const auto m = sds::ModelFolder::open(dir);
    try {
        sds::ClipTextModel::load(m.component("text_encoder"));
        FAIL() << "no error";
    } catch (const sds::ModelError& e) {
        EXPECT_NE(std::string(e.what()).find(
                      "text_encoder/config.json: hidden_size must be an integer (found \"big\")"),
                  std::string::npos)
            << e.what();
    }
}

}  // namespace
