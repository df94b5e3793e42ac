#pragma once
// diffusers' UNet2DConditionModel for SD 1.x/2.x and SDXL configs. One model, one thread at a
// time.
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

struct UNetConfig {
    int64_t in_channels = 4;
    int64_t out_channels = 4;
    int64_t sample_size = 64;
    std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
    std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                 "CrossAttnDownBlock2D", "DownBlock2D"};
    std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D",
                                               "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
    int64_t layers_per_block = 2;
    std::vector<int64_t> heads = {8, 8, 8, 8};  // per down block (attention_head_dim in SD 1.x)
    // Transformer blocks in each attention of a down block (SDXL: [1, 2, 10]); the up blocks
    // take them reversed, the mid block the last.
    std::vector<int64_t> transformer_layers = {1, 1, 1, 1};
    int64_t cross_attention_dim = 768;
    int64_t norm_num_groups = 32;
    double norm_eps = 1e-5;
    bool flip_sin_to_cos = true;
    double freq_shift = 0;
    bool use_linear_projection = false;
    bool upcast_attention = false;
    // SDXL's micro-conditioning (addition_embed_type "text_time"): a pooled text embedding and
    // six size/crop numbers, each number embedded sinusoidally in addition_time_embed_dim, all
    // projected (projection_class_embeddings_input_dim in) and added to the time embedding.
    bool text_time = false;
    int64_t addition_time_embed_dim = 0;
    int64_t projection_class_embeddings_input_dim = 0;
    // How many size numbers: 6 (original size, crop corner, target size), or 5 for SDXL's
    // refiner (an aesthetic score in place of the target size). Not in the UNet's config: the
    // model folder says (ModelFolder::requires_aesthetics_score).
    int64_t time_ids = 6;
    // A guidance-distilled UNet (latent consistency models): the time embedding also takes the
    // guidance scale, embedded sinusoidally in this width, and the pipeline runs no
    // classifier-free guidance. 0: none (time_cond_proj_dim null).
    int64_t time_cond_proj_dim = 0;
    // The pooled text embedding's width a text_time model expects.
    int64_t text_embeds_dim() const {
        return projection_class_embeddings_input_dim - time_ids * addition_time_embed_dim;
    }

    // Reads unet/config.json; unsupported options are errors naming the file and field.
    // `time_ids`: how many size numbers the model folder says (5 for a refiner).
    static UNetConfig from_file(const std::filesystem::path& config_json, int64_t time_ids = 6);
};

class UNet {
  public:
    explicit UNet(const UNetConfig& config);  // random init, fp32, CPU
    ~UNet();
    UNet(UNet&&) noexcept;
    UNet& operator=(UNet&&) noexcept;

    // `original_prefix`: the files are one single-file checkpoint in the original SD layout
    // with this model under that prefix (ComponentFiles::original_prefix).
    void load_weights(const std::vector<std::filesystem::path>& files,
                      const std::string& original_prefix = "");
    void to(c10::Device device, c10::ScalarType dtype);

    // SDXL's added conditioning (UNetConfig::text_time): text_embeds [B, text_embeds_dim()],
    // time_ids [B, 6] (original height and width, crop top and left, target height and width;
    // a refiner's [B, 5]: original size, crop corner and aesthetic score).
    // `guidance`: the guidance w a time_cond_proj_dim model is conditioned on (one, or one per
    // row; diffusers passes guidance scale - 1); without it such a model runs unconditioned on
    // it, as diffusers' does.
    struct Added {
        at::Tensor text_embeds, time_ids;
        at::Tensor guidance;
    };
    // A ControlNet's output (sds/controlnet.h): one tensor for each skip connection of the down
    // blocks (the conv_in output's first), and one for the mid block's output; each is added
    // there, as diffusers' down_block_additional_residuals and mid_block_additional_residual.
    // A T2I-Adapter's feature maps (sds/t2i_adapter.h) are `intrablock`, as diffusers'
    // down_intrablock_additional_residuals: one for each down block in order, added to a block
    // with attention after its last attention (before its downsampler), to one without after
    // the block; one left over of the mid block's shape is added to the mid block's output
    // (SDXL's adapters). Either kind may be empty.
    struct Residuals {
        std::vector<at::Tensor> down;
        at::Tensor mid;
        std::vector<at::Tensor> intrablock;
    };
    // The number of skip connections (the residuals' `down` count): 1 + layers_per_block per
    // block + a downsampler for each but the last.
    int64_t skip_count() const;

    // sample [B, C, H, W], timesteps [B] (or one), context [B, L, cross_attention_dim]
    // -> [B, out_channels, H, W], in the model's dtype. `added` is required by a text_time
    // model and refused by any other.
    at::Tensor forward(const at::Tensor& sample, const at::Tensor& timesteps,
                       const at::Tensor& context, const Added& added = {},
                       const Residuals* control = nullptr) const;

    const UNetConfig& config() const;
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
