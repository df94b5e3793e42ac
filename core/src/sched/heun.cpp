// Heun's method over sigmas, diffusers' HeunDiscreteScheduler: two model calls per step (an
// Euler step to the next sigma, then the average of both slopes from the step's start), so the
// schedule holds each timestep but the first twice; the last step is Euler's, to sigma 0.
#include <ATen/TensorOperators.h>

#include "sched/sigma_scheduler.h"

namespace sds::sched {
namespace {

class Heun : public SigmaScheduler {
  public:
    Heun(const JsonConfig& c, NoiseSchedule schedule) : SigmaScheduler(c, schedule) {}

    int order() const override { return 2; }

    void set_timesteps(int n) override {
        num_inference_steps_ = n;
        const Schedule s = schedule(n);
        // sigmas s0, s1, s1, ..., s(n-1), s(n-1), 0 and timesteps t0, t1, t1, ..., t(n-1),
        // t(n-1): the second call of a step sits at the step's end.
        std::vector<double> t{s.timesteps.front()}, sigmas{s.sigmas.front()};
        for (size_t i = 1; i < s.sigmas.size(); ++i) {
            t.insert(t.end(), 2, s.timesteps[i]);
            sigmas.insert(sigmas.end(), 2, s.sigmas[i]);
        }
        sigmas.push_back(0.0);
        sigmas_ = to_tensor(sigmas, at::kFloat);
        timesteps_ = to_tensor(t, at::kFloat);
        start_ = at::Tensor();
    }

    Step step(const at::Tensor& out, int64_t index, const at::Tensor& sample_in,
              const NoiseFn&) override {
        const at::Tensor sample = sample_in.to(at::kFloat);
        Step s;
        if (!start_.defined()) {  // first call of a step: Euler to the next sigma
            const at::Tensor sigma = sigmas_[index];
            s.pred_x0 = predicted_x0(out, sample, sigma);
            slope_ = (sample - s.pred_x0) / sigma;
            dt_ = sigmas_[index + 1] - sigma;
            start_ = sample;
            s.prev_sample = (sample + slope_ * dt_).to(out.scalar_type());
            return s;
        }
        // Second call, at the step's end: the mean of both slopes, from the step's start.
        const at::Tensor sigma_next = sigmas_[index];
        s.pred_x0 = predicted_x0(out, sample, sigma_next);
        const at::Tensor slope = (slope_ + (sample - s.pred_x0) / sigma_next) / 2;
        s.prev_sample = (start_ + slope * dt_).to(out.scalar_type());
        start_ = slope_ = dt_ = at::Tensor();
        return s;
    }

  private:
    at::Tensor start_, slope_, dt_;  // between a step's two calls: its start, slope and length
};

}  // namespace

std::unique_ptr<Scheduler> make_heun(const JsonConfig& c, NoiseSchedule schedule) {
    return std::make_unique<Heun>(c, schedule);
}

}  // namespace sds::sched
