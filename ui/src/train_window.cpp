#include "train_window.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDateTime>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QImageReader>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QProgressBar>
#include <QPushButton>
#include <QRegularExpression>
#include <QSpinBox>
#include <QVBoxLayout>
#include <QValidator>

#include <cmath>

#include "plot_panel.h"
#include "sds/error.h"

namespace sds::ui {

namespace {

constexpr int kThumbnails = 60;  // the list shows this many of a folder's images

// A spin box for small numbers such as learning rates: "0.0001", "5e-06"; typing either works.
class SmallNumberSpinBox : public QDoubleSpinBox {
  public:
    using QDoubleSpinBox::QDoubleSpinBox;
    QString textFromValue(double v) const override { return QString::number(v, 'g', 4); }
    double valueFromText(const QString& text) const override { return text.toDouble(); }
    QValidator::State validate(QString& text, int&) const override {
        bool ok = false;
        const double v = text.toDouble(&ok);
        if (ok && v >= minimum() && v <= maximum()) {
            return QValidator::Acceptable;
        }
        return text.contains(QRegularExpression("^[0-9.eE+-]*$")) ? QValidator::Intermediate
                                                                  : QValidator::Invalid;
    }
    // Steps multiply and divide by 2 around the value, so any size changes sensibly.
    void stepBy(int steps) override { setValue(value() * std::pow(2.0, steps)); }
};

QString duration_text(double seconds) {
    const int s = static_cast<int>(std::lround(seconds));
    if (s < 60) {
        return QObject::tr("%1 s").arg(s);
    }
    if (s < 3600) {
        return QObject::tr("%1 min").arg((s + 30) / 60);
    }
    return QObject::tr("%1 h %2 min").arg(s / 3600).arg((s % 3600) / 60, 2, 10, QChar('0'));
}

QString phase_name(const QString& phase) {
    return phase == "vae" ? QStringLiteral("VAE") : QStringLiteral("UNet");
}

}  // namespace

TrainWindow::TrainWindow(QWidget* parent)
    : QWidget(parent, Qt::Window), worker_(std::make_unique<app::TrainingWorker>()) {
    setWindowTitle(tr("Fine-tune on your images"));
    setObjectName("trainWindow");
    auto* layout = new QVBoxLayout(this);

    // What is tuned, on what.
    auto* dataBox = new QGroupBox(tr("Images and captions"));
    auto* dataLayout = new QVBoxLayout(dataBox);
    auto* dataRow = new QHBoxLayout;
    data_ = new QLineEdit;
    data_->setObjectName("dataFolder");
    data_->setPlaceholderText(tr("a folder of images, each with a .txt caption beside it"));
    auto* browseData = new QPushButton(tr("Browse…"));
    dataRow->addWidget(data_, 1);
    dataRow->addWidget(browseData);
    dataLayout->addLayout(dataRow);
    dataSummary_ = new QLabel;
    dataSummary_->setObjectName("dataSummary");
    dataSummary_->setWordWrap(true);
    dataLayout->addWidget(dataSummary_);
    thumbnails_ = new QListWidget;
    thumbnails_->setObjectName("thumbnails");
    thumbnails_->setViewMode(QListView::IconMode);
    thumbnails_->setIconSize(QSize(72, 72));
    thumbnails_->setGridSize(QSize(112, 118));
    thumbnails_->setWordWrap(true);
    thumbnails_->setResizeMode(QListView::Adjust);
    thumbnails_->setMovement(QListView::Static);
    thumbnails_->setSelectionMode(QAbstractItemView::NoSelection);
    thumbnails_->setMinimumHeight(130);
    dataLayout->addWidget(thumbnails_, 1);
    layout->addWidget(dataBox, 1);

    auto* modelBox = new QGroupBox(tr("Model"));
    auto* modelForm = new QFormLayout(modelBox);
    base_ = new QLabel(tr("no model open"));
    base_->setObjectName("baseModel");
    base_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    modelForm->addRow(tr("Base"), base_);
    auto* outRow = new QHBoxLayout;
    output_ = new QLineEdit;
    output_->setObjectName("outputFolder");
    output_->setPlaceholderText(tr("the folder the tuned model is written to"));
    auto* browseOut = new QPushButton(tr("Browse…"));
    outRow->addWidget(output_, 1);
    outRow->addWidget(browseOut);
    modelForm->addRow(tr("Save to"), outRow);
    checkpointNote_ = new QLabel;
    checkpointNote_->setObjectName("checkpointNote");
    checkpointNote_->setWordWrap(true);
    startOver_ = new QCheckBox(tr("Start over (ignore the checkpoint)"));
    startOver_->setObjectName("startOver");
    modelForm->addRow(QString(), checkpointNote_);
    modelForm->addRow(QString(), startOver_);
    layout->addWidget(modelBox);

    // How.
    auto* trainBox = new QGroupBox(tr("Training"));
    auto* trainOuter = new QVBoxLayout(trainBox);
    auto* whatForm = new QFormLayout;
    trainOuter->addLayout(whatForm);
    auto* trainLayout = new QHBoxLayout;
    trainOuter->addLayout(trainLayout);
    auto* left = new QFormLayout;
    auto* right = new QFormLayout;
    trainLayout->addLayout(left);
    trainLayout->addLayout(right);
    auto spin = [](const char* name, int lo, int hi, int value, int step = 1) {
        auto* s = new QSpinBox;
        s->setObjectName(name);
        s->setRange(lo, hi);
        s->setSingleStep(step);
        s->setValue(value);
        return s;
    };
    auto real = [](const char* name, double lo, double hi, double value, int decimals,
                   double step) {
        auto* s = new QDoubleSpinBox;
        s->setObjectName(name);
        s->setDecimals(decimals);
        s->setRange(lo, hi);
        s->setSingleStep(step);
        s->setValue(value);
        return s;
    };
    what_ = new QComboBox;
    what_->setObjectName("trainWhat");
    what_->addItem(tr("the whole UNet (a new model)"), "unet");
    what_->addItem(tr("a LoRA (a small file)"), "lora");
    what_->setToolTip(
        tr("A LoRA learns a small change to the attention layers: a file of a few "
           "MB that the studio, the CLI and A1111 add to the model"));
    loraRank_ = spin("loraRank", 1, 256, 8);
    loraRank_->setToolTip(tr("The LoRA's rank: more learns more, in a bigger file"));
    loraRank_->setEnabled(false);
    auto* whatRow = new QHBoxLayout;
    whatRow->addWidget(what_, 1);
    whatRow->addWidget(new QLabel(tr("rank")));
    whatRow->addWidget(loraRank_);
    connect(what_, &QComboBox::currentIndexChanged, this, [this] {
        loraRank_->setEnabled(what_->currentData() == "lora");
        ema_->setEnabled(what_->currentData() != "lora");
        if (!data_->text().isEmpty() && output_->text() == autoOutput_) {
            setDataFolder(data_->text());  // the proposed folder's name says what it holds
        }
        refreshCheckpointNote();
    });
    whatForm->addRow(tr("Train"), whatRow);
    steps_ = spin("steps", 1, 1000000, 500, 100);
    learningRate_ = new SmallNumberSpinBox;
    learningRate_->setObjectName("learningRate");
    learningRate_->setDecimals(12);  // what the value keeps; the text shows 4 digits
    learningRate_->setRange(1e-8, 1e-2);
    learningRate_->setValue(1e-4);
    learningRate_->setToolTip(
        tr("AdamW's learning rate: 1e-5 changes a large model gently, "
           "1e-4 quickly"));
    batch_ = spin("batch", 1, 256, 4);
    resolution_ = spin("resolution", 8, 2048, 512, 8);
    resolution_->setToolTip(
        tr("Images are scaled to cover this square and cut in the middle; "
           "the model's own size is usually best"));
    seed_ = spin("seed", 0, 2147483647, 0);
    left->addRow(tr("Steps"), steps_);
    left->addRow(tr("Learning rate"), learningRate_);
    left->addRow(tr("Batch"), batch_);
    left->addRow(tr("Resolution"), resolution_);
    left->addRow(tr("Seed"), seed_);
    captionDropout_ = real("captionDropout", 0, 1, 0.1, 2, 0.05);
    captionDropout_->setToolTip(tr("How often a caption is left out, so guidance keeps working"));
    noiseOffset_ = real("noiseOffset", 0, 1, 0, 3, 0.01);
    noiseOffset_->setSpecialValueText(tr("off"));
    noiseOffset_->setToolTip(
        tr("Offset noise: the model learns an image's overall colour from "
           "the prompt (0.05-0.1)"));
    snrGamma_ = real("snrGamma", 0, 50, 0, 1, 1);
    snrGamma_->setSpecialValueText(tr("off"));
    snrGamma_->setToolTip(tr("Min-SNR loss weighting (5 is usual)"));
    ema_ = real("ema", 0, 0.99999, 0.999, 5, 0.001);
    ema_->setToolTip(
        tr("The decay of the average of the weights that is saved (0: the last "
           "weights)"));
    checkpointEvery_ = spin("checkpointEvery", 0, 100000, 200, 50);
    checkpointEvery_->setSpecialValueText(tr("only at the end"));
    right->addRow(tr("Caption dropout"), captionDropout_);
    right->addRow(tr("Noise offset"), noiseOffset_);
    right->addRow(tr("Min-SNR γ"), snrGamma_);
    right->addRow(tr("EMA decay"), ema_);
    right->addRow(tr("Checkpoint every"), checkpointEvery_);
    layout->addWidget(trainBox);

    // Running.
    auto* runRow = new QHBoxLayout;
    startButton_ = new QPushButton(tr("Start"));
    startButton_->setObjectName("startTraining");
    stopButton_ = new QPushButton(tr("Stop"));
    stopButton_->setObjectName("stopTraining");
    stopButton_->setToolTip(tr("Stops after the current step and saves a checkpoint"));
    openButton_ = new QPushButton(tr("Open in the studio"));
    openButton_->setObjectName("openTuned");
    progress_ = new QProgressBar;
    progress_->setRange(0, 1);
    progress_->setValue(0);
    runRow->addWidget(startButton_);
    runRow->addWidget(stopButton_);
    runRow->addWidget(progress_, 1);
    runRow->addWidget(openButton_);
    layout->addLayout(runRow);
    status_ = new QLabel;
    status_->setObjectName("trainStatus");
    status_->setWordWrap(true);
    layout->addWidget(status_);
    error_ = new QLabel;
    error_->setObjectName("trainError");
    error_->setWordWrap(true);
    error_->setStyleSheet("color: #c0392b;");
    error_->hide();
    layout->addWidget(error_);
    plot_ = new PlotPanel(tr("Loss"), tr("step"), tr("loss (running mean)"));
    plot_->setEmptyText(tr("The loss appears here step by step once training starts"));
    plot_->setMinimumHeight(160);
    layout->addWidget(plot_, 1);
    stopButton_->setEnabled(false);
    openButton_->setEnabled(false);

    connect(browseData, &QPushButton::clicked, this, [this] {
        chooseFolder(data_, tr("A folder of images with captions"));
        setDataFolder(data_->text());
    });
    connect(data_, &QLineEdit::editingFinished, this, [this] { setDataFolder(data_->text()); });
    connect(browseOut, &QPushButton::clicked, this, [this] {
        chooseFolder(output_, tr("Where the tuned model goes"));
        refreshCheckpointNote();
    });
    connect(output_, &QLineEdit::textChanged, this, [this] { refreshCheckpointNote(); });
    connect(steps_, &QSpinBox::valueChanged, this, [this] { refreshCheckpointNote(); });
    connect(startButton_, &QPushButton::clicked, this, [this] { start(); });
    connect(stopButton_, &QPushButton::clicked, this, &TrainWindow::stop);
    connect(openButton_, &QPushButton::clicked, this, [this] {
        if (!finishedLora_.isEmpty()) {
            Q_EMIT loraRequested(finishedLora_);
        } else {
            Q_EMIT openModelRequested(finishedDir_);
        }
    });

    connect(worker_.get(), &app::TrainingWorker::started, this,
            [this](int images) { status_->setText(tr("Training on %1 images…").arg(images)); });
    connect(worker_.get(), &app::TrainingWorker::progress, this, &TrainWindow::onProgress);
    connect(worker_.get(), &app::TrainingWorker::finished, this, [this](const QString& dir) {
        setRunning(false);
        finishedDir_ = dir;
        openButton_->setEnabled(true);
        progress_->setValue(progress_->maximum());
        plot_->setSeries({{tr("UNet"), lossX_, lossY_}});
        if (!finishedLora_.isEmpty()) {
            openButton_->setText(tr("Use the LoRA"));
            status_->setText(tr("Done: the LoRA is %1 (in a prompt: <lora:%2>)")
                                 .arg(finishedLora_, QFileInfo(finishedLora_).completeBaseName()));
        } else {
            openButton_->setText(tr("Open in the studio"));
            status_->setText(tr("Done: the tuned model is in %1").arg(dir));
        }
        refreshCheckpointNote();
        Q_EMIT runEnded();
    });
    connect(worker_.get(), &app::TrainingWorker::stopped, this,
            [this](const QString& phase, int step) {
                setRunning(false);
                plot_->setSeries({{tr("UNet"), lossX_, lossY_}});
                status_->setText(tr("Stopped after %1 step %2; the checkpoint is saved: Start "
                                    "continues from it")
                                     .arg(phase_name(phase))
                                     .arg(step));
                refreshCheckpointNote();
                Q_EMIT runEnded();
            });
    connect(worker_.get(), &app::TrainingWorker::failed, this, [this](const QString& message) {
        setRunning(false);
        status_->setText(tr("Training failed"));
        showError(message);
        refreshCheckpointNote();
        Q_EMIT runEnded();
    });
    resize(760, 900);
}

TrainWindow::~TrainWindow() = default;

void TrainWindow::setBaseModel(const QString& path, const QString& config, int native_size) {
    const bool changed = path != basePath_;
    basePath_ = path;
    baseConfig_ = config;
    base_->setText(path.isEmpty() ? tr("no model open") : path);
    base_->setToolTip(tr("The model open in the studio; its UNet is tuned, the rest is copied"));
    if (changed && native_size > 0) {
        resolution_->setValue(native_size);
    }
}

void TrainWindow::setDevice(const QString& device) {
    device_ = device;
}

void TrainWindow::setModelsFolder(const QString& folder) {
    modelsFolder_ = folder;
}

void TrainWindow::chooseFolder(QLineEdit* edit, const QString& title) {
    const QString dir = QFileDialog::getExistingDirectory(this, title, edit->text());
    if (!dir.isEmpty()) {
        edit->setText(dir);
    }
}

bool TrainWindow::setDataFolder(const QString& dir) {
    if (data_->text() != dir) {
        data_->setText(dir);
    }
    thumbnails_->clear();
    error_->hide();
    if (dir.isEmpty()) {
        dataSummary_->clear();
        return false;
    }
    app::TrainingFolder folder;
    try {
        folder = app::scan_training_folder(dir);
    } catch (const std::exception& e) {
        dataSummary_->setText(QString::fromUtf8(e.what()));
        dataSummary_->setStyleSheet("color: #c0392b;");
        return false;
    }
    dataSummary_->setStyleSheet({});
    const qsizetype n = folder.images.size();
    dataSummary_->setText(
        n > kThumbnails ? tr("%1 images with captions (the first %2 below)").arg(n).arg(kThumbnails)
        : n == 1        ? tr("1 image with its caption")
                        : tr("%1 images with captions").arg(n));
    for (qsizetype i = 0; i < std::min<qsizetype>(n, kThumbnails); ++i) {
        QImageReader reader(folder.images[i]);
        const QSize size = reader.size();
        if (size.isValid()) {
            reader.setScaledSize(size.scaled(thumbnails_->iconSize(), Qt::KeepAspectRatio));
        }
        const QImage thumb = reader.read();
        const QString caption = folder.captions[i];
        auto* item = new QListWidgetItem(QIcon(QPixmap::fromImage(thumb)),
                                         caption.size() > 40 ? caption.left(38) + "…" : caption);
        item->setToolTip(QFileInfo(folder.images[i]).fileName() + ": " + caption);
        thumbnails_->addItem(item);
    }
    // A tuned model's folder to start from, unless the person chose one.
    if (!modelsFolder_.isEmpty() && (output_->text().isEmpty() || output_->text() == autoOutput_)) {
        autoOutput_ = QDir(modelsFolder_)
                          .filePath(QFileInfo(dir).fileName() +
                                    (what_->currentData() == "lora" ? "-lora" : "-tuned"));
        output_->setText(autoOutput_);
    }
    return true;
}

void TrainWindow::setOutputFolder(const QString& dir) {
    output_->setText(dir);
}

void TrainWindow::refreshCheckpointNote() {
    const app::TrainingCheckpoint c = app::read_training_checkpoint(output_->text());
    startOver_->setVisible(c.step > 0);
    if (c.step > 0 && c.step >= steps_->value()) {
        checkpointNote_->setText(tr("A run of %1 steps is there: raise Steps to train it "
                                    "further, or start over.")
                                     .arg(c.step));
    } else if (c.step > 0) {
        checkpointNote_->setText(tr("A run there saved a checkpoint after %1 step %2: Start "
                                    "continues it up to the steps below.")
                                     .arg(phase_name(c.phase))
                                     .arg(c.step));
    } else {
        checkpointNote_->setText(QFileInfo(output_->text()).isDir() &&
                                         !QDir(output_->text()).isEmpty()
                                     ? tr("The folder is not empty: the tuned model's files "
                                          "replace those of the same names.")
                                     : QString());
    }
    checkpointNote_->setVisible(!checkpointNote_->text().isEmpty());
}

TrainOptions TrainWindow::options() const {
    TrainOptions o;
    o.out_dir = output_->text().toStdString();
    o.base_model = basePath_.toStdString();
    o.base_config = baseConfig_.toStdString();
    o.unet_steps = steps_->value();
    o.vae_steps = 0;
    o.learning_rate = learningRate_->value();
    o.batch_size = batch_->value();
    o.arch.resolution = resolution_->value();
    o.seed = static_cast<uint64_t>(seed_->value());
    o.caption_dropout = captionDropout_->value();
    o.noise_offset = noiseOffset_->value();
    o.snr_gamma = snrGamma_->value();
    o.ema_decay = ema_->value();
    o.checkpoint_every = checkpointEvery_->value();
    o.lora_rank = what_->currentData() == "lora" ? loraRank_->value() : 0;
    o.resume = !startOver_->isChecked();
    o.device = device_.toStdString();
    return o;
}

bool TrainWindow::start() {
    error_->hide();
    if (worker_->running()) {
        return false;
    }
    if (basePath_.isEmpty()) {
        showError(tr("Open a model first: fine-tuning starts from the model open in the studio"));
        return false;
    }
    if (!setDataFolder(data_->text())) {
        showError(data_->text().isEmpty() ? tr("Choose a folder of images with captions")
                                          : dataSummary_->text());
        return false;
    }
    const QString out = output_->text();
    if (out.isEmpty()) {
        showError(tr("Choose the folder the tuned model is written to"));
        return false;
    }
    const QString outPath = QFileInfo(out).absoluteFilePath();
    if (outPath == QFileInfo(basePath_).absoluteFilePath() ||
        outPath == QFileInfo(data_->text()).absoluteFilePath()) {
        showError(tr("%1: the tuned model needs a folder of its own (not the base model's or "
                     "the images')")
                      .arg(out));
        return false;
    }
    const TrainOptions o = options();
    lossX_.clear();
    lossY_.clear();
    plot_->setSeries({});
    finishedDir_.clear();
    finishedLora_ = o.lora_rank > 0 ? QString::fromStdString(lora_file(o).string()) : QString();
    openButton_->setEnabled(false);
    progress_->setRange(0, o.unet_steps);
    progress_->setValue(0);
    status_->setText(tr("Reading the images…"));
    if (!worker_->start(data_->text(), o)) {
        return false;
    }
    setRunning(true);
    return true;
}

void TrainWindow::stop() {
    if (worker_->running()) {
        worker_->stop();
        status_->setText(tr("Stopping after this step…"));
    }
}

void TrainWindow::setRunning(bool running) {
    startButton_->setEnabled(!running);
    stopButton_->setEnabled(running);
    for (QWidget* w :
         std::initializer_list<QWidget*>{data_, output_, startOver_, what_, loraRank_, steps_,
                                         learningRate_, batch_, resolution_, seed_, captionDropout_,
                                         noiseOffset_, snrGamma_, ema_, checkpointEvery_}) {
        w->setEnabled(!running);
    }
    loraRank_->setEnabled(!running && what_->currentData() == "lora");
    ema_->setEnabled(!running && what_->currentData() != "lora");  // a LoRA keeps no average
}

void TrainWindow::onProgress(const QString& phase, int step, int total, double loss,
                             double seconds_left) {
    progress_->setRange(0, total);
    progress_->setValue(step);
    status_->setText(tr("%1 step %2/%3 · loss %4 · %5 left")
                         .arg(phase_name(phase))
                         .arg(step)
                         .arg(total)
                         .arg(loss, 0, 'f', 4)
                         .arg(duration_text(seconds_left)));
    lossX_ << step;
    lossY_ << loss;
    // Redrawn a few times a second at most; the last point when the run ends.
    const qint64 now = QDateTime::currentMSecsSinceEpoch();
    if (now - lastPlot_ > 250 || step == total) {
        lastPlot_ = now;
        plot_->setSeries({{tr("UNet"), lossX_, lossY_}});
    }
}

void TrainWindow::showError(const QString& text) {
    error_->setText(text);
    error_->show();
}

QString TrainWindow::statusText() const {
    return status_->text();
}

QString TrainWindow::errorText() const {
    return error_->isHidden() ? QString() : error_->text();
}

int TrainWindow::lossPoints() const {
    return plot_->pointCount(0);
}

}  // namespace sds::ui
