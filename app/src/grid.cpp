#include "grid.h"

#include <QFont>
#include <QFontMetrics>
#include <QMap>
#include <QPainter>

#include <algorithm>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "sds/error.h"

namespace sds::app {

QStringList grid_axis_names() {
    return {"steps", "guidance", "strength", "seed", "sampler"};
}

GridAxis make_grid_axis(const QString& name, const QString& values) {
    if (!grid_axis_names().contains(name)) {
        throw Error("unknown axis '" + name.toStdString() +
                    "' (steps, guidance, strength, seed, sampler)");
    }
    GridAxis a{name, {}};
    for (const QString& v : values.split(',')) {
        if (!v.trimmed().isEmpty()) {
            a.values << v.trimmed();
        }
    }
    if (a.values.isEmpty()) {
        throw Error("axis '" + name.toStdString() + "' has no values");
    }
    GenerationRequest probe;
    for (const QString& v : a.values) {
        apply_grid_value(probe, name, v);
    }
    return a;
}

GridAxis parse_grid_axis(const QString& text) {
    const auto eq = text.indexOf('=');
    if (eq < 0) {
        throw Error("an axis is NAME=V1,V2,... (got '" + text.toStdString() + "')");
    }
    return make_grid_axis(text.left(eq).trimmed(), text.mid(eq + 1));
}

void apply_grid_value(GenerationRequest& r, const QString& axis, const QString& value) {
    bool ok = true;
    if (axis == "steps") {
        r.steps = value.toInt(&ok);
    } else if (axis == "guidance") {
        r.guidance_scale = value.toDouble(&ok);
    } else if (axis == "strength") {
        r.strength = value.toDouble(&ok);
    } else if (axis == "seed") {
        r.seed = value.toLongLong(&ok);
    } else if (axis == "sampler") {
        r.sampler = sampler_from_name(value.toStdString());  // throws naming the sampler
    }
    if (!ok) {
        throw Error("axis " + axis.toStdString() + ": '" + value.toStdString() +
                    "' is not a valid value");
    }
}

QString grid_label(const QString& axis, const QString& value) {
    static const QMap<QString, QString> names = {{"steps", "Steps"},
                                                 {"guidance", "CFG"},
                                                 {"strength", "Strength"},
                                                 {"seed", "Seed"},
                                                 {"sampler", "Sampler"}};
    return axis.isEmpty() ? QString() : names.value(axis, axis) + ": " + value;
}

GenerationRequest GridSpec::cell(int i, int j) const {
    GenerationRequest r = base;
    r.batch_count = 1;
    if (!x.empty()) {
        apply_grid_value(r, x.name, x.values.at(i));
    }
    if (!y.empty()) {
        apply_grid_value(r, y.name, y.values.at(j));
    }
    return r;
}

void GridSpec::validate() const {
    if (x.empty()) {
        throw Error("a grid needs an X axis");
    }
    for (int j = 0; j < y.size(); ++j) {
        for (int i = 0; i < x.size(); ++i) {
            cell(i, j).validate();
        }
    }
}

QString GridSpec::parameters_text(const QString& model_name) const {
    std::string params = base.to_a1111(0, model_name.toStdString());
    params += ", Script: X/Y plot, X Type: " + x.name.toStdString() +
              ", X Values: " + nlohmann::json(x.values.join(",").toStdString()).dump();
    if (!y.empty()) {
        params += ", Y Type: " + y.name.toStdString() +
                  ", Y Values: " + nlohmann::json(y.values.join(",").toStdString()).dump();
    }
    return QString::fromStdString(params);
}

QString GridSpec::to_json() const {
    auto list = [](const QStringList& l) {
        std::vector<std::string> v;
        for (const auto& s : l) {
            v.push_back(s.toStdString());
        }
        return v;
    };
    nlohmann::ordered_json grid;
    grid["request"] = nlohmann::json::parse(base.to_json());
    grid["x"] = {{"axis", x.name.toStdString()}, {"values", list(x.values)}};
    grid["y"] = {{"axis", y.name.toStdString()},
                 {"values", y.empty() ? std::vector<std::string>{} : list(y.values)}};
    return QString::fromStdString(grid.dump());
}

double mean_abs_difference(const QImage& a, const QImage& b) {
    if (a.size() != b.size() || a.isNull()) {
        return -1;
    }
    const QImage x = a.convertToFormat(QImage::Format_RGB888);
    const QImage y = b.convertToFormat(QImage::Format_RGB888);
    double sum = 0;
    for (int r = 0; r < x.height(); ++r) {
        const uchar* p = x.constScanLine(r);
        const uchar* q = y.constScanLine(r);
        for (int c = 0; c < x.width() * 3; ++c) {
            sum += std::abs(int(p[c]) - int(q[c]));
        }
    }
    return sum / (3.0 * x.width() * x.height());
}

QRect GridGeometry::cellRect(int i, int j) const {
    return QRect(left + col_w * i + pad, top + cell.height() * j, cell.width(), cell.height());
}

std::pair<int, int> GridGeometry::cellAt(QPoint p, int columns, int rows) const {
    for (int j = 0; j < rows; ++j) {
        for (int i = 0; i < columns; ++i) {
            if (cellRect(i, j).contains(p)) {
                return {i, j};
            }
        }
    }
    return {-1, -1};
}

namespace {
QFont label_font(QSize cell) {
    QFont font;
    font.setPixelSize(std::max(12, cell.height() / 12));
    return font;
}
}  // namespace

GridGeometry grid_geometry(const GridSpec& spec, QSize cell) {
    GridGeometry g;
    g.cell = cell;
    const QFontMetrics fm(label_font(cell));
    for (int j = 0; j < spec.y.size() && !spec.y.empty(); ++j) {
        g.left = std::max(g.left, fm.horizontalAdvance(grid_label(spec.y.name, spec.y.values[j])));
    }
    g.left = spec.y.empty() ? 0 : g.left + 16;
    g.top = fm.height() + 12;
    // Columns as wide as their widest label, so small images still get readable labels.
    g.col_w = cell.width();
    for (const auto& v : spec.x.values) {
        g.col_w = std::max(g.col_w, fm.horizontalAdvance(grid_label(spec.x.name, v)) + 12);
    }
    g.pad = (g.col_w - cell.width()) / 2;
    g.sheet = QSize(g.left + g.col_w * spec.x.size(), g.top + cell.height() * spec.y.size());
    return g;
}

QImage render_grid_sheet(const GridSpec& spec, const std::vector<std::vector<QImage>>& cells) {
    QSize cell(64, 64);
    for (const auto& row : cells) {
        for (const auto& c : row) {
            if (!c.isNull()) {
                cell = c.size();
            }
        }
    }
    const GridGeometry g = grid_geometry(spec, cell);
    QImage sheet(g.sheet, QImage::Format_RGB888);
    sheet.fill(Qt::white);
    QPainter p(&sheet);
    p.setFont(label_font(cell));
    p.setPen(Qt::black);
    for (int i = 0; i < spec.x.size(); ++i) {
        p.drawText(QRect(g.left + g.col_w * i, 0, g.col_w, g.top), Qt::AlignCenter,
                   grid_label(spec.x.name, spec.x.values[i]));
    }
    for (int j = 0; j < spec.y.size(); ++j) {
        if (!spec.y.empty()) {
            p.drawText(QRect(0, g.top + cell.height() * j, g.left - 8, cell.height()),
                       Qt::AlignRight | Qt::AlignVCenter,
                       grid_label(spec.y.name, spec.y.values[j]));
        }
        for (int i = 0; i < spec.x.size(); ++i) {
            const QImage* c =
                j < static_cast<int>(cells.size()) && i < static_cast<int>(cells[j].size())
                    ? &cells[j][i]
                    : nullptr;
            if (c && !c->isNull()) {
                p.drawImage(g.cellRect(i, j).topLeft(), *c);
            } else {
                p.fillRect(g.cellRect(i, j), QColor(235, 235, 235));
            }
        }
    }
    return sheet;
}

}  // namespace sds::app
