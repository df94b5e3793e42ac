#include "main_window.h"

#include <QAction>
#include <QApplication>
#include <QButtonGroup>
#include <QCheckBox>
#include <QCloseEvent>
#include <QColorDialog>
#include <QComboBox>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDockWidget>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QFutureWatcher>
#include <QHBoxLayout>
#include <QImageReader>
#include <QLabel>
#include <QLineEdit>
#include <QMenu>
#include <QMenuBar>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QShortcut>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTimer>
#include <QToolBar>
#include <QToolButton>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include "file_hashes.h"
#include "grid_view.h"
#include "history_view.h"
#include "image_io.h"
#include "image_view.h"
#include "parameter_panel.h"
#include "prompt_edit.h"
#include "sds/clip_tokenizer.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/pipeline.h"
#include "sds/textual_inversion.h"
#include "sketch_canvas.h"
#include "step_strip.h"
#include "train_window.h"

namespace sds::ui {

MainWindow::MainWindow(const app::StudioSettings& settings, QWidget* parent)
    : QMainWindow(parent), settings_(settings), worker_(std::make_unique<app::InferenceWorker>()) {
    setWindowTitle("SD Studio");
    setDockOptions(QMainWindow::AnimatedDocks | QMainWindow::AllowTabbedDocks);

    error_ = new QLabel;
    error_->setObjectName("errorBanner");
    error_->setWordWrap(true);
    error_->setTextInteractionFlags(Qt::TextBrowserInteraction);
    error_->setStyleSheet(
        "QLabel { background: #fdecea; color: #611a15; border: 1px solid #f5c6cb; padding: "
        "6px; }");
    error_->hide();
    connect(error_, &QLabel::linkActivated, this, &MainWindow::clearError);

    canvas_ = new SketchCanvas;
    canvas_->setObjectName("canvas");
    result_ = new ImageView;
    result_->setObjectName("result");
    result_->setPlaceholder(tr("The preview of each step, then the result, appear here."));
    auto* studio = new QSplitter(Qt::Horizontal);
    studio->setObjectName("studioSplitter");
    studio->addWidget(buildCanvasPanel());
    studio->addWidget(buildResultPanel());
    studio->setChildrenCollapsible(false);
    studio->setStretchFactor(0, 1);
    studio->setStretchFactor(1, 1);
    studio->setSizes({600, 600});  // the sketch and its result side by side, the same size

    grid_ = new GridView(worker_.get());
    tabs_ = new QTabWidget;
    tabs_->addTab(studio, tr("Studio"));
    tabs_->addTab(grid_, tr("Compare"));
    auto* central = new QWidget;
    auto* v = new QVBoxLayout(central);
    v->setContentsMargins(4, 4, 4, 4);
    v->addWidget(error_);
    v->addWidget(tabs_, 1);
    setCentralWidget(central);

    panel_ = new ParameterPanel;
    auto* params = new QDockWidget(tr("Parameters"));
    params->setObjectName("parametersDock");
    params->setWidget(panel_);
    addDockWidget(Qt::LeftDockWidgetArea, params);

    steps_ = new StepStrip;
    auto* stepsDock = new QDockWidget(tr("Steps"));
    stepsDock->setObjectName("stepsDock");
    stepsDock->setWidget(steps_);
    addDockWidget(Qt::BottomDockWidgetArea, stepsDock);

    historyView_ = new HistoryView;
    auto* historyDock = new QDockWidget(tr("History"));
    historyDock->setObjectName("historyDock");
    historyDock->setWidget(historyView_);
    addDockWidget(Qt::RightDockWidgetArea, historyDock);

    statusText_ = new QLabel(tr("no model"));
    progress_ = new QProgressBar;
    progress_->setMaximumWidth(220);
    progress_->setRange(0, 100);
    progress_->setValue(0);
    statusBar()->addWidget(statusText_, 1);
    statusBar()->addPermanentWidget(progress_);

    liveTimer_ = new QTimer(this);
    liveTimer_->setSingleShot(true);
    liveTimer_->setInterval(250);
    connect(liveTimer_, &QTimer::timeout, this, &MainWindow::submitLive);

    buildMenus();

    // The panel.
    connect(panel_, &ParameterPanel::generateRequested, this, [this] { generate(); });
    connect(panel_, &ParameterPanel::cancelRequested, this, &MainWindow::cancel);
    connect(panel_, &ParameterPanel::liveParameterMoved, this, &MainWindow::scheduleLive);
    connect(panel_, &ParameterPanel::liveChanged, this, [this](bool on) {
        if (on) {
            scheduleLive();
        }
    });
    connect(panel_, &ParameterPanel::sizeChanged, canvas_, &SketchCanvas::setImageSize);
    connect(panel_, &ParameterPanel::controlPreviewRequested, this,
            &MainWindow::showControlPreview);
    connect(canvas_, &SketchCanvas::strokeFinished, this, [this] {
        if (panel_->img2img() || !panel_->request().controls.empty()) {
            scheduleLive();
        }
    });
    connect(panel_, &ParameterPanel::modeChanged, this, [this](ParameterPanel::Mode mode) {
        canvas_->setMaskShown(mode == ParameterPanel::Mode::Inpaint);
        if (mode == ParameterPanel::Mode::Inpaint && maskButton_ && !canvas_->hasMask() &&
            !maskButton_->isChecked()) {
            maskButton_->setChecked(true);  // nothing masked yet: the tools paint the mask
            statusBar()->showMessage(
                tr("Paint the part to repaint (the Mask tool is on; M turns it off)."), 5000);
        }
        if (mode != ParameterPanel::Mode::Inpaint && maskButton_ && maskButton_->isChecked()) {
            maskButton_->setChecked(false);  // painting a mask is for inpainting
        }
    });
    connect(canvas_, &SketchCanvas::message, this, &MainWindow::showError);
    connect(steps_, &StepStrip::stepSelected, this, [this](int index, const QImage& preview) {
        result_->setImage(preview, tr("step %1 (preview)").arg(index + 1));
    });

    // History.
    connect(historyView_, &HistoryView::showRequested, this, &MainWindow::showEntry);
    connect(historyView_, &HistoryView::useAsInputRequested, this, &MainWindow::useAsInput);
    connect(historyView_, &HistoryView::reuseRequested, this, &MainWindow::reuseParameters);
    connect(historyView_, &HistoryView::exportRequested, this, [this](qint64 id) {
        const auto e = history_->get(id);
        if (!e) {
            return;
        }
        const QString to = QFileDialog::getSaveFileName(
            this, tr("Export image"), QFileInfo(e->file).fileName(), "PNG (*.png)");
        if (!to.isEmpty() && !(QFile::remove(to), QFile::copy(e->file, to))) {
            showError(tr("%1: cannot write the copy").arg(to));
        }
    });
    connect(historyView_, &HistoryView::deleteRequested, this, [this](qint64 id) {
        if (QMessageBox::question(this, tr("Delete"),
                                  tr("Delete image #%1 and its file?").arg(id)) ==
            QMessageBox::Yes) {
            history_->remove(id);
            historyView_->refresh();
        }
    });

    // The grid.
    grid_->setBaseProvider([this] {
        app::Job job = makeJob(app::Job::Policy::Fifo);
        try {
            takePromptFiles(job.request);
        } catch (const std::exception& e) {
            showError(QString::fromUtf8(e.what()));  // the tags stay in the prompt
        }
        return job;
    });
    connect(grid_, &GridView::cellOpened, this,
            [this](const QImage& image, const GenerationRequest& r) {
                shownId_ = -1;
                shownRequest_ = r;
                result_->setImage(image, tr("grid cell, seed %1").arg(r.seed));
                tabs_->setCurrentIndex(0);
            });
    connect(grid_, &GridView::message, this,
            [this](const QString& m) { statusBar()->showMessage(m, 5000); });

    // The worker.
    connect(worker_.get(), &app::InferenceWorker::modelLoading, this,
            [this](const QString& what, double f) {
                loading_ = what;
                progress_->setValue(static_cast<int>(f * 100));
                updateStatus();
            });
    connect(worker_.get(), &app::InferenceWorker::modelLoaded, this, [this](const QString& dir) {
        loading_.clear();
        progress_->setValue(0);
        if (worker_->nativeSize() != nativeSize_) {  // keep the person's size for the same model
            nativeSize_ = worker_->nativeSize();
            panel_->setNativeSize(nativeSize_);
        }
        if (dir != hintedModel_) {  // and their settings: a model's suggestions apply once
            hintedModel_ = dir;
            panel_->applyHints(worker_->hints());
        }
        grid_->setModelName(QFileInfo(dir).fileName());
        if (train_ && train_->isVisible()) {
            showTrainWindow();  // the base follows the model open in the studio
        }
        updateStatus();
    });
    connect(worker_.get(), &app::InferenceWorker::modelFailed, this,
            [this](const QString& dir, const QString& message) {
                loading_.clear();
                showError(tr("Cannot load the model %1: %2").arg(dir, message));
                updateStatus();
            });
    connect(worker_.get(), &app::InferenceWorker::jobStarted, this, [this](quint64 id, int total) {
        if (!ours_.contains(id)) {
            return;
        }
        current_ = id;
        statusBar()->clearMessage();
        stepIndex_ = 0;
        stepTotal_ = total;
        stepSecondsSum_ = 0;
        steps_->start(total);
        panel_->setBusy(true);
        updateStatus();
    });
    connect(worker_.get(), &app::InferenceWorker::stepDone, this, &MainWindow::onStep);
    connect(worker_.get(), &app::InferenceWorker::jobFinished, this, &MainWindow::onFinished);
    connect(worker_.get(), &app::InferenceWorker::jobCancelled, this, [this](quint64 id) {
        if (ours_.contains(id)) {
            statusBar()->showMessage(tr("Cancelled"), 3000);
        }
        onJobEnded(id);
    });
    connect(worker_.get(), &app::InferenceWorker::jobFailed, this,
            [this](quint64 id, const QString& message) {
                if (ours_.contains(id)) {
                    showError(tr("Generation failed: %1").arg(message));
                }
                onJobEnded(id);
            });
    connect(worker_.get(), &app::InferenceWorker::queueChanged, this,
            [this](int) { updateStatus(); });

    panel_->setStylesFile(settings_.stylesFile());
    panel_->setNetworkFolders(settings_.lora_folder, settings_.embedding_folder);
    // The history store.
    try {
        history_ = std::make_unique<app::HistoryStore>(settings_.dataFolder());
        historyView_->setStore(history_.get());
    } catch (const std::exception& e) {
        showError(tr("The history is not available: %1").arg(QString::fromUtf8(e.what())));
    }

    if (!settings_.geometry.isEmpty()) {
        restoreGeometry(settings_.geometry);
    } else {
        resize(1400, 860);
    }
    if (!settings_.window_state.isEmpty()) {
        restoreState(settings_.window_state);
    }
    canvas_->setImageSize(QSize(512, 512));
    if (!settings_.model.isEmpty()) {
        openModel(settings_.model);
    } else {
        statusText_->setText(tr("No model: Model → Open model folder…"));
    }
}

MainWindow::~MainWindow() {
    worker_.reset();  // joins the worker before the widgets its signals reach go away
}

QWidget* MainWindow::buildCanvasPanel() {
    auto* bar = new QToolBar;
    bar->setIconSize(QSize(16, 16));
    auto* tools = new QButtonGroup(this);
    auto tool_button = [&](const QString& text, const QString& tip, SketchCanvas::Tool tool,
                           const QKeySequence& key) {
        auto* b = new QToolButton;
        b->setText(text);
        b->setToolTip(tip + " (" + key.toString() + ")");
        b->setCheckable(true);
        b->setShortcut(key);
        tools->addButton(b);
        bar->addWidget(b);
        connect(b, &QToolButton::toggled, this, [this, tool](bool on) {
            if (on) {
                canvas_->setTool(tool);
            }
        });
        return b;
    };
    tool_button(tr("Brush"), tr("Brush"), SketchCanvas::Tool::Brush, QKeySequence("B"))
        ->setChecked(true);
    tool_button(tr("Eraser"), tr("Eraser"), SketchCanvas::Tool::Eraser, QKeySequence("E"));
    tool_button(tr("Fill"), tr("Fill an area"), SketchCanvas::Tool::Fill, QKeySequence("F"));
    maskButton_ = new QToolButton;
    maskButton_->setObjectName("maskButton");
    maskButton_->setText(tr("Mask"));
    maskButton_->setToolTip(
        tr("Paint the inpainting mask, the part to repaint (M): the brush, eraser and fill work "
           "on the mask while this is on. Turns Inpaint mode on."));
    maskButton_->setCheckable(true);
    maskButton_->setShortcut(QKeySequence("M"));
    maskButton_->setPopupMode(QToolButton::MenuButtonPopup);
    auto* maskMenu = new QMenu(maskButton_);
    maskMenu->addAction(tr("Open mask image…"), this, [this] {
        const QString path =
            QFileDialog::getOpenFileName(this, tr("Open a mask (white repaints, black keeps)"),
                                         QString(), tr("Images (*.png *.jpg *.jpeg *.bmp *.webp)"));
        if (!path.isEmpty()) {
            openMask(path);
        }
    });
    maskMenu->addAction(tr("Clear mask"), canvas_, &SketchCanvas::clearMask);
    maskMenu->addAction(tr("Invert mask"), canvas_, &SketchCanvas::invertMask);
    maskMenu->addAction(tr("Extend canvas (outpaint)…"), this, &MainWindow::askExtendCanvas);
    maskButton_->setMenu(maskMenu);
    connect(maskButton_, &QToolButton::toggled, this, [this](bool on) {
        canvas_->setMaskEditing(on);
        if (on) {
            panel_->setMode(ParameterPanel::Mode::Inpaint);
        }
    });
    bar->addSeparator();
    colourButton_ = new QToolButton;
    colourButton_->setToolTip(tr("Brush colour"));
    auto paint_swatch = [this] {
        QPixmap px(16, 16);
        px.fill(canvas_->color());
        colourButton_->setIcon(QIcon(px));
    };
    paint_swatch();
    connect(colourButton_, &QToolButton::clicked, this, [this, paint_swatch] {
        const QColor c = QColorDialog::getColor(canvas_->color(), this, tr("Brush colour"));
        if (c.isValid()) {
            canvas_->setColor(c);
            paint_swatch();
        }
    });
    bar->addWidget(colourButton_);
    auto* size = new QSlider(Qt::Horizontal);
    size->setRange(1, 120);
    size->setValue(canvas_->brushSize());
    size->setMinimumWidth(60);  // the toolbar's » menu takes what does not fit
    size->setMaximumWidth(80);
    size->setToolTip(tr("Brush size ([ and ])"));
    connect(size, &QSlider::valueChanged, canvas_, &SketchCanvas::setBrushSize);
    bar->addWidget(new QLabel(tr(" size ")));
    bar->addWidget(size);
    auto* opacity = new QSlider(Qt::Horizontal);
    opacity->setRange(5, 100);
    opacity->setValue(100);
    opacity->setMinimumWidth(45);
    opacity->setMaximumWidth(70);
    opacity->setToolTip(tr("Opacity"));
    connect(opacity, &QSlider::valueChanged, this,
            [this](int v) { canvas_->setOpacity(v / 100.0); });
    bar->addWidget(new QLabel(QString::fromUtf8(" \u03b1 ")));
    bar->addWidget(opacity);
    bar->addSeparator();
    auto* undo = bar->addAction(QString::fromUtf8("\u21b6"), canvas_, &SketchCanvas::undo);
    undo->setToolTip(tr("Undo the last stroke (Ctrl+Z)"));
    undo->setShortcut(QKeySequence::Undo);
    auto* redo = bar->addAction(QString::fromUtf8("\u21b7"), canvas_, &SketchCanvas::redo);
    redo->setToolTip(tr("Redo (Ctrl+Shift+Z)"));
    redo->setShortcuts({QKeySequence("Ctrl+Shift+Z"), QKeySequence::Redo});
    bar->addAction(tr("Clear"), this, [this] {
        canvas_->clear();
        canvasParent_ = -1;
    });
    auto sync_undo = [undo, redo, this] {
        undo->setEnabled(canvas_->canUndo());
        redo->setEnabled(canvas_->canRedo());
    };
    sync_undo();
    connect(canvas_, &SketchCanvas::undoStateChanged, this, sync_undo);
    auto* smaller = new QShortcut(QKeySequence("["), this);
    connect(smaller, &QShortcut::activated, this,
            [size] { size->setValue(std::max(1, size->value() * 4 / 5)); });
    auto* bigger = new QShortcut(QKeySequence("]"), this);
    connect(bigger, &QShortcut::activated, this,
            [size] { size->setValue(size->value() * 5 / 4 + 1); });

    auto* w = new QWidget;
    auto* v = new QVBoxLayout(w);
    v->setContentsMargins(0, 0, 0, 0);
    auto* title = new QLabel(tr("<b>Sketch</b> — draw, or drop / paste an image"));
    auto* titleRow = new QHBoxLayout;
    titleRow->addWidget(title, 1);
    titleRow->addWidget(maskButton_);
    v->addLayout(titleRow);
    v->addWidget(bar);
    v->addWidget(canvas_, 1);
    return w;
}

void MainWindow::refreshOverlay() {
    const bool on = overlayBox_->isChecked();
    overlayOpacity_->setEnabled(on);
    result_->setOverlay(on ? canvas_->image() : QImage(), overlayOpacity_->value() / 100.0);
}

QWidget* MainWindow::buildResultPanel() {
    auto* use = new QPushButton(tr("Use as input"));
    use->setToolTip(tr("Put this image on the canvas to draw over, in img2img mode"));
    auto* save = new QPushButton(tr("Save to history"));
    // Keeps the shown result (a live or grid result is not saved yet) in the history.
    auto save_shown = [this] {
        if (shownId_ >= 0 || !history_) {
            return shownId_ >= 0;
        }
        try {
            // The files it was made with, by the hashes cached when they were loaded (a file
            // gone since: the model's name alone).
            A1111Files files;
            try {
                files = app::a1111_files(shownRequest_, worker_->modelPath(), worker_->vaePath());
            } catch (const std::exception&) {
            }
            shownId_ = history_
                           ->add(result_->image(), shownRequest_, -1,
                                 QFileInfo(worker_->modelPath()).fileName(), files)
                           .id;
            historyView_->refresh();
            historyView_->select(shownId_);
            return true;
        } catch (const std::exception& e) {
            showError(QString::fromUtf8(e.what()));
            return false;
        }
    };
    connect(use, &QPushButton::clicked, this, [this, save_shown] {
        if (!result_->image().isNull() && save_shown()) {
            useAsInput(shownId_);
        }
    });
    connect(save, &QPushButton::clicked, this, [this, save_shown] {
        const bool was_saved = shownId_ >= 0;
        if (!result_->image().isNull() && !was_saved && save_shown()) {
            statusBar()->showMessage(tr("Saved as #%1").arg(shownId_), 3000);
        }
    });
    // Comparing the sketch with what became of it: the sketch over the result, half
    // transparent (the slider sets how much), and the two panels swapped left to right.
    auto* overlay = overlayBox_ = new QCheckBox(tr("Sketch over it"));
    overlay->setObjectName("overlaySketch");
    overlay->setToolTip(tr("Draw the sketch over the result, see-through, to compare them"));
    auto* opacity = overlayOpacity_ = new QSlider(Qt::Horizontal);
    opacity->setObjectName("overlayOpacity");
    opacity->setRange(10, 90);
    opacity->setValue(50);
    opacity->setMaximumWidth(90);
    opacity->setEnabled(false);
    opacity->setToolTip(tr("How much of the sketch shows"));
    connect(overlay, &QCheckBox::toggled, this, &MainWindow::refreshOverlay);
    connect(opacity, &QSlider::valueChanged, this, &MainWindow::refreshOverlay);
    connect(canvas_, &SketchCanvas::strokeFinished, this, &MainWindow::refreshOverlay);
    auto* swap = new QToolButton;
    swap->setObjectName("swapSides");
    swap->setText(tr("⇄"));
    swap->setToolTip(tr("Swap the sketch and the result left and right"));
    connect(swap, &QToolButton::clicked, this, [this] {
        auto* splitter = findChild<QSplitter*>("studioSplitter");
        const QList<int> sizes = splitter->sizes();
        splitter->insertWidget(0, splitter->widget(1));
        splitter->setSizes({sizes.value(1), sizes.value(0)});
    });
    auto* header = new QHBoxLayout;
    header->addWidget(new QLabel(tr("<b>Result</b>")));
    header->addStretch();
    header->addWidget(overlay);
    header->addWidget(opacity);
    header->addWidget(swap);

    auto* w = new QWidget;
    auto* v = new QVBoxLayout(w);
    v->setContentsMargins(0, 0, 0, 0);
    v->addLayout(header);
    v->addWidget(result_, 1);
    auto* buttons = new QHBoxLayout;
    buttons->addStretch();
    buttons->addWidget(use);
    buttons->addWidget(save);
    v->addLayout(buttons);
    return w;
}

void MainWindow::buildMenus() {
    auto* file = menuBar()->addMenu(tr("&File"));
    file->addAction(tr("Open image to canvas…"), QKeySequence("Ctrl+Shift+O"), this, [this] {
        const QString path = QFileDialog::getOpenFileName(
            this, tr("Open an image"), QString(), tr("Images (*.png *.jpg *.jpeg *.bmp *.webp)"));
        if (path.isEmpty()) {
            return;
        }
        const QImage image(path);
        if (image.isNull()) {
            showError(tr("%1: cannot read the image").arg(path));
            return;
        }
        canvas_->setPicture(image);
        refreshOverlay();
        canvasParent_ = -1;
    });
    file->addAction(tr("Open PNG parameters…"), this, [this] {
        const QString path = QFileDialog::getOpenFileName(this, tr("Open a PNG's parameters"),
                                                          QString(), "PNG (*.png)");
        if (!path.isEmpty()) {
            openParametersFrom(path);
        }
    });
    file->addSeparator();
    file->addAction(tr("Settings…"), this, &MainWindow::openSettings);
    file->addSeparator();
    file->addAction(tr("&Quit"), QKeySequence::Quit, this, &QWidget::close);

    auto* edit = menuBar()->addMenu(tr("&Edit"));
    edit->addAction(tr("Paste image to canvas"), QKeySequence::Paste, canvas_,
                    &SketchCanvas::pasteFromClipboard);
    edit->addAction(tr("Extend canvas (outpaint)…"), this, &MainWindow::askExtendCanvas);
    edit->addAction(tr("Clear canvas"), this, [this] {
        canvas_->clear();
        canvasParent_ = -1;
    });

    auto* model = menuBar()->addMenu(tr("&Model"));
    model->addAction(tr("&Open model folder…"), QKeySequence::Open, this, [this] {
        const QString dir =
            QFileDialog::getExistingDirectory(this, tr("Open a diffusers model folder"));
        if (!dir.isEmpty()) {
            openModel(dir);
        }
    });
    model->addAction(tr("Open &checkpoint file…"), this, [this] {
        const QString file = QFileDialog::getOpenFileName(
            this, tr("Open a Stable Diffusion checkpoint (SD 1.x, 2.x or SDXL)"), QString(),
            tr("Single-file checkpoints (*.safetensors *.ckpt)"));
        if (!file.isEmpty()) {
            openModel(file);
        }
    });
    recentMenu_ = model->addMenu(tr("Recent"));
    updateRecentMenu();
    model->addSeparator();
    auto* fineTune =
        model->addAction(tr("&Fine-tune on your images…"), this, &MainWindow::showTrainWindow);
    fineTune->setObjectName("fineTuneAction");

    auto* generate = new QAction(tr("Generate"), this);
    generate->setShortcuts({QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")});
    generate->setShortcutContext(Qt::ApplicationShortcut);
    connect(generate, &QAction::triggered, this, [this] { this->generate(); });
    auto* cancel = new QAction(tr("Cancel"), this);
    cancel->setShortcut(QKeySequence(Qt::Key_Escape));
    cancel->setShortcutContext(Qt::ApplicationShortcut);
    connect(cancel, &QAction::triggered, this, &MainWindow::cancel);
    auto* run = menuBar()->addMenu(tr("&Generate"));
    run->addAction(generate);
    run->addAction(cancel);
    auto* left = new QAction(tr("Previous step"), this);
    left->setShortcut(QKeySequence(Qt::Key_Left));
    connect(left, &QAction::triggered, this, [this] { steps_->setCurrent(steps_->current() - 1); });
    auto* right = new QAction(tr("Next step"), this);
    right->setShortcut(QKeySequence(Qt::Key_Right));
    connect(right, &QAction::triggered, this,
            [this] { steps_->setCurrent(steps_->current() + 1); });
    auto* view = menuBar()->addMenu(tr("&View"));
    view->addAction(left);
    view->addAction(right);
    auto* help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("About SD Studio"), this, [this] {
        QMessageBox::about(this, tr("About SD Studio"),
                           tr("<b>SD Studio</b><br>A desktop studio for Stable Diffusion: C++, "
                              "Qt and LibTorch, the same images as diffusers."));
    });
}

void MainWindow::updateRecentMenu() {
    recentMenu_->clear();
    for (const QString& dir : settings_.recent) {
        recentMenu_->addAction(dir, this, [this, dir] { openModel(dir); });
    }
    recentMenu_->setEnabled(!settings_.recent.isEmpty());
}

QString MainWindow::errorText() const {
    return error_->isHidden() ? QString() : error_->property("message").toString();
}

void MainWindow::showError(const QString& text) {
    error_->setProperty("message", text);
    error_->setText(text.toHtmlEscaped() + " &nbsp; <a href=\"dismiss\">" + tr("Dismiss") + "</a>");
    error_->show();
    statusBar()->showMessage(text, 8000);
}

void MainWindow::clearError() {
    error_->clear();
    error_->hide();
}

void MainWindow::updatePromptCounters() {
    if (tokenizerDir_.isEmpty()) {
        return;
    }
    // The embeddings folder's words count as their vectors, as the engine will count them.
    auto tokenizer =
        std::make_shared<ClipTokenizer>(ClipTokenizer::load_folder(tokenizerDir_.toStdString()));
    std::vector<ClipTokenizer::AddedWord> words;
    int32_t next = 1 << 20;  // ids only counted here, never looked up
    for (const auto& file : embedding_files(settings_.embedding_folder.toStdString())) {
        try {
            const auto ti = load_textual_inversion(file);
            ClipTokenizer::AddedWord w{ti.token, {}};
            for (int64_t k = 0; k < ti.vectors.size(0); ++k) {
                w.ids.push_back(next++);
            }
            words.push_back(std::move(w));
        } catch (const std::exception&) {
            // Not an embedding: a generation that names it says why.
        }
    }
    tokenizer->set_added_words(words);
    panel_->setTokenizer(std::move(tokenizer));
}

bool MainWindow::openModel(const QString& dir) {
    try {  // a folder or a single-file checkpoint (read with the configs for its SD version)
        const ModelFolder model =
            ModelFolder::open_any(dir.toStdString(), settings_.singleFileConfig(dir).toStdString());
        tokenizerDir_ = QString::fromStdString(model.tokenizer_dir().string());
        panel_->setModelIsRefiner(model.requires_aesthetics_score());
        panel_->setModelIsGuidanceDistilled(model.guidance_distilled());
        updatePromptCounters();
    } catch (const std::exception& e) {
        showError(tr("Cannot open the model: %1").arg(QString::fromUtf8(e.what())));
        return false;
    }
    clearError();
    worker_->loadModel(dir, settings_.device, settings_.dtype, settings_.singleFileConfig(dir),
                       settings_.vae);
    loading_ = tr("loading %1").arg(QFileInfo(dir).fileName());
    settings_.model = dir;
    settings_.addRecent(dir);
    settings_.save();
    updateRecentMenu();
    updateStatus();
    return true;
}

app::Job MainWindow::makeJob(app::Job::Policy policy) {
    app::Job job;
    job.policy = policy;
    job.request = panel_->request();
    job.decode_every = settings_.decode_every;
    if (job.request.is_img2img()) {
        job.init = canvas_->image();
        job.parent_id = canvasParent_;
        job.request.init_image =
            canvasParent_ >= 0 ? QString("history:%1").arg(canvasParent_).toStdString() : "canvas";
    }
    if (job.request.is_inpaint()) {
        job.mask = canvas_->mask();
    }
    for (const ControlRef& c : job.request.controls) {  // unreadable: the engine says which
        job.controls << controlPicture(c);
    }
    return job;
}

quint64 MainWindow::generate() {
    if (worker_->modelPath().isEmpty() && loading_.isEmpty()) {
        showError(tr("Open a model folder first (Model → Open model folder…)."));
        return 0;
    }
    panel_->rollSeedUnlessLocked();
    app::Job job = makeJob(app::Job::Policy::Fifo);
    if (job.request.is_inpaint() && !canvas_->hasMask()) {
        showError(
            tr("Nothing to inpaint: paint the part to repaint with the canvas's Mask tool "
               "(M) first."));
        return 0;
    }
    try {
        takePromptFiles(job.request);
        job.request.validate();
    } catch (const std::exception& e) {
        showError(QString::fromUtf8(e.what()));
        return 0;
    }
    if (history_) {
        job.save_dir =
            QDir(history_->imagesFolder()).filePath(QDate::currentDate().toString("yyyy-MM-dd"));
    }
    clearError();
    const quint64 id = worker_->submit(job);
    ours_.insert(id);
    updateStatus();
    return id;
}

bool MainWindow::extendCanvas(int left, int top, int right, int bottom) {
    auto up8 = [](int v) { return (std::max(0, v) + 7) / 8 * 8; };
    left = up8(left), top = up8(top), right = up8(right), bottom = up8(bottom);
    const QSize now = canvas_->imageSize();
    const QSize grown(now.width() + left + right, now.height() + top + bottom);
    if (grown.width() > ParameterPanel::kMaxSide || grown.height() > ParameterPanel::kMaxSide) {
        showError(tr("The canvas would be %1×%2; the largest is %3×%3.")
                      .arg(grown.width())
                      .arg(grown.height())
                      .arg(ParameterPanel::kMaxSide));
        return false;
    }
    canvas_->extend(left, top, right, bottom);
    panel_->setImageSize(grown);
    panel_->setMode(ParameterPanel::Mode::Inpaint);
    statusBar()->showMessage(tr("The canvas is %1×%2; the new area is masked: Generate paints it.")
                                 .arg(grown.width())
                                 .arg(grown.height()),
                             5000);
    return true;
}

bool MainWindow::openMask(const QString& path) {
    QImageReader reader(path);
    const QImage image = reader.read();
    if (image.isNull()) {
        showError(tr("%1: cannot read the image: %2").arg(path, reader.errorString()));
        return false;
    }
    canvas_->setMask(image);
    panel_->setMode(ParameterPanel::Mode::Inpaint);
    return true;
}

void MainWindow::askExtendCanvas() {
    QDialog dialog(this);
    dialog.setWindowTitle(tr("Extend canvas"));
    auto* form = new QFormLayout(&dialog);
    form->addRow(
        new QLabel(tr("Pixels to add on each side (multiples of 8); the new area is\n"
                      "masked and Inpaint mode turns on, so Generate paints it.")));
    QSpinBox* sides[4];
    const char* names[4] = {QT_TR_NOOP("Left"), QT_TR_NOOP("Top"), QT_TR_NOOP("Right"),
                            QT_TR_NOOP("Bottom")};
    for (int i = 0; i < 4; ++i) {
        sides[i] = new QSpinBox;
        sides[i]->setRange(0, ParameterPanel::kMaxSide);
        sides[i]->setSingleStep(64);
        sides[i]->setSuffix(tr(" px"));
        sides[i]->setValue(i == 2 ? 128 : 0);
        form->addRow(tr(names[i]), sides[i]);
    }
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
    connect(buttons, &QDialogButtonBox::accepted, &dialog, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, &dialog, &QDialog::reject);
    form->addRow(buttons);
    if (dialog.exec() == QDialog::Accepted) {
        extendCanvas(sides[0]->value(), sides[1]->value(), sides[2]->value(), sides[3]->value());
    }
}

void MainWindow::cancel() {
    worker_->cancelAll();
    grid_->cancel();
}

void MainWindow::scheduleLive() {
    if (panel_->live() && !worker_->modelPath().isEmpty()) {
        liveTimer_->start();
    }
}

void MainWindow::takePromptFiles(GenerationRequest& request) const {
    request.take_lora_tags(settings_.lora_folder.toStdString());
    request.find_embeddings(settings_.embedding_folder.toStdString());
}

void MainWindow::submitLive() {
    app::Job job = makeJob(app::Job::Policy::Live);
    if (job.request.is_inpaint() && !canvas_->hasMask()) {
        return;  // no mask yet: the stroke that paints one regenerates
    }
    try {
        takePromptFiles(job.request);
        job.request.validate();
    } catch (const std::exception&) {
        return;  // a half-typed value: the next change tries again
    }
    ours_.insert(worker_->submit(job));
}

void MainWindow::onStep(const app::StepInfo& s) {
    if (!ours_.contains(s.job)) {
        return;
    }
    steps_->addStep(s.index, s.total, s.decoded.isNull() ? s.preview : s.decoded);
    result_->setImage(s.decoded.isNull() ? s.preview : s.decoded,
                      tr("step %1/%2").arg(s.index + 1).arg(s.total));
    stepIndex_ = s.index + 1;
    stepTotal_ = s.total;
    stepSecondsSum_ += s.seconds;
    updateStatus();
}

void MainWindow::onFinished(const app::JobResult& r) {
    if (!ours_.contains(r.job.id)) {
        return;
    }
    const QString model = QFileInfo(worker_->modelPath()).fileName();
    shownId_ = -1;
    shownRequest_ = app::request_for_image(r.request, 0);
    if (history_ && !r.files.isEmpty()) {
        try {
            for (int i = 0; i < r.files.size(); ++i) {
                const auto e = history_->addFile(r.files[i], app::request_for_image(r.request, i),
                                                 r.job.parent_id, model, r.images.value(i));
                if (i == 0) {
                    shownId_ = e.id;
                }
                lastSaved_ = e.id;
                Q_EMIT historyAdded(e.id);
            }
            historyView_->refresh();
            historyView_->select(shownId_);
        } catch (const std::exception& e) {
            showError(tr("Saving to the history failed: %1").arg(QString::fromUtf8(e.what())));
        }
    }
    if (!r.images.isEmpty()) {
        result_->setImage(r.images.first(), tr("seed %1 · %2 steps · CFG %3 · %4 s")
                                                .arg(r.request.seed)
                                                .arg(r.request.steps)
                                                .arg(r.request.guidance_scale)
                                                .arg(r.seconds, 0, 'f', 1));
    }
    onJobEnded(r.job.id);
}

void MainWindow::onJobEnded(quint64 id) {
    if (!ours_.remove(id)) {
        return;
    }
    if (id == current_) {
        current_ = 0;
        progress_->setValue(0);
    }
    panel_->setBusy(!ours_.isEmpty());
    updateStatus();
    Q_EMIT generationDone(id);
}

void MainWindow::updateStatus() {
    QStringList parts;
    if (!worker_->deviceName().isEmpty()) {
        parts << worker_->deviceName().toUpper() << worker_->dtypeName()
              << QFileInfo(worker_->modelPath()).fileName();
    }
    if (!loading_.isEmpty()) {
        parts << loading_;
    } else if (current_ && stepTotal_ > 0) {
        const double per = stepIndex_ ? stepSecondsSum_ / stepIndex_ : 0;
        parts << tr("step %1/%2").arg(stepIndex_).arg(stepTotal_);
        if (stepIndex_) {
            parts << tr("%1 s left").arg(per * (stepTotal_ - stepIndex_), 0, 'f', 1);
        }
        progress_->setValue(100 * stepIndex_ / stepTotal_);
    }
    const int waiting = worker_->pending();
    if (waiting > 0) {
        parts << tr("%1 queued").arg(waiting);
    }
    if (train_ && train_->worker()->running() && trainTotal_ > 0) {
        parts << tr("fine-tuning %1/%2").arg(trainStep_).arg(trainTotal_);
    }
    statusText_->setText(parts.isEmpty() ? tr("no model") : parts.join(QString::fromUtf8(" · ")));
}

void MainWindow::useAsInput(qint64 id) {
    const auto e = history_ ? history_->get(id) : std::nullopt;
    if (!e) {
        return;
    }
    const QImage image(e->file);
    if (image.isNull()) {
        showError(tr("%1: cannot read the image").arg(e->file));
        return;
    }
    canvas_->setPicture(image);
    refreshOverlay();
    canvasParent_ = id;
    panel_->setImg2img(true);
    tabs_->setCurrentIndex(0);
    statusBar()->showMessage(tr("#%1 is on the canvas: draw over it, then Generate").arg(id), 5000);
}

QImage MainWindow::controlPicture(const ControlRef& control) const {
    return control.image == "canvas" ? canvas_->image()
                                     : QImage(QString::fromStdString(control.image));
}

void MainWindow::showControlPreview(int unit) {
    const GenerationRequest r = panel_->request();
    const std::optional<ControlRef> control =
        unit < panel_->controlUnitCount() ? panel_->controlUnit(unit)->control() : std::nullopt;
    if (!control) {
        return;
    }
    const QImage picture = controlPicture(*control);
    if (picture.isNull()) {
        showError(tr("Cannot read the ControlNet's picture %1")
                      .arg(QString::fromStdString(control->image)));
        return;
    }
    sds::Image image = app::from_qimage(picture);
    const ControlRef c = *control;
    struct Seen {
        sds::Image image;
        QString error;
    };
    auto* watcher = new QFutureWatcher<Seen>(this);
    const quint64 serial = ++previewSerial_;
    connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, serial, unit, c] {
        watcher->deleteLater();
        if (serial != previewSerial_) {
            return;  // a newer preview was asked for
        }
        statusBar()->clearMessage();
        const Seen done = watcher->result();
        if (!done.error.isEmpty()) {
            showError(tr("ControlNet %1's preview: %2").arg(unit + 1).arg(done.error));
            return;
        }
        const sds::Image& seen = done.image;
        auto* dialog = new QDialog(this);
        dialog->setObjectName("controlPreviewDialog");
        dialog->setAttribute(Qt::WA_DeleteOnClose);
        dialog->setWindowTitle(tr("What ControlNet %1 gets: %2")
                                   .arg(unit + 1)
                                   .arg(QString::fromStdString(c.preprocessor)));
        auto* shown = new QLabel;
        shown->setObjectName("controlPreviewImage");
        shown->setPixmap(QPixmap::fromImage(app::to_qimage(seen)));
        // A small picture shown bigger, its pixels kept square and sharp.
        const int zoom = std::max(1, 384 / std::max(seen.width, seen.height));
        shown->setFixedSize(seen.width * zoom, seen.height * zoom);
        shown->setScaledContents(true);
        QString what = QString::fromStdString(c.preprocessor);
        if (c.preprocessor == "canny") {
            what += tr(", thresholds %1 and %2").arg(c.canny_low).arg(c.canny_high);
        } else if (c.preprocessor == "binary") {
            what += c.binary_threshold == 0 || c.binary_threshold == 255
                        ? tr(", Otsu's threshold")
                        : tr(", threshold %1").arg(c.binary_threshold);
        } else if (c.preprocessor == "depth") {
            what += tr(" by %1").arg(QFileInfo(QString::fromStdString(c.depth_model)).fileName());
        }
        auto* caption = new QLabel(tr("%1 at %2 x %3, as the ControlNet gets it")
                                       .arg(what)
                                       .arg(seen.width)
                                       .arg(seen.height));
        auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close);
        connect(buttons, &QDialogButtonBox::rejected, dialog, &QDialog::close);
        auto* layout = new QVBoxLayout(dialog);
        layout->addWidget(caption);
        layout->addWidget(shown);
        layout->addWidget(buttons);
        dialog->show();
    });
    statusBar()->showMessage(tr("ControlNet %1's preview: running %2…")
                                 .arg(unit + 1)
                                 .arg(QString::fromStdString(c.preprocessor)));
    // The picture sized as the pipeline sizes it, then the preprocessor, off this thread; the
    // task holds copies alone, so the window may go before it ends.
    watcher->setFuture(QtConcurrent::run(
        &previewPool_, [image = std::move(image), c, width = r.width, height = r.height]() {
            Seen out;
            try {
                const sds::Image sized = image.width != width || image.height != height
                                             ? sds::resize(image, width, height)
                                             : image;
                out.image = sds::preprocess_control(sized, c);
            } catch (const std::exception& e) {  // a depth model that is not there, ...
                out.error = QString::fromUtf8(e.what());
            }
            return out;
        }));
}

