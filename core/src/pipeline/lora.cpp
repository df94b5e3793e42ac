#include "pipeline/lora.h"

#include <unordered_set>

#include <ATen/ops/mm.h>
#include <torch/types.h>

#include "sds/error.h"
#include "sds/safetensors.h"

namespace sds {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "down_blocks.0.attentions.0.proj_in.weight" -> "down_blocks_0_attentions_0_proj_in"
std::string flat(std::string name) {
    if (ends_with(name, ".weight")) {
        name.resize(name.size() - 7);
    }
    for (char& c : name) {
        if (c == '.') {
            c = '_';
        }
    }
    return name;
}

std::string shape_of(const at::Tensor& t) {
    std::string out = "[";
    for (int64_t i = 0; i < t.dim(); ++i) {
        out += (i ? ", " : "") + std::to_string(t.size(i));
    }
    return out + "]";
}

std::string some(const std::vector<std::string>& names) {
    std::string out;
    for (size_t i = 0; i < names.size() && i < 3; ++i) {
        out += (i ? ", " : "") + names[i];
    }
    return out + (names.size() > 3 ? ", ..." : "");
}

}  // namespace

void LoraMerger::add(Component component, torch::nn::Module& module,
                     const std::function<std::string(const std::string&)>& original_name) {
    const std::string text_model = "text_model.";
    for (const auto& p : module.named_parameters()) {
        const std::string& name = p.key();
        const at::Tensor& w = p.value();
        if (!ends_with(name, ".weight") || (w.dim() != 2 && w.dim() != 4)) {
            continue;  // biases, norms; embeddings are 2-D but no LoRA names them
        }
        switch (component) {
            case Component::UNet:
                targets_["lora_unet_" + flat(name)] = w;
                if (original_name) {
                    try {
                        targets_["lora_unet_" + flat(original_name(name))] = w;
                    } catch (const Error&) {
                        // a module the original layout does not have
                    }
                }
                break;
            case Component::TextEncoder: {
                // CLIPTextModel: "encoder.layers..." here, "text_model.encoder..." in LoRA names.
                const std::string full = name.rfind(text_model, 0) == 0 ? name : text_model + name;
                targets_["lora_te_" + flat(full)] = w;
                targets_["lora_te1_" + flat(full)] = w;
                break;
            }
            case Component::TextEncoder2:
                targets_["lora_te2_" + flat(name)] = w;
                break;
        }
    }
}

void LoraMerger::restore() {
    torch::NoGradGuard no_grad;
    for (auto& [weight, loaded] : saved_) {
        weight.set_data(loaded);
    }
    saved_.clear();
    applied_.clear();
}

void LoraMerger::apply(const std::vector<LoraRef>& loras) {
    restore();
    try {
        for (const auto& lora : loras) {
            merge(lora);
        }
    } catch (...) {
        restore();
        throw;
    }
    applied_ = loras;
}

void LoraMerger::merge(const LoraRef& lora) {
    torch::NoGradGuard no_grad;
    const SafeTensorsFile file = SafeTensorsFile::open(lora.file);
    const std::string where = lora.file;
    const std::string down_suffix = ".lora_down.weight";
    std::vector<std::string> modules, unknown;
    std::unordered_set<std::string> used;
    for (const auto& t : file.tensors()) {
        if (ends_with(t.name, down_suffix)) {
            modules.push_back(t.name.substr(0, t.name.size() - down_suffix.size()));
        }
    }
    for (const auto& m : modules) {
        used.insert(m + down_suffix);
        used.insert(m + ".lora_up.weight");
        used.insert(m + ".alpha");
    }
    for (const auto& t : file.tensors()) {
        if (!used.count(t.name)) {
            unknown.push_back(t.name);
        }
    }
    auto has = [&](const char* piece) {
        for (const auto& n : unknown) {
            if (n.find(piece) != std::string::npos) {
                return true;
            }
        }
        return false;
    };
    if (has("hada_") || has("lokr_")) {
        throw ModelError(where +
                         ": a LyCORIS LoHa/LoKr file; SD Studio merges LoRA (and LoCon) "
                         "files, whose modules have lora_down and lora_up weights");
    }
    if (has("dora_scale")) {
        throw ModelError(where + ": a DoRA file (dora_scale); SD Studio merges plain LoRAs");
    }
    if (has(".lora_A.") || has("lora.down.")) {
        throw ModelError(where +
                         ": a LoRA in diffusers' or peft's format (lora_A/lora_B); SD Studio reads "
                         "the kohya-ss/A1111 format (lora_down/lora_up)");
    }
    if (modules.empty()) {
        throw ModelError(where +
                         ": no LoRA modules (NAME.lora_down.weight and "
                         "NAME.lora_up.weight), so this is not a LoRA file");
    }
    if (!unknown.empty()) {
        throw ModelError(where + ": " + std::to_string(unknown.size()) +
                         " tensor(s) that are not a LoRA module's: " + some(unknown));
    }
    std::vector<std::string> missing;
    for (const auto& m : modules) {
        if (!targets_.count(m)) {
            missing.push_back(m);
        }
    }
    if (!missing.empty()) {
        throw ModelError(where + ": " + std::to_string(missing.size()) + " of " +
                         std::to_string(modules.size()) +
                         " LoRA modules are not in this model (a LoRA made for another model? "
                         "SD 1.x, SD 2.x and SDXL LoRAs do not fit each other): " +
                         some(missing));
    }
    std::unordered_set<const void*> saved;
    for (const auto& [weight, loaded] : saved_) {
        saved.insert(weight.unsafeGetTensorImpl());
    }
    for (const auto& m : modules) {
        at::Tensor& w = targets_.at(m);
        if (!file.contains(m + ".lora_up.weight")) {
            throw ModelError(where + ": " + m + " has lora_down but no lora_up weight");
        }
        const at::Tensor down = file.tensor(m + down_suffix).to(w.device(), at::kFloat);
        const at::Tensor up = file.tensor(m + ".lora_up.weight").to(w.device(), at::kFloat);
        const int64_t rank = down.dim() >= 2 ? down.size(0) : 0;
        const bool fits = rank > 0 && up.dim() >= 2 && up.size(1) == rank &&
                          up.numel() == up.size(0) * rank && up.size(0) == w.size(0) &&
                          down.numel() / rank * w.size(0) == w.numel();
        if (!fits) {
            throw ModelError(where + ": " + m + ": lora_up " + shape_of(up) + " and lora_down " +
                             shape_of(down) + " do not make the model's weight " + shape_of(w));
        }
        double alpha = static_cast<double>(rank);
        if (file.contains(m + ".alpha")) {
            const at::Tensor a = file.tensor(m + ".alpha");
            if (a.numel() != 1) {
                throw ModelError(where + ": " + m + ".alpha is not one number");
            }
            alpha = a.to(at::kDouble).item<double>();
        }
        const at::Tensor delta =
            at::mm(up.reshape({up.size(0), rank}), down.reshape({rank, -1})).reshape(w.sizes());
        // The weight as loaded stays aside untouched (often the mapped file itself); the
        // module gets a new tensor with the change added.
        if (saved.insert(w.unsafeGetTensorImpl()).second) {
            saved_.emplace_back(w, w.detach());
        }
        const double scale = lora.weight * alpha / static_cast<double>(rank);
        w.set_data(w.detach() + (delta * scale).to(w.scalar_type()));
    }
}

}  // namespace sds
