#include "sds/scheduler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <iterator>

#include <ATen/ops/scalar_tensor.h>

#include "sched/schedulers.h"
#include "sds/error.h"

namespace sds {

namespace {
using Make = std::unique_ptr<Scheduler> (*)(const JsonConfig&);

// What differs between diffusers' scheduler classes beyond their arithmetic.
enum class Betas { Linear, KDiffusion, LcmScaled };  // their defaults: see create()
enum class ZeroSnr { NoOption, Exact, Clamped };     // rescale_betas_zero_snr
struct SamplerRow {
    Sampler sampler;
    const char* name;
    const char* a1111;
    const char* schedule;
    Make make;
    Betas betas;
    ZeroSnr zero_snr;
    bool x0_ok;  // prediction_type "sample"
};
// In the enum's order.
constexpr SamplerRow kSamplers[] = {
    {Sampler::EulerAncestral, "euler_a", "Euler a", "",
     [](const JsonConfig& c) { return sched::make_euler(c, true, false); }, Betas::Linear,
     ZeroSnr::Clamped, false},
    {Sampler::Euler, "euler", "Euler", "",
     [](const JsonConfig& c) { return sched::make_euler(c, false, false); }, Betas::Linear,
     ZeroSnr::Clamped, true},
    {Sampler::EulerKarras, "euler_karras", "Euler", "Karras",
     [](const JsonConfig& c) { return sched::make_euler(c, false, true); }, Betas::Linear,
     ZeroSnr::Clamped, true},
    {Sampler::Lms, "lms", "LMS", "", [](const JsonConfig& c) { return sched::make_lms(c, false); },
     Betas::Linear, ZeroSnr::NoOption, true},
    {Sampler::LmsKarras, "lms_karras", "LMS", "Karras",
     [](const JsonConfig& c) { return sched::make_lms(c, true); }, Betas::Linear, ZeroSnr::NoOption,
     true},
    {Sampler::Heun, "heun", "Heun", "",
     [](const JsonConfig& c) { return sched::make_heun(c, false); }, Betas::KDiffusion,
     ZeroSnr::NoOption, true},
    {Sampler::HeunKarras, "heun_karras", "Heun", "Karras",
     [](const JsonConfig& c) { return sched::make_heun(c, true); }, Betas::KDiffusion,
     ZeroSnr::NoOption, true},
    {Sampler::Dpm2, "dpm2", "DPM2", "",
     [](const JsonConfig& c) { return sched::make_kdpm2(c, false, false); }, Betas::KDiffusion,
     ZeroSnr::NoOption, false},
    {Sampler::Dpm2Karras, "dpm2_karras", "DPM2", "Karras",
     [](const JsonConfig& c) { return sched::make_kdpm2(c, true, false); }, Betas::KDiffusion,
     ZeroSnr::NoOption, false},
    {Sampler::Dpm2Ancestral, "dpm2_a", "DPM2 a", "",
     [](const JsonConfig& c) { return sched::make_kdpm2(c, false, true); }, Betas::KDiffusion,
     ZeroSnr::NoOption, false},
    {Sampler::Dpm2AncestralKarras, "dpm2_a_karras", "DPM2 a", "Karras",
     [](const JsonConfig& c) { return sched::make_kdpm2(c, true, true); }, Betas::KDiffusion,
     ZeroSnr::NoOption, false},
    {Sampler::DpmPP2S, "dpmpp_2s", "DPM++ 2S", "",
     [](const JsonConfig& c) { return sched::make_dpmpp_2s(c, false); }, Betas::Linear,
     ZeroSnr::NoOption, true},
    {Sampler::DpmPP2SKarras, "dpmpp_2s_karras", "DPM++ 2S", "Karras",
     [](const JsonConfig& c) { return sched::make_dpmpp_2s(c, true); }, Betas::Linear,
     ZeroSnr::NoOption, true},
    {Sampler::DpmPP2M, "dpmpp_2m", "DPM++ 2M", "",
     [](const JsonConfig& c) { return sched::make_dpmpp_2m(c, false, false); }, Betas::Linear,
     ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MKarras, "dpmpp_2m_karras", "DPM++ 2M", "Karras",
     [](const JsonConfig& c) { return sched::make_dpmpp_2m(c, true, false); }, Betas::Linear,
     ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MSde, "dpmpp_2m_sde", "DPM++ 2M SDE", "",
     [](const JsonConfig& c) { return sched::make_dpmpp_2m(c, false, true); }, Betas::Linear,
     ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MSdeKarras, "dpmpp_2m_sde_karras", "DPM++ 2M SDE", "Karras",
     [](const JsonConfig& c) { return sched::make_dpmpp_2m(c, true, true); }, Betas::Linear,
     ZeroSnr::Clamped, true},
    {Sampler::UniPC, "unipc", "UniPC", "", sched::make_unipc, Betas::Linear, ZeroSnr::Clamped,
     true},
    {Sampler::Ddim, "ddim", "DDIM", "", sched::make_ddim, Betas::Linear, ZeroSnr::Exact, true},
    {Sampler::Pndm, "pndm", "PLMS", "", sched::make_pndm, Betas::Linear, ZeroSnr::NoOption, false},
    {Sampler::Lcm, "lcm", "LCM", "", sched::make_lcm, Betas::LcmScaled, ZeroSnr::Exact, true},
};

constexpr bool in_enum_order() {
    for (size_t i = 0; i < std::size(kSamplers); ++i) {
        if (static_cast<size_t>(kSamplers[i].sampler) != i) {
            return false;
        }
    }
    return true;
}
static_assert(in_enum_order(), "kSamplers lists the samplers in the enum's order");

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}
}  // namespace

