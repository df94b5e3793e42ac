#include "sds/shapes.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <random>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sds/error.h"

namespace sds::imaging {

namespace {

using Rng = std::mt19937_64;

template <typename T>
const T& pick(Rng& rng, const std::vector<T>& v) {
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
}
double uniform(Rng& rng, double a, double b) {
    return std::uniform_real_distribution<double>(a, b)(rng);
}

const NamedColour& colour_named(const std::string& name) {
    for (const auto& c : palette()) {
        if (name == c.name) {
            return c;
        }
    }
    throw Error("unknown colour '" + name + "'");
}

cv::Mat to_mat(const Image& image) {
    cv::Mat m(image.height, image.width, CV_8UC3);
    std::copy(image.rgb.begin(), image.rgb.end(), m.data);
    return m;
}

Image from_mat(const cv::Mat& m) {
    Image out;
    out.width = m.cols;
    out.height = m.rows;
    out.rgb.assign(m.data, m.data + static_cast<size_t>(m.cols) * m.rows * 3);
    return out;
}

// Centre of a named position, as fractions of the image.
cv::Point2d position_centre(const std::string& p) {
    double x = 0.5, y = 0.5;
    if (p.find("left") != std::string::npos)
        x = 0.22;
    if (p.find("right") != std::string::npos)
        x = 0.78;
    if (p.find("top") != std::string::npos)
        y = 0.22;
    if (p.find("bottom") != std::string::npos)
        y = 0.78;
    return {x, y};
}

double size_radius(const std::string& s) {
    return s == "small" ? 0.10 : s == "medium" ? 0.15 : 0.20;
}

std::string position_phrase(const std::string& p, Rng& rng) {
    if (p == "center") {
        return pick(rng, std::vector<std::string>{"in the center", "in the middle"});
    }
    if (p.find(' ') != std::string::npos) {
        return pick(rng, std::vector<std::string>{"in the " + p + " corner", "in the " + p});
    }
    return pick(rng, std::vector<std::string>{"on the " + p, "at the " + p});
}

}  // namespace

const std::vector<NamedColour>& palette() {
    static const std::vector<NamedColour> p = {{"red", 220, 40, 40},     {"green", 40, 170, 60},
                                               {"blue", 40, 80, 220},    {"yellow", 240, 210, 40},
                                               {"orange", 245, 140, 30}, {"purple", 140, 60, 180},
                                               {"white", 245, 245, 245}, {"black", 25, 25, 25}};
    return p;
}
const std::vector<std::string>& shape_names() {
    static const std::vector<std::string> s = {"circle", "square", "triangle", "star"};
    return s;
}
const std::vector<std::string>& size_names() {
    static const std::vector<std::string> s = {"small", "medium", "large"};
    return s;
}
const std::vector<std::string>& position_names() {
    static const std::vector<std::string> s = {"center",    "left",        "right",
                                               "top",       "bottom",      "top left",
                                               "top right", "bottom left", "bottom right"};
    return s;
}

std::string caption_for(const Scene& scene, uint64_t seed) {
    Rng rng(seed ^ 0x9e3779b97f4a7c15ULL);
    auto object = [&](const SceneObject& o, bool with_size, bool with_position) {
        std::string s = (with_size ? o.size + " " : "") + o.colour + " " + o.shape;
        return with_position ? s + " " + position_phrase(o.position, rng) : s;
    };
    auto article = [](const std::string& s) {
        return std::string(s.front() == 'o' ? "an " : "a ") + s;
    };
    const std::string bg = scene.background;
    if (scene.objects.size() == 2) {
        const auto& a = scene.objects[0];
        const auto& b = scene.objects[1];
        switch (std::uniform_int_distribution<int>(0, 2)(rng)) {
            case 0:
                return article(object(a, false, true)) + " and " + article(object(b, false, true)) +
                       ", " + bg + " background";
            case 1:
                return article(object(a, false, false)) + " and " +
                       article(object(b, false, false)) + " on a " + bg + " background";
            default:
                return "two shapes: " + article(object(a, true, true)) + " and " +
                       article(object(b, true, true)) + ", " + bg + " background";
        }
    }
    const auto& o = scene.objects.front();
    switch (std::uniform_int_distribution<int>(0, 6)(rng)) {
        case 0:
            return article(object(o, true, true)) + ", " + bg + " background";
        case 1:
            return article(object(o, false, false)) + " on a " + bg + " background";
        case 2:
            return article(object(o, true, false)) + " on a " + bg + " background";
        case 3:
            return object(o, false, false) + ", " + bg + " background";
        case 4:
            return article(object(o, true, true)) + " on a " + bg + " background";
        case 5:
            return "a picture of " + article(object(o, false, true)) + " against a " + bg +
                   " background";
        default:
            return article(object(o, false, false)) + ", " + bg + " background, " + o.size;
    }
}

Scene random_scene(uint64_t seed) {
    Rng rng(seed);
    Scene s;
    std::vector<std::string> colours;
    for (const auto& c : palette()) {
        colours.push_back(c.name);
    }
    s.background = pick(rng, colours);
    auto other_colour = [&](const std::string& avoid) {
        std::string c;
        do {
            c = pick(rng, colours);
        } while (c == s.background || c == avoid);
        return c;
    };
    if (uniform(rng, 0, 1) < 0.8) {
        SceneObject o{pick(rng, shape_names()), other_colour(""), pick(rng, size_names()),
                      pick(rng, position_names())};
        s.objects.push_back(o);
    } else {
        const bool horizontal = uniform(rng, 0, 1) < 0.5;
        const std::vector<std::string> sizes = {"small", "medium"};
        SceneObject a{pick(rng, shape_names()), other_colour(""), pick(rng, sizes),
                      horizontal ? "left" : "top"};
        SceneObject b{pick(rng, shape_names()), other_colour(a.colour), pick(rng, sizes),
                      horizontal ? "right" : "bottom"};
        s.objects = {a, b};
    }
    s.caption = caption_for(s, seed);
    return s;
}

Image render_scene(const Scene& scene, int size, uint64_t seed) {
    Rng rng(seed * 2654435761ULL + 17);
    const auto& bg = colour_named(scene.background);
    cv::Mat m(size, size, CV_8UC3, cv::Scalar(bg.r, bg.g, bg.b));
    for (const auto& o : scene.objects) {
        const auto& c = colour_named(o.colour);
        const cv::Scalar colour(c.r, c.g, c.b);
        const double r = size_radius(o.size) * size * uniform(rng, 0.9, 1.1);
        cv::Point2d centre = position_centre(o.position);
        centre.x = centre.x * size + uniform(rng, -0.04, 0.04) * size;
        centre.y = centre.y * size + uniform(rng, -0.04, 0.04) * size;
        centre.x = std::clamp(centre.x, r + 2, size - r - 2);
        centre.y = std::clamp(centre.y, r + 2, size - r - 2);
        const double angle = uniform(rng, -0.25, 0.25);
        constexpr int kShift = 4;  // sub-pixel precision for anti-aliased polygons
        auto point = [&](double a, double rr) {
            return cv::Point(static_cast<int>(std::lround((centre.x + rr * std::sin(a)) * 16)),
                             static_cast<int>(std::lround((centre.y - rr * std::cos(a)) * 16)));
        };
        std::vector<cv::Point> poly;
        if (o.shape == "circle") {
            cv::circle(m,
                       cv::Point(static_cast<int>(centre.x * 16), static_cast<int>(centre.y * 16)),
                       static_cast<int>(r * 16), colour, cv::FILLED, cv::LINE_AA, kShift);
            continue;
        } else if (o.shape == "square") {
            for (int k = 0; k < 4; ++k) {
                poly.push_back(point(angle + std::numbers::pi / 4 + k * std::numbers::pi / 2,
                                     r * 0.95 * std::sqrt(2.0) * 0.8));
            }
        } else if (o.shape == "triangle") {
            for (int k = 0; k < 3; ++k) {
                poly.push_back(point(angle + k * 2 * std::numbers::pi / 3, r * 1.1));
            }
        } else {  // star, five points
            for (int k = 0; k < 10; ++k) {
                poly.push_back(point(angle + k * std::numbers::pi / 5, k % 2 ? r * 0.45 : r * 1.1));
            }
        }
        cv::fillPoly(m, std::vector<std::vector<cv::Point>>{poly}, colour, cv::LINE_AA, kShift);
    }
    return from_mat(m);
}

SceneAnalysis analyse(const Image& image) {
    SceneAnalysis a;
    const cv::Mat m = to_mat(image);
    const int w = m.cols, h = m.rows;
    // The background: the median of a frame a few pixels in from the edge, per channel (decoders
    // often leave a thin rim of off colour on the very edge).
    const int in = std::min(3, std::min(w, h) / 8);
    std::vector<uint8_t> ch[3];
    for (int x = 0; x < w; ++x) {
        for (int y : {in, in + 1, h - 2 - in, h - 1 - in}) {
            const auto& p = m.at<cv::Vec3b>(y, x);
            for (int k = 0; k < 3; ++k)
                ch[k].push_back(p[k]);
        }
    }
    for (int y = 0; y < h; ++y) {
        for (int x : {in, in + 1, w - 2 - in, w - 1 - in}) {
            const auto& p = m.at<cv::Vec3b>(y, x);
            for (int k = 0; k < 3; ++k)
                ch[k].push_back(p[k]);
        }
    }
    cv::Vec3d bg;
    for (int k = 0; k < 3; ++k) {
        std::nth_element(ch[k].begin(), ch[k].begin() + ch[k].size() / 2, ch[k].end());
        bg[k] = ch[k][ch[k].size() / 2];
    }
    auto nearest = [](const cv::Vec3d& c) {
        const NamedColour* best = nullptr;
        double d_best = 1e18;
        for (const auto& p : palette()) {
            const double d =
                std::pow(c[0] - p.r, 2) + std::pow(c[1] - p.g, 2) + std::pow(c[2] - p.b, 2);
            if (d < d_best) {
                d_best = d, best = &p;
            }
        }
        return std::string(best->name);
    };
    a.background = nearest(bg);
    // Foreground: pixels far from the background colour, cleaned up.
    cv::Mat fg(h, w, CV_8U);
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const auto& p = m.at<cv::Vec3b>(y, x);
            const double d = std::sqrt(std::pow(p[0] - bg[0], 2) + std::pow(p[1] - bg[1], 2) +
                                       std::pow(p[2] - bg[2], 2));
            fg.at<uint8_t>(y, x) = d > 60 ? 255 : 0;
        }
    }
    const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_ELLIPSE, {3, 3});
    cv::morphologyEx(fg, fg, cv::MORPH_OPEN, kernel);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(fg, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
    a.mask.assign(static_cast<size_t>(w) * h, 0);
    if (contours.empty()) {
        return a;
    }
    const auto largest = std::max_element(contours.begin(), contours.end(), [](auto& p, auto& q) {
        return cv::contourArea(p) < cv::contourArea(q);
    });
    const double area = cv::contourArea(*largest);
    if (area < 0.003 * w * h) {
        return a;
    }
    a.found = true;
    a.area_fraction = area / (w * h);
    cv::Mat mask = cv::Mat::zeros(h, w, CV_8U);
    cv::drawContours(mask, contours, static_cast<int>(largest - contours.begin()), 255, cv::FILLED);
    std::copy(mask.data, mask.data + mask.total(), a.mask.begin());
    // Colour from the inside, away from anti-aliased edges.
    cv::Mat inner;
    cv::erode(mask, inner, kernel, {-1, -1}, 2);
    const cv::Scalar mean = cv::mean(m, cv::countNonZero(inner) > 10 ? inner : mask);
    a.colour = nearest(cv::Vec3d(mean[0], mean[1], mean[2]));
    // Shape.
    const double perimeter = cv::arcLength(*largest, true);
    a.circularity = 4 * std::numbers::pi * area / (perimeter * perimeter);
    std::vector<cv::Point> hull;
    cv::convexHull(*largest, hull);
    a.solidity = area / std::max(1.0, cv::contourArea(hull));
    std::vector<cv::Point> approx;
    cv::approxPolyDP(hull, approx, 0.06 * cv::arcLength(hull, true), true);
    a.corners = static_cast<int>(approx.size());
    // How much of its tightest rotated rectangle the outline fills: a square about 1, a circle
    // pi / 4, a triangle one half.
    const cv::RotatedRect box = cv::minAreaRect(*largest);
    a.extent = area / std::max(1.0, static_cast<double>(box.size.area()));
    if (a.solidity < 0.8) {
        a.shape = "star";
    } else if (a.corners == 3 || a.extent < 0.65) {
        a.shape = "triangle";
    } else if (a.extent > 0.88) {
        a.shape = "square";
    } else if (a.circularity > 0.75) {
        a.shape = "circle";
    } else {
        a.shape = "unknown";
    }
    // Position from the centroid, by thirds.
    const cv::Moments mo = cv::moments(mask, true);
    const double cx = mo.m10 / mo.m00 / w, cy = mo.m01 / mo.m00 / h;
    const std::string col = cx < 0.36 ? "left" : cx > 0.64 ? "right" : "";
    const std::string row = cy < 0.36 ? "top" : cy > 0.64 ? "bottom" : "";
    a.position = row.empty() && col.empty() ? "center"
                 : row.empty()              ? col
                 : col.empty()              ? row
                                            : row + " " + col;
    return a;
}

