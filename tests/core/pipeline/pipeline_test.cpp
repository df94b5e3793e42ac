// txt2img and img2img against diffusers on the tiny random pipeline, image for image
// (tests/reference/make_pipeline_fixture.py), plus the step observer, cancellation and
// device/precision errors. SDS_TEST_DEVICE=cuda runs the pipeline on the GPU in fp32 against the
// same diffusers CPU images (ctest's pipeline_cuda_test, with -DSDS_TEST_CUDA=ON).
#include "sds/pipeline.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>
#include <tuple>

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/max.h>
#include <torch/cuda.h>
#include <nlohmann/json.hpp>

#include "image_parity.h"
#include "sds/cpu_buffer_cache.h"
#include "sds/image.h"
#include "sds/safetensors.h"
#include "sds/vae.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = sds::test::fixture_dir("pipeline");

using sds::test::test_device;

sds::Pipeline& pipeline() {
    return sds::test::cached_pipeline(kDir / "tiny-sd");
}

TEST(Pipeline, RunsOnTheDeviceAskedFor) {
    EXPECT_EQ(pipeline().device(), test_device());
    EXPECT_EQ(pipeline().dtype(), at::kFloat);
}

const sds::SafeTensorsFile& expected() {
    return sds::test::fixture_expected(kDir);
}

sds::Image init_image() {
    return sds::test::image_of(expected().tensor("init"));
}

struct Case {
    std::string name;
    std::string request_json;
};

std::vector<Case> cases() {
    std::vector<Case> out;
    for (const auto& c : sds::test::fixture_cases(kDir)) {
        out.push_back({c["name"], c["request"].dump()});
    }
    return out;
}

class PipelineParity : public ::testing::TestWithParam<Case> {};

TEST_P(PipelineParity, SameImagesAsDiffusers) {
    const Case& c = GetParam();
    const auto request = sds::GenerationRequest::from_json(c.request_json);
    const sds::Image init = init_image();
    sds::test::expect_images(pipeline().generate(request, request.is_img2img() ? &init : nullptr),
                             expected().tensor(c.name), c.name);
}

INSTANTIATE_TEST_SUITE_P(Tiny, PipelineParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return sds::test::test_name(info.param.name); });

sds::GenerationRequest small_request() {
    sds::GenerationRequest r;
    r.prompt = "a blue square";
    r.steps = 6;
    r.seed = 77;
    r.sampler = sds::Sampler::Euler;
    return r;
}

TEST(Pipeline, ObserverSeesEveryStepWithItsEstimate) {
    std::vector<sds::StepEvent> events;
    const auto r = pipeline().generate(small_request(), nullptr, nullptr,
                                       [&](const sds::StepEvent& e) { events.push_back(e); });
    ASSERT_EQ(events.size(), 6u);
    EXPECT_EQ(r.request.width, 32);  // the model's native size
    for (int i = 0; i < 6; ++i) {
        EXPECT_EQ(events[i].index, i);
        EXPECT_EQ(events[i].total, 6);
        EXPECT_EQ(events[i].pred_x0.sizes(), (std::vector<int64_t>{1, 4, 16, 16}));
    }
    EXPECT_GT(events[0].timestep, events[5].timestep);
    const auto previews = pipeline().preview(events.back().pred_x0);
    ASSERT_EQ(previews.size(), 1u);
    EXPECT_EQ(previews[0].width, 16);
}

