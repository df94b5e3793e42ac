#include "sds/clip_text_model.h"

#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/types.h>

#include "io/json_config.h"
#include "io/weights.h"
#include "nn/blocks.h"
#include "nn/module_utils.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"

namespace sds {

namespace tnn = torch::nn;
using sds::nn::Embedding;
using sds::nn::LayerNorm;
using sds::nn::Linear;

ClipTextConfig ClipTextConfig::from_file(const std::filesystem::path& path, bool with_projection) {
    JsonConfig j = JsonConfig::load(path);
    ClipTextConfig c;
    c.vocab_size = j.integer("vocab_size", c.vocab_size);
    c.hidden_size = j.integer("hidden_size", c.hidden_size);
    c.intermediate_size = j.integer("intermediate_size", c.intermediate_size);
    c.num_hidden_layers = j.integer("num_hidden_layers", c.num_hidden_layers);
    c.num_attention_heads = j.integer("num_attention_heads", c.num_attention_heads);
    c.max_position_embeddings = j.integer("max_position_embeddings", c.max_position_embeddings);
    c.hidden_act = j.string("hidden_act", c.hidden_act);
    c.layer_norm_eps = j.number("layer_norm_eps", c.layer_norm_eps);
    c.eos_token_id = j.integer("eos_token_id", c.eos_token_id);
    if (with_projection) {
        c.projection_dim = j.integer("projection_dim", 512);
        if (c.projection_dim <= 0) {
            j.fail("projection_dim", "must be positive");
        }
    }
    for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size},
                          {"hidden_size", c.hidden_size},
                          {"intermediate_size", c.intermediate_size},
                          {"num_hidden_layers", c.num_hidden_layers},
                          {"num_attention_heads", c.num_attention_heads},
                          {"max_position_embeddings", c.max_position_embeddings}}) {
        if (v <= 0) {
            j.fail(key, "must be positive (found " + std::to_string(v) + ")");
        }
    }
    if (c.hidden_size % c.num_attention_heads != 0) {
        j.fail("hidden_size", "(" + std::to_string(c.hidden_size) +
                                  ") must be divisible by num_attention_heads (" +
                                  std::to_string(c.num_attention_heads) + ")");
    }
    if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu") {
        j.fail("hidden_act", "'" + c.hidden_act + "' is not supported (quick_gelu, gelu)");
    }
    return c;
}

