#pragma once
// The parts diffusers' UNet2DConditionModel and ControlNetModel share: the time embedding (with
// SDXL's added conditioning), the down blocks and the mid block, named as in the checkpoints.
#include <vector>

#include <torch/nn/modules/container/modulelist.h>

#include "io/weights.h"
#include "nn/blocks.h"
#include "sds/error.h"
#include "sds/unet.h"

namespace sds {
class JsonConfig;
}

namespace sds::nn {

// A UNet's config.json, or a ControlNet's (`with_up_blocks` false: it has no up blocks, and its
// up_block_types are left as the down blocks' mirror); `time_ids` as UNetConfig::from_file's.
UNetConfig unet_config_from(const JsonConfig& j, bool with_up_blocks, int64_t time_ids = 6);

struct BlockOptions {
    int64_t temb = 0, groups = 32, heads = 8, context = 768, tlayers = 1;
    double eps = 1e-5;
    bool linear_projection = false, upcast = false;
};

inline Transformer2D transformer(int64_t channels, const BlockOptions& o) {
    return Transformer2D(channels, o.heads, o.context, o.groups, o.tlayers, o.linear_projection,
                         o.upcast);
}

struct DownBlockImpl : tnn::Module {
    DownBlockImpl(int64_t in, int64_t out, int64_t layers, bool attn, bool downsample,
                  const BlockOptions& o) {
        resnets = register_module("resnets", tnn::ModuleList());
        if (attn) {
            attentions = register_module("attentions", tnn::ModuleList());
        }
        for (int64_t i = 0; i < layers; ++i) {
            resnets->push_back(ResnetBlock2D(i == 0 ? in : out, out, o.temb, o.groups, o.eps));
            if (attn) {
                attentions->push_back(transformer(out, o));
            }
        }
        if (downsample) {
            downsamplers = register_module("downsamplers", tnn::ModuleList());
            downsamplers->push_back(Downsample2D(out, 1));
        }
    }
    // `extra` (a T2I-Adapter's feature map, when defined): added after the last attention, or
    // for a block without attention to its output (and so to the last skip, which is it).
    at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& ctx,
                       std::vector<at::Tensor>& skips, const at::Tensor& extra = {}) {
        for (size_t i = 0; i < resnets->size(); ++i) {
            x = resnets[i]->as<ResnetBlock2DImpl>()->forward(x, temb);
            if (attentions) {
                x = attentions[i]->as<Transformer2DImpl>()->forward(x, ctx);
                if (extra.defined() && i + 1 == resnets->size()) {
                    x = add_feature(x, extra);
                }
            }
            skips.push_back(x);
        }
        if (downsamplers) {
            x = downsamplers[0]->as<Downsample2DImpl>()->forward(x);
            skips.push_back(x);
        }
        if (extra.defined() && !attentions) {
            x = add_feature(x, extra);
            skips.back() = x;
        }
        return x;
    }
    static at::Tensor add_feature(const at::Tensor& x, const at::Tensor& feature) {
        if (feature.sizes() != x.sizes()) {
            throw Error("unet: a T2I-Adapter feature map of shape " + shape_text(feature.sizes()) +
                        " where the down block's is " + shape_text(x.sizes()) +
                        " (an adapter for another model, or another size)");
        }
        return x + feature;
    }
    tnn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};
};
TORCH_MODULE(DownBlock);

struct MidBlockImpl : tnn::Module {
    MidBlockImpl(int64_t channels, const BlockOptions& o) {
        resnets = register_module("resnets", tnn::ModuleList());
        attentions = register_module("attentions", tnn::ModuleList());
        resnets->push_back(ResnetBlock2D(channels, channels, o.temb, o.groups, o.eps));
        attentions->push_back(transformer(channels, o));
        resnets->push_back(ResnetBlock2D(channels, channels, o.temb, o.groups, o.eps));
    }
    at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& ctx) {
        x = resnets[0]->as<ResnetBlock2DImpl>()->forward(x, temb);
        x = attentions[0]->as<Transformer2DImpl>()->forward(x, ctx);
        return resnets[1]->as<ResnetBlock2DImpl>()->forward(x, temb);
    }
    tnn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(MidBlock);

// `cond` > 0: a condition of that width projected (cond_proj, no bias) and added to the input
// first, when one is given (UNetConfig::time_cond_proj_dim).
struct TimestepEmbeddingImpl : tnn::Module {
    TimestepEmbeddingImpl(int64_t in, int64_t dim, int64_t cond = 0) {
        if (cond > 0) {
            cond_proj = register_module("cond_proj", Linear(cond, in, false));
        }
        linear_1 = register_module("linear_1", Linear(in, dim));
        linear_2 = register_module("linear_2", Linear(dim, dim));
    }
    at::Tensor forward(at::Tensor x, const at::Tensor& condition = {}) {
        if (cond_proj && condition.defined()) {
            x = x + cond_proj(condition);
        }
        return linear_2(torch::silu(linear_1(x)));
    }
    Linear cond_proj{nullptr}, linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

inline BlockOptions block_options(const UNetConfig& c) {
    return BlockOptions{.temb = c.block_out_channels[0] * 4,
                        .groups = c.norm_num_groups,
                        .context = c.cross_attention_dim,
                        .eps = c.norm_eps,
                        .linear_projection = c.use_linear_projection,
                        .upcast = c.upcast_attention};
}

// The down blocks of a config: block i from block_out_channels[i - 1] to [i], downsampling all
// but the last.
tnn::ModuleList down_blocks_for(const UNetConfig& c);
// The mid block of a config.
MidBlock mid_block_for(const UNetConfig& c);

// The time embedding, plus SDXL's added conditioning when `add_embedding` is set, for a batch of
// `sample`'s size in its dtype.
at::Tensor embed_time(const UNetConfig& c, TimestepEmbedding& time_embedding,
                      TimestepEmbedding& add_embedding, const at::Tensor& sample,
                      const at::Tensor& timesteps, const UNet::Added& added);

}  // namespace sds::nn