double iou(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    if (a.size() != b.size()) {
        throw Error("iou: masks of different sizes");
    }
    size_t inter = 0, uni = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        inter += a[i] && b[i];
        uni += a[i] || b[i];
    }
    return uni ? static_cast<double>(inter) / uni : 0.0;
}

std::vector<Scene> write_dataset(const std::string& dir, int count, int size, uint64_t first_seed) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
        throw FileError(dir + ": cannot create the folder: " + ec.message());
    }
    std::vector<Scene> scenes;
    for (int i = 0; i < count; ++i) {
        const uint64_t seed = first_seed + static_cast<uint64_t>(i);
        Scene s = random_scene(seed);
        const Image image = render_scene(s, size, seed);
        char name[32];
        std::snprintf(name, sizeof name, "%06d", i);
        const fs::path png = fs::path(dir) / (std::string(name) + ".png");
        cv::Mat bgr;
        cv::cvtColor(to_mat(image), bgr, cv::COLOR_RGB2BGR);
        if (!cv::imwrite(png.string(), bgr)) {
            throw FileError(png.string() + ": cannot write the image");
        }
        std::ofstream txt(fs::path(dir) / (std::string(name) + ".txt"));
        txt << s.caption << "\n";
        if (!txt) {
            throw FileError((fs::path(dir) / (std::string(name) + ".txt")).string() +
                            ": cannot write the caption");
        }
        scenes.push_back(std::move(s));
    }
    return scenes;
}

}  // namespace sds::imaging
