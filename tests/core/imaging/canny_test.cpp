// sds::canny against OpenCV's cv::Canny (what A1111's ControlNet preprocessor calls): the same
// bytes for noise, smooth pictures and drawn scenes, at several thresholds and sizes; and the
// pipeline's "canny" preprocessor is the ControlNet given those edges. sds::binary and
// sds::lineart_standard against A1111's preprocessors written with OpenCV.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include <opencv2/imgproc.hpp>

#include "image_parity.h"
#include "sds/error.h"
#include "sds/image.h"
#include "sds/pipeline.h"
#include "sds/shapes.h"
#include "test_paths.h"

namespace {

// cv::Mat over the bytes as they are (RGB, as A1111 hands cv2 its numpy picture).
cv::Mat opencv_view(const sds::Image& image) {
    return {image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.rgb.data())};
}

// One channel of OpenCV's, in all three of an sds::Image.
sds::Image from_grey(const cv::Mat& grey) {
    sds::Image out{grey.cols, grey.rows, {}};
    for (int y = 0; y < grey.rows; ++y) {
        for (int x = 0; x < grey.cols; ++x) {
            const uint8_t v = grey.at<uint8_t>(y, x);
            out.rgb.insert(out.rgb.end(), {v, v, v});
        }
    }
    return out;
}

sds::Image opencv_canny(const sds::Image& image, double low, double high) {
    cv::Mat edges;
    cv::Canny(opencv_view(image), edges, low, high);
    return from_grey(edges);
}

sds::Image noise(int w, int h, uint32_t seed) {
    std::mt19937 rng(seed);
    sds::Image out{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
    for (uint8_t& v : out.rgb) {
        v = static_cast<uint8_t>(rng() & 0xff);
    }
    return out;
}

// Gradients and rings in each channel: edges in every direction, of every strength.
sds::Image smooth(int w, int h) {
    sds::Image out{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const double r = std::hypot(x - w * 0.4, y - h * 0.55);
            uint8_t* p = &out.rgb[(static_cast<size_t>(y) * w + x) * 3];
            p[0] = static_cast<uint8_t>(std::clamp(128 + 127 * std::sin(r / 3.0), 0.0, 255.0));
            p[1] = static_cast<uint8_t>((x * 255) / std::max(w - 1, 1));
            p[2] = static_cast<uint8_t>(((x + 2 * y) / 7) % 2 ? 200 : 40);
        }
    }
    return out;
}

size_t edge_count(const sds::Image& edges) {
    return static_cast<size_t>(std::count(edges.rgb.begin(), edges.rgb.end(), 255)) / 3;
}

TEST(Canny, SameEdgesAsOpenCV) {
    std::vector<std::pair<std::string, sds::Image>> pictures = {
        {"noise 64x48", noise(64, 48, 1)}, {"noise 7x5", noise(7, 5, 2)},
        {"noise 1x9", noise(1, 9, 3)},     {"noise 9x1", noise(9, 1, 4)},
        {"noise 1x1", noise(1, 1, 5)},     {"smooth 96x80", smooth(96, 80)},
        {"smooth 33x17", smooth(33, 17)},
    };
    for (uint64_t seed : {3u, 11u, 40u}) {
        const sds::imaging::Scene scene = sds::imaging::random_scene(seed);
        pictures.emplace_back("scene " + std::to_string(seed),
                              sds::imaging::render_scene(scene, 128, seed));
    }
    size_t edges_seen = 0;
    for (const auto& [name, picture] : pictures) {
        for (const auto& [low, high] : std::vector<std::pair<double, double>>{
                 {100, 200}, {50, 150}, {200, 100}, {0, 0}, {10.7, 30.2}, {300, 900}}) {
            const sds::Image ours = sds::canny(picture, low, high);
            const sds::Image want = opencv_canny(picture, low, high);
            ASSERT_EQ(ours.width, want.width);
            ASSERT_EQ(ours.height, want.height);
            size_t differ = 0;
            for (size_t i = 0; i < ours.rgb.size(); ++i) {
                differ += ours.rgb[i] != want.rgb[i];
            }
            EXPECT_EQ(differ, 0u) << name << " at " << low << ", " << high;
            edges_seen += edge_count(want);
        }
    }
    EXPECT_GT(edges_seen, 10000u);  // the pictures have edges to find
}

