#include "sched/schedule_math.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumprod.h>
#include <ATen/ops/flip.h>
#include <ATen/ops/linspace.h>
#include <ATen/ops/log.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sqrt.h>
#include <ATen/ops/tensor.h>

#include "sds/error.h"

namespace sds::sched {

JsonConfig load_config(const std::filesystem::path& path) {
    if (path.empty()) {
        return JsonConfig::from_json(nlohmann::json::object(), "(defaults)");
    }
    JsonConfig c = JsonConfig::load(path);
    // What diffusers' StableDiffusionPipeline does to a model's scheduler config when it loads
    // (its __init__ corrects two settings of old configs), before a sampler is made from it with
    // from_config. Only keys written in the file carry over to another scheduler class: the
    // values a class filled in itself are left out (its config's _use_default_values).
    nlohmann::json j = c.json();
    if (j.contains("steps_offset") && j["steps_offset"].is_number() && j["steps_offset"] != 1) {
        j["steps_offset"] = 1;
    }
    if (j.contains("clip_sample") && j["clip_sample"].is_boolean() && j["clip_sample"]) {
        j["clip_sample"] = false;
    }
    return JsonConfig::from_json(std::move(j), path.string());
}

void refuse_true(const JsonConfig& c, std::initializer_list<const char*> keys) {
    for (const char* key : keys) {
        if (c.boolean(key, false)) {
            c.fail(key, "= true is not supported");
        }
    }
}

at::Tensor alphas_cumprod(const JsonConfig& c, bool zero_snr, std::pair<double, double> range,
                          const char* default_schedule) {
    const int64_t t = c.integer("num_train_timesteps", 1000);
    const double start = c.number("beta_start", range.first);
    const double end = c.number("beta_end", range.second);
    const std::string schedule = c.string("beta_schedule", default_schedule);
    at::Tensor betas;
    if (c.has("trained_betas")) {
        std::vector<float> v;
        for (const auto& b : c.json().at("trained_betas")) {
            if (!b.is_number()) {
                c.fail("trained_betas", "must be a list of numbers");
            }
            v.push_back(b.get<float>());
        }
        betas = at::tensor(v);
    } else if (schedule == "linear") {
        betas = at::linspace(start, end, t, at::kFloat);
    } else if (schedule == "scaled_linear") {
        betas = at::linspace(std::sqrt(start), std::sqrt(end), t, at::kFloat).pow(2);
    } else if (schedule == "squaredcos_cap_v2") {
        // The cosine schedule (Nichol & Dhariwal): betas from alpha_bar(t) = cos²((t + 0.008) /
        // 1.008 · π/2), capped at 0.999, computed in double and stored as float32.
        const double pi = std::acos(-1.0);
        auto alpha_bar = [&](double x) {
            const double v = std::cos((x + 0.008) / 1.008 * pi / 2);
            return v * v;
        };
        std::vector<float> v;
        for (int64_t i = 0; i < t; ++i) {
            const double t1 = static_cast<double>(i) / t, t2 = static_cast<double>(i + 1) / t;
            v.push_back(static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999)));
        }
        betas = at::tensor(v);
    } else {
        c.fail("beta_schedule",
               "'" + schedule + "' is not supported (linear, scaled_linear, squaredcos_cap_v2)");
    }
    if (zero_snr && c.boolean("rescale_betas_zero_snr", false)) {
        // Lin et al.'s zero terminal SNR: shift and scale sqrt(alphā) so that its last entry
        // is 0 and its first unchanged, then back to betas (diffusers' arithmetic, in float32).
        at::Tensor root = at::cumprod(1.0 - betas, 0).sqrt();
        const at::Tensor first = root[0].clone(), last = root[-1].clone();
        root = (root - last) * (first / (first - last));
        const at::Tensor bar = root.pow(2);
        const at::Tensor alphas =
            at::cat({bar.slice(0, 0, 1), bar.slice(0, 1) / bar.slice(0, 0, -1)});
        betas = 1 - alphas;
    }
    return at::cumprod(1.0 - betas, 0);
}

