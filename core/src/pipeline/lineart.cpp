// A1111's ControlNet "lineart_standard" preprocessor: a picture's dark lines from how far each
// pixel lies below its neighbourhood (a float Gaussian blur, as OpenCV's cv::GaussianBlur on
// float32), without OpenCV in the engine.
#include <algorithm>
#include <cmath>
#include <vector>

#include "sds/error.h"
#include "sds/image.h"

namespace sds {

namespace {

// OpenCV's borderInterpolate for BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba), reflected again
// while the kernel reaches past a small picture.
int reflect101(int p, int len) {
    if (len == 1) {
        return 0;
    }
    while (p < 0 || p >= len) {
        p = p < 0 ? -p : 2 * len - 2 - p;
    }
    return p;
}

// cv::getGaussianKernel(n, sigma, CV_32F): exp(-x^2 / (2 sigma^2)) for x = -(n-1)/2 .. (n-1)/2,
// summed and scaled to 1 in double, then made float.
std::vector<float> gaussian_kernel(int n, double sigma) {
    const double scale = -0.125 / (sigma * sigma);  // of (2x)^2, as OpenCV counts x in halves
    const int half = (n - 1) / 2;
    std::vector<double> values(static_cast<size_t>(half));
    double sum = 0;
    for (int i = 0, x = 1 - n; i < half; ++i, x += 2) {
        values[static_cast<size_t>(i)] = std::exp(static_cast<double>(x * x) * scale);
        sum += values[static_cast<size_t>(i)];
    }
    sum = sum * 2 + 1;
    const double mul = 1 / sum;
    std::vector<float> k(static_cast<size_t>(n));
    for (int i = 0; i < half; ++i) {
        k[static_cast<size_t>(i)] = k[static_cast<size_t>(n - 1 - i)] =
            static_cast<float>(values[static_cast<size_t>(i)] * mul);
    }
    k[static_cast<size_t>(half)] = static_cast<float>(mul);
    return k;
}

// cv::GaussianBlur(x, (0, 0), sigma) of one float plane w x h: a kernel of
// round(8 sigma + 1) | 1 taps, along the rows, then the columns, edges reflected (101).
std::vector<float> gaussian_blur_float(const std::vector<float>& x, int w, int h, double sigma) {
    const int n = static_cast<int>(std::lround(sigma * 8 + 1)) | 1;
    const std::vector<float> k = gaussian_kernel(n, sigma);
    const int r = n / 2;
    std::vector<float> rows(x.size()), out(x.size());
    std::vector<int> across(static_cast<size_t>(w + 2 * r)), down(static_cast<size_t>(h + 2 * r));
    for (int i = -r; i < w + r; ++i) {
        across[static_cast<size_t>(i + r)] = reflect101(i, w);
    }
    for (int i = -r; i < h + r; ++i) {
        down[static_cast<size_t>(i + r)] = reflect101(i, h);
    }
    for (int y = 0; y < h; ++y) {
        const float* line = x.data() + static_cast<size_t>(y) * w;
        for (int px = 0; px < w; ++px) {
            float s = 0;
            for (int t = 0; t < n; ++t) {
                s += k[static_cast<size_t>(t)] * line[across[static_cast<size_t>(px + t)]];
            }
            rows[static_cast<size_t>(y) * w + px] = s;
        }
    }
    for (int y = 0; y < h; ++y) {
        for (int px = 0; px < w; ++px) {
            // The centre, then each pair of taps as far above as below (OpenCV's symmetric
            // column filter).
            float s = k[static_cast<size_t>(r)] * rows[static_cast<size_t>(y) * w + px];
            for (int t = 1; t <= r; ++t) {
                const float above =
                    rows[static_cast<size_t>(down[static_cast<size_t>(y + r - t)]) * w + px];
                const float below =
                    rows[static_cast<size_t>(down[static_cast<size_t>(y + r + t)]) * w + px];
                s += k[static_cast<size_t>(r + t)] * (above + below);
            }
            out[static_cast<size_t>(y) * w + px] = s;
        }
    }
    return out;
}

}  // namespace

Image lineart_standard(const Image& image) {
    const int w = image.width, h = image.height;
    if (image.rgb.size() != static_cast<size_t>(w) * h * 3 || image.empty()) {
        throw Error("lineart_standard: the picture is empty or its buffer does not match its size");
    }
    // A1111 pads the picture to multiples of 64 with its last row and column repeated, finds the
    // lines there, and cuts the padding off.
    const int pw = (w + 63) / 64 * 64, ph = (h + 63) / 64 * 64;
    const size_t plane = static_cast<size_t>(pw) * ph;
    std::vector<float> intensity(plane, 0);
    for (int c = 0; c < 3; ++c) {
        std::vector<float> x(plane);
        for (int y = 0; y < ph; ++y) {
            for (int px = 0; px < pw; ++px) {
                const size_t from =
                    (static_cast<size_t>(std::min(y, h - 1)) * w + std::min(px, w - 1)) * 3;
                x[static_cast<size_t>(y) * pw + px] = image.rgb[from + static_cast<size_t>(c)];
            }
        }
        const std::vector<float> g = gaussian_blur_float(x, pw, ph, 6.0);
        for (size_t i = 0; i < plane; ++i) {  // the least over the channels of blur - pixel
            const float d = g[i] - x[i];
            intensity[i] = c == 0 ? d : std::min(intensity[i], d);
        }
    }
    // Clipped to 0..255, over the median of the values above 8 (numpy's: the mean of the middle
    // two of an even count; 16 when it is below 16 or there are none), times 127, clipped, and
    // truncated to bytes.
    std::vector<float> above;
    for (float& v : intensity) {
        v = std::clamp(v, 0.0f, 255.0f);
        if (v > 8) {
            above.push_back(v);
        }
    }
    float median = 16;
    if (!above.empty()) {
        const size_t mid = above.size() / 2;
        std::nth_element(above.begin(), above.begin() + static_cast<std::ptrdiff_t>(mid),
                         above.end());
        float m = above[mid];
        if (above.size() % 2 == 0) {
            const float lower =
                *std::max_element(above.begin(), above.begin() + static_cast<std::ptrdiff_t>(mid));
            m = (lower + m) / 2;
        }
        median = std::max(16.0f, m);
    }
    Image out{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
    for (int y = 0; y < h; ++y) {
        for (int px = 0; px < w; ++px) {
            const float v = intensity[static_cast<size_t>(y) * pw + px] / median * 127.0f;
            const auto b = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
            uint8_t* o = out.rgb.data() + (static_cast<size_t>(y) * w + px) * 3;
            o[0] = o[1] = o[2] = b;
        }
    }
    return out;
}

}  // namespace sds
