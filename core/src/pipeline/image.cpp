#include "sds/image.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/round.h>
#include <ATen/ops/upsample_bilinear2d.h>

#include "sds/error.h"

namespace sds {

at::Tensor image_to_tensor(const Image& image) {
    if (image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3) {
        throw Error("image buffer does not match its size");
    }
    at::Tensor t = at::from_blob(const_cast<uint8_t*>(image.rgb.data()),
                                 {1, image.height, image.width, 3}, at::kByte);
    return t.permute({0, 3, 1, 2}).to(at::kFloat) / 255.0f * 2.0f - 1.0f;
}

Image tensor_to_image(const at::Tensor& input) {
    at::Tensor t = input.dim() == 4 ? input[0] : input;
    if (t.dim() != 3 || t.size(0) != 3) {
        throw Error("tensor_to_image expects [3, H, W]");
    }
    // Computed in float32 and rounded half to even, as numpy does in diffusers.
    t = ((t.to(at::kFloat).cpu() / 2 + 0.5).clamp(0, 1) * 255).round().to(at::kByte);
    t = t.permute({1, 2, 0}).contiguous();
    Image out;
    out.height = static_cast<int>(t.size(0));
    out.width = static_cast<int>(t.size(1));
    out.rgb.assign(t.data_ptr<uint8_t>(), t.data_ptr<uint8_t>() + t.numel());
    return out;
}

Image resize(const Image& image, int width, int height) {
    if (image.width == width && image.height == height) {
        return image;
    }
    const at::Tensor t = image_to_tensor(image);
    const at::Tensor r = at::upsample_bilinear2d(t, {height, width}, /*align_corners=*/false);
    return tensor_to_image(r.clamp(-1, 1));
}

}  // namespace sds
