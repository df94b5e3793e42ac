// Euler and Euler ancestral (k-diffusion samplers over sigmas), diffusers'
// EulerDiscreteScheduler / EulerAncestralDiscreteScheduler.
#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/ops/linspace.h>

#include "sched/schedulers.h"

namespace sds::sched {
namespace {

class Euler : public Scheduler {
  public:
    Euler(const JsonConfig& c, bool ancestral)
        : ancestral_(ancestral),
          train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
          offset_(static_cast<int>(c.integer("steps_offset", 0))),
          spacing_(c.string("timestep_spacing", "linspace")),
          karras_(!ancestral && c.boolean("use_karras_sigmas", false)),
          where_(c.path().string()) {
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
            refuse_true(c, {"use_exponential_sigmas", "use_beta_sigmas"});
        }
    }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        std::vector<double> t = spaced_timesteps(spacing_, train_, n, offset_, where_);
        for (auto& v : t) {  // diffusers holds these in float32
            v = static_cast<float>(v);
        }
        const std::vector<double> full = full_sigmas(alphas_cumprod_);
        std::vector<double> sigmas;
        if (log_linear_) {
            // n + 1 sigmas evenly spaced in log between the largest and the smallest (torch,
            // float32), over n timesteps: the last step ends at sigma_min, not at 0.
            const at::Tensor l =
                at::linspace(std::log(static_cast<float>(full.back())),
                             std::log(static_cast<float>(full.front())), n + 1, at::kFloat)
                    .exp()
                    .to(at::kDouble)
                    .contiguous();
            sigmas.assign(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
        } else {
            for (double v : t) {
                sigmas.push_back(interp_index(v, full));
            }
        }
        if (karras_) {
            const auto logs = log_sigmas(full);
            sigmas = karras_sigmas(sigmas.back(), sigmas.front(), n);
            t.clear();
            for (double s : sigmas) {
                t.push_back(static_cast<float>(sigma_to_t(s, logs)));
            }
        }
        sigmas.push_back(final_sigma_min_ ? full.front() : 0.0);
        sigmas_ = to_tensor(sigmas, at::kFloat);
        timesteps_ = to_tensor(t, at::kFloat);
    }

    at::Tensor init_noise_sigma() const override {
        const at::Tensor m = sigmas_.max();
        if (spacing_ == "linspace" || spacing_ == "trailing") {
            return m;
        }
        return (m.pow(2) + 1).pow(0.5);
    }

    at::Tensor scale_model_input(const at::Tensor& sample, int64_t index) const override {
        const at::Tensor sigma = sigmas_[index];
        return sample / (sigma.pow(2) + 1).pow(0.5);
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample_in,
              const NoiseFn& noise) override {
        const at::Tensor sample = sample_in.to(at::kFloat);
        const at::Tensor sigma = sigmas_[index];
        Step s;
        if (prediction_type_ == "epsilon") {
            s.pred_x0 = sample - sigma * out;
        } else if (prediction_type_ == "sample") {
            s.pred_x0 = out;
        } else {  // v_prediction
            s.pred_x0 =
                out * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + (sample / (sigma.pow(2) + 1));
        }
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

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return x0 + noise * sigmas_.to(x0.device(), x0.scalar_type())[index];
    }

  private:
    bool ancestral_;
    int train_, offset_;
    std::string spacing_;
    bool karras_;
    bool log_linear_ = false;       // interpolation_type log_linear
    bool final_sigma_min_ = false;  // final_sigmas_type sigma_min (else 0)
    std::string where_;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const JsonConfig& c, bool ancestral) {
    return std::make_unique<Euler>(c, ancestral);
}

}  // namespace sds::sched