Sampler sampler_from_name(const std::string& name) {
    const std::string n = lower(name);
    for (const auto& row : kSamplers) {
        const std::string a1111 =
            lower(std::string(row.a1111) + (*row.schedule ? std::string(" ") + row.schedule : ""));
        if (n == row.name || n == a1111) {
            return row.sampler;
        }
    }
    if (n == "pndm" || n == "plms") {
        return Sampler::Pndm;
    }
    // A1111's DPM++ SDE has no scheduler in diffusers that draws the same noise; diffusers'
    // documentation gives DPMSolverSinglestepScheduler for it, which is DPM++ 2S.
    if (n == "dpm++ sde") {
        return Sampler::DpmPP2S;
    }
    if (n == "dpm++ sde karras") {
        return Sampler::DpmPP2SKarras;
    }
    std::string known;
    for (const auto& row : kSamplers) {
        known += (known.empty() ? "" : ", ") + std::string(row.name);
    }
    throw Error("unknown sampler '" + name + "' (known: " + known + ")");
}

const char* sampler_name(Sampler s) {
    return kSamplers[static_cast<int>(s)].name;
}
const char* sampler_a1111(Sampler s) {
    return kSamplers[static_cast<int>(s)].a1111;
}
const char* schedule_a1111(Sampler s) {
    return kSamplers[static_cast<int>(s)].schedule;
}
std::vector<std::string> sampler_names() {
    std::vector<std::string> out;
    for (const auto& row : kSamplers) {
        out.emplace_back(row.name);
    }
    return out;
}

std::unique_ptr<Scheduler> Scheduler::create(Sampler sampler, const std::filesystem::path& config) {
    const JsonConfig c = sched::load_config(config);
    const SamplerRow& row = kSamplers[static_cast<int>(sampler)];
    std::unique_ptr<Scheduler> s = row.make(c);
    s->sampler_ = sampler;
    s->prediction_type_ = c.string("prediction_type", "epsilon");
    // "sample" (the model predicts x0) as far as diffusers has it.
    if (s->prediction_type_ != "epsilon" && s->prediction_type_ != "v_prediction" &&
        !(s->prediction_type_ == "sample" && row.x0_ok)) {
        c.fail("prediction_type", "'" + s->prediction_type_ + "' is not supported by " +
                                      sampler_name(sampler) + " (epsilon, v_prediction" +
                                      (row.x0_ok ? ", sample)" : ")"));
    }
    // Default betas: diffusers' linear 1e-4..0.02; Heun's and the DPM2s' classes linear
    // 0.00085..0.012; LCM's scaled_linear 0.00085..0.012. Where a class has no
    // rescale_betas_zero_snr option, diffusers ignores the key; the sigma samplers that have it
    // keep the last alphā just above 0 so that the first sigma is finite (DDIM and LCM keep 0).
    s->alphas_cumprod_ = sched::alphas_cumprod(
        c, row.zero_snr != ZeroSnr::NoOption,
        row.betas == Betas::Linear ? std::pair{0.0001, 0.02} : std::pair{0.00085, 0.012},
        row.betas == Betas::LcmScaled ? "scaled_linear" : "linear");
    if (row.zero_snr == ZeroSnr::Clamped && c.boolean("rescale_betas_zero_snr", false)) {
        s->alphas_cumprod_[-1] = std::pow(2.0, -24);
    }
    return s;
}

at::Tensor Scheduler::init_noise_sigma() const {
    return at::scalar_tensor(1.0, at::kFloat);
}

at::Tensor Scheduler::scale_model_input(const at::Tensor& sample, int64_t) const {
    return sample;
}

int64_t Scheduler::first_index_for_strength(int steps, double strength) const {
    // diffusers' StableDiffusionImg2ImgPipeline.get_timesteps: it cuts
    // timesteps()[t_start * order:], so PNDM, with one timestep more than steps, keeps its
    // last one even where int(steps * strength) is 0.
    const int init = std::min(static_cast<int>(steps * strength), steps);
    const int t_start = std::max(steps - init, 0) * order();
    if (t_start >= timesteps_.size(0)) {
        throw Error("strength " + std::to_string(strength) + " with " + std::to_string(steps) +
                    " steps leaves no denoising step; raise the strength or the steps");
    }
    return t_start;
}

}  // namespace sds
