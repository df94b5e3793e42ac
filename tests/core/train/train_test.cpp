// Training from scratch at a tiny size: the losses fall, the result loads and generates, a run
// interrupted and resumed ends with the same weights as one that was not, and the model folder
// is written for diffusers (train_test_reference.py compares diffusers' image with ours).
#include <gtest/gtest.h>

#include <ATen/ops/abs.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/max.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/tensor.h>

#include <array>
#include <fstream>

#include <nlohmann/json.hpp>

#include "sds/error.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "sds/shapes.h"
#include "sds/train.h"
#include "test_paths.h"

using namespace sds;
namespace fs = std::filesystem;

namespace {

std::vector<TrainExample> tiny_data() {
    std::vector<TrainExample> out;
    for (uint64_t s = 0; s < 24; ++s) {
        const auto scene = imaging::random_scene(s);
        out.push_back({imaging::render_scene(scene, 32, s), scene.caption});
    }
    return out;
}

TrainOptions tiny_options(const fs::path& out) {
    TrainOptions o;
    o.out_dir = out;
    o.tokenizer_dir = test::fixture_dir("tiny_pipeline") / "tiny-sd" / "tokenizer";
    o.arch.resolution = 32;
    o.arch.vae_channels = {8, 16};
    o.arch.unet_channels = {16, 32};
    o.arch.unet_down = {"CrossAttnDownBlock2D", "DownBlock2D"};
    o.arch.unet_up = {"UpBlock2D", "CrossAttnUpBlock2D"};
    o.arch.unet_heads = 2;
    o.arch.norm_groups = 8;
    o.arch.text_hidden = 16;
    o.arch.text_heads = 2;
    o.vae_crop = 0;
    o.vae_steps = 30;
    o.unet_steps = 30;
    o.batch_size = 4;
    o.checkpoint_every = 0;
    o.device = "cpu";
    return o;
}

at::Tensor weights_of(const fs::path& file) {
    const auto f = SafeTensorsFile::open(file);
    std::vector<at::Tensor> all;
    for (const auto& t : f.tensors()) {
        all.push_back(f.tensor(t.name).flatten());
    }
    return at::cat(all);
}

}  // namespace

TEST(Train, FromScratchLossesFallAndTheModelGenerates) {
    const fs::path out = test::temp_dir("train_scratch");
    std::map<std::string, std::vector<double>> losses;
    train(tiny_data(), tiny_options(out),
          [&](const TrainProgress& p) { losses[p.phase].push_back(p.loss); });
    ASSERT_EQ(losses["vae"].size(), 30u);
    ASSERT_EQ(losses["unet"].size(), 30u);
    EXPECT_LT(losses["vae"].back(), losses["vae"].front());
    EXPECT_LT(losses["unet"].back(), losses["unet"].front());
    for (const char* f :
         {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
          "vae/config.json", "text_encoder/model.safetensors", "tokenizer/tokenizer.json",
          "scheduler/scheduler_config.json"}) {
        EXPECT_TRUE(fs::exists(out / f)) << f;
    }
    Pipeline p = Pipeline::load(out, {});
    EXPECT_EQ(p.native_size(), 32);
    GenerationRequest r;
    r.prompt = "a red circle on a blue background";
    r.steps = 8;
    r.seed = 5;
    r.sampler = Sampler::Euler;
    const auto result = p.generate(r);
    ASSERT_EQ(result.images.size(), 1u);
    EXPECT_EQ(result.images[0].width, 32);
    // For train_test_reference.py: diffusers must make the same image from this folder.
    const auto& px = result.images[0].rgb;
    save_safetensors(out / "ours.safetensors",
                     {{"image", at::tensor(std::vector<int64_t>(px.begin(), px.end()))}});
}

TEST(Train, AResumedRunEndsWithTheSameWeights) {
    const fs::path a = test::temp_dir("train_straight"), b = test::temp_dir("train_resumed");
    const auto data = tiny_data();
    TrainOptions oa = tiny_options(a);
    oa.vae_steps = 6;
    oa.unet_steps = 12;
    train(data, oa);
    // The same run, stopped after 4 UNet steps (checkpointing every 2) and started again.
    TrainOptions ob = tiny_options(b);
    ob.vae_steps = 6;
    ob.unet_steps = 12;
    ob.checkpoint_every = 2;
    std::atomic<bool> stop{false};
    EXPECT_THROW(train(
                     data, ob,
                     [&](const TrainProgress& p) {
                         if (p.phase == "unet" && p.step == 4) {
                             stop = true;
                         }
                     },
                     &stop),
                 Cancelled);
    std::map<std::string, int> first_step;
    train(data, ob, [&](const TrainProgress& p) {
        if (!first_step.count(p.phase)) {
            first_step[p.phase] = p.step;
        }
    });
    EXPECT_FALSE(first_step.count("vae"));  // the VAE was finished and is not trained again
    EXPECT_EQ(first_step["unet"], 5);       // resumed after step 4
    for (const char* f :
         {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
          "vae/diffusion_pytorch_model.safetensors"}) {
        EXPECT_TRUE(at::allclose(weights_of(a / f), weights_of(b / f), 0, 0)) << f;
    }
}

