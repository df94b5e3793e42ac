// DDIM (Song et al.), with eta for stochastic sampling.
#include <ATen/TensorOperators.h>
#include <ATen/ops/scalar_tensor.h>

#include "sched/schedulers.h"

namespace sds::sched {
namespace {

class Ddim : public Scheduler {
  public:
    explicit Ddim(const JsonConfig& c)
        : train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
          offset_(static_cast<int>(c.integer("steps_offset", 0))),
          spacing_(c.string("timestep_spacing", "leading")),
          set_alpha_to_one_(c.boolean("set_alpha_to_one", true)),
          clip_sample_(c.boolean("clip_sample", true)),
          clip_range_(c.number("clip_sample_range", 1.0)),
          where_(c.path().string()) {
        refuse_true(c, {"thresholding"});
    }

    void set_eta(double eta) override { eta_ = eta; }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        auto t = spaced_timesteps(spacing_, train_, n, offset_, where_);
        for (auto& v : t) {
            v = round_half_even(v);
        }
        timesteps_ = to_tensor(t, at::kLong);
        final_ac_ = set_alpha_to_one_ ? at::scalar_tensor(1.0, at::kFloat) : alphas_cumprod_[0];
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample,
              const NoiseFn& noise) override {
        const int64_t t = timesteps_[index].item<int64_t>();
        const int64_t prev_t = t - train_ / num_inference_steps_;
        const at::Tensor a_t = alphas_cumprod_[t];
        const at::Tensor a_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_ac_;
        const at::Tensor b_t = 1 - a_t;
        at::Tensor x0, eps;
        if (prediction_type_ == "epsilon") {
            x0 = (sample - b_t.pow(0.5) * out) / a_t.pow(0.5);
            eps = out;
        } else if (prediction_type_ == "sample") {
            x0 = out;
            eps = (sample - a_t.pow(0.5) * x0) / b_t.pow(0.5);
        } else {  // v_prediction
            x0 = a_t.pow(0.5) * sample - b_t.pow(0.5) * out;
            eps = a_t.pow(0.5) * out + b_t.pow(0.5) * sample;
        }
        if (clip_sample_) {
            x0 = x0.clamp(-clip_range_, clip_range_);
        }
        const at::Tensor b_prev = 1 - a_prev;
        const at::Tensor variance = (b_prev / b_t) * (1 - a_t / a_prev);
        const at::Tensor std_dev = eta_ * variance.pow(0.5);
        const at::Tensor direction = (1 - a_prev - std_dev.pow(2)).pow(0.5) * eps;
        Step s;
        s.prev_sample = a_prev.pow(0.5) * x0 + direction;
        if (eta_ > 0) {
            s.prev_sample =
                s.prev_sample + std_dev * noise(out.sizes(), out.scalar_type()).to(out.device());
        }
        s.pred_x0 = x0;
        return s;
    }

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return add_noise_alphas(alphas_cumprod_, timesteps_[index].item<int64_t>(), x0, noise);
    }

  private:
    int train_, offset_;
    std::string spacing_;
    bool set_alpha_to_one_, clip_sample_;
    double clip_range_;
    std::string where_;
    double eta_ = 0.0;
    at::Tensor final_ac_;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const JsonConfig& c) {
    return std::make_unique<Ddim>(c);
}

}  // namespace sds::sched
