// DPM-Solver-2 (Karras et al.'s "DPM2") over sigmas, diffusers' KDPM2DiscreteScheduler and
// KDPM2AncestralDiscreteScheduler: two model calls per step. The first is an Euler step from
// sigma to a midpoint sigma (the geometric mean of the step's ends); the second evaluates the
// slope there and takes the whole step with it from the step's start. The ancestral one steps
// to sigma_down and adds fresh noise of sigma_up after each second call. The schedule holds
// each step's midpoint timestep between its ends, so 2 * steps - 1 calls; the last step is
// Euler's, to sigma 0.
#include <algorithm>
#include <cmath>
#include <string>

#include <ATen/TensorIndexing.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/any.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/lerp.h>
#include <ATen/ops/roll.h>

#include "sched/sigma_scheduler.h"
#include "sds/error.h"

namespace sds::sched {
namespace {

using at::indexing::None;
using at::indexing::Slice;

// x[0], then x[1:] each twice, then x[-1] (diffusers' layout of per-call values).
at::Tensor expand(const at::Tensor& x) {
    return at::cat({x.index({Slice(None, 1)}), x.index({Slice(1, None)}).repeat_interleave(2),
                    x.index({Slice(-1, None)})});
}

class KDpm2 : public SigmaScheduler {
  public:
    KDpm2(const JsonConfig& c, NoiseSchedule schedule, bool ancestral)
        : SigmaScheduler(c, schedule), ancestral_(ancestral) {}

    int order() const override { return 2; }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        const Schedule s = schedule(n);
        std::vector<double> t = s.timesteps;
        const auto logs = log_sigmas(s.full);
        // With a noise schedule diffusers keeps numpy's float64 timesteps (Karras: rounded).
        const bool float64 = noise_ != NoiseSchedule::Default;
        if (float64) {
            for (size_t i = 0; i < t.size(); ++i) {
                t[i] = sigma_to_t(s.sigmas[i], logs);
                if (noise_ == NoiseSchedule::Karras) {
                    t[i] = round_half_even(t[i]);
                }
            }
        }
        std::vector<double> with_zero = s.sigmas;
        with_zero.push_back(0.0);
        const at::Tensor sig = to_tensor(with_zero, at::kFloat);
        at::Tensor mid;
        if (ancestral_) {
            at::Tensor next = sig.roll(-1);
            next.index_put_({-1}, 0.0);
            const at::Tensor up = (next.pow(2) * (sig.pow(2) - next.pow(2)) / sig.pow(2)).pow(0.5);
            at::Tensor down = (next.pow(2) - up.pow(2)).pow(0.5);
            down.index_put_({-1}, 0.0);
            mid = sig.log().lerp(down.log(), 0.5).exp();
            mid.index_put_({Slice(-2, None)}, 0.0);
            up_ = expand(up);
            down_ = expand(down);
        } else {
            mid = sig.log().lerp(sig.roll(1).log(), 0.5).exp();
        }
        sigmas_ = expand(sig);
        mid_ = expand(mid);
        // The midpoints' timesteps (float32 arithmetic, then the timesteps' type), between
        // the step ends' own.
        std::vector<double> t_mid;
        for (int64_t i = 0; i < mid.size(0); ++i) {
            t_mid.push_back(sigma_to_t_f32(mid[i].item<float>(), logs));
        }
        const size_t first_mid = ancestral_ ? 0 : 1;
        std::vector<double> all{t.front()};
        for (size_t i = 1; i < t.size(); ++i) {
            all.push_back(t_mid[first_mid + i - 1]);
            all.push_back(t[i]);
        }
        timesteps_ = to_tensor(all, float64 ? at::kDouble : at::kFloat);
        if (timesteps_.isnan().any().item<bool>()) {
            // DPM2 a where two sigmas are close (2 steps over linear betas: sigma_down is the
            // root of a negative number in float32) or far apart (the cosine schedule's first
            // sigma, 2e4: sigma_down is 0, the midpoint's log -inf): diffusers computes NaN.
            throw Error(std::string(sampler_name(sampler_)) + ": " + std::to_string(n) +
                        " steps on the schedule of " +
                        (where_.empty() ? std::string("the scheduler's defaults") : where_) +
                        " leave a step without a valid midpoint sigma (diffusers computes NaN "
                        "there); take more steps or another sampler");
        }
        start_ = at::Tensor();
    }

    at::Tensor input_sigma(int64_t index) const override {
        return first_call(index) ? sigmas_[index] : (ancestral_ ? mid_[index - 1] : mid_[index]);
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample,
              const NoiseFn& noise) override {
        Step s;
        if (first_call(index)) {  // Euler from the step's sigma to its midpoint
            const at::Tensor sigma = sigmas_[index];
            const at::Tensor sigma_mid = ancestral_ ? mid_[index] : mid_[index + 1];
            s.pred_x0 = predicted_x0(out, sample, sigma);
            const at::Tensor slope = (sample - s.pred_x0) / sigma;
            start_ = sample;
            s.prev_sample = sample + slope * (sigma_mid - sigma);
            return s;
        }
        // At the midpoint: its slope over the whole step, from the step's start.
        const at::Tensor sigma = sigmas_[index - 1];
        const at::Tensor sigma_mid = ancestral_ ? mid_[index - 1] : mid_[index];
        const at::Tensor sigma_to = ancestral_ ? down_[index - 1] : sigmas_[index];
        s.pred_x0 = predicted_x0(out, sample, sigma_mid);
        const at::Tensor slope = (sample - s.pred_x0) / sigma_mid;
        s.prev_sample = start_ + slope * (sigma_to - sigma);
        start_ = at::Tensor();
        if (ancestral_) {
            const at::Tensor z = noise(out.sizes(), out.scalar_type()).to(out.device());
            s.prev_sample = s.prev_sample + z * up_[index - 1];
        }
        return s;
    }

  private:
    // Calls alternate: even indices start a step (also after the img2img cut, t_start * 2).
    static bool first_call(int64_t index) { return index % 2 == 0; }

    bool ancestral_;
    at::Tensor mid_, up_, down_;  // per call, as sigmas_
    at::Tensor start_;            // between a step's two calls: its start
};

}  // namespace

std::unique_ptr<Scheduler> make_kdpm2(const JsonConfig& c, NoiseSchedule schedule, bool ancestral) {
    return std::make_unique<KDpm2>(c, schedule, ancestral);
}

}  // namespace sds::sched
