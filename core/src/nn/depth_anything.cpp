#include "sds/depth_anything.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/_upsample_bicubic2d_aa.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/conv_transpose2d.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/upsample_bicubic2d.h>
#include <ATen/ops/upsample_bilinear2d.h>
#include <torch/nn/modules/container/modulelist.h>

#include "io/json_config.h"
#include "io/weights.h"
#include "nn/blocks.h"
#include "nn/module_utils.h"
#include "sds/error.h"
#include "sds/model_folder.h"

namespace sds {

namespace {

// A number list that may hold fractions (reassemble_factors: [4, 2, 1, 0.5]).
std::vector<double> numbers(const JsonConfig& j, const std::string& key) {
    std::vector<double> out;
    if (!j.json().at(key).is_array()) {
        j.fail(key, "must be a list of numbers");
    }
    for (const auto& v : j.json().at(key)) {
        if (!v.is_number()) {
            j.fail(key, "must be a list of numbers");
        }
        out.push_back(v.get<double>());
    }
    return out;
}

}  // namespace

DepthAnythingConfig DepthAnythingConfig::from_folder(const std::filesystem::path& dir) {
    const JsonConfig j = JsonConfig::load(dir / "config.json");
    if (j.string("model_type", "") != "depth_anything") {
        j.fail("model_type", "is '" + j.string("model_type", "") +
                                 "', not depth_anything (a Depth Anything model from "
                                 "transformers, such as Depth-Anything-V2-Small-hf)");
    }
    if (!j.has("backbone_config") || !j.json().at("backbone_config").is_object()) {
        j.fail("backbone_config", "is missing (the DINOv2 backbone's settings)");
    }
    DepthAnythingConfig c;
    const JsonConfig b = JsonConfig::from_json(j.json().at("backbone_config"),
                                               (dir / "config.json").string() + " backbone_config");
    if (b.string("model_type", "dinov2") != "dinov2") {
        b.fail("model_type", "'" + b.string("model_type", "") + "' is not supported (dinov2)");
    }
    c.hidden_size = b.integer("hidden_size", 768);
    c.layers = b.integer("num_hidden_layers", 12);
    c.heads = b.integer("num_attention_heads", 12);
    c.mlp_size =
        static_cast<int64_t>(static_cast<double>(c.hidden_size) * b.number("mlp_ratio", 4.0));
    c.patch_size = b.integer("patch_size", 14);
    c.image_size = b.integer("image_size", 224);
    c.layer_norm_eps = b.number("layer_norm_eps", 1e-6);
    if (b.has("out_indices") && !b.json().at("out_indices").is_null()) {
        c.out_indices = b.integers("out_indices");
    } else if (b.has("out_features") && !b.json().at("out_features").is_null()) {
        c.out_indices.clear();
        for (const std::string& s : b.strings("out_features")) {
            if (s.rfind("stage", 0) != 0) {
                b.fail("out_features", "entry '" + s + "' is not a stage");
            }
            c.out_indices.push_back(s == "stem" ? 0 : std::stoll(s.substr(5)));
        }
    } else {
        c.out_indices = {c.layers};
    }
    std::sort(c.out_indices.begin(), c.out_indices.end());  // the backbone gives them in order
    if (b.boolean("use_swiglu_ffn", false)) {
        b.fail("use_swiglu_ffn", "= true is not supported (DINOv2 giant's feed-forward)");
    }
    if (b.boolean("reshape_hidden_states", true) || !b.boolean("apply_layernorm", true)) {
        b.fail("reshape_hidden_states",
               "must be false and apply_layernorm true, as Depth Anything's backbone has them");
    }
    if (b.string("hidden_act", "gelu") != "gelu" || !b.boolean("qkv_bias", true)) {
        b.fail("hidden_act", "must be gelu with qkv_bias true, as DINOv2 has them");
    }
    for (int64_t i : c.out_indices) {
        if (i < 0 || i > c.layers) {
            b.fail("out_indices", "entry " + std::to_string(i) + " is not a layer (0.." +
                                      std::to_string(c.layers) + ")");
        }
    }
    if (c.hidden_size % c.heads != 0 || c.patch_size < 1 || c.image_size < c.patch_size) {
        b.fail("hidden_size",
               "must divide into num_attention_heads, with image_size at least "
               "patch_size");
    }
    if (j.has("patch_size") && j.integer("patch_size") != c.patch_size) {
        j.fail("patch_size", "differs from the backbone's");
    }
    c.reassemble_hidden_size = j.integer("reassemble_hidden_size", c.hidden_size);
    if (c.reassemble_hidden_size != c.hidden_size) {
        j.fail("reassemble_hidden_size", "differs from the backbone's hidden_size");
    }
    if (j.has("neck_hidden_sizes")) {
        c.neck_hidden_sizes = j.integers("neck_hidden_sizes");
    }
    if (j.has("reassemble_factors")) {
        c.reassemble_factors = numbers(j, "reassemble_factors");
    }
    if (c.neck_hidden_sizes.size() != c.reassemble_factors.size() ||
        c.neck_hidden_sizes.size() != c.out_indices.size()) {
        j.fail("neck_hidden_sizes",
               "must have as many entries as reassemble_factors and the "
               "backbone's out_indices");
    }
    for (double f : c.reassemble_factors) {
        const bool whole = f >= 1 && f == std::floor(f);
        const bool part = f > 0 && f < 1 && 1 / f == std::floor(1 / f);
        if (!whole && !part) {
            j.fail("reassemble_factors",
                   "entry " + std::to_string(f) + " is not a whole number or one over one");
        }
    }
    c.fusion_hidden_size = j.integer("fusion_hidden_size", c.fusion_hidden_size);
    c.head_hidden_size = j.integer("head_hidden_size", c.head_hidden_size);
    if (j.integer("head_in_index", -1) != -1) {
        j.fail("head_in_index", "must be -1 (the last fused feature map)");
    }
    const std::string type = j.string("depth_estimation_type", "relative");
    if (type != "relative" && type != "metric") {
        j.fail("depth_estimation_type", "'" + type + "' is not relative or metric");
    }
    c.metric = type == "metric";
    c.max_depth = j.number("max_depth", 1);

    const auto pre = dir / "preprocessor_config.json";
    if (std::filesystem::exists(pre)) {
        const JsonConfig p = JsonConfig::load(pre);
        if (p.has("size")) {
            const JsonConfig size =
                JsonConfig::from_json(p.json().at("size"), pre.string() + " size");
            c.input_height = size.integer("height");
            c.input_width = size.integer("width");
        }
        c.keep_aspect_ratio = p.boolean("keep_aspect_ratio", false);
        c.multiple = p.integer("ensure_multiple_of", 1);
        if (p.integer("resample", 3) != 3) {
            p.fail("resample", "must be 3 (bicubic)");
        }
        if (!p.boolean("do_resize", true) || !p.boolean("do_rescale", true) ||
            !p.boolean("do_normalize", true) || p.boolean("do_pad", false) ||
            std::abs(p.number("rescale_factor", 1 / 255.0) - 1 / 255.0) > 1e-12) {
            p.fail("do_resize",
                   "the processor must resize, rescale by 1/255 and normalise, "
                   "without padding");
        }
        if (p.has("image_mean")) {
            c.mean = numbers(p, "image_mean");
        }
        if (p.has("image_std")) {
            c.std = numbers(p, "image_std");
        }
        if (c.mean.size() != 3 || c.std.size() != 3 || c.input_height < 1 || c.input_width < 1 ||
            c.multiple < 1) {
            p.fail("image_mean", "the mean and std must have 3 entries and the sizes be positive");
        }
    }
    return c;
}

namespace {

namespace tnn = torch::nn;

struct AttentionImpl : tnn::Module {
    explicit AttentionImpl(int64_t width) {
        attention = register_module("attention", tnn::ModuleHolder<QkvImpl>(width));
        output = register_module("output", tnn::ModuleHolder<OutputImpl>(width));
    }
    struct QkvImpl : tnn::Module {
        explicit QkvImpl(int64_t width) {
            query = register_module("query", nn::Linear(width, width));
            key = register_module("key", nn::Linear(width, width));
            value = register_module("value", nn::Linear(width, width));
        }
        nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
    };
    struct OutputImpl : tnn::Module {
        explicit OutputImpl(int64_t width) {
            dense = register_module("dense", nn::Linear(width, width));
        }
        nn::Linear dense{nullptr};
    };
    at::Tensor forward(const at::Tensor& x, int64_t heads) {
        const int64_t b = x.size(0), n = x.size(1), c = x.size(2);
        const auto split = [&](const at::Tensor& t) {
            return t.view({b, n, heads, c / heads}).transpose(1, 2);
        };
        const at::Tensor q = split(attention->query(x));
        const at::Tensor k = split(attention->key(x));
        const at::Tensor v = split(attention->value(x));
        const at::Tensor out = at::scaled_dot_product_attention(q, k, v);
        return output->dense(out.transpose(1, 2).reshape({b, n, c}));
    }
    tnn::ModuleHolder<QkvImpl> attention{nullptr};
    tnn::ModuleHolder<OutputImpl> output{nullptr};
};
TORCH_MODULE(Attention);

// A per-channel scale (DINOv2's layer scale): lambda1.
struct LayerScaleImpl : tnn::Module {
    explicit LayerScaleImpl(int64_t width) {
        lambda1 = register_parameter("lambda1", nn::uninitialised({width}));
    }
    at::Tensor lambda1;
};
TORCH_MODULE(LayerScale);

struct MlpImpl : tnn::Module {
    MlpImpl(int64_t width, int64_t inner) {
        fc1 = register_module("fc1", nn::Linear(width, inner));
        fc2 = register_module("fc2", nn::Linear(inner, width));
    }
    at::Tensor forward(const at::Tensor& x) { return fc2(at::gelu(fc1(x))); }
    nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

// A pre-norm transformer layer whose two branches are scaled per channel before they are added.
struct LayerImpl : tnn::Module {
    explicit LayerImpl(const DepthAnythingConfig& c) : heads(c.heads) {
        norm1 = register_module("norm1", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
        attention = register_module("attention", Attention(c.hidden_size));
        layer_scale1 = register_module("layer_scale1", LayerScale(c.hidden_size));
        norm2 = register_module("norm2", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
        mlp = register_module("mlp", Mlp(c.hidden_size, c.mlp_size));
        layer_scale2 = register_module("layer_scale2", LayerScale(c.hidden_size));
    }
    at::Tensor forward(const at::Tensor& x) {
        const at::Tensor h = attention->forward(norm1(x), heads) * layer_scale1->lambda1 + x;
        return mlp(norm2(h)) * layer_scale2->lambda1 + h;
    }
    int64_t heads;
    nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    Attention attention{nullptr};
    LayerScale layer_scale1{nullptr}, layer_scale2{nullptr};
    Mlp mlp{nullptr};
};
TORCH_MODULE(Layer);

struct PatchEmbeddingsImpl : tnn::Module {
    explicit PatchEmbeddingsImpl(const DepthAnythingConfig& c) {
        projection = register_module("projection",
                                     nn::conv2d(3, c.hidden_size, c.patch_size, c.patch_size, 0));
    }
    nn::Conv2d projection{nullptr};
};
TORCH_MODULE(PatchEmbeddings);

struct EmbeddingsImpl : tnn::Module {
    explicit EmbeddingsImpl(const DepthAnythingConfig& c) : c(c) {
        const int64_t grid = c.image_size / c.patch_size;
        cls_token = register_parameter("cls_token", nn::uninitialised({1, 1, c.hidden_size}));
        mask_token = register_parameter("mask_token", nn::uninitialised({1, c.hidden_size}));
        position_embeddings = register_parameter(
            "position_embeddings", nn::uninitialised({1, grid * grid + 1, c.hidden_size}));
        patch_embeddings = register_module("patch_embeddings", PatchEmbeddings(c));
    }
    // The patches in a row, after the class token, each plus its position's embedding; the
    // embeddings' grid resized (bicubic) to the picture's where they differ.
    at::Tensor forward(const at::Tensor& pixels) {
        const int64_t b = pixels.size(0);
        const at::Tensor patches = patch_embeddings->projection(pixels).flatten(2).transpose(1, 2);
        const at::Tensor x = at::cat({cls_token.expand({b, 1, c.hidden_size}), patches}, 1);
        const int64_t positions = position_embeddings.size(1) - 1;
        const int64_t h = pixels.size(2) / c.patch_size, w = pixels.size(3) / c.patch_size;
        if (h * w == positions && pixels.size(2) == pixels.size(3)) {
            return x + position_embeddings;
        }
        const auto side = static_cast<int64_t>(std::sqrt(static_cast<double>(positions)));
        const at::Tensor grid = position_embeddings.narrow(1, 1, positions)
                                    .reshape({1, side, side, c.hidden_size})
                                    .permute({0, 3, 1, 2});
        const at::Tensor resized = at::upsample_bicubic2d(grid, {h, w}, false)
                                       .permute({0, 2, 3, 1})
                                       .reshape({1, h * w, c.hidden_size});
        return x + at::cat({position_embeddings.narrow(1, 0, 1), resized}, 1);
    }
    DepthAnythingConfig c;
    at::Tensor cls_token, mask_token, position_embeddings;
    PatchEmbeddings patch_embeddings{nullptr};
};
TORCH_MODULE(Embeddings);

struct EncoderImpl : tnn::Module {
    explicit EncoderImpl(const DepthAnythingConfig& c) {
        layer = register_module("layer", tnn::ModuleList());
        for (int64_t i = 0; i < c.layers; ++i) {
            layer->push_back(Layer(c));
        }
    }
    tnn::ModuleList layer{nullptr};
};
TORCH_MODULE(Encoder);

// DINOv2 as Depth Anything's backbone: the hidden states after the layers out_indices names,
// each through the final layer norm.
struct BackboneImpl : tnn::Module {
    explicit BackboneImpl(const DepthAnythingConfig& c) : c(c) {
        embeddings = register_module("embeddings", Embeddings(c));
        encoder = register_module("encoder", Encoder(c));
        layernorm = register_module("layernorm", nn::LayerNorm(c.hidden_size, c.layer_norm_eps));
    }
    std::vector<at::Tensor> forward(const at::Tensor& pixels) {
        std::vector<at::Tensor> states{embeddings->forward(pixels)};
        for (const auto& l : *encoder->layer) {
            states.push_back(l->as<LayerImpl>()->forward(states.back()));
        }
        std::vector<at::Tensor> out;
        for (int64_t i : c.out_indices) {
            out.push_back(layernorm(states[static_cast<size_t>(i)]));
        }
        return out;
    }
    DepthAnythingConfig c;
    Embeddings embeddings{nullptr};
    Encoder encoder{nullptr};
    nn::LayerNorm layernorm{nullptr};
};
TORCH_MODULE(Backbone);

// A bias-free 3x3 convolution (the neck's convs).
struct PlainConvImpl : tnn::Module {
    PlainConvImpl(int64_t in, int64_t out) {
        weight = register_parameter("weight", nn::uninitialised({out, in, 3, 3}));
    }
    at::Tensor forward(const at::Tensor& x) { return at::conv2d(x, weight, {}, {1, 1}, {1, 1}); }
    at::Tensor weight;
};
TORCH_MODULE(PlainConv);

// A transposed convolution of kernel and stride `factor` (the reassembly's enlargement).
struct UpConvImpl : tnn::Module {
    UpConvImpl(int64_t channels, int64_t factor) : factor(factor) {
        weight =
            register_parameter("weight", nn::uninitialised({channels, channels, factor, factor}));
        bias = register_parameter("bias", nn::uninitialised({channels}));
    }
    at::Tensor forward(const at::Tensor& x) {
        return at::conv_transpose2d(x, weight, bias, {factor, factor});
    }
    int64_t factor;
    at::Tensor weight, bias;
};
TORCH_MODULE(UpConv);

// One hidden state made a feature map: a 1x1 projection to `channels`, then enlarged
// (a transposed convolution), kept, or shrunk (a strided 3x3 convolution) by `factor`.
struct ReassembleLayerImpl : tnn::Module {
    ReassembleLayerImpl(int64_t in, int64_t channels, double factor) {
        projection = register_module("projection", nn::conv2d(in, channels, 1));
        if (factor > 1) {
            up = register_module("resize", UpConv(channels, static_cast<int64_t>(factor)));
        } else if (factor < 1) {
            down = register_module("resize",
                                   nn::conv2d(channels, channels, 3, std::lround(1 / factor), 1));
        }
    }
    at::Tensor forward(const at::Tensor& x) {
        const at::Tensor p = projection(x);
        return up ? up(p) : down ? down(p) : p;
    }
    nn::Conv2d projection{nullptr}, down{nullptr};
    UpConv up{nullptr};
};
TORCH_MODULE(ReassembleLayer);

struct ResidualUnitImpl : tnn::Module {
    explicit ResidualUnitImpl(int64_t width) {
        convolution1 = register_module("convolution1", nn::conv2d(width, width, 3, 1, 1));
        convolution2 = register_module("convolution2", nn::conv2d(width, width, 3, 1, 1));
    }
    at::Tensor forward(const at::Tensor& x) {
        return convolution2(at::relu(convolution1(at::relu(x)))) + x;
    }
    nn::Conv2d convolution1{nullptr}, convolution2{nullptr};
};
TORCH_MODULE(ResidualUnit);

// Fusion: the map so far plus a residual unit of the next one up (resized to it where it
// differs), a second residual unit, enlarged (bilinear, corners aligned) to `size` or twice,
// then a 1x1 projection.
struct FusionLayerImpl : tnn::Module {
    explicit FusionLayerImpl(int64_t width) {
        projection = register_module("projection", nn::conv2d(width, width, 1));
        residual_layer1 = register_module("residual_layer1", ResidualUnit(width));
        residual_layer2 = register_module("residual_layer2", ResidualUnit(width));
    }
    at::Tensor forward(at::Tensor x, const at::Tensor& residual, std::vector<int64_t> size) {
        if (residual.defined()) {
            at::Tensor r = residual;
            if (r.sizes() != x.sizes()) {
                r = at::upsample_bilinear2d(r, {x.size(2), x.size(3)}, false);
            }
            x = x + residual_layer1(r);
        }
        x = residual_layer2(x);
        if (size.empty()) {
            size = {x.size(2) * 2, x.size(3) * 2};
        }
        return projection(at::upsample_bilinear2d(x, size, true));
    }
    nn::Conv2d projection{nullptr};
    ResidualUnit residual_layer1{nullptr}, residual_layer2{nullptr};
};
TORCH_MODULE(FusionLayer);

struct StageImpl : tnn::Module {
    StageImpl() { layers = register_module("layers", tnn::ModuleList()); }
    tnn::ModuleList layers{nullptr};
};
TORCH_MODULE(Stage);

struct NeckImpl : tnn::Module {
    explicit NeckImpl(const DepthAnythingConfig& c) {
        reassemble_stage = register_module("reassemble_stage", Stage());
        convs = register_module("convs", tnn::ModuleList());
        fusion_stage = register_module("fusion_stage", Stage());
        for (size_t i = 0; i < c.neck_hidden_sizes.size(); ++i) {
            reassemble_stage->layers->push_back(
                ReassembleLayer(c.hidden_size, c.neck_hidden_sizes[i], c.reassemble_factors[i]));
            convs->push_back(PlainConv(c.neck_hidden_sizes[i], c.fusion_hidden_size));
            fusion_stage->layers->push_back(FusionLayer(c.fusion_hidden_size));
        }
    }
    // The hidden states (class token first) -> the last fused map.
    at::Tensor forward(const std::vector<at::Tensor>& states, int64_t h, int64_t w) {
        std::vector<at::Tensor> maps;
        for (size_t i = 0; i < states.size(); ++i) {
            const at::Tensor& s = states[i];
            const at::Tensor grid = s.narrow(1, 1, s.size(1) - 1)
                                        .reshape({s.size(0), h, w, s.size(2)})
                                        .permute({0, 3, 1, 2});
            const at::Tensor m =
                reassemble_stage->layers->at<ReassembleLayerImpl>(i).forward(grid.contiguous());
            maps.push_back(convs->at<PlainConvImpl>(i).forward(m));
        }
        // From the smallest map up, each fused map enlarged to the next one's size.
        at::Tensor fused;
        const size_t n = maps.size();
        for (size_t k = 0; k < n; ++k) {
            const at::Tensor& m = maps[n - 1 - k];
            std::vector<int64_t> size;
            if (k + 1 < n) {
                size = {maps[n - 2 - k].size(2), maps[n - 2 - k].size(3)};
            }
            auto& layer = fusion_stage->layers->at<FusionLayerImpl>(k);
            fused = fused.defined() ? layer.forward(fused, m, size) : layer.forward(m, {}, size);
        }
        return fused;
    }
    Stage reassemble_stage{nullptr}, fusion_stage{nullptr};
    tnn::ModuleList convs{nullptr};
};
TORCH_MODULE(Neck);

struct HeadImpl : tnn::Module {
    explicit HeadImpl(const DepthAnythingConfig& c) : c(c) {
        const int64_t f = c.fusion_hidden_size;
        conv1 = register_module("conv1", nn::conv2d(f, f / 2, 3, 1, 1));
        conv2 = register_module("conv2", nn::conv2d(f / 2, c.head_hidden_size, 3, 1, 1));
        conv3 = register_module("conv3", nn::conv2d(c.head_hidden_size, 1, 1));
    }
    at::Tensor forward(const at::Tensor& x, int64_t h, int64_t w) {
        at::Tensor d =
            at::upsample_bilinear2d(conv1(x), {h * c.patch_size, w * c.patch_size}, true);
        d = conv3(at::relu(conv2(d)));
        d = c.metric ? at::sigmoid(d) : at::relu(d);
        return (d * c.max_depth).squeeze(1);
    }
    DepthAnythingConfig c;
    nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
};
TORCH_MODULE(Head);

struct ModelImpl : tnn::Module {
    explicit ModelImpl(const DepthAnythingConfig& c) : c(c) {
        backbone = register_module("backbone", Backbone(c));
        neck = register_module("neck", Neck(c));
        head = register_module("head", Head(c));
    }
    DepthAnythingConfig c;
    Backbone backbone{nullptr};
    Neck neck{nullptr};
    Head head{nullptr};
};
TORCH_MODULE(Model);

// The image processor's output size (its get_resize_output_image_size).
std::pair<int64_t, int64_t> input_size(const DepthAnythingConfig& c, int64_t height,
                                       int64_t width) {
    double sh = static_cast<double>(c.input_height) / static_cast<double>(height);
    double sw = static_cast<double>(c.input_width) / static_cast<double>(width);
    if (c.keep_aspect_ratio) {  // scale as little as possible
        if (std::abs(1 - sw) < std::abs(1 - sh)) {
            sh = sw;
        } else {
            sw = sh;
        }
    }
    // Python's round() (halves to the even neighbour, as nearbyint in the default rounding
    // mode) to a multiple; the sizes are positive, so the processor's floor of 0 never acts.
    const auto constrain = [&](double v) {
        return static_cast<int64_t>(std::nearbyint(v / static_cast<double>(c.multiple))) *
               c.multiple;
    };
    return {constrain(sh * static_cast<double>(height)),
            constrain(sw * static_cast<double>(width))};
}

}  // namespace

struct DepthAnything::Impl {
    Model model{nullptr};
    mutable std::mutex mutex;  // one forward at a time (previews and generations share a model)
};

DepthAnything::DepthAnything(const DepthAnythingConfig& config) : impl_(std::make_unique<Impl>()) {
    impl_->model = Model(config);
    impl_->model->eval();
}
DepthAnything::~DepthAnything() = default;
DepthAnything::DepthAnything(DepthAnything&&) noexcept = default;
DepthAnything& DepthAnything::operator=(DepthAnything&&) noexcept = default;

const DepthAnythingConfig& DepthAnything::config() const {
    return impl_->model->c;
}

DepthAnything DepthAnything::load(const std::filesystem::path& dir) {
    if (!std::filesystem::is_directory(dir)) {
        throw FileError(dir.string() +
                        ": no such Depth Anything folder (a transformers model "
                        "folder with config.json and model.safetensors)");
    }
    DepthAnything model(DepthAnythingConfig::from_folder(dir));
    const ComponentFiles files = ModelFolder::component_folder(dir, "model");
    const DepthAnythingConfig& c = model.config();
    LoadOptions opts;
    opts.may_ignore = {"backbone.embeddings.mask_token"};
    opts.config_hint = "depth anything config: hidden_size " + std::to_string(c.hidden_size) +
                       ", " + std::to_string(c.layers) + " layers, patch_size " +
                       std::to_string(c.patch_size) + ", image_size " +
                       std::to_string(c.image_size) + ", neck_hidden_sizes [" +
                       nn::join(c.neck_hidden_sizes) + "], fusion_hidden_size " +
                       std::to_string(c.fusion_hidden_size);
    load_weights_into(*model.impl_->model, WeightFiles(files.weights), opts);
    return model;
}

std::shared_ptr<const DepthAnything> DepthAnything::cached(const std::filesystem::path& dir) {
    // The last folder's model alone: another folder's replaces it (a model still in use lives on
    // until its users let it go).
    static std::mutex mutex;
    static std::filesystem::path held;
    static std::shared_ptr<const DepthAnything> model;
    const std::filesystem::path key = std::filesystem::absolute(dir).lexically_normal();
    const std::lock_guard lock(mutex);
    if (!model || key != held) {
        model.reset();
        model = std::make_shared<const DepthAnything>(load(dir));
        held = key;
    }
    return model;
}

at::Tensor DepthAnything::pixel_values(const Image& picture) const {
    const DepthAnythingConfig& c = config();
    if (picture.empty()) {
        throw Error("depth anything: the picture is empty");
    }
    // Height x width x 3 bytes seen as [1, 3, H, W] (channels last), as the processor holds a
    // picture, resized by torch's antialiased bicubic kernel for bytes.
    at::Tensor x = at::from_blob(const_cast<uint8_t*>(picture.rgb.data()),
                                 {picture.height, picture.width, 3}, at::kByte)
                       .permute({2, 0, 1})
                       .unsqueeze(0);
    const auto [h, w] = input_size(c, picture.height, picture.width);
    if (h < c.patch_size || w < c.patch_size) {
        throw Error("depth anything: a " + std::to_string(picture.width) + "x" +
                    std::to_string(picture.height) + " picture is too small for the model");
    }
    if (h != picture.height || w != picture.width) {
        x = at::_upsample_bicubic2d_aa(x, {h, w}, false);
    }
    // x / 255 normalised, as the processor folds it: (x - mean x 255) / (std x 255) in float32.
    const auto column = [](const std::vector<double>& v) {
        return (at::tensor(std::vector<float>(v.begin(), v.end())) * static_cast<float>(255.0))
            .view({1, 3, 1, 1});
    };
    return (x.to(at::kFloat) - column(c.mean)) / column(c.std);
}

at::Tensor DepthAnything::forward(const at::Tensor& pixel_values) const {
    const DepthAnythingConfig& c = config();
    if (pixel_values.dim() != 4 || pixel_values.size(1) != 3 ||
        pixel_values.size(2) % c.patch_size != 0 || pixel_values.size(3) % c.patch_size != 0) {
        throw Error("depth anything: the pixels must be [B, 3, H, W] with H and W multiples of " +
                    std::to_string(c.patch_size));
    }
    const std::lock_guard lock(impl_->mutex);
    at::NoGradGuard no_grad;
    const at::Tensor x = pixel_values.to(at::kFloat);
    const int64_t h = x.size(2) / c.patch_size, w = x.size(3) / c.patch_size;
    auto& m = *impl_->model;
    return m.head->forward(m.neck->forward(m.backbone->forward(x), h, w), h, w);
}

Image DepthAnything::depth_map(const Image& picture) const {
    const at::Tensor depth = forward(pixel_values(picture));
    // Resized to the picture (bicubic), then (d - least) / (most - least) x 255, cut to bytes.
    const at::Tensor d =
        at::upsample_bicubic2d(depth.unsqueeze(1), {picture.height, picture.width}, false)
            .squeeze();
    const at::Tensor least = d.min(), most = d.max();
    Image out{picture.width, picture.height,
              std::vector<uint8_t>(static_cast<size_t>(picture.width) * picture.height * 3, 0)};
    if (!(most.item<float>() > least.item<float>())) {
        return out;  // a flat depth: nothing near or far
    }
    const at::Tensor bytes = (((d - least) / (most - least)) * 255.0f).to(at::kByte).contiguous();
    const uint8_t* p = bytes.data_ptr<uint8_t>();
    for (size_t i = 0; i < static_cast<size_t>(picture.width) * picture.height; ++i) {
        out.rgb[3 * i] = out.rgb[3 * i + 1] = out.rgb[3 * i + 2] = p[i];
    }
    return out;
}

}  // namespace sds
