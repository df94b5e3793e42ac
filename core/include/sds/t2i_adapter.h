#pragma once
// diffusers' T2IAdapter (full_adapter, full_adapter_xl, light_adapter): a small network that
// turns a conditioning image (a sketch, edges, depth, a pose, ...) into one feature map for each
// down block of the UNet, computed once a generation and added inside those blocks at each step
// (UNet::Residuals::intrablock). One model, one thread at a time.
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace sds {

struct T2IAdapterConfig {
    int64_t in_channels = 3;  // 1: a grey picture (sketch and canny adapters)
    std::vector<int64_t> channels = {320, 640, 1280, 1280};
    int64_t num_res_blocks = 2;
    int64_t downscale_factor = 8;               // the pixel unshuffle's
    std::string adapter_type = "full_adapter";  // or "full_adapter_xl", "light_adapter"

    // Reads a T2IAdapter's config.json; unsupported options are errors naming the file and
    // field.
    static T2IAdapterConfig from_file(const std::filesystem::path& config_json);
};

class T2IAdapter {
  public:
    explicit T2IAdapter(const T2IAdapterConfig& config);  // uninitialised weights, fp32, CPU
    ~T2IAdapter();
    T2IAdapter(T2IAdapter&&) noexcept;
    T2IAdapter& operator=(T2IAdapter&&) noexcept;

    // Whether `path` is a T2IAdapter folder (its config.json's _class_name says so).
    static bool is_adapter_folder(const std::filesystem::path& path);
    // That, or a file with the weights of TencentARC's Adapter or Adapter_light.
    static bool is_adapter(const std::filesystem::path& path);
    // A diffusers T2IAdapter folder (config.json and its weights), or one TencentARC file
    // (t2iadapter_*.pth, as A1111's ControlNet extension loads; its config read from its shapes),
    // in `dtype` on `device`. Throws sds::FileError for a path that is not there,
    // sds::ModelError naming the file for one that is not a T2I-Adapter or has an unsupported
    // config.
    static T2IAdapter load(const std::filesystem::path& dir, c10::Device device,
                           c10::ScalarType dtype);
    void load_weights(const std::vector<std::filesystem::path>& files);
    // With other names: `rename` gives the file's name of each of diffusers' names.
    void load_weights(const std::vector<std::filesystem::path>& files,
                      const std::function<std::string(const std::string&)>& rename);
    void to(c10::Device device, c10::ScalarType dtype);

    // image [B, in_channels, H, W] in [0, 1] -> one feature map per block of `channels`, in
    // the model's dtype.
    std::vector<at::Tensor> forward(const at::Tensor& image) const;

    // The pixel unshuffle's factor (8 for SD 1.x's adapters, 16 for SDXL's): the picture's sides
    // must be multiples of it.
    int64_t downscale() const { return config().downscale_factor; }
    const T2IAdapterConfig& config() const;
    int64_t parameter_count() const;
    c10::Device device() const;
    c10::ScalarType dtype() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sds
