#include "sds/controlnet.h"

#include <algorithm>
#include <cctype>
#include <functional>

#include <ATen/ops/logspace.h>
#include <torch/types.h>

#include "io/json_config.h"
#include "io/weights.h"
#include "nn/module_utils.h"
#include "nn/unet_parts.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"
#include "sds/safetensors.h"

namespace sds {

ControlNetConfig ControlNetConfig::from_file(const std::filesystem::path& path) {
    const JsonConfig j = JsonConfig::load(path);
    ControlNetConfig c;
    c.unet = nn::unet_config_from(j, false);
    c.conditioning_channels = j.integer("conditioning_channels", c.conditioning_channels);
    if (j.has("conditioning_embedding_out_channels")) {
        c.conditioning_embedding_out_channels = j.integers("conditioning_embedding_out_channels");
    }
    if (c.conditioning_embedding_out_channels.empty()) {
        j.fail("conditioning_embedding_out_channels", "must have at least one entry");
    }
    const std::string order = j.string("controlnet_conditioning_channel_order", "rgb");
    if (order != "rgb" && order != "bgr") {
        j.fail("controlnet_conditioning_channel_order", "'" + order + "' is not rgb or bgr");
    }
    c.bgr = order == "bgr";
    c.global_pool_conditions = j.boolean("global_pool_conditions", false);
    return c;
}

namespace {

namespace tnn = torch::nn;

// ControlNetConditioningEmbedding: the conditioning image down to the latents' size (a stride-2
// convolution after each pair), into the first block's channels.
struct CondEmbeddingImpl : tnn::Module {
    CondEmbeddingImpl(int64_t in, const std::vector<int64_t>& channels, int64_t out) {
        conv_in = register_module("conv_in", nn::conv2d(in, channels[0], 3, 1, 1));
        blocks = register_module("blocks", tnn::ModuleList());
        for (size_t i = 0; i + 1 < channels.size(); ++i) {
            blocks->push_back(nn::conv2d(channels[i], channels[i], 3, 1, 1));
            blocks->push_back(nn::conv2d(channels[i], channels[i + 1], 3, 2, 1));
        }
        conv_out = register_module("conv_out", nn::conv2d(channels.back(), out, 3, 1, 1));
    }
    at::Tensor forward(const at::Tensor& cond) {
        at::Tensor x = nn::silu_temp(conv_in(cond));
        for (const auto& block : *blocks) {
            x = nn::silu_temp(block->as<nn::Conv2dImpl>()->forward(x));
        }
        return conv_out(x);
    }
    nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
    tnn::ModuleList blocks{nullptr};
};
TORCH_MODULE(CondEmbedding);

struct ControlNetModuleImpl : tnn::Module {
    explicit ControlNetModuleImpl(const ControlNetConfig& config) : c(config) {
        const UNetConfig& u = c.unet;
        const auto& boc = u.block_out_channels;
        const int64_t temb = boc[0] * 4;
        conv_in = register_module("conv_in", nn::conv2d(u.in_channels, boc[0], 3, 1, 1));
        time_embedding = register_module("time_embedding", nn::TimestepEmbedding(boc[0], temb));
        if (u.text_time) {
            add_embedding = register_module(
                "add_embedding",
                nn::TimestepEmbedding(u.projection_class_embeddings_input_dim, temb));
        }
        cond_embedding = register_module(
            "controlnet_cond_embedding",
            CondEmbedding(c.conditioning_channels, c.conditioning_embedding_out_channels, boc[0]));
        down_blocks = register_module("down_blocks", nn::down_blocks_for(u));
        mid_block = register_module("mid_block", nn::mid_block_for(u));
        // A 1x1 convolution for each skip connection: conv_in's, each layer's, each
        // downsampler's.
        zero_convs = register_module("controlnet_down_blocks", tnn::ModuleList());
        zero_convs->push_back(nn::conv2d(boc[0], boc[0], 1));
        for (size_t i = 0; i < boc.size(); ++i) {
            const int64_t n = u.layers_per_block + (i + 1 < boc.size() ? 1 : 0);
            for (int64_t k = 0; k < n; ++k) {
                zero_convs->push_back(nn::conv2d(boc[i], boc[i], 1));
            }
        }
        mid_conv = register_module("controlnet_mid_block", nn::conv2d(boc.back(), boc.back(), 1));
    }

