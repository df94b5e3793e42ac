// PNDM with skip_prk_steps (PLMS): linear multistep over the model's epsilon predictions.
#include <ATen/TensorOperators.h>
#include <ATen/ops/tensor.h>

#include "sched/schedulers.h"
#include "sds/error.h"

namespace sds::sched {

at::Tensor add_noise_alphas(const at::Tensor& ac_all, int64_t t, const at::Tensor& x0,
                            const at::Tensor& noise) {
    const at::Tensor ac = ac_all.to(x0.device(), x0.scalar_type())[t];
    return ac.pow(0.5) * x0 + (1 - ac).pow(0.5) * noise;
}

namespace {

class Pndm : public Scheduler {
public:
    explicit Pndm(const JsonConfig& c)
        : train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
          offset_(static_cast<int>(c.integer("steps_offset", 0))),
          spacing_(c.string("timestep_spacing", "leading")),
          set_alpha_to_one_(c.boolean("set_alpha_to_one", false)),
          where_(c.path().string()) {
        if (!c.boolean("skip_prk_steps", false)) {
            // Runge-Kutta warm-up steps are not implemented; SD configs set skip_prk_steps.
            c.fail("skip_prk_steps", "= false (PNDM's Runge-Kutta steps) is not supported");
        }
    }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        auto t = spaced_timesteps(spacing_, train_, n, offset_, where_);
        std::reverse(t.begin(), t.end());  // ascending, as diffusers' _timesteps
        for (auto& v : t) {
            v = round_half_even(v);
        }
        // plms: _timesteps[:-1] + _timesteps[-2:-1] + _timesteps[-1:], reversed: the
        // second-to-last is repeated.
        std::vector<double> plms(t.begin(), t.end() - 1);
        if (t.size() >= 2) {
            plms.push_back(t[t.size() - 2]);
        }
        plms.push_back(t.back());
        std::reverse(plms.begin(), plms.end());
        timesteps_ = to_tensor(plms, at::kLong);
        ets_.clear();
        counter_ = 0;
        cur_sample_ = at::Tensor();
        final_ac_ = set_alpha_to_one_ ? at::scalar_tensor(1.0, at::kFloat) : alphas_cumprod_[0];
    }

    Step step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample_in,
              const NoiseFn&) override {
        int64_t t = timesteps_[index].item<int64_t>();
        int64_t prev_t = t - train_ / num_inference_steps_;
        at::Tensor eps = model_output, sample = sample_in;
        if (counter_ != 1) {
            if (ets_.size() > 3) {
                ets_.erase(ets_.begin(), ets_.end() - 3);
            }
            ets_.push_back(model_output);
        } else {
            prev_t = t;
            t = t + train_ / num_inference_steps_;
        }
        const size_t n = ets_.size();
        if (n == 1 && counter_ == 0) {
            cur_sample_ = sample;
        } else if (n == 1 && counter_ == 1) {
            eps = (model_output + ets_.back()) / 2;
            sample = cur_sample_;
            cur_sample_ = at::Tensor();
        } else if (n == 2) {
            eps = (3 * ets_[n - 1] - ets_[n - 2]) / 2;
        } else if (n == 3) {
            eps = (23 * ets_[n - 1] - 16 * ets_[n - 2] + 5 * ets_[n - 3]) / 12;
        } else {
            eps = (1.0 / 24) *
                  (55 * ets_[n - 1] - 59 * ets_[n - 2] + 37 * ets_[n - 3] - 9 * ets_[n - 4]);
        }
        Step out;
        out.prev_sample = prev_sample(sample, t, prev_t, eps);
        // PNDM has no x0 estimate of its own; derive it from this step's epsilon.
        const at::Tensor ac = alphas_cumprod_[t];
        out.pred_x0 = (sample - (1 - ac).pow(0.5) * as_epsilon(eps, sample, ac)) / ac.pow(0.5);
        ++counter_;
        return out;
    }

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return add_noise_alphas(alphas_cumprod_, timesteps_[index].item<int64_t>(), x0, noise);
    }

private:
    at::Tensor as_epsilon(const at::Tensor& out, const at::Tensor& sample,
                          const at::Tensor& ac) const {
        if (prediction_type_ == "v_prediction") {
            return ac.pow(0.5) * out + (1 - ac).pow(0.5) * sample;
        }
        return out;
    }

    at::Tensor prev_sample(const at::Tensor& sample, int64_t t, int64_t prev_t,
                           at::Tensor eps) const {
        const at::Tensor a_t = alphas_cumprod_[t];
        const at::Tensor a_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_ac_;
        const at::Tensor b_t = 1 - a_t, b_prev = 1 - a_prev;
        eps = as_epsilon(eps, sample, a_t);
        const at::Tensor sample_coeff = (a_prev / a_t).pow(0.5);
        const at::Tensor denom = a_t * b_prev.pow(0.5) + (a_t * b_t * a_prev).pow(0.5);
        return sample_coeff * sample - (a_prev - a_t) * eps / denom;
    }

    int train_, offset_;
    std::string spacing_;
    bool set_alpha_to_one_;
    std::string where_;
    std::vector<at::Tensor> ets_;
    int counter_ = 0;
    at::Tensor cur_sample_, final_ac_;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const JsonConfig& c) { return std::make_unique<Pndm>(c); }

}  // namespace sds::sched
