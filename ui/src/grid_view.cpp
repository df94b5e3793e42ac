#include "grid_view.h"

#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QMouseEvent>
#include <QPainter>
#include <QPushButton>
#include <QSplitter>
#include <QVBoxLayout>

#include "image_io.h"
#include "plot_panel.h"
#include "sds/error.h"

namespace sds::ui {

// The sheet, scaled to fit; a click names the cell under it.
class GridSheet : public QWidget {
  public:
    explicit GridSheet(QWidget* parent = nullptr) : QWidget(parent) { setMinimumSize(240, 200); }
    std::function<void(int, int)> onCell;
    void set(const QImage& sheet, const app::GridGeometry& g, int columns, int rows) {
        sheet_ = sheet, geometry_ = g, columns_ = columns, rows_ = rows;
        update();
    }

  protected:
    QRectF target() const {
        const QSizeF s = QSizeF(sheet_.size()).scaled(QSizeF(size()), Qt::KeepAspectRatio);
        return QRectF(QPointF((width() - s.width()) / 2, (height() - s.height()) / 2), s);
    }
    void paintEvent(QPaintEvent*) override {
        QPainter p(this);
        p.fillRect(rect(), palette().window());
        if (sheet_.isNull()) {
            p.setPen(palette().placeholderText().color());
            p.drawText(rect(), Qt::AlignCenter,
                       tr("Choose the axes and their values, then Run.\nEvery cell uses the "
                          "same seed; cells fill in as they finish."));
            return;
        }
        p.setRenderHint(QPainter::SmoothPixmapTransform);
        p.drawImage(target(), sheet_);
    }
    void mouseReleaseEvent(QMouseEvent* e) override {
        const QRectF t = target();
        if (sheet_.isNull() || !t.contains(e->position()) || !onCell) {
            return;
        }
        const QPoint p(
            static_cast<int>((e->position().x() - t.x()) * sheet_.width() / t.width()),
            static_cast<int>((e->position().y() - t.y()) * sheet_.height() / t.height()));
        const auto [i, j] = geometry_.cellAt(p, columns_, rows_);
        if (i >= 0) {
            onCell(i, j);
        }
    }

  private:
    QImage sheet_;
    app::GridGeometry geometry_;
    int columns_ = 0, rows_ = 0;
};

GridView::GridView(app::InferenceWorker* worker, QWidget* parent)
    : QWidget(parent), worker_(worker) {
    xAxis_ = new QComboBox;
    yAxis_ = new QComboBox;
    yAxis_->addItem(tr("(none)"), QString());
    for (const QString& a : app::grid_axis_names()) {
        xAxis_->addItem(a, a);
        yAxis_->addItem(a, a);
    }
    xValues_ = new QLineEdit("5, 10, 20, 30");
    yValues_ = new QLineEdit("1.5, 4, 7.5, 12");
    xAxis_->setObjectName("xAxis");
    yAxis_->setObjectName("yAxis");
    xValues_->setObjectName("xValues");
    yValues_->setObjectName("yValues");
    yAxis_->setCurrentIndex(yAxis_->findData("guidance"));
    xAxis_->setCurrentIndex(xAxis_->findData("steps"));
    // Picking an axis puts example values in its field; the tooltip says how values are typed.
    for (auto [axis, values] : {std::pair{xAxis_, xValues_}, std::pair{yAxis_, yValues_}}) {
        const auto describe = [axis, values] {
            const QString name = axis->currentData().toString();
            values->setEnabled(!name.isEmpty());
            values->setPlaceholderText(name == "prompt" ? tr("text to replace, replacement, ...")
                                                        : QString());
            values->setToolTip(
                name.isEmpty()
                    ? QString()
                    : app::grid_axis_help(name) +
                          tr(".\nValues are separated by commas; \"quotes\" keep commas. "
                             "Numbers take ranges: A-B, A-B (+step), A-B [count]."));
        };
        connect(axis, &QComboBox::activated, values, [axis, values, describe] {
            values->setText(app::grid_axis_example(axis->currentData().toString()));
            describe();
        });
        connect(axis, &QComboBox::currentIndexChanged, values, describe);
        describe();
    }
    run_ = new QPushButton(tr("Run grid"));
    stop_ = new QPushButton(tr("Stop"));
    export_ = new QPushButton(tr("Export PNG..."));
    status_ = new QLabel;
    auto* form = new QFormLayout;
    auto* xRow = new QHBoxLayout;
    xRow->addWidget(xAxis_);
    xRow->addWidget(xValues_, 1);
    auto* yRow = new QHBoxLayout;
    yRow->addWidget(yAxis_);
    yRow->addWidget(yValues_, 1);
    form->addRow(tr("X axis"), xRow);
    form->addRow(tr("Y axis"), yRow);
    auto* buttons = new QHBoxLayout;
    buttons->addWidget(run_);
    buttons->addWidget(stop_);
    buttons->addWidget(export_);
    buttons->addWidget(status_, 1);
    form->addRow(buttons);

    sheet_ = new GridSheet;
    sheet_->onCell = [this](int i, int j) {
        if (!cells_[j][i].isNull()) {
            Q_EMIT cellOpened(cells_[j][i], spec_.cell(i, j));
        }
    };
    timePlot_ = new PlotPanel(tr("Time per denoising step"), tr("step"), tr("seconds"));
    convergencePlot_ = new PlotPanel(tr("Difference from the highest-step cell"), tr("steps"),
                                     tr("mean |diff| of 0-255"));
    convergencePlot_->setEmptyText(tr("Put steps on an axis to see each row converge"));
    auto* plots = new QHBoxLayout;
    plots->addWidget(timePlot_);
    plots->addWidget(convergencePlot_);
    auto* plotBox = new QWidget;
    plotBox->setLayout(plots);
    auto* split = new QSplitter(Qt::Vertical);
    split->addWidget(sheet_);
    split->addWidget(plotBox);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);
    split->setSizes({500, 260});
    auto* v = new QVBoxLayout(this);
    v->addLayout(form);
    v->addWidget(split, 1);

