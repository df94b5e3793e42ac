#pragma once
// The CLIP text encoder of SD 1.x (transformers' CLIPTextModel): token + position embeddings,
// pre-norm transformer layers with causal self-attention, final layer norm; and SDXL's second
// encoder (CLIPTextModelWithProjection): the same with a projection of the pooled output.
// One model, one thread at a time.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace torch::nn {
class Module;
}

namespace sds {

struct ComponentFiles;

struct ClipTextConfig {
    int64_t vocab_size = 49408;
    int64_t hidden_size = 768;
    int64_t intermediate_size = 3072;
    int64_t num_hidden_layers = 12;
    int64_t num_attention_heads = 12;
    int64_t max_position_embeddings = 77;
    std::string hidden_act = "quick_gelu";  // or "gelu" (SD 2.x)
    double layer_norm_eps = 1e-5;
    // The end-of-text token, whose final state is the pooled output (2 in configs saved before
    // transformers fixed it: then the highest id is taken, as transformers does).
    int64_t eos_token_id = 49407;
    // Width of text_projection (CLIPTextModelWithProjection); 0: the model has none.
    int64_t projection_dim = 0;

    // Reads text_encoder/config.json; throws sds::ModelError naming the file and field.
    // `with_projection`: the model is a CLIPTextModelWithProjection (model_index.json says so;
    // every CLIP config has a projection_dim).
    static ClipTextConfig from_file(const std::filesystem::path& config_json,
                                    bool with_projection = false);
};

class WeightFiles;

class ClipTextModel {
  public:
    // Parameters initialised as LibTorch initialises them (random), fp32 on the CPU.
    explicit ClipTextModel(const ClipTextConfig& config);
    ~ClipTextModel();
    ClipTextModel(ClipTextModel&&) noexcept;
    ClipTextModel& operator=(ClipTextModel&&) noexcept;

    // Config + weights of a model folder's text_encoder component (fp32 or fp16 files),
    // converted to `dtype` on `device`.
    static ClipTextModel load(const ComponentFiles& component, c10::ScalarType dtype = at::kFloat,
                              c10::Device device = c10::Device(c10::kCPU));
    // `original_prefix`: the files are one single-file checkpoint in the original SD layout
    // with this model under that prefix (ComponentFiles::original_prefix): transformers' names
    // (SD 1.x, SDXL's first encoder), or OpenCLIP's (SD 2.x, SDXL's second encoder).
    void load_weights(const std::vector<std::filesystem::path>& files,
                      const std::string& original_prefix = "");
    void to(c10::Device device, c10::ScalarType dtype);

    // ids [B, L] int64 -> hidden states [B, L, hidden]. clip_skip as diffusers defines it:
    // 0 = the last layer's output (final layer norm applied, "last_hidden_state");
    // k > 0 = the output of the layer k before the last, with the final layer norm applied.
    // (A1111's "Clip skip: 2" is clip_skip 1 here.)
    at::Tensor encode(const at::Tensor& ids, int clip_skip = 0) const;

    // What SDXL takes from each of its encoders: `hidden`, the states leaving the layer before
    // the last (clip_skip k: k layers earlier), without the final layer norm ([B, L, hidden]);
    // `pooled`, the final-normed state at each end token ([B, hidden]), projected by
    // text_projection when the model has one ([B, projection_dim]).
    struct Encoding {
        at::Tensor hidden, pooled;
    };
    Encoding encode_xl(const at::Tensor& ids, int clip_skip = 0) const;

    // Rows for token ids past the vocabulary (textual inversion): id vocab_size + k embeds as
    // rows[k] ([n, hidden], converted to the model's dtype and device). An undefined tensor
    // takes them away. The model's own weights are not touched.
    void set_added_embeddings(const at::Tensor& rows);
    int64_t added_embeddings() const;  // how many rows are set

    const ClipTextConfig& config() const;
    int64_t parameter_count() const;

  public:
    // The module tree, for training (core/train): parameters, train()/eval(). In train mode the
    // forward passes record gradients; in eval mode (the default) they never do. Its names are
    // transformers' ("embeddings.", "encoder.", "final_layer_norm."; with a projection,
    // "text_model." before those and "text_projection.").
    torch::nn::Module& module();

  private:
    void load_openclip_weights(const WeightFiles& weights, const std::string& prefix);
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sds