// Pictures of another shape are scaled to cover the square and cut in the middle, not squashed.
TEST(Train, TrainingImagesAreCentreCropped) {
    auto filled = [](int w, int h, auto colour_at) {
        Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
        for (int y = 0; y < h; ++y) {
            for (int x = 0; x < w; ++x) {
                const std::array<uint8_t, 3> c = colour_at(x, y);
                std::copy(c.begin(), c.end(), im.rgb.begin() + (y * w + x) * 3);
            }
        }
        return im;
    };
    // 64x32: red quarters left and right of a blue middle; at 32 only the blue is left.
    const Image wide = filled(64, 32, [](int x, int) {
        return x < 16 || x >= 48 ? std::array<uint8_t, 3>{255, 0, 0}
                                 : std::array<uint8_t, 3>{0, 0, 255};
    });
    const Image cut = training_image(wide, 32);
    ASSERT_EQ(cut.width, 32);
    ASSERT_EQ(cut.height, 32);
    for (size_t i = 0; i < cut.rgb.size(); i += 3) {
        ASSERT_EQ(cut.rgb[i], 0);
        ASSERT_EQ(cut.rgb[i + 2], 255);
    }
    // 40x80 at 32: scaled to 32x64 (Lanczos), rows 16-47 kept.
    const Image tall = filled(40, 80, [](int x, int y) {
        return std::array<uint8_t, 3>{uint8_t(x * 6), uint8_t(y * 3), uint8_t((x * y) % 256)};
    });
    const Image scaled = resize(tall, 32, 64);
    const Image cut_tall = training_image(tall, 32);
    ASSERT_EQ(cut_tall.width, 32);
    ASSERT_EQ(cut_tall.height, 32);
    EXPECT_TRUE(
        std::equal(cut_tall.rgb.begin(), cut_tall.rgb.end(), scaled.rgb.begin() + 16 * 32 * 3));
    // A square one is only scaled; one of the size is itself.
    EXPECT_EQ(training_image(wide, 16).rgb, training_image(resize(wide, 32, 16), 16).rgb);
    EXPECT_EQ(training_image(cut, 32).rgb, cut.rgb);
    EXPECT_EQ(training_image(resize(cut, 48, 48), 16).rgb, resize(resize(cut, 48, 48), 16, 16).rgb);
    EXPECT_THROW(training_image(cut, 4), Error);
}

