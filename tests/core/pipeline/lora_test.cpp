// LoRA files merged into the model, against diffusers' load_lora_weights + set_adapters
// (tests/reference/make_lora_fixture.py): kohya-ss/A1111 files for SD 1.x with LoRA and LoCon
// modules (1x1 and 3x3 convolutions, attention, feed-forward, the text encoder), two LoRAs at
// once with weights (one negative), SDXL with its original UNet names and both text encoders;
// one in diffusers' own format (lora_A/lora_B, rank and alpha patterns, rsLoRA); LyCORIS LoHa
// and LoKr files (with Tucker cores on 3x3 convolutions) against peft's LoHa and LoKr layers, a
// Tucker LoCon against its down/mid/up convolutions run beside the modules, and a full file
// (diff, diff_b) against the model with those changes added.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/einsum.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/max.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <torch/nn/module.h>
#include <nlohmann/json.hpp>

#include "image_parity.h"
#include "sds/error.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "sds/unet.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("lora");

struct Case {
    std::string name, model;
    std::vector<sds::LoraRef> loras;
    std::string request_json;
};

std::vector<Case> cases() {
    std::vector<Case> out;
    for (const auto& c : sds::test::fixture_cases(kDir, "tiny-sd")) {
        Case k{c["name"], c["model"], {}, c["request"].dump()};
        for (const auto& l : c.value("loras", nlohmann::json::array())) {
            sds::LoraRef ref{(kDir / l[0].get<std::string>()).string(), l[1].get<double>()};
            if (l.size() > 2) {  // the UNet's weight, apart from the text encoder's
                ref.unet_weight = l[2].get<double>();
            }
            k.loras.push_back(ref);
        }
        out.push_back(k);
    }
    return out;
}

sds::Pipeline& pipeline(const std::string& model) {
    return sds::test::cached_pipeline(kDir / model);
}

const sds::SafeTensorsFile& expected() {
    return sds::test::fixture_expected(kDir);
}

std::map<std::string, at::Tensor> weights_of(torch::nn::Module& m) {
    std::map<std::string, at::Tensor> out;
    for (const auto& p : m.named_parameters()) {
        out[p.key()] = p.value().clone();
    }
    return out;
}

void expect_same_weights(torch::nn::Module& m, const std::map<std::string, at::Tensor>& want) {
    for (const auto& p : m.named_parameters()) {
        ASSERT_TRUE(at::equal(p.value(), want.at(p.key()))) << p.key();
    }
}

class LoraParity : public ::testing::TestWithParam<Case> {};

// With the LoRAs: diffusers' images. Without them again: diffusers' images without, and the
// very weights as loaded.
TEST_P(LoraParity, SameImagesAsDiffusersAndTheModelBackAfter) {
    const Case& c = GetParam();
    auto request = sds::GenerationRequest::from_json(c.request_json);
    auto& p = pipeline(c.model);
    const auto loaded = weights_of(p.unet().module());
    request.loras = c.loras;
    const int with =
        sds::test::expect_images(p.generate(request), expected().tensor(c.name), c.name);
    EXPECT_EQ(p.loras(), c.loras);
    request.loras.clear();
    const int without = sds::test::expect_images(
        p.generate(request), expected().tensor(c.name + ".nolora"), c.name + " without");
    EXPECT_TRUE(p.loras().empty());
    expect_same_weights(p.unet().module(), loaded);
    std::printf("%s: max pixel difference %d/255 with the LoRAs, %d/255 without\n", c.name.c_str(),
                with, without);
}

INSTANTIATE_TEST_SUITE_P(Tiny, LoraParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

std::string apply_error(sds::Pipeline& p, const std::vector<sds::LoraRef>& loras) {
    try {
        p.set_loras(loras);
    } catch (const sds::Error& e) {
        return e.what();
    }
    return "(no error)";
}

// A copy of a fixture LoRA with some tensors changed, in a scratch folder.
fs::path lora_variant(const std::string& name, const std::string& from,
                      const std::map<std::string, at::Tensor>& replace) {
    const auto src = sds::SafeTensorsFile::open(kDir / from);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& t : src.tensors()) {
        const auto it = replace.find(t.name);
        if (it == replace.end()) {
            tensors.emplace_back(t.name, src.tensor(t.name));
        } else if (it->second.defined()) {
            tensors.emplace_back(t.name, it->second);
        }
    }
    for (const auto& [k, v] : replace) {
        if (v.defined() && !src.contains(k)) {
            tensors.emplace_back(k, v);
        }
    }
    const fs::path out = sds::test::temp_dir("lora_" + name) / (name + ".safetensors");
    sds::save_safetensors(out, tensors);
    return out;
}

