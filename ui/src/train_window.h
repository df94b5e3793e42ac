#pragma once
// Fine-tuning, the studio's way: a window (Model → Fine-tune on your images…) that takes a folder
// of images with captions, fine-tunes the UNet of the model open in the studio on them (or trains
// a LoRA on its attention layers), shows the steps, the loss and the time left as it goes, stops
// with a checkpoint that the next Start continues from, and when it is done opens the tuned
// model in the studio or adds the LoRA to the studio's LoRA list.
//
// Training runs on an app::TrainingWorker thread; the window only shows what it reports.
#include <QWidget>

#include <memory>

#include "training.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QListWidget;
class QProgressBar;
class QPushButton;
class QSpinBox;

namespace sds::ui {

class PlotPanel;

class TrainWindow : public QWidget {
    Q_OBJECT
  public:
    explicit TrainWindow(QWidget* parent = nullptr);
    ~TrainWindow() override;  // stops a run (checkpoint kept) and waits for it

    // The model to fine-tune (the one open in the studio): a diffusers folder or a single file
    // with the configs it opens with; its native size is the default resolution.
    void setBaseModel(const QString& path, const QString& single_file_config, int native_size);
    void setDevice(const QString& device);  // auto | cpu | cuda
    // Where tuned models go unless the person picks a folder: <folder>/<data name>-tuned.
    void setModelsFolder(const QString& folder);

    // Reads the folder's images and captions into the list; false (and the message shown) when
    // it is no training folder.
    bool setDataFolder(const QString& dir);
    void setOutputFolder(const QString& dir);
    bool start();  // false (and a message) when the settings cannot start a run
    void stop();

    // The settings as the next Start would run them.
    TrainOptions options() const;
    app::TrainingWorker* worker() const { return worker_.get(); }
    QString statusText() const;
    QString errorText() const;
    int lossPoints() const;  // points on the loss plot

  Q_SIGNALS:
    void openModelRequested(const QString& dir);  // "Open in the studio" (a tuned model)
    void loraRequested(const QString& file);      // "Use the LoRA" (a trained LoRA)
    void runEnded();                              // finished, stopped or failed

  private:
    void chooseFolder(QLineEdit* edit, const QString& title);
    void refreshCheckpointNote();
    void setRunning(bool running);
    void showError(const QString& text);
    void onProgress(const QString& phase, int step, int total, double loss, double seconds_left);

    std::unique_ptr<app::TrainingWorker> worker_;
    QString basePath_, baseConfig_, device_ = "auto", modelsFolder_, autoOutput_;
    QLabel* base_;
    QLineEdit* data_;
    QLabel* dataSummary_;
    QListWidget* thumbnails_;
    QLineEdit* output_;
    QLabel* checkpointNote_;
    QCheckBox* startOver_;
    QComboBox* what_;  // the whole UNet, or a LoRA
    QSpinBox* loraRank_;
    QSpinBox* steps_;
    QDoubleSpinBox* learningRate_;
    QSpinBox* batch_;
    QSpinBox* resolution_;
    QSpinBox* seed_;
    QDoubleSpinBox* captionDropout_;
    QDoubleSpinBox* noiseOffset_;
    QDoubleSpinBox* snrGamma_;
    QDoubleSpinBox* ema_;
    QSpinBox* checkpointEvery_;
    QPushButton* startButton_;
    QPushButton* stopButton_;
    QPushButton* openButton_;
    QProgressBar* progress_;
    QLabel* status_;
    QLabel* error_;
    PlotPanel* plot_;
    QVector<double> lossX_, lossY_;
    qint64 lastPlot_ = 0;
    QString finishedDir_;   // the tuned model's folder
    QString finishedLora_;  // or the LoRA's file
};

}  // namespace sds::ui