    UNet::Residuals forward(const at::Tensor& sample, const at::Tensor& timesteps,
                            const at::Tensor& ctx, at::Tensor cond, double scale, bool guess_mode,
                            const UNet::Added& added) {
        const UNetConfig& u = c.unet;
        if (c.bgr) {
            cond = cond.flip({1});
        }
        const at::Tensor temb =
            nn::embed_time(u, time_embedding, add_embedding, sample, timesteps, added);
        at::Tensor x = conv_in(sample) + cond_embedding(cond);
        std::vector<at::Tensor> skips = {x};
        for (const auto& block : *down_blocks) {
            x = block->as<nn::DownBlockImpl>()->forward(x, temb, ctx, skips);
        }
        x = mid_block(x, temb, ctx);
        UNet::Residuals out;
        for (size_t k = 0; k < skips.size(); ++k) {
            out.down.push_back(zero_convs[k]->as<nn::Conv2dImpl>()->forward(skips[k]));
        }
        out.mid = mid_conv(x);
        if (guess_mode && !c.global_pool_conditions) {
            // 0.1 for the first to 1 for the mid block's, as torch.logspace(-1, 0, n + 1).
            const auto n = static_cast<int64_t>(out.down.size());
            const at::Tensor scales =
                at::logspace(-1, 0, n + 1, 10.0, at::TensorOptions().device(x.device())) * scale;
            for (int64_t k = 0; k < n; ++k) {
                out.down[static_cast<size_t>(k)] = out.down[static_cast<size_t>(k)] * scales[k];
            }
            out.mid = out.mid * scales[n];
        } else {
            for (at::Tensor& r : out.down) {
                r = r * scale;
            }
            out.mid = out.mid * scale;
        }
        if (c.global_pool_conditions) {
            for (at::Tensor& r : out.down) {
                r = r.mean({2, 3}, true);
            }
            out.mid = out.mid.mean({2, 3}, true);
        }
        return out;
    }