TEST(Lora, SaysWhatIsWrongAndKeepsTheModelAsLoaded) {
    auto& p = pipeline("tiny-sd");
    const auto loaded = weights_of(p.unet().module());
    const std::string good = (kDir / "sd_a.safetensors").string();
    // An SDXL LoRA on an SD 1.x model.
    const std::string xl =
        apply_error(p, {{good, 1.0}, {(kDir / "sdxl_a.safetensors").string(), 1.0}});
    EXPECT_NE(xl.find("sdxl_a.safetensors: "), std::string::npos) << xl;
    EXPECT_NE(xl.find("LoRA modules are not in this model"), std::string::npos) << xl;
    EXPECT_TRUE(p.loras().empty());
    expect_same_weights(p.unet().module(), loaded);  // the first one was taken back out
    EXPECT_NE(
        apply_error(p, {{(kDir / "none.safetensors").string(), 1.0}}).find("none.safetensors"),
        std::string::npos);
    const std::string q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q";
    const auto wrong_shape =
        lora_variant("shape", "sd_a.safetensors", {{q + ".lora_down.weight", at::ones({4, 48})}});
    EXPECT_NE(apply_error(p, {{wrong_shape.string(), 1.0}})
                  .find(q + ": up [64, 4] and down [4, 48] do not make the model's "
                            "weight [64, 64]"),
              std::string::npos)
        << apply_error(p, {{wrong_shape.string(), 1.0}});
    const auto no_up = lora_variant("no_up", "sd_a.safetensors", {{q + ".lora_up.weight", {}}});
    EXPECT_NE(apply_error(p, {{no_up.string(), 1.0}})
                  .find(q + " has lora_down.weight but no lora_up.weight"),
              std::string::npos);
    const auto peft =
        lora_variant("peft", "sd_a.safetensors",
                     {{"unet.down_blocks.1.attentions.0.proj_in.processor.to_q_lora.down.weight",
                       at::ones({4, 64})}});
    EXPECT_NE(apply_error(p, {{peft.string(), 1.0}}).find("diffusers' old attention-processor"),
              std::string::npos)
        << apply_error(p, {{peft.string(), 1.0}});
    // One module with LoRA and LoHa tensors; a LoHa module without all four factors; a LoKr
    // whose factors make another shape.
    const auto mixed =
        lora_variant("mixed", "sd_a.safetensors", {{q + ".hada_w1_a", at::ones({64, 4})}});
    const std::string mix = apply_error(p, {{mixed.string(), 1.0}});
    EXPECT_NE(mix.find(q + " has both "), std::string::npos) << mix;
    EXPECT_NE(mix.find("LoHa"), std::string::npos) << mix;
    const auto loha = lora_variant("loha", "sd_loha.safetensors", {{q + ".hada_w2_b", {}}});
    EXPECT_NE(apply_error(p, {{loha.string(), 1.0}}).find(q + " has hada_w1_a but no hada_w2_b"),
              std::string::npos)
        << apply_error(p, {{loha.string(), 1.0}});
    const auto lokr = lora_variant("lokr", "sd_lokr.safetensors",
                                   {{q + ".lokr_w1_a", at::ones({4, 2})}, {q + ".lokr_w1", {}}});
    EXPECT_NE(apply_error(p, {{lokr.string(), 1.0}})
                  .find(q + ": its LoKr weights (lokr_w1_a [4, 2], lokr_w1_b [2, 8], lokr_w2_a "
                            "[8, 2], lokr_w2_b [2, 8]) do not make the model's weight [64, 64]"),
              std::string::npos)
        << apply_error(p, {{lokr.string(), 1.0}});
    // A full file's bias change for a module without a bias; a LoCon Tucker core of another rank.
    const std::string k = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k";
    const auto no_bias =
        lora_variant("no_bias", "sd_full.safetensors", {{k + ".diff_b", at::ones({64})}});
    EXPECT_NE(apply_error(p, {{no_bias.string(), 1.0}})
                  .find(k + ": diff_b [64] for a module without a bias"),
              std::string::npos)
        << apply_error(p, {{no_bias.string(), 1.0}});
    const std::string conv = "lora_unet_down_blocks_0_resnets_0_conv1";
    const auto mid = lora_variant("mid", "sd_locon_tucker.safetensors",
                                  {{conv + ".lora_mid.weight", at::ones({2, 2, 3, 3})}});
    EXPECT_NE(apply_error(p, {{mid.string(), 1.0}})
                  .find(conv + ": its LoRA weights (lora_down.weight [4, 32, 1, 1], "
                               "lora_mid.weight [2, 2, 3, 3], lora_up.weight [32, 4, 1, 1]) do "
                               "not make the model's weight [32, 32, 3, 3]"),
              std::string::npos)
        << apply_error(p, {{mid.string(), 1.0}});
    const auto stray =
        lora_variant("stray", "sd_a.safetensors", {{"something_else", at::ones({1})}});
    EXPECT_NE(apply_error(p, {{stray.string(), 1.0}})
                  .find("1 tensor(s) that are not a LoRA module's: something_else"),
              std::string::npos);
    EXPECT_NE(apply_error(
                  p, {{(kDir / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors").string(),
                       1.0}})
                  .find("no LoRA modules"),
              std::string::npos);
    EXPECT_TRUE(p.loras().empty());
    expect_same_weights(p.unet().module(), loaded);
    // Weight 0 changes nothing.
    p.set_loras({{good, 0.0}});
    expect_same_weights(p.unet().module(), loaded);
    p.set_loras({});
}

// The scale of LyCORIS modules where the fixture's (peft's alpha / r) does not say it: a LoKr of
// two full matrices and a LoHa without an alpha add their change whole, times the weight, as
// A1111 and LyCORIS do; kron(w1, w2) puts w1's entries over w2's blocks.
TEST(Lora, LycorisWithoutARankOrAlphaAddsItsChangeWhole) {
    auto& p = pipeline("tiny-sd");
    const auto loaded = weights_of(p.unet().module());
    const std::string q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q";
    const std::string key = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight";
    at::manual_seed(5);
    const at::Tensor w1 = at::randn({8, 8}), w2 = at::randn({8, 8});
    const at::Tensor a1 = at::randn({64, 2}), b1 = at::randn({2, 64});
    const at::Tensor a2 = at::randn({64, 2}), b2 = at::randn({2, 64});
    const fs::path dir = sds::test::temp_dir("lora_lycoris_scale");
    sds::save_safetensors(
        dir / "kron.safetensors",
        {{q + ".lokr_w1", w1}, {q + ".lokr_w2", w2}, {q + ".alpha", at::full({}, 5.0)}});
    sds::save_safetensors(dir / "hada.safetensors", {{q + ".hada_w1_a", a1},
                                                     {q + ".hada_w1_b", b1},
                                                     {q + ".hada_w2_a", a2},
                                                     {q + ".hada_w2_b", b2}});
    const at::Tensor kron = at::einsum("ij,pq->ipjq", {w1, w2}).reshape({64, 64});
    const at::Tensor hada = at::mm(a1, b1) * at::mm(a2, b2);
    for (const auto& [file, change] :
         {std::pair{dir / "kron.safetensors", kron}, std::pair{dir / "hada.safetensors", hada}}) {
        p.set_loras({{file.string(), 0.5}});
        const auto merged = weights_of(p.unet().module());
        const at::Tensor want = loaded.at(key) + 0.5 * change;
        EXPECT_LT(at::max(at::abs(merged.at(key) - want)).item<float>(), 1e-5) << file;
        EXPECT_GT(at::max(at::abs(merged.at(key) - loaded.at(key))).item<float>(), 0.1) << file;
    }
    p.set_loras({});
    expect_same_weights(p.unet().module(), loaded);
}

TEST(Lora, TheRequestCarriesItsLoras) {
    sds::GenerationRequest r;
    r.prompt = "a cat";
    r.loras = {{"/models/loras/ink style.safetensors", 0.6}, {"b.safetensors", -0.8}};
    const auto back = sds::GenerationRequest::from_json(r.to_json());
    EXPECT_EQ(back.loras, r.loras);
    EXPECT_NE(r.to_a1111().find("Lora: \"ink style: 0.6, b: -0.8\""), std::string::npos)
        << r.to_a1111();
    EXPECT_TRUE(sds::GenerationRequest::from_json("{}").loras.empty());
    // The UNet's own weight travels too, and A1111's text gives both as the tag does.
    r.loras = {{"ink.safetensors", 1.3, 0.4}};
    EXPECT_EQ(sds::GenerationRequest::from_json(r.to_json()).loras, r.loras);
    EXPECT_NE(r.to_a1111().find("Lora: \"ink: 1.3:0.4\""), std::string::npos) << r.to_a1111();
    EXPECT_THROW(sds::GenerationRequest::from_json(
                     R"({"loras": [{"file": "a.safetensors", "unet_weight": "x"}]})"),
                 sds::Error);
    EXPECT_THROW(sds::GenerationRequest::from_json(R"({"loras": [{"weight": 1}]})"), sds::Error);
    EXPECT_THROW(sds::GenerationRequest::from_json(R"({"loras": "a.safetensors"})"), sds::Error);
    r.loras = {{"a.safetensors", 1e9}};
    EXPECT_THROW(r.validate(), sds::Error);
}

// A1111's <lora:NAME:WEIGHT> prompt tags: taken out of the text, found by name in the folder
// or below.
TEST(Lora, A1111PromptTagsFindTheirFiles) {
    const fs::path dir = sds::test::temp_dir("lora_tags");
    fs::create_directories(dir / "styles");
    fs::copy_file(kDir / "sd_a.safetensors", dir / "sd_a.safetensors",
                  fs::copy_options::overwrite_existing);
    fs::copy_file(kDir / "sd_b.safetensors", dir / "styles" / "ink wash.safetensors",
                  fs::copy_options::overwrite_existing);
    sds::GenerationRequest r;
    r.prompt = "a yellow star <lora:sd_a:0.6>, <lora:ink wash:-0.8>";
    r.negative_prompt = "<lora:sd_a>blurry";
    r.loras = {{"given.safetensors", 0.5}};
    r.take_lora_tags(dir.string());
    EXPECT_EQ(r.prompt, "a yellow star , ");
    EXPECT_EQ(r.negative_prompt, "blurry");
    EXPECT_EQ(r.loras,
              (std::vector<sds::LoraRef>{{"given.safetensors", 0.5},
                                         {(dir / "sd_a.safetensors").string(), 0.6},
                                         {(dir / "styles" / "ink wash.safetensors").string(), -0.8},
                                         {(dir / "sd_a.safetensors").string(), 1.0}}));
    auto error = [&](const std::string& prompt, const std::string& folder) {
        sds::GenerationRequest q;
        q.prompt = prompt;
        try {
            q.take_lora_tags(folder);
        } catch (const sds::Error& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    EXPECT_NE(error("x <lora:sd_a:0.6>", "").find("<lora:sd_a:0.6>, but no LoRA folder"),
              std::string::npos);
    EXPECT_NE(error("x <lora:nothing:1>", dir.string())
                  .find("<lora:nothing:1>: no nothing.safetensors (.pt, .ckpt) in"),
              std::string::npos);
    EXPECT_NE(
        error("x <lora:sd_a:strong>", dir.string()).find("its weight 'strong' is not a number"),
        std::string::npos);
    EXPECT_EQ(error("no tags <b>here</b>", ""), "(no error)");
    // A1111's two weights, the text encoders' and the UNet's, positional or named; the UNet's
    // is kept apart only where it differs.
    sds::GenerationRequest two;
    two.prompt =
        "<lora:sd_a:1.3:0.4> <lora:sd_a:unet=0.2> <lora:sd_a:te=0.5:unet=0.7> "
        "<lora:sd_a:0.9:0.9> <lora:sd_a:unet=0.3:0.8>";
    two.take_lora_tags(dir.string());
    const std::string a = (dir / "sd_a.safetensors").string();
    EXPECT_EQ(two.prompt, "    ");
    EXPECT_EQ(
        two.loras,
        (std::vector<sds::LoraRef>{
            {a, 1.3, 0.4}, {a, 1.0, 0.2}, {a, 0.5, 0.7}, {a, 0.9, std::nullopt}, {a, 0.8, 0.3}}));
    EXPECT_NE(error("x <lora:sd_a:1:1:8>", dir.string()).find("a dynamic rank (A1111's dyn"),
              std::string::npos);
    EXPECT_NE(error("x <lora:sd_a:dyn=8>", dir.string()).find("a dynamic rank"), std::string::npos);
    EXPECT_NE(error("x <lora:sd_a:1:clip=2>", dir.string())
                  .find("'clip=' is not one of A1111's te=, unet=, dyn="),
              std::string::npos);
    EXPECT_NE(error("x <lora:sd_a:1:half>", dir.string()).find("its weight 'half' is not a number"),
              std::string::npos);
}

}  // namespace
