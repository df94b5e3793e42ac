// DPM-Solver++(2S), singlestep, optionally on Karras sigmas: diffusers'
// DPMSolverSinglestepScheduler with algorithm_type dpmsolver++ (the sampler's name chooses it, as
// DPM++ 2M's does), midpoint or heun, orders 1-3 from the config. The steps go in chunks of the
// order (1, 2, 1, 2, ...): each step of a chunk makes one model call, and a chunk's later steps
// restart from the chunk's first sample with all the chunk's estimates. diffusers' documentation
// names it as the equivalent of A1111's "DPM++ SDE" (which draws Brownian noise, so its images
// differ).
#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/ops/exp.h>

#include "sched/schedulers.h"

namespace sds::sched {
namespace {

class DpmPP2S : public Scheduler {
  public:
    DpmPP2S(const JsonConfig& c, NoiseSchedule schedule)
        : train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
          noise_(noise_schedule(c, schedule)),
          order_(static_cast<int>(c.integer("solver_order", 2))),
          lower_order_final_(c.boolean("lower_order_final", false)),
          lambda_min_(c.number("lambda_min_clipped", -INFINITY)) {
        if (order_ < 1 || order_ > 3) {
            c.fail("solver_order", "must be 1, 2 or 3");
        }
        // As diffusers: UniPC's and DEIS's solver types (a config made for them) fall back to
        // the midpoint solver.
        const std::string solver = c.string("solver_type", "midpoint");
        heun_ = solver == "heun";
        if (!heun_ && solver != "midpoint" && solver != "logrho" && solver != "bh1" &&
            solver != "bh2") {
            c.fail("solver_type", "'" + solver + "' is not supported (midpoint, heun)");
        }
        const std::string final_sigma = c.string("final_sigmas_type", "zero");
        if (final_sigma != "zero" && final_sigma != "sigma_min") {
            c.fail("final_sigmas_type", "'" + final_sigma + "' is not supported (zero, sigma_min)");
        }
        final_sigma_min_ = final_sigma == "sigma_min";
        refuse_true(c, {"use_flow_sigmas", "use_dynamic_shifting", "thresholding"});
    }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        // n + 1 points over the train range less the timesteps lambda_min_clipped cuts off,
        // rounded, the last dropped (the class has no spacing option).
        const int last = train_ - 1 - lambda_clipped(alphas_cumprod_, lambda_min_);
        const std::vector<double> l = linspace(0, last, n + 1);
        std::vector<double> t;
        for (int i = n; i >= 1; --i) {
            t.push_back(round_half_even(l[i]));
        }
        sigmas_ = to_tensor(
            dpm_solver_sigmas(alphas_cumprod_, t, n, noise_, false, final_sigma_min_), at::kFloat);
        timesteps_ = to_tensor(t, at::kLong);
        // Each step's order. diffusers turns lower_order_final on where the steps do not fill
        // whole chunks or the last sigma is 0 (so with its defaults, always).
        const bool lower_final = lower_order_final_ || n % order_ != 0 || !final_sigma_min_;
        orders_.clear();
        const int chunks = n / order_;
        for (int k = 0; k < chunks; ++k) {
            for (int o = 1; o <= order_; ++o) {
                orders_.push_back(o);
            }
        }
        if (lower_final) {
            // The last chunk cut short: 1, 2, ..., the rest, and a last step of order 1.
            if (order_ == 1) {
                orders_.assign(n, 1);
            } else if (n % order_ == 0) {
                orders_.resize(n - order_);
                for (int o = 1; o < order_; ++o) {
                    orders_.push_back(o);
                }
                orders_.push_back(1);
            } else {
                for (int o = 1; o <= n % order_; ++o) {
                    orders_.push_back(o);
                }
            }
        }
        if (!final_sigma_min_) {
            orders_.back() = 1;
        }
        for (auto& m : outputs_) {
            m = at::Tensor();
        }
        chunk_start_ = at::Tensor();
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample,
              const NoiseFn&) override {
        const auto [alpha_s0, sigma_s0] = alpha_sigma(sigmas_[index]);
        const at::Tensor x0 = prediction_type_ == "epsilon"  ? (sample - sigma_s0 * out) / alpha_s0
                              : prediction_type_ == "sample" ? out
                                                             : alpha_s0 * sample - sigma_s0 * out;
        for (int i = 0; i + 1 < order_; ++i) {
            outputs_[i] = outputs_[i + 1];
        }
        outputs_[order_ - 1] = x0;
        // The step's order, lowered where there are not yet enough estimates (the first steps,
        // and the first after an img2img cut).
        int order = orders_[index];
        while (!outputs_[order_ - order].defined()) {
            --order;
        }
        if (order == 1) {
            chunk_start_ = sample.to(at::kFloat);
        }
        const at::Tensor& m0 = outputs_[order_ - 1];
        const auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[index + 1]);
        const at::Tensor lambda_t = log_snr(sigmas_[index + 1]);
        // The chunk's first sigma: the step's own (order 1), one back (2) or two back (3).
        const at::Tensor sigma_start = alpha_sigma(sigmas_[index - (order - 1)]).second;
        const at::Tensor lambda_start = log_snr(sigmas_[index - (order - 1)]);
        const at::Tensor h = lambda_t - lambda_start;
        const at::Tensor em1 = at::exp(-h) - 1.0;
        const at::Tensor x_coef = sigma_t / sigma_start;
        at::Tensor prev;
        if (order == 1) {
            prev = x_coef * chunk_start_ - (alpha_t * em1) * m0;
        } else if (order == 2) {
            const at::Tensor& m1 = outputs_[order_ - 2];
            const at::Tensor r0 = (log_snr(sigmas_[index]) - lambda_start) / h;
            const at::Tensor d1 = (1.0 / r0) * (m0 - m1);
            if (heun_) {
                prev =
                    x_coef * chunk_start_ - (alpha_t * em1) * m1 + (alpha_t * (em1 / h + 1.0)) * d1;
            } else {
                prev = x_coef * chunk_start_ - (alpha_t * em1) * m1 - 0.5 * (alpha_t * em1) * d1;
            }
        } else {
            const at::Tensor& m1 = outputs_[order_ - 2];
            const at::Tensor& m2 = outputs_[order_ - 3];
            const at::Tensor r0 = (log_snr(sigmas_[index]) - lambda_start) / h;
            const at::Tensor r1 = (log_snr(sigmas_[index - 1]) - lambda_start) / h;
            const at::Tensor d1_0 = (1.0 / r1) * (m1 - m2);
            const at::Tensor d1_1 = (1.0 / r0) * (m0 - m2);
            if (heun_) {
                const at::Tensor d1 = (r0 * d1_0 - r1 * d1_1) / (r0 - r1);
                const at::Tensor d2 = 2.0 * (d1_1 - d1_0) / (r0 - r1);
                prev = x_coef * chunk_start_ - (alpha_t * em1) * m2 +
                       (alpha_t * (em1 / h + 1.0)) * d1 -
                       (alpha_t * ((em1 + h) / h.pow(2) - 0.5)) * d2;
            } else {
                prev = x_coef * chunk_start_ - (alpha_t * em1) * m2 +
                       (alpha_t * (em1 / h + 1.0)) * d1_1;
            }
        }
        return {prev.to(out.scalar_type()), x0};
    }

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return add_noise_sigmas(sigmas_, index, x0, noise);
    }

  private:
    int train_;
    NoiseSchedule noise_;
    int order_;
    bool lower_order_final_;
    double lambda_min_;  // lambda_min_clipped
    bool heun_ = false;  // solver_type heun (else midpoint)
    bool final_sigma_min_ = false;
    std::vector<int> orders_;  // each step's order
    at::Tensor outputs_[3];    // the last data predictions, newest last (order_ of them)
    at::Tensor chunk_start_;   // the sample the current chunk started from (float32)
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_2s(const JsonConfig& c, NoiseSchedule schedule) {
    return std::make_unique<DpmPP2S>(c, schedule);
}

}  // namespace sds::sched
