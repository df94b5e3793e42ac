#include "inference_worker.h"

#include <QCryptographicHash>
#include <QDateTime>
#include <QDir>
#include <QFileInfo>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "file_hashes.h"
#include "image_io.h"
#include "sds/pipeline.h"
#include "settings.h"

namespace sds::app {

namespace {
double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Writes a generation's input picture (its init image or mask) as `<content hash>-<kind>.png`
// in `dir`, unless that file is there already; returns its path.
QString save_input(const QImage& image, const QString& dir, const char* kind) {
    const QImage rgb = image.convertToFormat(QImage::Format_RGB888);
    QCryptographicHash hash(QCryptographicHash::Sha256);
    hash.addData(QByteArray::number(rgb.width()) + "x" + QByteArray::number(rgb.height()));
    for (int y = 0; y < rgb.height(); ++y) {
        hash.addData(
            QByteArrayView(reinterpret_cast<const char*>(rgb.constScanLine(y)), rgb.width() * 3));
    }
    const QString file =
        QDir(dir).filePath(QString("%1-%2.png").arg(hash.result().toHex().left(16), kind));
    if (!QFileInfo::exists(file)) {
        save_png(file, rgb, {});
    }
    return file;
}

struct LoadTask {
    QString dir, device, dtype, single_file_config, vae;
};
}  // namespace

struct InferenceWorker::Impl {
    InferenceWorker* q = nullptr;
    mutable std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::variant<LoadTask, Job>> queue;
    bool stopping = false;
    quint64 next_id = 1;
    // The task in flight.
    bool running = false;
    quint64 running_id = 0;
    Job::Policy running_policy = Job::Policy::Fifo;
    std::atomic<bool> cancel_running{false};
    // Model facts, read from any thread.
    QString model_path, vae_path, device_name, dtype_name;
    int native_size = 0;
    ModelHints hints;
    // Worker-thread only.
    std::optional<Pipeline> pipeline;
    std::thread thread;

