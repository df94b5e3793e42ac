// write_original_checkpoint: a model's three networks under their original single-file names.
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
        add_module(
            tensors, text.module(), std::string(kOriginalTextPrefix) + "text_model.",
            [](const std::string& n) { return n; }, dtype);
    });
    save_safetensors(out, tensors, {{"format", "pt"}});
}

}  // namespace sds
