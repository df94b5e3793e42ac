#pragma once
// The studio's engine room: one InferenceWorker owns the loaded pipeline on its own thread, so
// the model stays loaded between jobs and the GUI thread never runs model code or waits on it.
//
// Every public method may be called from any thread and returns at once; results arrive as
// signals emitted from the worker thread (queued to receivers on other threads).
//
// Queue policies: `Fifo` jobs (Generate clicks, grid cells) run in the order they came;
// a `Live` job (a slider moved, a stroke ended) replaces any waiting Live job and cancels a
// Live job in flight at its next step: the newest wins.
#include <QImage>
#include <QList>
#include <QObject>
#include <QString>
#include <QStringList>

#include <memory>

#include "sds/generation_request.h"
#include "sds/model_folder.h"

namespace sds::app {

struct Job {
    enum class Policy { Fifo, Live };
    quint64 id = 0;  // set by submit()
    GenerationRequest request;
    QImage init;  // img2img: the init image (request.init_image names where it came from)
    QImage mask;  // inpainting: white repaints, black keeps (request.mask_image names it; with
                  // save_dir set it is saved there and request.mask_image becomes its file)
    // The conditioning image of each of request.controls, in order (with save_dir set each is
    // saved there and its request.controls entry names the file).
    QList<QImage> controls;
    Policy policy = Policy::Fifo;
    int decode_every = 0;   // also decode the latents with the VAE every N steps (0: never)
    QString save_dir;       // when set, the images are written there as PNGs with metadata
    QString tag;            // free for the caller (e.g. a grid cell "3,1")
    qint64 parent_id = -1;  // the history entry this job's init image came from
};

struct StepInfo {
    quint64 job = 0;
    int index = 0;  // 0-based
    int total = 0;
    double timestep = 0;
    double seconds = 0;  // this step's wall time
    QImage preview;      // from the predicted x0, latent size (linear latent -> RGB)
    QImage decoded;      // a full VAE decode of the predicted x0, when due; else null
};

struct JobResult {
    Job job;
    GenerationRequest request;  // with the size resolved
    QList<QImage> images;       // image i: seed + i
    QStringList files;          // when job.save_dir was set, the PNG of each image
    QList<double> step_seconds;
    double seconds = 0;
    A1111Files named;  // the model's and the request's files, as the PNGs name them
};

class InferenceWorker : public QObject {
    Q_OBJECT
  public:
    InferenceWorker();
    ~InferenceWorker() override;  // cancels what runs and joins the thread

    // Loads (or replaces) the model, a diffusers folder or a single-file checkpoint, on the
    // worker thread; earlier waiting jobs still run on the model they were queued for.
    // `single_file_config`: the configs a single file opens with (empty: the bundled SD 1.5
    // or SD 2.1 configs, by the file).
    // `vae`: a VAE instead of the model's (Pipeline::Options::vae), empty for its own.
    void loadModel(const QString& dir, const QString& device = "auto",
                   const QString& dtype = "auto", const QString& single_file_config = {},
                   const QString& vae = {});
    quint64 submit(Job job);
    void cancelAll();          // empties the queue and cancels the job in flight
    void cancel(quint64 job);  // one job, waiting or in flight
    int pending() const;       // jobs waiting, not counting the one in flight
    bool busy() const;         // a job or a load in flight
    // Model facts (empty until a model loaded).
    QString modelPath() const;
    QString vaePath() const;  // the VAE loaded instead of the model's; empty for its own
    QString deviceName() const;
    QString dtypeName() const;
    int nativeSize() const;
    ModelHints hints() const;  // the model's sdstudio.json (ModelHints)

  Q_SIGNALS:
    void modelLoading(const QString& what, double fraction);
    void modelLoaded(const QString& dir);
    void modelFailed(const QString& dir, const QString& message);
    void jobStarted(quint64 id, int total_steps);
    void stepDone(const sds::app::StepInfo& step);
    void jobFinished(const sds::app::JobResult& result);
    void jobCancelled(quint64 id);
    void jobFailed(quint64 id, const QString& message);
    void queueChanged(int pending);

  private:
    struct Impl;
    std::unique_ptr<Impl> d;
};

}  // namespace sds::app

Q_DECLARE_METATYPE(sds::app::StepInfo)
Q_DECLARE_METATYPE(sds::app::JobResult)
