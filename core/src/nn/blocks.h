#pragma once
// The building blocks of diffusers' UNet2DConditionModel and AutoencoderKL, with submodules
// named as in the checkpoints ("resnets.0.conv1.weight", "attentions.0.transformer_blocks.0.
// attn1.to_q.weight", ...).
#include <optional>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

namespace sds::nn {

namespace tnn = torch::nn;

// A float32 CPU tensor of `shape` whose values are whatever the memory held: for parameters a
// checkpoint fills right after.
at::Tensor uninitialised(at::IntArrayRef shape);

// Layers whose parameters are allocated but not initialised: every model here is filled from
// a checkpoint right after it is built (load_weights refuses to leave anything out), so random
// initialisation would only cost time. The arithmetic is that of torch::nn's layers.
struct LinearImpl : tnn::Module {
    LinearImpl(int64_t in, int64_t out, bool bias = true);
    at::Tensor forward(const at::Tensor& x);
    at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

struct Conv2dImpl : tnn::Module {
    Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding);
    at::Tensor forward(const at::Tensor& x);
    int64_t stride, padding;
    at::Tensor weight, bias;
};
TORCH_MODULE(Conv2d);

struct GroupNormImpl : tnn::Module {
    GroupNormImpl(int64_t groups, int64_t channels, double eps);
    at::Tensor forward(const at::Tensor& x);
    int64_t groups;
    double eps;
    at::Tensor weight, bias;
};
TORCH_MODULE(GroupNorm);

struct LayerNormImpl : tnn::Module {
    LayerNormImpl(int64_t dim, double eps);
    at::Tensor forward(const at::Tensor& x);
    int64_t dim;
    double eps;
    at::Tensor weight, bias;
};
TORCH_MODULE(LayerNorm);

struct EmbeddingImpl : tnn::Module {
    EmbeddingImpl(int64_t count, int64_t dim);
    at::Tensor forward(const at::Tensor& ids);
    at::Tensor weight;
};
TORCH_MODULE(Embedding);

GroupNorm group_norm(int64_t groups, int64_t channels, double eps);
Conv2d conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0);

// Elementwise steps on a temporary: a tensor nothing else holds, such as a layer's fresh output.
// When no gradient is recorded (inference) they work in place, which saves a buffer the size of
// `x` (at 512x512 the VAE decoder's are 128 MiB each, and fresh pages cost a page fault apiece);
// under autograd they allocate, because the backward pass needs the inputs. The arithmetic is the
// same either way. `y` may broadcast to `x`'s shape.
at::Tensor silu_temp(at::Tensor x);
at::Tensor add_temp(at::Tensor x, const at::Tensor& y);
at::Tensor mul_temp(at::Tensor x, const at::Tensor& y);

// Sinusoidal timestep embedding [B] -> [B, dim] (fp32), as diffusers' get_timestep_embedding.
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              double freq_shift);

// Fresh weights for training from scratch, as PyTorch initialises these layers (uniform within
// 1/sqrt(fan_in) for linear and convolution layers, ones and zeros for norms) and N(0, 0.02) for
// embeddings (CLIP's initializer_range), drawn from `generator` so a seed repeats them. The
// loaded models never need it.
void initialise_for_training(tnn::Module& root, at::Generator generator);

struct ResnetBlock2DImpl : tnn::Module {
    // temb_channels 0: no time embedding (the VAE's blocks).
    ResnetBlock2DImpl(int64_t in, int64_t out, int64_t temb_channels, int64_t groups, double eps);
    at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& temb);
    GroupNorm norm1{nullptr}, norm2{nullptr};
    Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
    Linear time_emb_proj{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

struct Downsample2DImpl : tnn::Module {
    // padding 1 in the UNet; 0 in the VAE, which pads right and bottom by one instead.
    Downsample2DImpl(int64_t channels, int64_t padding);
    at::Tensor forward(const at::Tensor& x);
    int64_t padding;
    Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

struct Upsample2DImpl : tnn::Module {
    explicit Upsample2DImpl(int64_t channels);
    // Nearest 2x (or to `size` when the skip connection's size is not exactly 2x), then conv.
    at::Tensor forward(const at::Tensor& x, std::optional<at::IntArrayRef> size = std::nullopt);
    Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

// Multi-head attention as diffusers' Attention: to_q/to_k/to_v, to_out.0, SDPA.
struct AttentionOptions {
    int64_t query_dim = 0;
    int64_t context_dim = 0;  // 0: self-attention
    int64_t heads = 1;
    int64_t head_dim = 0;
    bool qkv_bias = false;
    bool upcast = false;  // compute attention in fp32 (upcast_attention / upcast_softmax)
    // The VAE's mid-block attention: a group norm in front, input as [B, C, H, W], residual.
    int64_t norm_groups = 0;
    double norm_eps = 1e-6;
};
struct AttentionImpl : tnn::Module {
    explicit AttentionImpl(const AttentionOptions& o);
    at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& context = {});
    AttentionOptions o;
    GroupNorm group_norm{nullptr};
    Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
    tnn::ModuleList to_out{nullptr};
};
TORCH_MODULE(Attention);

// BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward (pre-norm).
struct TransformerBlockImpl : tnn::Module {
    TransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t context_dim,
                         bool upcast);
    at::Tensor forward(at::Tensor x, const at::Tensor& context);
    LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
    Attention attn1{nullptr}, attn2{nullptr};
    Linear geglu{nullptr}, ff_out{nullptr};  // ff.net.0.proj (GEGLU), ff.net.2
};
TORCH_MODULE(TransformerBlock);

// Transformer2DModel for SD 1.x/2.x: group norm, proj_in (1x1 conv or linear), blocks, proj_out.
struct Transformer2DImpl : tnn::Module {
    Transformer2DImpl(int64_t channels, int64_t heads, int64_t context_dim, int64_t groups,
                      int64_t layers, bool linear_projection, bool upcast);
    at::Tensor forward(const at::Tensor& x, const at::Tensor& context);
    bool linear_projection;
    GroupNorm norm{nullptr};
    // 1x1 convolutions (SD 1.x) or linear layers (use_linear_projection, SD 2.x).
    Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
    Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
    tnn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(Transformer2D);

}  // namespace sds::nn