    ControlNetConfig c;
    nn::Conv2d conv_in{nullptr}, mid_conv{nullptr};
    nn::TimestepEmbedding time_embedding{nullptr}, add_embedding{nullptr};
    CondEmbedding cond_embedding{nullptr};
    tnn::ModuleList down_blocks{nullptr}, zero_convs{nullptr};
    nn::MidBlock mid_block{nullptr};
};
TORCH_MODULE(ControlNetModule);

}  // namespace

struct ControlNet::Impl {
    ControlNetModule model{nullptr};
};

ControlNet::ControlNet(const ControlNetConfig& config) : impl_(std::make_unique<Impl>()) {
    impl_->model = ControlNetModule(config);
    impl_->model->eval();
}
ControlNet::~ControlNet() = default;
ControlNet::ControlNet(ControlNet&&) noexcept = default;
ControlNet& ControlNet::operator=(ControlNet&&) noexcept = default;

int64_t ControlNet::downscale() const {
    return int64_t{1} << (config().conditioning_embedding_out_channels.size() - 1);
}
const ControlNetConfig& ControlNet::config() const {
    return impl_->model->c;
}
int64_t ControlNet::parameter_count() const {
    return nn::count_parameters(*impl_->model);
}
c10::Device ControlNet::device() const {
    return nn::module_options(*impl_->model).device();
}
c10::ScalarType ControlNet::dtype() const {
    return c10::typeMetaToScalarType(nn::module_options(*impl_->model).dtype());
}
void ControlNet::to(c10::Device device, c10::ScalarType dtype) {
    impl_->model->to(device, dtype);
}

void ControlNet::load_weights(const std::vector<std::filesystem::path>& files,
                              const std::string& original_prefix, bool original) {
    const UNetConfig& u = config().unet;
    LoadOptions opts;
    if (original) {
        const int cond_blocks =
            2 * (static_cast<int>(config().conditioning_embedding_out_channels.size()) - 1);
        opts.rename = [u, cond_blocks](const std::string& name) {
            return original_controlnet_key(name, u, cond_blocks);
        };
        opts.prefix = opts.scope = original_prefix;
    }
    opts.config_hint = "controlnet config: block_out_channels [" + nn::join(u.block_out_channels) +
                       "], layers_per_block " + std::to_string(u.layers_per_block) +
                       ", conditioning_embedding_out_channels [" +
                       nn::join(config().conditioning_embedding_out_channels) + "]";
    load_weights_into(*impl_->model, WeightFiles(files), opts);
}

namespace {

// What one ControlNet file holds: which names, and the conditioning embedding its shapes give.
struct SingleFile {
    bool original = false;  // the original layout, names under `prefix`
    std::string prefix;
    ControlNetConfig config;
};

SingleFile inspect_single_file(const std::filesystem::path& path, const UNetConfig& unet) {
    const SafeTensorsFile file = SafeTensorsFile::open(path);
    SingleFile s;
    // The conditioning embedding's first convolution, and the name of its K-th stride-2 one;
    // the latents' convolution.
    std::string conv_in, latents_in = "conv_in.weight";
    std::function<std::string(size_t)> stride_conv;
    if (file.contains("controlnet_cond_embedding.conv_in.weight")) {
        conv_in = "controlnet_cond_embedding.conv_in.weight";
        stride_conv = [](size_t k) {
            return "controlnet_cond_embedding.blocks." + std::to_string(2 * k + 1) + ".weight";
        };
    } else {
        for (const std::string prefix : {"control_model.", ""}) {
            if (file.contains(prefix + "input_hint_block.0.weight")) {
                s.original = true;
                s.prefix = prefix;
                conv_in = prefix + "input_hint_block.0.weight";
                latents_in = prefix + "input_blocks.0.0.weight";
                // conv_in, then SiLU, conv, SiLU, stride conv, SiLU: blocks.2K+1 at 4K + 4.
                stride_conv = [prefix](size_t k) {
                    return prefix + "input_hint_block." + std::to_string(4 * k + 4) + ".weight";
                };
                break;
            }
        }
    }
    if (conv_in.empty()) {
        throw ModelError(path.string() +
                         ": not a ControlNet (it has neither controlnet_cond_embedding.conv_in "
                         "nor input_hint_block.0 weights)");
    }
    const auto conv_shape = [&](const std::string& name) {
        const auto& shape = file.info(name).shape;
        if (shape.size() != 4) {
            throw ModelError(path.string() + ": " + name + " is " + shape_text(shape) +
                             ", not a convolution's weight");
        }
        return shape;
    };
    s.config.unet = unet;
    // The latents without an inpainting UNet's mask and masked image: the ControlNet of an
    // inpainting model reads the latents alone.
    s.config.unet.in_channels = unet.out_channels;
    if (file.contains(latents_in) && conv_shape(latents_in)[1] != unet.out_channels) {
        throw ModelError(path.string() + ": a ControlNet for another model (" + latents_in +
                         " takes " + std::to_string(conv_shape(latents_in)[1]) +
                         " channels, the model's latents have " +
                         std::to_string(unet.out_channels) + ")");
    }
    s.config.conditioning_channels = conv_shape(conv_in)[1];
    s.config.conditioning_embedding_out_channels = {conv_shape(conv_in)[0]};
    for (size_t k = 0; file.contains(stride_conv(k)); ++k) {
        s.config.conditioning_embedding_out_channels.push_back(conv_shape(stride_conv(k))[0]);
    }
    // The shuffle ControlNet averages its residuals over the picture, which its weights do not
    // say: A1111's ControlNet extension goes by the file's name (an SD 1.x/2.x one with
    // "shuffle" in it), and so does this.
    std::string stem = path.stem().string();
    std::transform(stem.begin(), stem.end(), stem.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    s.config.global_pool_conditions = !unet.text_time && stem.find("shuffle") != std::string::npos;
    return s;
}

}  // namespace

ControlNet ControlNet::load(const std::filesystem::path& path, const UNetConfig& unet,
                            c10::Device device, c10::ScalarType dtype) {
    if (std::filesystem::is_regular_file(path)) {
        const SingleFile s = inspect_single_file(path, unet);
        ControlNet net(s.config);
        net.to(device, dtype);
        net.load_weights({path}, s.prefix, s.original);
        return net;
    }
    if (!std::filesystem::is_directory(path)) {
        throw FileError(path.string() +
                        ": no such ControlNet (a diffusers ControlNetModel folder: config.json "
                        "and its weights, or one .safetensors or .pth file)");
    }
    const ComponentFiles files = ModelFolder::component_folder(path, "diffusion_pytorch_model");
    const ControlNetConfig config = ControlNetConfig::from_file(files.config);
    const UNetConfig& u = config.unet;
    const auto fits = [&](bool ok, const std::string& what) {
        if (!ok) {
            throw ModelError(files.config.string() + ": a ControlNet for another model (" + what +
                             ")");
        }
    };
    fits(u.cross_attention_dim == unet.cross_attention_dim,
         "cross_attention_dim " + std::to_string(u.cross_attention_dim) + ", the model's " +
             std::to_string(unet.cross_attention_dim));
    fits(u.in_channels == unet.out_channels, "in_channels " + std::to_string(u.in_channels) +
                                                 ", the model's latents have " +
                                                 std::to_string(unet.out_channels));
    fits(u.text_time == unet.text_time, u.text_time ? "an SDXL ControlNet; the model is not SDXL"
                                                    : "not an SDXL ControlNet; the model is SDXL");
    fits(u.block_out_channels == unet.block_out_channels &&
             u.layers_per_block == unet.layers_per_block,
         "block_out_channels [" + nn::join(u.block_out_channels) + "] and layers_per_block " +
             std::to_string(u.layers_per_block) + ", the model's [" +
             nn::join(unet.block_out_channels) + "] and " + std::to_string(unet.layers_per_block));
    ControlNet net(config);
    net.to(device, dtype);
    net.load_weights(files.weights);
    return net;
}

UNet::Residuals ControlNet::forward(const at::Tensor& sample, const at::Tensor& timesteps,
                                    const at::Tensor& context, const at::Tensor& cond, double scale,
                                    bool guess_mode, const UNet::Added& added) const {
    const ControlNetConfig& c = config();
    const UNetConfig& u = c.unet;
    const bool given = added.text_embeds.defined() && added.time_ids.defined();
    if (u.text_time != given) {
        throw Error(u.text_time ? "controlnet: an SDXL ControlNet needs the pooled text embedding "
                                  "and the size ids"
                                : "controlnet: added conditioning given to a ControlNet without "
                                  "addition_embed_type");
    }
    const int64_t f = downscale();
    if (cond.dim() != 4 || cond.size(0) != sample.size(0) ||
        cond.size(1) != c.conditioning_channels || cond.size(2) != sample.size(2) * f ||
        cond.size(3) != sample.size(3) * f) {
        throw Error(
            "controlnet: the conditioning image must be [" + std::to_string(sample.size(0)) + ", " +
            std::to_string(c.conditioning_channels) + ", " + std::to_string(sample.size(2) * f) +
            ", " + std::to_string(sample.size(3) * f) + "] for latents of " +
            std::to_string(sample.size(2)) + "x" + std::to_string(sample.size(3)));
    }
    const nn::GradOnlyInTraining grad(*impl_->model);
    return impl_->model->forward(sample, timesteps, context, cond, scale, guess_mode, added);
}

}  // namespace sds