void MainWindow::reuseParameters(qint64 id) {
    const auto e = history_ ? history_->get(id) : std::nullopt;
    if (e) {
        panel_->setRequest(e->request);  // its mode too
        // The picture and the mask it was made from, when they were saved with it.
        const QString init = QString::fromStdString(e->request.init_image);
        if (e->request.is_img2img() && QFileInfo(init).isFile()) {
            const QImage picture(init);
            if (!picture.isNull()) {
                canvas_->setPicture(picture);
                canvasParent_ = e->parent_id;
                refreshOverlay();
            }
        }
        const QString mask = QString::fromStdString(e->request.mask_image);
        if (e->request.is_inpaint() && QFileInfo::exists(mask)) {
            canvas_->setMask(QImage(mask));
        }
        // A ControlNet's image (the canvas it read) back on the canvas, when nothing else is.
        if (!e->request.is_img2img() && !e->request.controls.empty()) {
            const QImage control(QString::fromStdString(e->request.controls.front().image));
            if (!control.isNull()) {
                canvas_->setPicture(control);
                canvasParent_ = -1;
                refreshOverlay();
            }
        }
    }
}

void MainWindow::showEntry(qint64 id) {
    const auto e = history_ ? history_->get(id) : std::nullopt;
    if (!e) {
        return;
    }
    const QImage image(e->file);
    shownId_ = id;
    shownRequest_ = e->request;
    result_->setImage(image, tr("#%1 · seed %2 · %3 steps · CFG %4")
                                 .arg(id)
                                 .arg(e->request.seed)
                                 .arg(e->request.steps)
                                 .arg(e->request.guidance_scale));
}

