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
// A ControlNet's conditioning image [1, 3, H, W] float32 in [0, 1] on the CPU: x / 255, as
// diffusers' control image processor (no normalisation). `channels` 1: [1, 1, H, W] of Pillow's
// grey level / 255 (a picture converted to "L" for a T2I-Adapter that reads one channel).
at::Tensor control_to_tensor(const Image& image, int64_t channels = 3);
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

// A rectangle of an image: columns x0 .. x1 - 1, rows y0 .. y1 - 1.
struct Box {
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    int width() const { return x1 - x0; }
    int height() const { return y1 - y0; }
    bool operator==(const Box&) const = default;
};
// diffusers' mask_processor.get_crop_region (inpainting only the masked area): the box around
// the mask's pixels whose grey level is not 0, grown by `pad` on each side within the image,
// then grown to the aspect of width x height (its integer arithmetic, kept inside the image).
// Throws sds::Error when nothing is masked.
Box mask_crop_region(const Image& mask, int width, int height, int pad);
// The box's pixels (Pillow's crop); throws when the box is not inside the image.
Image crop(const Image& image, const Box& box);
// diffusers' image processor's resize_mode "fill": scaled (Lanczos) to fit inside
// width x height keeping its aspect, centred, the uncovered strips filled with its edge row or
// column stretched (Pillow's box resize with its default filter, bicubic, as diffusers calls it).
Image resize_fill(const Image& image, int width, int height);
// resize_mode "crop": scaled to cover width x height keeping its aspect, centred, the excess cut.
Image resize_cover(const Image& image, int width, int height);
// `image` pasted into `base` with its top-left corner at (x, y), clipped to `base`.
void paste(Image& base, const Image& image, int x, int y);
// Canny's edges, the bytes OpenCV's cv::Canny(rgb, edges, low, high) gives (3x3 Sobel with the
// edge pixels repeated, the L1 gradient of the channel where it is largest, its non-maximum
// suppression, hysteresis over the 8 neighbours), white on black in all three channels: what
// A1111's ControlNet "canny" preprocessor makes of a picture. low > high are swapped.
Image canny(const Image& image, double low, double high);
// A1111's ControlNet "binary" preprocessor: the picture grey as OpenCV's cvtColor(RGB2GRAY),
// then white where it is at or below the level, black above, in all three channels (dark lines
// and shapes made the white on black scribble ControlNets read). `threshold` 1..254 is the
// level, cv::threshold(grey, threshold, 255, THRESH_BINARY_INV); 0 or 255 (A1111's default 0)
// take Otsu's level, cv::threshold(grey, 0, 255, THRESH_BINARY_INV | THRESH_OTSU).
Image binary(const Image& image, int threshold = 0);
// A1111's ControlNet "lineart_standard (from white bg & black line)" preprocessor: how far each
// pixel lies below its neighbourhood (a Gaussian blur of sigma 6, as cv::GaussianBlur on float32,
// minus the pixel, least over the channels, 0..255), over the median of those above 8 (at least
// 16), times 127, as bytes: dark lines white on black, in all three channels, for line-art
// ControlNets. As A1111, the picture is padded to multiples of 64 (its last row and column
// repeated) for the blur.
Image lineart_standard(const Image& image);

}  // namespace sds
