#include "training.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QJsonDocument>
#include <QJsonObject>

#include <atomic>
#include <mutex>
#include <thread>

#include "image_io.h"
#include "sds/error.h"
#include "sds/pipeline.h"  // sds::Cancelled

namespace sds::app {

TrainingFolder scan_training_folder(const QString& dir) {
    const QDir d(dir);
    if (dir.isEmpty() || !d.exists()) {
        throw FileError(dir.toStdString() + ": no such folder");
    }
    TrainingFolder out{dir, {}, {}};
    const auto files =
        d.entryInfoList({"*.png", "*.jpg", "*.jpeg", "*.webp", "*.bmp"}, QDir::Files, QDir::Name);
    for (const QFileInfo& f : files) {
        const QString txt = f.dir().filePath(f.completeBaseName() + ".txt");
        QFile caption(txt);
        if (!caption.open(QIODevice::ReadOnly)) {
            throw FileError(f.filePath().toStdString() + ": no caption file beside it (" +
                            txt.toStdString() + ")");
        }
        out.images << f.filePath();
        out.captions << QString::fromUtf8(caption.readAll()).trimmed();
    }
    if (out.images.isEmpty()) {
        throw FileError(dir.toStdString() + ": no images (png, jpg, webp, bmp) in the folder");
    }
    return out;
}

std::vector<TrainExample> load_training_folder(const QString& dir) {
    const TrainingFolder folder = scan_training_folder(dir);
    std::vector<TrainExample> out;
    out.reserve(folder.images.size());
    for (qsizetype i = 0; i < folder.images.size(); ++i) {
        out.push_back({load_image(folder.images[i]), folder.captions[i].toStdString()});
    }
    return out;
}

TrainingCheckpoint read_training_checkpoint(const QString& out_dir) {
    QFile f(QDir(out_dir).filePath("checkpoint/state.json"));
    if (out_dir.isEmpty() || !f.open(QIODevice::ReadOnly)) {
        return {};
    }
    const QJsonObject o = QJsonDocument::fromJson(f.readAll()).object();
    return {o.value("phase").toString(), o.value("step").toInt()};
}

struct TrainingWorker::Impl {
    mutable std::mutex mutex;
    std::thread thread;
    std::atomic<bool> running{false};
    std::atomic<bool> stop{false};
};

TrainingWorker::TrainingWorker() : d(std::make_unique<Impl>()) {}

TrainingWorker::~TrainingWorker() {
    d->stop = true;
    std::lock_guard lock(d->mutex);
    if (d->thread.joinable()) {
        d->thread.join();
    }
}

bool TrainingWorker::start(const QString& data_dir, const TrainOptions& options) {
    std::lock_guard lock(d->mutex);
    if (d->running) {
        return false;
    }
    if (d->thread.joinable()) {
        d->thread.join();  // the last run has ended; its thread is only finishing
    }
    d->running = true;
    d->stop = false;
    d->thread = std::thread([this, data_dir, options] {
        try {
            const auto examples = load_training_folder(data_dir);
            Q_EMIT started(static_cast<int>(examples.size()));
            train(
                examples, options,
                [this](const TrainProgress& p) {
                    Q_EMIT progress(QString::fromStdString(p.phase), p.step, p.total, p.loss,
                                    p.seconds_left);
                },
                &d->stop);
            d->running = false;
            Q_EMIT finished(QString::fromStdString(options.out_dir.string()));
        } catch (const Cancelled&) {
            d->running = false;
            const TrainingCheckpoint c =
                read_training_checkpoint(QString::fromStdString(options.out_dir.string()));
            Q_EMIT stopped(c.phase, c.step);
        } catch (const std::exception& e) {
            d->running = false;
            Q_EMIT failed(QString::fromUtf8(e.what()));
        }
    });
    return true;
}

void TrainingWorker::stop() {
    d->stop = true;
}

bool TrainingWorker::running() const {
    return d->running;
}

}  // namespace sds::app
