// LCM (Latent Consistency Models, Luo et al.): a few steps, each a consistency-model estimate of
// the clean latents (c_skip * sample + c_out * x0) noised afresh to the next timestep's level.
// As diffusers' LCMScheduler; with an LCM-LoRA, 2-8 steps at low guidance give an image.
#include <cmath>
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/ops/scalar_tensor.h>

#include "sched/schedulers.h"
#include "sds/error.h"

namespace sds::sched {
namespace {

class Lcm : public Scheduler {
  public:
    explicit Lcm(const JsonConfig& c)
        : train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
          original_(static_cast<int>(c.integer("original_inference_steps", 50))),
          clip_sample_(c.boolean("clip_sample", false)),
          clip_range_(c.number("clip_sample_range", 1.0)),
          scaling_(c.number("timestep_scaling", 10.0)),
          where_(c.path().string()) {
        refuse_true(c, {"thresholding"});
        if (original_ < 1 || original_ > train_) {
            c.fail("original_inference_steps", "= " + std::to_string(original_) +
                                                   " must be between 1 and num_train_timesteps (" +
                                                   std::to_string(train_) + ")");
        }
    }

    void set_timesteps(int n) override {
        // The distillation's schedule: original_inference_steps timesteps k - 1, 2k - 1, ...,
        // T - 1 (k = T / original), of which n are taken evenly by index from the top.
        if (n < 1 || n > original_) {
            throw Error("lcm takes 1 to " + std::to_string(original_) +
                        " steps (the original_inference_steps of " +
                        (where_.empty() ? std::string("LCMScheduler's defaults") : where_) +
                        "), not " + std::to_string(n));
        }
        num_inference_steps_ = n;
        const int k = train_ / original_;
        const double stride =
            static_cast<double>(original_) / n;  // np.linspace(.., endpoint=False)
        std::vector<double> t;
        for (int i = 0; i < n; ++i) {
            const int index = static_cast<int>(std::floor(i * stride));
            t.push_back(static_cast<double>((original_ - index) * k - 1));
        }
        timesteps_ = to_tensor(t, at::kLong);
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample,
              const NoiseFn& noise) override {
        const int64_t n = timesteps_.size(0);
        const int64_t t = timesteps_[index].item<int64_t>();
        // The last step's "previous" timestep is its own (its sample is the estimate itself).
        const int64_t prev_t = index + 1 < n ? timesteps_[index + 1].item<int64_t>() : t;
        const at::Tensor a_t = alphas_cumprod_[t];
        const at::Tensor a_prev = alphas_cumprod_[prev_t];
        const at::Tensor b_t = 1 - a_t;
        // The boundary-condition scalings, in float32 as diffusers computes them from the
        // timestep tensor (sigma_data 0.5; `0.25 / x` is a reciprocal times 0.25 in torch).
        const at::Tensor scaled = at::scalar_tensor(static_cast<double>(t), at::kFloat) * scaling_;
        const at::Tensor denom = scaled.pow(2) + 0.25;
        const at::Tensor c_skip = denom.reciprocal() * 0.25;
        const at::Tensor c_out = scaled / denom.pow(0.5);
        at::Tensor x0;
        if (prediction_type_ == "epsilon") {
            x0 = (sample - b_t.sqrt() * out) / a_t.sqrt();
        } else if (prediction_type_ == "sample") {
            x0 = out;
        } else {  // v_prediction
            x0 = a_t.sqrt() * sample - b_t.sqrt() * out;
        }
        if (clip_sample_) {
            x0 = x0.clamp(-clip_range_, clip_range_);
        }
        const at::Tensor denoised = c_out * x0 + c_skip * sample;
        Step s;
        s.pred_x0 = denoised;
        if (index != num_inference_steps_ - 1) {
            const at::Tensor z = noise(out.sizes(), denoised.scalar_type()).to(out.device());
            s.prev_sample = a_prev.sqrt() * denoised + (1 - a_prev).sqrt() * z;
        } else {
            s.prev_sample = denoised;
        }
        return s;
    }

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return add_noise_alphas(alphas_cumprod_, timesteps_[index].item<int64_t>(), x0, noise);
    }

  private:
    int train_, original_;
    bool clip_sample_;
    double clip_range_, scaling_;
    std::string where_;
};

}  // namespace

std::unique_ptr<Scheduler> make_lcm(const JsonConfig& c) {
    return std::make_unique<Lcm>(c);
}

}  // namespace sds::sched
