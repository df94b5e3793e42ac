// sdstudio-cli grid --x AXIS=V1,V2,.. [--y AXIS=..] [flags]: an X/Y sheet like A1111's X/Y
// plot, same seed in every cell (unless an axis is the seed), labelled, saved as one PNG.
#include <QDir>
#include <QFileInfo>
#include <QFont>
#include <QFontMetrics>
#include <QPainter>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "image_io.h"
#include "request_flags.h"

namespace sds::cli {

namespace {

struct Axis {
    std::string name;  // steps, guidance, strength, seed, sampler; "" for none
    std::vector<std::string> values;
};

Axis parse_axis(const std::string& text) {
    const auto eq = text.find('=');
    if (eq == std::string::npos) {
        throw UsageError{"an axis is NAME=V1,V2,... (got '" + text + "')"};
    }
    Axis a{text.substr(0, eq), {}};
    if (a.name != "steps" && a.name != "guidance" && a.name != "strength" && a.name != "seed" &&
        a.name != "sampler") {
        throw UsageError{"unknown axis '" + a.name +
                         "' (steps, guidance, strength, seed, sampler)"};
    }
    std::string v;
    for (char c : text.substr(eq + 1) + ",") {
        if (c == ',') {
            if (!v.empty()) {
                a.values.push_back(v);
            }
            v.clear();
        } else if (c != ' ') {
            v += c;
        }
    }
    if (a.values.empty()) {
        throw UsageError{"axis '" + a.name + "' has no values"};
    }
    return a;
}

void apply(GenerationRequest& r, const std::string& axis, const std::string& value) {
    try {
        if (axis == "steps")
            r.steps = std::stoi(value);
        else if (axis == "guidance")
            r.guidance_scale = std::stod(value);
        else if (axis == "strength")
            r.strength = std::stod(value);
        else if (axis == "seed")
            r.seed = std::stoll(value);
        else if (axis == "sampler")
            r.sampler = sampler_from_name(value);
    } catch (const std::invalid_argument&) {
        throw UsageError{"axis " + axis + ": '" + value + "' is not a valid value"};
    }
}

std::string label(const std::string& axis, const std::string& value) {
    static const std::map<std::string, std::string> names = {{"steps", "Steps"},
                                                             {"guidance", "CFG"},
                                                             {"strength", "Strength"},
                                                             {"seed", "Seed"},
                                                             {"sampler", "Sampler"}};
    return axis.empty() ? "" : names.at(axis) + ": " + value;
}

}  // namespace

int command_grid(const Args& args) {
    GenerateFlags f = parse_generate_flags(args);
    Axis x, y{"", {""}};
    for (size_t i = 0; i < f.rest.size(); ++i) {
        if ((f.rest[i] == "--x" || f.rest[i] == "--y") && i + 1 < f.rest.size()) {
            (f.rest[i] == "--x" ? x : y) = parse_axis(f.rest[i + 1]);
            ++i;
        } else {
            throw UsageError{"unknown argument '" + f.rest[i] + "'"};
        }
    }
    if (x.name.empty()) {
        throw UsageError{"grid needs --x AXIS=V1,V2,..."};
    }
    f.request.batch_count = 1;
    Image init;
    if (f.request.is_img2img()) {
        init = app::load_image(QString::fromStdString(f.request.init_image));
        if (f.request.width == 0) {
            f.request.width = init.width - init.width % 8;
            f.request.height = init.height - init.height % 8;
        }
    }
    // Check every cell's request before loading anything.
    for (const auto& yv : y.values) {
        for (const auto& xv : x.values) {
            GenerationRequest r = f.request;
            apply(r, x.name, xv);
            apply(r, y.name, yv);
            r.validate();
        }
    }
    std::fprintf(stderr, "grid: %zu x %zu cells, request: %s\n", x.values.size(), y.values.size(),
                 f.request.to_json().c_str());
    Pipeline pipeline = load_pipeline(f);
    std::vector<std::vector<Image>> cells(y.values.size());
    int cell_w = 0, cell_h = 0;
    for (size_t j = 0; j < y.values.size(); ++j) {
        for (size_t i = 0; i < x.values.size(); ++i) {
            GenerationRequest r = f.request;
            apply(r, x.name, x.values[i]);
            apply(r, y.name, y.values[j]);
            Progress progress("cell " + std::to_string(j * x.values.size() + i + 1) + "/" +
                              std::to_string(x.values.size() * y.values.size()));
            auto result =
                pipeline.generate(r, r.is_img2img() ? &init : nullptr, std::ref(progress));
            progress.done();
            cells[j].push_back(result.images.front());
            cell_w = result.images.front().width;
            cell_h = result.images.front().height;
        }
    }
    // Layout: column labels on top, row labels on the left (A1111's X/Y plot).
    QFont font;
    font.setPixelSize(std::max(12, cell_h / 12));
    const QFontMetrics fm(font);
    int left = 0;
    for (const auto& v : y.values) {
        left = std::max(left, fm.horizontalAdvance(QString::fromStdString(label(y.name, v))));
    }
    left = y.name.empty() ? 0 : left + 16;
    const int top = fm.height() + 12;
    // Columns as wide as their widest label, so small images still get readable labels.
    int col_w = cell_w;
    for (const auto& v : x.values) {
        col_w =
            std::max(col_w, fm.horizontalAdvance(QString::fromStdString(label(x.name, v))) + 12);
    }
    const int pad = (col_w - cell_w) / 2;
    QImage sheet(left + col_w * static_cast<int>(x.values.size()),
                 top + cell_h * static_cast<int>(y.values.size()), QImage::Format_RGB888);
    sheet.fill(Qt::white);
    QPainter p(&sheet);
    p.setFont(font);
    p.setPen(Qt::black);
    for (size_t i = 0; i < x.values.size(); ++i) {
        p.drawText(QRect(left + col_w * static_cast<int>(i), 0, col_w, top), Qt::AlignCenter,
                   QString::fromStdString(label(x.name, x.values[i])));
    }
    for (size_t j = 0; j < y.values.size(); ++j) {
        const int yy = top + cell_h * static_cast<int>(j);
        p.drawText(QRect(0, yy, left - 8, cell_h), Qt::AlignRight | Qt::AlignVCenter,
                   QString::fromStdString(label(y.name, y.values[j])));
        for (size_t i = 0; i < x.values.size(); ++i) {
            p.drawImage(left + col_w * static_cast<int>(i) + pad, yy, app::to_qimage(cells[j][i]));
        }
    }
    p.end();

    auto values_text = [](const Axis& a) {
        std::string s;
        for (const auto& v : a.values) {
            s += (s.empty() ? "" : ",") + v;
        }
        return s;
    };
    const QString model = QFileInfo(QString::fromStdString(f.model)).fileName();
    std::string params = f.request.to_a1111(0, model.toStdString());
    params += ", Script: X/Y plot, X Type: " + x.name +
              ", X Values: " + nlohmann::json(values_text(x)).dump();
    if (!y.name.empty()) {
        params += ", Y Type: " + y.name + ", Y Values: " + nlohmann::json(values_text(y)).dump();
    }
    nlohmann::ordered_json grid;
    grid["request"] = nlohmann::json::parse(f.request.to_json());
    grid["x"] = {{"axis", x.name}, {"values", x.values}};
    grid["y"] = {{"axis", y.name},
                 {"values", y.name.empty() ? std::vector<std::string>{} : y.values}};
    QDir().mkpath(QString::fromStdString(f.out_dir));
    const QString path =
        QDir(QString::fromStdString(f.out_dir))
            .filePath(
                QString("grid-%1-%2.png")
                    .arg(QString::fromStdString(x.name + (y.name.empty() ? "" : "-" + y.name)))
                    .arg(f.request.seed));
    app::save_png(path, sheet,
                  {{"parameters", QString::fromStdString(params)},
                   {"sdstudio-grid", QString::fromStdString(grid.dump())}});
    std::printf("%s\n", path.toStdString().c_str());
    return 0;
}

}  // namespace sds::cli
