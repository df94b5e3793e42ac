#pragma once
// Training data folders and the studio's training worker.
//
// A training folder holds images (png, jpg, jpeg, webp, bmp) with a caption beside each, in a
// .txt of the same name (cat.png + cat.txt), as kohya-ss and A1111's trainers read them.
//
// TrainingWorker runs sds::train on its own thread, one run at a time, so the window that started
// it stays responsive; progress and the end arrive as signals (queued to receivers on other
// threads). Stopping writes a checkpoint first, so the same run started again continues from it.
#include <QObject>
#include <QString>
#include <QStringList>

#include <memory>
#include <vector>

#include "sds/train.h"

namespace sds::app {

struct TrainingFolder {
    QString dir;
    QStringList images;    // the image files, sorted by name
    QStringList captions;  // caption i is the text of image i's .txt, trimmed
};

// Lists the folder's images with their captions without decoding the images; throws
// sds::FileError naming the folder (missing, no images) or the image without a caption.
TrainingFolder scan_training_folder(const QString& dir);
// The folder's examples, images decoded; throws sds::FileError naming the file.
std::vector<TrainExample> load_training_folder(const QString& dir);

// What a run left in `out_dir`: the phase and step of the checkpoint there ("", 0: none).
struct TrainingCheckpoint {
    QString phase;
    int step = 0;
};
TrainingCheckpoint read_training_checkpoint(const QString& out_dir);

class TrainingWorker : public QObject {
    Q_OBJECT
  public:
    TrainingWorker();
    ~TrainingWorker() override;  // stops a run (its checkpoint written) and waits for it

    // Starts a run on the images of `data_dir`; false when one is running already.
    bool start(const QString& data_dir, const TrainOptions& options);
    void stop();  // asks the run to stop after its step; `stopped` follows
    bool running() const;

  Q_SIGNALS:
    void started(int images);
    // After every step: the phase ("vae" or "unet"), the steps done of `total`, the running mean
    // of the loss, the seconds left.
    void progress(const QString& phase, int step, int total, double loss, double seconds_left);
    void finished(const QString& out_dir);
    void stopped(const QString& phase, int step);  // the checkpoint was saved
    void failed(const QString& message);

  private:
    struct Impl;
    std::unique_ptr<Impl> d;
};

}  // namespace sds::app
