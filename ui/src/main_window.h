#pragma once
// The studio's main window: parameters (left dock), the sketch canvas and the result side by
// side (Studio tab) or the X/Y grid (Compare tab), the step strip (bottom dock), the history
// (right dock), and a status bar with device, model, progress and time left.
//
// The window never runs model code: an InferenceWorker on its own thread owns the pipeline;
// the window sends it jobs and shows what comes back.
#include <QMainWindow>
#include <QSet>
#include <QThreadPool>

#include <memory>

#include "history_store.h"
#include "inference_worker.h"
#include "settings.h"

class QCheckBox;
class QLabel;
class QProgressBar;
class QSlider;
class QTabWidget;
class QTimer;
class QToolButton;

namespace sds::ui {

class GridView;
class HistoryView;
class ImageView;
class ParameterPanel;
class SketchCanvas;
class StepStrip;
class TrainWindow;

class MainWindow : public QMainWindow {
    Q_OBJECT
  public:
    // `settings` are the user's (StudioSettings::load()); tests pass their own.
    explicit MainWindow(const app::StudioSettings& settings, QWidget* parent = nullptr);
    ~MainWindow() override;

    // Checks the folder and loads it on the worker; on error shows the message and keeps the
    // model that was loaded.
    bool openModel(const QString& dir);
    // Queues a generation from the panel (Generate / Ctrl+Enter). Returns the job id, 0 when
    // nothing was queued (the message says why).
    quint64 generate();
    // Outpainting: the canvas grows by the margins (multiples of 8, up to the largest size the
    // panel takes), the new area masked, Inpaint mode on. False (and a message) when too big.
    bool extendCanvas(int left, int top, int right, int bottom);
    // A mask image onto the canvas (white repaints), Inpaint mode on; false and a message for a
    // file that cannot be read.
    bool openMask(const QString& path);
    void cancel();
    // Puts a history image on the canvas as the picture to draw over, in img2img mode, and
    // records it as the parent of what is generated from it.
    void useAsInput(qint64 history_id);
    void reuseParameters(qint64 history_id);
    void showEntry(qint64 history_id);
    bool openParametersFrom(const QString& png);  // "Open PNG": our JSON or A1111 text
    // The prompt boxes' token counters: the model's tokenizer with the embeddings folder's words
    // (n vectors count n tokens). Done when a model opens and when the folder changes.
    void updatePromptCounters();
    // Model → Fine-tune: the training window, its base the model open here. Closing the studio
    // stops a run in it after its step, with a checkpoint that the next Start continues.
    void showTrainWindow();
    // A ControlNet unit's Preview: a window with what its ControlNet gets of its picture (the
    // canvas, or its file), at the request's size, through its preprocessor
    // (sds::preprocess_control). The preprocessor runs on a thread of its own: the window
    // (controlPreviewDialog) opens when it is done, the status bar says it is running, and an
    // error (a depth folder that is not there, ...) is shown as the window's error.
    void showControlPreview(int unit = 0);
    // A ControlNet's picture: the canvas, or the file it names (null where unreadable).
    QImage controlPicture(const ControlRef& control) const;

    // For tests and screenshots.
    app::InferenceWorker* worker() const { return worker_.get(); }
    app::HistoryStore* history() const { return history_.get(); }
    ParameterPanel* panel() const { return panel_; }
    SketchCanvas* canvas() const { return canvas_; }
    StepStrip* steps() const { return steps_; }
    ImageView* result() const { return result_; }
    HistoryView* historyView() const { return historyView_; }
    GridView* grid() const { return grid_; }
    TrainWindow* trainWindow();  // made on first use
    QTabWidget* tabs() const { return tabs_; }
    QString errorText() const;
    qint64 canvasParent() const { return canvasParent_; }
    qint64 lastSavedId() const { return lastSaved_; }

  Q_SIGNALS:
    void generationDone(quint64 job);  // finished, cancelled or failed
    void historyAdded(qint64 id);

  protected:
    void closeEvent(QCloseEvent* event) override;

  private:
    void askExtendCanvas();  // the Extend canvas dialog
    void buildMenus();
    QWidget* buildCanvasPanel();
    QWidget* buildResultPanel();
    void refreshOverlay();  // the sketch over the result when asked for, at its opacity
    void showError(const QString& text);
    void clearError();
    // The files a request's prompts name: A1111's <lora:…> tags (taken out) from the LoRA
    // folder, and the embeddings whose names are prompt words from the embeddings folder.
    void takePromptFiles(GenerationRequest& request) const;
    void scheduleLive();
    void submitLive();
    void onStep(const app::StepInfo& s);
    void onFinished(const app::JobResult& r);
    void onJobEnded(quint64 id);
    void updateStatus();
    void openSettings();
    void updateRecentMenu();

    app::Job makeJob(app::Job::Policy policy);

    app::StudioSettings settings_;
    std::unique_ptr<app::InferenceWorker> worker_;
    std::unique_ptr<app::HistoryStore> history_;
    ParameterPanel* panel_;
    SketchCanvas* canvas_;
    ImageView* result_;
    StepStrip* steps_;
    HistoryView* historyView_;
    GridView* grid_;
    QTabWidget* tabs_;
    QLabel* error_;
    QLabel* statusText_;
    QProgressBar* progress_;
    QTimer* liveTimer_;
    QMenu* recentMenu_ = nullptr;
    QToolButton* colourButton_ = nullptr;
    QToolButton* maskButton_ = nullptr;  // the canvas tools work on the inpainting mask
    TrainWindow* train_ = nullptr;
    int trainStep_ = 0, trainTotal_ = 0;  // of a fine-tuning run, for the status bar

    QSet<quint64> ours_;   // jobs this window queued (the grid queues its own)
    quint64 current_ = 0;  // the job whose steps are shown
    int stepIndex_ = 0, stepTotal_ = 0;
    QCheckBox* overlayBox_ = nullptr;  // the sketch drawn over the result
    QSlider* overlayOpacity_ = nullptr;
    QString tokenizerDir_;  // of the model opened last
    QString hintedModel_;   // the model whose suggested settings were applied
    int nativeSize_ = 0;    // of the model loaded last
    double stepSecondsSum_ = 0;
    QString loading_;
    qint64 canvasParent_ = -1;  // history id of the picture on the canvas
    qint64 shownId_ = -1;       // history id of the image in the result view (-1: unsaved)
    qint64 lastSaved_ = -1;
    GenerationRequest shownRequest_;
    // ControlNet previews are made here, off the GUI thread (a depth model takes a while); the
    // newest one asked for is shown, an older one still running is dropped when it ends.
    quint64 previewSerial_ = 0;
    QThreadPool previewPool_;  // last: waited for before anything above goes
};

}  // namespace sds::ui
