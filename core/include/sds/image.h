#pragma once
// An 8-bit RGB image, and the one conversion between images and tensors (diffusers' image
// processor arithmetic: x / 255 * 2 - 1 in, round((x / 2 + 0.5).clamp(0, 1) * 255) out).
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sds {

struct Image {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;  // row-major, 3 bytes a pixel
    bool empty() const { return rgb.empty(); }
};

// [1, 3, H, W] float32 in [-1, 1] on the CPU.
at::Tensor image_to_tensor(const Image& image);
// [3, H, W] or [1, 3, H, W], any float dtype and device, in [-1, 1].
Image tensor_to_image(const at::Tensor& t);
// An inpainting mask [1, 1, H, W] float32 of 0 (keep) and 1 (repaint) on the CPU, as diffusers'
// mask processor makes it: Pillow's grey level (ITU-R 601, its integer rounding), then 1 from
// 128 up (level / 255 >= 0.5).
at::Tensor mask_to_tensor(const Image& mask);
// Pillow's GaussianBlur(radius), byte for byte (three extended box blurs along each axis, 8-bit
// fixed point, edges repeated), what diffusers' mask_processor.blur does to a mask.
Image gaussian_blur(const Image& image, float radius);
// Inpainting's overlay, byte for byte as diffusers' VaeImageProcessor.apply_overlay with
// Pillow 13: `init` pasted over `generated` through the inverted grey level of `mask` (black
// keeps the init image, white the generated one, grey blends). All three of one size.
Image overlay_unmasked(const Image& generated, const Image& init, const Image& mask);
// Lanczos resize, the same bytes as Pillow's Image.resize(size, Image.LANCZOS), which
// diffusers' image processor uses for an init image of another size.
Image resize(const Image& image, int width, int height);

}  // namespace sds
