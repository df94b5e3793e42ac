#include "sds/unet.h"

#include <torch/types.h>

#include "io/json_config.h"
#include "io/weights.h"
#include "nn/blocks.h"
#include "nn/module_utils.h"
#include "nn/unet_parts.h"
#include "sds/error.h"
#include "sds/original_layout.h"

namespace sds {

UNetConfig UNetConfig::from_file(const std::filesystem::path& path, int64_t time_ids) {
    return nn::unet_config_from(JsonConfig::load(path), true, time_ids);
}

UNetConfig nn::unet_config_from(const JsonConfig& j, bool with_up_blocks, int64_t time_ids) {
    UNetConfig c;
    c.time_ids = time_ids;
    c.in_channels = j.integer("in_channels", c.in_channels);
    c.out_channels = j.integer("out_channels", c.out_channels);
    c.sample_size = j.integer("sample_size", c.sample_size);
    if (j.has("block_out_channels"))
        c.block_out_channels = j.integers("block_out_channels");
    if (j.has("down_block_types"))
        c.down_block_types = j.strings("down_block_types");
    if (with_up_blocks && j.has("up_block_types"))
        c.up_block_types = j.strings("up_block_types");
    c.layers_per_block = j.integer("layers_per_block", c.layers_per_block);
    c.cross_attention_dim = j.integer("cross_attention_dim", c.cross_attention_dim);
    c.norm_num_groups = j.integer("norm_num_groups", c.norm_num_groups);
    c.norm_eps = j.number("norm_eps", c.norm_eps);
    c.flip_sin_to_cos = j.boolean("flip_sin_to_cos", c.flip_sin_to_cos);
    c.freq_shift = j.number("freq_shift", c.freq_shift);
    c.use_linear_projection = j.boolean("use_linear_projection", c.use_linear_projection);
    c.upcast_attention = j.boolean("upcast_attention", c.upcast_attention);
    if (j.has("time_cond_proj_dim")) {
        c.time_cond_proj_dim = j.integer("time_cond_proj_dim");
        if (c.time_cond_proj_dim < 1) {
            j.fail("time_cond_proj_dim", "must be a positive width or null");
        }
    }

    const size_t n = c.block_out_channels.size();
    c.transformer_layers = j.has("transformer_layers_per_block")
                               ? j.integers("transformer_layers_per_block")
                               : std::vector<int64_t>{1};
    if (c.transformer_layers.size() == 1) {
        c.transformer_layers.assign(n, c.transformer_layers[0]);
    }
    if (c.transformer_layers.size() != n) {
        j.fail("transformer_layers_per_block",
               "must be one number or one per block (" + std::to_string(n) + ")");
    }
    for (int64_t v : c.transformer_layers) {
        if (v < 1) {
            j.fail("transformer_layers_per_block", "entries must be at least 1");
        }
    }
    if (j.has("addition_embed_type")) {
        if (j.string("addition_embed_type") != "text_time") {
            j.fail("addition_embed_type", "'" + j.string("addition_embed_type") +
                                              "' is not supported (text_time, as SDXL, or null)");
        }
        c.text_time = true;
        c.addition_time_embed_dim = j.integer("addition_time_embed_dim");
        c.projection_class_embeddings_input_dim =
            j.integer("projection_class_embeddings_input_dim");
        if (c.addition_time_embed_dim <= 0 || c.text_embeds_dim() <= 0) {
            j.fail("projection_class_embeddings_input_dim",
                   "(" + std::to_string(c.projection_class_embeddings_input_dim) +
                       ") must exceed " + std::to_string(c.time_ids) +
                       " x addition_time_embed_dim (" + std::to_string(c.addition_time_embed_dim) +
                       "): it is the pooled text embedding and " + std::to_string(c.time_ids) +
                       " embedded size numbers" +
                       (c.time_ids == 5 ? " (a refiner's: original size, crop corner, aesthetic "
                                          "score)"
                                        : ""));
        }
    }
    if (!with_up_blocks) {
        c.up_block_types.clear();
        for (auto it = c.down_block_types.rbegin(); it != c.down_block_types.rend(); ++it) {
            c.up_block_types.push_back(*it == "DownBlock2D" ? "UpBlock2D" : "CrossAttnUpBlock2D");
        }
    }
    if (c.down_block_types.size() != n || c.up_block_types.size() != n) {
        j.fail("block_out_channels", "has " + std::to_string(n) +
                                         " entries but down_block_types "
                                         "has " +
                                         std::to_string(c.down_block_types.size()) +
                                         " and up_block_types " +
                                         std::to_string(c.up_block_types.size()));
    }
    // SD 1.x/2.x store the number of heads in attention_head_dim (diffusers itself refuses
    // num_attention_heads for this model).
    if (j.has("num_attention_heads")) {
        j.fail("num_attention_heads",
               "is not supported by UNet2DConditionModel; use "
               "attention_head_dim");
    }
    std::vector<int64_t> heads =
        j.has("attention_head_dim") ? j.integers("attention_head_dim") : std::vector<int64_t>{8};
    if (heads.size() == 1) {
        heads.assign(n, heads[0]);
    }
    if (heads.size() != n) {
        j.fail("attention_head_dim",
               "must be one number or one per block (" + std::to_string(n) + ")");
    }
    c.heads = heads;
    for (const auto& t : c.down_block_types) {
        if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D") {
            j.fail("down_block_types", "entry '" + t + "' is not supported");
        }
    }
    for (const auto& t : c.up_block_types) {
        if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D") {
            j.fail("up_block_types", "entry '" + t + "' is not supported");
        }
    }
    for (size_t i = 0; i < n; ++i) {
        if (c.block_out_channels[i] % c.norm_num_groups != 0) {
            j.fail("block_out_channels", "entry " + std::to_string(c.block_out_channels[i]) +
                                             " is not divisible by norm_num_groups " +
                                             std::to_string(c.norm_num_groups));
        }
        if (c.block_out_channels[i] % c.heads[i] != 0) {
            j.fail("attention_head_dim", "(" + std::to_string(c.heads[i]) +
                                             " heads) does not "
                                             "divide block_out_channels entry " +
                                             std::to_string(c.block_out_channels[i]));
        }
    }
    // Options of other model families: refuse rather than compute something else.
    auto require = [&](const char* key, const nlohmann::json& allowed) {
        if (j.has(key) && j.json().at(key) != allowed) {
            j.fail(key, "= " + j.json().at(key).dump() + " is not supported (expected " +
                            allowed.dump() + ")");
        }
    };
    require("act_fn", "silu");
    require("center_input_sample", false);
    require("class_embed_type", nullptr);
    require("reverse_transformer_layers_per_block", nullptr);
    require("encoder_hid_dim", nullptr);
    require("time_embedding_type", "positional");
    require("resnet_time_scale_shift", "default");
    require("mid_block_type", "UNetMidBlock2DCrossAttn");
    require("only_cross_attention", false);
    require("dual_cross_attention", false);
    require("conv_in_kernel", 3);
    require("conv_out_kernel", 3);
    require("mid_block_scale_factor", 1);
    require("downsample_padding", 1);
    return c;
}

