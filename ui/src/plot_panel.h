#pragma once
// A small line plot (QCustomPlot): a title, axis labels and a few named series, with whole
// numbers (steps) along x.
//
// qcustomplot.h needs Qt's keyword macros (signals, foreach), which the project turns off
// because LibTorch uses those words; so only plot_panel.cpp includes it, compiled with the
// keywords on, and this header keeps it out of everything else.
#include <QColor>
#include <QList>
#include <QString>
#include <QVector>
#include <QWidget>

class QCustomPlot;
class QCPItemText;

namespace sds::ui {

class PlotPanel : public QWidget {
    Q_OBJECT
  public:
    struct Series {
        QString name;
        QVector<double> x, y;
    };
    PlotPanel(const QString& title, const QString& x_label, const QString& y_label,
              QWidget* parent = nullptr);
    // Replaces the series and rescales (y from 0).
    void setSeries(const QList<Series>& series);
    // What the plot says while it has no points (why, and how to get some).
    void setEmptyText(const QString& text);
    QString shownText() const;  // the empty text while shown, else ""
    int seriesCount() const;
    int pointCount(int series) const;

  private:
    QCustomPlot* plot_;
    QCPItemText* note_;
};

}  // namespace sds::ui
