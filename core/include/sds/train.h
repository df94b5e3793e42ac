#pragma once
// Training and fine-tuning on images with captions.
//
// From scratch (no base model): the VAE first (reconstruction + a small KL term), then its
// latents' scaling factor (1 / their standard deviation, as SD's 0.18215 was found), then the
// UNet and the text encoder together on the noise-prediction loss. Fine-tuning (a base model):
// the UNet only, on the base's noise schedule and prediction type (epsilon or v, as its
// scheduler config says), the rest copied (with the base folder's sdstudio.json hints). Both:
// AdamW, caption dropout (an empty caption, so classifier-free guidance has an unconditional model
// to work with), an EMA of the UNet weights (what is saved), resumable checkpoints, and the result
// in diffusers layout (safetensors) that this engine and diffusers both load.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sds/image.h"

namespace sds {

struct TrainExample {
    Image image;
    std::string caption;
};

// The sizes of a model made from scratch (SD 1.x architecture, small).
struct ScratchArchitecture {
    int resolution = 128;
    std::vector<int64_t> vae_channels = {16, 32, 64, 64};  // 8x downscale
    int vae_layers_per_block = 1;
    std::vector<int64_t> unet_channels = {48, 96, 96};
    std::vector<std::string> unet_down = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                          "DownBlock2D"};
    std::vector<std::string> unet_up = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
    int unet_layers_per_block = 1;
    int unet_heads = 4;
    int norm_groups = 16;
    int text_hidden = 64;
    int text_layers = 2;
    int text_heads = 2;
};

struct TrainOptions {
    std::filesystem::path out_dir;        // the model folder written (diffusers layout)
    std::filesystem::path base_model;     // fine-tune this model's UNet; empty: from scratch
    std::filesystem::path base_config;    // configs of a single-file base (ModelFolder::open_any)
    std::filesystem::path tokenizer_dir;  // from scratch: the tokenizer folder to use and copy
    ScratchArchitecture arch;
    int vae_steps = 1000;   // from scratch only
    int vae_crop = 64;      // the VAE trains on random crops this big (it is convolutional)
    int unet_steps = 2000;  // UNet (+ text encoder from scratch)
    int batch_size = 16;
    double learning_rate = 3e-4;
    double vae_learning_rate = 1e-3;
    double weight_decay = 1e-2;
    double caption_dropout = 0.1;
    double ema_decay = 0.999;
    double kl_weight = 1e-4;
    // Offset noise: each image's noise gets a constant per channel drawn with this standard
    // deviation. Without it the mean of the noisy latents gives the image's mean colour away,
    // so a model learns to copy it from the starting noise instead of reading it in the prompt
    // (plain backgrounds come out muddy). 0: off.
    double noise_offset = 0;
    // Min-SNR loss weighting (Hang et al. 2023): each sample's loss times min(SNR, gamma) / SNR,
    // so the nearly clean timesteps do not dominate. 0: off (every timestep weighs the same).
    double snr_gamma = 0;
    // LoRA (fine-tuning only): > 0 trains a LoRA of this rank on the UNet's attention
    // projections (attn1/attn2 to_q, to_k, to_v, to_out.0) instead of the whole UNet, and writes
    // it in kohya-ss's format (what A1111 and this engine load) as out_dir/NAME.safetensors,
    // NAME being out_dir's own name. Its down matrices start as Linear's default init, its up
    // matrices at zero (so training starts from the base). alpha <= 0: the rank (scale 1).
    int lora_rank = 0;
    double lora_alpha = 0;
    uint64_t seed = 0;
    int checkpoint_every = 200;  // steps (0: only at the end of each phase)
    bool resume = true;          // continue from out_dir/checkpoint when it is there
    std::string device = "auto";
};

struct TrainProgress {
    std::string phase;  // "vae" or "unet"
    int step = 0;       // steps done in this phase
    int total = 0;
    double loss = 0;  // running mean over the last steps
    double seconds_left = 0;
};

// A training picture from any image: scaled so its shorter side is `resolution` (Lanczos), then
// the middle `resolution` x `resolution` square cut out, as diffusers' training scripts prepare
// images (Resize, then CenterCrop), so nothing is squashed.
Image training_image(const Image& image, int resolution);

// The Min-SNR weight of each sample, given alphas_cumprod at its timestep: min(SNR, gamma) / SNR
// with SNR = a / (1 - a) for noise prediction, min(SNR, gamma) / (SNR + 1) for v-prediction (as
// diffusers' training scripts). gamma <= 0 gives ones.
at::Tensor min_snr_weights(const at::Tensor& alphas_cumprod_t, double gamma,
                           bool v_prediction = false);

// The LoRA file a LoRA run writes (TrainOptions::lora_rank): out_dir/NAME.safetensors.
std::filesystem::path lora_file(const TrainOptions& options);

// Throws sds::Error for bad options or data (naming the problem), sds::Cancelled when `cancel`
// became true (a checkpoint is written first, so a rerun resumes).
void train(const std::vector<TrainExample>& data, const TrainOptions& options,
           const std::function<void(const TrainProgress&)>& progress = {},
           const std::atomic<bool>* cancel = nullptr);

}  // namespace sds