// Fine-tuning keeps the base's schedule and prediction type: a v-prediction base (SD 2.x 768)
// trains on the v target, and the tuned model says v-prediction as the base did.
TEST(Train, FineTuningAVPredictionModelTrainsOnV) {
    const fs::path base = test::temp_dir("train_v_base");
    fs::copy(test::fixture_dir("single_file") / "model", base,
             fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    const fs::path sched = base / "scheduler" / "scheduler_config.json";
    nlohmann::json config = nlohmann::json::parse(std::ifstream(sched));
    config["prediction_type"] = "v_prediction";
    std::ofstream(sched) << config.dump();
    auto fine_tune = [&](const std::string& name, const fs::path& model) {
        TrainOptions o = tiny_options(test::temp_dir("train_v_" + name));
        o.tokenizer_dir.clear();
        o.base_model = model;
        o.unet_steps = 3;
        o.snr_gamma = 5;
        train(tiny_data(), o);
        return o.out_dir;
    };
    const fs::path v = fine_tune("v", base);
    const fs::path eps = fine_tune("eps", test::fixture_dir("single_file") / "model");
    const auto written =
        nlohmann::json::parse(std::ifstream(v / "scheduler/scheduler_config.json"));
    EXPECT_EQ(written["prediction_type"], "v_prediction");
    const std::string unet = "unet/diffusion_pytorch_model.safetensors";
    EXPECT_FALSE(at::equal(weights_of(v / unet), weights_of(eps / unet)));
    // Min-SNR for v: min(SNR, gamma) / (SNR + 1).
    const at::Tensor w = min_snr_weights(at::tensor({0.5, 0.99}, at::kDouble), 5.0, true);
    EXPECT_NEAR(w[0].item<double>(), 1.0 / 2.0, 1e-12);
    EXPECT_NEAR(w[1].item<double>(), 5.0 / 100.0, 1e-12);
}

TEST(Train, MinSnrWeights) {
    // SNR = a / (1 - a): a = 0.5 is SNR 1 (weight 1), a = 0.99 is SNR 99 (weight 5 / 99 with
    // gamma 5), a = 0.01 is SNR 1/99 (weight 1: below gamma nothing changes).
    const at::Tensor a = at::tensor({0.5, 0.99, 0.01}, at::kDouble);
    const at::Tensor w = min_snr_weights(a, 5.0);
    EXPECT_NEAR(w[0].item<double>(), 1.0, 1e-12);
    EXPECT_NEAR(w[1].item<double>(), 5.0 / 99.0, 1e-12);
    EXPECT_NEAR(w[2].item<double>(), 1.0, 1e-12);
    EXPECT_TRUE(at::equal(min_snr_weights(a, 0), at::ones_like(a)));
}

TEST(Train, OffsetNoiseAndMinSnrEachChangeTrainingAndItStillLearns) {
    const auto data = tiny_data();
    // The same short run (the same learning rate: Min-SNR weighs the quickly learnt timesteps
    // down, so a faster rate shows the loss falling) plain, with each option, and with both.
    auto run = [&](const char* name, double offset, double gamma, std::vector<double>* losses) {
        const fs::path out = test::temp_dir(name);
        TrainOptions o = tiny_options(out);
        o.vae_steps = 6;
        o.learning_rate = 2e-3;
        o.noise_offset = offset;
        o.snr_gamma = gamma;
        train(data, o, [&](const TrainProgress& p) {
            if (losses && p.phase == "unet") {
                losses->push_back(p.loss);
            }
        });
        return out;
    };
    std::vector<double> losses;
    const fs::path plain = run("train_plain", 0, 0, nullptr);
    const fs::path offset = run("train_offset", 0.1, 0, nullptr);
    const fs::path snr = run("train_snr", 0, 5, nullptr);
    const fs::path both = run("train_offset_snr", 0.1, 5, &losses);
    ASSERT_EQ(losses.size(), 30u);
    EXPECT_LT(losses.back(), losses.front());
    const char* unet = "unet/diffusion_pytorch_model.safetensors";
    const char* vae = "vae/diffusion_pytorch_model.safetensors";
    EXPECT_TRUE(at::equal(weights_of(plain / vae), weights_of(both / vae)));  // a phase apart
    for (const fs::path& changed : {offset, snr, both}) {
        EXPECT_FALSE(at::allclose(weights_of(plain / unet), weights_of(changed / unet))) << changed;
    }
}

TEST(Train, ClearErrors) {
    TrainOptions o = tiny_options(test::temp_dir("train_errors"));
    EXPECT_THROW(train({}, o), Error);
    o.tokenizer_dir.clear();
    try {
        train(tiny_data(), o);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tokenizer"), std::string::npos);
    }
    o = tiny_options(test::temp_dir("train_errors"));
    o.noise_offset = -0.1;
    EXPECT_THROW(train(tiny_data(), o), Error);
}

// Fine-tuning a single-file checkpoint (read with its config folder) is fine-tuning the same
// model as a diffusers folder: the same UNet after the same steps, the VAE and text encoder
// written unchanged, and the result a folder that loads and generates.
TEST(Train, FineTuningASingleFileIsFineTuningTheSameFolder) {
    const fs::path fixture = test::fixture_dir("single_file");
    auto fine_tune = [&](const std::string& name, const fs::path& base) {
        TrainOptions o = tiny_options(test::temp_dir("train_fine_tune_" + name));
        o.tokenizer_dir.clear();
        o.base_model = base;
        o.base_config = fixture / "config";
        o.unet_steps = 4;
        train(tiny_data(), o);
        return o.out_dir;
    };
    const fs::path from_folder = fine_tune("folder", fixture / "model");
    const fs::path from_file = fine_tune("file", fixture / "model.safetensors");
    const std::string unet = "unet/diffusion_pytorch_model.safetensors";
    EXPECT_TRUE(at::equal(weights_of(from_folder / unet), weights_of(from_file / unet)));
    EXPECT_FALSE(at::equal(weights_of(from_file / unet), weights_of(fixture / "model" / unet)));
    for (const std::string f :
         {"vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}) {
        const auto ours = SafeTensorsFile::open(from_file / f);
        const auto base = SafeTensorsFile::open(fixture / "model" / f);
        for (const auto& t : base.tensors()) {
            if (t.name.find("position_ids") == std::string::npos) {
                EXPECT_TRUE(at::equal(ours.tensor(t.name), base.tensor(t.name))) << f << t.name;
            }
        }
    }
    EXPECT_FALSE(fs::exists(from_folder / "sdstudio.json"));  // the fixture has none
    auto pipe = Pipeline::load(from_file, {});
    GenerationRequest r;
    r.prompt = "a red circle";
    r.steps = 2;
    r.width = r.height = 32;
    EXPECT_EQ(pipe.generate(r).images.size(), 1u);
}

// Fine-tuning a folder keeps the base's suggested settings (sdstudio.json): the tuned model is
// used as the base was.
TEST(Train, FineTuningKeepsTheBaseFoldersHints) {
    const fs::path base = test::temp_dir("train_hinted_base");
    fs::copy(test::fixture_dir("single_file") / "model", base,
             fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    { std::ofstream(base / "sdstudio.json") << R"({"guidance_scale": 3, "steps": 15})"; }
    TrainOptions o = tiny_options(test::temp_dir("train_hinted_out"));
    o.tokenizer_dir.clear();
    o.base_model = base;
    o.unet_steps = 1;
    train(tiny_data(), o);
    std::ifstream in(o.out_dir / "sdstudio.json");
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(text, R"({"guidance_scale": 3, "steps": 15})");
}

// A LoRA trained on the fixture model: kohya-ss's names for every attention projection, its up
// matrices moved off zero, a stopped and resumed run ending with the same file, and the file
// loading into the pipeline (train_test_reference.py checks diffusers makes the same image with
// it through load_lora_weights).
TEST(Train, ALoraTrainsOnTheAttentionProjections) {
    const fs::path model = test::fixture_dir("single_file") / "model";
    auto options = [&](const std::string& name) {
        TrainOptions o = tiny_options(test::temp_dir(name));
        o.tokenizer_dir.clear();
        o.base_model = model;
        o.unet_steps = 6;
        o.lora_rank = 4;
        o.lora_alpha = 2;
        o.learning_rate = 1e-2;
        return o;
    };
    const TrainOptions straight = options("train_lora");
    train(tiny_data(), straight);
    const fs::path file = lora_file(straight);
    EXPECT_EQ(file.filename(), "train_lora.safetensors");
    const auto f = SafeTensorsFile::open(file);
    size_t projections = 0;
    for (const auto& t : f.tensors()) {
        if (t.name.find(".lora_up.weight") != std::string::npos) {
            ++projections;
            EXPECT_GT(f.tensor(t.name).abs().max().item<double>(), 0) << t.name;
        }
    }
    EXPECT_EQ(f.metadata().at("ss_network_dim"), "4");
    EXPECT_TRUE(
        f.contains("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_"
                   "down.weight"));
    EXPECT_EQ(f.tensor("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha")
                  .item<double>(),
              2.0);
    EXPECT_GT(projections, 0u);
    EXPECT_EQ(projections % 8, 0u);                       // attn1 and attn2, four projections each
    EXPECT_FALSE(fs::exists(straight.out_dir / "unet"));  // no model folder, the file alone
    // Stopped after 2 steps and run again: the same LoRA.
    TrainOptions stopped = options("train_lora_stopped");
    std::atomic<bool> stop{false};
    EXPECT_THROW(
        train(
            tiny_data(), stopped, [&](const TrainProgress& p) { stop = p.step == 2; }, &stop),
        Cancelled);
    train(tiny_data(), stopped);
    const auto g = SafeTensorsFile::open(lora_file(stopped));
    for (const auto& t : f.tensors()) {
        EXPECT_TRUE(at::equal(f.tensor(t.name), g.tensor(t.name))) << t.name;
    }
    // It loads and changes the image; for train_test_reference.py, our image with it.
    Pipeline p = Pipeline::load(model, {});
    GenerationRequest r;
    r.prompt = "a red circle on a blue background";
    r.steps = 8;
    r.seed = 5;
    r.sampler = Sampler::Euler;
    r.width = r.height = 32;
    const auto plain = p.generate(r).images.at(0);
    r.loras = {{file.string(), 1.0}};
    const auto with = p.generate(r).images.at(0);
    EXPECT_NE(plain.rgb, with.rgb);
    save_safetensors(
        straight.out_dir / "ours_lora.safetensors",
        {{"image", at::tensor(std::vector<int64_t>(with.rgb.begin(), with.rgb.end()))}});
    TrainOptions bad = options("train_lora_bad");
    bad.base_model.clear();
    bad.tokenizer_dir = straight.tokenizer_dir;
    EXPECT_THROW(train(tiny_data(), bad), Error);
}