namespace nn {

tnn::ModuleList down_blocks_for(const UNetConfig& c) {
    const auto& boc = c.block_out_channels;
    const size_t n = boc.size();
    BlockOptions o = block_options(c);
    tnn::ModuleList blocks;
    for (size_t i = 0; i < n; ++i) {
        o.heads = c.heads[i];
        o.tlayers = c.transformer_layers[i];
        blocks->push_back(DownBlock(i == 0 ? boc[0] : boc[i - 1], boc[i], c.layers_per_block,
                                    c.down_block_types[i] == "CrossAttnDownBlock2D", i + 1 < n, o));
    }
    return blocks;
}

MidBlock mid_block_for(const UNetConfig& c) {
    BlockOptions o = block_options(c);
    o.heads = c.heads.back();
    o.tlayers = c.transformer_layers.back();
    return MidBlock(c.block_out_channels.back(), o);
}

at::Tensor embed_time(const UNetConfig& c, TimestepEmbedding& time_embedding,
                      TimestepEmbedding& add_embedding, const at::Tensor& sample,
                      const at::Tensor& timesteps, const UNet::Added& added) {
    const int64_t b = sample.size(0);
    at::Tensor t = timesteps.to(sample.device()).reshape({-1}).expand({b});
    at::Tensor emb = timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)
                         .to(sample.scalar_type());
    at::Tensor cond;
    if (added.guidance.defined()) {
        // The guidance as diffusers' get_guidance_scale_embedding makes it: w x 1000 embedded as
        // [sin, cos] with frequencies exp(-k log(10000) / (half - 1)), in fp32.
        const int64_t dim = c.time_cond_proj_dim;
        const int64_t half = dim / 2;
        const at::Tensor w = added.guidance.to(at::kFloat).reshape({-1}).expand({b}) * 1000.0;
        const at::Tensor step = at::log(at::scalar_tensor(10000.0, at::kFloat)) / (half - 1);
        const at::Tensor freqs = at::exp(at::arange(half, at::kFloat) * -step);
        const at::Tensor args = w.unsqueeze(1) * freqs.unsqueeze(0);
        cond = at::cat({at::sin(args), at::cos(args)}, 1);
        if (dim % 2 == 1) {
            cond = at::constant_pad_nd(cond, {0, 1});
        }
        cond = cond.to(sample.device(), sample.scalar_type());
    }
    at::Tensor temb = time_embedding(emb, cond);
    if (add_embedding) {
        // Each size number embedded as a timestep is, then all next to the text embedding.
        const at::Tensor ids =
            timestep_embedding(added.time_ids.reshape({-1}), c.addition_time_embed_dim,
                               c.flip_sin_to_cos, c.freq_shift)
                .reshape({added.text_embeds.size(0), -1});
        temb = temb + add_embedding(torch::cat({added.text_embeds.to(ids.scalar_type()), ids}, -1)
                                        .to(temb.scalar_type()));
    }
    return temb;
}

}  // namespace nn

