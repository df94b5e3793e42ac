#include "nn/blocks.h"

#include <cmath>

#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/types.h>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/group_norm.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/silu.h>

namespace sds::nn {

namespace F = torch::nn::functional;

at::Tensor uninitialised(at::IntArrayRef shape) {
    return at::empty(shape, at::kFloat);
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
    weight = register_parameter("weight", uninitialised({out, in}));
    if (with_bias) {
        bias = register_parameter("bias", uninitialised({out}));
    }
}
at::Tensor LinearImpl::forward(const at::Tensor& x) {
    return at::linear(x, weight, bias);
}

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding)
    : stride(stride), padding(padding) {
    weight = register_parameter("weight", uninitialised({out, in, kernel, kernel}));
    bias = register_parameter("bias", uninitialised({out}));
}
at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
    return at::conv2d(x, weight, bias, {stride, stride}, {padding, padding});
}

GroupNormImpl::GroupNormImpl(int64_t groups, int64_t channels, double eps)
    : groups(groups), eps(eps) {
    weight = register_parameter("weight", uninitialised({channels}));
    bias = register_parameter("bias", uninitialised({channels}));
}
at::Tensor GroupNormImpl::forward(const at::Tensor& x) {
    return at::group_norm(x, groups, weight, bias, eps);
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps) : dim(dim), eps(eps) {
    weight = register_parameter("weight", uninitialised({dim}));
    bias = register_parameter("bias", uninitialised({dim}));
}
at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
    return at::layer_norm(x, {dim}, weight, bias, eps);
}

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t dim) {
    weight = register_parameter("weight", uninitialised({count, dim}));
}
at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) {
    return at::embedding(weight, ids);
}

void initialise_for_training(tnn::Module& root, at::Generator generator) {
    torch::NoGradGuard no_grad;
    auto uniform = [&](at::Tensor& t, int64_t fan_in) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
        if (t.defined()) {
            t.uniform_(-bound, bound, generator);
        }
    };
    for (const auto& m : root.modules(/*include_self=*/true)) {
        if (auto* l = m->as<LinearImpl>()) {
            uniform(l->weight, l->weight.size(1));
            uniform(l->bias, l->weight.size(1));
        } else if (auto* c = m->as<Conv2dImpl>()) {
            const int64_t fan_in = c->weight.size(1) * c->weight.size(2) * c->weight.size(3);
            uniform(c->weight, fan_in);
            uniform(c->bias, fan_in);
        } else if (auto* g = m->as<GroupNormImpl>()) {
            g->weight.fill_(1.0);
            g->bias.zero_();
        } else if (auto* n = m->as<LayerNormImpl>()) {
            n->weight.fill_(1.0);
            n->bias.zero_();
        } else if (auto* e = m->as<EmbeddingImpl>()) {
            e->weight.normal_(0.0, 0.02, generator);
        }
    }
}

namespace {
bool in_place() {
    return !at::GradMode::is_enabled();
}
}  // namespace

at::Tensor silu_temp(at::Tensor x) {
    return in_place() ? at::silu_(x) : at::silu(x);
}
at::Tensor add_temp(at::Tensor x, const at::Tensor& y) {
    return in_place() ? x.add_(y) : x + y;
}
at::Tensor mul_temp(at::Tensor x, const at::Tensor& y) {
    return in_place() ? x.mul_(y) : x * y;
}

GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
    return GroupNorm(groups, channels, eps);
}

Conv2d conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding) {
    return Conv2d(in, out, kernel, stride, padding);
}

