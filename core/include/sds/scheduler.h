#pragma once
// Noise schedulers ("samplers"), one file each under core/src/sched, each matching diffusers'
// arithmetic. Configured from a model's scheduler/scheduler_config.json the way diffusers'
// `XScheduler.from_config(pipe.scheduler.config)` does: keys present in the file are used,
// absent keys take that scheduler's own defaults.
//
// Steps are addressed by their index in timesteps(), as diffusers' step_index / begin_index.
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sds {

// A1111's "Schedule type" for the samplers over sigmas: how their noise levels are spaced.
// Default: at the timesteps of the config's spacing; Karras: Karras et al.'s rho-7 ramp;
// Exponential: evenly in log sigma; Beta: at the quantiles of Beta(0.6, 0.6) (more steps at
// both ends). diffusers' use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas.
enum class NoiseSchedule { Default, Karras, Exponential, Beta };

// In the order the studio lists them: the families in A1111's order, each followed by its
// Karras, exponential and beta twins.
enum class Sampler {
    EulerAncestral,
    Euler,
    EulerKarras,
    EulerExponential,
    EulerBeta,
    Lms,
    LmsKarras,
    LmsExponential,
    LmsBeta,
    Heun,
    HeunKarras,
    HeunExponential,
    HeunBeta,
    Dpm2,
    Dpm2Karras,
    Dpm2Exponential,
    Dpm2Beta,
    Dpm2Ancestral,
    Dpm2AncestralKarras,
    Dpm2AncestralExponential,
    Dpm2AncestralBeta,
    DpmPP2S,
    DpmPP2SKarras,
    DpmPP2SExponential,
    DpmPP2SBeta,
    DpmPP2M,
    DpmPP2MKarras,
    DpmPP2MExponential,
    DpmPP2MBeta,
    DpmPP2MSde,
    DpmPP2MSdeKarras,
    DpmPP2MSdeExponential,
    DpmPP2MSdeBeta,
    UniPC,
    UniPCKarras,
    UniPCExponential,
    UniPCBeta,
    Ddim,
    Pndm,
    Lcm,
};

// Our names: a family's ("euler_a", "euler", "lms", "heun", "dpm2", "dpm2_a", "dpmpp_2s",
// "dpmpp_2m", "dpmpp_2m_sde", "unipc", "ddim", "pndm", "lcm"), with "_karras", "_exponential"
// or "_beta" for a twin ("dpmpp_2m_karras"). Also A1111's: the sampler ("Euler a", "Euler",
// "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S", "DPM++ 2M", "DPM++ 2M SDE", "UniPC", "DDIM",
// "PLMS", "LCM") and its schedule type, space-separated ("DPM++ 2M Karras", "Euler
// Exponential"); "DPM++ SDE" (and its twins) reads as DPM++ 2S, the scheduler diffusers'
// documentation gives for it. Case-insensitive; throws sds::Error.
Sampler sampler_from_name(const std::string& name);
const char* sampler_name(Sampler s);    // "dpmpp_2m_karras"
const char* sampler_a1111(Sampler s);   // "DPM++ 2M"
const char* schedule_a1111(Sampler s);  // "Karras", "Exponential", "Beta" or ""
NoiseSchedule sampler_schedule(Sampler s);
// "default" (also A1111's "Automatic" and "Uniform"), "karras", "exponential", "beta";
// case-insensitive; throws sds::Error.
NoiseSchedule schedule_from_name(const std::string& name);
// The sampler of `s`'s family with `schedule`; nullopt where the family has no such twin
// (Euler a, DDIM, PLMS and LCM have only their own).
std::optional<Sampler> with_schedule(Sampler s, NoiseSchedule schedule);
std::vector<std::string> sampler_names();

// Draws standard normal noise of `shape` and `dtype` on the CPU the way diffusers' randn_tensor
// does with the pipeline's generators (one per image).
using NoiseFn = std::function<at::Tensor(at::IntArrayRef shape, at::ScalarType dtype)>;

class Scheduler {
  public:
    virtual ~Scheduler() = default;

    // From a scheduler_config.json (or the defaults of diffusers' class when `config` is empty).
    static std::unique_ptr<Scheduler> create(Sampler sampler,
                                             const std::filesystem::path& config = {});

    virtual void set_timesteps(int steps) = 0;
    // [N] int64 (PNDM, DDIM, DPM++, UniPC, LCM), float32 (Euler, Euler a, Heun, DPM2s, LMS) or
    // float64 (DPM2s with Karras sigmas); PNDM has steps + 1 entries, Heun and the DPM2s
    // 2 * steps - 1 (a model call for each).
    const at::Tensor& timesteps() const { return timesteps_; }
    // [N + 1] float32 for the sigma-based schedulers; undefined for PNDM/DDIM.
    const at::Tensor& sigmas() const { return sigmas_; }
    // Multiplies the initial noise (a 0-dim float32 tensor).
    virtual at::Tensor init_noise_sigma() const;
    virtual at::Tensor scale_model_input(const at::Tensor& sample, int64_t index) const;
    // DDIM's eta (0: deterministic); ignored by the other schedulers, as in diffusers.
    virtual void set_eta(double) {}

    struct Step {
        at::Tensor prev_sample;
        at::Tensor pred_x0;  // the model's current estimate of the clean latents
    };
    virtual Step step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample,
                      const NoiseFn& noise) = 0;
    // Noises clean latents to the level of timesteps()[index] (img2img).
    virtual at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                                 int64_t index) const = 0;

    // img2img: the index of the first timestep kept for `strength` (diffusers'
    // t_start * order); throws sds::Error when no step would be left.
    int64_t first_index_for_strength(int steps, double strength) const;
    // Model calls per step, as diffusers' `order` (2 for Heun and the DPM2s, 1 for the others).
    virtual int order() const { return 1; }
    // The config's num_train_timesteps.
    int64_t train_timesteps() const { return alphas_cumprod_.size(0); }

    Sampler sampler() const { return sampler_; }
    const std::string& prediction_type() const { return prediction_type_; }

  protected:
    Sampler sampler_ = Sampler::Pndm;
    std::string prediction_type_ = "epsilon";
    int num_inference_steps_ = 0;
    at::Tensor alphas_cumprod_;  // [num_train_timesteps] float32
    at::Tensor timesteps_, sigmas_;
};

}  // namespace sds
