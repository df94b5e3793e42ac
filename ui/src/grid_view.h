#pragma once
// Compare: an X/Y grid of generations (steps, guidance, strength, seed, sampler), the same seed
// in every cell, filling in live as cells finish, with labelled axes as on A1111's X/Y plot;
// export as one PNG with the parameters. Below, plots: seconds per denoising step, and, when an
// axis is steps, each cell's difference from the highest-step cell of its row (how fast the
// image converges). Clicking a cell shows it in the result view.
#include <QImage>
#include <QMap>
#include <QWidget>

#include <functional>
#include <vector>

#include "grid.h"
#include "inference_worker.h"

class QComboBox;
class QLabel;
class QLineEdit;
class QPushButton;

namespace sds::ui {

class GridSheet;
class PlotPanel;

class GridView : public QWidget {
    Q_OBJECT
  public:
    explicit GridView(app::InferenceWorker* worker, QWidget* parent = nullptr);
    // Where the base request, init image and mask come from when a grid starts (a job whose
    // request every cell varies).
    using BaseProvider = std::function<app::Job()>;
    void setBaseProvider(BaseProvider provider) { base_ = std::move(provider); }
    void setModelName(const QString& name) { model_ = name; }

    // Starts a grid (replacing one that runs); throws sds::Error for bad axes or values.
    void start(const QString& x_axis, const QString& x_values, const QString& y_axis,
               const QString& y_values);
    void cancel();
    bool running() const { return remaining_ > 0; }
    int filled() const;
    const app::GridSpec& spec() const { return spec_; }
    QImage sheet() const;
    // Cell (i, j)'s image (x value i, y value j); null until it is made.
    QImage cellImage(int i, int j) const { return cells_.at(j).at(i); }
    // Writes the sheet as a PNG with the parameters; throws sds::FileError.
    void exportTo(const QString& path) const;
    // The plotted series (for tests): mean seconds per step index, and per row the difference
    // of each steps value from the row's highest-step cell.
    QVector<double> stepSeconds() const;
    QMap<int, QVector<double>> convergence() const;
    PlotPanel* timePlot() const { return timePlot_; }
    PlotPanel* convergencePlot() const { return convergencePlot_; }

  Q_SIGNALS:
    void cellOpened(const QImage& image, const GenerationRequest& request);
    void finished();
    void message(const QString& text);

  private:
    void onFinished(const app::JobResult& r);
    void onEnded(quint64 id);
    void updatePlots();
    void updateButtons();

    app::InferenceWorker* worker_;
    BaseProvider base_;
    QString model_;
    app::GridSpec spec_;
    std::vector<std::vector<QImage>> cells_;
    std::vector<std::vector<QList<double>>> times_;
    QMap<quint64, std::pair<int, int>> jobs_;
    int remaining_ = 0;

    QComboBox* xAxis_;
    QLineEdit* xValues_;
    QComboBox* yAxis_;
    QLineEdit* yValues_;
    QPushButton* run_;
    QPushButton* stop_;
    QPushButton* export_;
    QLabel* status_;
    GridSheet* sheet_;
    PlotPanel* timePlot_;
    PlotPanel* convergencePlot_;
};

}  // namespace sds::ui