at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              double freq_shift) {
    const int64_t half = dim / 2;
    at::Tensor exponent = torch::arange(0, half, timesteps.options().dtype(at::kFloat)) *
                          static_cast<float>(-std::log(10000.0));
    exponent = exponent / static_cast<float>(half - freq_shift);
    at::Tensor emb = timesteps.to(at::kFloat).unsqueeze(1) * exponent.exp().unsqueeze(0);
    emb = flip_sin_to_cos ? torch::cat({emb.cos(), emb.sin()}, -1)
                          : torch::cat({emb.sin(), emb.cos()}, -1);
    if (dim % 2 == 1) {
        emb = F::pad(emb, F::PadFuncOptions({0, 1, 0, 0}));
    }
    return emb;
}

ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in, int64_t out, int64_t temb_channels, int64_t groups,
                                     double eps) {
    norm1 = register_module("norm1", group_norm(groups, in, eps));
    conv1 = register_module("conv1", conv2d(in, out, 3, 1, 1));
    if (temb_channels > 0) {
        time_emb_proj = register_module("time_emb_proj", Linear(temb_channels, out));
    }
    norm2 = register_module("norm2", group_norm(groups, out, eps));
    conv2 = register_module("conv2", conv2d(out, out, 3, 1, 1));
    if (in != out) {
        conv_shortcut = register_module("conv_shortcut", conv2d(in, out, 1));
    }
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x, const std::optional<at::Tensor>& temb) {
    at::Tensor h = conv1(silu_temp(norm1(x)));
    if (time_emb_proj && temb) {
        h = add_temp(h, time_emb_proj(torch::silu(*temb)).unsqueeze(-1).unsqueeze(-1));
    }
    h = conv2(silu_temp(norm2(h)));
    return add_temp(h, conv_shortcut ? conv_shortcut(x) : x);
}

Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t padding) : padding(padding) {
    conv = register_module("conv", conv2d(channels, channels, 3, 2, padding));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
    if (padding == 0) {
        return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).mode(torch::kConstant).value(0)));
    }
    return conv(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels) {
    conv = register_module("conv", conv2d(channels, channels, 3, 1, 1));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, std::optional<at::IntArrayRef> size) {
    auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
    if (size) {
        opts.size(size->vec());
    } else {
        opts.scale_factor(std::vector<double>{2.0, 2.0});
    }
    return conv(F::interpolate(x, opts));
}

AttentionImpl::AttentionImpl(const AttentionOptions& opt) : o(opt) {
    const int64_t inner = o.heads * o.head_dim;
    const int64_t ctx = o.context_dim > 0 ? o.context_dim : o.query_dim;
    if (o.norm_groups > 0) {
        group_norm =
            register_module("group_norm", nn::group_norm(o.norm_groups, o.query_dim, o.norm_eps));
    }
    to_q = register_module("to_q", Linear(o.query_dim, inner, o.qkv_bias));
    to_k = register_module("to_k", Linear(ctx, inner, o.qkv_bias));
    to_v = register_module("to_v", Linear(ctx, inner, o.qkv_bias));
    to_out = register_module("to_out", tnn::ModuleList());
    to_out->push_back(Linear(inner, o.query_dim));
}

at::Tensor AttentionImpl::forward(const at::Tensor& input,
                                  const std::optional<at::Tensor>& context) {
    at::Tensor x = input;
    int64_t b = x.size(0), c = 0, h = 0, w = 0;
    if (group_norm) {  // [B, C, H, W] -> [B, HW, C]
        c = x.size(1), h = x.size(2), w = x.size(3);
        // Normalised as [B, C, HW], as diffusers does: for a channels-last input (an image
        // straight from HWC pixels) the 3-D norm runs a different kernel than the 4-D one would,
        // and in bf16 the two round differently.
        x = group_norm(x.reshape({b, c, h * w})).transpose(1, 2);
    }
    const at::Tensor& ctx = context ? *context : x;
    auto split = [&](const at::Tensor& t) {
        return t.view({b, -1, o.heads, o.head_dim}).transpose(1, 2);  // [B, heads, L, d]
    };
    at::Tensor q = split(to_q(x)), k = split(to_k(ctx)), v = split(to_v(ctx));
    const auto dtype = q.scalar_type();
    if (o.upcast && dtype != at::kFloat) {
        q = q.to(at::kFloat), k = k.to(at::kFloat), v = v.to(at::kFloat);
    }
    at::Tensor out = at::scaled_dot_product_attention(q, k, v).to(dtype);
    out = out.transpose(1, 2).reshape({b, -1, o.heads * o.head_dim});
    out = to_out[0]->as<LinearImpl>()->forward(out);
    if (group_norm) {
        // Not in place: a new tensor takes its memory layout from both operands (channels-last
        // here when the input is), as diffusers' does; `out`'s own strides would not.
        out = out.transpose(1, 2).reshape({b, c, h, w}) + input;
    }
    return out;
}

