#include "pipeline/lora.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_set>

#include <ATen/ops/einsum.h>
#include <ATen/ops/kron.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>
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
        const at::Tensor& t = p.value();
        // A module's weight, or its bias (named as the weight is, for LyCORIS's diff_b).
        std::string name = p.key();
        const bool is_bias = ends_with(name, ".bias") && t.dim() == 1;
        if (is_bias) {
            name = name.substr(0, name.size() - 5) + ".weight";
        } else if (!ends_with(name, ".weight") || (t.dim() != 2 && t.dim() != 4)) {
            continue;  // norms; embeddings are 2-D but no LoRA names them
        }
        auto& into = is_bias ? biases_ : targets_;
        switch (component) {
            case Component::UNet:
                into["lora_unet_" + flat(name)] = t;
                into["unet." + bare(name)] = t;
                if (original_name) {
                    try {
                        into["lora_unet_" + flat(original_name(name))] = t;
                    } catch (const Error&) {
                        // a module the original layout does not have
                    }
                }
                break;
            case Component::TextEncoder: {
                // CLIPTextModel: "encoder.layers..." here, "text_model.encoder..." in LoRA names.
                const std::string full = name.rfind(text_model, 0) == 0 ? name : text_model + name;
                into["lora_te_" + flat(full)] = t;
                into["lora_te1_" + flat(full)] = t;
                into["text_encoder." + bare(name)] = t;
                into["text_encoder." + bare(full)] = t;  // saved with transformers 4
                break;
            }
            case Component::TextEncoder2:
                into["lora_te2_" + flat(name)] = t;
                into["text_encoder_2." + bare(name)] = t;
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

// The kinds of module a file can hold, told apart by their tensors' names (NAME.PART).
enum class Kind { Lora, LoHa, LoKr, Full };

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::Lora:
            return "LoRA";
        case Kind::LoHa:
            return "LoHa";
        case Kind::LoKr:
            return "LoKr";
        case Kind::Full:
            return "full";
    }
    return "";
}

struct Part {
    const char* suffix;
    Kind kind;
};
// kohya-ss and diffusers LoRA (LyCORIS's LoCon: lora_mid, a 3x3 convolution's Tucker core);
// LyCORIS LoHa (Hadamard product) and LoKr (Kronecker product), with Tucker cores (t1, t2) for
// 3x3 convolutions; LyCORIS full (the weight's and the bias's differences themselves).
constexpr Part kParts[] = {
    {"lora_down.weight", Kind::Lora},
    {"lora_up.weight", Kind::Lora},
    {"lora_mid.weight", Kind::Lora},
    {"lora_A.weight", Kind::Lora},
    {"lora_B.weight", Kind::Lora},
    {"hada_w1_a", Kind::LoHa},
    {"hada_w1_b", Kind::LoHa},
    {"hada_w2_a", Kind::LoHa},
    {"hada_w2_b", Kind::LoHa},
    {"hada_t1", Kind::LoHa},
    {"hada_t2", Kind::LoHa},
    {"lokr_w1", Kind::LoKr},
    {"lokr_w1_a", Kind::LoKr},
    {"lokr_w1_b", Kind::LoKr},
    {"lokr_w2", Kind::LoKr},
    {"lokr_w2_a", Kind::LoKr},
    {"lokr_w2_b", Kind::LoKr},
    {"lokr_t2", Kind::LoKr},
    {"diff", Kind::Full},
    {"diff_b", Kind::Full},
};

// One module's change: its tensors by part ("lora_down.weight", "hada_w1_a", ...) and what
// multiplies the change they make.
struct LoraModule {
    std::string name;  // the file's name for the module
    Kind kind = Kind::Lora;
    std::map<std::string, std::string> parts;  // part -> the tensor's name in the file
    std::optional<double> alpha;               // default: no scaling (LoRA: alpha = rank)
    bool rslora = false;                       // alpha / sqrt(rank) instead of alpha / rank
    bool has(const std::string& part) const { return parts.count(part) > 0; }
};

// LyCORIS's Tucker form of a convolution's factors: core [r1, r2, kh, kw] with a [r1, out] and
// b [r2, in] gives [out, in, kh, kw].
at::Tensor tucker(const at::Tensor& core, const at::Tensor& a, const at::Tensor& b) {
    return at::einsum("ijkl,ip,jr->prkl", {core, a, b});
}

at::Tensor product(const at::Tensor& a, const at::Tensor& b) {
    return at::mm(a.reshape({a.size(0), -1}), b.reshape({b.size(0), -1}));
}

