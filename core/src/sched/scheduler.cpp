#include "sds/scheduler.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <ATen/ops/scalar_tensor.h>

#include "sched/schedulers.h"
#include "sds/error.h"

namespace sds {

namespace {
struct SamplerRow {
    Sampler sampler;
    const char* name;
    const char* a1111;
    const char* schedule;
};
constexpr SamplerRow kSamplers[] = {
    {Sampler::Pndm, "pndm", "PLMS", ""},
    {Sampler::Ddim, "ddim", "DDIM", ""},
    {Sampler::Euler, "euler", "Euler", ""},
    {Sampler::EulerAncestral, "euler_a", "Euler a", ""},
    {Sampler::DpmPP2M, "dpmpp_2m", "DPM++ 2M", ""},
    {Sampler::DpmPP2MKarras, "dpmpp_2m_karras", "DPM++ 2M", "Karras"},
    {Sampler::UniPC, "unipc", "UniPC", ""},
    {Sampler::Heun, "heun", "Heun", ""},
    {Sampler::DpmPP2MSde, "dpmpp_2m_sde", "DPM++ 2M SDE", ""},
    {Sampler::DpmPP2MSdeKarras, "dpmpp_2m_sde_karras", "DPM++ 2M SDE", "Karras"},
    {Sampler::EulerKarras, "euler_karras", "Euler", "Karras"},
    {Sampler::HeunKarras, "heun_karras", "Heun", "Karras"},
    {Sampler::Lcm, "lcm", "LCM", ""},
    {Sampler::Dpm2, "dpm2", "DPM2", ""},
    {Sampler::Dpm2Karras, "dpm2_karras", "DPM2", "Karras"},
    {Sampler::Dpm2Ancestral, "dpm2_a", "DPM2 a", ""},
    {Sampler::Dpm2AncestralKarras, "dpm2_a_karras", "DPM2 a", "Karras"},
};

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
    std::unique_ptr<Scheduler> s;
    switch (sampler) {
        case Sampler::Pndm:
            s = sched::make_pndm(c);
            break;
        case Sampler::Ddim:
            s = sched::make_ddim(c);
            break;
        case Sampler::Euler:
            s = sched::make_euler(c, false, false);
            break;
        case Sampler::EulerKarras:
            s = sched::make_euler(c, false, true);
            break;
        case Sampler::EulerAncestral:
            s = sched::make_euler(c, true, false);
            break;
        case Sampler::DpmPP2M:
            s = sched::make_dpmpp_2m(c, false, false);
            break;
        case Sampler::DpmPP2MKarras:
            s = sched::make_dpmpp_2m(c, true, false);
            break;
        case Sampler::UniPC:
            s = sched::make_unipc(c);
            break;
        case Sampler::Heun:
            s = sched::make_heun(c, false);
            break;
        case Sampler::HeunKarras:
            s = sched::make_heun(c, true);
            break;
        case Sampler::DpmPP2MSde:
            s = sched::make_dpmpp_2m(c, false, true);
            break;
        case Sampler::DpmPP2MSdeKarras:
            s = sched::make_dpmpp_2m(c, true, true);
            break;
        case Sampler::Lcm:
            s = sched::make_lcm(c);
            break;
        case Sampler::Dpm2:
            s = sched::make_kdpm2(c, false, false);
            break;
        case Sampler::Dpm2Karras:
            s = sched::make_kdpm2(c, true, false);
            break;
        case Sampler::Dpm2Ancestral:
            s = sched::make_kdpm2(c, false, true);
            break;
        case Sampler::Dpm2AncestralKarras:
            s = sched::make_kdpm2(c, true, true);
            break;
    }
    s->sampler_ = sampler;
    s->prediction_type_ = c.string("prediction_type", "epsilon");
    // "sample" (the model predicts x0) as far as diffusers has it: not for PNDM, Euler a or
    // the DPM2s.
    const bool dpm2 = sampler == Sampler::Dpm2 || sampler == Sampler::Dpm2Karras ||
                      sampler == Sampler::Dpm2Ancestral || sampler == Sampler::Dpm2AncestralKarras;
    const bool x0_ok = sampler != Sampler::Pndm && sampler != Sampler::EulerAncestral && !dpm2;
    if (s->prediction_type_ != "epsilon" && s->prediction_type_ != "v_prediction" &&
        !(s->prediction_type_ == "sample" && x0_ok)) {
        c.fail("prediction_type", "'" + s->prediction_type_ + "' is not supported by " +
                                      sampler_name(sampler) + " (epsilon, v_prediction" +
                                      (x0_ok ? ", sample)" : ")"));
    }
    // PNDM, Heun and the DPM2s have no rescale_betas_zero_snr option (diffusers ignores the
    // key there); the sigma samplers that have it keep the last alphā just above 0 so that the
    // first sigma is finite (DDIM and LCM keep 0). Heun's, the DPM2s' and LCM's classes have
    // their own default betas.
    const bool heun_or_dpm2 = sampler == Sampler::Heun || sampler == Sampler::HeunKarras || dpm2;
    const bool lcm = sampler == Sampler::Lcm;
    const bool zero_snr = sampler != Sampler::Pndm && !heun_or_dpm2;
    s->alphas_cumprod_ = sched::alphas_cumprod(
        c, zero_snr, heun_or_dpm2 || lcm ? std::pair{0.00085, 0.012} : std::pair{0.0001, 0.02},
        lcm ? "scaled_linear" : "linear");
    if (zero_snr && sampler != Sampler::Ddim && !lcm &&
        c.boolean("rescale_betas_zero_snr", false)) {
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