TEST(Pipeline, DenoisingStepsCountsWhatTheObserverSeesAndRefusesWhatCannotRun) {
    // Each count is checked against the steps a generation reports, not only a number.
    auto observed = [](const sds::GenerationRequest& r) {
        const sds::Image init = init_image();
        int total = -1, calls = 0;
        pipeline().generate(r, r.is_img2img() ? &init : nullptr, nullptr,
                            [&](const sds::StepEvent& e) {
                                total = e.total;
                                ++calls;
                            });
        EXPECT_EQ(calls, total);
        return total;
    };
    sds::GenerationRequest r = small_request();
    r.width = r.height = 16;
    EXPECT_EQ(pipeline().denoising_steps(r), 6);
    EXPECT_EQ(observed(r), 6);
    r.sampler = sds::Sampler::Heun;  // two model calls a step but the last
    EXPECT_EQ(pipeline().denoising_steps(r), 11);
    EXPECT_EQ(observed(r), 11);
    r.sampler = sds::Sampler::Euler;
    r.init_image = "init";  // img2img: what is left after the strength cut
    r.strength = 0.5;
    r.steps = 10;
    EXPECT_EQ(pipeline().denoising_steps(r), 5);
    EXPECT_EQ(observed(r), 5);
    r = small_request();
    r.width = r.height = 16;
    r.steps = 4;
    r.hires_scale = 2;  // both runs: 4, then 6 at strength 0.5
    r.hires_steps = 6;
    r.hires_strength = 0.5;
    EXPECT_EQ(pipeline().denoising_steps(r), 7);
    EXPECT_EQ(observed(r), 7);

    sds::GenerationRequest lcm = small_request();
    lcm.sampler = sds::Sampler::Lcm;
    lcm.steps = 51;  // beyond LCM's original_inference_steps (50)
    EXPECT_THROW(pipeline().denoising_steps(lcm), sds::Error);
    lcm.steps = 50;
    EXPECT_EQ(pipeline().denoising_steps(lcm), 50);
    lcm.steps = 4;
    lcm.hires_scale = 2;
    lcm.hires_steps = 60;  // the second run's steps are checked too
    EXPECT_THROW(pipeline().denoising_steps(lcm), sds::Error);
    sds::GenerationRequest odd = small_request();
    odd.width = 40;
    EXPECT_EQ(pipeline().denoising_steps(odd), 6);
    odd.width = 36;  // not a multiple of 8
    EXPECT_THROW(pipeline().denoising_steps(odd), sds::Error);
}

TEST(Pipeline, PreviewMapIsReferencesForSd1VaeAndFittedToAnyOther) {
    // SD 1.x's VAE (the default config): REFERENCE.md's factors, used as they are.
    const sds::Vae sd1{sds::VaeConfig{}};
    const at::Tensor ref = sds::preview_map_for(sd1);
    ASSERT_EQ(ref.sizes(), (std::vector<int64_t>{5, 3}));
    EXPECT_FLOAT_EQ(ref[0][0].item<float>(), 0.3512f);
    EXPECT_FLOAT_EQ(ref[3][2].item<float>(), -0.7177f);
    EXPECT_FLOAT_EQ(ref[4].abs().sum().item<float>(), 0.0f);
    // The tiny model's VAE is not SD's: its own map, the least-squares fit to its encodings of
    // flat colours, so it reproduces a flat colour better than SD's factors do.
    const at::Tensor& fitted = pipeline().preview_map();
    ASSERT_EQ(fitted.sizes(), (std::vector<int64_t>{5, 3}));
    EXPECT_FALSE(fitted.equal(ref));
    sds::Image flat;
    flat.width = flat.height = 64;
    flat.rgb.resize(64 * 64 * 3);
    for (size_t i = 0; i < flat.rgb.size(); i += 3) {
        flat.rgb[i] = 200, flat.rgb[i + 1] = 60, flat.rgb[i + 2] = 120;
    }
    const at::Tensor z = pipeline().vae().encode(sds::image_to_tensor(flat)).first *
                         pipeline().vae().config().scaling_factor;
    auto error = [&](const at::Tensor& map) {
        const sds::Image p = sds::latents_to_preview(z, map).front();
        const size_t centre = (p.height / 2 * p.width + p.width / 2) * 3;
        int e = 0;
        for (int k = 0; k < 3; ++k) {
            e += std::abs(p.rgb[centre + k] - flat.rgb[k]);
        }
        return e;
    };
    std::printf("flat colour through the preview: fitted map off by %d, SD 1.x's by %d\n",
                error(fitted), error(ref));
    EXPECT_LT(error(fitted), error(ref));
}

TEST(Pipeline, CancelFromAnotherThreadStopsWithinAStepAndLeavesItUsable) {
    const auto whole = pipeline().generate(small_request());
    std::atomic<bool> cancel{false};
    std::atomic<int> steps_after{0}, seen{0};
    std::thread canceller;
    EXPECT_THROW(pipeline().generate(
                     small_request(), nullptr, nullptr,
                     [&](const sds::StepEvent& e) {
                         if (cancel) {
                             ++steps_after;
                         }
                         if (e.index == 1) {
                             canceller = std::thread([&] { cancel = true; });
                             canceller.join();
                         }
                         ++seen;
                     },
                     &cancel),
                 sds::Cancelled);
    EXPECT_EQ(seen.load(), 2);  // stopped before the third step
    EXPECT_EQ(sds::cpu_buffer_stats().idle_bytes, 0u) << "a cancelled run kept its step buffers";
    EXPECT_LE(steps_after.load(), 1);
    const auto again = pipeline().generate(small_request());
    EXPECT_EQ(again.images[0].rgb, whole.images[0].rgb);
}

