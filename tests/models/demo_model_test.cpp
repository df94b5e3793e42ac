// What the bundled demo model (models/demo) draws, measured with image metrics: for prompts
// naming a shape, a colour and a background, over 8 seeds each, how often the largest object's
// colour, the background colour and the shape match; that guidance raises adherence; that
// img2img keeps a rough sketch's object where it was drawn and cleans its outline; and that the
// same pipeline with random UNet weights fails the same checks. The floors asserted are below
// the rates measured when the model was trained (docs/demo-model.md).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numbers>
#include <random>

#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include "sds/pipeline.h"
#include "sds/shapes.h"
#include "sds/unet.h"

using namespace sds;

namespace {

// SDS_DEMO_MODEL_DIR measures another model folder (a training candidate) with the same checks.
const std::filesystem::path kDemo =
    std::getenv("SDS_DEMO_MODEL_DIR") ? std::getenv("SDS_DEMO_MODEL_DIR") : SDS_DEMO_MODEL;

struct Case {
    std::string shape, colour, background, prompt;
};

std::vector<Case> cases() {
    return {{"circle", "red", "blue", "a red circle on a blue background"},
            {"square", "yellow", "black", "a yellow square on a black background"},
            {"triangle", "green", "white", "a green triangle on a white background"},
            {"star", "blue", "yellow", "a blue star on a yellow background"},
            {"circle", "white", "purple", "a white circle on a purple background"},
            {"square", "orange", "green", "an orange square on a green background"},
            {"triangle", "purple", "orange", "a purple triangle, orange background"},
            {"star", "black", "white", "a black star on a white background"}};
}

struct Rates {
    double colour = 0, background = 0, shape = 0, all = 0;
    int n = 0;
};

Rates measure(Pipeline& p, double guidance, int seeds) {
    Rates r;
    for (const auto& c : cases()) {
        for (int s = 0; s < seeds; ++s) {
            GenerationRequest q;
            q.prompt = c.prompt;
            q.steps = 15;
            q.guidance_scale = guidance;
            q.sampler = Sampler::DpmPP2M;
            q.seed = 1000 + s;
            const auto a = imaging::analyse(p.generate(q).images.front());
            const bool col = a.found && a.colour == c.colour;
            const bool bg = a.background == c.background;
            const bool sh = a.found && a.shape == c.shape;
            r.colour += col, r.background += bg, r.shape += sh, r.all += col && bg && sh;
            ++r.n;
        }
    }
    r.colour /= r.n, r.background /= r.n, r.shape /= r.n, r.all /= r.n;
    return r;
}

void print(const char* what, const Rates& r) {
    std::printf("%-28s colour %.2f  background %.2f  shape %.2f  all three %.2f  (%d images)\n",
                what, r.colour, r.background, r.shape, r.all, r.n);
}

// A rough, hand-drawn-looking blob: a circle with a wobbly outline, on a flat background.
Image rough_sketch(int size, double cx, double cy, double radius, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> wobble(-0.25, 0.25);
    std::vector<double> bumps(7);
    for (auto& b : bumps) {
        b = wobble(rng);
    }
    Image im{size, size, std::vector<uint8_t>(static_cast<size_t>(size) * size * 3)};
    for (int y = 0; y < size; ++y) {
        for (int x = 0; x < size; ++x) {
            const double dx = x - cx * size, dy = y - cy * size;
            const double a = std::atan2(dy, dx);
            double r = radius * size;
            for (size_t k = 0; k < bumps.size(); ++k) {
                r *= 1 + bumps[k] * 0.5 * std::sin((k + 2) * a + k);
            }
            const bool inside = std::hypot(dx, dy) < r;
            uint8_t* px = &im.rgb[(static_cast<size_t>(y) * size + x) * 3];
            px[0] = inside ? 210 : 50, px[1] = inside ? 50 : 80, px[2] = inside ? 50 : 210;
        }
    }
    return im;
}

}  // namespace

class DemoModel : public ::testing::Test {
  protected:
    static void SetUpTestSuite() { pipe_ = new Pipeline(Pipeline::load(kDemo, {})); }
    static void TearDownTestSuite() { delete pipe_; }
    static Pipeline* pipe_;
};
Pipeline* DemoModel::pipe_ = nullptr;

TEST_F(DemoModel, IsSmallAndSd1x) {
    uint64_t bytes = 0;
    for (const auto& f : std::filesystem::recursive_directory_iterator(kDemo)) {
        if (f.is_regular_file()) {
            bytes += f.file_size();
        }
    }
    std::printf("models/demo: %.1f MB\n", bytes / 1e6);
    EXPECT_LE(bytes, 40'000'000u);
    EXPECT_GE(pipe_->native_size(), 128);
}

