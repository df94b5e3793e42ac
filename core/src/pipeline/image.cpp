#include "sds/image.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/round.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>

#include "sds/error.h"

namespace sds {

namespace {
// [1, 3, H, W] float32 of x / 255.
at::Tensor unit_tensor(const Image& image) {
    if (image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3) {
        throw Error("image buffer does not match its size");
    }
    at::Tensor t = at::from_blob(const_cast<uint8_t*>(image.rgb.data()),
                                 {1, image.height, image.width, 3}, at::kByte);
    return t.permute({0, 3, 1, 2}).to(at::kFloat) / 255.0f;
}
}  // namespace

at::Tensor image_to_tensor(const Image& image) {
    return unit_tensor(image) * 2.0f - 1.0f;
}

namespace {
// Pillow's convert("L"): ITU-R 601 weights in 16-bit fixed point, rounded.
uint32_t grey_level(const uint8_t* rgb) {
    return (rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16;
}

// Otsu's threshold as OpenCV finds it: the level that most separates the two classes' means,
// the first of equals; a level that leaves (nearly) all on one side is passed over.
int otsu_level(const std::array<uint64_t, 256>& histogram, size_t n) {
    const double scale = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
    double mu = 0;
    for (int i = 0; i < 256; ++i) {
        mu += i * static_cast<double>(histogram[static_cast<size_t>(i)]);
    }
    mu *= scale;
    double mu1 = 0, q1 = 0, best_sigma = 0;
    int threshold = 0;
    const double eps = std::numeric_limits<float>::epsilon();
    for (int i = 0; i < 256; ++i) {
        const double p = static_cast<double>(histogram[static_cast<size_t>(i)]) * scale;
        mu1 *= q1;
        q1 += p;
        const double q2 = 1.0 - q1;
        if (std::min(q1, q2) < eps || std::max(q1, q2) > 1.0 - eps) {
            continue;
        }
        mu1 = (mu1 + i * p) / q1;
        const double mu2 = (mu - q1 * mu1) / q2;
        const double sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
        if (sigma > best_sigma) {
            best_sigma = sigma;
            threshold = i;
        }
    }
    return threshold;
}
}  // namespace

Image binary(const Image& image, int threshold) {
    if (image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3) {
        throw Error("image buffer does not match its size");
    }
    if (threshold < 0 || threshold > 255) {
        throw Error("the binary threshold must be 0..255 (0 or 255: Otsu's), not " +
                    std::to_string(threshold));
    }
    // OpenCV's cvtColor(RGB2GRAY) for 8 bits: 15-bit fixed-point weights, rounded.
    const size_t n = image.rgb.size() / 3;
    std::vector<uint8_t> grey(n);
    std::array<uint64_t, 256> histogram{};
    for (size_t i = 0; i < n; ++i) {
        const uint8_t* p = image.rgb.data() + 3 * i;
        grey[i] =
            static_cast<uint8_t>((p[0] * 9798u + p[1] * 19235u + p[2] * 3735u + 16384u) >> 15);
        ++histogram[grey[i]];
    }
    const int level = threshold == 0 || threshold == 255 ? otsu_level(histogram, n) : threshold;
    Image out{image.width, image.height, std::vector<uint8_t>(image.rgb.size())};
    for (size_t i = 0; i < n; ++i) {
        const uint8_t v = grey[i] > level ? 0 : 255;  // THRESH_BINARY_INV
        out.rgb[3 * i] = out.rgb[3 * i + 1] = out.rgb[3 * i + 2] = v;
    }
    return out;
}

at::Tensor control_to_tensor(const Image& image, int64_t channels) {
    if (channels == 3) {
        return unit_tensor(image).contiguous();
    }
    if (channels != 1) {
        throw Error("a conditioning image has 1 or 3 channels, not " + std::to_string(channels));
    }
    std::vector<float> grey(static_cast<size_t>(image.width) * image.height);
    if (image.rgb.size() != grey.size() * 3) {
        throw Error("image buffer does not match its size");
    }
    for (size_t i = 0; i < grey.size(); ++i) {
        grey[i] = static_cast<float>(grey_level(image.rgb.data() + 3 * i)) / 255.0f;
    }
    return at::tensor(grey).view({1, 1, image.height, image.width});
}

namespace {
// Pillow's DIV255 (rounded) and SHIFTFORDIV255.
uint32_t div255(uint32_t v) {
    const uint32_t t = v + 128;
    return ((t >> 8) + t) >> 8;
}
}  // namespace

namespace {
// The radius of each of `passes` extended box blurs that together approximate a Gaussian of
// standard deviation `sigma` (Gwosdek et al., "Theoretical foundations of Gaussian convolution
// by extended box filtering"), in float as Pillow computes it.
float extended_box_radius(float sigma, int passes) {
    const float s2 = sigma * sigma / static_cast<float>(passes);
    const float length = static_cast<float>(std::sqrt(12.0 * s2 + 1.0));
    const float l = static_cast<float>(std::floor((length - 1.0) / 2.0));
    float a = (2 * l + 1) * (l * (l + 1) - 3 * s2);
    a /= 6 * (s2 - (l + 1) * (l + 1));
    return l + a;
}

// One extended box blur of `n` bytes `step` apart, in place: each output is the mean of the
// 2r + 1 inputs around it plus the fraction of the next one out on each side, indices clamped
// to the ends, in Pillow's 24-bit fixed point.
void box_blur_line(uint8_t* line, int n, int step, float radius, std::vector<uint8_t>& scratch) {
    const int r = static_cast<int>(radius);
    const auto whole = static_cast<uint32_t>(16777216.0f / (radius * 2 + 1));
    const uint32_t edge = (16777216u - static_cast<uint32_t>(r * 2 + 1) * whole) / 2;
    scratch.resize(static_cast<size_t>(n));
    auto at = [&](int i) -> uint32_t { return line[std::clamp(i, 0, n - 1) * step]; };
    uint32_t sum = 0;  // the window around x - 1
    for (int k = -r - 1; k <= r - 1; ++k) {
        sum += at(k);
    }
    for (int x = 0; x < n; ++x) {
        sum += at(x + r) - at(x - r - 1);
        const uint32_t v = sum * whole + (at(x - r - 1) + at(x + r + 1)) * edge;
        scratch[static_cast<size_t>(x)] = static_cast<uint8_t>((v + (1u << 23)) >> 24);
    }
    for (int x = 0; x < n; ++x) {
        line[x * step] = scratch[static_cast<size_t>(x)];
    }
}
}  // namespace

Image gaussian_blur(const Image& image, float radius) {
    constexpr int kPasses = 3;
    Image out = image;
    const float r = extended_box_radius(radius, kPasses);
    if (r == 0.0f || image.empty()) {
        return out;
    }
    std::vector<uint8_t> scratch;
    const int w = image.width, h = image.height;
    for (int pass = 0; pass < kPasses; ++pass) {  // along the rows, then down the columns
        for (int y = 0; y < h; ++y) {
            for (int c = 0; c < 3; ++c) {
                box_blur_line(&out.rgb[static_cast<size_t>(y) * w * 3 + c], w, 3, r, scratch);
            }
        }
    }
    for (int pass = 0; pass < kPasses; ++pass) {
        for (int x = 0; x < w; ++x) {
            for (int c = 0; c < 3; ++c) {
                box_blur_line(&out.rgb[static_cast<size_t>(x) * 3 + c], h, w * 3, r, scratch);
            }
        }
    }
    return out;
}

at::Tensor mask_to_tensor(const Image& mask) {
    if (mask.rgb.size() != static_cast<size_t>(mask.width) * mask.height * 3) {
        throw Error("mask buffer does not match its size");
    }
    std::vector<float> ones(static_cast<size_t>(mask.width) * mask.height);
    for (size_t i = 0; i < ones.size(); ++i) {
        ones[i] = grey_level(&mask.rgb[3 * i]) >= 128 ? 1.0f : 0.0f;
    }
    return at::from_blob(ones.data(), {1, 1, mask.height, mask.width}, at::kFloat).clone();
}

Image overlay_unmasked(const Image& generated, const Image& init, const Image& mask) {
    for (const Image* im : {&init, &mask}) {
        if (im->width != generated.width || im->height != generated.height ||
            im->rgb.size() != generated.rgb.size()) {
            throw Error("overlay: the init image and the mask must have the image's size");
        }
    }
    Image out = generated;
    for (size_t i = 0; i < out.rgb.size() / 3; ++i) {
        // Pillow's steps: the init image pasted through a = 255 - grey onto a transparent
        // premultiplied image, un-premultiplied (truncating), then alpha-composited over the
        // opaque generated image (7 fraction bits).
        const uint32_t a = 255 - grey_level(&mask.rgb[3 * i]);
        if (a == 0) {
            continue;
        }
        for (size_t k = 3 * i; k < 3 * i + 3; ++k) {
            const uint32_t init_c = std::min<uint32_t>(255, div255(init.rgb[k] * a) * 255 / a);
            const uint32_t t = init_c * a * 128 + out.rgb[k] * (255 - a) * 128 + (0x80u << 7);
            out.rgb[k] = static_cast<uint8_t>(((((t >> 8) + t) >> 8)) >> 7);
        }
    }
    return out;
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

namespace {

// Pillow's resampling as Image.resize(size, Image.LANCZOS) does it for 8-bit images (what
// diffusers' image processor calls): per output pixel a window of a*max(scale, 1) input pixels
// around its centre, Lanczos-3 weights normalised to sum 1, held as fixed-point integers with
// 22 fraction bits, one pass along each axis, each rounded and clamped to a byte.
constexpr int kFractionBits = 22;

double lanczos3(double x) {
    auto sinc = [](double v) {
        if (v == 0.0) {
            return 1.0;
        }
        v *= M_PI;
        return std::sin(v) / v;
    };
    return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
}

// Pillow's bicubic filter (a = -0.5, support 2): what Image.resize uses when no filter is
// named, as diffusers' "fill" resize does for the strips it stretches.
double bicubic(double x) {
    constexpr double a = -0.5;
    x = std::abs(x);
    if (x < 1.0) {
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    }
    if (x < 2.0) {
        return (((x - 5) * x + 8) * x - 4) * a;
    }
    return 0.0;
}

struct Filter {
    double (*f)(double);
    double support;
};
constexpr Filter kLanczos{lanczos3, 3.0}, kBicubic{bicubic, 2.0};

struct Taps {
    std::vector<int> first, count;  // per output pixel: its input window
    std::vector<int32_t> weights;   // per output pixel: `width` fixed-point weights
    int width = 0;
};

// Pillow's precompute_coeffs over the input span [in0, in1) (the whole axis, or a box's).
Taps filter_taps(int in_size, int out_size, double in0, double in1, const Filter& filter) {
    const double scale = (in1 - in0) / out_size;
    const double stretch = std::max(scale, 1.0);
    const double support = filter.support * stretch;
    Taps t;
    t.width = static_cast<int>(std::ceil(support)) * 2 + 1;
    t.first.resize(out_size);
    t.count.resize(out_size);
    t.weights.assign(static_cast<size_t>(out_size) * t.width, 0);
    std::vector<double> w(t.width);
    for (int o = 0; o < out_size; ++o) {
        const double centre = in0 + (o + 0.5) * scale;
        // Truncation toward zero, as a C cast.
        const int lo = std::max(static_cast<int>(centre - support + 0.5), 0);
        const int hi = std::min(static_cast<int>(centre + support + 0.5), in_size);
        const int n = hi - lo;
        double sum = 0;
        for (int k = 0; k < n; ++k) {
            w[k] = filter.f((k + lo - centre + 0.5) / stretch);
            sum += w[k];
        }
        for (int k = 0; k < n; ++k) {
            const double v = (sum != 0.0 ? w[k] / sum : w[k]) * (1 << kFractionBits);
            t.weights[static_cast<size_t>(o) * t.width + k] =
                static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);
        }
        t.first[o] = lo;
        t.count[o] = n;
    }
    return t;
}

uint8_t fixed_to_byte(int64_t acc) {
    return static_cast<uint8_t>(std::clamp<int64_t>(acc >> kFractionBits, 0, 255));
}

// One pass along x (step 3 between taps) or along y (step = a row), over the whole axis or
// the span [in0, in1) of it.
Image resample_x(const Image& in, int width, double in0 = 0, double in1 = -1,
                 const Filter& filter = kLanczos) {
    const Taps t = filter_taps(in.width, width, in0, in1 < 0 ? in.width : in1, filter);
    Image out{width, in.height, std::vector<uint8_t>(size_t(width) * in.height * 3)};
    for (int y = 0; y < in.height; ++y) {
        const uint8_t* row = in.rgb.data() + size_t(y) * in.width * 3;
        for (int x = 0; x < width; ++x) {
            const int32_t* w = t.weights.data() + size_t(x) * t.width;
            for (int c = 0; c < 3; ++c) {
                int64_t acc = int64_t(1) << (kFractionBits - 1);
                for (int k = 0; k < t.count[x]; ++k) {
                    acc += int64_t(row[(t.first[x] + k) * 3 + c]) * w[k];
                }
                out.rgb[(size_t(y) * width + x) * 3 + c] = fixed_to_byte(acc);
            }
        }
    }
    return out;
}

Image resample_y(const Image& in, int height, double in0 = 0, double in1 = -1,
                 const Filter& filter = kLanczos) {
    const Taps t = filter_taps(in.height, height, in0, in1 < 0 ? in.height : in1, filter);
    const size_t stride = size_t(in.width) * 3;
    Image out{in.width, height, std::vector<uint8_t>(stride * height)};
    for (int y = 0; y < height; ++y) {
        const int32_t* w = t.weights.data() + size_t(y) * t.width;
        for (size_t i = 0; i < stride; ++i) {
            int64_t acc = int64_t(1) << (kFractionBits - 1);
            for (int k = 0; k < t.count[y]; ++k) {
                acc += int64_t(in.rgb[(t.first[y] + k) * stride + i]) * w[k];
            }
            out.rgb[y * stride + i] = fixed_to_byte(acc);
        }
    }
    return out;
}

}  // namespace

Image resize(const Image& image, int width, int height) {
    if (width <= 0 || height <= 0 || image.empty()) {
        throw Error("resize: cannot resize a " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + " image to " + std::to_string(width) + "x" +
                    std::to_string(height));
    }
    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
    // many pixels as the width; the order decides some roundings.
    const bool y_first = height < image.height && image.height - height > 2 * (image.width - width);
    if (y_first) {
        Image out = resample_y(image, height);
        return out.width == width ? out : resample_x(out, width);
    }
    Image out = image.width == width ? image : resample_x(image, width);
    return out.height == height ? out : resample_y(out, height);
}

Box mask_crop_region(const Image& mask, int width, int height, int pad) {
    const int w = mask.width, h = mask.height;
    auto column_empty = [&](int x) {
        for (int y = 0; y < h; ++y) {
            if (grey_level(&mask.rgb[(size_t(y) * w + x) * 3]) != 0) {
                return false;
            }
        }
        return true;
    };
    auto row_empty = [&](int y) {
        for (int x = 0; x < w; ++x) {
            if (grey_level(&mask.rgb[(size_t(y) * w + x) * 3]) != 0) {
                return false;
            }
        }
        return true;
    };
    int left = 0, right = 0, top = 0, bottom = 0;
    while (left < w && column_empty(left)) {
        ++left;
    }
    if (left == w) {
        throw Error("inpainting only the masked area: nothing is masked");
    }
    while (column_empty(w - 1 - right)) {
        ++right;
    }
    while (row_empty(top)) {
        ++top;
    }
    while (row_empty(h - 1 - bottom)) {
        ++bottom;
    }
    int x1 = std::max(left - pad, 0), y1 = std::max(top - pad, 0);
    int x2 = std::min(w - right + pad, w), y2 = std::min(h - bottom + pad, h);
    // Grown to the processing aspect, as diffusers does it (float, then int() toward zero): the
    // short side by `diff`, half before, kept inside the image.
    auto grow = [](int& lo, int& hi, int size, int diff) {
        lo -= diff / 2;  // Python's // on a non-negative number
        hi += diff - diff / 2;
        if (hi >= size) {
            const int over = hi - size;
            hi -= over;
            lo -= over;
        }
        if (lo < 0) {
            hi -= lo;
            lo = 0;
        }
        hi = std::min(hi, size);
    };
    const double region = double(x2 - x1) / (y2 - y1), processing = double(width) / height;
    if (region > processing) {
        grow(y1, y2, h, static_cast<int>((x2 - x1) / processing - (y2 - y1)));
    } else {
        grow(x1, x2, w, static_cast<int>((y2 - y1) * processing - (x2 - x1)));
    }
    return {x1, y1, x2, y2};
}

Image crop(const Image& image, const Box& box) {
    if (box.x0 < 0 || box.y0 < 0 || box.x1 > image.width || box.y1 > image.height ||
        box.width() <= 0 || box.height() <= 0) {
        throw Error("crop: the box is not inside the " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + " image");
    }
    Image out{box.width(), box.height(),
              std::vector<uint8_t>(size_t(box.width()) * box.height() * 3)};
    for (int y = 0; y < box.height(); ++y) {
        std::copy_n(image.rgb.begin() + (size_t(box.y0 + y) * image.width + box.x0) * 3,
                    box.width() * 3, out.rgb.begin() + size_t(y) * box.width() * 3);
    }
    return out;
}

void paste(Image& base, const Image& image, int x, int y) {
    const int from_x = std::max(0, -x), to_x = std::min(image.width, base.width - x);
    for (int row = std::max(0, -y); row < std::min(image.height, base.height - y); ++row) {
        if (to_x > from_x) {
            std::copy_n(image.rgb.begin() + (size_t(row) * image.width + from_x) * 3,
                        (to_x - from_x) * 3,
                        base.rgb.begin() + (size_t(row + y) * base.width + x + from_x) * 3);
        }
    }
}

Image resize_fill(const Image& image, int width, int height) {
    const double ratio = double(width) / height, src_ratio = double(image.width) / image.height;
    const int src_w = ratio < src_ratio ? width : image.width * height / image.height;
    const int src_h = ratio >= src_ratio ? height : image.height * width / image.width;
    const Image resized = resize(image, src_w, src_h);
    Image out{width, height, std::vector<uint8_t>(size_t(width) * height * 3, 0)};
    paste(out, resized, width / 2 - src_w / 2, height / 2 - src_h / 2);
    // The strips: the first and last rows (or columns) stretched, with Pillow's default filter
    // (bicubic: diffusers names none there).
    const int h = resized.height, w = resized.width;
    if (ratio < src_ratio) {  // above and below
        const int fill = height / 2 - src_h / 2;
        if (fill > 0) {
            paste(out, resample_y(resized, fill, 0, 0, kBicubic), 0, 0);
            paste(out, resample_y(resized, fill, h, h, kBicubic), 0, fill + src_h);
        }
    } else if (ratio > src_ratio) {  // left and right
        const int fill = width / 2 - src_w / 2;
        if (fill > 0) {
            paste(out, resample_x(resized, fill, 0, 0, kBicubic), 0, 0);
            paste(out, resample_x(resized, fill, w, w, kBicubic), fill + src_w, 0);
        }
    }
    return out;
}

Image resize_cover(const Image& image, int width, int height) {
    const double ratio = double(width) / height, src_ratio = double(image.width) / image.height;
    const int src_w = ratio > src_ratio ? width : image.width * height / image.height;
    const int src_h = ratio <= src_ratio ? height : image.height * width / image.width;
    const Image resized = resize(image, src_w, src_h);
    Image out{width, height, std::vector<uint8_t>(size_t(width) * height * 3, 0)};
    paste(out, resized, width / 2 - src_w / 2, height / 2 - src_h / 2);
    return out;
}

}  // namespace sds