// sds::binary against OpenCV's grey and threshold as A1111's "binary" calls them: Otsu's at
// threshold 0 (its default) or 255, else that level.
sds::Image opencv_binary(const sds::Image& image, int threshold = 0) {
    cv::Mat grey, bin;
    cv::cvtColor(opencv_view(image), grey, cv::COLOR_RGB2GRAY);
    if (threshold == 0 || threshold == 255) {
        cv::threshold(grey, bin, 0, 255, cv::THRESH_BINARY_INV | cv::THRESH_OTSU);
    } else {
        cv::threshold(grey, bin, threshold, 255, cv::THRESH_BINARY_INV);
    }
    return from_grey(bin);
}

TEST(Binary, SameAsOpenCVsOtsuThreshold) {
    std::vector<std::pair<std::string, sds::Image>> pictures = {
        {"noise 64x48", noise(64, 48, 1)},
        {"noise 256x256", noise(256, 256, 9)},  // the grey of 65536 colours
        {"noise 1x1", noise(1, 1, 5)},
        {"smooth 96x80", smooth(96, 80)},
        {"flat", sds::Image{5, 4, std::vector<uint8_t>(60, 90)}},
    };
    sds::Image two_levels{8, 8, std::vector<uint8_t>(192, 30)};
    std::fill(two_levels.rgb.begin() + 96, two_levels.rgb.end(), 220);
    pictures.emplace_back("two levels", two_levels);
    for (uint64_t seed : {3u, 11u, 40u}) {
        const sds::imaging::Scene scene = sds::imaging::random_scene(seed);
        pictures.emplace_back("scene " + std::to_string(seed),
                              sds::imaging::render_scene(scene, 128, seed));
    }
    size_t white = 0, black = 0;
    for (const auto& [name, picture] : pictures) {
        const sds::Image ours = sds::binary(picture);
        const sds::Image want = opencv_binary(picture);
        EXPECT_EQ(ours.rgb, want.rgb) << name;
        white += edge_count(want);
        black += want.rgb.size() / 3 - edge_count(want);
    }
    EXPECT_GT(white, 5000u);  // both sides of the threshold are seen
    EXPECT_GT(black, 5000u);
}

TEST(Binary, SameAsOpenCVsThresholdAtEveryLevel) {
    const sds::Image gradient = smooth(96, 80);
    const sds::Image scene = sds::imaging::render_scene(sds::imaging::random_scene(11), 128, 11);
    for (int level = 0; level <= 255; ++level) {
        for (const auto* picture : {&gradient, &scene}) {
            ASSERT_EQ(sds::binary(*picture, level).rgb, opencv_binary(*picture, level).rgb)
                << "threshold " << level;
        }
    }
    // 255 is Otsu's as 0 is (A1111's rule), not a level that leaves all white.
    EXPECT_EQ(sds::binary(gradient, 255).rgb, sds::binary(gradient, 0).rgb);
    EXPECT_NE(sds::binary(gradient, 60).rgb, sds::binary(gradient, 180).rgb);
    EXPECT_THROW(sds::binary(gradient, 256), sds::Error);
    EXPECT_THROW(sds::binary(gradient, -1), sds::Error);
}

// The controlnet fixture's first request, one image of 4 steps, with its tiny ControlNet alone.
sds::GenerationRequest controlnet_request(const std::filesystem::path& dir) {
    auto request =
        sds::GenerationRequest::from_json(sds::test::fixture_cases(dir)[0]["request"].dump());
    request.batch_count = 1;
    request.steps = 4;
    request.controls.resize(1);
    request.controls[0].model = (dir / "tiny-controlnet").string();
    return request;
}

