#pragma once
// The concrete schedulers (one file each), made by Scheduler::create.
#include <memory>

#include "sched/schedule_math.h"
#include "sds/scheduler.h"

namespace sds::sched {

std::unique_ptr<Scheduler> make_pndm(const JsonConfig& c);
std::unique_ptr<Scheduler> make_ddim(const JsonConfig& c);
// `schedule`: the sampler's noise schedule (Default: the config's use_*_sigmas decide, where
// the class has them; Euler ancestral has none).
std::unique_ptr<Scheduler> make_euler(const JsonConfig& c, bool ancestral, NoiseSchedule schedule);
// `sde`: DPM++ 2M SDE (algorithm_type sde-dpmsolver++), also where the config says so.
std::unique_ptr<Scheduler> make_dpmpp_2m(const JsonConfig& c, NoiseSchedule schedule, bool sde);
std::unique_ptr<Scheduler> make_unipc(const JsonConfig& c, NoiseSchedule schedule);
std::unique_ptr<Scheduler> make_heun(const JsonConfig& c, NoiseSchedule schedule);
std::unique_ptr<Scheduler> make_lcm(const JsonConfig& c);
// DPM2 (KDPM2DiscreteScheduler); `ancestral`: DPM2 a (KDPM2AncestralDiscreteScheduler).
std::unique_ptr<Scheduler> make_kdpm2(const JsonConfig& c, NoiseSchedule schedule, bool ancestral);
std::unique_ptr<Scheduler> make_lms(const JsonConfig& c, NoiseSchedule schedule);
std::unique_ptr<Scheduler> make_dpmpp_2s(const JsonConfig& c, NoiseSchedule schedule);

// diffusers' DDPM-style add_noise: sqrt(ac[t]) * x0 + sqrt(1 - ac[t]) * noise.
at::Tensor add_noise_alphas(const at::Tensor& alphas_cumprod, int64_t t, const at::Tensor& x0,
                            const at::Tensor& noise);

}  // namespace sds::sched