namespace {

using nn::BlockOptions;
using nn::ResnetBlock2D;
using nn::TimestepEmbedding;
using nn::transformer;
namespace tnn = torch::nn;

struct UpBlockImpl : tnn::Module {
    UpBlockImpl(int64_t in, int64_t prev_out, int64_t out, int64_t layers, bool attn, bool upsample,
                const BlockOptions& o) {
        resnets = register_module("resnets", tnn::ModuleList());
        if (attn) {
            attentions = register_module("attentions", tnn::ModuleList());
        }
        for (int64_t i = 0; i < layers; ++i) {
            const int64_t skip = i == layers - 1 ? in : out;
            resnets->push_back(
                ResnetBlock2D((i == 0 ? prev_out : out) + skip, out, o.temb, o.groups, o.eps));
            if (attn) {
                attentions->push_back(transformer(out, o));
            }
        }
        if (upsample) {
            upsamplers = register_module("upsamplers", tnn::ModuleList());
            upsamplers->push_back(nn::Upsample2D(out));
        }
    }
    at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& ctx,
                       std::vector<at::Tensor>& skips) {
        for (size_t i = 0; i < resnets->size(); ++i) {
            x = torch::cat({x, skips.back()}, 1);
            skips.pop_back();
            x = resnets[i]->as<nn::ResnetBlock2DImpl>()->forward(x, temb);
            if (attentions) {
                x = attentions[i]->as<nn::Transformer2DImpl>()->forward(x, ctx);
            }
        }
        if (upsamplers) {
            // To the size of the skip connection the next block takes first (equal to 2x
            // unless the input size was not a multiple of the total downscale).
            x = upsamplers[0]->as<nn::Upsample2DImpl>()->forward(x, skips.back().sizes().slice(2));
        }
        return x;
    }
    tnn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

struct UNetModuleImpl : tnn::Module {
    explicit UNetModuleImpl(const UNetConfig& c) : c(c) {
        const auto& boc = c.block_out_channels;
        const size_t n = boc.size();
        const int64_t temb = boc[0] * 4;
        conv_in = register_module("conv_in", nn::conv2d(c.in_channels, boc[0], 3, 1, 1));
        time_embedding = register_module("time_embedding",
                                         TimestepEmbedding(boc[0], temb, c.time_cond_proj_dim));
        if (c.text_time) {
            add_embedding = register_module(
                "add_embedding", TimestepEmbedding(c.projection_class_embeddings_input_dim, temb));
        }
        BlockOptions o = nn::block_options(c);
        down_blocks = register_module("down_blocks", nn::down_blocks_for(c));
        mid_block = register_module("mid_block", nn::mid_block_for(c));
        up_blocks = register_module("up_blocks", tnn::ModuleList());
        for (size_t i = 0; i < n; ++i) {
            const size_t r = n - 1 - i;  // reversed index
            const int64_t prev_out = boc[std::min(n - 1, r + 1)];
            o.heads = c.heads[r];
            o.tlayers = c.transformer_layers[r];
            up_blocks->push_back(UpBlock(
                boc[r == 0 ? 0 : r - 1], i == 0 ? boc.back() : prev_out, boc[r],
                c.layers_per_block + 1, c.up_block_types[i] == "CrossAttnUpBlock2D", i + 1 < n, o));
        }
        conv_norm_out =
            register_module("conv_norm_out", nn::group_norm(c.norm_num_groups, boc[0], c.norm_eps));
        conv_out = register_module("conv_out", nn::conv2d(boc[0], c.out_channels, 3, 1, 1));
    }

