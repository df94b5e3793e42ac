#include "grid.h"

#include <QFont>
#include <QFontMetrics>
#include <QMap>
#include <QPainter>

#include <QRegularExpression>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>

#include <nlohmann/json.hpp>

#include "sds/error.h"
#include "sds/scheduler.h"

namespace sds::app {

namespace {

enum class ValueKind { Int, Float, Text };

struct AxisInfo {
    const char* name;
    const char* label;  // on the sheet ("" for the value alone)
    const char* a1111;  // A1111's "X Type"
    ValueKind kind;
    const char* example;
    std::string help;
};

std::string joined_sampler_names() {
    std::string out;
    for (const auto& n : sampler_names()) {
        out += (out.empty() ? "" : ", ") + n;
    }
    return out;
}

// One row per axis, in menu order.
const std::vector<AxisInfo>& axis_table() {
    static const std::vector<AxisInfo> table = {
        {"steps", "Steps", "Steps", ValueKind::Int, "10, 20, 30, 40",
         "denoising steps, e.g. 10, 20, 30 or 10-40 (+10)"},
        {"guidance", "CFG", "CFG Scale", ValueKind::Float, "1.5, 4, 7.5, 12",
         "guidance scale, e.g. 3, 7.5, 12 or 2-14 [4]"},
        {"strength", "Strength", "Denoising", ValueKind::Float, "0.3-0.9 (+0.2)",
         "img2img strength, e.g. 0.3, 0.6, 0.9 or 0.2-1 (+0.2)"},
        {"seed", "Seed", "Seed", ValueKind::Int, "1-4", "seeds, e.g. 1, 2, 3 or 100-104"},
        {"sampler", "Sampler", "Sampler", ValueKind::Text, "euler_a, dpmpp_2m, ddim, pndm",
         "samplers: " + joined_sampler_names() + " (or A1111's names)"},
        {"schedule", "Schedule", "Schedule type", ValueKind::Text,
         "default, karras, exponential, beta",
         "noise schedules of the sampler: default, karras, exponential, beta (all samplers have "
         "them but Euler a, DDIM, PLMS and LCM)"},
        {"prompt", "", "Prompt S/R", ValueKind::Text, "",
         "search and replace: the first value is a text of the prompt (or negative prompt), "
         "each value replaces it, e.g. red, green, \"deep blue\""},
        {"clip_skip", "Clip skip", "Clip skip", ValueKind::Int, "0, 1, 2",
         "text encoder layers skipped, as --clip-skip counts them (1 is A1111's Clip skip 2)"},
        {"prompt_syntax", "Prompts", "Prompt syntax", ValueKind::Text, "plain, a1111",
         "how the prompts are read: plain (as typed, cut after 75 tokens, as diffusers), a1111 "
         "(A1111's (word:1.2), [word], BREAK, long prompts), a1111-no-norm"},
        {"eta", "Eta", "Eta", ValueKind::Float, "0, 0.5, 1", "DDIM's eta, 0 to 1"},
        {"lora_weight", "LoRA", "LoRA weight", ValueKind::Float, "0, 0.5, 1",
         "the weight of the first LoRA chosen (--lora, or the studio's LoRA list), e.g. 0, 0.5, 1 "
         "or 0-1 [5]"},
        {"control_weight", "ControlNet", "ControlNet weight", ValueKind::Float, "0, 0.5, 1, 1.5",
         "the scale of the first ControlNet (--controlnet, or the studio's ControlNet row), e.g. "
         "0, 0.5, 1 or 0-2 [5]"},
        {"control_end", "ControlNet end", "ControlNet guidance end", ValueKind::Float,
         "0.25, 0.5, 0.75, 1",
         "where the first ControlNet stops guiding (the part of the way), e.g. 0.3, 0.6, 1"},
        {"canny_low", "Canny low", "Canny low threshold", ValueKind::Float, "50, 100, 150",
         "the first ControlNet's canny low threshold (its preprocessor canny; A1111's "
         "Threshold A), e.g. 50, 100, 150"},
        {"canny_high", "Canny high", "Canny high threshold", ValueKind::Float, "150, 200, 300",
         "the first ControlNet's canny high threshold (A1111's Threshold B), e.g. 150, 200, 300"},
        {"binary_threshold", "Binary", "Binary threshold", ValueKind::Int, "0, 64, 128, 192",
         "the first ControlNet's binary threshold (its preprocessor binary; A1111's Threshold "
         "A; 0: Otsu's), e.g. 0, 64, 128, 192 or 32-224 (+64)"},
        {"refiner_switch", "Switch at", "Refiner switch at", ValueKind::Float, "0.6, 0.7, 0.8, 0.9",
         "where SDXL's refiner takes over (--refiner, or the studio's Refiner row), e.g. 0.6, "
         "0.8 or 0.5-0.9 (+0.1)"},
    };
    return table;
}

const AxisInfo* find_axis(const QString& name) {
    for (const auto& a : axis_table()) {
        if (name == a.name) {
            return &a;
        }
    }
    return nullptr;
}

const AxisInfo& axis_info(const QString& name) {
    if (const AxisInfo* a = find_axis(name)) {
        return *a;
    }
    throw Error("unknown axis '" + name.toStdString() + "' (" +
                grid_axis_names().join(", ").toStdString() + ")");
}

[[noreturn]] void bad_value(const QString& axis, const QString& value, const std::string& why) {
    throw Error("axis " + axis.toStdString() + ": '" + value.toStdString() + "' " + why);
}

// Splits at commas outside double quotes. Unquoted values are trimmed and skipped when empty;
// a quoted one is kept as written, even empty.
QStringList split_values(const QString& axis, const QString& text) {
    QStringList out;
    QString cur;
    bool quoted = false, in_quotes = false;
    auto finish = [&] {
        if (quoted || !cur.trimmed().isEmpty()) {
            out << (quoted ? cur : cur.trimmed());
        }
        cur.clear();
        quoted = false;
    };
    for (qsizetype k = 0; k < text.size(); ++k) {
        const QChar c = text[k];
        if (in_quotes) {
            if (c == '"' && k + 1 < text.size() && text[k + 1] == '"') {
                cur += '"', ++k;
            } else if (c == '"') {
                in_quotes = false;
            } else {
                cur += c;
            }
        } else if (c == '"' && cur.trimmed().isEmpty() && !quoted) {
            in_quotes = quoted = true;
            cur.clear();
        } else if (c == ',') {
            finish();
        } else if (quoted && !c.isSpace()) {
            bad_value(axis, text, "has text after a closing quote");
        } else if (!quoted) {
            cur += c;
        }
    }
    if (in_quotes) {
        bad_value(axis, text, "has a quote that is not closed");
    }
    finish();
    return out;
}

QString format_number(double v) {
    return QString::number(v, 'g', 8);
}

// "A-B", "A-B (+S)", "A-B [N]" on a number axis; nullopt when `v` is not a range.
std::optional<QStringList> expand_range(const QString& axis, ValueKind kind, const QString& v) {
    static const QRegularExpression int_range(
        R"(^\s*([+-]?\d+)\s*-\s*([+-]?\d+)\s*(?:\(\s*([+-]?\s*\d+)\s*\)|\[\s*(\d+)\s*\])?\s*$)");
    static const QRegularExpression float_range(
        R"(^\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*-\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*)"
        R"((?:\(\s*([+-]?\s*(?:\d+(?:\.\d*)?|\.\d+))\s*\)|\[\s*(\d+)\s*\])?\s*$)");
    const auto m = (kind == ValueKind::Int ? int_range : float_range).match(v);
    if (!m.hasMatch()) {
        return std::nullopt;
    }
    constexpr int kMaxValues = 1000;
    const double a = m.captured(1).toDouble(), b = m.captured(2).toDouble();
    std::vector<double> values;
    if (!m.captured(4).isEmpty()) {  // [N]
        const int n = m.captured(4).toInt();
        if (n < 1 || n > kMaxValues) {
            bad_value(axis, v,
                      "asks for " + m.captured(4).toStdString() + " values (1 to " +
                          std::to_string(kMaxValues) + ")");
        }
        for (int k = 0; k < n; ++k) {
            values.push_back(n == 1 ? a : a + (b - a) * k / (n - 1));
        }
    } else {
        QString step_text = m.captured(3);
        step_text.remove(' ');
        const double step = step_text.isEmpty() ? (b >= a ? 1.0 : -1.0) : step_text.toDouble();
        if (step == 0 || (b - a) * step < 0) {
            bad_value(axis, v, "never reaches its end with that step");
        }
        const double count = std::floor((b - a) / step + 1e-9) + 1;
        if (count > kMaxValues) {
            bad_value(axis, v,
                      "gives " + format_number(count).toStdString() + " values (at most " +
                          std::to_string(kMaxValues) + ")");
        }
        for (int k = 0; k < static_cast<int>(count); ++k) {
            values.push_back(a + step * k);
        }
    }
    QStringList out;
    for (double x : values) {
        // Whole numbers on an integer axis, as A1111 truncates its spread values.
        out << (kind == ValueKind::Int ? QString::number(static_cast<qlonglong>(x))
                                       : format_number(x));
    }
    return out;
}

}  // namespace

QStringList grid_axis_names() {
    QStringList names;
    for (const auto& a : axis_table()) {
        names << a.name;
    }
    return names;
}

QString grid_axis_help(const QString& name) {
    const AxisInfo* a = find_axis(name);
    return a ? QString::fromStdString(a->help) : QString();
}

QString grid_axis_example(const QString& name) {
    const AxisInfo* a = find_axis(name);
    return a ? QString::fromUtf8(a->example) : QString();
}

QStringList expand_grid_values(const QString& name, const QString& text) {
    const AxisInfo& info = axis_info(name);
    QStringList out;
    for (const QString& v : split_values(name, text)) {
        const auto range =
            info.kind == ValueKind::Text ? std::nullopt : expand_range(name, info.kind, v);
        out << (range ? *range : QStringList{v});
    }
    if (out.isEmpty()) {
        throw Error("axis '" + name.toStdString() + "' has no values");
    }
    return out;
}

GridAxis make_grid_axis(const QString& name, const QString& text) {
    GridAxis a{name, expand_grid_values(name, text), text.trimmed()};
    if (name == "prompt") {
        if (a.values.front().isEmpty()) {
            throw Error(
                "axis prompt: the first value is the text to search for in the prompt; "
                "it cannot be empty");
        }
        return a;  // checked against the prompts by GridSpec::validate
    }
    GenerationRequest probe;
    probe.loras = {{"(the first LoRA)", 1.0}};  // the values are checked, not the LoRA
    probe.controls = {ControlRef{.model = "(the first ControlNet)",
                                 .image = "(its image)",
                                 .scale = 1.0,
                                 .start = 0.0,
                                 .end = 1.0,
                                 // which the canny and binary axes need
                                 .preprocessor = name == "binary_threshold" ? "binary" : "canny",
                                 .canny_low = 100,
                                 .canny_high = 200,
                                 .binary_threshold = 0,
                                 .depth_model = {}}};  // nor the ControlNet
    probe.refiner = "(the refiner)";
    probe.sampler = Sampler::Euler;  // has every schedule: the sampler is checked per cell
    for (int k = 0; k < a.values.size(); ++k) {
        apply_grid_value(probe, a, k);
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

void apply_grid_value(GenerationRequest& r, const GridAxis& axis, int index) {
    const QString& value = axis.values.at(index);
    bool ok = true;
    if (axis.name == "steps") {
        r.steps = value.toInt(&ok);
    } else if (axis.name == "guidance") {
        r.guidance_scale = value.toDouble(&ok);
    } else if (axis.name == "strength") {
        r.strength = value.toDouble(&ok);
    } else if (axis.name == "seed") {
        r.seed = value.toLongLong(&ok);
    } else if (axis.name == "sampler") {
        r.sampler = sampler_from_name(value.toStdString());  // throws naming the sampler
    } else if (axis.name == "schedule") {
        const NoiseSchedule schedule = schedule_from_name(value.toStdString());  // throws
        const auto twin = with_schedule(r.sampler, schedule);
        if (!twin) {
            throw Error("axis schedule: " + std::string(sampler_a1111(r.sampler)) + " has no " +
                        value.toStdString() +
                        " schedule (only Euler a, DDIM, PLMS and LCM have none)");
        }
        r.sampler = *twin;
    } else if (axis.name == "clip_skip") {
        r.clip_skip = value.toInt(&ok);
    } else if (axis.name == "prompt_syntax") {
        const auto syntax = prompt_syntax_from_name(value.toStdString());
        if (!syntax) {
            bad_value(axis.name, value, "is not one of plain, a1111, a1111-no-norm");
        }
        r.prompt_syntax = *syntax;
    } else if (axis.name == "eta") {
        r.eta = value.toDouble(&ok);
    } else if (axis.name == "lora_weight") {
        if (r.loras.empty()) {
            throw Error(
                "axis lora_weight: no LoRA is chosen (--lora FILE, or the studio's "
                "LoRA list); the axis sets the first one's weight");
        }
        r.loras.front().weight = value.toDouble(&ok);
        r.loras.front().unet_weight.reset();  // the whole LoRA's, UNet too
    } else if (axis.name == "control_weight" || axis.name == "control_end") {
        if (r.controls.empty()) {
            throw Error("axis " + axis.name.toStdString() +
                        ": no ControlNet is chosen (--controlnet DIR --control-image IMAGE, or "
                        "the studio's ControlNet row); the axis sets the first one's");
        }
        (axis.name == "control_weight" ? r.controls.front().scale : r.controls.front().end) =
            value.toDouble(&ok);
    } else if (axis.name == "canny_low" || axis.name == "canny_high") {
        if (r.controls.empty() || r.controls.front().preprocessor != "canny") {
            throw Error("axis " + axis.name.toStdString() +
                        ": the first ControlNet has no canny preprocessor (--controlnet DIR "
                        "--control-image IMAGE --control-preprocessor canny, or canny in the "
                        "studio's ControlNet row); the axis sets its threshold");
        }
        (axis.name == "canny_low" ? r.controls.front().canny_low : r.controls.front().canny_high) =
            value.toDouble(&ok);
    } else if (axis.name == "binary_threshold") {
        if (r.controls.empty() || r.controls.front().preprocessor != "binary") {
            throw Error(
                "axis binary_threshold: the first ControlNet has no binary preprocessor "
                "(--controlnet DIR --control-image IMAGE --control-preprocessor binary, or binary "
                "in the studio's ControlNet row); the axis sets its threshold");
        }
        r.controls.front().binary_threshold = value.toInt(&ok);
    } else if (axis.name == "refiner_switch") {
        if (r.refiner.empty()) {
            throw Error(
                "axis refiner_switch: no refiner is chosen (--refiner DIR, or the studio's "
                "Refiner row); the axis sets where it takes over");
        }
        r.refiner_switch_at = value.toDouble(&ok);
    } else if (axis.name == "prompt") {
        const QString search = axis.values.front();
        QString prompt = QString::fromStdString(r.prompt);
        QString negative = QString::fromStdString(r.negative_prompt);
        if (!prompt.contains(search) && !negative.contains(search)) {
            throw Error("axis prompt: '" + search.toStdString() +
                        "' is in neither the prompt nor the negative prompt (the first value "
                        "is the text that the others replace)");
        }
        r.prompt = prompt.replace(search, value).toStdString();
        r.negative_prompt = negative.replace(search, value).toStdString();
    } else {
        axis_info(axis.name);  // throws naming the axis
    }
    if (!ok) {
        bad_value(axis.name, value, "is not a valid value");
    }
}

QString grid_label(const GridAxis& axis, int index) {
    if (axis.empty()) {
        return {};
    }
    const QString& v = axis.values.at(index);
    const QString label = QString::fromUtf8(axis_info(axis.name).label);
    if (label.isEmpty()) {
        return v.isEmpty() ? QStringLiteral("(empty)") : v;
    }
    return label + ": " + v;
}

GenerationRequest GridSpec::cell(int i, int j) const {
    GenerationRequest r = base;
    r.batch_count = 1;
    // A schedule axis respaces the sampler the other axis may set: it goes last.
    const bool x_last = x.name == "schedule";
    if (!x.empty() && !x_last) {
        apply_grid_value(r, x, i);
    }
    if (!y.empty()) {
        apply_grid_value(r, y, j);
    }
    if (!x.empty() && x_last) {
        apply_grid_value(r, x, i);
    }
    return r;
}

void GridSpec::validate() const {
    if (x.empty()) {
        throw Error("a grid needs an X axis");
    }
    // Two prompt axes replace two different texts; any other axis twice would be one.
    if (x.name == y.name && x.name != "prompt") {
        throw Error("the X and Y axes are the same parameter (" + x.name.toStdString() + ")");
    }
    for (int j = 0; j < y.size(); ++j) {
        for (int i = 0; i < x.size(); ++i) {
            cell(i, j).validate();
        }
    }
}

namespace {
// An axis as A1111 writes it: its type, and its values as typed (clip skip counted as A1111
// counts it).
std::string a1111_axis(const char* xy, const GridAxis& a) {
    QString values = a.text.isEmpty() ? a.values.join(", ") : a.text;
    if (a.name == "clip_skip") {
        QStringList shifted;
        for (const QString& v : a.values) {
            shifted << QString::number(v.toInt() + 1);
        }
        values = shifted.join(", ");
    }
    return std::string(", ") + xy + " Type: " + axis_info(a.name).a1111 + ", " + xy +
           " Values: " + nlohmann::json(values.toStdString()).dump();
}
}  // namespace

QString GridSpec::parameters_text(const QString& model_name) const {
    std::string params = base.to_a1111(0, model_name.toStdString()) + ", Script: X/Y plot";
    params += a1111_axis("X", x);
    if (!y.empty()) {
        params += a1111_axis("Y", y);
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
    grid["x"] = {
        {"axis", x.name.toStdString()}, {"values", list(x.values)}, {"text", x.text.toStdString()}};
    grid["y"] = {{"axis", y.name.toStdString()},
                 {"values", y.empty() ? std::vector<std::string>{} : list(y.values)},
                 {"text", y.text.toStdString()}};
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
        g.left = std::max(g.left, fm.horizontalAdvance(grid_label(spec.y, j)));
    }
    g.left = spec.y.empty() ? 0 : g.left + 16;
    g.top = fm.height() + 12;
    // Columns as wide as their widest label, so small images still get readable labels.
    g.col_w = cell.width();
    for (int i = 0; i < spec.x.size(); ++i) {
        g.col_w = std::max(g.col_w, fm.horizontalAdvance(grid_label(spec.x, i)) + 12);
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
                   grid_label(spec.x, i));
    }
    for (int j = 0; j < spec.y.size(); ++j) {
        if (!spec.y.empty()) {
            p.drawText(QRect(0, g.top + cell.height() * j, g.left - 8, cell.height()),
                       Qt::AlignRight | Qt::AlignVCenter, grid_label(spec.y, j));
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
