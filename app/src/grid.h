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
    QString name;  // steps, guidance, strength, seed, sampler; empty for none
    QStringList values;
    bool empty() const { return name.isEmpty(); }
    int size() const { return empty() ? 1 : static_cast<int>(values.size()); }
};

// The axis names a grid accepts, in menu order.
QStringList grid_axis_names();
// "NAME=V1,V2,..." -> axis; throws sds::Error on an unknown axis or no values.
GridAxis parse_grid_axis(const QString& text);
// `name` with values "V1, V2, ..." (as typed in a field); throws like parse_grid_axis.
GridAxis make_grid_axis(const QString& name, const QString& values);
// Sets the axis' parameter of `request` to `value`; throws sds::Error for a bad value.
void apply_grid_value(GenerationRequest& request, const QString& axis, const QString& value);
// "CFG: 7.5" (A1111's labels).
QString grid_label(const QString& axis, const QString& value);

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