    at::Tensor forward(const at::Tensor& sample, const at::Tensor& timesteps, const at::Tensor& ctx,
                       const UNet::Added& added, const UNet::Residuals* control) {
        const at::Tensor temb =
            nn::embed_time(c, time_embedding, add_embedding, sample, timesteps, added);
        at::Tensor x = conv_in(sample);
        std::vector<at::Tensor> skips = {x};
        size_t adapter = 0;  // the next T2I-Adapter feature map
        const auto next_feature = [&]() -> at::Tensor {
            if (control == nullptr || adapter >= control->intrablock.size()) {
                return {};
            }
            return control->intrablock[adapter++];
        };
        for (const auto& block : *down_blocks) {
            x = block->as<nn::DownBlockImpl>()->forward(x, temb, ctx, skips, next_feature());
        }
        if (control != nullptr && !control->down.empty()) {  // a ControlNet's, to the skips
            for (size_t k = 0; k < skips.size(); ++k) {
                skips[k] = skips[k] + control->down[k];
            }
        }
        x = mid_block(x, temb, ctx);
        if (control != nullptr && adapter < control->intrablock.size() &&
            control->intrablock[adapter].sizes() == x.sizes()) {
            x = x + control->intrablock[adapter];
        }
        if (control != nullptr && control->mid.defined()) {
            x = x + control->mid;
        }
        for (const auto& block : *up_blocks) {
            x = block->as<UpBlockImpl>()->forward(x, temb, ctx, skips);
        }
        return conv_out(nn::silu_temp(conv_norm_out(x)));
    }

