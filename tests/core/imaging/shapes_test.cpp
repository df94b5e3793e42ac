// Synthetic scenes: reproducible, captions that name what is drawn, and an analysis that reads
// rendered scenes back (the yardstick the demo model's semantic checks use).
#include <gtest/gtest.h>

#include <map>

#include "sds/shapes.h"

using namespace sds;
using namespace sds::imaging;

TEST(Shapes, SameSeedSameSceneAndPixels) {
    const Scene a = random_scene(7), b = random_scene(7), c = random_scene(8);
    EXPECT_EQ(a.caption, b.caption);
    EXPECT_EQ(render_scene(a, 128, 7).rgb, render_scene(b, 128, 7).rgb);
    EXPECT_NE(render_scene(a, 128, 7).rgb, render_scene(c, 128, 8).rgb);
}

TEST(Shapes, CaptionsNameTheObjectAndBackgroundInVariedWords) {
    std::map<std::string, int> openings;
    for (uint64_t seed = 0; seed < 400; ++seed) {
        const Scene s = random_scene(seed);
        ASSERT_FALSE(s.objects.empty());
        for (const auto& o : s.objects) {
            EXPECT_NE(s.caption.find(o.colour + " "), std::string::npos) << s.caption;
            EXPECT_NE(s.caption.find(o.shape), std::string::npos) << s.caption;
            EXPECT_NE(o.colour, s.background);
        }
        EXPECT_NE(s.caption.find(s.background + " background"), std::string::npos) << s.caption;
        openings[s.caption.substr(0, s.caption.find(' ', 2))]++;
    }
    EXPECT_GE(openings.size(), 3u);  // "a", "an", "two", "red", ...
}

TEST(Shapes, AnalysisReadsRenderedScenesBack) {
    int n = 0, colour = 0, background = 0, shape = 0, position = 0;
    std::map<std::string, int> shape_miss;
    for (uint64_t seed = 0; seed < 300; ++seed) {
        const Scene s = random_scene(seed);
        if (s.objects.size() != 1) {
            continue;
        }
        const auto& o = s.objects[0];
        const SceneAnalysis a = analyse(render_scene(s, 128, seed));
        ++n;
        ASSERT_TRUE(a.found) << s.caption;
        background += a.background == s.background;
        colour += a.colour == o.colour;
        shape += a.shape == o.shape;
        position += a.position == o.position;
        if (a.shape != o.shape) {
            shape_miss[o.shape + "->" + a.shape]++;
        }
    }
    for (const auto& [k, v] : shape_miss) {
        std::printf("shape miss %s: %d\n", k.c_str(), v);
    }
    std::printf("%d scenes: background %d, colour %d, shape %d, position %d\n", n, background,
                colour, shape, position);
    EXPECT_EQ(background, n);
    EXPECT_EQ(colour, n);
    EXPECT_GE(shape, n * 97 / 100);
    EXPECT_GE(position, n * 95 / 100);
}

TEST(Shapes, IouOfMasks) {
    const Scene s = random_scene(3);
    const auto a = analyse(render_scene(s, 128, 3));
    EXPECT_DOUBLE_EQ(iou(a.mask, a.mask), 1.0);
    std::vector<uint8_t> none(a.mask.size(), 0);
    EXPECT_DOUBLE_EQ(iou(a.mask, none), 0.0);
}