std::vector<double> linspace(double start, double stop, int n) {
    std::vector<double> out(static_cast<size_t>(std::max(n, 0)));
    if (n == 1) {
        out[0] = start;
        return out;
    }
    const double step = (stop - start) / (n - 1);
    for (int i = 0; i < n; ++i) {
        out[i] = i * step + start;
    }
    if (n > 1) {
        out[n - 1] = stop;
    }
    return out;
}

double round_half_even(double x) {
    return std::nearbyint(x);
}

std::vector<double> full_sigmas(const at::Tensor& ac) {
    const at::Tensor s = ((1 - ac) / ac).pow(0.5).contiguous();
    const float* p = s.data_ptr<float>();
    return std::vector<double>(p, p + s.numel());
}

double interp_index(double x, const std::vector<double>& fp) {
    const double last = static_cast<double>(fp.size() - 1);
    if (x <= 0) {
        return fp.front();
    }
    if (x >= last) {
        return fp.back();
    }
    const auto j = static_cast<size_t>(std::floor(x));
    const double slope = (fp[j + 1] - fp[j]) / 1.0;
    return slope * (x - static_cast<double>(j)) + fp[j];
}

NoiseSchedule noise_schedule(const JsonConfig& c, NoiseSchedule requested, bool keys) {
    if (requested != NoiseSchedule::Default || !keys) {
        return requested;
    }
    NoiseSchedule out = NoiseSchedule::Default;
    const std::pair<const char*, NoiseSchedule> options[] = {
        {"use_karras_sigmas", NoiseSchedule::Karras},
        {"use_exponential_sigmas", NoiseSchedule::Exponential},
        {"use_beta_sigmas", NoiseSchedule::Beta}};
    for (const auto& [key, schedule] : options) {
        if (c.boolean(key, false)) {
            if (out != NoiseSchedule::Default) {
                c.fail(key,
                       "= true with another of use_karras_sigmas, use_exponential_sigmas, "
                       "use_beta_sigmas: only one can be set");
            }
            out = schedule;
        }
    }
    return out;
}

namespace {
// The continued fraction of I_x(a, b) (modified Lentz), for x below its mean-ish point
// (a + 1) / (a + b + 2), where it converges fast.
double beta_fraction(double x, double a, double b) {
    constexpr double tiny = 1e-300;
    const auto guard = [&](double v) { return std::abs(v) < tiny ? tiny : v; };
    // K = 1 + d1 / (1 + d2 / (1 + ...)), d(2m + 1) = -(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1)),
    // d(2m) = m(b - m)x / ((a + 2m - 1)(a + 2m)).
    double f = 1, c = 1, d = 0;
    for (int i = 1; i <= 2000; ++i) {
        const int m = i / 2;
        const double term = i % 2 == 0
                                ? m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
                                : -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
        d = 1 / guard(1 + term * d);
        c = guard(1 + term / c);
        const double delta = c * d;
        f *= delta;
        if (std::abs(delta - 1) < 1e-16) {
            break;
        }
    }
    return f;
}

// The regularized incomplete beta function I_x(a, b) (scipy's stats.beta.cdf).
double beta_cdf(double x, double a, double b) {
    if (x <= 0) {
        return 0;
    }
    if (x >= 1) {
        return 1;
    }
    if (x > (a + 1) / (a + b + 2)) {
        return 1 - beta_cdf(1 - x, b, a);
    }
    const double log_front = a * std::log(x) + b * std::log1p(-x) -
                             (std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b)) - std::log(a);
    return std::exp(log_front) / beta_fraction(x, a, b);
}