    UNetConfig c;
    nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
    TimestepEmbedding time_embedding{nullptr}, add_embedding{nullptr};
    tnn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
    nn::MidBlock mid_block{nullptr};
    nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(UNetModule);

}  // namespace

struct UNet::Impl {
    UNetModule model{nullptr};
};

UNet::UNet(const UNetConfig& config) : impl_(std::make_unique<Impl>()) {
    impl_->model = UNetModule(config);
    impl_->model->eval();
}
UNet::~UNet() = default;
UNet::UNet(UNet&&) noexcept = default;
UNet& UNet::operator=(UNet&&) noexcept = default;

const UNetConfig& UNet::config() const {
    return impl_->model->c;
}
int64_t UNet::parameter_count() const {
    return nn::count_parameters(*impl_->model);
}
c10::Device UNet::device() const {
    return nn::module_options(*impl_->model).device();
}
c10::ScalarType UNet::dtype() const {
    return c10::typeMetaToScalarType(nn::module_options(*impl_->model).dtype());
}
void UNet::to(c10::Device device, c10::ScalarType dtype) {
    impl_->model->to(device, dtype);
}

void UNet::load_weights(const std::vector<std::filesystem::path>& files,
                        const std::string& original_prefix) {
    const auto& c = config();
    LoadOptions opts;
    if (!original_prefix.empty()) {
        opts.rename = [&c](const std::string& name) { return original_unet_key(name, c); };
        opts.prefix = opts.scope = original_prefix;
    }
    const std::string boc = nn::join(c.block_out_channels);
    opts.config_hint = "unet config: block_out_channels [" + boc + "], layers_per_block " +
                       std::to_string(c.layers_per_block) + ", cross_attention_dim " +
                       std::to_string(c.cross_attention_dim);
    load_weights_into(*impl_->model, WeightFiles(files), opts);
}

torch::nn::Module& UNet::module() {
    return *impl_->model;
}

int64_t UNet::skip_count() const {
    const UNetConfig& c = config();
    const auto n = static_cast<int64_t>(c.block_out_channels.size());
    return 1 + n * c.layers_per_block + (n - 1);
}

at::Tensor UNet::forward(const at::Tensor& sample, const at::Tensor& timesteps,
                         const at::Tensor& context, const Added& added,
                         const Residuals* control) const {
    const UNetConfig& c = config();
    const bool given = added.text_embeds.defined() && added.time_ids.defined();
    if (c.text_time != given) {
        throw Error(c.text_time ? "unet: this SDXL UNet needs the pooled text embedding and the "
                                  "size ids (addition_embed_type text_time)"
                                : "unet: added conditioning given to a UNet without "
                                  "addition_embed_type");
    }
    if (given &&
        (added.text_embeds.dim() != 2 || added.text_embeds.size(1) != c.text_embeds_dim() ||
         added.time_ids.dim() != 2 || added.time_ids.size(1) != c.time_ids ||
         added.text_embeds.size(0) != sample.size(0) || added.time_ids.size(0) != sample.size(0))) {
        throw Error("unet: the added conditioning must be text_embeds [B, " +
                    std::to_string(c.text_embeds_dim()) + "] and time_ids [B, " +
                    std::to_string(c.time_ids) + "]");
    }
    if (control != nullptr && (!control->down.empty() || control->mid.defined()) &&
        (static_cast<int64_t>(control->down.size()) != skip_count() || !control->mid.defined())) {
        throw Error("unet: a ControlNet's residuals must be " + std::to_string(skip_count()) +
                    " for the down blocks and one for the mid block (given " +
                    std::to_string(control->down.size()) + ")");
    }
    if (control != nullptr && control->intrablock.size() > c.block_out_channels.size() + 1) {
        throw Error("unet: " + std::to_string(control->intrablock.size()) +
                    " T2I-Adapter feature maps for " + std::to_string(c.block_out_channels.size()) +
                    " down blocks and a mid block");
    }
    const nn::GradOnlyInTraining grad(*impl_->model);
    return impl_->model->forward(sample, timesteps, context, added, control);
}

}  // namespace sds
