// Canny's edge detector with OpenCV's integer arithmetic, so that a picture gives the edges
// A1111's ControlNet preprocessor (cv2.Canny) gives it, without OpenCV in the engine.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "sds/image.h"

namespace sds {

namespace {

// How a pixel stands after non-maximum suppression.
enum : uint8_t { kMaybe = 0, kNot = 1, kEdge = 2 };

}  // namespace

Image canny(const Image& image, double low_threshold, double high_threshold) {
    if (low_threshold > high_threshold) {
        std::swap(low_threshold, high_threshold);
    }
    const auto low = static_cast<int>(std::floor(low_threshold));
    const auto high = static_cast<int>(std::floor(high_threshold));
    const int w = image.width, h = image.height;
    const auto at = [&](int y, int x, int c) {
        y = std::clamp(y, 0, h - 1);  // the edge pixels repeated (BORDER_REPLICATE)
        x = std::clamp(x, 0, w - 1);
        return static_cast<int>(image.rgb[(static_cast<size_t>(y) * w + x) * 3 + c]);
    };
    // The 3x3 Sobel gradients and their L1 magnitude, of the channel where it is largest (the
    // first of equals), per pixel.
    const size_t n = static_cast<size_t>(w) * h;
    std::vector<int> dx(n), dy(n), mag(n);
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const size_t i = static_cast<size_t>(y) * w + x;
            for (int c = 0; c < 3; ++c) {
                const int gx = (at(y - 1, x + 1, c) - at(y - 1, x - 1, c)) +
                               2 * (at(y, x + 1, c) - at(y, x - 1, c)) +
                               (at(y + 1, x + 1, c) - at(y + 1, x - 1, c));
                const int gy = (at(y + 1, x - 1, c) - at(y - 1, x - 1, c)) +
                               2 * (at(y + 1, x, c) - at(y - 1, x, c)) +
                               (at(y + 1, x + 1, c) - at(y - 1, x + 1, c));
                const int m = std::abs(gx) + std::abs(gy);
                if (c == 0 || m > mag[i]) {
                    mag[i] = m;
                    dx[i] = gx;
                    dy[i] = gy;
                }
            }
        }
    }
    // Non-maximum suppression along the gradient's direction, quantised with OpenCV's fixed
    // point tangent of 22.5 degrees (outside the picture the magnitude is 0); a pixel above
    // `low` that survives may be an edge, above `high` it is one.
    const auto mag_at = [&](int y, int x) {
        return y < 0 || y >= h || x < 0 || x >= w ? 0 : mag[static_cast<size_t>(y) * w + x];
    };
    constexpr int kShift = 15;
    const int tg22 = static_cast<int>(0.4142135623730950488016887242097 * (1 << kShift) + 0.5);
    std::vector<uint8_t> state(n, kNot);
    std::vector<int> stack;
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const size_t i = static_cast<size_t>(y) * w + x;
            const int m = mag[i];
            if (m <= low) {
                continue;
            }
            const int ax = std::abs(dx[i]);
            const int ay = std::abs(dy[i]) << kShift;
            const int tg22x = ax * tg22;
            bool peak = false;
            if (ay < tg22x) {  // across the columns
                peak = m > mag_at(y, x - 1) && m >= mag_at(y, x + 1);
            } else if (ay > tg22x + (ax << (kShift + 1))) {  // across the rows
                peak = m > mag_at(y - 1, x) && m >= mag_at(y + 1, x);
            } else {  // along a diagonal
                const int s = (dx[i] ^ dy[i]) < 0 ? -1 : 1;
                peak = m > mag_at(y - 1, x - s) && m > mag_at(y + 1, x + s);
            }
            if (!peak) {
                continue;
            }
            state[i] = kMaybe;
            if (m > high) {
                state[i] = kEdge;
                stack.push_back(static_cast<int>(i));
            }
        }
    }
    // Hysteresis: what may be an edge is one when it touches one (8 neighbours).
    while (!stack.empty()) {
        const int i = stack.back();
        stack.pop_back();
        const int y = i / w, x = i % w;
        for (int ny = std::max(y - 1, 0); ny <= std::min(y + 1, h - 1); ++ny) {
            for (int nx = std::max(x - 1, 0); nx <= std::min(x + 1, w - 1); ++nx) {
                const size_t k = static_cast<size_t>(ny) * w + nx;
                if (state[k] == kMaybe) {
                    state[k] = kEdge;
                    stack.push_back(static_cast<int>(k));
                }
            }
        }
    }
    Image out{w, h, std::vector<uint8_t>(n * 3, 0)};
    for (size_t i = 0; i < n; ++i) {
        if (state[i] == kEdge) {
            std::fill_n(out.rgb.begin() + static_cast<std::ptrdiff_t>(i * 3), 3, uint8_t{255});
        }
    }
    return out;
}

}  // namespace sds
