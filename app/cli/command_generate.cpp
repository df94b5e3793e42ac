// sdstudio-cli txt2img | img2img | inpaint [flags]: images as PNGs with their parameters.
#include <QDir>
#include <QFileInfo>

#include <cstdio>

#include "image_io.h"
#include "request_flags.h"

namespace sds::cli {

namespace {
enum class Mode { Txt2img, Img2img, Inpaint };

int generate(const Args& args, Mode mode) {
    GenerateFlags f = parse_generate_flags(args);
    if (!f.rest.empty()) {
        throw UsageError{"unknown argument '" + f.rest.front() + "'"};
    }
    const char* name =
        mode == Mode::Txt2img ? "txt2img" : (mode == Mode::Img2img ? "img2img" : "inpaint");
    if (mode == Mode::Txt2img && f.request.is_img2img()) {
        throw UsageError{"--init is for img2img and inpaint"};
    }
    if (mode != Mode::Txt2img && !f.request.is_img2img()) {
        throw UsageError{std::string(name) + " needs --init IMAGE"};
    }
    if (mode == Mode::Inpaint && !f.request.is_inpaint()) {
        throw UsageError{"inpaint needs --mask IMAGE (white repaints, black keeps)"};
    }
    if (mode != Mode::Inpaint && f.request.is_inpaint()) {
        throw UsageError{"--mask is for inpaint"};
    }
    const InitImages images = load_init_images(f.request);
    f.request.validate();
    Pipeline pipeline = load_pipeline(f);
    // Unset sizes: the model's own, as diffusers does.
    f.request.width = f.request.width ? f.request.width : pipeline.native_size();
    f.request.height = f.request.height ? f.request.height : pipeline.native_size();
    std::fprintf(stderr, "request: %s\n", f.request.to_json().c_str());
    std::fprintf(stderr, "device: %s, %s\n", pipeline.device().str().c_str(),
                 c10::toString(pipeline.dtype()));
    Progress progress(name);
    const GenerationResult result = pipeline.generate(f.request, images.init_or_null(),
                                                      images.mask_or_null(), std::ref(progress));
    progress.done();
    QDir().mkpath(QString::fromStdString(f.out_dir));
    const QString model = QFileInfo(QString::fromStdString(f.model)).fileName();
    for (size_t i = 0; i < result.images.size(); ++i) {
        const int64_t seed = result.request.seed + static_cast<int64_t>(i);
        const QString path = app::free_png_stem(QString::fromStdString(f.out_dir),
                                                QString("%1-%2").arg(name).arg(seed)) +
                             ".png";
        app::save_png(path, app::to_qimage(result.images[i]),
                      app::metadata_for(result.request, static_cast<int>(i), model));
        std::printf("%s\n", path.toStdString().c_str());
    }
    return 0;
}
}  // namespace

int command_txt2img(const Args& args) {
    return generate(args, Mode::Txt2img);
}
int command_img2img(const Args& args) {
    return generate(args, Mode::Img2img);
}
int command_inpaint(const Args& args) {
    return generate(args, Mode::Inpaint);
}

}  // namespace sds::cli