    connect(run_, &QPushButton::clicked, this, [this] {
        try {
            start(xAxis_->currentData().toString(), xValues_->text(),
                  yAxis_->currentData().toString(), yValues_->text());
        } catch (const std::exception& e) {
            QMessageBox::warning(this, tr("Grid"), QString::fromUtf8(e.what()));
        }
    });
    connect(stop_, &QPushButton::clicked, this, &GridView::cancel);
    connect(export_, &QPushButton::clicked, this, [this] {
        const QString path = QFileDialog::getSaveFileName(
            this, tr("Export grid"), QString("grid-%1.png").arg(spec_.base.seed), "PNG (*.png)");
        if (path.isEmpty()) {
            return;
        }
        try {
            exportTo(path);
            Q_EMIT message(tr("Saved %1").arg(path));
        } catch (const std::exception& e) {
            QMessageBox::warning(this, tr("Export grid"), QString::fromUtf8(e.what()));
        }
    });
    connect(worker_, &app::InferenceWorker::jobFinished, this, &GridView::onFinished);
    connect(worker_, &app::InferenceWorker::jobCancelled, this, &GridView::onEnded);
    connect(worker_, &app::InferenceWorker::jobFailed, this,
            [this](quint64 id, const QString& text) {
                if (jobs_.contains(id)) {
                    Q_EMIT message(tr("Grid cell failed: %1").arg(text));
                }
                onEnded(id);
            });
    updateButtons();
}

void GridView::start(const QString& x_axis, const QString& x_values, const QString& y_axis,
                     const QString& y_values) {
    app::GridSpec spec;
    spec.x = app::make_grid_axis(x_axis, x_values);
    if (!y_axis.isEmpty()) {
        spec.y = app::make_grid_axis(y_axis, y_values);
    }
    const app::Job base = base_ ? base_() : app::Job{};
    spec.base = base.request;
    spec.validate();
    cancel();
    spec_ = spec;
    xAxis_->setCurrentIndex(xAxis_->findData(spec.x.name));
    xValues_->setText(spec.x.text);
    yAxis_->setCurrentIndex(yAxis_->findData(spec.y.name));
    yValues_->setText(spec.y.text);
    cells_.assign(spec.y.size(), std::vector<QImage>(spec.x.size()));
    times_.assign(spec.y.size(), std::vector<QList<double>>(spec.x.size()));
    jobs_.clear();
    for (int j = 0; j < spec.y.size(); ++j) {
        for (int i = 0; i < spec.x.size(); ++i) {
            app::Job job;
            job.request = spec.cell(i, j);
            job.init = base.init;
            job.mask = base.mask;
            job.controls = base.controls;
            job.tag = QString("grid %1,%2").arg(i).arg(j);
            jobs_.insert(worker_->submit(job), {i, j});
        }
    }
    remaining_ = spec.cells();
    updatePlots();
    updateButtons();
}

void GridView::cancel() {
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
        worker_->cancel(it.key());
    }
    jobs_.clear();
    remaining_ = 0;
    updateButtons();
}

