#pragma once
// Shared by the tiny and full-size UNet/VAE parity tests.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/max.h>

#include "sds/safetensors.h"
#include "sds/unet.h"
#include "sds/vae.h"

namespace sds::test {

// max |a - b| / max |b|
inline double relative_error(const at::Tensor& a, const at::Tensor& b) {
    EXPECT_EQ(a.sizes(), b.sizes());
    return ((a.to(at::kFloat).cpu() - b).abs().max() / b.abs().max()).item<double>();
}

inline void expect_close(const std::string& what, const at::Tensor& got, const at::Tensor& want,
                         double tol = 1e-4) {
    const double err = relative_error(got, want);
    std::printf("%s: relative error %.3g\n", what.c_str(), err);
    EXPECT_LE(err, tol) << what;
}

// How close one forward pass in `dtype` must come to diffusers' fp32 outputs (relative error):
// fp32 1e-4 (the bar); in half precision, a few times the rounding measured on the tiny
// models on the CPU (fp16 0.0014-0.0027, bf16 0.012-0.020).
inline double rounding_tolerance(c10::ScalarType dtype) {
    return dtype == at::kHalf ? 1e-2 : dtype == at::kBFloat16 ? 4e-2 : 1e-4;
}

// Where and in what precision a model runs.
struct RunOn {
    c10::Device device = c10::Device(c10::kCPU);
    c10::ScalarType dtype = at::kFloat;
    double tol = rounding_tolerance(dtype);
    std::string str() const { return device.str() + " " + std::string(c10::toString(dtype)); }
};

inline void check_unet(const std::filesystem::path& dir, const std::string& name,
                       const std::vector<std::string>& cases, const RunOn& on = {}) {
    const auto e = SafeTensorsFile::open(dir / "expected.safetensors");
    UNet unet(UNetConfig::from_file(dir / name / "config.json"));
    unet.load_weights({dir / name / "diffusion_pytorch_model.safetensors"});
    unet.to(on.device, on.dtype);
    for (const auto& c : cases) {
        const std::string p = name + c;
        UNet::Added added;
        if (e.contains(p + "_guidance")) {
            added.guidance = e.tensor(p + "_guidance");
        }
        const at::Tensor out =
            unet.forward(e.tensor(p + "_sample").to(on.device, on.dtype), e.tensor(p + "_t"),
                         e.tensor(p + "_context").to(on.device, on.dtype), added);
        EXPECT_EQ(out.scalar_type(), on.dtype);
        expect_close(p + " on " + on.str(), out, e.tensor(p + "_out"), on.tol);
    }
}

inline void check_vae(const std::filesystem::path& dir, const RunOn& on = {}) {
    const auto e = SafeTensorsFile::open(dir / "expected.safetensors");
    Vae vae(VaeConfig::from_file(dir / "vae/config.json"));
    vae.load_weights({dir / "vae/diffusion_pytorch_model.safetensors"});
    vae.to(on.device, on.dtype);
    const auto [mean, logvar] = vae.encode(e.tensor("vae_image").to(on.device, on.dtype));
    expect_close("vae mean on " + on.str(), mean, e.tensor("vae_mean"), on.tol);
    expect_close("vae logvar on " + on.str(), logvar, e.tensor("vae_logvar"), on.tol);
    expect_close("vae decode on " + on.str(),
                 vae.decode(e.tensor("vae_latents").to(on.device, on.dtype)),
                 e.tensor("vae_decoded"), on.tol);
}

}  // namespace sds::test
