// UniPC: diffusers' UniPCMultistepScheduler. Each step first corrects the current sample with
// the new model output (UniC, from the previous step's order), then predicts the next one
// (UniP) from the last `order` data predictions in log-SNR time, with B(h) = h (bh1) or
// e^h - 1 (bh2); orders 1 to 3, lower orders for the warm-up and, with lower_order_final, the
// last steps. Its own spacings, Karras sigmas and final sigma (0 or sigma_min).
#include <algorithm>
#include <cmath>
#include <tuple>

#include <ATen/TensorOperators.h>
#include <ATen/ops/einsum.h>
#include <ATen/ops/expm1.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linalg_solve.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/stack.h>

#include "sched/schedulers.h"

namespace sds::sched {
namespace {

class UniPC : public Scheduler {
  public:
    UniPC(const JsonConfig& c, NoiseSchedule schedule)
        : train_(static_cast<int>(c.integer("num_train_timesteps", 1000))),
          offset_(static_cast<int>(c.integer("steps_offset", 0))),
          order_(static_cast<int>(c.integer("solver_order", 2))),
          spacing_(c.string("timestep_spacing", "linspace")),
          noise_(noise_schedule(c, schedule)),
          predict_x0_(c.boolean("predict_x0", true)),
          lower_order_final_(c.boolean("lower_order_final", true)),
          where_(c.path().string()) {
        if (order_ < 1 || order_ > 3) {
            c.fail("solver_order", "must be 1, 2 or 3 for UniPC");
        }
        // As diffusers: the DPM-Solver types of a config made for another solver mean bh2.
        const std::string solver = c.string("solver_type", "bh2");
        if (solver == "bh1") {
            bh1_ = true;
        } else if (solver != "bh2" && solver != "midpoint" && solver != "heun" &&
                   solver != "logrho") {
            c.fail("solver_type", "'" + solver + "' is not supported (bh1, bh2)");
        }
        const std::string final_sigma = c.string("final_sigmas_type", "zero");
        if (final_sigma != "zero" && final_sigma != "sigma_min") {
            c.fail("final_sigmas_type", "'" + final_sigma + "' is not supported (zero, sigma_min)");
        }
        final_sigma_min_ = final_sigma == "sigma_min";
        // diffusers' last step to sigma 0 computes 0 * inf there: every image is NaN.
        if (!final_sigma_min_ && (bh1_ || !predict_x0_)) {
            c.fail(bh1_ ? "solver_type" : "predict_x0",
                   std::string(bh1_ ? "bh1" : "false") +
                       " with final_sigmas_type zero makes the last step NaN (in diffusers too); "
                       "use final_sigmas_type sigma_min");
        }
        if (c.has("disable_corrector")) {
            for (int64_t i : c.integers("disable_corrector")) {
                disable_corrector_.push_back(i);
            }
        }
        refuse_true(c, {"use_flow_sigmas", "use_dynamic_shifting", "thresholding"});
        for (const char* key : {"sigma_min", "sigma_max", "shift_terminal", "solver_p"}) {
            if (c.has(key)) {
                c.fail(key, "is not supported (only null)");
            }
        }
    }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        std::vector<double> t = multistep_timesteps(spacing_, train_, n, offset_, where_);
        const std::vector<double> full = full_sigmas(alphas_cumprod_);
        std::vector<double> sigmas;
        double last = 0.0;
        if (noise_ != NoiseSchedule::Default) {
            // The config's use_*_sigmas; Karras timesteps rounded, the others cut to integers.
            const auto logs = log_sigmas(full);
            sigmas = noise_levels(noise_, full.front(), full.back(), n);
            t.clear();
            for (double s : sigmas) {
                const double v = sigma_to_t(s, logs);
                t.push_back(noise_ == NoiseSchedule::Karras ? round_half_even(v) : std::trunc(v));
            }
            last = final_sigma_min_ ? sigmas.back() : 0.0;
        } else {
            for (double v : t) {
                sigmas.push_back(interp_index(v, full));
            }
            last = final_sigma_min_ ? full.front() : 0.0;
        }
        sigmas.push_back(last);
        sigmas_ = to_tensor(sigmas, at::kFloat);
        timesteps_ = to_tensor(t, at::kLong);
        outputs_.assign(order_, at::Tensor());
        lower_order_nums_ = 0;
        this_order_ = 0;
        last_sample_ = at::Tensor();
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample_in,
              const NoiseFn&) override {
        const int64_t n = timesteps_.size(0);
        at::Tensor sample = sample_in.to(at::kFloat);
        const at::Tensor m = convert(out.to(at::kFloat), sample, index);
        const bool disabled = std::find(disable_corrector_.begin(), disable_corrector_.end(),
                                        index - 1) != disable_corrector_.end();
        if (index > 0 && !disabled && last_sample_.defined()) {
            sample = corrector(m, index);
        }
        std::rotate(outputs_.begin(), outputs_.begin() + 1, outputs_.end());
        outputs_.back() = m;
        const int order =
            lower_order_final_ ? static_cast<int>(std::min<int64_t>(order_, n - index)) : order_;
        this_order_ = std::min(order, lower_order_nums_ + 1);
        last_sample_ = sample;
        const at::Tensor prev = predictor(sample, index);
        if (lower_order_nums_ < order_) {
            ++lower_order_nums_;
        }
        return {prev.to(out.scalar_type()),
                x0_of(out.to(at::kFloat), sample_in.to(at::kFloat), index).to(out.scalar_type())};
    }

