#pragma once
// LoRA files merged into a loaded model's weights (private to core/pipeline).
//
// The format is kohya-ss's (what A1111 loads and most shared LoRAs are): each changed module
// is named by its path with "_" for "." under lora_unet_ (diffusers' UNet names, or for SDXL the
// original UNet's: input_blocks_4_1_...), lora_te_ / lora_te1_ (the first text encoder,
// transformers' names with text_model.) or lora_te2_ (SDXL's second), and carries
// NAME.lora_down.weight [rank, in(, kh, kw)], NAME.lora_up.weight [out, rank(, 1, 1)] and
// optionally NAME.alpha (default: rank). diffusers' own format (save_lora_weights) names them
// unet.MODULE / text_encoder.MODULE / text_encoder_2.MODULE with lora_A (down) and lora_B (up),
// the alpha (per module with alpha_pattern, over sqrt(rank) with rsLoRA) in the file's
// "lora_adapter_metadata". Merging adds weight * alpha / rank * up @ down to the module's weight,
// which is what diffusers' (peft's) LoRA layers add to the module's output. LyCORIS's LoHa
// (NAME.hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b; hada_t1/t2 Tucker cores) and LoKr
// (NAME.lokr_w1 or lokr_w1_a/b, lokr_w2 or lokr_w2_a/b, lokr_t2) files use the same names; their
// change is (w1a @ w1b) * (w2a @ w2b) or kron(w1, w2), over the rank as A1111 reads it. LoCon's
// Tucker form adds NAME.lora_mid.weight; LyCORIS full files hold the change itself (NAME.diff,
// and NAME.diff_b for the bias).
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "sds/generation_request.h"

namespace sds {

class LoraMerger {
  public:
    enum class Component { UNet, TextEncoder, TextEncoder2 };
    // Registers the weights of `module` (linear and convolution weights, and their biases) under
    // every name LoRA files use for them. `original_name` (UNet): the module's name in the
    // original layout.
    void add(Component component, torch::nn::Module& module,
             const std::function<std::string(const std::string&)>& original_name = {});

    // Puts back the weights as loaded, then merges `loras` in order. Throws sds::Error naming
    // the file for one that cannot be read, is of another format, or does not fit this model;
    // the weights are then as loaded and applied() is empty.
    void apply(const std::vector<LoraRef>& loras);
    const std::vector<LoraRef>& applied() const { return applied_; }

  private:
    void restore();
    void merge(const LoraRef& lora);
    std::unordered_map<std::string, at::Tensor> targets_;  // LoRA module name -> weight
    std::unordered_map<std::string, at::Tensor> biases_;   // LoRA module name -> bias
    // (weight, its data as loaded): merged weights get new data, and restoring points them back.
    std::vector<std::pair<at::Tensor, at::Tensor>> saved_;
    std::vector<LoraRef> applied_;
};

}  // namespace sds