// A ControlNet with the "canny" preprocessor is the ControlNet given cv::Canny's edges of the
// picture (at the request's size); other thresholds give other images.
TEST(Canny, ThePipelinesPreprocessorIsOpenCVsEdges) {
    const auto dir = sds::test::fixture_dir("controlnet");
    sds::GenerationRequest request = controlnet_request(dir);
    const sds::Image picture = noise(request.width, request.height, 7);
    auto& pipeline = sds::test::cached_pipeline(dir / "tiny-sd");
    const sds::Image edges = opencv_canny(picture, 60, 120);
    ASSERT_GT(edge_count(edges), 20u);
    request.controls[0].preprocessor = "none";
    const auto given = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                         std::span<const sds::Image>(&edges, 1));
    request.controls[0].preprocessor = "canny";
    request.controls[0].canny_low = 60;
    request.controls[0].canny_high = 120;
    const auto made = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                        std::span<const sds::Image>(&picture, 1));
    EXPECT_EQ(made.images.at(0).rgb, given.images.at(0).rgb);
    request.controls[0].canny_low = 900;
    request.controls[0].canny_high = 1400;
    ASSERT_NE(opencv_canny(picture, 900, 1400).rgb, edges.rgb);
    const auto other = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                         std::span<const sds::Image>(&picture, 1));
    EXPECT_NE(other.images.at(0).rgb, made.images.at(0).rgb);
    // "binary": the ControlNet given OpenCV's Otsu picture.
    const sds::Image shapes =
        sds::resize(sds::imaging::render_scene(sds::imaging::random_scene(5), 128, 5),
                    request.width, request.height);  // at the request's size
    const sds::Image otsu = opencv_binary(shapes);
    request.controls[0].preprocessor = "none";
    const auto from_otsu = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                             std::span<const sds::Image>(&otsu, 1));
    request.controls[0].preprocessor = "binary";
    const auto binarised = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                             std::span<const sds::Image>(&shapes, 1));
    EXPECT_EQ(binarised.images.at(0).rgb, from_otsu.images.at(0).rgb);
    // With a threshold of its own: OpenCV's picture at that level.
    const sds::Image at_150 = opencv_binary(shapes, 150);
    ASSERT_NE(at_150.rgb, otsu.rgb);
    request.controls[0].preprocessor = "none";
    const auto from_150 = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                            std::span<const sds::Image>(&at_150, 1));
    request.controls[0].preprocessor = "binary";
    request.controls[0].binary_threshold = 150;
    const auto binarised_150 = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                                 std::span<const sds::Image>(&shapes, 1));
    EXPECT_EQ(binarised_150.images.at(0).rgb, from_150.images.at(0).rgb);
    request.controls[0].binary_threshold = 300;
    EXPECT_THROW(pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                   std::span<const sds::Image>(&shapes, 1)),
                 sds::Error);
}

// A1111's lineart_standard (its numpy and cv2 calls, in OpenCV's C++): the picture padded to
// multiples of 64 by its last row and column, x = float32, g = GaussianBlur(x, (0, 0), 6),
// intensity = min over the channels of g - x, clipped to 0..255, divided by
// max(16, numpy's median of the values above 8), times 127, clipped, truncated to bytes, the
// padding cut off.
sds::Image a1111_lineart_standard(const sds::Image& image) {
    const int pad_h = (image.height + 63) / 64 * 64 - image.height;
    const int pad_w = (image.width + 63) / 64 * 64 - image.width;
    cv::Mat padded, x, g;
    cv::copyMakeBorder(opencv_view(image), padded, 0, pad_h, 0, pad_w, cv::BORDER_REPLICATE);
    padded.convertTo(x, CV_32FC3);
    cv::GaussianBlur(x, g, cv::Size(0, 0), 6.0);
    cv::Mat d = g - x;
    std::vector<cv::Mat> c;
    cv::split(d, c);
    cv::Mat intensity = cv::min(cv::min(c[0], c[1]), c[2]);
    intensity = cv::min(cv::max(intensity, 0.0), 255.0);
    std::vector<float> above;
    for (int y = 0; y < intensity.rows; ++y) {
        for (int px = 0; px < intensity.cols; ++px) {
            if (intensity.at<float>(y, px) > 8) {
                above.push_back(intensity.at<float>(y, px));
            }
        }
    }
    std::sort(above.begin(), above.end());
    float median = 16;  // numpy's median of none is nan, and max(16, nan) is 16
    if (!above.empty()) {
        const size_t n = above.size();
        const float m = n % 2 ? above[n / 2] : (above[n / 2 - 1] + above[n / 2]) / 2;
        median = m > 16 ? m : 16.0f;
    }
    cv::Mat out(image.height, image.width, CV_8U);
    for (int y = 0; y < image.height; ++y) {
        for (int px = 0; px < image.width; ++px) {
            float v = intensity.at<float>(y, px) / median;
            v *= 127;
            out.at<uint8_t>(y, px) = static_cast<uint8_t>(std::min(std::max(v, 0.0f), 255.0f));
        }
    }
    return from_grey(out);
}

