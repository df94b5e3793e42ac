// PNDM: linear multistep over the model's epsilon predictions (PLMS; SD's configs set
// skip_prk_steps), after a Runge-Kutta warm-up when skip_prk_steps is false (diffusers' default).
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
          skip_prk_(c.boolean("skip_prk_steps", false)),
          where_(c.path().string()) {}

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        auto t = spaced_timesteps(spacing_, train_, n, offset_, where_);
        std::reverse(t.begin(), t.end());  // ascending, as diffusers' _timesteps
        for (auto& v : t) {
            v = round_half_even(v);
        }
        std::vector<double> all;
        prk_.clear();
        if (skip_prk_) {
            // plms: _timesteps[:-1] + _timesteps[-2:-1] + _timesteps[-1:], reversed: the
            // second-to-last is repeated.
            all.assign(t.begin(), t.end() - 1);
            if (t.size() >= 2) {
                all.push_back(t[t.size() - 2]);
            }
            all.push_back(t.back());
            std::reverse(all.begin(), all.end());
        } else {
            // Three Runge-Kutta steps down the four highest timesteps, four model calls each
            // (at a, a - h, a - h, a - 2h; h = half a step), then PLMS from the fourth-highest.
            if (n < 4) {
                throw Error(where_ +
                            ": skip_prk_steps = false (PNDM's Runge-Kutta warm-up) needs "
                            "at least 4 steps, not " +
                            std::to_string(n));
            }
            const double h = static_cast<double>(train_ / n / 2);
            std::vector<double> p;  // a0, a0 + h, a1, a1 + h, a2, a2 + h, a3 (a: the top four)
            for (auto it = t.end() - 4; it != t.end(); ++it) {
                p.push_back(*it);
                p.push_back(*it + h);
            }
            p.pop_back();
            for (size_t i = 1; i + 1 < 2 * p.size(); ++i) {
                prk_.push_back(p[i / 2]);  // each entry twice, less the first and last copy
            }
            std::reverse(prk_.begin(), prk_.end());
            all = prk_;
            all.insert(all.end(), t.rbegin() + 3, t.rend());
        }
        timesteps_ = to_tensor(all, at::kLong);
        ets_.clear();
        counter_ = 0;
        cur_sample_ = at::Tensor();
        cur_eps_ = at::Tensor();
        final_ac_ = set_alpha_to_one_ ? at::scalar_tensor(1.0, at::kFloat) : alphas_cumprod_[0];
    }

    Step step(const at::Tensor& model_output, int64_t index, const at::Tensor& sample_in,
              const NoiseFn&) override {
        if (!skip_prk_ && counter_ < static_cast<int>(prk_.size())) {
            return step_prk(model_output, index, sample_in);
        }
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
        out.pred_x0 = estimate_x0(sample, t, eps);
        ++counter_;
        return out;
    }

    // One of the Runge-Kutta warm-up's calls. As diffusers (the scheduler's own call counter
    // decides, also after an img2img cut): each group of four starts from the sample of its
    // first call, at the group's first timestep, and its last call combines the four model
    // outputs with weights 1/6, 1/3, 1/3, 1/6.
    Step step_prk(const at::Tensor& model_output, int64_t index, const at::Tensor& sample) {
        const int64_t t_in = timesteps_[index].item<int64_t>();
        const int64_t prev_t = t_in - (counter_ % 2 != 0 ? 0 : train_ / num_inference_steps_ / 2);
        const auto t = static_cast<int64_t>(prk_[static_cast<size_t>(counter_ / 4 * 4)]);
        at::Tensor eps = model_output;
        switch (counter_ % 4) {
            case 0:
                cur_eps_ = (1.0 / 6) * model_output;
                ets_.push_back(model_output);
                cur_sample_ = sample;
                break;
            case 1:
            case 2:
                cur_eps_ = cur_eps_ + (1.0 / 3) * model_output;
                break;
            default:
                eps = cur_eps_ + (1.0 / 6) * model_output;
                cur_eps_ = at::Tensor();
        }
        Step out;
        out.prev_sample = prev_sample(cur_sample_, t, prev_t, eps);
        out.pred_x0 = estimate_x0(sample, t_in, model_output);
        ++counter_;
        return out;
    }

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return add_noise_alphas(alphas_cumprod_, timesteps_[index].item<int64_t>(), x0, noise);
    }

  private:
    // PNDM has no x0 estimate of its own (for the live preview): derived from the step's epsilon.
    at::Tensor estimate_x0(const at::Tensor& sample, int64_t t, const at::Tensor& out) const {
        const at::Tensor ac = alphas_cumprod_[t];
        return (sample - (1 - ac).pow(0.5) * as_epsilon(out, sample, ac)) / ac.pow(0.5);
    }

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
    bool skip_prk_;
    std::string where_;
    std::vector<double> prk_;  // the warm-up's timesteps (empty with skip_prk_steps)
    std::vector<at::Tensor> ets_;
    int counter_ = 0;
    at::Tensor cur_sample_, cur_eps_, final_ac_;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const JsonConfig& c) {
    return std::make_unique<Pndm>(c);
}

}  // namespace sds::sched
