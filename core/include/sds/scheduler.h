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

// In the order the studio lists them: the families in A1111's order, each beside its Karras twin.
enum class Sampler {
    EulerAncestral,
    Euler,
    EulerKarras,
    Lms,
    LmsKarras,
    Heun,
    HeunKarras,
    Dpm2,
    Dpm2Karras,
    Dpm2Ancestral,
    Dpm2AncestralKarras,
    DpmPP2S,
    DpmPP2SKarras,
    DpmPP2M,
    DpmPP2MKarras,
    DpmPP2MSde,
    DpmPP2MSdeKarras,
    UniPC,
    Ddim,
    Pndm,
    Lcm,
};

// "euler_a", "euler", "euler_karras", "lms", "lms_karras", "heun", "heun_karras", "dpm2",
// "dpm2_karras", "dpm2_a", "dpm2_a_karras", "dpmpp_2s", "dpmpp_2s_karras", "dpmpp_2m",
// "dpmpp_2m_karras", "dpmpp_2m_sde", "dpmpp_2m_sde_karras", "unipc", "ddim", "pndm", "lcm" (also
// A1111's names: "Euler a", "Euler", "Euler Karras", "LMS", "LMS Karras", "Heun", "Heun Karras",
// "DPM2", "DPM2 Karras", "DPM2 a", "DPM2 a Karras", "DPM++ 2S", "DPM++ 2S Karras", "DPM++ 2M",
// "DPM++ 2M Karras", "DPM++ 2M SDE", "DPM++ 2M SDE Karras", "UniPC", "DDIM", "PLMS", "LCM"; and
// "DPM++ SDE" and "DPM++ SDE Karras" read as dpmpp_2s and dpmpp_2s_karras, the scheduler
// diffusers' documentation gives for them); throws sds::Error.
Sampler sampler_from_name(const std::string& name);
const char* sampler_name(Sampler s);    // "dpmpp_2m_karras"
const char* sampler_a1111(Sampler s);   // "DPM++ 2M"
const char* schedule_a1111(Sampler s);  // "Karras" or ""
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
