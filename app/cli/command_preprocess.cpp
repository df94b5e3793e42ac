// sdstudio-cli preprocess --image IN --out OUT.png [--preprocessor NAME] [--width W --height H]
// [--canny-low L --canny-high H --binary-threshold T --depth-model DIR]: what a ControlNet would
// see of a picture (A1111's "preview annotator result"): the picture resized to W x H (Lanczos,
// as a generation sizes its control image), then its preprocessor's result.
#include <cstdio>

#include <QFileInfo>

#include "commands.h"
#include "image_io.h"
#include "request_flags.h"
#include "sds/error.h"
#include "sds/generation_request.h"
#include "sds/image.h"
#include "sds/pipeline.h"

namespace sds::cli {

int command_preprocess(const Args& args) {
    std::string in, out;
    int width = 0, height = 0;
    ControlRef c;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (i + 1 >= args.size()) {
            throw UsageError{a.rfind("--", 0) == 0 ? a + " needs a value"
                                                   : "unknown argument '" + a + "'"};
        }
        const std::string& v = args[++i];
        if (a == "--image") {
            in = v;
        } else if (a == "--out") {
            out = v;
        } else if (a == "--preprocessor") {
            c.preprocessor = v;
        } else if (a == "--width") {
            width = number<int>(a, v);
        } else if (a == "--height") {
            height = number<int>(a, v);
        } else if (a == "--canny-low") {
            c.canny_low = number<double>(a, v);
        } else if (a == "--canny-high") {
            c.canny_high = number<double>(a, v);
        } else if (a == "--binary-threshold") {
            c.binary_threshold = number<int>(a, v);
        } else if (a == "--depth-model") {
            c.depth_model = v;
        } else {
            throw UsageError{"unknown argument '" + a + "'"};
        }
    }
    if (in.empty() || out.empty()) {
        throw UsageError{"needs --image IN and --out OUT.png"};
    }
    if ((width > 0) != (height > 0) || width < 0 || height < 0) {
        throw UsageError{"--width and --height go together, both positive"};
    }
    c.model = c.image = in;  // (the messages name the picture)
    GenerationRequest check;
    check.controls = {c};
    check.validate();
    Image picture = app::load_image(QString::fromStdString(in));
    if (width > 0 && (width != picture.width || height != picture.height)) {
        picture = resize(picture, width, height);
    }
    const Image seen = preprocess_control(picture, c);
    app::save_png(QString::fromStdString(out), app::to_qimage(seen), {});
    std::printf("%s\n",
                QFileInfo(QString::fromStdString(out)).absoluteFilePath().toUtf8().constData());
    return 0;
}

}  // namespace sds::cli