TEST_F(DemoModel, DrawsTheColourShapeAndBackgroundItIsAskedFor) {
    const Rates unguided = measure(*pipe_, 1.0, 8);
    const Rates g3 = measure(*pipe_, 3.0, 8);
    const Rates g75 = measure(*pipe_, 7.5, 8);
    print("demo, guidance 1 (none)", unguided);
    print("demo, guidance 3", g3);
    print("demo, guidance 7.5", g75);
    // Floors below what the committed model measured (docs/demo-model.md): guidance 3: colour
    // 0.59, background 1.00, shape 0.59, all three 0.44; guidance 7.5: 0.50, 1.00, 0.56, 0.38;
    // guidance 1: 0.58, 1.00, 0.56, 0.38. Random UNet weights: 0.12, 0.12, 0.25, 0.00.
    for (const Rates* r : {&g3, &g75}) {
        EXPECT_GE(r->colour, 0.40);
        EXPECT_GE(r->background, 0.90);
        EXPECT_GE(r->shape, 0.45);
        EXPECT_GE(r->all, 0.30);
    }
    // Guidance raises adherence: all three right more often at 3 than with no guidance (28 of 64
    // images against 24 when measured). 7.5 is past the best for this small model: its object
    // colours drift (see docs/demo-model.md).
    EXPECT_GT(g3.all, unguided.all);
    EXPECT_GE(g3.shape, unguided.shape);
}

TEST_F(DemoModel, RandomUNetWeightsFailTheSameChecks) {
    Pipeline random = Pipeline::load(kDemo, {});
    {
        at::NoGradGuard no_grad;
        at::Generator g = at::make_generator<at::CPUGeneratorImpl>(0);
        for (auto& p : random.unet().module().parameters()) {
            p.normal_(0, 0.05, g);
        }
    }
    const Rates r = measure(random, 7.5, 4);
    print("random UNet, guidance 7.5", r);
    EXPECT_LE(r.all, 0.05);
    EXPECT_LE(r.colour, 0.25);      // the trained model: 0.50 to 0.59
    EXPECT_LE(r.background, 0.30);  // the trained model: 1.00
}

// The live step previews show the colours the result will have: the preview of the last step's
// estimate against the decoded image shrunk to the same size (the mean of each 8x8 block). The
// demo VAE is not SD's, so its preview map is fitted at load; SD 1.x's factors would be off.
TEST_F(DemoModel, StepPreviewsShowTheColoursOfTheResult) {
    double fitted = 0, sd1 = 0;
    int n = 0;
    for (const char* prompt :
         {"a red circle on a blue background", "a yellow square, black background",
          "a green triangle on a white background", "a purple star on an orange background"}) {
        GenerationRequest q;
        q.prompt = prompt;
        q.steps = 15;
        q.guidance_scale = 3.0;
        q.sampler = Sampler::DpmPP2M;
        q.seed = 4000 + n;
        at::Tensor last;
        const Image image =
            pipe_->generate(q, nullptr, nullptr, [&](const StepEvent& e) { last = e.pred_x0; })
                .images.front();
        const int f = pipe_->downscale(), w = image.width / f, h = image.height / f;
        auto error = [&](const Image& p) {
            EXPECT_EQ(p.width, w);
            double e = 0;
            for (int y = 0; y < h; ++y) {
                for (int x = 0; x < w; ++x) {
                    for (int k = 0; k < 3; ++k) {
                        double block = 0;
                        for (int dy = 0; dy < f; ++dy) {
                            for (int dx = 0; dx < f; ++dx) {
                                block +=
                                    image.rgb[((y * f + dy) * image.width + x * f + dx) * 3 + k];
                            }
                        }
                        e += std::abs(block / (f * f) - p.rgb[(y * w + x) * 3 + k]);
                    }
                }
            }
            return e / (w * h * 3);
        };
        fitted += error(pipe_->preview(last).front());
        sd1 += error(latents_to_preview(last, sd1_preview_map()).front());
        ++n;
    }
    std::printf(
        "step preview against the result shrunk 8x: mean error %.1f/255 with the fitted "
        "map, %.1f/255 with SD 1.x's\n",
        fitted / n, sd1 / n);
    EXPECT_LT(fitted / n, 45.0);   // measured 36.1
    EXPECT_LT(fitted, 0.5 * sd1);  // SD 1.x: 107.9
}

TEST_F(DemoModel, Img2imgKeepsTheSketchedObjectWhereItWasAndCleansIt) {
    double iou_sum = 0, circ_before = 0, circ_after = 0;
    int n = 0, kept = 0;
    for (int s = 0; s < 8; ++s) {
        const double cx = s % 2 ? 0.3 : 0.7, cy = s % 4 < 2 ? 0.35 : 0.65;
        const Image sketch = rough_sketch(pipe_->native_size(), cx, cy, 0.17, s);
        const auto before = imaging::analyse(sketch);
        GenerationRequest q;
        q.prompt = "a red circle on a blue background";
        q.steps = 20;
        q.strength = 0.6;
        q.sampler = Sampler::DpmPP2M;
        q.seed = 2000 + s;
        q.init_image = "sketch";
        const auto after = imaging::analyse(pipe_->generate(q, &sketch).images.front());
        const double overlap = after.found ? imaging::iou(before.mask, after.mask) : 0.0;
        iou_sum += overlap;
        kept += overlap > 0.5;
        circ_before += before.circularity;
        circ_after += after.circularity;
        ++n;
    }
    std::printf(
        "img2img from rough sketches: mean IoU %.2f (%d/%d above 0.5), circularity %.3f -> "
        "%.3f\n",
        iou_sum / n, kept, n, circ_before / n, circ_after / n);
    EXPECT_GE(iou_sum / n, 0.35);                  // measured 0.42
    EXPECT_GT(circ_after, circ_before + 0.1 * n);  // measured 0.621 -> 0.840 (mean)
}