bool MainWindow::openParametersFrom(const QString& png) {
    try {
        const GenerationRequest r = app::read_request(png);
        panel_->setRequest(r);
        panel_->setImg2img(false);
        result_->setImage(QImage(png), QFileInfo(png).fileName());
        shownId_ = -1;
        shownRequest_ = r;
        return true;
    } catch (const std::exception& e) {
        showError(QString::fromUtf8(e.what()));
        return false;
    }
}

void MainWindow::openSettings() {
    QDialog dialog(this);
    dialog.setWindowTitle(tr("Settings"));
    auto* model = new QComboBox;
    model->setEditable(true);
    model->addItems(settings_.recent);
    model->setCurrentText(settings_.model);
    auto* browse = new QPushButton(tr("Browse…"));
    connect(browse, &QPushButton::clicked, &dialog, [&] {
        const QString dir = QFileDialog::getExistingDirectory(&dialog, tr("Model folder"));
        if (!dir.isEmpty()) {
            model->setCurrentText(dir);
        }
    });
    // A path typed or chosen with Browse…: a folder, or a file when `filter` is set.
    auto pathRow = [&dialog](const QString& value, const char* name, const QString& placeholder,
                             const QString& tip, const QString& title, const QString& filter = {}) {
        auto* edit = new QLineEdit(value);
        edit->setObjectName(name);
        edit->setPlaceholderText(placeholder);
        edit->setToolTip(tip);
        auto* browse = new QPushButton(tr("Browse…"));
        connect(browse, &QPushButton::clicked, &dialog, [&dialog, edit, title, filter] {
            const QString path =
                filter.isEmpty() ? QFileDialog::getExistingDirectory(&dialog, title)
                                 : QFileDialog::getOpenFileName(&dialog, title, QString(), filter);
            if (!path.isEmpty()) {
                edit->setText(path);
            }
        });
        auto* row = new QHBoxLayout;
        row->addWidget(edit, 1);
        row->addWidget(browse);
        return std::pair{edit, row};
    };
    const auto [singleConfig, configRow] =
        pathRow(settings_.single_file_config, "singleFileConfig",
                tr("SD 1.5's, SD 2.1's or SDXL's, by the file (bundled)"),
                tr("A diffusers folder (weights optional) whose configs and tokenizer single-file "
                   "checkpoints are read with"),
                tr("Config folder"));
    const auto [loraFolder, loraRow] =
        pathRow(settings_.lora_folder, "loraFolder", tr("none"),
                tr("Where A1111's <lora:NAME:WEIGHT> prompt tags find NAME.safetensors "
                   "(in the folder or below)"),
                tr("LoRA folder"));
    const auto [vae, vaeRow] =
        pathRow(settings_.vae, "vae", tr("the model's own"),
                tr("A VAE to use instead of the model's, as A1111's SD VAE: a file "
                   "(vae-ft-mse-840000-ema-pruned.safetensors and the like) or a diffusers "
                   "VAE folder"),
                tr("A VAE"), tr("VAE files (*.safetensors *.ckpt *.pt *.bin)"));
    const auto [embeddingFolder, embeddingRow] =
        pathRow(settings_.embedding_folder, "embeddingFolder", tr("none"),
                tr("Textual inversion embeddings (.pt, .safetensors): a prompt word that is a "
                   "file's name uses that file, as in A1111's embeddings folder"),
                tr("Embeddings folder"));
    auto* device = new QComboBox;
    device->addItems({"auto", "cpu", "cuda"});
    device->setCurrentText(settings_.device);
    auto* dtype = new QComboBox;
    dtype->addItems({"auto", "fp32", "bf16", "fp16"});
    dtype->setCurrentText(settings_.dtype);
    auto* folder = new QLineEdit(settings_.dataFolder());
    auto* decode = new QSpinBox;
    decode->setRange(0, 100);
    decode->setSpecialValueText(tr("never (latent preview only)"));
    decode->setValue(settings_.decode_every);
    auto* modelRow = new QHBoxLayout;
    modelRow->addWidget(model, 1);
    modelRow->addWidget(browse);
    auto* form = new QFormLayout(&dialog);
    form->addRow(tr("Model folder or checkpoint"), modelRow);
    form->addRow(tr("Configs for single-file checkpoints"), configRow);
    form->addRow(tr("VAE"), vaeRow);
    form->addRow(tr("LoRA folder (<lora:…> tags)"), loraRow);
    form->addRow(tr("Embeddings folder"), embeddingRow);
    form->addRow(tr("Device"), device);
    form->addRow(tr("Precision"), dtype);
    form->addRow(tr("History and images folder"), folder);
    form->addRow(tr("Full VAE decode every N steps"), decode);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
    form->addRow(buttons);
    connect(buttons, &QDialogButtonBox::accepted, &dialog, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, &dialog, &QDialog::reject);
    if (dialog.exec() != QDialog::Accepted) {
        return;
    }
    const bool reload = device->currentText() != settings_.device ||
                        dtype->currentText() != settings_.dtype ||
                        model->currentText() != settings_.model || vae->text() != settings_.vae ||
                        (singleConfig->text() != settings_.single_file_config &&
                         QFileInfo(model->currentText()).isFile());
    settings_.single_file_config = singleConfig->text();
    settings_.vae = vae->text();
    settings_.lora_folder = loraFolder->text();
    if (embeddingFolder->text() != settings_.embedding_folder) {
        settings_.embedding_folder = embeddingFolder->text();
        updatePromptCounters();
    }
    panel_->setNetworkFolders(settings_.lora_folder, settings_.embedding_folder);
    settings_.device = device->currentText();
    settings_.dtype = dtype->currentText();
    settings_.decode_every = decode->value();
    if (folder->text() != settings_.dataFolder()) {
        try {
            history_ = std::make_unique<app::HistoryStore>(folder->text());
            settings_.data_folder = folder->text();
            historyView_->setStore(history_.get());
            panel_->setStylesFile(settings_.stylesFile());
        } catch (const std::exception& e) {
            showError(QString::fromUtf8(e.what()));
        }
    }
    settings_.save();
    if (reload && !model->currentText().isEmpty()) {
        openModel(model->currentText());
    }
}