    at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise,
                         int64_t index) const override {
        return add_noise_sigmas(sigmas_, index, x0, noise);
    }

  private:
    at::Tensor lambda_at(int64_t index) const { return log_snr(sigmas_[index]); }

    // What the solver works on: the data prediction (predict_x0) or the noise prediction.
    at::Tensor convert(const at::Tensor& out, const at::Tensor& sample, int64_t index) const {
        if (predict_x0_) {
            return x0_of(out, sample, index);
        }
        const auto [alpha, sigma] = alpha_sigma(sigmas_[index]);
        if (prediction_type_ == "epsilon") {
            return out;
        }
        if (prediction_type_ == "sample") {
            return (sample - alpha * out) / sigma;
        }
        return alpha * out + sigma * sample;  // v_prediction
    }

    at::Tensor x0_of(const at::Tensor& out, const at::Tensor& sample, int64_t index) const {
        const auto [alpha, sigma] = alpha_sigma(sigmas_[index]);
        if (prediction_type_ == "epsilon") {
            return (sample - sigma * out) / alpha;
        }
        if (prediction_type_ == "sample") {
            return out;
        }
        return alpha * sample - sigma * out;  // v_prediction
    }

    // The coefficients both updates share, for a step from sigmas[s0] to sigmas[t] with the
    // earlier outputs at sigmas[s0 - 1], sigmas[s0 - 2]: h, hh, h*phi_1(hh), B(h), the
    // differences D1 (newest first) and the vectors R (rows r_k^(i-1)) and b of the linear
    // system for the weights rho.
    struct Update {
        at::Tensor alpha_t, sigma_t, sigma_s0, alpha_s0, h_phi_1, b_h, r, b;
        std::vector<at::Tensor> d1;
    };

