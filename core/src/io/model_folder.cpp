#include "sds/model_folder.h"

#include <algorithm>

#include <set>
#include <string_view>

#include "io/json_config.h"
#include "sds/clip_text_model.h"
#include "sds/error.h"
#include "sds/original_layout.h"
#include "sds/safetensors.h"
#include "sds/scheduler.h"

namespace sds {

namespace fs = std::filesystem;

namespace {

struct ComponentKind {
    const char* name;
    const char* weights_stem;  // "" for components without weights
    const char* config_file;
};
// The components a StableDiffusionPipeline needs (safety_checker and feature_extractor are
// ignored).
constexpr ComponentKind kRequired[] = {
    {"text_encoder", "model", "config.json"},
    {"tokenizer", "", ""},
    {"unet", "diffusion_pytorch_model", "config.json"},
    {"vae", "diffusion_pytorch_model", "config.json"},
    {"scheduler", "", "scheduler_config.json"},
};
// SDXL's second text encoder and tokenizer: both or neither.
constexpr ComponentKind kXl[] = {
    {"text_encoder_2", "model", "config.json"},
    {"tokenizer_2", "", ""},
};

std::string rel(const fs::path& root, const fs::path& p) {
    return (root.filename() / p.lexically_relative(root)).string();
}

// Shards listed by an index file, in order of first appearance.
std::vector<fs::path> shards_of(const fs::path& index) {
    JsonConfig cfg = JsonConfig::load(index);
    if (!cfg.json().contains("weight_map") || !cfg.json()["weight_map"].is_object()) {
        cfg.fail("weight_map", "is missing or not an object");
    }
    std::vector<fs::path> out;
    for (const auto& [tensor, file] : cfg.json()["weight_map"].items()) {
        if (!file.is_string()) {
            cfg.fail("weight_map", "entry '" + tensor + "' is not a file name");
        }
        fs::path p = index.parent_path() / file.get<std::string>();
        if (std::find(out.begin(), out.end(), p) == out.end()) {
            out.push_back(p);
        }
    }
    for (const auto& p : out) {
        if (!fs::exists(p)) {
            throw ModelError(index.string() + ": lists the shard " + p.filename().string() +
                             " which is missing");
        }
    }
    return out;
}

void find_weights(const fs::path& root, ComponentFiles& c, const std::string& stem,
                  Variant variant) {
    // safetensors first, then PyTorch's own files (read without running them, as diffusers
    // falls back to them); within each, the variants in the order `variant` asks for.
    const std::string pickle_stem = stem == "model" ? "pytorch_model" : stem;
    auto try_variant = [&](bool fp16, bool pickle) {
        const std::string base = (pickle ? pickle_stem : stem) + (fp16 ? ".fp16" : "");
        const std::string ext = pickle ? ".bin" : ".safetensors";
        const fs::path single = c.dir / (base + ext);
        const fs::path index = c.dir / (base + ext + ".index.json");
        if (fs::exists(single)) {
            c.weights = {single};
        } else if (fs::exists(index)) {
            c.weights = shards_of(index);
        } else {
            return false;
        }
        c.fp16_variant = fp16;
        return true;
    };
    for (bool pickle : {false, true}) {
        const bool found =
            variant == Variant::Fp16   ? (try_variant(true, pickle) || try_variant(false, pickle))
            : variant == Variant::Full ? try_variant(false, pickle)
                                       : (try_variant(false, pickle) || try_variant(true, pickle));
        if (found) {
            return;
        }
    }
    throw ModelError(rel(root, c.dir) + ": no weights found (expected " + stem +
                     (variant == Variant::Full ? "" : "[.fp16]") + ".safetensors or " +
                     pickle_stem + (variant == Variant::Full ? "" : "[.fp16]") + ".bin)");
}

}  // namespace

ComponentFiles ModelFolder::component_folder(const fs::path& dir, const std::string& weights_stem,
                                             Variant variant) {
    ComponentFiles c;
    c.name = dir.filename().string();
    c.dir = dir;
    c.config = dir / "config.json";
    if (!fs::exists(c.config)) {
        throw ModelError(dir.string() + ": no config.json in the folder");
    }
    find_weights(dir.parent_path(), c, weights_stem, variant);  // messages name the folder
    return c;
}

ModelFolder ModelFolder::open(const fs::path& dir, Variant variant) {
    return read(dir, variant, /*weights=*/true);
}

ModelFolder ModelFolder::read(const fs::path& dir, Variant variant, bool weights) {
    if (!fs::is_directory(dir)) {
        throw ModelError(dir.string() + ": not a folder (a diffusers model folder is expected)");
    }
    ModelFolder m;
    m.dir_ = fs::absolute(dir).lexically_normal();
    if (m.dir_.filename().empty()) {
        m.dir_ = m.dir_.parent_path();
    }
    m.source_ = m.dir_;
    const fs::path index_path = m.dir_ / "model_index.json";
    if (!fs::exists(index_path)) {
        throw ModelError(dir.string() +
                         ": no model_index.json, so this is not a diffusers model folder");
    }
    JsonConfig index = JsonConfig::load(index_path);
    m.pipeline_class_ = index.string("_class_name", "");
    auto read_component = [&](const ComponentKind& kind) {
        const auto& entry = index.json()[kind.name];
        if (!entry.is_array() || entry.size() != 2 || !entry[1].is_string()) {
            if (entry.is_array() && entry.size() == 2 && entry[1].is_null()) {
                throw ModelError(rel(m.dir_, index_path) + ": has no '" + kind.name +
                                 "' (null there), which a Stable Diffusion pipeline needs");
            }
            index.fail(kind.name, "must be [library, class name] (found " + entry.dump() + ")");
        }
        ComponentFiles c;
        c.name = kind.name;
        c.class_name = entry[1].get<std::string>();
        c.dir = m.dir_ / kind.name;
        if (!fs::is_directory(c.dir)) {
            throw ModelError(rel(m.dir_, c.dir) + ": the folder of the component '" + kind.name +
                             "' named in model_index.json is missing");
        }
        if (*kind.config_file != '\0') {
            c.config = c.dir / kind.config_file;
            if (!fs::exists(c.config)) {
                throw ModelError(rel(m.dir_, c.config) + ": missing");
            }
        }
        if (weights && *kind.weights_stem != '\0') {
            find_weights(m.dir_, c, kind.weights_stem, variant);
        }
        m.components_.emplace(c.name, std::move(c));
    };
    // SDXL's refiner has the second text encoder and tokenizer alone (the first ones null).
    const auto named = [&](const char* name) {
        const auto& e = index.json()[name];
        return e.is_array() && e.size() == 2 && e[1].is_string();
    };
    const bool refiner = index.has("text_encoder_2") && named("text_encoder_2") &&
                         !named("text_encoder") && !named("tokenizer");
    for (const ComponentKind& kind : kRequired) {
        if (refiner && (std::string_view(kind.name) == "text_encoder" ||
                        std::string_view(kind.name) == "tokenizer")) {
            continue;
        }
        if (!index.has(kind.name)) {
            throw ModelError(rel(m.dir_, index_path) + ": the component '" + kind.name +
                             "' is missing (a Stable Diffusion pipeline needs text_encoder, "
                             "tokenizer, unet, vae and scheduler)");
        }
        read_component(kind);
    }
    if (index.has("text_encoder_2") || index.has("tokenizer_2")) {
        for (const ComponentKind& kind : kXl) {
            if (!index.has(kind.name)) {
                throw ModelError(rel(m.dir_, index_path) +
                                 ": has text_encoder_2 or tokenizer_2 but not both (an SDXL "
                                 "pipeline needs both)");
            }
            read_component(kind);
        }
        m.force_zeros_for_empty_prompt_ = index.boolean("force_zeros_for_empty_prompt", true);
        m.requires_aesthetics_score_ = index.boolean("requires_aesthetics_score", false);
    }
    for (const fs::path& tok :
         {m.tokenizer_dir(), m.is_xl() ? m.tokenizer_2_dir() : m.tokenizer_dir()}) {
        if (!(fs::exists(tok / "vocab.json") && fs::exists(tok / "merges.txt")) &&
            !fs::exists(tok / "tokenizer.json")) {
            throw ModelError(rel(m.dir_, tok) +
                             ": no tokenizer files (vocab.json + merges.txt, or tokenizer.json)");
        }
    }
    const fs::path hints_path = m.dir_ / "sdstudio.json";
    if (fs::exists(hints_path)) {
        const JsonConfig h = JsonConfig::load(hints_path);
        if (h.has("guidance_scale")) {
            const double g = h.number("guidance_scale", 0.0);
            if (!(g >= 0.0 && g <= 50.0)) {
                h.fail("guidance_scale", "must be between 0 and 50");
            }
            m.hints_.guidance_scale = g;
        }
        if (h.has("steps")) {
            const int64_t steps = h.integer("steps");
            if (steps < 1 || steps > 1000) {
                h.fail("steps", "must be between 1 and 1000");
            }
            m.hints_.steps = static_cast<int>(steps);
        }
        if (h.has("sampler")) {
            const std::string name = h.string("sampler");
            try {
                m.hints_.sampler = sampler_name(sampler_from_name(name));
            } catch (const Error& e) {
                h.fail("sampler", e.what());
            }
        }
    }
    const auto unet = m.components_.find("unet");
    m.guidance_distilled_ = unet != m.components_.end() && fs::exists(unet->second.config) &&
                            JsonConfig::load(unet->second.config).has("time_cond_proj_dim");
    // A latent consistency model (its scheduler LCM's) runs in a few steps with its own sampler,
    // a guidance-distilled one at the guidance its pipeline defaults to
    // (LatentConsistencyModelPipeline's 4 steps and 8.5); sdstudio.json says otherwise.
    const auto scheduler = m.components_.find("scheduler");
    if (scheduler != m.components_.end() && scheduler->second.class_name == "LCMScheduler") {
        m.hints_.sampler = m.hints_.sampler.value_or("lcm");
        m.hints_.steps = m.hints_.steps.value_or(4);
        if (m.guidance_distilled_) {
            m.hints_.guidance_scale = m.hints_.guidance_scale.value_or(8.5);
        }
    }
    return m;
}

namespace {

// What a single file's tensor names say about it.
struct OriginalLayoutCounts {
    size_t unet = 0, vae = 0, clip = 0, openclip = 0, xl_clip = 0, xl_openclip = 0, other_xl = 0;
    SingleFileKind kind() const {
        if (xl_clip > 0 || xl_openclip > 0 || other_xl > 0) {
            return SingleFileKind::SDXL;
        }
        if (openclip > 0) {
            return SingleFileKind::SD2;
        }
        return clip > 0 ? SingleFileKind::SD1 : SingleFileKind::Unknown;
    }
};

OriginalLayoutCounts count_original_layout(const SafeTensorsFile& checkpoint) {
    OriginalLayoutCounts n;
    for (const auto& t : checkpoint.tensors()) {
        auto starts = [&](const char* prefix) { return t.name.rfind(prefix, 0) == 0; };
        n.unet += starts(kOriginalUNetPrefix);
        n.vae += starts(kOriginalVaePrefix);
        n.clip += starts(kOriginalTextPrefix);
        n.openclip += starts(kOriginalOpenClipPrefix);
        n.xl_clip += starts(kOriginalXlTextPrefix);
        n.xl_openclip += starts(kOriginalXlText2Prefix);
        n.other_xl += starts("conditioner.embedders.") && !starts(kOriginalXlTextPrefix) &&
                      !starts(kOriginalXlText2Prefix);
    }
    return n;
}

}  // namespace

ModelFolder ModelFolder::open_single_file(const fs::path& file, const fs::path& config_dir) {
    const std::string where = file.string();
    if (!fs::is_regular_file(file)) {
        throw ModelError(where + ": no such file");
    }
    if (config_dir.empty()) {
        throw ModelError(where +
                         ": a single-file checkpoint needs a folder with the model's "
                         "configs and tokenizer (a diffusers folder; weights optional)");
    }
    const SafeTensorsFile checkpoint = SafeTensorsFile::open(file);
    const OriginalLayoutCounts n = count_original_layout(checkpoint);
    const bool xl = n.kind() == SingleFileKind::SDXL;
    if (n.unet == 0) {
        throw ModelError(where + ": no UNet tensors (" + kOriginalUNetPrefix +
                         "*), so this is not a Stable Diffusion checkpoint in the original "
                         "layout (a LoRA, a VAE or an embedding file?)");
    }
    if (xl && (n.xl_clip == 0 || n.xl_openclip == 0)) {
        throw ModelError(
            where + ": an SDXL checkpoint without " +
            (n.xl_clip == 0 ? std::string("the CLIP text encoder (") + kOriginalXlTextPrefix
                            : std::string("the OpenCLIP text encoder (") + kOriginalXlText2Prefix) +
            "*)" +
            (n.xl_clip == 0 && n.other_xl > 0
                 ? ": the SDXL refiner, which SD Studio does not read as a single file yet "
                   "(open its diffusers folder, stable-diffusion-xl-refiner-1.0)"
                 : "; SD Studio needs a checkpoint with all its models"));
    }
    if (n.vae == 0 || (!xl && n.clip + n.openclip == 0)) {
        throw ModelError(where + ": has no " +
                         (n.vae == 0 ? std::string("VAE (") + kOriginalVaePrefix
                                     : std::string("text encoder (") + kOriginalTextPrefix +
                                           "* or " + kOriginalOpenClipPrefix) +
                         "*) tensors; SD Studio needs a checkpoint with all three models");
    }
    if (n.clip > 0 && n.openclip > 0) {
        throw ModelError(where + ": has both a CLIP (" + kOriginalTextPrefix +
                         "*) and an OpenCLIP (" + kOriginalOpenClipPrefix +
                         "*) text encoder; which one is the model's is unclear");
    }
    ModelFolder m = read(config_dir, Variant::Auto, /*weights=*/false);
    if (m.is_xl() != xl) {
        throw ModelError(
            where + ": " + (xl ? "an SDXL" : "a Stable Diffusion 1.x/2.x") +
            " checkpoint, but the configs of " + config_dir.string() + " are " +
            (m.is_xl() ? "SDXL's" : "not SDXL's") + " (" +
            (xl ? "SDXL's are in models/sdxl-config" : "SD 1.5's are in models/sd1-config") + ")");
    }
    m.source_ = fs::absolute(file).lexically_normal();
    std::vector<std::pair<const char*, const char*>> prefixes = {{"unet", kOriginalUNetPrefix},
                                                                 {"vae", kOriginalVaePrefix}};
    if (xl) {
        prefixes.emplace_back("text_encoder", kOriginalXlTextPrefix);
        prefixes.emplace_back("text_encoder_2", kOriginalXlText2Prefix);
    } else {
        prefixes.emplace_back("text_encoder",
                              n.openclip > 0 ? kOriginalOpenClipPrefix : kOriginalTextPrefix);
    }
    for (const auto& [name, prefix] : prefixes) {
        ComponentFiles& c = m.components_.at(name);
        c.weights = {m.source_};
        c.original_prefix = prefix;
    }
    return m;
}

SingleFileKind ModelFolder::single_file_kind(const fs::path& file) {
    return count_original_layout(SafeTensorsFile::open(file)).kind();
}

int64_t ModelFolder::single_file_unet_in_channels(const fs::path& file) {
    const auto checkpoint = SafeTensorsFile::open(file);
    const std::string conv_in = std::string(kOriginalUNetPrefix) + "input_blocks.0.0.weight";
    if (!checkpoint.contains(conv_in) || checkpoint.info(conv_in).shape.size() != 4) {
        return 0;
    }
    return checkpoint.info(conv_in).shape[1];
}

ModelFolder ModelFolder::open_any(const fs::path& path, const fs::path& config_dir,
                                  Variant variant) {
    if (fs::is_directory(path)) {
        return open(path, variant);
    }
    const std::string ext = path.extension().string();
    const bool file_like = fs::exists(path) || ext == ".safetensors" || ext == ".ckpt";
    return file_like ? open_single_file(path, config_dir) : open(path, variant);
}

void ModelFolder::explain_load_errors(const std::function<void()>& load) const {
    try {
        load();
    } catch (const ModelError& e) {
        if (!is_single_file()) {
            throw;
        }
        throw ModelError(std::string(e.what()) + ". The configs came from " + dir_.string() +
                         "; a checkpoint whose models have other sizes needs the diffusers "
                         "configs that match it (--config DIR, or in the studio File → Settings → "
                         "Configs for single-file checkpoints)");
    }
}

WeightsSummary summarize_weights(const ComponentFiles& component) {
    std::set<std::string> dtypes;
    WeightsSummary s;
    // An OpenCLIP text encoder in a single file has more than the model uses: counted out.
    const bool openclip = is_openclip_prefix(component.original_prefix);
    const bool projected = component.class_name == "CLIPTextModelWithProjection";
    const int64_t openclip_layers =
        openclip ? ClipTextConfig::from_file(component.config, projected).num_hidden_layers : -1;
    for (const auto& path : component.weights) {
        const auto file = SafeTensorsFile::open(path);
        for (const auto& t : file.tensors()) {
            if (t.name.rfind(component.original_prefix, 0) != 0) {
                continue;  // another component of a single-file checkpoint
            }
            if (openclip && openclip_unused(t.name.substr(component.original_prefix.size()),
                                            openclip_layers, projected)) {
                continue;
            }
            dtypes.insert(dtype_name(t.dtype));
            const bool floating = t.dtype == DType::F16 || t.dtype == DType::BF16 ||
                                  t.dtype == DType::F32 || t.dtype == DType::F64 ||
                                  t.dtype == DType::F8_E4M3 || t.dtype == DType::F8_E5M2;
            s.parameters += floating ? t.numel() : 0;
        }
    }
    s.dtypes.assign(dtypes.begin(), dtypes.end());
    return s;
}

const ComponentFiles& ModelFolder::component(const std::string& name) const {
    auto it = components_.find(name);
    if (it == components_.end()) {
        throw ModelError(dir_.string() + ": has no component '" + name + "'");
    }
    return it->second;
}

}  // namespace sds
