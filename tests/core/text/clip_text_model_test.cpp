// The CLIP text encoder against transformers' CLIPTextModel at a tiny random config
// (tests/reference/make_text_encoder_fixture.py), and the errors a bad weight file gives.
#include "sds/clip_text_model.h"

#include <gtest/gtest.h>

#include <ATen/ops/abs.h>
#include <ATen/ops/max.h>
#include <ATen/ops/zeros.h>

#include <fstream>

#include "sds/error.h"
#include "sds/safetensors.h"
#include "test_paths.h"
#include "text_encoder_parity.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("text_encoder_tiny");

TEST(ClipTextModel, Fp32WeightsMatchReferenceForEveryClipSkip) {
    sds::test::check_text_encoder_parity(kDir, {0, 1, 2});
}

TEST(ClipTextModel, Fp16WeightsLoadIntoFp32AndFp16) {
    const auto expected = sds::SafeTensorsFile::open(kDir / "expected.safetensors");
    sds::ClipTextModel model(sds::ClipTextConfig::from_file(kDir / "text_encoder/config.json"));
    model.load_weights({kDir / "text_encoder/model.fp16.safetensors"});
    const auto ids = expected.tensor("ids");
    EXPECT_LE(sds::test::max_abs_diff(model.encode(ids), expected.tensor("out_fp16w")), 1e-4);

    model.to(c10::Device(c10::kCPU), at::kHalf);
    model.load_weights({kDir / "text_encoder/model.fp16.safetensors"});
    const at::Tensor half = model.encode(ids);
    EXPECT_EQ(half.scalar_type(), at::kHalf);
    EXPECT_LE(sds::test::max_abs_diff(half.to(at::kFloat), expected.tensor("out_fp16w")), 5e-2);
}

TEST(ClipTextModel, ClipSkipOutOfRangeIsAnError) {
    sds::ClipTextModel model(sds::ClipTextConfig::from_file(kDir / "text_encoder/config.json"));
    const auto ids = sds::SafeTensorsFile::open(kDir / "expected.safetensors").tensor("ids");
    // 3 layers: clip skip 3 leaves the embeddings (diffusers' hidden_states[0]); SDXL's
    // reading, one state further back, stops at 2.
    EXPECT_NO_THROW(model.encode(ids, 3));
    EXPECT_THROW(model.encode(ids, 4), sds::Error);
    EXPECT_THROW(model.encode(ids, -1), sds::Error);
    EXPECT_NO_THROW(model.encode_xl(ids, 2));
    EXPECT_THROW(model.encode_xl(ids, 3), sds::Error);
}

// Rewrites the fixture's weights with `edit` applied and returns the load error.
template <typename Edit>
std::string load_error(const std::string& name, Edit edit) {
    const auto src = sds::SafeTensorsFile::open(kDir / "text_encoder/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& t : src.tensors()) {
        tensors.emplace_back(t.name, src.tensor(t.name));
    }
    edit(tensors);
    const auto dir = sds::test::temp_dir("text_encoder_" + name);
    sds::save_safetensors(dir / "model.safetensors", tensors);
    sds::ClipTextModel model(sds::ClipTextConfig::from_file(kDir / "text_encoder/config.json"));
    try {
        model.load_weights({dir / "model.safetensors"});
    } catch (const sds::ModelError& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(ClipTextModel, WrongShapeNamesTensorExpectedAndFound) {
    const std::string msg = load_error("shape", [](auto& ts) {
        for (auto& [n, t] : ts) {
            if (n == "encoder.layers.1.mlp.fc1.weight") {
                t = t.narrow(0, 0, 30).clone();
            }
        }
    });
    EXPECT_NE(msg.find("model.safetensors: tensor 'encoder.layers.1.mlp.fc1.weight' has shape "
                       "[30, 32] but the model's config expects [37, 32]"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("intermediate_size 37"), std::string::npos) << msg;
}

TEST(ClipTextModel, MissingTensorIsNamed) {
    const std::string msg = load_error("missing", [](auto& ts) {
        std::erase_if(ts, [](auto& p) { return p.first == "final_layer_norm.bias"; });
    });
    EXPECT_NE(msg.find("1 tensor(s) the model needs are missing: final_layer_norm.bias"),
              std::string::npos)
        << msg;
}

TEST(ClipTextModel, UnexpectedTensorIsNamed) {
    const std::string msg = load_error("unexpected", [](auto& ts) {
        ts.emplace_back("encoder.layers.9.mlp.fc1.weight", at::zeros({2, 2}));
    });
    EXPECT_NE(msg.find("do not belong to this model (wrong component or config?): "
                       "encoder.layers.9.mlp.fc1.weight"),
              std::string::npos)
        << msg;
}

TEST(ClipTextModel, BadConfigNamesFileAndField) {
    const auto dir = sds::test::temp_dir("text_encoder_bad_config");
    std::ofstream(dir / "config.json") << R"({"hidden_size": 30, "num_attention_heads": 4})";
    try {
        sds::ClipTextConfig::from_file(dir / "config.json");
        FAIL() << "no error";
    } catch (const sds::ModelError& e) {
        EXPECT_NE(std::string(e.what()).find(
                      "config.json: hidden_size (30) must be divisible by num_attention_heads (4)"),
                  std::string::npos)
            << e.what();
    }
}

}  // namespace