TEST(Pipeline, RequestErrorsAreClear) {
    auto r = small_request();
    r.width = 36;
    EXPECT_THROW(pipeline().generate(r), sds::Error);
    r = small_request();
    r.init_image = "missing.png";
    EXPECT_THROW(pipeline().generate(r), sds::Error);
    r = small_request();
    r.steps = 0;
    EXPECT_THROW(pipeline().generate(r), sds::Error);
}

TEST(Pipeline, DeviceAndPrecisionErrors) {
    EXPECT_THROW(sds::parse_dtype("fp16", c10::Device(c10::kCPU)), sds::DeviceError);
    EXPECT_EQ(sds::parse_dtype("bf16", c10::Device(c10::kCPU)), at::kBFloat16);
    EXPECT_THROW(sds::parse_dtype("int8", c10::Device(c10::kCPU)), sds::DeviceError);
    EXPECT_THROW(sds::parse_device("tpu"), sds::DeviceError);
    if (!torch::cuda::is_available()) {
        EXPECT_THROW(sds::parse_device("cuda"), sds::DeviceError);
        EXPECT_EQ(sds::parse_device("auto"), c10::Device(c10::kCPU));
    }
}

TEST(Pipeline, Bf16OnCpuRunsDeterministically) {
    // A random tiny model amplifies bf16 rounding too much to compare with fp32 pixels; this
    // checks the bf16 path runs end to end and repeats itself exactly. Against diffusers' own
    // bf16 images: tests/models/demo_diffusers_test.py.
    sds::Pipeline p = sds::Pipeline::load(kDir / "tiny-sd", {.dtype = at::kBFloat16});
    EXPECT_EQ(p.dtype(), at::kBFloat16);
    std::vector<at::ScalarType> seen;
    const auto r = p.generate(small_request(), nullptr, nullptr, [&](const sds::StepEvent& e) {
        seen.push_back(e.latents.scalar_type());
    });
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen.front(), at::kBFloat16);
    EXPECT_EQ(p.generate(small_request()).images[0].rgb, r.images[0].rgb);
    const auto [lo, hi] = std::minmax_element(r.images[0].rgb.begin(), r.images[0].rgb.end());
    EXPECT_LT(*lo, *hi);
}

// A1111's emphasis: weights, and the mean put back; states whose weighed mean is exactly 0 (a
// tiny random text encoder's final layer norm gives them) stay finite instead of 0 / 0.
TEST(Pipeline, A1111EmphasisKeepsTheMeanAndNeverDividesByZero) {
    const at::Tensor z = at::tensor({0.5F, 1.0F, -0.25F, 2.0F, 0.75F, -1.0F}).view({1, 3, 2});
    const std::vector<float> w = {1.0F, 1.5F, 0.8F};
    const at::Tensor plain = sds::emphasize(z, w, sds::PromptSyntax::A1111NoNorm);
    EXPECT_FLOAT_EQ(plain[0][1][1].item<float>(), 3.0F);  // 2 x 1.5
    const at::Tensor kept = sds::emphasize(z, w, sds::PromptSyntax::A1111);
    EXPECT_NEAR(kept.mean().item<float>(), z.mean().item<float>(), 1e-6);
    EXPECT_NEAR((kept / plain)[0][0][0].item<float>(),
                z.mean().item<float>() / plain.mean().item<float>(), 1e-6);
    // Each token's states sum to 0: so do the weighed ones, and there is no mean to put back.
    const at::Tensor zero = at::tensor({1.0F, -1.0F, 2.0F, -2.0F, 0.5F, -0.5F}).view({1, 3, 2});
    const at::Tensor same = sds::emphasize(zero, {1.0F, 1.0F, 1.0F}, sds::PromptSyntax::A1111);
    EXPECT_TRUE(at::equal(same, zero));
    const std::vector<float> exact = {1.0F, 1.5F, 0.75F};  // every product and sum exact
    const at::Tensor weighed = sds::emphasize(zero, exact, sds::PromptSyntax::A1111);
    EXPECT_FALSE(weighed.isnan().any().item<bool>());
    EXPECT_TRUE(at::equal(weighed, sds::emphasize(zero, exact, sds::PromptSyntax::A1111NoNorm)));
}

TEST(GenerationRequest, JsonRoundTripAndDefaults) {
    sds::GenerationRequest r;
    EXPECT_EQ(r.steps, 50);
    EXPECT_EQ(r.guidance_scale, 7.5);
    EXPECT_EQ(r.strength, 0.8);
    r.prompt = "a \"quoted\", multi\nline prompt";
    r.negative_prompt = "ugly";
    r.sampler = sds::Sampler::DpmPP2MKarras;
    r.seed = 1234567890123;
    r.init_image = "sketch.png";
    const auto back = sds::GenerationRequest::from_json(r.to_json());
    EXPECT_EQ(back.to_json(), r.to_json());
    EXPECT_THROW(sds::GenerationRequest::from_json(R"({"steps": "ten"})"), sds::Error);
}

