#include "pipeline/lora.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_set>

#include <ATen/ops/mm.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "io/weights.h"
#include "sds/error.h"
#include "sds/safetensors.h"

namespace sds {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "encoder.layers.0.self_attn.q_proj.weight" -> "encoder.layers.0.self_attn.q_proj"
std::string bare(const std::string& name) {
    return ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : name;
}

// "down_blocks.0.attentions.0.proj_in.weight" -> "down_blocks_0_attentions_0_proj_in"
std::string flat(const std::string& name) {
    std::string out = bare(name);
    std::replace(out.begin(), out.end(), '.', '_');
    return out;
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
                targets_["unet." + bare(name)] = w;
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
                targets_["text_encoder." + bare(name)] = w;
                targets_["text_encoder." + bare(full)] = w;  // saved with transformers 4
                break;
            }
            case Component::TextEncoder2:
                targets_["lora_te2_" + flat(name)] = w;
                targets_["text_encoder_2." + bare(name)] = w;
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

namespace {

// diffusers/peft's adapter settings for one component ("unet", "text_encoder", ...), from the
// file's "lora_adapter_metadata" (what save_lora_weights writes with the adapter's LoraConfig).
struct PeftSettings {
    std::optional<double> lora_alpha;
    std::map<std::string, double> alpha_pattern;
    bool use_rslora = false;
    bool use_dora = false;
};

std::map<std::string, PeftSettings> peft_settings(const SafeTensorsFile& file,
                                                  const std::string& where) {
    std::map<std::string, PeftSettings> out;
    const auto it = file.metadata().find("lora_adapter_metadata");
    if (it == file.metadata().end()) {
        return out;
    }
    try {
        const auto j = nlohmann::json::parse(it->second);
        for (const auto& [key, value] : j.items()) {
            const size_t dot = key.find('.');
            if (dot == std::string::npos) {
                continue;
            }
            PeftSettings& s = out[key.substr(0, dot)];
            const std::string field = key.substr(dot + 1);
            if (field == "lora_alpha" && value.is_number()) {
                s.lora_alpha = value.get<double>();
            } else if (field == "alpha_pattern" && value.is_object()) {
                for (const auto& [pattern, alpha] : value.items()) {
                    s.alpha_pattern[pattern] = alpha.get<double>();
                }
            } else if (field == "use_rslora" && value.is_boolean()) {
                s.use_rslora = value.get<bool>();
            } else if (field == "use_dora" && value.is_boolean()) {
                s.use_dora = value.get<bool>();
            }
        }
    } catch (const nlohmann::json::exception& e) {
        throw ModelError(where + ": its lora_adapter_metadata is not valid: " + e.what());
    }
    return out;
}

// One module's change: its down (A) and up (B) weights and what multiplies up @ down.
struct LoraModule {
    std::string name;  // the LoRA's name for the module
    std::string down, up;
    std::optional<double> alpha;  // default: the rank
    bool rslora = false;          // alpha / sqrt(rank) instead of alpha / rank
};

}  // namespace

void LoraMerger::merge(const LoraRef& lora) {
    torch::NoGradGuard no_grad;
    const SafeTensorsFile file = SafeTensorsFile::open(lora.file);
    const std::string where = lora.file;
    // kohya-ss: NAME.lora_down/lora_up.weight (+ NAME.alpha). diffusers/peft:
    // COMPONENT.MODULE.lora_A/lora_B.weight, the alpha in the adapter metadata.
    const std::pair<std::string, std::string> formats[] = {{".lora_down.weight", ".lora_up.weight"},
                                                           {".lora_A.weight", ".lora_B.weight"}};
    const auto settings = peft_settings(file, where);
    std::vector<LoraModule> modules;
    std::unordered_set<std::string> used;
    for (const auto& t : file.tensors()) {
        for (const auto& [down, up] : formats) {
            if (!ends_with(t.name, down)) {
                continue;
            }
            LoraModule m;
            m.name = t.name.substr(0, t.name.size() - down.size());
            m.down = t.name;
            m.up = m.name + up;
            if (file.contains(m.name + ".alpha")) {
                const at::Tensor a = file.tensor(m.name + ".alpha");
                if (a.numel() != 1) {
                    throw ModelError(where + ": " + m.name + ".alpha is not one number");
                }
                m.alpha = a.to(at::kDouble).item<double>();
                used.insert(m.name + ".alpha");
            } else if (down == ".lora_A.weight") {
                const std::string component = m.name.substr(0, m.name.find('.'));
                const auto s = settings.find(component);
                if (s != settings.end()) {
                    if (s->second.use_dora) {
                        throw ModelError(where +
                                         ": a DoRA adapter (use_dora); SD Studio merges "
                                         "plain LoRAs");
                    }
                    m.alpha = s->second.lora_alpha;
                    m.rslora = s->second.use_rslora;
                    const std::string inner = m.name.substr(component.size() + 1);
                    for (const auto& [pattern, alpha] : s->second.alpha_pattern) {
                        if (inner == pattern || ends_with(inner, "." + pattern)) {
                            m.alpha = alpha;
                        }
                    }
                }
            }
            used.insert(m.down);
            used.insert(m.up);
            modules.push_back(m);
        }
    }
    std::vector<std::string> unknown;
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
    if (has("dora_scale") || has("lora_magnitude_vector")) {
        throw ModelError(where + ": a DoRA file (dora_scale); SD Studio merges plain LoRAs");
    }
    if (has("lora.down.") || has("lora_linear_layer.")) {
        throw ModelError(where +
                         ": a LoRA in diffusers' old attention-processor format (lora.down, "
                         "lora_linear_layer); SD Studio reads the kohya-ss/A1111 format "
                         "(lora_down/lora_up) and diffusers' current one (lora_A/lora_B)");
    }
    if (modules.empty()) {
        throw ModelError(where +
                         ": no LoRA modules (NAME.lora_down.weight and NAME.lora_up.weight, or "
                         "lora_A and lora_B), so this is not a LoRA file");
    }
    if (!unknown.empty()) {
        throw ModelError(where + ": " + std::to_string(unknown.size()) +
                         " tensor(s) that are not a LoRA module's: " + list_some(unknown));
    }
    std::vector<std::string> missing;
    for (const auto& m : modules) {
        if (!targets_.count(m.name)) {
            missing.push_back(m.name);
        }
    }
    if (!missing.empty()) {
        throw ModelError(where + ": " + std::to_string(missing.size()) + " of " +
                         std::to_string(modules.size()) +
                         " LoRA modules are not in this model (a LoRA made for another model? "
                         "SD 1.x, SD 2.x and SDXL LoRAs do not fit each other): " +
                         list_some(missing));
    }
    std::unordered_set<const void*> saved;
    for (const auto& [weight, loaded] : saved_) {
        saved.insert(weight.unsafeGetTensorImpl());
    }
    for (const auto& m : modules) {
        at::Tensor& w = targets_.at(m.name);
        if (!file.contains(m.up)) {
            throw ModelError(where + ": " + m.name + " has " + m.down.substr(m.name.size() + 1) +
                             " but no " + m.up.substr(m.name.size() + 1));
        }
        const at::Tensor down = file.tensor(m.down).to(w.device(), at::kFloat);
        const at::Tensor up = file.tensor(m.up).to(w.device(), at::kFloat);
        const int64_t rank = down.dim() >= 2 ? down.size(0) : 0;
        const bool fits = rank > 0 && up.dim() >= 2 && up.size(1) == rank &&
                          up.numel() == up.size(0) * rank && up.size(0) == w.size(0) &&
                          down.numel() / rank * w.size(0) == w.numel();
        if (!fits) {
            throw ModelError(where + ": " + m.name + ": up " + shape_text(up.sizes()) +
                             " and down " + shape_text(down.sizes()) +
                             " do not make the model's weight " + shape_text(w.sizes()));
        }
        const auto r = static_cast<double>(rank);
        const double scale = lora.weight * m.alpha.value_or(r) / (m.rslora ? std::sqrt(r) : r);
        const at::Tensor delta =
            at::mm(up.reshape({up.size(0), rank}), down.reshape({rank, -1})).reshape(w.sizes());
        // The weight as loaded stays aside untouched (often the mapped file itself); the
        // module gets a new tensor with the change added.
        if (saved.insert(w.unsafeGetTensorImpl()).second) {
            saved_.emplace_back(w, w.detach());
        }
        w.set_data(w.detach() + (delta * scale).to(w.scalar_type()));
    }
}

}  // namespace sds