namespace {

struct ClipAttentionImpl : tnn::Module {
    explicit ClipAttentionImpl(const ClipTextConfig& c) : heads(c.num_attention_heads) {
        const int64_t h = c.hidden_size;
        q_proj = register_module("q_proj", Linear(h, h));
        k_proj = register_module("k_proj", Linear(h, h));
        v_proj = register_module("v_proj", Linear(h, h));
        out_proj = register_module("out_proj", Linear(h, h));
    }
    at::Tensor forward(const at::Tensor& x) {  // [B, L, H], causal
        const int64_t b = x.size(0), l = x.size(1), d = x.size(2) / heads;
        auto split = [&](const at::Tensor& t) { return t.view({b, l, heads, d}).transpose(1, 2); };
        at::Tensor o = at::scaled_dot_product_attention(split(q_proj(x)), split(k_proj(x)),
                                                        split(v_proj(x)), {}, 0.0,
                                                        /*is_causal=*/true);
        return out_proj(o.transpose(1, 2).reshape({b, l, heads * d}));
    }
    int64_t heads;
    Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(ClipAttention);

struct ClipMlpImpl : tnn::Module {
    explicit ClipMlpImpl(const ClipTextConfig& c) : quick_gelu(c.hidden_act == "quick_gelu") {
        fc1 = register_module("fc1", Linear(c.hidden_size, c.intermediate_size));
        fc2 = register_module("fc2", Linear(c.intermediate_size, c.hidden_size));
    }
    at::Tensor forward(const at::Tensor& x) {
        at::Tensor h = fc1(x);
        h = quick_gelu ? h * torch::sigmoid(1.702 * h) : torch::gelu(h);
        return fc2(h);
    }
    bool quick_gelu;
    Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ClipMlp);

LayerNorm layer_norm(const ClipTextConfig& c) {
    return LayerNorm(c.hidden_size, c.layer_norm_eps);
}

struct ClipLayerImpl : tnn::Module {
    explicit ClipLayerImpl(const ClipTextConfig& c) {
        self_attn = register_module("self_attn", ClipAttention(c));
        layer_norm1 = register_module("layer_norm1", layer_norm(c));
        mlp = register_module("mlp", ClipMlp(c));
        layer_norm2 = register_module("layer_norm2", layer_norm(c));
    }
    at::Tensor forward(at::Tensor x) {
        x = x + self_attn(layer_norm1(x));
        return x + mlp(layer_norm2(x));
    }
    ClipAttention self_attn{nullptr};
    LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
    ClipMlp mlp{nullptr};
};
TORCH_MODULE(ClipLayer);

struct ClipEmbeddingsImpl : tnn::Module {
    explicit ClipEmbeddingsImpl(const ClipTextConfig& c) {
        token_embedding =
            register_module("token_embedding", Embedding(c.vocab_size, c.hidden_size));
        position_embedding = register_module("position_embedding",
                                             Embedding(c.max_position_embeddings, c.hidden_size));
    }
    Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(ClipEmbeddings);

struct ClipEncoderImpl : tnn::Module {
    explicit ClipEncoderImpl(const ClipTextConfig& c) {
        layers = register_module("layers", tnn::ModuleList());
        for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
            layers->push_back(ClipLayer(c));
        }
    }
    tnn::ModuleList layers{nullptr};
};
TORCH_MODULE(ClipEncoder);

// Named as transformers' CLIPTextTransformer ("text_model." in the checkpoint).
struct ClipTextTransformerImpl : tnn::Module {
    explicit ClipTextTransformerImpl(const ClipTextConfig& c) {
        embeddings = register_module("embeddings", ClipEmbeddings(c));
        encoder = register_module("encoder", ClipEncoder(c));
        final_layer_norm = register_module("final_layer_norm", layer_norm(c));
    }
    ClipEmbeddings embeddings{nullptr};
    ClipEncoder encoder{nullptr};
    LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextTransformer);

// CLIPTextModelWithProjection's names: "text_model." and "text_projection.".
struct ClipWithProjectionImpl : tnn::Module {
    ClipWithProjectionImpl(ClipTextTransformer model, Linear projection) {
        text_model = register_module("text_model", std::move(model));
        text_projection = register_module("text_projection", std::move(projection));
    }
    ClipTextTransformer text_model{nullptr};
    Linear text_projection{nullptr};
};
TORCH_MODULE(ClipWithProjection);

}  // namespace

struct ClipTextModel::Impl {
    ClipTextConfig config;
    at::Tensor added;  // [n, hidden] rows for ids vocab_size.., or undefined
    ClipTextTransformer model{nullptr};
    ClipWithProjection with_projection{nullptr};  // holds `model` too, when projected
};

ClipTextModel::ClipTextModel(const ClipTextConfig& config) : impl_(std::make_unique<Impl>()) {
    impl_->config = config;
    impl_->model = ClipTextTransformer(config);
    if (config.projection_dim > 0) {
        impl_->with_projection = ClipWithProjection(
            impl_->model, Linear(config.hidden_size, config.projection_dim, /*bias=*/false));
        impl_->with_projection->eval();
    }
    impl_->model->eval();
}
ClipTextModel::~ClipTextModel() = default;
ClipTextModel::ClipTextModel(ClipTextModel&&) noexcept = default;
ClipTextModel& ClipTextModel::operator=(ClipTextModel&&) noexcept = default;

const ClipTextConfig& ClipTextModel::config() const {
    return impl_->config;
}

torch::nn::Module& ClipTextModel::module() {
    if (impl_->with_projection) {
        return *impl_->with_projection;
    }
    return *impl_->model;
}

int64_t ClipTextModel::parameter_count() const {
    return impl_->with_projection ? nn::count_parameters(*impl_->with_projection)
                                  : nn::count_parameters(*impl_->model);
}

void ClipTextModel::to(c10::Device device, c10::ScalarType dtype) {
    if (impl_->with_projection) {
        impl_->with_projection->to(device, dtype);
    } else {
        impl_->model->to(device, dtype);
    }
    if (impl_->added.defined()) {
        impl_->added = impl_->added.to(device, dtype);
    }
}

void ClipTextModel::set_added_embeddings(const at::Tensor& rows) {
    if (!rows.defined()) {
        impl_->added = at::Tensor();
        return;
    }
    const at::Tensor& w = impl_->model->embeddings->token_embedding->weight;
    if (rows.dim() != 2 || rows.size(1) != w.size(1)) {
        throw Error("added token embeddings must be [n, " + std::to_string(w.size(1)) +
                    "] for this text encoder");
    }
    impl_->added = rows.to(w.device(), w.scalar_type()).contiguous();
}

int64_t ClipTextModel::added_embeddings() const {
    return impl_->added.defined() ? impl_->added.size(0) : 0;
}

// Single files with an OpenCLIP text encoder: OpenCLIP's names, q/k/v stacked in one in_proj.
// SD 2.x files have one layer more than SD 2.x uses (diffusers drops it) and the projection and
// logit scale of CLIP's image side (unused for text conditioning); SDXL's second encoder uses
// its projection (stored transposed).
void ClipTextModel::load_openclip_weights(const WeightFiles& weights, const std::string& prefix) {
    const ClipTextConfig& c = impl_->config;
    const bool projected = static_cast<bool>(impl_->with_projection);
    LoadOptions opts;
    opts.prefix = prefix;
    opts.scope = prefix;
    opts.rename = original_openclip_key;
    for (const auto& name : weights.names()) {
        if (name.rfind(prefix, 0) == 0 &&
            openclip_unused(name.substr(prefix.size()), c.num_hidden_layers, projected)) {
            opts.may_ignore.insert(name);
        }
    }
    opts.config_hint = "text encoder config: hidden_size " + std::to_string(c.hidden_size) +
                       ", intermediate_size " + std::to_string(c.intermediate_size) +
                       ", num_hidden_layers " + std::to_string(c.num_hidden_layers) +
                       (projected ? ", projection_dim " + std::to_string(c.projection_dim) : "");
    load_weights_into(module(), weights, opts);
}

void ClipTextModel::load_weights(const std::vector<std::filesystem::path>& files,
                                 const std::string& original_prefix) {
    const ClipTextConfig& c = impl_->config;
    const WeightFiles weights(files);
    LoadOptions opts;
    if (weights.contains(original_prefix + "transformer.resblocks.0.attn.in_proj_weight")) {
        load_openclip_weights(weights, original_prefix);
        return;
    }
    if (impl_->with_projection) {  // SDXL's second encoder, from a diffusers folder
        opts.prefix = opts.scope = original_prefix;
        opts.may_ignore = {original_prefix + "text_model.embeddings.position_ids"};
        opts.config_hint = "text_encoder_2 config: hidden_size " + std::to_string(c.hidden_size) +
                           ", projection_dim " + std::to_string(c.projection_dim) +
                           ", num_hidden_layers " + std::to_string(c.num_hidden_layers);
        load_weights_into(*impl_->with_projection, weights, opts);
        return;
    }
    // Checkpoints name the tensors "text_model.embeddings..." (SD releases, transformers 4);
    // transformers 5 saves them without the "text_model." level. A single file holds the
    // same names under its prefix (the oldest without "text_model." too).
    opts.scope = original_prefix;
    opts.prefix =
        original_prefix + (weights.contains(original_prefix + "text_model.final_layer_norm.weight")
                               ? "text_model."
                               : "");
    // Older transformers saved the position ids buffer; it is always arange(77).
    opts.may_ignore = {opts.prefix + "embeddings.position_ids"};
    opts.config_hint = "text_encoder config: vocab_size " + std::to_string(c.vocab_size) +
                       ", hidden_size " + std::to_string(c.hidden_size) + ", intermediate_size " +
                       std::to_string(c.intermediate_size) + ", max_position_embeddings " +
                       std::to_string(c.max_position_embeddings);
    load_weights_into(*impl_->model, weights, opts);
}

ClipTextModel ClipTextModel::load(const ComponentFiles& component, c10::ScalarType dtype,
                                  c10::Device device) {
    ClipTextModel m(ClipTextConfig::from_file(
        component.config, component.class_name == "CLIPTextModelWithProjection"));
    m.to(device, dtype);  // then the weights converted into it, or used in place (same dtype, CPU)
    m.load_weights(component.weights, component.original_prefix);
    return m;
}

namespace {
// clip_skip up to `most`: for SD, every layer skipped leaves the embeddings (diffusers'
// hidden_states[0]); SDXL reads one state before the one clip_skip names.
void check_input(const ClipTextConfig& c, const at::Tensor& ids, int clip_skip, int most) {
    if (clip_skip < 0 || clip_skip > most) {
        throw Error("clip_skip " + std::to_string(clip_skip) + " is out of range 0.." +
                    std::to_string(most) + " for a text encoder of " +
                    std::to_string(c.num_hidden_layers) +
                    (c.num_hidden_layers == 1 ? " layer" : " layers"));
    }
    if (ids.dim() != 2) {
        throw Error("text encoder: token ids must be [batch, length]");
    }
    if (ids.size(1) > c.max_position_embeddings) {
        throw Error("text encoder: " + std::to_string(ids.size(1)) +
                    " tokens exceed max_position_embeddings " +
                    std::to_string(c.max_position_embeddings));
    }
}

// The embeddings (ids from vocab_size on take `added`'s rows), then `layers` layers.
at::Tensor run_layers(ClipTextTransformerImpl& m, const at::Tensor& ids, int64_t layers,
                      const at::Tensor& added, at::Tensor* after = nullptr,
                      int64_t after_layers = -1) {
    const auto device = m.final_layer_norm->weight.device();
    at::Tensor tokens = ids.to(device, at::kLong);
    at::Tensor positions = torch::arange(ids.size(1), tokens.options());
    const int64_t vocab = m.embeddings->token_embedding->weight.size(0);
    const int64_t top = vocab + (added.defined() ? added.size(0) : 0);
    at::Tensor words;
    if (top > vocab) {  // embeddings set: an id past them would read past the added rows
        if (tokens.max().item<int64_t>() >= top) {
            throw Error("text encoder: a token id is past the " + std::to_string(top) +
                        " embeddings");
        }
        const at::Tensor own = m.embeddings->token_embedding(tokens.clamp_max(vocab - 1));
        const at::Tensor extra = at::embedding(added, (tokens - vocab).clamp_min(0));
        words = at::where((tokens >= vocab).unsqueeze(-1), extra, own);
    } else {
        words = m.embeddings->token_embedding(tokens);
    }
    at::Tensor x = words + m.embeddings->position_embedding(positions).unsqueeze(0);  // [B, L, H]
    for (int64_t i = 0; i < layers; ++i) {
        if (i == after_layers) {
            *after = x;
        }
        x = m.encoder->layers->ptr<ClipLayerImpl>(i)->forward(x);
    }
    if (after_layers == layers) {
        *after = x;
    }
    return x;
}
}  // namespace

at::Tensor ClipTextModel::encode(const at::Tensor& ids, int clip_skip) const {
    const ClipTextConfig& c = impl_->config;
    check_input(c, ids, clip_skip, static_cast<int>(c.num_hidden_layers));
    const nn::GradOnlyInTraining grad(*impl_->model);
    auto& m = *impl_->model;
    return m.final_layer_norm(run_layers(m, ids, c.num_hidden_layers - clip_skip, impl_->added));
}

ClipTextModel::Encoding ClipTextModel::encode_xl(const at::Tensor& ids, int clip_skip) const {
    const ClipTextConfig& c = impl_->config;
    check_input(c, ids, clip_skip, static_cast<int>(c.num_hidden_layers) - 1);
    const nn::GradOnlyInTraining grad(*impl_->model);
    auto& m = *impl_->model;
    Encoding out;
    const at::Tensor last =
        m.final_layer_norm(run_layers(m, ids, c.num_hidden_layers, impl_->added, &out.hidden,
                                      c.num_hidden_layers - 1 - clip_skip));
    const at::Tensor tokens = ids.to(last.device(), at::kLong);
    // The end token's position: the first eos_token_id, or the highest id for configs saved
    // with eos_token_id 2 (transformers' rule).
    const at::Tensor at_end = c.eos_token_id == 2
                                  ? tokens.argmax(-1)
                                  : (tokens == c.eos_token_id).to(at::kInt).argmax(-1);
    out.pooled = last.index({torch::arange(ids.size(0), tokens.options()), at_end});
    if (impl_->with_projection) {
        out.pooled = impl_->with_projection->text_projection(out.pooled);
    }
    return out;
}

}  // namespace sds
