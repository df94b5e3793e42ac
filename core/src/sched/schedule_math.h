#pragma once
// What the schedulers share: the beta schedule read from a scheduler config, and the numpy
// arithmetic diffusers uses to place timesteps and sigmas (done in double, as numpy does).
#include <filesystem>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "io/json_config.h"
#include "sds/scheduler.h"

namespace sds::sched {

// A scheduler_config.json, or an empty one (every value takes the scheduler's default).
JsonConfig load_config(const std::filesystem::path& path);

// alphas_cumprod [T] float32 from num_train_timesteps, beta_start, beta_end, beta_schedule,
// trained_betas (with diffusers' defaults: 1000, 1e-4, 0.02, linear; Heun's and LCM's classes
// have their own, `range` and `schedule`), and, where `zero_snr` (the scheduler class has the
// option), rescale_betas_zero_snr.
at::Tensor alphas_cumprod(const JsonConfig& c, bool zero_snr = true,
                          std::pair<double, double> range = {0.0001, 0.02},
                          const char* schedule = "linear");

// np.linspace(start, stop, n) (endpoint included).
std::vector<double> linspace(double start, double stop, int n);
// np.round: halves to even.
double round_half_even(double x);
// ((1 - ac) / ac) ** 0.5 in float32, as doubles.
std::vector<double> full_sigmas(const at::Tensor& alphas_cumprod);

// Throws "FILE: KEY = true is not supported" for the first of `keys` the config sets true
// (options SD Studio does not have: refused rather than ignored).
void refuse_true(const JsonConfig& c, std::initializer_list<const char*> keys);
// np.interp(x, arange(len(fp)), fp)
double interp_index(double x, const std::vector<double>& fp);
// The noise schedule a scheduler class of diffusers runs: `requested` (the sampler's name) where
// it is not Default, else the one the config's use_karras_sigmas / use_exponential_sigmas /
// use_beta_sigmas sets (read only where `keys`: the class has those options; more than one is
// an error, as in diffusers).
NoiseSchedule noise_schedule(const JsonConfig& c, NoiseSchedule requested, bool keys = true);
// n sigmas from sigma_max down to sigma_min, spaced as diffusers' _convert_to_karras (rho 7),
// _convert_to_exponential (evenly in log) or _convert_to_beta (at the quantiles of
// Beta(0.6, 0.6), as scipy's stats.beta.ppf to double precision); `schedule` is not Default.
std::vector<double> noise_levels(NoiseSchedule schedule, double sigma_min, double sigma_max, int n);
// diffusers' _sigma_to_t: the fractional timestep of a sigma by log-sigma interpolation;
// log_sigmas = np.log(float32 sigmas) (float32 values).
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);
// The same with float32 torch tensors for sigma and log_sigmas (KDPM2's midpoints): float32
// arithmetic throughout.
float sigma_to_t_f32(float sigma, const std::vector<float>& log_sigmas);
std::vector<float> log_sigmas(const std::vector<double>& sigmas);

// Timesteps by the "linspace" / "leading" / "trailing" spacing of DDIM/PNDM/Euler (float64
// before the scheduler's own rounding/casting).
std::vector<double> spaced_timesteps(const std::string& spacing, int train_steps, int n,
                                     int steps_offset, const std::string& where);

// The timesteps of diffusers' multistep solvers (DPM-Solver, UniPC): "linspace" and "leading"
// place n + 1 points and drop the last; "trailing" as above. `last` (DPM-Solver's
// num_train_timesteps minus lambda_clipped(); -1: train_steps) is where the range ends.
std::vector<double> multistep_timesteps(const std::string& spacing, int train_steps, int n,
                                        int steps_offset, const std::string& where, int last = -1);
// DPM-Solver's sigmas (multistep and singlestep): interpolated at the timesteps `t`, or with a
// noise schedule n sigmas so spaced whose timesteps replace `t` (Karras: rounded, or with
// `truncate` cut to integers, as the multistep solver does on the cosine schedule; exponential
// and beta: cut to integers), then the final sigma (0, or the smallest with `final_sigma_min`).
std::vector<double> dpm_solver_sigmas(const at::Tensor& alphas_cumprod, std::vector<double>& t,
                                      int n, NoiseSchedule schedule, bool truncate,
                                      bool final_sigma_min);
// DPM-Solver's lambda_min_clipped: how many of the train timesteps, from the noisiest, have a
// log-SNR below `lambda_min` (torch.searchsorted on the flipped float32 lambdas); 0 for -inf.
int lambda_clipped(const at::Tensor& alphas_cumprod, double lambda_min);

// alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t (diffusers'
// _sigma_to_alpha_sigma_t), on 0-dim float32 tensors as diffusers computes them.
std::pair<at::Tensor, at::Tensor> alpha_sigma(const at::Tensor& sigma);
// The multistep solvers' add_noise: alpha_t * x0 + sigma_t * noise at sigmas[index].
// lambda = log(alpha_t) - log(sigma_t), the log signal-to-noise ratio of a sigma.
at::Tensor log_snr(const at::Tensor& sigma);
at::Tensor add_noise_sigmas(const at::Tensor& sigmas, int64_t index, const at::Tensor& x0,
                            const at::Tensor& noise);

at::Tensor to_tensor(const std::vector<double>& v, at::ScalarType dtype);

}  // namespace sds::sched
