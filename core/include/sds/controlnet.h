#pragma once
// diffusers' ControlNetModel for SD 1.x/2.x and SDXL UNets: a copy of the UNet's encoder half
// that also reads a conditioning image (a scribble, edges, depth, a pose, ...) and gives the
// UNet a residual for each skip connection and one for the mid block (UNet::Residuals). One
// model, one thread at a time.
#include <filesystem>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "sds/unet.h"

namespace sds {

struct ControlNetConfig {
    UNetConfig unet;  // the encoder half's (its up_block_types are unused)
    int64_t conditioning_channels = 3;
    std::vector<int64_t> conditioning_embedding_out_channels = {16, 32, 96, 256};
    bool bgr = false;  // controlnet_conditioning_channel_order "bgr": the image's channels flipped
    bool global_pool_conditions = false;  // the residuals averaged over the picture (shuffle)

    // Reads a ControlNetModel's config.json; unsupported options are errors naming the file and
    // field.
    static ControlNetConfig from_file(const std::filesystem::path& config_json);
};

class ControlNet {
  public:
    explicit ControlNet(const ControlNetConfig& config);  // uninitialised weights, fp32, CPU
    ~ControlNet();
    ControlNet(ControlNet&&) noexcept;
    ControlNet& operator=(ControlNet&&) noexcept;

    // A diffusers ControlNetModel folder (config.json and its weights, as
    // ModelFolder::component_folder finds them), or one file (.safetensors, or a PyTorch
    // checkpoint: .pth, .ckpt, .bin) in the original ControlNet layout (A1111's ControlNet
    // extension's files: control_v11p_sd15_scribble.pth and the like; with or without
    // "control_model." before the names) or with diffusers' names, whose config is `unet`'s with
    // the conditioning embedding the file has (and global pooling for an SD 1.x/2.x file whose
    // name says "shuffle", as A1111 decides it); in `dtype` on `device`. Throws sds::FileError for
    // a path that is not there or cannot be read, sds::ModelError naming the file for one that
    // is not a ControlNet or does not fit `unet` (another cross-attention width, another latent
    // channel count, SDXL's added conditioning or not, other blocks).
    static ControlNet load(const std::filesystem::path& path, const UNetConfig& unet,
                           c10::Device device, c10::ScalarType dtype);

    // `original_prefix`: the files are in the original layout, the names under that prefix
    // ("control_model.", or "" for none); with `original` false, diffusers' names.
    void load_weights(const std::vector<std::filesystem::path>& files,
                      const std::string& original_prefix = "", bool original = false);
    void to(c10::Device device, c10::ScalarType dtype);

    // sample [B, C, h, w] (the UNet's input, scaled), timesteps [B] (or one), context
    // [B, L, cross_attention_dim], cond [B, conditioning_channels, h x downscale(), w x
    // downscale()] in [0, 1] -> the residuals, each times `scale`; with `guess_mode`, times `scale`
    // and a factor from 0.1 for the first to 1 for the mid block's, evenly on a log scale
    // (diffusers' guess mode). `added`: SDXL's, as UNet::forward.
    UNet::Residuals forward(const at::Tensor& sample, const at::Tensor& timesteps,
                            const at::Tensor& context, const at::Tensor& cond, double scale,
                            bool guess_mode = false, const UNet::Added& added = {}) const;

    // How much smaller than the conditioning image the latents are (8 for SD's ControlNets): 2
    // to the number of conditioning_embedding_out_channels less one.
    int64_t downscale() const;
    const ControlNetConfig& config() const;
    int64_t parameter_count() const;
    c10::Device device() const;
    c10::ScalarType dtype() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sds
