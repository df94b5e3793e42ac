// LMS (linear multistep over sigmas), diffusers' LMSDiscreteScheduler: each step adds the
// model's last slopes (up to 4), each weighted by the integral over the step of its Lagrange
// basis polynomial through the sigmas where those slopes were taken.
#include <algorithm>
#include <deque>

#include <ATen/TensorOperators.h>

#include "sched/sigma_scheduler.h"

namespace sds::sched {
namespace {

constexpr int kMaxOrder = 4;  // diffusers' step(order=4), the pipelines' default

class Lms : public SigmaScheduler {
  public:
    Lms(const JsonConfig& c, NoiseSchedule schedule) : SigmaScheduler(c, schedule) {}

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        Schedule s = schedule(n);
        s.sigmas.push_back(0.0);
        sigmas_ = to_tensor(s.sigmas, at::kFloat);
        timesteps_ = to_tensor(s.timesteps, at::kFloat);
        sigma_values_.assign(s.sigmas.begin(), s.sigmas.end());
        slopes_.clear();
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample_in,
              const NoiseFn&) override {
        const at::Tensor sample = sample_in.to(at::kFloat);
        const at::Tensor sigma = sigmas_[index];
        Step s;
        s.pred_x0 = predicted_x0(out, sample, sigma);
        slopes_.push_front((sample - s.pred_x0) / sigma);  // newest first
        if (slopes_.size() > kMaxOrder) {
            slopes_.pop_back();
        }
        // As diffusers: the order counts from the schedule's start, not from the first step
        // taken, so after an img2img cut the first steps weigh the slopes they have with the
        // coefficients of a higher-order polynomial.
        const int order = static_cast<int>(std::min<int64_t>(index + 1, kMaxOrder));
        const int used = std::min(order, static_cast<int>(slopes_.size()));
        at::Tensor sum;
        for (int j = 0; j < used; ++j) {
            const at::Tensor term = slopes_[j] * coefficient(order, index, j);
            sum = j == 0 ? term : sum + term;
        }
        s.prev_sample = (sample + sum).to(out.scalar_type());
        return s;
    }

  private:
    // The integral from sigma[t] to sigma[t + 1] of the Lagrange basis polynomial that is 1 at
    // sigma[t - j] and 0 at the other sigma[t - k], k < order: as diffusers computes it, with
    // scipy's quad, whose first 21-point Gauss-Kronrod sum (QUADPACK's qk21) already meets the
    // tolerance for a polynomial of degree below 4. The nodes, their order in the sum (the
    // Gauss nodes first) and the integrand's float32 arithmetic (diffusers evaluates it on
    // 0-dim float32 tensors) are kept, so the coefficient is diffusers' to the last bit; an
    // exact integration differs from it by about 1e-7 relative, which adds up over 50 steps.
    double coefficient(int order, int64_t t, int j) const {
        // Kronrod nodes on [-1, 1] (x[1], x[3], ... are the 10-point Gauss nodes) and weights.
        static constexpr double x[11] = {0.995657163025808080735527280689003,
                                         0.973906528517171720077964012084452,
                                         0.930157491355708226001207180059508,
                                         0.865063366688984510732096688423493,
                                         0.780817726586416897063717578345042,
                                         0.679409568299024406234327365114874,
                                         0.562757134668604683339000099272694,
                                         0.433395394129247190799265943165784,
                                         0.294392862701460198131126603103866,
                                         0.148874338981631210884826001129720,
                                         0.0};
        static constexpr double w[11] = {
            0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
            0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
            0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
            0.123491976262065851077208932634474, 0.134709217311473325928054001771707,
            0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
            0.149445554002916905664936468389821};
        static constexpr int kOrder[10] = {1, 3, 5, 7, 9, 0, 2, 4, 6, 8};
        const auto& s = sigma_values_;
        auto basis = [&](double tau) {
            float prod = 1.0f;
            for (int k = 0; k < order; ++k) {
                if (k != j) {
                    prod *= (static_cast<float>(tau) - s[t - k]) / (s[t - j] - s[t - k]);
                }
            }
            return static_cast<double>(prod);
        };
        const double a = s[t], b = s[t + 1];
        const double centre = 0.5 * (a + b), half = 0.5 * (b - a);
        double sum = w[10] * basis(centre);
        for (int i : kOrder) {
            const double d = half * x[i];
            sum += w[i] * (basis(centre - d) + basis(centre + d));
        }
        return sum * half;
    }

    std::vector<float> sigma_values_;  // the float32 sigmas the coefficients are made from
    std::deque<at::Tensor> slopes_;    // the last slopes (float32), newest first
};

}  // namespace

std::unique_ptr<Scheduler> make_lms(const JsonConfig& c, NoiseSchedule schedule) {
    return std::make_unique<Lms>(c, schedule);
}

}  // namespace sds::sched
