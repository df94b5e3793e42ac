// sdstudio-bench: times one guided UNet step, a VAE decode and a whole image, and reports the
// peak resident memory, as JSON on stdout. bench/compare.py runs it beside diffusers.
//
// usage: sdstudio-bench --model DIR|FILE [--config DIR] [--device cpu|cuda] [--dtype
// fp32|bf16|fp16]
//                       [--what unet,vae,image] [--size 512] [--steps 20] [--repeat 3]
//                       [--warmup 1]
//                       [--sampler euler] [--trace FILE]
//        sdstudio-bench --what depth --depth-model DIR [--size 512] [--repeat 3] [--warmup 1]
//
// --what depth times the ControlNet depth preprocessor (a Depth Anything folder's depth map of a
// size x size picture, sds::DepthAnything::depth_map; bench/depth_compare.py runs it beside
// transformers); it needs no --model.
// --trace FILE writes a Chrome trace of one VAE decode (or, without vae in --what, one UNet step)
// for bench/trace_ops.py, which sums the time per ATen operator.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include "sds/cpu_buffer_cache.h"
#include "sds/depth_anything.h"
#include "sds/error.h"
#include "sds/pipeline.h"
#include "sds/unet.h"
#include "sds/vae.h"

namespace {

double now() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

long peak_rss_kib() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("VmHWM:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    return -1;
}

// Median seconds of `repeat` runs after `warmup` (0 or 1) unmeasured ones.
int warmup = 1;
template <typename F>
double time_it(int repeat, c10::Device device, F&& f) {
    auto sync = [&] {
        if (device.is_cuda()) {
            torch::cuda::synchronize();
        }
    };
    if (warmup > 0) {
        f();
        sync();
    }
    std::vector<double> t;
    for (int i = 0; i < repeat; ++i) {
        const double s = now();
        f();
        sync();
        t.push_back(now() - s);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    std::string model, config, device_name = "cpu", dtype_name = "fp32", what = "unet,vae,image";
    std::string sampler = "euler", trace, depth_model;
    int size = 512, steps = 20, repeat = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--model")
            model = v;
        else if (a == "--config")  // a single-file checkpoint's configs
            config = v;
        else if (a == "--device")
            device_name = v;
        else if (a == "--dtype")
            dtype_name = v;
        else if (a == "--what")
            what = v;
        else if (a == "--size")
            size = std::stoi(v);
        else if (a == "--steps")
            steps = std::stoi(v);
        else if (a == "--repeat")
            repeat = std::stoi(v);
        else if (a == "--warmup")
            warmup = std::stoi(v);
        else if (a == "--sampler")
            sampler = v;
        else if (a == "--trace")
            trace = v;
        else if (a == "--depth-model")
            depth_model = v;
        else {
            std::fprintf(stderr, "unknown flag %s\n", a.c_str());
            return 2;
        }
    }
    if (what == "depth") {
        if (depth_model.empty()) {
            std::fprintf(stderr, "--what depth needs --depth-model DIR\n");
            return 2;
        }
        try {
            const double t0 = now();
            const sds::DepthAnything depth = sds::DepthAnything::load(depth_model);
            const double load_s = now() - t0;
            sds::Image picture{size, size,
                               std::vector<uint8_t>(static_cast<size_t>(size) * size * 3)};
            for (size_t i = 0; i < picture.rgb.size(); ++i) {  // a gradient with some texture
                picture.rgb[i] = static_cast<uint8_t>(
                    (i / 3 % size + i / 3 / size + 37 * (i % 3) + (i * 2654435761u >> 28)) % 256);
            }
            const double s =
                time_it(repeat, c10::Device(c10::kCPU), [&] { (void)depth.depth_map(picture); });
            std::printf(
                "{\"impl\": \"sdstudio\", \"threads\": %d, \"depth_load_s\": %.3f, "
                "\"depth_s\": %.4f, \"size\": %d, \"peak_rss_mib\": %.0f}\n",
                at::get_num_threads(), load_s, s, size, peak_rss_kib() / 1024.0);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
            return 1;
        }
        return 0;
    }
    if (model.empty()) {
        std::fprintf(
            stderr,
            "usage: sdstudio-bench --model DIR|FILE [--config DIR] [--device] [--dtype] [--what] "
            "[--size] [--steps] [--repeat] [--warmup] [--sampler] [--trace FILE]\n");
        return 2;
    }
    try {
        torch::NoGradGuard no_grad;
        const c10::Device device = sds::parse_device(device_name);
        const auto dtype = sds::parse_dtype(dtype_name, device);
        const double t0 = now();
        sds::Pipeline pipe = sds::Pipeline::load(
            model, {.device = device, .dtype = dtype, .single_file_config = config});
        const double load_s = now() - t0;
        std::printf(
            "{\"impl\": \"sdstudio\", \"device\": \"%s\", \"dtype\": \"%s\", "
            "\"threads\": %d, \"load_s\": %.3f",
            device.str().c_str(), dtype_name.c_str(), at::get_num_threads(), load_s);
        const int64_t h = size / pipe.downscale();
        auto opts = at::TensorOptions().device(device).dtype(dtype);
        if (what.find("unet") != std::string::npos) {
            sds::UNet& unet = pipe.unet();
            const at::Tensor x = at::randn({2, 4, h, h}, opts);
            const at::Tensor ctx = at::randn({2, 77, unet.config().cross_attention_dim}, opts);
            const at::Tensor t = at::full({1}, 500, at::kLong);
            sds::UNet::Added added;  // SDXL: a pooled text embedding and the size ids
            if (unet.config().text_time) {
                added.text_embeds = at::randn({2, unet.config().text_embeds_dim()}, opts);
                const double px = static_cast<double>(size);
                added.time_ids = at::tensor(std::vector<double>{px, px, 0, 0, px, px}, at::kDouble)
                                     .to(opts)
                                     .view({1, 6})
                                     .repeat({2, 1});
            }
            // As in a denoising loop, which keeps the step's CPU buffers for the next step.
            const sds::CpuBufferScope keep_buffers;
            const double s = time_it(repeat, device, [&] { unet.forward(x, t, ctx, added); });
            std::printf(", \"unet_step_s\": %.4f", s);
            if (!trace.empty() && what.find("vae") == std::string::npos) {
                torch::autograd::profiler::RecordProfile guard(trace);
                unet.forward(x, t, ctx, added);
            }
        }
        if (what.find("vae") != std::string::npos) {
            const at::Tensor z = at::randn({1, 4, h, h}, opts);
            const double s = time_it(repeat, device, [&] { pipe.decode(z); });
            std::printf(", \"vae_decode_s\": %.4f", s);
            if (!trace.empty()) {
                torch::autograd::profiler::RecordProfile guard(trace);
                pipe.decode(z);
            }
        }
        if (what.find("image") != std::string::npos) {
            sds::GenerationRequest r;
            r.prompt = "a photograph of an astronaut riding a horse";
            r.steps = steps;
            r.width = r.height = size;
            r.sampler = sds::sampler_from_name(sampler);
            const double s = time_it(std::max(1, repeat / 2), device, [&] { pipe.generate(r); });
            std::printf(", \"image_s\": %.3f, \"steps\": %d, \"size\": %d", s, steps, size);
        }
        std::printf(", \"peak_rss_mib\": %.0f}\n", peak_rss_kib() / 1024.0);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