// A module's change before its scale, and the rank alpha is divided by (none for a LoKr of two
// full matrices: A1111 and LyCORIS take its change whole).
struct Change {
    at::Tensor delta;  // the shape of the module's weight
    std::optional<int64_t> rank;
};

Change change(const LoraModule& m, const SafeTensorsFile& file, const at::Tensor& w,
              const std::string& where) {
    auto get = [&](const std::string& part) {
        return file.tensor(m.parts.at(part)).to(w.device(), at::kFloat);
    };
    auto need = [&](const std::string& part, const std::string& what = {}) {
        if (!m.has(part)) {
            throw ModelError(where + ": " + m.name + " has " + m.parts.begin()->first + " but no " +
                             (what.empty() ? part : what));
        }
    };
    auto shapes = [&] {
        std::string out;
        for (const auto& [part, tensor] : m.parts) {
            out += (out.empty() ? "" : ", ") + part + " " + shape_text(file.tensor(tensor).sizes());
        }
        return out;
    };
    Change c;
    if (m.kind == Kind::Lora) {
        const bool kohya = m.has("lora_down.weight") || m.has("lora_up.weight");
        const std::string down_part = kohya ? "lora_down.weight" : "lora_A.weight";
        const std::string up_part = kohya ? "lora_up.weight" : "lora_B.weight";
        need(down_part);
        need(up_part);
        const at::Tensor down = get(down_part);
        const at::Tensor up = get(up_part);
        const int64_t rank = down.dim() >= 2 ? down.size(0) : 0;
        c.rank = rank;
        if (m.has("lora_mid.weight")) {
            // LoCon's Tucker form: down [rank, in, 1, 1], mid [rank, rank, kh, kw] (the
            // convolution), up [out, rank, 1, 1].
            try {
                c.delta = tucker(get("lora_mid.weight"), up.reshape({up.size(0), -1}).t(),
                                 down.reshape({rank, -1}));
            } catch (const c10::Error&) {
                c.delta = at::Tensor();  // checked below
            }
        } else {
            const bool fits = rank > 0 && up.dim() >= 2 && up.size(1) == rank &&
                              up.numel() == up.size(0) * rank && up.size(0) == w.size(0) &&
                              down.numel() / rank * w.size(0) == w.numel();
            if (!fits) {
                throw ModelError(where + ": " + m.name + ": up " + shape_text(up.sizes()) +
                                 " and down " + shape_text(down.sizes()) +
                                 " do not make the model's weight " + shape_text(w.sizes()));
            }
            c.delta = product(up, down);
        }
    } else if (m.kind == Kind::Full) {
        need("diff");
        c.delta = get("diff");
    } else {
        try {
            if (m.kind == Kind::LoHa) {
                // (w1a @ w1b) * (w2a @ w2b), each factor pair a Tucker form where it has a core.
                for (const char* part : {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}) {
                    need(part);
                }
                auto half = [&](const std::string& i) {
                    const at::Tensor a = get("hada_w" + i + "_a");
                    const at::Tensor b = get("hada_w" + i + "_b");
                    return m.has("hada_t" + i) ? tucker(get("hada_t" + i), a, b) : product(a, b);
                };
                c.delta = half("1") * half("2");
                c.rank = file.tensor(m.parts.at("hada_w1_b")).size(0);
            } else {
                // kron(w1, w2), each a full matrix or a product (w2: a Tucker form with a core).
                const char* whole1 = "lokr_w1 (or lokr_w1_a and lokr_w1_b)";
                const char* whole2 = "lokr_w2 (or lokr_w2_a and lokr_w2_b)";
                if (!m.has("lokr_w1")) {
                    need("lokr_w1_a", whole1);
                    need("lokr_w1_b", whole1);
                }
                if (!m.has("lokr_w2")) {
                    need("lokr_w2_a", whole2);
                    need("lokr_w2_b", whole2);
                }
                at::Tensor w1 =
                    m.has("lokr_w1") ? get("lokr_w1") : product(get("lokr_w1_a"), get("lokr_w1_b"));
                const at::Tensor w2 =
                    m.has("lokr_w2")   ? get("lokr_w2")
                    : m.has("lokr_t2") ? tucker(get("lokr_t2"), get("lokr_w2_a"), get("lokr_w2_b"))
                                       : product(get("lokr_w2_a"), get("lokr_w2_b"));
                if (w2.dim() == 4) {
                    w1 = w1.reshape({w1.size(0), w1.size(1), 1, 1});
                }
                // at::kron views w2, and a Tucker form (einsum's result) is not contiguous.
                c.delta = at::kron(w1, w2.contiguous());
                for (const char* b : {"lokr_w2_b", "lokr_w1_b"}) {
                    if (m.has(b)) {
                        c.rank = file.tensor(m.parts.at(b)).size(0);
                        break;
                    }
                }
            }
        } catch (const c10::Error&) {
            c.delta = at::Tensor();  // the factors do not combine
        }
    }
    if (!c.delta.defined() || c.delta.numel() != w.numel() || c.delta.size(0) != w.size(0) ||
        (c.rank && *c.rank <= 0)) {
        throw ModelError(where + ": " + m.name + ": its " + kind_name(m.kind) + " weights (" +
                         shapes() + ") do not make the model's weight " + shape_text(w.sizes()));
    }
    c.delta = c.delta.reshape(w.sizes());
    return c;
}

}  // namespace

