#pragma once
// What diffusers' k-diffusion style schedulers over sigmas share (Euler, Euler ancestral, Heun):
// the timesteps by the config's spacing, held in float32; the sigmas interpolated at them, or
// Karras, exponential or beta sigmas between their ends; the model input scaled by 1 / sqrt(sigma²
// + 1); img2img noise added as x0 + sigma * noise.
#include <string>
#include <vector>

#include "sched/schedulers.h"

namespace sds::sched {

class SigmaScheduler : public Scheduler {
  public:
    // `schedule`: the sampler's noise schedule; where Default, the config's use_*_sigmas decide
    // if `schedule_keys` (the class has those options).
    SigmaScheduler(const JsonConfig& c, NoiseSchedule schedule, bool schedule_keys = true);

    at::Tensor init_noise_sigma() const override;
    at::Tensor scale_model_input(const at::Tensor& sample, int64_t index) const override;
    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override;

  protected:
    // The sigma the model input of call `index` is scaled for (DPM2: the midpoint's on a
    // step's second call).
    virtual at::Tensor input_sigma(int64_t index) const { return sigmas_[index]; }

    struct Schedule {
        std::vector<double> timesteps;  // float32 values
        std::vector<double> sigmas;     // one per timestep (the final sigma is not appended)
        std::vector<double> full;       // the train schedule's sigmas
    };
    // The n timesteps and their sigmas; `log_linear` (Euler's interpolation_type): sigmas
    // evenly spaced in log from the largest to the smallest, n + 1 of them. With a noise
    // schedule, n sigmas so spaced between the ends of those and their timesteps (float32).
    Schedule schedule(int n, bool log_linear = false) const;
    // The model's estimate of the clean sample at `sigma` (float32 math).
    at::Tensor predicted_x0(const at::Tensor& out, const at::Tensor& sample,
                            const at::Tensor& sigma) const;

    int train_, offset_;
    std::string spacing_;
    NoiseSchedule noise_;
    std::string where_;
};

}  // namespace sds::sched
