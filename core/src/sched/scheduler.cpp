#include "sds/scheduler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <iterator>
#include <sstream>

#include <ATen/ops/scalar_tensor.h>

#include "sched/schedulers.h"
#include "sds/error.h"

namespace sds {

namespace {
using Make = std::unique_ptr<Scheduler> (*)(const JsonConfig&, NoiseSchedule);
using NS = NoiseSchedule;

// What differs between diffusers' scheduler classes beyond their arithmetic.
enum class Betas { Linear, KDiffusion, LcmScaled };  // their defaults: see create()
enum class ZeroSnr { NoOption, Exact, Clamped };     // rescale_betas_zero_snr
struct SamplerRow {
    Sampler sampler;
    const char* name;
    const char* a1111;
    NoiseSchedule schedule;
    Make make;
    Betas betas;
    ZeroSnr zero_snr;
    bool x0_ok;  // prediction_type "sample"
};

// The families' makers, each over the noise schedules its class has.
std::unique_ptr<Scheduler> euler_a(const JsonConfig& c, NS) {
    return sched::make_euler(c, true, NS::Default);
}
std::unique_ptr<Scheduler> euler(const JsonConfig& c, NS s) {
    return sched::make_euler(c, false, s);
}
std::unique_ptr<Scheduler> dpm2(const JsonConfig& c, NS s) {
    return sched::make_kdpm2(c, s, false);
}
std::unique_ptr<Scheduler> dpm2_a(const JsonConfig& c, NS s) {
    return sched::make_kdpm2(c, s, true);
}
std::unique_ptr<Scheduler> dpmpp_2m(const JsonConfig& c, NS s) {
    return sched::make_dpmpp_2m(c, s, false);
}
std::unique_ptr<Scheduler> dpmpp_2m_sde(const JsonConfig& c, NS s) {
    return sched::make_dpmpp_2m(c, s, true);
}
template <std::unique_ptr<Scheduler> (*F)(const JsonConfig&)>
std::unique_ptr<Scheduler> own(const JsonConfig& c, NS) {
    return F(c);
}

constexpr auto L = Betas::Linear;
constexpr auto K = Betas::KDiffusion;
// In the enum's order.
constexpr SamplerRow kSamplers[] = {
    {Sampler::EulerAncestral, "euler_a", "Euler a", NS::Default, euler_a, L, ZeroSnr::Clamped,
     false},
    {Sampler::Euler, "euler", "Euler", NS::Default, euler, L, ZeroSnr::Clamped, true},
    {Sampler::EulerKarras, "euler_karras", "Euler", NS::Karras, euler, L, ZeroSnr::Clamped, true},
    {Sampler::EulerExponential, "euler_exponential", "Euler", NS::Exponential, euler, L,
     ZeroSnr::Clamped, true},
    {Sampler::EulerBeta, "euler_beta", "Euler", NS::Beta, euler, L, ZeroSnr::Clamped, true},
    {Sampler::Lms, "lms", "LMS", NS::Default, sched::make_lms, L, ZeroSnr::NoOption, true},
    {Sampler::LmsKarras, "lms_karras", "LMS", NS::Karras, sched::make_lms, L, ZeroSnr::NoOption,
     true},
    {Sampler::LmsExponential, "lms_exponential", "LMS", NS::Exponential, sched::make_lms, L,
     ZeroSnr::NoOption, true},
    {Sampler::LmsBeta, "lms_beta", "LMS", NS::Beta, sched::make_lms, L, ZeroSnr::NoOption, true},
    {Sampler::Heun, "heun", "Heun", NS::Default, sched::make_heun, K, ZeroSnr::NoOption, true},
    {Sampler::HeunKarras, "heun_karras", "Heun", NS::Karras, sched::make_heun, K, ZeroSnr::NoOption,
     true},
    {Sampler::HeunExponential, "heun_exponential", "Heun", NS::Exponential, sched::make_heun, K,
     ZeroSnr::NoOption, true},
    {Sampler::HeunBeta, "heun_beta", "Heun", NS::Beta, sched::make_heun, K, ZeroSnr::NoOption,
     true},
    {Sampler::Dpm2, "dpm2", "DPM2", NS::Default, dpm2, K, ZeroSnr::NoOption, false},
    {Sampler::Dpm2Karras, "dpm2_karras", "DPM2", NS::Karras, dpm2, K, ZeroSnr::NoOption, false},
    {Sampler::Dpm2Exponential, "dpm2_exponential", "DPM2", NS::Exponential, dpm2, K,
     ZeroSnr::NoOption, false},
    {Sampler::Dpm2Beta, "dpm2_beta", "DPM2", NS::Beta, dpm2, K, ZeroSnr::NoOption, false},
    {Sampler::Dpm2Ancestral, "dpm2_a", "DPM2 a", NS::Default, dpm2_a, K, ZeroSnr::NoOption, false},
    {Sampler::Dpm2AncestralKarras, "dpm2_a_karras", "DPM2 a", NS::Karras, dpm2_a, K,
     ZeroSnr::NoOption, false},
    {Sampler::Dpm2AncestralExponential, "dpm2_a_exponential", "DPM2 a", NS::Exponential, dpm2_a, K,
     ZeroSnr::NoOption, false},
    {Sampler::Dpm2AncestralBeta, "dpm2_a_beta", "DPM2 a", NS::Beta, dpm2_a, K, ZeroSnr::NoOption,
     false},
    {Sampler::DpmPP2S, "dpmpp_2s", "DPM++ 2S", NS::Default, sched::make_dpmpp_2s, L,
     ZeroSnr::NoOption, true},
    {Sampler::DpmPP2SKarras, "dpmpp_2s_karras", "DPM++ 2S", NS::Karras, sched::make_dpmpp_2s, L,
     ZeroSnr::NoOption, true},
    {Sampler::DpmPP2SExponential, "dpmpp_2s_exponential", "DPM++ 2S", NS::Exponential,
     sched::make_dpmpp_2s, L, ZeroSnr::NoOption, true},
    {Sampler::DpmPP2SBeta, "dpmpp_2s_beta", "DPM++ 2S", NS::Beta, sched::make_dpmpp_2s, L,
     ZeroSnr::NoOption, true},
    {Sampler::DpmPP2M, "dpmpp_2m", "DPM++ 2M", NS::Default, dpmpp_2m, L, ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MKarras, "dpmpp_2m_karras", "DPM++ 2M", NS::Karras, dpmpp_2m, L,
     ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MExponential, "dpmpp_2m_exponential", "DPM++ 2M", NS::Exponential, dpmpp_2m, L,
     ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MBeta, "dpmpp_2m_beta", "DPM++ 2M", NS::Beta, dpmpp_2m, L, ZeroSnr::Clamped,
     true},
    {Sampler::DpmPP2MSde, "dpmpp_2m_sde", "DPM++ 2M SDE", NS::Default, dpmpp_2m_sde, L,
     ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MSdeKarras, "dpmpp_2m_sde_karras", "DPM++ 2M SDE", NS::Karras, dpmpp_2m_sde, L,
     ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MSdeExponential, "dpmpp_2m_sde_exponential", "DPM++ 2M SDE", NS::Exponential,
     dpmpp_2m_sde, L, ZeroSnr::Clamped, true},
    {Sampler::DpmPP2MSdeBeta, "dpmpp_2m_sde_beta", "DPM++ 2M SDE", NS::Beta, dpmpp_2m_sde, L,
     ZeroSnr::Clamped, true},
    {Sampler::UniPC, "unipc", "UniPC", NS::Default, sched::make_unipc, L, ZeroSnr::Clamped, true},
    {Sampler::UniPCKarras, "unipc_karras", "UniPC", NS::Karras, sched::make_unipc, L,
     ZeroSnr::Clamped, true},
    {Sampler::UniPCExponential, "unipc_exponential", "UniPC", NS::Exponential, sched::make_unipc, L,
     ZeroSnr::Clamped, true},
    {Sampler::UniPCBeta, "unipc_beta", "UniPC", NS::Beta, sched::make_unipc, L, ZeroSnr::Clamped,
     true},
    {Sampler::Ddim, "ddim", "DDIM", NS::Default, own<sched::make_ddim>, L, ZeroSnr::Exact, true},
    {Sampler::Pndm, "pndm", "PLMS", NS::Default, own<sched::make_pndm>, L, ZeroSnr::NoOption,
     false},
    {Sampler::Lcm, "lcm", "LCM", NS::Default, own<sched::make_lcm>, Betas::LcmScaled,
     ZeroSnr::Exact, true},
};

const char* schedule_label(NoiseSchedule s) {
    switch (s) {
        case NS::Karras:
            return "Karras";
        case NS::Exponential:
            return "Exponential";
        case NS::Beta:
            return "Beta";
        case NS::Default:
            break;
    }
    return "";
}

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
    std::string n = lower(name);
    // A1111's DPM++ SDE has no scheduler in diffusers that draws the same noise; diffusers'
    // documentation gives DPMSolverSinglestepScheduler for it, which is DPM++ 2S.
    if (n.rfind("dpm++ sde", 0) == 0) {
        n = "dpm++ 2s" + n.substr(9);
    }
    if (n == "plms") {
        n = "pndm";
    }
    for (const auto& row : kSamplers) {
        const char* schedule = schedule_label(row.schedule);
        const std::string a1111 =
            lower(std::string(row.a1111) + (*schedule ? std::string(" ") + schedule : ""));
        if (n == row.name || n == a1111) {
            return row.sampler;
        }
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
    return schedule_label(kSamplers[static_cast<int>(s)].schedule);
}
NoiseSchedule sampler_schedule(Sampler s) {
    return kSamplers[static_cast<int>(s)].schedule;
}
NoiseSchedule schedule_from_name(const std::string& name) {
    const std::string n = lower(name);
    if (n == "default" || n == "automatic" || n == "uniform") {
        return NS::Default;
    }
    for (NS s : {NS::Karras, NS::Exponential, NS::Beta}) {
        if (n == lower(schedule_label(s))) {
            return s;
        }
    }
    throw Error("unknown schedule type '" + name + "' (known: default, karras, exponential, beta)");
}
std::optional<Sampler> with_schedule(Sampler s, NoiseSchedule schedule) {
    const std::string family = kSamplers[static_cast<int>(s)].a1111;
    for (const auto& row : kSamplers) {
        if (row.a1111 == family && row.schedule == schedule) {
            return row.sampler;
        }
    }
    return std::nullopt;
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
    std::unique_ptr<Scheduler> s = row.make(c, row.schedule);
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
        std::ostringstream m;
        m << "strength " << strength << " with " << steps << (steps == 1 ? " step" : " steps")
          << " leaves no denoising step (" << steps << " x " << strength
          << " is below 1); raise the strength or the steps";
        throw Error(m.str());
    }
    return t_start;
}

}  // namespace sds
