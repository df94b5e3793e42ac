// UNet2DConditionModel and AutoencoderKL against diffusers at tiny random configs that turn
// every knob SD 1.x/2.x use (tests/reference/make_unet_vae_fixture.py).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "nn_parity.h"
#include "sds/error.h"
#include "test_paths.h"

namespace {

const std::filesystem::path kDir = sds::test::fixture_dir("unet_vae_tiny");

TEST(UNet, MatchesDiffusersIncludingAnOddSize) {
    sds::test::check_unet(kDir, "unet", {"", "_odd"});
}

TEST(UNet, Sd2KnobsMatchDiffusers) {
    // linear projections, upcast attention, 2 transformer layers, per-block heads
    sds::test::check_unet(kDir, "unet_sd2", {""});
}

TEST(UNet, AGuidanceEmbeddingMatchesDiffusers) {
    // time_cond_proj_dim (latent consistency models): given each row's guidance, and given none
    sds::test::check_unet(kDir, "unet_lcm", {"", "_bare"});
}

TEST(Vae, EncodeAndDecodeMatchDiffusers) {
    sds::test::check_vae(kDir);
}

// bf16 on the CPU (the precision the studio offers there): one forward pass stays within
// bf16's rounding of diffusers' fp32 outputs. fp16 is for GPUs (unet_vae_cuda_test).
TEST(UNet, Bf16OnCpuIsWithinRoundingOfFp32) {
    const sds::test::RunOn bf16{.dtype = at::kBFloat16};
    sds::test::check_unet(kDir, "unet", {"", "_odd"}, bf16);
    sds::test::check_unet(kDir, "unet_sd2", {""}, bf16);
}

TEST(Vae, Bf16OnCpuIsWithinRoundingOfFp32) {
    sds::test::check_vae(kDir, {.dtype = at::kBFloat16});
}

TEST(UNet, ConfigKnobsAreRead) {
    const auto c = sds::UNetConfig::from_file(kDir / "unet/config.json");
    EXPECT_EQ(c.heads, (std::vector<int64_t>{2, 4, 4}));
    EXPECT_EQ(c.cross_attention_dim, 24);
    EXPECT_FALSE(c.flip_sin_to_cos);
    EXPECT_EQ(c.freq_shift, 1.0);
    EXPECT_EQ(c.norm_num_groups, 16);
}

// The error a config.json with `json` gives (Config: sds::UNetConfig or sds::VaeConfig).
template <class Config = sds::UNetConfig>
std::string config_error(const std::string& name, const std::string& json) {
    const auto dir = sds::test::temp_dir("cfg_" + name);
    std::ofstream(dir / "config.json") << json;
    try {
        Config::from_file(dir / "config.json");
    } catch (const sds::ModelError& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(UNet, UnsupportedOrInconsistentConfigsAreErrors) {
    EXPECT_NE(config_error("lengths", R"({"block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 16})")
                  .find("config.json: block_out_channels has 2 entries but down_block_types has 3"),
              std::string::npos);
    EXPECT_NE(config_error("class_embed", R"({"class_embed_type": "timestep"})")
                  .find("config.json: class_embed_type = \"timestep\" is not supported"),
              std::string::npos);
    EXPECT_NE(config_error("block_type", R"({"down_block_types": ["SimpleCrossAttnDownBlock2D",
        "DownBlock2D", "DownBlock2D", "DownBlock2D"]})")
                  .find("down_block_types entry 'SimpleCrossAttnDownBlock2D' is not supported"),
              std::string::npos);
    EXPECT_NE(config_error("cond_proj", R"({"time_cond_proj_dim": 0})")
                  .find("config.json: time_cond_proj_dim must be a positive width or null"),
              std::string::npos);
    EXPECT_NE(config_error("groups", R"({"norm_num_groups": 7})")
                  .find("block_out_channels entry 320 is not divisible by norm_num_groups 7"),
              std::string::npos);
}

TEST(UNet, ARefinersSizeNumbersAreFiveNotSix) {
    // A refiner's projection: a pooled embedding of 8 and 5 size numbers of 8 each (48). Read
    // as a base UNet's 6 numbers nothing is left for the pooled embedding.
    const std::string json = R"({"addition_embed_type": "text_time", "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 48})";
    EXPECT_NE(config_error("six_ids", json)
                  .find("projection_class_embeddings_input_dim (48) must exceed 6 x "
                        "addition_time_embed_dim (8)"),
              std::string::npos);
    const auto dir = sds::test::temp_dir("cfg_five_ids");
    std::ofstream(dir / "config.json") << json;
    const auto c = sds::UNetConfig::from_file(dir / "config.json", 5);
    EXPECT_EQ(c.time_ids, 5);
    EXPECT_EQ(c.text_embeds_dim(), 8);
}

TEST(Vae, UnsupportedConfigsAreErrors) {
    EXPECT_NE(config_error<sds::VaeConfig>("vae_act", R"({"act_fn": "gelu"})")
                  .find("config.json: act_fn 'gelu' is not supported"),
              std::string::npos);
}

}  // namespace