TrainWindow* MainWindow::trainWindow() {
    if (!train_) {
        train_ = new TrainWindow(this);
        connect(train_, &TrainWindow::loraRequested, this, [this](const QString& file) {
            panel_->addLora({file.toStdString(), 1.0});
            statusBar()->showMessage(tr("%1 is in the LoRA list").arg(file), 5000);
            raise();
            activateWindow();
        });
        connect(train_, &TrainWindow::openModelRequested, this, [this](const QString& dir) {
            if (openModel(dir)) {
                raise();
                activateWindow();
            }
        });
        connect(train_->worker(), &app::TrainingWorker::progress, this,
                [this](const QString&, int step, int total) {
                    trainStep_ = step;
                    trainTotal_ = total;
                    updateStatus();
                });
        connect(train_, &TrainWindow::runEnded, this, [this] {
            trainTotal_ = 0;
            updateStatus();
        });
    }
    return train_;
}

void MainWindow::showTrainWindow() {
    TrainWindow* w = trainWindow();
    const QString model = worker_->modelPath();
    w->setBaseModel(model, settings_.singleFileConfig(model), worker_->nativeSize());
    w->setDevice(settings_.device);
    w->setModelsFolder(QDir(settings_.dataFolder()).filePath("models"));
    w->show();
    w->raise();
    w->activateWindow();
}

void MainWindow::closeEvent(QCloseEvent* event) {
    settings_.geometry = saveGeometry();
    settings_.window_state = saveState();
    settings_.save();
    event->accept();
}

}  // namespace sds::ui