TransformerBlockImpl::TransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim,
                                           int64_t context_dim, bool upcast) {
    norm1 = register_module("norm1", LayerNorm(dim, 1e-5));
    AttentionOptions self{.query_dim = dim, .heads = heads, .head_dim = head_dim, .upcast = upcast};
    attn1 = register_module("attn1", Attention(self));
    norm2 = register_module("norm2", LayerNorm(dim, 1e-5));
    AttentionOptions cross = self;
    cross.context_dim = context_dim;
    attn2 = register_module("attn2", Attention(cross));
    norm3 = register_module("norm3", LayerNorm(dim, 1e-5));
    // ff.net = [GEGLU (with .proj), Dropout, Linear]: only indices 0 and 2 hold weights.
    auto geglu_holder = std::make_shared<tnn::Module>();
    geglu = geglu_holder->register_module("proj", Linear(dim, dim * 4 * 2));
    ff_out = Linear(dim * 4, dim);
    auto net = std::make_shared<tnn::Module>();
    net->register_module("0", geglu_holder);
    net->register_module("2", ff_out.ptr());
    auto ff_holder = std::make_shared<tnn::Module>();
    ff_holder->register_module("net", net);
    register_module("ff", ff_holder);
}

at::Tensor TransformerBlockImpl::forward(at::Tensor x, const at::Tensor& context) {
    x = add_temp(attn1(norm1(x)), x);
    x = add_temp(attn2(norm2(x), context), x);
    auto parts = geglu(norm3(x)).chunk(2, -1);
    return add_temp(ff_out(mul_temp(torch::gelu(parts[1]), parts[0])), x);
}

Transformer2DImpl::Transformer2DImpl(int64_t channels, int64_t heads, int64_t context_dim,
                                     int64_t groups, int64_t layers, bool linear_projection,
                                     bool upcast)
    : linear_projection(linear_projection) {
    norm = register_module("norm", group_norm(groups, channels, 1e-6));
    if (linear_projection) {
        proj_in_linear = register_module("proj_in", Linear(channels, channels));
    } else {
        proj_in_conv = register_module("proj_in", conv2d(channels, channels, 1));
    }
    transformer_blocks = register_module("transformer_blocks", tnn::ModuleList());
    for (int64_t i = 0; i < layers; ++i) {
        transformer_blocks->push_back(
            TransformerBlock(channels, heads, channels / heads, context_dim, upcast));
    }
    if (linear_projection) {
        proj_out_linear = register_module("proj_out", Linear(channels, channels));
    } else {
        proj_out_conv = register_module("proj_out", conv2d(channels, channels, 1));
    }
}

at::Tensor Transformer2DImpl::forward(const at::Tensor& input, const at::Tensor& context) {
    const int64_t b = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
    at::Tensor x = norm(input);
    if (!linear_projection) {
        x = proj_in_conv(x);
    }
    x = x.permute({0, 2, 3, 1}).reshape({b, h * w, c});  // [B, HW, C]
    if (linear_projection) {
        x = proj_in_linear(x);
    }
    for (const auto& block : *transformer_blocks) {
        x = block->as<TransformerBlockImpl>()->forward(x, context);
    }
    if (linear_projection) {
        x = proj_out_linear(x);
    }
    x = x.reshape({b, h, w, c}).permute({0, 3, 1, 2}).contiguous();
    if (!linear_projection) {
        x = proj_out_conv(x);
    }
    return add_temp(x, input);
}

}  // namespace sds::nn
