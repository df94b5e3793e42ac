#pragma once
// X/Y comparison grids, as A1111's X/Y plot: the axes, the request of each cell (the same seed
// in every cell unless an axis is the seed) and the labelled sheet. Used by `sdstudio-cli grid`
// and the studio's Compare view.
#include <QImage>
#include <QRect>
#include <QString>
#include <QStringList>

#include <utility>
#include <vector>

#include "sds/generation_request.h"

namespace sds::app {

struct GridAxis {
    QString name;        // one of grid_axis_names(); empty for none
    QStringList values;  // one per row or column, ranges expanded
    QString text;        // the values as typed ("10-40 (+10)")
    bool empty() const { return name.isEmpty(); }
    int size() const { return empty() ? 1 : static_cast<int>(values.size()); }
};

// The axis names a grid accepts, in menu order: steps, guidance, strength, seed, sampler,
// prompt (search and replace, as A1111's "Prompt S/R"), clip_skip, eta, lora_weight (the
// first LoRA's).
QStringList grid_axis_names();
// What an axis does and how its values are typed, for help texts and tooltips.
QString grid_axis_help(const QString& name);
// Values to start with when a person picks the axis.
QString grid_axis_example(const QString& name);
// The typed values of an axis: separated by commas; "double quotes" keep commas and spaces
// ("" inside quotes is one quote; "" alone is an empty value); on number axes a range
// "A-B" is every value from A to B in steps of 1, "A-B (+S)" in steps of S (or -S going down),
// "A-B [N]" N values spread evenly from A to B. Throws sds::Error naming the axis and the value.
QStringList expand_grid_values(const QString& name, const QString& text);
// "NAME=V1,V2,..." -> axis; throws sds::Error on an unknown axis or a bad value.
GridAxis parse_grid_axis(const QString& text);
// `name` with its typed values; throws like parse_grid_axis.
GridAxis make_grid_axis(const QString& name, const QString& text);
// Sets the parameter of value `index` of the axis in `request`; throws sds::Error for a bad
// value, or a prompt search text found in neither prompt.
void apply_grid_value(GenerationRequest& request, const GridAxis& axis, int index);
// The label of value `index` on the sheet: "CFG: 7.5", "Sampler: ddim"; a prompt axis shows
// the replacement alone, as A1111 does.
QString grid_label(const GridAxis& axis, int index);

struct GridSpec {
    GenerationRequest base;
    GridAxis x, y;
    int cells() const { return x.size() * y.size(); }
    // The request of cell (column i, row j), batch of one; throws sds::Error for a bad value.
    GenerationRequest cell(int i, int j) const;
    // Throws sds::Error for the first invalid cell, before anything runs.
    void validate() const;
    // A1111 "parameters" text of the sheet and our JSON ("sdstudio-grid" chunk).
    QString parameters_text(const QString& model_name) const;
    QString to_json() const;
};

// Mean absolute difference of two same-size images over all RGB values, in 0..255 (how far a
// cell is from the grid's reference cell); -1 when the sizes differ.
double mean_abs_difference(const QImage& a, const QImage& b);

// Where things go on the sheet for cells of `cell` size.
struct GridGeometry {
    int left = 0, top = 0;   // label margins
    int col_w = 0, pad = 0;  // column width (at least the label's) and the cell's offset in it
    QSize cell;
    QSize sheet;
    QRect cellRect(int i, int j) const;
    // The cell at a sheet position, or (-1, -1).
    std::pair<int, int> cellAt(QPoint p, int columns, int rows) const;
};
GridGeometry grid_geometry(const GridSpec& spec, QSize cell);

// The labelled sheet: column labels on top, row labels on the left; `cells[j][i]` is row j,
// column i; a null image leaves its cell blank (a grid still filling in).
QImage render_grid_sheet(const GridSpec& spec, const std::vector<std::vector<QImage>>& cells);

}  // namespace sds::app