// Dark strokes on white, as people sketch for line-art ControlNets.
sds::Image strokes(int w, int h, uint32_t seed) {
    std::mt19937 rng(seed);
    cv::Mat m(h, w, CV_8UC3, cv::Scalar(255, 255, 255));
    for (int i = 0; i < 6; ++i) {
        const cv::Point a(static_cast<int>(rng() % w), static_cast<int>(rng() % h));
        const cv::Point b(static_cast<int>(rng() % w), static_cast<int>(rng() % h));
        const int grey = static_cast<int>(rng() % 120);
        cv::line(m, a, b, cv::Scalar(grey, grey, grey + 20), 1 + static_cast<int>(rng() % 3),
                 cv::LINE_AA);
    }
    cv::circle(m, cv::Point(w / 2, h / 2), std::min(w, h) / 3, cv::Scalar(30, 40, 50), 2);
    sds::Image out{w, h, std::vector<uint8_t>(m.data, m.data + static_cast<size_t>(w) * h * 3)};
    return out;
}

TEST(LineartStandard, IsA1111sWrittenWithOpenCV) {
    std::vector<std::pair<std::string, sds::Image>> pictures = {
        {"strokes 64x64", strokes(64, 64, 1)},
        {"strokes 96x40", strokes(96, 40, 2)},
        {"strokes 200x136", strokes(200, 136, 3)},
        {"noise 48x32", noise(48, 32, 4)},
        {"smooth 96x80", smooth(96, 80)},
        {"noise 7x5", noise(7, 5, 5)},
        {"noise 1x1", noise(1, 1, 6)},
        {"white", sds::Image{16, 8, std::vector<uint8_t>(384, 255)}},
    };
    for (uint64_t seed : {3u, 11u}) {
        pictures.emplace_back(
            "scene " + std::to_string(seed),
            sds::imaging::render_scene(sds::imaging::random_scene(seed), 128, seed));
    }
    size_t lines = 0, pixels = 0, off_by_one = 0;
    for (const auto& [name, picture] : pictures) {
        const sds::Image ours = sds::lineart_standard(picture);
        const sds::Image want = a1111_lineart_standard(picture);
        ASSERT_EQ(ours.width, picture.width) << name;
        ASSERT_EQ(ours.height, picture.height) << name;
        ASSERT_EQ(ours.rgb.size(), want.rgb.size()) << name;
        int worst = 0;
        for (size_t i = 0; i < ours.rgb.size(); ++i) {
            const int d = std::abs(ours.rgb[i] - want.rgb[i]);
            worst = std::max(worst, d);
            off_by_one += d == 1;
            lines += i % 3 == 0 && want.rgb[i] > 127;
        }
        pixels += ours.rgb.size();
        // A float's last bit in the blur may move a byte across its truncation, by one.
        EXPECT_LE(worst, 1) << name;
    }
    EXPECT_LT(off_by_one, pixels / 1000);  // and rarely
    EXPECT_GT(lines, 2000u);               // the pictures have lines to find
    // White is no lines at all; a line on white is white on black.
    const sds::Image white =
        sds::lineart_standard(sds::Image{16, 8, std::vector<uint8_t>(384, 255)});
    EXPECT_TRUE(std::all_of(white.rgb.begin(), white.rgb.end(), [](uint8_t v) { return v == 0; }));
    EXPECT_THROW(sds::lineart_standard(sds::Image{}), sds::Error);
}

// The "lineart_standard" preprocessor is the ControlNet given A1111's lines of the picture at the
// request's size.
TEST(LineartStandard, ThePipelinesPreprocessorIsA1111s) {
    const auto dir = sds::test::fixture_dir("controlnet");
    sds::GenerationRequest request = controlnet_request(dir);
    const sds::Image picture = strokes(request.width, request.height, 9);
    auto& pipeline = sds::test::cached_pipeline(dir / "tiny-sd");
    const sds::Image lines = sds::lineart_standard(picture);  // A1111's, within one level (above)
    request.controls[0].preprocessor = "none";
    const auto given = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                         std::span<const sds::Image>(&lines, 1));
    request.controls[0].preprocessor = "lineart_standard";
    const auto made = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                        std::span<const sds::Image>(&picture, 1));
    EXPECT_EQ(made.images.at(0).rgb, given.images.at(0).rgb);
    request.controls[0].preprocessor = "none";
    const auto unlined = pipeline.generate(request, nullptr, nullptr, {}, nullptr,
                                           std::span<const sds::Image>(&picture, 1));
    EXPECT_NE(made.images.at(0).rgb, unlined.images.at(0).rgb);
    request.controls[0].preprocessor = "lineart_standard";
    EXPECT_EQ(sds::GenerationRequest::from_json(request.to_json()).controls.at(0).preprocessor,
              "lineart_standard");
    EXPECT_NE(request.to_a1111().find("Module: lineart_standard, "), std::string::npos)
        << request.to_a1111();
}

}  // namespace
