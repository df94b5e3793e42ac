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

inline void check_unet(const std::filesystem::path& dir, const std::string& name,
                       const std::vector<std::string>& cases,
                       c10::Device device = c10::Device(c10::kCPU)) {
    const auto e = SafeTensorsFile::open(dir / "expected.safetensors");
    UNet unet(UNetConfig::from_file(dir / name / "config.json"));
    unet.load_weights({dir / name / "diffusion_pytorch_model.safetensors"});
    unet.to(device, at::kFloat);
    for (const auto& c : cases) {
        const std::string p = name + c;
        const at::Tensor out = unet.forward(e.tensor(p + "_sample").to(device),
                                            e.tensor(p + "_t"), e.tensor(p + "_context").to(device));
        expect_close(p + " on " + device.str(), out, e.tensor(p + "_out"));
    }
}

inline void check_vae(const std::filesystem::path& dir,
                      c10::Device device = c10::Device(c10::kCPU)) {
    const auto e = SafeTensorsFile::open(dir / "expected.safetensors");
    Vae vae(VaeConfig::from_file(dir / "vae/config.json"));
    vae.load_weights({dir / "vae/diffusion_pytorch_model.safetensors"});
    vae.to(device, at::kFloat);
    const auto [mean, logvar] = vae.encode(e.tensor("vae_image").to(device));
    expect_close("vae mean on " + device.str(), mean, e.tensor("vae_mean"));
    expect_close("vae logvar on " + device.str(), logvar, e.tensor("vae_logvar"));
    expect_close("vae decode on " + device.str(), vae.decode(e.tensor("vae_latents").to(device)),
                 e.tensor("vae_decoded"));
}

}  // namespace sds::test
