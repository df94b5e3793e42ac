#include "sds/t2i_adapter.h"

#include <fstream>
#include <functional>
#include <optional>
#include <regex>

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
#include "sds/safetensors.h"

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
    load_weights(files, nullptr);
}

void T2IAdapter::load_weights(const std::vector<std::filesystem::path>& files,
                              const std::function<std::string(const std::string&)>& rename) {
    const T2IAdapterConfig& c = config();
    LoadOptions opts;
    if (rename) {
        opts.rename = [rename](const std::string& name) { return TensorSource(rename(name)); };
    }
    opts.config_hint = "t2i adapter config: " + c.adapter_type + ", channels [" +
                       nn::join(c.channels) + "], in_channels " + std::to_string(c.in_channels) +
                       ", downscale_factor " + std::to_string(c.downscale_factor);
    load_weights_into(*impl_->model, WeightFiles(files), opts);
}

namespace {

// TencentARC's T2I-Adapter files (t2iadapter_sketch_sd15v2.pth, ...), which A1111's ControlNet
// extension loads: its Adapter (conv_in, then body.K for K = level x blocks + block: in_conv where
// the width changes, block1, block2) or its Adapter_light (body.L: in_conv, body.J's block1 and
// block2, out_conv), for SD 1.x with a pixel unshuffle of 8 (another factor is read from the
// shapes too): what diffusers' T2IAdapter holds, under other names; the config comes from the
// shapes.
enum class OriginalLayout { None, Full, Light };

// Which of TencentARC's two networks a file's names are.
OriginalLayout original_layout(const SafeTensorsFile& file) {
    if (file.contains("conv_in.weight") && file.contains("body.0.block1.weight")) {
        return OriginalLayout::Full;
    }
    if (file.contains("body.0.in_conv.weight") && file.contains("body.0.body.0.block1.weight")) {
        return OriginalLayout::Light;
    }
    return OriginalLayout::None;
}

struct OriginalFile {
    T2IAdapterConfig config;
    std::function<std::string(const std::string&)> rename;  // diffusers' name -> the file's
};

std::optional<OriginalFile> inspect_original(const std::filesystem::path& path) {
    const SafeTensorsFile file = SafeTensorsFile::open(path);
    const OriginalLayout layout = original_layout(file);
    if (layout == OriginalLayout::None) {
        return std::nullopt;
    }
    const bool full = layout == OriginalLayout::Full;
    const auto fail = [&](const std::string& what) {
        throw ModelError(path.string() + ": a T2I-Adapter " + what);
    };
    const auto width = [&](const std::string& name, size_t dim) {
        const auto& shape = file.info(name).shape;
        if (shape.size() != 4) {
            fail("whose " + name + " is " + shape_text(shape) + ", not a convolution's weight");
        }
        return shape[dim];
    };
    // The count of N in `prefix`N`suffix` (0, 1, ... while they are there).
    const auto count = [&](const std::string& prefix, const std::string& suffix) {
        int64_t n = 0;
        while (file.contains(prefix + std::to_string(n) + suffix)) {
            ++n;
        }
        return n;
    };
    OriginalFile o;
    T2IAdapterConfig& c = o.config;
    const int64_t unshuffled =
        full ? width("conv_in.weight", 1) : width("body.0.in_conv.weight", 1);
    // One or three channels (a grey or a colour picture) times the unshuffle's factor squared:
    // 8 for TencentARC's SD 1.x adapters.
    c.downscale_factor = 0;
    for (const int64_t in : {1, 3}) {
        for (int64_t f = 1; f <= 16 && c.downscale_factor == 0; ++f) {
            if (in * f * f == unshuffled) {
                c.in_channels = in;
                c.downscale_factor = f;
            }
        }
    }
    if (c.downscale_factor == 0 || c.downscale_factor == 16) {
        fail("that reads " + std::to_string(unshuffled) +
             " channels after the pixel unshuffle (not a grey or colour picture unshuffled by 8 "
             "as SD 1.x's; by 16 an SDXL adapter's, whose layout a file does not say): use its "
             "diffusers folder");
    }
    if (full) {
        for (const auto& t : file.tensors()) {
            if (t.name.find(".skep.") != std::string::npos ||
                t.name.find(".down_opt.") != std::string::npos) {
                fail("with " + t.name +
                     " (skip or strided convolutions: an adapter made with "
                     "sk=False or use_conv=True, which diffusers does not run either)");
            }
        }
        if (width("body.0.block2.weight", 2) != 1) {
            fail("whose block2 convolutions are not 1x1 (ksize 1, as diffusers' full adapter)");
        }
        const int64_t blocks = count("body.", ".block1.weight");
        std::vector<int64_t> widths;
        for (int64_t k = 0; k < blocks; ++k) {
            widths.push_back(width("body." + std::to_string(k) + ".block1.weight", 0));
        }
        // The blocks per level: 2 in TencentARC's adapters; else the fewest that group the
        // blocks into levels of one width.
        int64_t per_level = 0;
        for (const int64_t n : {2, 3, 4, 1}) {
            bool fits = blocks % n == 0;
            for (int64_t k = 0; fits && k < blocks; ++k) {
                fits = widths[static_cast<size_t>(k)] == widths[static_cast<size_t>(k / n * n)];
            }
            if (fits) {
                per_level = n;
                break;
            }
        }
        if (per_level == 0) {
            fail("whose blocks do not group into levels");
        }
        c.adapter_type = "full_adapter";
        c.num_res_blocks = per_level;
        c.channels.clear();
        for (int64_t k = 0; k < blocks; k += per_level) {
            c.channels.push_back(widths[static_cast<size_t>(k)]);
        }
        o.rename = [per_level](const std::string& name) {
            static const std::regex level(R"(^adapter\.body\.(\d+)\.in_conv\.(.*)$)");
            static const std::regex block(R"(^adapter\.body\.(\d+)\.resnets\.(\d+)\.(.*)$)");
            std::smatch m;
            if (std::regex_match(name, m, level)) {
                return "body." + std::to_string(std::stoll(m[1]) * per_level) + ".in_conv." +
                       m[2].str();
            }
            if (std::regex_match(name, m, block)) {
                return "body." + std::to_string(std::stoll(m[1]) * per_level + std::stoll(m[2])) +
                       "." + m[3].str();
            }
            return name.substr(std::string("adapter.").size());  // conv_in
        };
        return o;
    }
    const int64_t levels = count("body.", ".out_conv.weight");
    std::vector<int64_t> widths;
    for (int64_t l = 0; l < levels; ++l) {
        widths.push_back(width("body." + std::to_string(l) + ".out_conv.weight", 0));
    }
    if (levels < 2 || widths[widths.size() - 1] != widths[widths.size() - 2]) {
        fail(
            "(light) whose last two levels differ in width, which diffusers' light adapter "
            "does not make");
    }
    c.adapter_type = "light_adapter";
    c.num_res_blocks = count("body.0.body.", ".block1.weight");
    c.channels.assign(widths.begin(), widths.end() - 1);
    o.rename = [](const std::string& name) {
        static const std::regex block(R"(^adapter\.body\.(\d+)\.resnets\.(\d+)\.(.*)$)");
        std::smatch m;
        if (std::regex_match(name, m, block)) {
            return "body." + m[1].str() + ".body." + m[2].str() + "." + m[3].str();
        }
        return name.substr(std::string("adapter.").size());  // body.L.in_conv, body.L.out_conv
    };
    return o;
}

}  // namespace

bool T2IAdapter::is_adapter(const std::filesystem::path& path) {
    if (std::filesystem::is_regular_file(path)) {
        try {
            return original_layout(SafeTensorsFile::open(path)) != OriginalLayout::None;
        } catch (const Error&) {
            return false;  // what loads it as a ControlNet says what is wrong with it
        }
    }
    return is_adapter_folder(path);
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
    if (std::filesystem::is_regular_file(dir)) {
        const std::optional<OriginalFile> o = inspect_original(dir);
        if (!o) {
            throw ModelError(dir.string() +
                             ": not a T2I-Adapter (it has neither conv_in and "
                             "body.0.block1 weights nor body.0.in_conv and body.0.body.0.block1)");
        }
        T2IAdapter adapter(o->config);
        adapter.to(device, dtype);
        adapter.load_weights({dir}, o->rename);
        return adapter;
    }
    if (!std::filesystem::is_directory(dir)) {
        throw FileError(dir.string() + ": no such T2I-Adapter folder or file");
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
