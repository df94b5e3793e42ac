// DPM-Solver++(2M), optionally on Karras sigmas: diffusers' DPMSolverMultistepScheduler with
// algorithm_type dpmsolver++, midpoint or heun, lower_order_final, final sigma 0 or sigma_min; a
// config's solver_order 1 or 3 makes it first order (DPM-Solver++ 1S) or DPM++ 3M, as in diffusers.
// With algorithm_type sde-dpmsolver++ (DPM++ 2M SDE) each step also adds fresh noise, drawn in
// float32 from the images' generators.
#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/sqrt.h>

#include "sched/schedulers.h"

namespace sds::sched {
namespace {

class DpmPP2M : public Scheduler {
  public:
    DpmPP2M(const JsonConfig& c, NoiseSchedule schedule, bool sde)
        : train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
          offset_(static_cast<int>(c.integer("steps_offset", 0))),
          spacing_(c.string("timestep_spacing", "linspace")),
          noise_(noise_schedule(c, schedule)),
          sde_(sde),
          where_(c.path().string()) {
        auto require = [&](const char* key, const std::string& want, const std::string& dflt) {
            if (c.string(key, dflt) != want) {
                c.fail(key, "'" + c.string(key, dflt) + "' is not supported (" + want + ")");
            }
        };
        // The sampler's name decides between DPM++ 2M and DPM++ 2M SDE (diffusers'
        // from_config(config, algorithm_type=...)), whichever of the two the config names. As
        // diffusers: DEIS's algorithm and UniPC's/DEIS's solver types (a config made for them)
        // fall back to DPM++ and the midpoint solver.
        const std::string algorithm = c.string("algorithm_type", "dpmsolver++");
        if (algorithm != "deis" && algorithm != "sde-dpmsolver++") {
            require("algorithm_type", "dpmsolver++", "dpmsolver++");
        }
        cosine_ = c.string("beta_schedule", "linear") == "squaredcos_cap_v2";
        const std::string solver = c.string("solver_type", "midpoint");
        if (solver == "heun") {
            heun_ = true;
        } else if (solver != "logrho" && solver != "bh1" && solver != "bh2") {
            require("solver_type", "midpoint", "midpoint");
        }
        const std::string final_sigma = c.string("final_sigmas_type", "zero");
        if (final_sigma != "sigma_min") {
            require("final_sigmas_type", "zero", "zero");
        }
        final_sigma_min_ = final_sigma == "sigma_min";
        euler_at_final_ = c.boolean("euler_at_final", false);
        // A config's solver_order decides, as in diffusers (DPM++ 2M is order 2).
        order_ = static_cast<int>(c.integer("solver_order", 2));
        if (order_ < 1 || order_ > 3) {
            c.fail("solver_order", "must be 1, 2 or 3");
        }
        lower_order_final_ = c.boolean("lower_order_final", true);
        lambda_min_ = c.number("lambda_min_clipped", -INFINITY);
        refuse_true(c,
                    {"use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting", "thresholding"});
    }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        // lambda_min_clipped (-inf by default) cuts the noisiest timesteps off the range.
        std::vector<double> t =
            multistep_timesteps(spacing_, train_, n, offset_, where_,
                                train_ - lambda_clipped(alphas_cumprod_, lambda_min_));
        // With Karras sigmas diffusers rounds the timesteps, except on the cosine schedule,
        // whose fractional timesteps the conversion to int64 truncates.
        sigmas_ =
            to_tensor(dpm_solver_sigmas(alphas_cumprod_, t, n, noise_, cosine_, final_sigma_min_),
                      at::kFloat);
        timesteps_ = to_tensor(t, at::kLong);
        outputs_[0] = outputs_[1] = outputs_[2] = at::Tensor();
        lower_order_nums_ = 0;
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample_in,
              const NoiseFn& noise_fn) override {
        const int64_t n = timesteps_.size(0);
        // The last step is first order to a final sigma of 0, with euler_at_final, or with
        // lower_order_final and fewer than 15 steps; in that last case the one before it is at
        // most second order.
        const bool short_final = lower_order_final_ && n < 15;
        const bool first_order =
            order_ == 1 || lower_order_nums_ < 1 ||
            (index == n - 1 && (euler_at_final_ || short_final || !final_sigma_min_));
        const bool second_order =
            order_ == 2 || lower_order_nums_ < 2 || (index == n - 2 && short_final);
        const auto [alpha_s0, sigma_s0] = alpha_sigma(sigmas_[index]);
        at::Tensor x0 = prediction_type_ == "epsilon"  ? (sample_in - sigma_s0 * out) / alpha_s0
                        : prediction_type_ == "sample" ? out
                                                       : alpha_s0 * sample_in - sigma_s0 * out;
        outputs_[0] = outputs_[1];
        outputs_[1] = outputs_[2];
        outputs_[2] = x0;
        const at::Tensor sample = sample_in.to(at::kFloat);
        // The SDE's noise, drawn at every step (the last one's is multiplied by sigma 0).
        const at::Tensor noise =
            sde_ ? noise_fn(out.sizes(), at::kFloat).to(out.device()) : at::Tensor();
        const auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[index + 1]);
        const at::Tensor lambda_t = log_snr(sigmas_[index + 1]);
        const at::Tensor lambda_s0 = log_snr(sigmas_[index]);
        const at::Tensor h = lambda_t - lambda_s0;
        const at::Tensor& m0 = outputs_[2];
        const at::Tensor& m1 = outputs_[1];
        const at::Tensor& m2 = outputs_[0];
        // The SDE's updates are the ODE's with h doubled in the exponentials, its sample
        // scaled by e^-h more, and noise added (diffusers' arithmetic, term for term).
        const at::Tensor hh = sde_ ? 2.0 * h : h;
        const at::Tensor em1 = at::exp(-hh) - 1.0;
        const at::Tensor x_coef = sde_ ? sigma_t / sigma_s0 * at::exp(-h) : sigma_t / sigma_s0;
        at::Tensor prev;
        if (first_order) {
            prev = x_coef * sample - (alpha_t * em1) * x0;
        } else if (second_order) {
            const at::Tensor r0 = (lambda_s0 - log_snr(sigmas_[index - 1])) / h;
            const at::Tensor d1 = (1.0 / r0) * (m0 - m1);
            if (heun_) {
                prev = x_coef * sample - (alpha_t * em1) * m0 + (alpha_t * (em1 / hh + 1.0)) * d1;
            } else {
                prev = x_coef * sample - (alpha_t * em1) * m0 - 0.5 * (alpha_t * em1) * d1;
            }
        } else {  // DPM++ 3M
            const at::Tensor lambda_s1 = log_snr(sigmas_[index - 1]);
            const at::Tensor r0 = (lambda_s0 - lambda_s1) / h;
            const at::Tensor r1 = (lambda_s1 - log_snr(sigmas_[index - 2])) / h;
            const at::Tensor d1_0 = (1.0 / r0) * (m0 - m1);
            const at::Tensor d1_1 = (1.0 / r1) * (m1 - m2);
            const at::Tensor d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1);
            const at::Tensor d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1);
            // diffusers' SDE third order has + 0.5 where the ODE's has - 0.5.
            const double half = sde_ ? -0.5 : 0.5;
            prev = x_coef * sample - (alpha_t * em1) * m0 + (alpha_t * (em1 / hh + 1.0)) * d1 -
                   (alpha_t * ((em1 + hh) / hh.pow(2) - half)) * d2;
        }
        if (sde_) {
            prev = prev + sigma_t * at::sqrt(-em1) * noise;
        }
        if (lower_order_nums_ < order_) {
            ++lower_order_nums_;
        }
        return {prev.to(out.scalar_type()), x0};
    }

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return add_noise_sigmas(sigmas_, index, x0, noise);
    }

  private:
    int train_, offset_;
    std::string spacing_;
    NoiseSchedule noise_;
    bool sde_;             // algorithm_type sde-dpmsolver++
    bool heun_ = false;    // solver_type heun (else midpoint)
    bool cosine_ = false;  // beta_schedule squaredcos_cap_v2
    std::string where_;
    int order_ = 2;
    bool lower_order_final_ = true;
    bool final_sigma_min_ = false;  // final_sigmas_type sigma_min (else 0)
    bool euler_at_final_ = false;
    double lambda_min_ = -INFINITY;  // lambda_min_clipped
    at::Tensor outputs_[3];          // the last data predictions, newest last
    int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_2m(const JsonConfig& c, NoiseSchedule schedule, bool sde) {
    return std::make_unique<DpmPP2M>(c, schedule, sde);
}

}  // namespace sds::sched
