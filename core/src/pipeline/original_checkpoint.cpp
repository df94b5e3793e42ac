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

// SD 2.x's text encoder as OpenCLIP names it, each attention's q, k and v stacked into one
// in_proj. The layer the model does not use (OpenCLIP's last) and the image-side projection are
// not written: the model does not have them. diffusers reads such a file (single_file_test,
// cli_test); A1111, which builds OpenCLIP from its own config, is not checked here.
void add_openclip(Named& out, torch::nn::Module& text, c10::ScalarType dtype) {
    std::map<std::string, std::array<at::Tensor, 3>> stacked;
    for (const auto& p : text.named_parameters()) {
        const TensorSource source = original_openclip_key(p.key());
        const at::Tensor v = p.value().detach().to(at::kCPU, dtype);
        if (source.parts == 1) {
            out.emplace_back(kOriginalOpenClipPrefix + source.key, v.contiguous());
        } else {
            stacked[source.key].at(static_cast<size_t>(source.part)) = v;
        }
    }
    for (const auto& [key, qkv] : stacked) {
        out.emplace_back(kOriginalOpenClipPrefix + key, at::cat({qkv[0], qkv[1], qkv[2]}, 0));
    }
}

}  // namespace

void write_original_checkpoint(const ModelFolder& model, const std::filesystem::path& out,
                               c10::ScalarType dtype) {
    if (dtype != at::kHalf && dtype != at::kFloat) {
        throw Error("a single-file checkpoint is written in fp16 or fp32");
    }
    torch::NoGradGuard no_grad;
    Named tensors;
    model.explain_load_errors([&] {
        const auto& uc = model.component("unet");
        UNet unet(UNetConfig::from_file(uc.config));
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
        if (text.config().hidden_act == "gelu") {
            add_openclip(tensors, text.module(), dtype);
        } else {
            add_module(
                tensors, text.module(), std::string(kOriginalTextPrefix) + "text_model.",
                [](const std::string& n) { return n; }, dtype);
        }
    });
    save_safetensors(out, tensors, {{"format", "pt"}});
}

}  // namespace sds
