#include "plot_panel.h"

#include <QVBoxLayout>

#include <qcustomplot.h>

namespace sds::ui {

PlotPanel::PlotPanel(const QString& title, const QString& x_label, const QString& y_label,
                     QWidget* parent)
    : QWidget(parent) {
    plot_ = new QCustomPlot;
    plot_->setMinimumHeight(150);
    plot_->plotLayout()->insertRow(0);
    QFont font = plot_->font();
    font.setBold(true);
    plot_->plotLayout()->addElement(0, 0, new QCPTextElement(plot_, title, font));
    plot_->xAxis->setLabel(x_label);
    // Both plots count steps along x: whole-number ticks (1, 2, 5, 10, ... apart).
    auto ticker = QSharedPointer<QCPAxisTickerFixed>::create();
    ticker->setTickStep(1.0);
    ticker->setScaleStrategy(QCPAxisTickerFixed::ssMultiples);
    plot_->xAxis->setTicker(ticker);
    plot_->yAxis->setLabel(y_label);
    note_ = new QCPItemText(plot_);
    note_->position->setType(QCPItemPosition::ptAxisRectRatio);
    note_->position->setCoords(0.5, 0.5);
    note_->setColor(palette().placeholderText().color());
    note_->setVisible(false);
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(0, 0, 0, 0);
    v->addWidget(plot_);
}

void PlotPanel::setSeries(const QList<Series>& series) {
    static const QColor colours[] = {QColor(31, 119, 180),  QColor(255, 127, 14),
                                     QColor(44, 160, 44),   QColor(214, 39, 40),
                                     QColor(148, 103, 189), QColor(140, 86, 75)};
    plot_->clearGraphs();
    for (int i = 0; i < series.size(); ++i) {
        QCPGraph* g = plot_->addGraph();
        g->setName(series[i].name);
        g->setPen(QPen(colours[i % 6], 2));
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, 5));
        g->setData(series[i].x, series[i].y);
    }
    plot_->legend->setVisible(series.size() > 1);
    int points = 0;
    for (const auto& s : series) {
        points += static_cast<int>(s.x.size());
    }
    note_->setVisible(points == 0 && !note_->text().isEmpty());
    plot_->rescaleAxes();
    if (points == 0) {
        plot_->xAxis->setRange(0, 10);
        plot_->yAxis->setRange(0, 10);
    } else {
        plot_->xAxis->scaleRange(1.1, plot_->xAxis->range().center());
    }
    plot_->yAxis->setRangeLower(0);
    if (plot_->yAxis->range().upper <= 0) {
        plot_->yAxis->setRangeUpper(1);
    }
    plot_->replot();
}

void PlotPanel::setEmptyText(const QString& text) {
    note_->setText(text);
    setSeries({});
}

QString PlotPanel::shownText() const {
    return note_->visible() ? note_->text() : QString();
}

int PlotPanel::seriesCount() const {
    return plot_->graphCount();
}

int PlotPanel::pointCount(int series) const {
    return series < plot_->graphCount() ? plot_->graph(series)->dataCount() : 0;
}

}  // namespace sds::ui
