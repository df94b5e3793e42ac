// sdstudio-cli grid --x AXIS=V1,V2,.. [--y AXIS=..] [--cells] [flags]: an X/Y sheet like
// A1111's X/Y plot, same seed in every cell (unless an axis is the seed), labelled, saved as
// one PNG; with --cells each cell also as its own PNG with its parameters.
#include <QDir>
#include <QFileInfo>

#include <cstdio>

#include "file_hashes.h"
#include "grid.h"
#include "image_io.h"
#include "request_flags.h"

namespace sds::cli {

int command_grid(const Args& args) {
    GenerateFlags f = parse_generate_flags(args);
    app::GridSpec spec;
    bool save_cells = false;
    for (size_t i = 0; i < f.rest.size(); ++i) {
        if (f.rest[i] == "--cells") {
            save_cells = true;
        } else if ((f.rest[i] == "--x" || f.rest[i] == "--y") && i + 1 < f.rest.size()) {
            try {
                (f.rest[i] == "--x" ? spec.x : spec.y) =
                    app::parse_grid_axis(QString::fromStdString(f.rest[i + 1]));
            } catch (const Error& e) {
                throw UsageError{e.what()};
            }
            ++i;
        } else {
            throw UsageError{"unknown argument '" + f.rest[i] + "'"};
        }
    }
    if (spec.x.empty()) {
        throw UsageError{"grid needs --x AXIS=V1,V2,..."};
    }
    f.request.batch_count = 1;
    const InitImages images = load_init_images(f.request);
    spec.base = f.request;
    spec.validate();  // every cell, before loading anything
    Pipeline pipeline = load_pipeline(f);
    spec.base.sampler = f.request.sampler;  // the model's own unless --sampler
    spec.base.width = spec.base.width ? spec.base.width : pipeline.native_size();
    spec.base.height = spec.base.height ? spec.base.height : pipeline.native_size();
    // Every cell against this model too (a sampler's step limit, the size's multiple), so
    // that a cell that cannot run stops the grid before the first one is made.
    for (int j = 0; j < spec.y.size(); ++j) {
        for (int i = 0; i < spec.x.size(); ++i) {
            try {
                pipeline.denoising_steps(spec.cell(i, j));
            } catch (const Error& e) {
                QString where = app::grid_label(spec.x, i);
                if (!spec.y.empty()) {
                    where += ", " + app::grid_label(spec.y, j);
                }
                throw Error("grid cell (" + where.toStdString() + "): " + e.what());
            }
        }
    }
    std::fprintf(stderr, "grid: %d x %d cells, request: %s\n", spec.x.size(), spec.y.size(),
                 f.request.to_json().c_str());
    const A1111Files files =
        app::a1111_files(f.request, QString::fromStdString(f.model), QString::fromStdString(f.vae));
    const QString model = QString::fromStdString(files.model);
    QDir().mkpath(QString::fromStdString(f.out_dir));
    const QString stem =
        app::free_png_stem(QString::fromStdString(f.out_dir),
                           QString("grid-%1-%2")
                               .arg(spec.x.name + (spec.y.empty() ? "" : "-" + spec.y.name))
                               .arg(f.request.seed));
    std::vector<std::vector<QImage>> cells(spec.y.size());
    QStringList cell_paths;
    for (int j = 0; j < spec.y.size(); ++j) {
        for (int i = 0; i < spec.x.size(); ++i) {
            const GenerationRequest r = spec.cell(i, j);
            Progress progress("cell " + std::to_string(j * spec.x.size() + i + 1) + "/" +
                              std::to_string(spec.cells()));
            auto result = pipeline.generate(r, images.init_or_null(), images.mask_or_null(),
                                            std::ref(progress), nullptr, images.controls);
            progress.done();
            cells[j].push_back(app::to_qimage(result.images.front()));
            if (save_cells) {
                cell_paths << QString("%1-x%2-y%3.png").arg(stem).arg(i + 1).arg(j + 1);
                app::save_png(cell_paths.back(), cells[j].back(),
                              app::metadata_for(result.request, 0, files));
            }
        }
    }
    const QImage sheet = app::render_grid_sheet(spec, cells);
    const QString path = stem + ".png";
    app::save_png(path, sheet,
                  {{"parameters", spec.parameters_text(model)}, {"sdstudio-grid", spec.to_json()}});
    std::printf("%s\n", path.toStdString().c_str());
    for (const QString& p : cell_paths) {
        std::printf("%s\n", p.toStdString().c_str());
    }
    return 0;
}

}  // namespace sds::cli
