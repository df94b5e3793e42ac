#include "sds/t2i_adapter.h"

#include <fstream>

#include <ATen/ops/avg_pool2d.h>
#include <ATen/ops/pixel_unshuffle.h>
#include <ATen/ops/relu.h>
#include <torch/nn/modules/container/modulelist.h>
#include <nlohmann/json.hpp>

#include "io/json_config.h"
#include "io/weights.h"
#include "nn/blocks.h"
#include "nn/module_utils.h"
#include "sds/error.h"
#include "sds/model_folder.h"

namespace sds {

T2IAdapterConfig T2IAdapterConfig::from_file(const std::filesystem::path& path) {
    const JsonConfig j = JsonConfig::load(path);
    T2IAdapterConfig c;
    c.in_channels = j.integer("in_channels", c.in_channels);
    if (j.has("channels")) {
        c.channels = j.integers("channels");
    }
    c.num_res_blocks = j.integer("num_res_blocks", c.num_res_blocks);
    c.downscale_factor = j.integer("downscale_factor", c.downscale_factor);
    c.adapter_type = j.string("adapter_type", c.adapter_type);
    if (c.adapter_type != "full_adapter" && c.adapter_type != "full_adapter_xl" &&
        c.adapter_type != "light_adapter") {
        j.fail("adapter_type", "'" + c.adapter_type +
                                   "' is not supported (full_adapter, full_adapter_xl or "
                                   "light_adapter)");
    }
    if (c.channels.empty()) {
        j.fail("channels", "is empty");
    }
    for (int64_t v : c.channels) {
        if (v < 1 || (c.adapter_type == "light_adapter" && v % 4 != 0)) {
            j.fail("channels", "entry " + std::to_string(v) + " is not a usable width");
        }
    }
    if (c.in_channels < 1 || c.num_res_blocks < 0 || c.downscale_factor < 1) {
        j.fail("in_channels", "in_channels, num_res_blocks and downscale_factor must be positive");
    }
    return c;
}

namespace {

namespace tnn = torch::nn;

// A residual pair of convolutions: 3x3, ReLU, then 1x1 (a full adapter's) or 3x3 (a light
// adapter's), added to the input.
struct ResBlockImpl : tnn::Module {
    ResBlockImpl(int64_t channels, int64_t second_kernel) {
        block1 = register_module("block1", nn::conv2d(channels, channels, 3, 1, 1));
        block2 = register_module(
            "block2", nn::conv2d(channels, channels, second_kernel, 1, second_kernel / 2));
    }
    at::Tensor forward(const at::Tensor& x) { return block2(at::relu(block1(x))) + x; }
    nn::Conv2d block1{nullptr}, block2{nullptr};
};
TORCH_MODULE(ResBlock);

// One level: halved first (an average over 2x2, the last row or column alone where the size is
// odd) where `down`, then the width changed by a 1x1 convolution and the residual blocks; a
// light adapter's narrows to a quarter for them and widens back after.
struct AdapterBlockImpl : tnn::Module {
    AdapterBlockImpl(int64_t in, int64_t out, int64_t blocks, bool down, bool light) : down(down) {
        const int64_t inner = light ? out / 4 : out;
        if (light || in != out) {
            in_conv = register_module("in_conv", nn::conv2d(in, inner, 1));
        }
        resnets = register_module("resnets", tnn::ModuleList());
        for (int64_t k = 0; k < blocks; ++k) {
            resnets->push_back(ResBlock(inner, light ? 3 : 1));
        }
        if (light) {
            out_conv = register_module("out_conv", nn::conv2d(inner, out, 1));
        }
    }
    at::Tensor forward(at::Tensor x) {
        if (down) {
            x = at::avg_pool2d(x, {2, 2}, {2, 2}, {0, 0}, /*ceil_mode=*/true);
        }
        if (in_conv) {
            x = in_conv(x);
        }
        for (const auto& r : *resnets) {
            x = r->as<ResBlockImpl>()->forward(x);
        }
        return out_conv ? out_conv(x) : x;
    }
    bool down;
    nn::Conv2d in_conv{nullptr}, out_conv{nullptr};
    tnn::ModuleList resnets{nullptr};
};
TORCH_MODULE(AdapterBlock);

// diffusers' FullAdapter, FullAdapterXL and LightAdapter under one name ("adapter."): the
// picture's pixels unshuffled into channels (downscale_factor^2 times more), a convolution in
// (full adapters), then one block per feature map.
struct AdapterImpl : tnn::Module {
    explicit AdapterImpl(const T2IAdapterConfig& c) : c(c) {
        const auto& ch = c.channels;
        const int64_t in = c.in_channels * c.downscale_factor * c.downscale_factor;
        const int64_t n = static_cast<int64_t>(ch.size());
        body = register_module("body", tnn::ModuleList());
        if (c.adapter_type == "light_adapter") {
            body->push_back(AdapterBlock(in, ch[0], c.num_res_blocks, false, true));
            for (int64_t i = 0; i + 1 < n; ++i) {
                body->push_back(AdapterBlock(ch[i], ch[i + 1], c.num_res_blocks, true, true));
            }
            body->push_back(AdapterBlock(ch[n - 1], ch[n - 1], c.num_res_blocks, true, true));
            return;
        }
        conv_in = register_module("conv_in", nn::conv2d(in, ch[0], 3, 1, 1));
        for (int64_t i = 0; i < n; ++i) {
            if (c.adapter_type == "full_adapter_xl") {  // one halving, at the third map
                body->push_back(AdapterBlock(i == 1 || i == 2 ? ch[i - 1] : ch[i], ch[i],
                                             c.num_res_blocks, i == 2, false));
            } else {
                body->push_back(AdapterBlock(i == 0 ? ch[0] : ch[i - 1], ch[i], c.num_res_blocks,
                                             i > 0, false));
            }
        }
    }
    std::vector<at::Tensor> forward(const at::Tensor& image) {
        at::Tensor x = at::pixel_unshuffle(image, c.downscale_factor);
        if (conv_in) {
            x = conv_in(x);
        }
        std::vector<at::Tensor> features;
        for (const auto& block : *body) {
            x = block->as<AdapterBlockImpl>()->forward(x);
            features.push_back(x);
        }
        return features;
    }
    T2IAdapterConfig c;
    nn::Conv2d conv_in{nullptr};
    tnn::ModuleList body{nullptr};
};
TORCH_MODULE(Adapter);

struct T2IAdapterModuleImpl : tnn::Module {
    explicit T2IAdapterModuleImpl(const T2IAdapterConfig& c) {
        adapter = register_module("adapter", Adapter(c));
    }
    Adapter adapter{nullptr};
};
TORCH_MODULE(T2IAdapterModule);

}  // namespace

struct T2IAdapter::Impl {
    T2IAdapterModule model{nullptr};
};

T2IAdapter::T2IAdapter(const T2IAdapterConfig& config) : impl_(std::make_unique<Impl>()) {
    impl_->model = T2IAdapterModule(config);
    impl_->model->eval();
}
T2IAdapter::~T2IAdapter() = default;
T2IAdapter::T2IAdapter(T2IAdapter&&) noexcept = default;
T2IAdapter& T2IAdapter::operator=(T2IAdapter&&) noexcept = default;

const T2IAdapterConfig& T2IAdapter::config() const {
    return impl_->model->adapter->c;
}
int64_t T2IAdapter::parameter_count() const {
    return nn::count_parameters(*impl_->model);
}
c10::Device T2IAdapter::device() const {
    return nn::module_options(*impl_->model).device();
}
c10::ScalarType T2IAdapter::dtype() const {
    return c10::typeMetaToScalarType(nn::module_options(*impl_->model).dtype());
}
void T2IAdapter::to(c10::Device device, c10::ScalarType dtype) {
    impl_->model->to(device, dtype);
}

void T2IAdapter::load_weights(const std::vector<std::filesystem::path>& files) {
    const T2IAdapterConfig& c = config();
    LoadOptions opts;
    opts.config_hint = "t2i adapter config: " + c.adapter_type + ", channels [" +
                       nn::join(c.channels) + "], in_channels " + std::to_string(c.in_channels) +
                       ", downscale_factor " + std::to_string(c.downscale_factor);
    load_weights_into(*impl_->model, WeightFiles(files), opts);
}

bool T2IAdapter::is_adapter_folder(const std::filesystem::path& path) {
    const auto config = path / "config.json";
    if (!std::filesystem::is_regular_file(config)) {
        return false;
    }
    std::ifstream in(config);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    return j.is_object() && j.value("_class_name", std::string()) == "T2IAdapter";
}

T2IAdapter T2IAdapter::load(const std::filesystem::path& dir, c10::Device device,
                            c10::ScalarType dtype) {
    if (!std::filesystem::is_directory(dir)) {
        throw FileError(dir.string() + ": no such T2I-Adapter folder");
    }
    const ComponentFiles files = ModelFolder::component_folder(dir, "diffusion_pytorch_model");
    T2IAdapter adapter(T2IAdapterConfig::from_file(files.config));
    adapter.to(device, dtype);
    adapter.load_weights(files.weights);
    return adapter;
}

std::vector<at::Tensor> T2IAdapter::forward(const at::Tensor& image) const {
    const T2IAdapterConfig& c = config();
    const int64_t f = c.downscale_factor;
    if (image.dim() != 4 || image.size(1) != c.in_channels || image.size(2) % f != 0 ||
        image.size(3) % f != 0) {
        throw Error("t2i adapter: the image must be [B, " + std::to_string(c.in_channels) +
                    ", H, W] with H and W multiples of " + std::to_string(f));
    }
    at::NoGradGuard no_grad;
    const auto options = nn::module_options(*impl_->model);
    return impl_->model->adapter->forward(image.to(options.device(), options.dtype()));
}

}  // namespace sds
