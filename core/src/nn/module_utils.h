#pragma once
// Small helpers shared by the model wrappers (ClipTextModel, UNet, Vae).
#include <string>
#include <vector>

#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

namespace sds::nn {

inline int64_t count_parameters(const torch::nn::Module& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters()) {
        n += p.numel();
    }
    return n;
}

// The device and dtype of a module's first parameter.
inline at::TensorOptions module_options(const torch::nn::Module& m) {
    const auto params = m.parameters();
    return params.empty() ? at::TensorOptions() : params.front().options();
}

// Inference never records gradients; a module put in train mode (core/train) does, unless the
// caller turned gradients off.
class GradOnlyInTraining {
  public:
    explicit GradOnlyInTraining(const torch::nn::Module& m)
        : mode_(m.is_training() && at::GradMode::is_enabled()) {}

  private:
    at::AutoGradMode mode_;
};

// "320, 640, 1280" for config hints in messages.
inline std::string join(const std::vector<int64_t>& values) {
    std::string out;
    for (int64_t v : values) {
        out += (out.empty() ? "" : ", ") + std::to_string(v);
    }
    return out;
}

}  // namespace sds::nn