// Its inverse in x (scipy's stats.beta.ppf).
double beta_ppf(double p, double a, double b) {
    if (p <= 0) {
        return 0;
    }
    if (p >= 1) {
        return 1;
    }
    // The cdf rises monotonically on [0, 1]: bisect until the bracket is two neighbouring
    // doubles.
    double lo = 0, hi = 1;
    for (int i = 0; i < 1100; ++i) {
        const double mid = lo + (hi - lo) / 2;
        if (mid <= lo || mid >= hi) {
            break;
        }
        (beta_cdf(mid, a, b) < p ? lo : hi) = mid;
    }
    return std::abs(beta_cdf(lo, a, b) - p) < std::abs(beta_cdf(hi, a, b) - p) ? lo : hi;
}
}  // namespace

std::vector<double> noise_levels(NoiseSchedule schedule, double sigma_min, double sigma_max,
                                 int n) {
    std::vector<double> out;
    switch (schedule) {
        case NoiseSchedule::Karras: {
            const double rho = 7.0;
            const double min_inv = std::pow(sigma_min, 1 / rho);
            const double max_inv = std::pow(sigma_max, 1 / rho);
            for (double r : linspace(0, 1, n)) {
                out.push_back(std::pow(max_inv + r * (min_inv - max_inv), rho));
            }
            break;
        }
        case NoiseSchedule::Exponential:
            for (double l : linspace(std::log(sigma_max), std::log(sigma_min), n)) {
                out.push_back(std::exp(l));
            }
            break;
        case NoiseSchedule::Beta:
            for (double t : linspace(0, 1, n)) {
                out.push_back(sigma_min + beta_ppf(1 - t, 0.6, 0.6) * (sigma_max - sigma_min));
            }
            break;
        case NoiseSchedule::Default:
            throw std::logic_error("noise_levels: no schedule");
    }
    return out;
}

std::vector<float> log_sigmas(const std::vector<double>& sigmas) {
    std::vector<float> out;
    for (double s : sigmas) {
        out.push_back(std::log(static_cast<float>(s)));
    }
    return out;
}

namespace {
// _sigma_to_t's interpolation from a log sigma, in T's precision.
template <class T>
T t_from_log_sigma(T log_sigma, const std::vector<float>& log_sigmas) {
    // Last index whose log sigma is <= log_sigma (0 when none), at most len - 2.
    int64_t count = 0, best = 0, best_at = 0;
    for (size_t i = 0; i < log_sigmas.size(); ++i) {
        count += (log_sigma - static_cast<T>(log_sigmas[i])) >= 0 ? 1 : 0;
        if (count > best) {
            best = count, best_at = static_cast<int64_t>(i);
        }
    }
    const int64_t low = std::min<int64_t>(best_at, static_cast<int64_t>(log_sigmas.size()) - 2);
    const T lo = log_sigmas[low], hi = log_sigmas[low + 1];
    const T w = std::clamp((lo - log_sigma) / (lo - hi), T(0), T(1));
    const T a = (1 - w) * static_cast<T>(low);
    const T b = w * static_cast<T>(low + 1);
    return a + b;
}
}  // namespace

double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
    return t_from_log_sigma(std::log(std::max(sigma, 1e-10)), log_sigmas);
}

float sigma_to_t_f32(float sigma, const std::vector<float>& log_sigmas) {
    // torch's log (SLEEF), not glibc's: they differ in the last bit now and then.
    const float log_sigma =
        at::scalar_tensor(std::max(sigma, 1e-10f), at::kFloat).log().item<float>();
    return t_from_log_sigma(log_sigma, log_sigmas);
}

namespace {
// np.arange(start, 0, -ratio), rounded, minus 1: the "trailing" spacing.
std::vector<double> trailing_timesteps(double start, double ratio) {
    std::vector<double> t;
    const auto count = static_cast<int>(std::ceil(start / ratio));
    for (int i = 0; i < count; ++i) {
        t.push_back(round_half_even(start + i * -ratio) - 1);
    }
    return t;
}
}  // namespace

