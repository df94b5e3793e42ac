// write_original_checkpoint: a model's three networks under their original single-file names
// (the text encoder as OpenCLIP's for SD 2.x, whose text encoder is the one with gelu).
#include <array>
#include <map>

#include <ATen/ops/cat.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "sds/clip_text_model.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"
#include "sds/safetensors.h"

namespace sds {

namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// Every parameter and buffer of `module` under `prefix` + key_of(name), in `dtype`.
template <typename KeyOf>
void add_module(Named& out, torch::nn::Module& module, const std::string& prefix, KeyOf key_of,
                c10::ScalarType dtype) {
    auto add = [&](const std::string& name, const at::Tensor& t) {
        at::Tensor v = t.detach().to(at::kCPU, t.is_floating_point() ? dtype : t.scalar_type());
        if (prefix == kOriginalVaePrefix && v.dim() == 2 &&
            name.find(".attentions.") != std::string::npos) {
            v = v.unsqueeze(-1).unsqueeze(-1);  // the original's 1x1 convolutions
        }
        out.emplace_back(prefix + key_of(name), v.contiguous());
    };
    for (const auto& p : module.named_parameters()) {
        add(p.key(), p.value());
    }
    for (const auto& b : module.named_buffers()) {
        add(b.key(), b.value());
    }
}

// A text encoder as OpenCLIP names it, each attention's q, k and v stacked into one in_proj and
// the projection (SDXL's second encoder) transposed. For SD 2.x, the layer the model does not
// use (OpenCLIP's last) and the image-side projection are not written: the model does not have
// them. diffusers reads such files (single_file_test, sdxl_test, cli_test); A1111, which builds
// OpenCLIP from its own config, is not checked here.
void add_openclip(Named& out, ClipTextModel& text, const std::string& prefix,
                  c10::ScalarType dtype) {
    std::map<std::string, std::array<at::Tensor, 3>> stacked;
    for (const auto& p : text.module().named_parameters()) {
        const TensorSource source = original_openclip_key(p.key());
        at::Tensor v = p.value().detach().to(at::kCPU, dtype);
        if (source.transposed) {
            v = v.t();
        }
        if (source.parts == 1) {
            out.emplace_back(prefix + source.key, v.contiguous());
        } else {
            stacked[source.key].at(static_cast<size_t>(source.part)) = v;
        }
    }
    for (const auto& [key, qkv] : stacked) {
        out.emplace_back(prefix + key, at::cat({qkv[0], qkv[1], qkv[2]}, 0));
    }
}

// A text encoder with transformers' names (SD 1.x, SDXL's first encoder).
void add_clip(Named& out, ClipTextModel& text, const std::string& prefix, c10::ScalarType dtype) {
    add_module(
        out, text.module(), prefix + "text_model.", [](const std::string& n) { return n; }, dtype);
}

}  // namespace

void write_original_checkpoint(const ModelFolder& model, const std::filesystem::path& out,
                               c10::ScalarType dtype) {
    if (dtype != at::kHalf && dtype != at::kFloat) {
        throw Error("a single-file checkpoint is written in fp16 or fp32");
    }
    torch::NoGradGuard no_grad;
    if (model.is_refiner()) {
        throw ModelError(model.source().string() +
                         ": an SDXL refiner; SD Studio writes single files of SD 1.x, 2.x and "
                         "SDXL base models only");
    }
    Named tensors;
    model.explain_load_errors([&] {
        const auto& uc = model.component("unet");
        UNet unet(UNetConfig::from_file(uc.config));
        if (unet.config().time_cond_proj_dim > 0) {
            throw ModelError(uc.config.string() +
                             ": a guidance-distilled UNet (time_cond_proj_dim); the original "
                             "single-file layout has no place for its guidance embedding");
        }
        unet.load_weights(uc.weights, uc.original_prefix);
        add_module(
            tensors, unet.module(), kOriginalUNetPrefix,
            [&](const std::string& n) { return original_unet_key(n, unet.config()); }, dtype);
        const auto& vc = model.component("vae");
        Vae vae(VaeConfig::from_file(vc.config));
        vae.load_weights(vc.weights, vc.original_prefix);
        add_module(
            tensors, vae.module(), kOriginalVaePrefix,
            [&](const std::string& n) { return original_vae_key(n, vae.config()); }, dtype);
        auto text = ClipTextModel::load(model.component("text_encoder"));
        if (model.is_xl()) {
            add_clip(tensors, text, kOriginalXlTextPrefix, dtype);
            auto text_2 = ClipTextModel::load(model.component("text_encoder_2"));
            add_openclip(tensors, text_2, kOriginalXlText2Prefix, dtype);
        } else if (text.config().hidden_act == "gelu") {
            add_openclip(tensors, text, kOriginalOpenClipPrefix, dtype);
        } else {
            add_clip(tensors, text, kOriginalTextPrefix, dtype);
        }
    });
    save_safetensors(out, tensors, {{"format", "pt"}});
}

}  // namespace sds