void LoraMerger::merge(const LoraRef& lora) {
    torch::NoGradGuard no_grad;
    const SafeTensorsFile file = SafeTensorsFile::open(lora.file);
    const std::string where = lora.file;
    const auto settings = peft_settings(file, where);
    std::map<std::string, LoraModule> by_name;
    std::vector<std::string> order;  // modules as the file lists them
    std::unordered_set<std::string> used;
    for (const auto& t : file.tensors()) {
        for (const auto& part : kParts) {
            const std::string suffix = std::string(".") + part.suffix;
            if (!ends_with(t.name, suffix)) {
                continue;
            }
            const std::string name = t.name.substr(0, t.name.size() - suffix.size());
            auto [it, added] = by_name.try_emplace(name);
            LoraModule& m = it->second;
            if (added) {
                m.name = name;
                m.kind = part.kind;
                order.push_back(name);
            } else if (m.kind != part.kind) {
                throw ModelError(where + ": " + name + " has both " + kind_name(m.kind) + " and " +
                                 kind_name(part.kind) + " tensors (" + part.suffix + ")");
            }
            m.parts[part.suffix] = t.name;
            used.insert(t.name);
            break;
        }
    }
    std::vector<LoraModule> modules;
    for (const auto& name : order) {
        LoraModule& m = by_name.at(name);
        if (file.contains(m.name + ".alpha")) {
            const at::Tensor a = file.tensor(m.name + ".alpha");
            if (a.numel() != 1) {
                throw ModelError(where + ": " + m.name + ".alpha is not one number");
            }
            m.alpha = a.to(at::kDouble).item<double>();
            used.insert(m.name + ".alpha");
        } else if (m.has("lora_A.weight") || m.has("lora_B.weight")) {
            // diffusers/peft: the alpha is in the adapter metadata.
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
        modules.push_back(std::move(m));
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
                         ": no LoRA modules (NAME.lora_down.weight and NAME.lora_up.weight, "
                         "lora_A and lora_B, or LyCORIS's hada_, lokr_ or diff weights), so this "
                         "is not a LoRA file");
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
        const Change c = change(m, file, w, where);
        // alpha / rank. A LoRA without an alpha has alpha = rank; a LoHa or LoKr without one,
        // or a LoKr of two full matrices, adds its change whole (as A1111 and LyCORIS do).
        const bool unet = m.name.rfind("lora_unet_", 0) == 0 || m.name.rfind("unet.", 0) == 0;
        double scale = unet ? lora.unet() : lora.weight;
        if (c.rank && (m.alpha || m.kind == Kind::Lora)) {
            const auto r = static_cast<double>(*c.rank);
            scale *= m.alpha.value_or(r) / (m.rslora ? std::sqrt(r) : r);
        }
        // The weight as loaded stays aside untouched (often the mapped file itself); the
        // module gets a new tensor with the change added.
        auto add_to = [&](at::Tensor& t, const at::Tensor& change) {
            if (saved.insert(t.unsafeGetTensorImpl()).second) {
                saved_.emplace_back(t, t.detach());
            }
            t.set_data(t.detach() + (change * scale).to(t.scalar_type()));
        };
        add_to(w, c.delta);
        if (m.has("diff_b")) {
            const auto b = biases_.find(m.name);
            const at::Tensor diff_b = file.tensor(m.parts.at("diff_b")).to(w.device(), at::kFloat);
            if (b == biases_.end() || !b->second.sizes().equals(diff_b.sizes())) {
                throw ModelError(where + ": " + m.name + ": diff_b " + shape_text(diff_b.sizes()) +
                                 (b == biases_.end() ? " for a module without a bias"
                                                     : " does not fit the model's bias " +
                                                           shape_text(b->second.sizes())));
            }
            add_to(b->second, diff_b);
        }
    }
}

}  // namespace sds