TEST(GenerationRequest, A1111ParametersRoundTrip) {
    sds::GenerationRequest r;
    r.prompt = "a red fox, snow\nsecond line";
    r.negative_prompt = "blurry";
    r.steps = 20;
    r.guidance_scale = 7;
    r.seed = 1234567890;
    r.width = 512;
    r.height = 768;
    r.sampler = sds::Sampler::DpmPP2MKarras;
    r.init_image = "x.png";
    r.strength = 0.6;
    const std::string text = r.to_a1111(1, "v1-5-pruned-emaonly");
    EXPECT_NE(text.find("\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: "
                        "Karras, CFG scale: 7, Seed: 1234567891, Size: 512x768, Model: "
                        "v1-5-pruned-emaonly, Denoising strength: 0.6"),
              std::string::npos)
        << text;
    const auto back = sds::GenerationRequest::from_a1111(text);
    EXPECT_EQ(back.prompt, r.prompt);
    EXPECT_EQ(back.negative_prompt, "blurry");
    EXPECT_EQ(back.sampler, sds::Sampler::DpmPP2MKarras);
    EXPECT_EQ(back.seed, 1234567891);
    EXPECT_EQ(back.height, 768);
    EXPECT_EQ(back.strength, 0.6);
    // The files by their hashes where A1111 writes them; names lose ':' and ','; read back as
    // the same request.
    sds::A1111Files files{.model = "v1-5",
                          .model_hash = "6ce0161689",
                          .vae = "vae-ft-mse.safetensors",
                          .vae_hash = "735e4c3a44",
                          .lora_hashes = {{"ink, style", "9c783c8ce46c"}, {"b:2", "fe3b4816be83"}},
                          .ti_hashes = {{"badhands", "fff5d51ab655"}}};
    const std::string named = r.to_a1111(1, files);
    EXPECT_NE(named.find("Size: 512x768, Model hash: 6ce0161689, Model: v1-5, VAE hash: "
                         "735e4c3a44, VAE: vae-ft-mse.safetensors, Denoising strength: 0.6"),
              std::string::npos)
        << named;
    EXPECT_NE(named.find(", Lora hashes: \"ink style: 9c783c8ce46c, b2: fe3b4816be83\", TI hashes: "
                         "\"badhands: fff5d51ab655\""),
              std::string::npos)
        << named;
    EXPECT_EQ(sds::GenerationRequest::from_a1111(named).to_json(), back.to_json());
    // Old files put the schedule into the sampler's name.
    const auto old = sds::GenerationRequest::from_a1111(
        "cat\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 5, Seed: 9, Size: 64x64");
    EXPECT_EQ(old.sampler, sds::Sampler::DpmPP2MKarras);
    EXPECT_EQ(old.steps, 30);
    // A1111 1.6+ gives every sampler a schedule type: Karras where we have it, else the plain
    // sampler.
    for (const auto& [sampler, schedule, want] :
         {std::tuple{"Euler", "Karras", sds::Sampler::EulerKarras},
          std::tuple{"Heun", "Karras", sds::Sampler::HeunKarras},
          std::tuple{"DPM++ 2M SDE", "Karras", sds::Sampler::DpmPP2MSdeKarras},
          std::tuple{"Euler a", "Automatic", sds::Sampler::EulerAncestral},
          std::tuple{"LCM", "Automatic", sds::Sampler::Lcm},
          std::tuple{"DPM2", "Karras", sds::Sampler::Dpm2Karras},
          std::tuple{"DPM2 a", "Automatic", sds::Sampler::Dpm2Ancestral},
          std::tuple{"DPM2 a", "Karras", sds::Sampler::Dpm2AncestralKarras},
          std::tuple{"LMS", "Automatic", sds::Sampler::Lms},
          std::tuple{"LMS", "Karras", sds::Sampler::LmsKarras},
          std::tuple{"DPM++ 2S", "Karras", sds::Sampler::DpmPP2SKarras},
          std::tuple{"Euler a", "Karras", sds::Sampler::EulerAncestral},
          std::tuple{"DPM++ 2M", "Exponential", sds::Sampler::DpmPP2MExponential},
          std::tuple{"DPM++ 2M SDE", "Beta", sds::Sampler::DpmPP2MSdeBeta},
          std::tuple{"Euler", "Uniform", sds::Sampler::Euler},
          std::tuple{"DPM++ 2M Karras", "Karras", sds::Sampler::DpmPP2MKarras},
          std::tuple{"DPM2 a", "Beta", sds::Sampler::Dpm2AncestralBeta}}) {
        const std::string text = std::string("cat\nSteps: 30, Sampler: ") + sampler +
                                 ", Schedule type: " + schedule + ", CFG scale: 5, Seed: 9";
        EXPECT_EQ(sds::GenerationRequest::from_a1111(text).sampler, want) << text;
        if (std::string(schedule) == sds::schedule_a1111(want) &&
            std::string(sampler) == sds::sampler_a1111(want)) {
            sds::GenerationRequest w;
            w.sampler = want;
            EXPECT_NE(w.to_a1111().find(std::string("Sampler: ") + sampler +
                                        ", Schedule type: " + schedule),
                      std::string::npos)
                << w.to_a1111();
        }
    }
    // A schedule type SD Studio does not have, for a sampler that has others: refused by name
    // rather than run on another schedule.
    for (const char* schedule : {"SGM Uniform", "Polyexponential", "Align Your Steps"}) {
        const std::string text = std::string("cat\nSteps: 30, Sampler: DPM++ 2M, Schedule type: ") +
                                 schedule + ", CFG scale: 5, Seed: 9";
        try {
            sds::GenerationRequest::from_a1111(text);
            ADD_FAILURE() << text << " was read";
        } catch (const sds::Error& e) {
            EXPECT_NE(std::string(e.what()).find(schedule), std::string::npos) << e.what();
        }
    }
    // A1111's DPM++ SDE is read as the scheduler diffusers' documentation gives for it
    // (DPM++ 2S), and written as what ran.
    const auto sde = sds::GenerationRequest::from_a1111(
        "cat\nSteps: 30, Sampler: DPM++ SDE, Schedule type: Karras, CFG scale: 5, Seed: 9");
    EXPECT_EQ(sde.sampler, sds::Sampler::DpmPP2SKarras);
    EXPECT_NE(sde.to_a1111().find("Sampler: DPM++ 2S, Schedule type: Karras"), std::string::npos)
        << sde.to_a1111();
    EXPECT_EQ(
        sds::GenerationRequest::from_a1111("cat\nSteps: 30, Sampler: DPM++ SDE, Seed: 9").sampler,
        sds::Sampler::DpmPP2S);
    // The hires fix as A1111 writes it: the second pass's strength is the denoising strength.
    sds::GenerationRequest h;
    h.prompt = "cat";
    h.width = h.height = 512;
    h.hires_scale = 1.5;
    h.hires_steps = 12;
    h.hires_strength = 0.45;
    const std::string hires = h.to_a1111();
    EXPECT_NE(hires.find("Size: 512x512, Denoising strength: 0.45, Hires upscale: 1.5, Hires "
                         "steps: 12, Hires upscaler: Lanczos"),
              std::string::npos)
        << hires;
    const auto hb = sds::GenerationRequest::from_a1111(hires);
    EXPECT_EQ(hb.to_json(), h.to_json());
    EXPECT_EQ(sds::GenerationRequest::from_json(h.to_json()).to_json(), h.to_json());
    // A latent upscaler both ways; one SD Studio does not have reads as Lanczos.
    h.hires_upscaler = "Latent (bicubic antialiased)";
    const std::string latent = h.to_a1111();
    EXPECT_NE(latent.find("Hires upscaler: Latent (bicubic antialiased),"), std::string::npos)
        << latent;
    EXPECT_EQ(sds::GenerationRequest::from_a1111(latent).to_json(), h.to_json());
    EXPECT_EQ(sds::GenerationRequest::from_json(h.to_json()).hires_upscaler, h.hires_upscaler);
    std::string esrgan = latent;
    esrgan.replace(esrgan.find("Latent (bicubic antialiased)"), 28, "R-ESRGAN 4x+");
    EXPECT_EQ(sds::GenerationRequest::from_a1111(esrgan).hires_upscaler, "Lanczos") << esrgan;
    h.hires_upscaler = "Bilinear";
    EXPECT_THROW(h.validate(), sds::Error);
    h.hires_upscaler = "Lanczos";
    EXPECT_EQ(h.hires_size(512, 512), std::make_pair(768, 768));
    h.hires_scale = 1.3;  // 665.6 -> 665 -> 664
    EXPECT_EQ(h.hires_size(512, 512), std::make_pair(664, 664));
}

}  // namespace
