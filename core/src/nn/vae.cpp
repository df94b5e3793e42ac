#include "sds/vae.h"

#include <torch/types.h>

#include "io/json_config.h"
#include "io/weights.h"
#include "nn/blocks.h"
#include "nn/module_utils.h"
#include "sds/error.h"
#include "sds/original_layout.h"

namespace sds {

VaeConfig VaeConfig::from_file(const std::filesystem::path& path) {
    const JsonConfig j = JsonConfig::load(path);
    VaeConfig c;
    c.in_channels = j.integer("in_channels", c.in_channels);
    c.out_channels = j.integer("out_channels", c.out_channels);
    c.latent_channels = j.integer("latent_channels", c.latent_channels);
    if (j.has("block_out_channels"))
        c.block_out_channels = j.integers("block_out_channels");
    c.layers_per_block = j.integer("layers_per_block", c.layers_per_block);
    c.norm_num_groups = j.integer("norm_num_groups", c.norm_num_groups);
    c.scaling_factor = j.number("scaling_factor", c.scaling_factor);
    c.use_quant_conv = j.boolean("use_quant_conv", c.use_quant_conv);
    c.use_post_quant_conv = j.boolean("use_post_quant_conv", c.use_post_quant_conv);
    c.force_upcast = j.boolean("force_upcast", c.force_upcast);
    for (const char* key : {"latents_mean", "latents_std", "shift_factor"}) {
        if (j.has(key)) {
            j.fail(key, "is not supported (SD 1.x, 2.x and SDXL VAEs have none)");
        }
    }
    const size_t n = c.block_out_channels.size();
    for (const char* key : {"down_block_types", "up_block_types"}) {
        if (!j.has(key)) {
            continue;
        }
        const auto types = j.strings(key);
        const std::string want =
            std::string(key) == "down_block_types" ? "DownEncoderBlock2D" : "UpDecoderBlock2D";
        if (types.size() != n) {
            j.fail(key, "has " + std::to_string(types.size()) +
                            " entries but block_out_channels "
                            "has " +
                            std::to_string(n));
        }
        for (const auto& t : types) {
            if (t != want) {
                j.fail(key, "entry '" + t + "' is not supported (expected " + want + ")");
            }
        }
    }
    for (auto ch : c.block_out_channels) {
        if (ch % c.norm_num_groups != 0) {
            j.fail("block_out_channels", "entry " + std::to_string(ch) +
                                             " is not divisible by norm_num_groups " +
                                             std::to_string(c.norm_num_groups));
        }
    }
    if (j.string("act_fn", "silu") != "silu") {
        j.fail("act_fn", "'" + j.string("act_fn", "silu") + "' is not supported (silu)");
    }
    if (j.has("mid_block_add_attention") && !j.boolean("mid_block_add_attention", true)) {
        j.fail("mid_block_add_attention", "= false is not supported");
    }
    return c;
}

namespace {

namespace tnn = torch::nn;
constexpr double kEps = 1e-6;

struct VaeBlockImpl : tnn::Module {
    // A DownEncoderBlock2D (resample = down) or UpDecoderBlock2D (resample = up).
    VaeBlockImpl(int64_t in, int64_t out, int64_t layers, int64_t groups, int resample) {
        resnets = register_module("resnets", tnn::ModuleList());
        for (int64_t i = 0; i < layers; ++i) {
            resnets->push_back(nn::ResnetBlock2D(i == 0 ? in : out, out, 0, groups, kEps));
        }
        if (resample < 0) {
            downsamplers = register_module("downsamplers", tnn::ModuleList());
            downsamplers->push_back(nn::Downsample2D(out, 0));
        } else if (resample > 0) {
            upsamplers = register_module("upsamplers", tnn::ModuleList());
            upsamplers->push_back(nn::Upsample2D(out));
        }
    }
    at::Tensor forward(at::Tensor x) {
        for (const auto& r : *resnets) {
            x = r->as<nn::ResnetBlock2DImpl>()->forward(x, std::nullopt);
        }
        if (downsamplers) {
            x = downsamplers[0]->as<nn::Downsample2DImpl>()->forward(x);
        }
        if (upsamplers) {
            x = upsamplers[0]->as<nn::Upsample2DImpl>()->forward(x);
        }
        return x;
    }
    tnn::ModuleList resnets{nullptr}, downsamplers{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(VaeBlock);

struct VaeMidBlockImpl : tnn::Module {
    VaeMidBlockImpl(int64_t channels, int64_t groups) {
        resnets = register_module("resnets", tnn::ModuleList());
        attentions = register_module("attentions", tnn::ModuleList());
        resnets->push_back(nn::ResnetBlock2D(channels, channels, 0, groups, kEps));
        attentions->push_back(nn::Attention(nn::AttentionOptions{.query_dim = channels,
                                                                 .heads = 1,
                                                                 .head_dim = channels,
                                                                 .qkv_bias = true,
                                                                 .norm_groups = groups,
                                                                 .norm_eps = kEps}));
        resnets->push_back(nn::ResnetBlock2D(channels, channels, 0, groups, kEps));
    }
    at::Tensor forward(at::Tensor x) {
        x = resnets[0]->as<nn::ResnetBlock2DImpl>()->forward(x, std::nullopt);
        x = attentions[0]->as<nn::AttentionImpl>()->forward(x);
        return resnets[1]->as<nn::ResnetBlock2DImpl>()->forward(x, std::nullopt);
    }
    tnn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(VaeMidBlock);

struct CoderImpl : tnn::Module {
    // The Encoder (decoder = false) or the Decoder.
    CoderImpl(const VaeConfig& c, bool decoder) {
        const auto& boc = c.block_out_channels;
        const size_t n = boc.size();
        const int64_t g = c.norm_num_groups;
        conv_in = register_module("conv_in", nn::conv2d(decoder ? c.latent_channels : c.in_channels,
                                                        decoder ? boc.back() : boc[0], 3, 1, 1));
        if (decoder) {
            mid_block = register_module("mid_block", VaeMidBlock(boc.back(), g));
        }
        blocks = register_module(decoder ? "up_blocks" : "down_blocks", tnn::ModuleList());
        for (size_t i = 0; i < n; ++i) {
            const bool last = i + 1 == n;
            if (decoder) {
                const size_t r = n - 1 - i;
                blocks->push_back(VaeBlock(boc[std::min(n - 1, r + 1)], boc[r],
                                           c.layers_per_block + 1, g, last ? 0 : 1));
            } else {
                blocks->push_back(VaeBlock(i == 0 ? boc[0] : boc[i - 1], boc[i], c.layers_per_block,
                                           g, last ? 0 : -1));
            }
        }
        if (!decoder) {
            mid_block = register_module("mid_block", VaeMidBlock(boc.back(), g));
        }
        const int64_t last = decoder ? boc[0] : boc.back();
        conv_norm_out = register_module("conv_norm_out", nn::group_norm(g, last, kEps));
        conv_out = register_module(
            "conv_out",
            nn::conv2d(last, decoder ? c.out_channels : 2 * c.latent_channels, 3, 1, 1));
        this->decoder = decoder;
    }
    at::Tensor forward(const at::Tensor& in) {
        at::Tensor x = conv_in(in);
        if (decoder) {
            x = mid_block(x);
        }
        for (const auto& b : *blocks) {
            x = b->as<VaeBlockImpl>()->forward(x);
        }
        if (!decoder) {
            x = mid_block(x);
        }
        return conv_out(nn::silu_temp(conv_norm_out(x)));
    }
    bool decoder = false;
    nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
    tnn::ModuleList blocks{nullptr};
    VaeMidBlock mid_block{nullptr};
    nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(Coder);

struct VaeModuleImpl : tnn::Module {
    explicit VaeModuleImpl(const VaeConfig& c) : c(c) {
        encoder = register_module("encoder", Coder(c, false));
        decoder = register_module("decoder", Coder(c, true));
        if (c.use_quant_conv) {
            quant_conv = register_module(
                "quant_conv", nn::conv2d(2 * c.latent_channels, 2 * c.latent_channels, 1));
        }
        if (c.use_post_quant_conv) {
            post_quant_conv = register_module("post_quant_conv",
                                              nn::conv2d(c.latent_channels, c.latent_channels, 1));
        }
    }
    VaeConfig c;
    Coder encoder{nullptr}, decoder{nullptr};
    nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(VaeModule);

}  // namespace

struct Vae::Impl {
    VaeModule model{nullptr};
};

Vae::Vae(const VaeConfig& config) : impl_(std::make_unique<Impl>()) {
    impl_->model = VaeModule(config);
    impl_->model->eval();
}
Vae::~Vae() = default;
Vae::Vae(Vae&&) noexcept = default;
Vae& Vae::operator=(Vae&&) noexcept = default;

const VaeConfig& Vae::config() const {
    return impl_->model->c;
}
int64_t Vae::parameter_count() const {
    return nn::count_parameters(*impl_->model);
}
c10::Device Vae::device() const {
    return nn::module_options(*impl_->model).device();
}
c10::ScalarType Vae::dtype() const {
    return c10::typeMetaToScalarType(nn::module_options(*impl_->model).dtype());
}
void Vae::to(c10::Device device, c10::ScalarType dtype) {
    impl_->model->to(device, dtype);
}

void Vae::load_weights(const std::vector<std::filesystem::path>& files,
                       const std::string& original_prefix, bool original_layout) {
    LoadOptions opts;
    if (!original_prefix.empty() || original_layout) {
        opts.rename = [this](const std::string& name) { return original_vae_key(name, config()); };
        opts.prefix = opts.scope = original_prefix;
    }
    // Older VAE checkpoints name the mid-block attention query/key/value/proj_attn.
    opts.legacy_names = {{".to_q.", ".query."},
                         {".to_k.", ".key."},
                         {".to_v.", ".value."},
                         {".to_out.0.", ".proj_attn."}};
    opts.config_hint = "vae config: block_out_channels [" + nn::join(config().block_out_channels) +
                       "], layers_per_block " + std::to_string(config().layers_per_block);
    load_weights_into(*impl_->model, WeightFiles(files), opts);
}

torch::nn::Module& Vae::module() {
    return *impl_->model;
}

std::pair<at::Tensor, at::Tensor> Vae::encode(const at::Tensor& image) const {
    const nn::GradOnlyInTraining grad(*impl_->model);
    auto& m = *impl_->model;
    at::Tensor moments = m.encoder(image);
    if (m.quant_conv) {
        moments = m.quant_conv(moments);
    }
    auto parts = moments.chunk(2, 1);
    return {parts[0], parts[1].clamp(-30.0, 20.0)};
}

at::Tensor Vae::decode(const at::Tensor& latents) const {
    const nn::GradOnlyInTraining grad(*impl_->model);
    auto& m = *impl_->model;
    at::Tensor z = m.post_quant_conv ? m.post_quant_conv(latents) : latents;
    return m.decoder(z);
}

}  // namespace sds
