#include "sched/sigma_scheduler.h"

#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/ops/linspace.h>

namespace sds::sched {

SigmaScheduler::SigmaScheduler(const JsonConfig& c, NoiseSchedule schedule, bool schedule_keys)
    : train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
      offset_(static_cast<int>(c.integer("steps_offset", 0))),
      spacing_(c.string("timestep_spacing", "linspace")),
      noise_(noise_schedule(c, schedule, schedule_keys)),
      where_(c.path().string()) {}

SigmaScheduler::Schedule SigmaScheduler::schedule(int n, bool log_linear) const {
    Schedule s;
    s.timesteps = spaced_timesteps(spacing_, train_, n, offset_, where_);
    for (auto& v : s.timesteps) {  // diffusers holds these in float32
        v = static_cast<float>(v);
    }
    s.full = full_sigmas(alphas_cumprod_);
    if (log_linear) {
        // n + 1 sigmas evenly spaced in log between the largest and the smallest (torch,
        // float32), over n timesteps: the last step ends at sigma_min, not at 0.
        const at::Tensor l =
            at::linspace(std::log(static_cast<float>(s.full.back())),
                         std::log(static_cast<float>(s.full.front())), n + 1, at::kFloat)
                .exp()
                .to(at::kDouble)
                .contiguous();
        s.sigmas.assign(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
    } else {
        for (double v : s.timesteps) {
            s.sigmas.push_back(interp_index(v, s.full));
        }
    }
    if (noise_ != NoiseSchedule::Default) {
        const auto logs = log_sigmas(s.full);
        s.sigmas = noise_levels(noise_, s.sigmas.back(), s.sigmas.front(), n);
        s.timesteps.clear();
        for (double sigma : s.sigmas) {
            s.timesteps.push_back(static_cast<float>(sigma_to_t(sigma, logs)));
        }
    }
    return s;
}

at::Tensor SigmaScheduler::init_noise_sigma() const {
    const at::Tensor m = sigmas_.max();
    if (spacing_ == "linspace" || spacing_ == "trailing") {
        return m;
    }
    return (m.pow(2) + 1).pow(0.5);
}

at::Tensor SigmaScheduler::scale_model_input(const at::Tensor& sample, int64_t index) const {
    const at::Tensor sigma = input_sigma(index);
    return sample / (sigma.pow(2) + 1).pow(0.5);
}

at::Tensor SigmaScheduler::add_noise(const at::Tensor& x0, const at::Tensor& noise,
                                     int64_t index) const {
    return x0 + noise * sigmas_.to(x0.device(), x0.scalar_type())[index];
}

at::Tensor SigmaScheduler::predicted_x0(const at::Tensor& out, const at::Tensor& sample,
                                        const at::Tensor& sigma) const {
    if (prediction_type_ == "epsilon") {
        return sample - sigma * out;
    }
    if (prediction_type_ == "sample") {
        return out;
    }
    // v_prediction
    return out * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + (sample / (sigma.pow(2) + 1));
}

}  // namespace sds::sched
