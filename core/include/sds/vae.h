#pragma once
// diffusers' AutoencoderKL. One model, one thread at a time.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace torch::nn {
class Module;
}

namespace sds {

struct VaeConfig {
    int64_t in_channels = 3;
    int64_t out_channels = 3;
    int64_t latent_channels = 4;
    std::vector<int64_t> block_out_channels = {128, 256, 512, 512};
    int64_t layers_per_block = 2;
    int64_t norm_num_groups = 32;
    double scaling_factor = 0.18215;
    bool use_quant_conv = true;
    bool use_post_quant_conv = true;
    // SDXL's pipelines run such a VAE in fp32 when the model runs in fp16 (its activations
    // overflow fp16); diffusers' SD 1.x/2.x pipelines ignore the flag.
    bool force_upcast = true;

    static VaeConfig from_file(const std::filesystem::path& config_json);
    int64_t downscale() const { return int64_t(1) << (block_out_channels.size() - 1); }
};

class Vae {
  public:
    explicit Vae(const VaeConfig& config);  // random init, fp32, CPU
    ~Vae();
    Vae(Vae&&) noexcept;
    Vae& operator=(Vae&&) noexcept;

    // `original_prefix`: the files are one single-file checkpoint in the original SD layout
    // with this model under that prefix (ComponentFiles::original_prefix).
    // `original_layout`: the original names without a prefix (a VAE file of its own, as A1111's
    // "SD VAE" files are), when `original_prefix` is empty.
    void load_weights(const std::vector<std::filesystem::path>& files,
                      const std::string& original_prefix = "", bool original_layout = false);
    void to(c10::Device device, c10::ScalarType dtype);

    // Image [B, 3, H, W] in [-1, 1] -> the posterior's mean and logvar (clamped to [-30, 20]),
    // each [B, latent_channels, H/8, W/8]. Not scaled.
    std::pair<at::Tensor, at::Tensor> encode(const at::Tensor& image) const;
    // Latents (not scaled) [B, 4, h, w] -> image [B, 3, 8h, 8w], roughly in [-1, 1].
    at::Tensor decode(const at::Tensor& latents) const;

    const VaeConfig& config() const;
    int64_t parameter_count() const;
    c10::Device device() const;
    c10::ScalarType dtype() const;

  public:
    // The module tree, for training (core/train): parameters, train()/eval(). In train mode the
    // forward passes record gradients; in eval mode (the default) they never do.
    torch::nn::Module& module();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sds