int GridView::filled() const {
    int n = 0;
    for (const auto& row : cells_) {
        for (const auto& c : row) {
            n += !c.isNull();
        }
    }
    return n;
}

QImage GridView::sheet() const {
    return app::render_grid_sheet(spec_, cells_);
}

void GridView::exportTo(const QString& path) const {
    if (filled() == 0) {
        throw Error("the grid has no finished cells to export");
    }
    app::save_png(
        path, sheet(),
        {{"parameters", spec_.parameters_text(model_)}, {"sdstudio-grid", spec_.to_json()}});
}

void GridView::onFinished(const app::JobResult& r) {
    const auto it = jobs_.find(r.job.id);
    if (it == jobs_.end()) {
        return;
    }
    const auto [i, j] = it.value();
    jobs_.erase(it);
    cells_[j][i] = r.images.value(0);
    times_[j][i] = r.step_seconds;
    --remaining_;
    updatePlots();
    updateButtons();
    if (remaining_ == 0) {
        Q_EMIT finished();
    }
}

void GridView::onEnded(quint64 id) {
    if (jobs_.remove(id) && --remaining_ <= 0) {
        remaining_ = 0;
        updateButtons();
        Q_EMIT finished();
    }
}

QVector<double> GridView::stepSeconds() const {
    QVector<double> sum, n;
    for (const auto& row : times_) {
        for (const auto& t : row) {
            for (int k = 0; k < t.size(); ++k) {
                if (sum.size() <= k) {
                    sum.resize(k + 1), n.resize(k + 1);
                }
                sum[k] += t[k], n[k] += 1;
            }
        }
    }
    for (int k = 0; k < sum.size(); ++k) {
        sum[k] /= n[k];
    }
    return sum;
}

QMap<int, QVector<double>> GridView::convergence() const {
    QMap<int, QVector<double>> out;
    const bool x_steps = spec_.x.name == "steps", y_steps = spec_.y.name == "steps";
    if (!x_steps && !y_steps) {
        return out;
    }
    // Lines run along the steps axis; one line for each value of the other axis.
    const int along = x_steps ? spec_.x.size() : spec_.y.size();
    const int lines = x_steps ? spec_.y.size() : spec_.x.size();
    const QStringList& steps = x_steps ? spec_.x.values : spec_.y.values;
    int best = 0;
    for (int k = 1; k < along; ++k) {
        if (steps[k].toInt() > steps[best].toInt()) {
            best = k;
        }
    }
    auto cell = [&](int k, int line) -> const QImage& {
        return x_steps ? cells_[line][k] : cells_[k][line];
    };
    for (int line = 0; line < lines; ++line) {
        QVector<double> d(along, -1);
        if (!cell(best, line).isNull()) {
            for (int k = 0; k < along; ++k) {
                d[k] = cell(k, line).isNull()
                           ? -1
                           : app::mean_abs_difference(cell(k, line), cell(best, line));
            }
        }
        out.insert(line, d);
    }
    return out;
}

void GridView::updatePlots() {
    QSize cell(64, 64);
    for (const auto& row : cells_) {
        for (const auto& c : row) {
            if (!c.isNull()) {
                cell = c.size();
            }
        }
    }
    if (spec_.x.empty()) {
        return;
    }
    sheet_->set(sheet(), app::grid_geometry(spec_, cell), spec_.x.size(), spec_.y.size());
    status_->setText(tr("%1 of %2 cells").arg(filled()).arg(spec_.cells()));

    const QVector<double> t = stepSeconds();
    PlotPanel::Series time{tr("mean over cells"), {}, t};
    for (int k = 0; k < t.size(); ++k) {
        time.x << k + 1;
    }
    timePlot_->setSeries({time});

    const auto conv = convergence();
    const bool x_steps = spec_.x.name == "steps";
    const QStringList& steps = x_steps ? spec_.x.values : spec_.y.values;
    const app::GridAxis& other = x_steps ? spec_.y : spec_.x;
    QList<PlotPanel::Series> lines;
    for (auto it = conv.begin(); it != conv.end(); ++it) {
        PlotPanel::Series s{other.empty() ? tr("all") : app::grid_label(other, it.key()), {}, {}};
        for (int k = 0; k < it.value().size(); ++k) {
            if (it.value()[k] >= 0) {
                s.x << steps[k].toDouble();
                s.y << it.value()[k];
            }
        }
        lines << s;
    }
    convergencePlot_->setSeries(lines);
}

void GridView::updateButtons() {
    run_->setEnabled(true);
    stop_->setEnabled(remaining_ > 0);
    export_->setEnabled(filled() > 0);
}

}  // namespace sds::ui
