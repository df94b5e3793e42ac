// sdstudio-cli txt2img | img2img [flags]: images as PNGs with their parameters.
#include <QDir>
#include <QFileInfo>

#include <cstdio>

#include "image_io.h"
#include "request_flags.h"

namespace sds::cli {

namespace {
int generate(const Args& args, bool img2img) {
    GenerateFlags f = parse_generate_flags(args);
    if (!f.rest.empty()) {
        throw UsageError{"unknown argument '" + f.rest.front() + "'"};
    }
    if (img2img != f.request.is_img2img()) {
        throw UsageError{img2img ? "img2img needs --init IMAGE" : "--init is for img2img"};
    }
    Image init;
    if (img2img) {
        init = app::load_image(QString::fromStdString(f.request.init_image));
        if (f.request.width == 0) {  // the init image's size, down to a multiple of 8
            f.request.width = init.width - init.width % 8;
            f.request.height = init.height - init.height % 8;
        }
    }
    f.request.validate();
    Pipeline pipeline = load_pipeline(f);
    // Unset sizes: the model's own, as diffusers does.
    f.request.width = f.request.width ? f.request.width : pipeline.native_size();
    f.request.height = f.request.height ? f.request.height : pipeline.native_size();
    std::fprintf(stderr, "request: %s\n", f.request.to_json().c_str());
    std::fprintf(stderr, "device: %s, %s\n", pipeline.device().str().c_str(),
                 c10::toString(pipeline.dtype()));
    Progress progress(img2img ? "img2img" : "txt2img");
    const GenerationResult result =
        pipeline.generate(f.request, img2img ? &init : nullptr, std::ref(progress));
    progress.done();
    QDir().mkpath(QString::fromStdString(f.out_dir));
    const QString model = QFileInfo(QString::fromStdString(f.model)).fileName();
    for (size_t i = 0; i < result.images.size(); ++i) {
        const int64_t seed = result.request.seed + static_cast<int64_t>(i);
        const QString path =
            QDir(QString::fromStdString(f.out_dir))
                .filePath(QString("%1-%2.png").arg(img2img ? "img2img" : "txt2img").arg(seed));
        app::save_png(path, app::to_qimage(result.images[i]),
                      app::metadata_for(result.request, static_cast<int>(i), model));
        std::printf("%s\n", path.toStdString().c_str());
    }
    return 0;
}
}  // namespace

int command_txt2img(const Args& args) {
    return generate(args, false);
}
int command_img2img(const Args& args) {
    return generate(args, true);
}

}  // namespace sds::cli
