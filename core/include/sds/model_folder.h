#pragma once
// The one place that knows the diffusers folder layout of a Stable Diffusion 1.x/2.x or SDXL
// model:
//   model_index.json, scheduler/scheduler_config.json,
//   tokenizer/{vocab.json,merges.txt} or tokenizer/tokenizer.json,
//   text_encoder/{config.json,model[.fp16].safetensors},
//   SDXL also: tokenizer_2/..., text_encoder_2/{config.json,model[.fp16].safetensors},
//   unet|vae/{config.json,diffusion_pytorch_model[.fp16].safetensors}
// Sharded weights (NAME.safetensors.index.json) are followed. Without safetensors, PyTorch's
// files are used (text_encoder/pytorch_model[.fp16].bin, unet|vae/diffusion_pytorch_model
// [.fp16].bin), read without running them (sds/torch_checkpoint.h). A single-file checkpoint
// in the original SD layout (sds/original_layout.h; .safetensors or .ckpt) is opened as such a
// folder's configs plus the one file.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sds {

enum class Variant {
    Auto,  // full precision when present, else the .fp16 files
    Full,  // only the files without a variant suffix
    Fp16,  // prefer .fp16, fall back to full precision
};

struct ComponentFiles {
    std::string name;        // "unet"
    std::string class_name;  // "UNet2DConditionModel", from model_index.json
    std::filesystem::path dir;
    std::filesystem::path config;                // config.json / scheduler_config.json
    std::vector<std::filesystem::path> weights;  // safetensors files (shards in order)
    bool fp16_variant = false;
    // Set for a single-file checkpoint in the original layout: `weights` is that one file and
    // this component's tensors are the ones under this prefix ("model.diffusion_model.").
    std::string original_prefix;
};

// What a component's weight files hold, from their headers alone.
struct WeightsSummary {
    std::vector<std::string> dtypes;  // distinct safetensors dtype names, sorted
    uint64_t parameters = 0;          // elements of floating-point tensors
};
WeightsSummary summarize_weights(const ComponentFiles& component);

// Settings a model works best with, from an optional sdstudio.json in its folder (ours; diffusers
// ignores it): {"guidance_scale": 3.0, "steps": 15, "sampler": "dpmpp_2m"}, every key optional.
// A model whose scheduler is LCMScheduler suggests its sampler and 4 steps, and 8.5 guidance
// when its UNet is guidance-distilled, where the file does not say. The studio starts a model's
// session with them; the CLI and GenerationRequest keep diffusers' defaults.
struct ModelHints {
    std::optional<double> guidance_scale;
    std::optional<int> steps;
    std::optional<std::string> sampler;  // one of sampler_names()
};

// Which Stable Diffusion a single file in the original layout is, by its text encoders.
enum class SingleFileKind {
    Unknown,
    SD1,   // CLIP under cond_stage_model.transformer.
    SD2,   // OpenCLIP under cond_stage_model.model.
    SDXL,  // conditioner.embedders.*
};

class ModelFolder {
  public:
    // Reads model_index.json and finds every component the pipeline needs; throws
    // sds::ModelError naming the file and what is missing.
    static ModelFolder open(const std::filesystem::path& dir, Variant variant = Variant::Auto);
    // A single-file SD 1.x, 2.x or SDXL (base) checkpoint in the original layout (what A1111
    // loads), with the configs, tokenizers and scheduler of `config_dir`: a diffusers folder,
    // weights optional (like diffusers' from_single_file(config=...)), SDXL's for an SDXL file.
    // The file is safetensors or a PyTorch checkpoint (.ckpt). Throws sds::ModelError naming the
    // file for one that lacks a component (the SDXL refiner, a LoRA, ...) or whose configs are
    // of the other family, sds::FileError for one that cannot be read.
    static ModelFolder open_single_file(const std::filesystem::path& file,
                                        const std::filesystem::path& config_dir);
    // Reads the header (or a .ckpt's pickle) only; throws sds::Error for a file it cannot read.
    static SingleFileKind single_file_kind(const std::filesystem::path& file);
    // The input channels of a single file's UNet, from its first convolution (9 for an
    // inpainting checkpoint, 4 for the others); 0 when the file has no such tensor. Reads the
    // header (or a .ckpt's pickle) only.
    static int64_t single_file_unet_in_channels(const std::filesystem::path& file);
    // A component folder of its own (a VAE chosen apart from the model): `dir`/config.json and
    // its weights found as in a model folder (safetensors before .bin, the fp16 variant as
    // `variant` says, shards). Throws sds::ModelError naming what is missing.
    static ComponentFiles component_folder(const std::filesystem::path& dir,
                                           const std::string& weights_stem,
                                           Variant variant = Variant::Auto);
    // A folder -> open(path, variant); a file -> open_single_file(path, config_dir).
    static ModelFolder open_any(const std::filesystem::path& path,
                                const std::filesystem::path& config_dir,
                                Variant variant = Variant::Auto);

    // Runs `load` (which reads this model's weights); for a single file, a ModelError from it
    // is rethrown saying where the configs came from, since a checkpoint of other sizes needs
    // other configs.
    void explain_load_errors(const std::function<void()>& load) const;

    // The folder, or for a single file the folder its configs come from.

    const std::filesystem::path& dir() const { return dir_; }
    // What was opened: the folder, or the single checkpoint file.
    const std::filesystem::path& source() const { return source_; }
    bool is_single_file() const { return source_ != dir_; }
    const std::string& pipeline_class() const { return pipeline_class_; }
    bool has(const std::string& name) const { return components_.count(name) != 0; }
    const ComponentFiles& component(const std::string& name) const;
    const std::map<std::string, ComponentFiles>& components() const { return components_; }

    // The prompts' tokenizer: tokenizer, or a refiner's tokenizer_2.
    std::filesystem::path tokenizer_dir() const {
        return is_refiner() ? tokenizer_2_dir() : dir_ / "tokenizer";
    }
    // SDXL: a second text encoder (CLIPTextModelWithProjection) and its tokenizer.
    bool is_xl() const { return has("text_encoder_2"); }
    // SDXL's refiner: the second text encoder and tokenizer alone.
    bool is_refiner() const { return is_xl() && !has("text_encoder"); }
    // The UNet's size conditioning ends in an aesthetic score in place of the target size
    // (model_index.json's requires_aesthetics_score, SDXL's refiner): 5 numbers, not 6.
    bool requires_aesthetics_score() const { return requires_aesthetics_score_; }
    std::filesystem::path tokenizer_2_dir() const { return dir_ / "tokenizer_2"; }
    // SDXL: no negative prompt means zero embeddings, not those of "" (model_index.json).
    bool force_zeros_for_empty_prompt() const { return force_zeros_for_empty_prompt_; }
    // The UNet takes the guidance as an input (its config's time_cond_proj_dim, latent
    // consistency models): it runs without classifier-free guidance and a negative prompt.
    bool guidance_distilled() const { return guidance_distilled_; }
    const ModelHints& hints() const { return hints_; }

  private:
    static ModelFolder read(const std::filesystem::path& dir, Variant variant, bool weights);
    std::filesystem::path dir_;
    std::filesystem::path source_;
    ModelHints hints_;
    std::string pipeline_class_;
    bool force_zeros_for_empty_prompt_ = false;
    bool requires_aesthetics_score_ = false;
    bool guidance_distilled_ = false;
    std::map<std::string, ComponentFiles> components_;
};

}  // namespace sds
