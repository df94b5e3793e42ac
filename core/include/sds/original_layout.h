#pragma once
// Stable Diffusion's original single-file layout: the CompVis latent-diffusion module names that
// A1111 and most shared .safetensors checkpoints use. One file holds the UNet under
// "model.diffusion_model.", the VAE under "first_stage_model." and the text encoder under
// "cond_stage_model.transformer." (SD 1.x: CLIP, with transformers' names) or
// "cond_stage_model.model." (SD 2.x: OpenCLIP, with its own names and one more layer than SD 2.x
// uses); training leftovers (betas, model_ema.*, ...) sit beside them. SDXL (Stability's
// generative-models layout) has the same UNet and VAE names, the UNet's added conditioning as
// "label_emb.", and its two text encoders under "conditioner.embedders.0.transformer." (CLIP ViT-L,
// transformers' names) and "conditioner.embedders.1.model." (OpenCLIP ViT-bigG, with its text
// projection). These functions give, for a diffusers module name, the name the same tensor has
// there.
#include <filesystem>
#include <string>

#include <c10/core/ScalarType.h>

#include "sds/tensor_source.h"
#include "sds/unet.h"
#include "sds/vae.h"

namespace sds {

inline constexpr const char* kOriginalUNetPrefix = "model.diffusion_model.";
inline constexpr const char* kOriginalVaePrefix = "first_stage_model.";
inline constexpr const char* kOriginalTextPrefix = "cond_stage_model.transformer.";
inline constexpr const char* kOriginalOpenClipPrefix = "cond_stage_model.model.";
inline constexpr const char* kOriginalXlTextPrefix = "conditioner.embedders.0.transformer.";
inline constexpr const char* kOriginalXlText2Prefix = "conditioner.embedders.1.model.";
// Whether a component under `prefix` is in OpenCLIP's layout (SD 2.x's encoder, SDXL's second).
bool is_openclip_prefix(const std::string& prefix);

// Without the component's prefix. Throws sds::ModelError for a name that has no place in the
// original model (an SDXL or ControlNet module, say).
std::string original_unet_key(const std::string& name, const UNetConfig& config);
std::string original_vae_key(const std::string& name, const VaeConfig& config);
// A ControlNetModel name in the original ControlNet layout (lllyasviel's cldm.ControlNet, what
// A1111's ControlNet extension loads), without "control_model.": the encoder's as the UNet's,
// controlnet_cond_embedding.* as input_hint_block.N (the convolutions of a Sequential with
// SiLUs between: conv_in at 0, blocks.K at 2K + 2, conv_out after the last, at 2 x
// `cond_blocks` + 2), controlnet_down_blocks.K as zero_convs.K.0, controlnet_mid_block as
// middle_block_out.0. `cond_blocks`: the conditioning embedding's block count (6 for the usual
// 16, 32, 96, 256).
std::string original_controlnet_key(const std::string& name, const UNetConfig& config,
                                    int cond_blocks);
// A CLIPTextModel name ("encoder.layers.3.self_attn.k_proj.weight", "text_model." before it or
// not) in OpenCLIP's layout: "transformer.resblocks.3.attn.in_proj_weight", part 1 of 3. The
// projection
// of a CLIPTextModelWithProjection ("text_projection.weight") is OpenCLIP's "text_projection"
// transposed.
TensorSource original_openclip_key(const std::string& name);
// Whether an OpenCLIP key (without the prefix) is one the text encoder of `layers` layers does
// not use: the layers after those, the logit scale, and the text projection unless the model
// has one (SDXL's second encoder uses it; for SD 2.x it only serves CLIP's image matching).
bool openclip_unused(const std::string& key, int64_t layers, bool with_projection = false);

class ModelFolder;
// Writes a model (a diffusers folder, or a single file opened with its configs) as one
// single-file checkpoint in the original layout, the weights in `dtype` (fp16 or fp32), the
// VAE's attention projections as the 1x1 convolutions the original has and, for SD 2.x (a text
// encoder with gelu), the text encoder in OpenCLIP's layout; SDXL in its own layout: what A1111
// and diffusers' from_single_file load. Atomic (a temporary file renamed over `out`). The configs
// are not in the file: a model of other sizes than SD 1.5 needs its folder to be read again.
void write_original_checkpoint(const ModelFolder& model, const std::filesystem::path& out,
                               c10::ScalarType dtype);

}  // namespace sds