    void loop();
    void run_load(const LoadTask& t);
    void run_job(const Job& job);
    int pending_locked() const {
        int n = 0;
        for (const auto& t : queue) {
            n += std::holds_alternative<Job>(t);
        }
        return n;
    }
};

InferenceWorker::InferenceWorker() : d(std::make_unique<Impl>()) {
    qRegisterMetaType<sds::app::StepInfo>();
    qRegisterMetaType<sds::app::JobResult>();
    d->q = this;
    d->thread = std::thread([this] { d->loop(); });
}

InferenceWorker::~InferenceWorker() {
    {
        std::lock_guard lock(d->mutex);
        d->stopping = true;
        d->queue.clear();
        d->cancel_running = true;
    }
    d->wake.notify_all();
    d->thread.join();
}

void InferenceWorker::loadModel(const QString& dir, const QString& device, const QString& dtype,
                                const QString& single_file_config, const QString& vae) {
    {
        std::lock_guard lock(d->mutex);
        d->queue.push_back(LoadTask{
            dir, device, dtype,
            single_file_config.isEmpty() ? single_file_config_folder(dir) : single_file_config,
            vae});
    }
    d->wake.notify_all();
}

quint64 InferenceWorker::submit(Job job) {
    int pending = 0;
    {
        std::lock_guard lock(d->mutex);
        job.id = d->next_id++;
        if (job.policy == Job::Policy::Live) {
            std::erase_if(d->queue, [](const auto& t) {
                return std::holds_alternative<Job>(t) &&
                       std::get<Job>(t).policy == Job::Policy::Live;
            });
            if (d->running && d->running_policy == Job::Policy::Live) {
                d->cancel_running = true;
            }
        }
        d->queue.push_back(job);
        pending = d->pending_locked();
    }
    d->wake.notify_all();
    Q_EMIT queueChanged(pending);
    return job.id;
}

void InferenceWorker::cancelAll() {
    {
        std::lock_guard lock(d->mutex);
        std::erase_if(d->queue, [](const auto& t) { return std::holds_alternative<Job>(t); });
        if (d->running) {
            d->cancel_running = true;
        }
    }
    Q_EMIT queueChanged(0);
}

void InferenceWorker::cancel(quint64 id) {
    int pending = 0;
    {
        std::lock_guard lock(d->mutex);
        std::erase_if(d->queue, [id](const auto& t) {
            return std::holds_alternative<Job>(t) && std::get<Job>(t).id == id;
        });
        if (d->running && d->running_id == id) {
            d->cancel_running = true;
        }
        pending = d->pending_locked();
    }
    Q_EMIT queueChanged(pending);
}

int InferenceWorker::pending() const {
    std::lock_guard lock(d->mutex);
    return d->pending_locked();
}
bool InferenceWorker::busy() const {
    std::lock_guard lock(d->mutex);
    return d->running;
}
QString InferenceWorker::modelPath() const {
    std::lock_guard lock(d->mutex);
    return d->model_path;
}
QString InferenceWorker::vaePath() const {
    std::lock_guard lock(d->mutex);
    return d->vae_path;
}
QString InferenceWorker::deviceName() const {
    std::lock_guard lock(d->mutex);
    return d->device_name;
}
QString InferenceWorker::dtypeName() const {
    std::lock_guard lock(d->mutex);
    return d->dtype_name;
}
int InferenceWorker::nativeSize() const {
    std::lock_guard lock(d->mutex);
    return d->native_size;
}
ModelHints InferenceWorker::hints() const {
    std::lock_guard lock(d->mutex);
    return d->hints;
}

void InferenceWorker::Impl::loop() {
    for (;;) {
        std::variant<LoadTask, Job> task;
        {
            std::unique_lock lock(mutex);
            wake.wait(lock, [&] { return stopping || !queue.empty(); });
            if (stopping) {
                break;
            }
            task = std::move(queue.front());
            queue.pop_front();
            running = true;
            cancel_running = false;
            if (const Job* j = std::get_if<Job>(&task)) {
                running_id = j->id;
                running_policy = j->policy;
            } else {
                running_id = 0;
                running_policy = Job::Policy::Fifo;
            }
        }
        if (const Job* j = std::get_if<Job>(&task)) {
            Q_EMIT q->queueChanged(q->pending());
            run_job(*j);
        } else {
            run_load(std::get<LoadTask>(task));
        }
        std::lock_guard lock(mutex);
        running = false;
    }
    pipeline.reset();
}

void InferenceWorker::Impl::run_load(const LoadTask& t) {
    try {
        const c10::Device device = parse_device(t.device.toStdString());
        const c10::ScalarType dtype = parse_dtype(t.dtype.toStdString(), device);
        const Pipeline::Options options{.device = device,
                                        .dtype = dtype,
                                        .single_file_config = t.single_file_config.toStdString(),
                                        .vae = t.vae.toStdString()};
        Pipeline p =
            Pipeline::load(t.dir.toStdString(), options, [this](const std::string& what, double f) {
                Q_EMIT q->modelLoading(QString::fromStdString(what), f);
            });
        // A checkpoint's hash for the images' A1111 text, read once (then cached): A1111 does
        // the same on a file's first load. Without it the text names the file alone.
        for (const QString& file : {t.dir, t.vae}) {
            if (QFileInfo(file).isFile()) {
                Q_EMIT q->modelLoading(
                    QStringLiteral("hashing %1 (once)").arg(QFileInfo(file).fileName()), 1.0);
                try {
                    file_sha256(file);
                } catch (const std::exception&) {
                }
            }
        }
        pipeline.reset();  // free the old model before moving the new one in
        pipeline.emplace(std::move(p));
        {
            std::lock_guard lock(mutex);
            model_path = t.dir;
            vae_path = t.vae;
            device_name = QString::fromStdString(device.str());
            dtype_name = dtype == at::kHalf ? "fp16" : dtype == at::kBFloat16 ? "bf16" : "fp32";
            native_size = pipeline->native_size();
            hints = pipeline->model().hints();
        }
        Q_EMIT q->modelLoaded(t.dir);
    } catch (const std::exception& e) {
        Q_EMIT q->modelFailed(t.dir, QString::fromUtf8(e.what()));
    }
}

void InferenceWorker::Impl::run_job(const Job& job) {
    if (!pipeline) {
        Q_EMIT q->jobFailed(job.id, "no model is loaded: open a model folder first");
        return;
    }
    try {
        GenerationRequest r = job.request;
        Image init;
        if (r.is_img2img()) {
            if (job.init.isNull()) {
                throw Error("img2img needs an init image");
            }
            init = from_qimage(job.init);
        }
        Image mask;
        if (r.is_inpaint()) {
            if (job.mask.isNull()) {
                throw Error("inpainting needs a mask");
            }
            mask = from_qimage(job.mask);
        }
        std::vector<Image> controls;
        for (const QImage& c : job.controls) {
            controls.push_back(from_qimage(c));
        }
        r.width = r.width ? r.width : (init.empty() ? pipeline->native_size() : init.width / 8 * 8);
        r.height =
            r.height ? r.height : (init.empty() ? pipeline->native_size() : init.height / 8 * 8);
        r.validate();
        JobResult result;
        result.job = job;
        // The files the PNGs name, found before the generation (a file that cannot be read
        // fails the job, not the saving of its images).
        result.named = a1111_files(r, model_path, vae_path);
        const double start = now_s();
        double last = start;
        Q_EMIT q->jobStarted(job.id, r.steps);
        auto observer = [&](const StepEvent& e) {
            StepInfo s;
            s.job = job.id;
            s.index = e.index;
            s.total = e.total;
            s.timestep = e.timestep;
            s.preview = to_qimage(pipeline->preview(e.pred_x0.slice(0, 0, 1)).front());
            if (job.decode_every > 0 &&
                ((e.index + 1) % job.decode_every == 0 || e.index + 1 == e.total)) {
                s.decoded = to_qimage(pipeline->decode(e.pred_x0.slice(0, 0, 1)).front());
            }
            const double t = now_s();
            s.seconds = t - last;
            last = t;
            result.step_seconds << s.seconds;
            Q_EMIT q->stepDone(s);
        };
        GenerationResult g =
            pipeline->generate(r, init.empty() ? nullptr : &init, mask.empty() ? nullptr : &mask,
                               observer, &cancel_running, controls);
        for (const Image& im : g.images) {
            result.images << to_qimage(im);
        }
        if (!job.save_dir.isEmpty()) {
            QDir().mkpath(job.save_dir);
            const QString stamp = QDateTime::currentDateTime().toString("yyyyMMdd-HHmmss");
            // The init image and the mask are kept beside the images and named in their
            // parameters, so the generation can be made again (Reuse parameters puts them back
            // on the canvas). Named by their content: generations from one sketch share it.
            if (g.request.is_img2img()) {
                g.request.init_image = save_input(job.init, job.save_dir, "init").toStdString();
            }
            if (g.request.is_inpaint()) {
                g.request.mask_image = save_input(job.mask, job.save_dir, "mask").toStdString();
            }
            for (size_t k = 0; k < g.request.controls.size() && k < size_t(job.controls.size());
                 ++k) {
                g.request.controls[k].image =
                    save_input(job.controls[int(k)], job.save_dir, "control").toStdString();
            }
            for (int i = 0; i < result.images.size(); ++i) {
                auto text = metadata_for(g.request, i, result.named);
                if (job.parent_id >= 0) {
                    text["sdstudio-parent"] = QString::number(job.parent_id);
                }
                const QString path =
                    QDir(job.save_dir)
                        .filePath(
                            QString("%1-%2-%3.png").arg(stamp).arg(job.id).arg(g.request.seed + i));
                save_png(path, result.images[i], text);
                result.files << path;
            }
        }
        result.request = g.request;
        result.seconds = now_s() - start;
        Q_EMIT q->jobFinished(result);
    } catch (const Cancelled&) {
        Q_EMIT q->jobCancelled(job.id);
    } catch (const std::exception& e) {
        Q_EMIT q->jobFailed(job.id, QString::fromUtf8(e.what()));
    }
}

}  // namespace sds::app