    Update update(int64_t t, int64_t s0, int order) const {
        Update u;
        std::tie(u.alpha_t, u.sigma_t) = alpha_sigma(sigmas_[t]);
        std::tie(u.alpha_s0, u.sigma_s0) = alpha_sigma(sigmas_[s0]);
        const at::Tensor lambda_s0 = lambda_at(s0);
        const at::Tensor h = lambda_at(t) - lambda_s0;
        // m0: the newest output (at sigmas[s0]); the earlier ones before it in outputs_.
        const size_t newest = outputs_.size() - 1;
        const at::Tensor& m0 = outputs_[newest];
        std::vector<at::Tensor> rks;
        for (int i = 1; i < order; ++i) {
            const at::Tensor rk = (lambda_at(s0 - i) - lambda_s0) / h;
            rks.push_back(rk);
            u.d1.push_back((outputs_[newest - i] - m0) / rk);
        }
        rks.push_back(at::ones({}, at::kFloat));
        const at::Tensor rk_all = at::stack(rks);
        const at::Tensor hh = predict_x0_ ? -h : h;
        u.h_phi_1 = at::expm1(hh);
        at::Tensor h_phi_k = u.h_phi_1 / hh - 1;
        u.b_h = bh1_ ? hh : at::expm1(hh);
        double factorial = 1;
        std::vector<at::Tensor> rows, bs;
        for (int i = 1; i <= order; ++i) {
            rows.push_back(at::pow(rk_all, i - 1));
            bs.push_back(h_phi_k * factorial / u.b_h);
            factorial *= i + 1;
            h_phi_k = h_phi_k / hh - 1 / factorial;
        }
        u.r = at::stack(rows);
        u.b = at::stack(bs);
        return u;
    }

    // x_t before the higher-order terms: the first-order (DPM-Solver) step.
    at::Tensor first_order(const Update& u, const at::Tensor& x, const at::Tensor& m0) const {
        return predict_x0_ ? (u.sigma_t / u.sigma_s0) * x - (u.alpha_t * u.h_phi_1) * m0
                           : (u.alpha_t / u.alpha_s0) * x - (u.sigma_t * u.h_phi_1) * m0;
    }

    at::Tensor scale(const Update& u) const {
        return (predict_x0_ ? u.alpha_t : u.sigma_t) * u.b_h;
    }

    // sum_k rhos[k] * d1[k], contracted as diffusers does it (the rounding follows).
    static at::Tensor weighted(const at::Tensor& rhos, const std::vector<at::Tensor>& d1) {
        return at::einsum("k,bkc...->bc...",
                          {rhos.slice(0, 0, static_cast<int64_t>(d1.size())), at::stack(d1, 1)});
    }

    // UniP: from sigmas[index] to sigmas[index + 1].
    at::Tensor predictor(const at::Tensor& x, int64_t index) const {
        const Update u = update(index + 1, index, this_order_);
        const at::Tensor x_t = first_order(u, x, outputs_.back());
        if (u.d1.empty()) {
            return x_t;
        }
        const at::Tensor rhos =
            this_order_ == 2
                ? at::full({1}, 0.5, at::kFloat)
                : at::linalg_solve(u.r.slice(0, 0, -1).slice(1, 0, -1), u.b.slice(0, 0, -1));
        return x_t - scale(u) * weighted(rhos, u.d1);
    }

    // UniC: the sample at sigmas[index], redone from the previous step's sample with the model
    // output `m` just computed there.
    at::Tensor corrector(const at::Tensor& m, int64_t index) const {
        const Update u = update(index, index - 1, this_order_);
        const at::Tensor& m0 = outputs_.back();
        const at::Tensor x_t = first_order(u, last_sample_, m0);
        const at::Tensor rhos =
            this_order_ == 1 ? at::full({1}, 0.5, at::kFloat) : at::linalg_solve(u.r, u.b);
        const at::Tensor d1_t = m - m0;
        const at::Tensor last = rhos[rhos.size(0) - 1] * d1_t;
        const at::Tensor corr = u.d1.empty() ? last : weighted(rhos, u.d1) + last;
        return x_t - scale(u) * corr;
    }

    int train_, offset_, order_;
    std::string spacing_;
    NoiseSchedule noise_;
    bool predict_x0_, lower_order_final_;
    bool bh1_ = false;
    bool final_sigma_min_ = false;
    std::vector<int64_t> disable_corrector_;
    std::string where_;
    std::vector<at::Tensor> outputs_;  // the last order_ converted outputs, newest last
    int lower_order_nums_ = 0;
    int this_order_ = 0;
    at::Tensor last_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_unipc(const JsonConfig& c, NoiseSchedule schedule) {
    return std::make_unique<UniPC>(c, schedule);
}

}  // namespace sds::sched