std::vector<double> spaced_timesteps(const std::string& spacing, int train, int n, int offset,
                                     const std::string& where) {
    std::vector<double> t;
    if (spacing == "linspace") {
        t = linspace(0, train - 1, n);
        std::reverse(t.begin(), t.end());
    } else if (spacing == "leading") {
        const int ratio = train / n;
        for (int i = n - 1; i >= 0; --i) {
            t.push_back(static_cast<double>(i) * ratio + offset);
        }
    } else if (spacing == "trailing") {
        t = trailing_timesteps(train, static_cast<double>(train) / n);
    } else {
        throw ModelError(where + ": timestep_spacing '" + spacing +
                         "' is not supported (linspace, leading, trailing)");
    }
    return t;
}

std::vector<double> multistep_timesteps(const std::string& spacing, int train, int n, int offset,
                                        const std::string& where, int last) {
    last = last < 0 ? train : last;
    std::vector<double> t;
    if (spacing == "linspace") {
        const auto l = linspace(0, last - 1, n + 1);
        for (int i = n; i >= 1; --i) {
            t.push_back(round_half_even(l[i]));
        }
    } else if (spacing == "leading") {
        const int ratio = last / (n + 1);
        for (int i = n; i >= 1; --i) {
            t.push_back(static_cast<double>(i) * ratio + offset);
        }
    } else if (spacing == "trailing") {
        t = trailing_timesteps(last, static_cast<double>(train) / n);
    } else {
        t = spaced_timesteps(spacing, train, n, offset, where);  // throws: an unknown spacing
    }
    return t;
}

std::vector<double> dpm_solver_sigmas(const at::Tensor& alphas_cumprod, std::vector<double>& t,
                                      int n, NoiseSchedule schedule, bool truncate,
                                      bool final_sigma_min) {
    const std::vector<double> full = full_sigmas(alphas_cumprod);
    std::vector<double> sigmas;
    if (schedule != NoiseSchedule::Default) {
        const auto logs = log_sigmas(full);
        sigmas = noise_levels(schedule, static_cast<float>(full.front()),
                              static_cast<float>(full.back()), n);
        const bool cut = truncate || schedule != NoiseSchedule::Karras;
        t.clear();
        for (double s : sigmas) {
            const double v = sigma_to_t(s, logs);
            t.push_back(cut ? std::trunc(v) : round_half_even(v));
        }
    } else {
        for (double v : t) {
            sigmas.push_back(interp_index(v, full));
        }
    }
    sigmas.push_back(final_sigma_min ? full.front() : 0.0);
    return sigmas;
}

int lambda_clipped(const at::Tensor& alphas_cumprod, double lambda_min) {
    if (std::isinf(lambda_min) && lambda_min < 0) {
        return 0;
    }
    const at::Tensor lambdas =
        at::log(at::sqrt(alphas_cumprod)) - at::log(at::sqrt(1 - alphas_cumprod));
    return static_cast<int>(
        at::searchsorted(at::flip(lambdas, {0}), at::Scalar(lambda_min)).item<int64_t>());
}

std::pair<at::Tensor, at::Tensor> alpha_sigma(const at::Tensor& sigma) {
    const at::Tensor alpha = 1 / (sigma.pow(2) + 1).pow(0.5);
    return {alpha, sigma * alpha};
}

at::Tensor log_snr(const at::Tensor& sigma) {
    const auto [alpha, sigma_t] = alpha_sigma(sigma);
    return at::log(alpha) - at::log(sigma_t);
}

at::Tensor add_noise_sigmas(const at::Tensor& sigmas, int64_t index, const at::Tensor& x0,
                            const at::Tensor& noise) {
    const auto [alpha, sigma] = alpha_sigma(sigmas.to(x0.device(), x0.scalar_type())[index]);
    return alpha * x0 + sigma * noise;
}

at::Tensor to_tensor(const std::vector<double>& v, at::ScalarType dtype) {
    return at::tensor(v, at::kDouble).to(dtype);
}

}  // namespace sds::sched
