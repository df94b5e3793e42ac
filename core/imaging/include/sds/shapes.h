#pragma once
// Synthetic scenes for training and checking the demo model: one or two simple shapes in named
// colours, sizes and positions on a named background, with a caption that says so in varied
// words; and the reverse, reading a scene back from an image (background colour, the largest
// object's colour, shape and position), to check what a model drew.
//
// OpenCV does the drawing and the analysis; this header keeps it out of the engine.
#include <cstdint>
#include <string>
#include <vector>

#include "sds/image.h"

namespace sds::imaging {

struct NamedColour {
    const char* name;
    uint8_t r, g, b;
};
// The palette scenes use and analysis names colours from.
const std::vector<NamedColour>& palette();
const std::vector<std::string>& shape_names();     // circle, square, triangle, star
const std::vector<std::string>& size_names();      // small, medium, large
const std::vector<std::string>& position_names();  // left, right, top, bottom, center, ...

struct SceneObject {
    std::string shape, colour, size, position;
};

struct Scene {
    std::vector<SceneObject> objects;  // one or two
    std::string background;
    std::string caption;
};

// A random scene from `seed` (the same seed gives the same scene, caption and pixels).
Scene random_scene(uint64_t seed);
// Draws a scene at `size` x `size` pixels. Positions, sizes and angles are jittered from `seed`.
Image render_scene(const Scene& scene, int size, uint64_t seed);
// A caption for a scene in one of several phrasings chosen by `seed`.
std::string caption_for(const Scene& scene, uint64_t seed);

// What an image shows, as far as colour blobs tell.
struct SceneAnalysis {
    std::string background;  // the nearest palette colour to the border's median
    bool found = false;      // an object stands out from the background
    std::string colour;      // the largest object's mean colour, nearest palette name
    std::string shape;       // circle | square | triangle | star | unknown
    std::string position;    // from the object's centroid (thirds of the image)
    double area_fraction = 0;
    double circularity = 0;     // 4 pi A / P^2
    double solidity = 0;        // A / convex hull area
    double extent = 0;          // A / the smallest rotated rectangle's area
    int corners = 0;            // vertices of the simplified outline
    std::vector<uint8_t> mask;  // width * height, 255 on the largest object
};
SceneAnalysis analyse(const Image& image);

// Intersection over union of two masks of the same size (255 = inside).
double iou(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b);

// Writes `count` scenes as NAME.png + NAME.txt (the caption) into `dir`, from seeds
// first_seed, first_seed + 1, ...; returns the scenes. Throws sds::FileError.
std::vector<Scene> write_dataset(const std::string& dir, int count, int size, uint64_t first_seed);

}  // namespace sds::imaging
