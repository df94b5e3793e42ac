#pragma once
// Depth Anything (V1 and V2), the depth estimator behind A1111's ControlNet "depth_anything"
// preprocessors: transformers' DepthAnythingForDepthEstimation, a DINOv2 vision transformer whose
// hidden states a DPT neck reassembles into feature maps and fuses, and a head that turns them
// into a relative depth for every pixel. Loaded from a transformers model folder (config.json,
// model.safetensors, preprocessor_config.json), such as depth-anything/Depth-Anything-V2-Small-hf
// or LiheYoung/depth-anything-small-hf. Runs on the CPU in float32.
#include <filesystem>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sds/image.h"

namespace sds {

struct DepthAnythingConfig {
    // The DINOv2 backbone (backbone_config).
    int64_t hidden_size = 384;
    int64_t layers = 12;
    int64_t heads = 6;
    int64_t mlp_size = 1536;  // hidden_size x mlp_ratio
    int64_t patch_size = 14;
    int64_t image_size = 518;  // the position embeddings' grid: image_size / patch_size a side
    double layer_norm_eps = 1e-6;
    std::vector<int64_t> out_indices = {9, 10, 11, 12};  // 0: the embeddings, k: layer k's output
    // The neck and head.
    int64_t reassemble_hidden_size = 384;
    std::vector<int64_t> neck_hidden_sizes = {48, 96, 192, 384};
    std::vector<double> reassemble_factors = {4, 2, 1, 0.5};
    int64_t fusion_hidden_size = 64;
    int64_t head_hidden_size = 32;
    bool metric = false;  // depth_estimation_type "metric": a sigmoid times max_depth
    double max_depth = 1;
    // The image processor (preprocessor_config.json): the picture resized (bicubic, antialiased)
    // to about input_height x input_width, keeping its aspect where keep_aspect_ratio, each side
    // a multiple of `multiple`; then x / 255 normalised by mean and std.
    int64_t input_height = 518, input_width = 518, multiple = 14;
    bool keep_aspect_ratio = true;
    std::vector<double> mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225};

    // Reads `dir`/config.json and, where it is there, `dir`/preprocessor_config.json;
    // unsupported options are errors naming the file and field.
    static DepthAnythingConfig from_folder(const std::filesystem::path& dir);
};

class DepthAnything {
  public:
    explicit DepthAnything(const DepthAnythingConfig& config);  // uninitialised weights
    ~DepthAnything();
    DepthAnything(DepthAnything&&) noexcept;
    DepthAnything& operator=(DepthAnything&&) noexcept;

    // A transformers Depth Anything folder. Throws sds::FileError for a path that is not a
    // folder, sds::ModelError naming the file for one that is not a Depth Anything model.
    static DepthAnything load(const std::filesystem::path& dir);
    // The model of `dir`, loaded once and kept while the folder asked for stays the same (the
    // studio's previews and each generation use the same; another folder replaces it).
    static std::shared_ptr<const DepthAnything> cached(const std::filesystem::path& dir);

    const DepthAnythingConfig& config() const;

    // The picture as the model takes it: [1, 3, h, w] float32, resized and normalised as the
    // image processor does.
    at::Tensor pixel_values(const Image& picture) const;
    // The predicted depth [1, h, w] of pixel_values [1, 3, h, w] (sides multiples of the patch
    // size), transformers' predicted_depth. Safe to call from several threads.
    at::Tensor forward(const at::Tensor& pixel_values) const;
    // The depth map of `picture` at its size, grey in all three channels (near is bright): the
    // "depth" image of transformers' depth-estimation pipeline, the predicted depth resized
    // (bicubic) to the picture's size and spread from its least to its most over 0..255.
    Image depth_map(const Image& picture) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sds
