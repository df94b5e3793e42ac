// Euler and Euler ancestral (k-diffusion samplers over sigmas), diffusers'
// EulerDiscreteScheduler / EulerAncestralDiscreteScheduler.
#include <ATen/TensorOperators.h>

#include "sched/sigma_scheduler.h"

namespace sds::sched {
namespace {

class Euler : public SigmaScheduler {
  public:
    Euler(const JsonConfig& c, bool ancestral, NoiseSchedule schedule)
        : SigmaScheduler(c, schedule, !ancestral), ancestral_(ancestral) {
        if (!ancestral) {
            const std::string interpolation = c.string("interpolation_type", "linear");
            if (interpolation != "linear" && interpolation != "log_linear") {
                c.fail("interpolation_type",
                       "'" + interpolation + "' is not supported (linear, log_linear)");
            }
            log_linear_ = interpolation == "log_linear";
            const std::string final_sigma = c.string("final_sigmas_type", "zero");
            if (final_sigma != "zero" && final_sigma != "sigma_min") {
                c.fail("final_sigmas_type",
                       "'" + final_sigma + "' is not supported (zero, sigma_min)");
            }
            final_sigma_min_ = final_sigma == "sigma_min";
            if (c.string("timestep_type", "discrete") != "discrete") {
                c.fail("timestep_type", "is not supported (discrete)");
            }
        }
    }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        Schedule s = schedule(n, log_linear_);
        s.sigmas.push_back(final_sigma_min_ ? s.full.front() : 0.0);
        sigmas_ = to_tensor(s.sigmas, at::kFloat);
        timesteps_ = to_tensor(s.timesteps, at::kFloat);
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample_in,
              const NoiseFn& noise) override {
        const at::Tensor sample = sample_in.to(at::kFloat);
        const at::Tensor sigma = sigmas_[index];
        Step s;
        s.pred_x0 = predicted_x0(out, sample, sigma);
        if (!ancestral_) {
            const at::Tensor sigma_hat = sigma * 1.0;  // s_churn = 0: no extra noise
            const at::Tensor derivative = (sample - s.pred_x0) / sigma_hat;
            const at::Tensor dt = sigmas_[index + 1] - sigma_hat;
            s.prev_sample = (sample + derivative * dt).to(out.scalar_type());
            return s;
        }
        const at::Tensor from = sigmas_[index], to = sigmas_[index + 1];
        const at::Tensor up = (to.pow(2) * (from.pow(2) - to.pow(2)) / from.pow(2)).pow(0.5);
        const at::Tensor down = (to.pow(2) - up.pow(2)).pow(0.5);
        const at::Tensor derivative = (sample - s.pred_x0) / sigma;
        const at::Tensor dt = down - sigma;
        at::Tensor prev = sample + derivative * dt;
        prev = prev + noise(out.sizes(), out.scalar_type()).to(out.device()) * up;
        s.prev_sample = prev.to(out.scalar_type());
        return s;
    }

  private:
    bool ancestral_;
    bool log_linear_ = false;       // interpolation_type log_linear
    bool final_sigma_min_ = false;  // final_sigmas_type sigma_min (else 0)
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const JsonConfig& c, bool ancestral, NoiseSchedule schedule) {
    return std::make_unique<Euler>(c, ancestral, schedule);
}

}  // namespace sds::sched
