// sdstudio-cli train: train a model from scratch or fine-tune one's UNet on a folder of images
// with captions; sdstudio-cli dataset: write the synthetic shapes dataset.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

#include "request_flags.h"
#include "sds/error.h"
#include "sds/pipeline.h"
#include "sds/shapes.h"
#include "sds/train.h"
#include "settings.h"
#include "training.h"

namespace sds::cli {

namespace {

std::string take(const Args& args, size_t& i) {
    if (i + 1 >= args.size()) {
        throw UsageError{args[i] + " needs a value"};
    }
    return args[++i];
}

// Ctrl-C (or SIGTERM) asks the trainer to stop: it writes a checkpoint first, so nothing is lost.
std::atomic<bool> g_stop_training{false};

extern "C" void request_stop(int) {
    g_stop_training = true;
}

}  // namespace

int command_train(const Args& args) {
    TrainOptions o;
    std::string data;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--data")
            data = take(args, i);
        else if (a == "--out")
            o.out_dir = take(args, i);
        else if (a == "--base")
            o.base_model = take(args, i);
        else if (a == "--config")
            o.base_config = take(args, i);
        else if (a == "--tokenizer")
            o.tokenizer_dir = take(args, i);
        else if (a == "--steps")
            o.unet_steps = number<int>(a, take(args, i));
        else if (a == "--vae-steps")
            o.vae_steps = number<int>(a, take(args, i));
        else if (a == "--batch")
            o.batch_size = number<int>(a, take(args, i));
        else if (a == "--lr")
            o.learning_rate = number<double>(a, take(args, i));
        else if (a == "--vae-lr")
            o.vae_learning_rate = number<double>(a, take(args, i));
        else if (a == "--caption-dropout")
            o.caption_dropout = number<double>(a, take(args, i));
        else if (a == "--noise-offset")
            o.noise_offset = number<double>(a, take(args, i));
        else if (a == "--snr-gamma")
            o.snr_gamma = number<double>(a, take(args, i));
        else if (a == "--lora-rank")
            o.lora_rank = number<int>(a, take(args, i));
        else if (a == "--lora-alpha")
            o.lora_alpha = number<double>(a, take(args, i));
        else if (a == "--ema")
            o.ema_decay = number<double>(a, take(args, i));
        else if (a == "--resolution")
            o.arch.resolution = number<int>(a, take(args, i));
        else if (a == "--seed")
            o.seed = static_cast<uint64_t>(number<int>(a, take(args, i)));
        else if (a == "--checkpoint-every")
            o.checkpoint_every = number<int>(a, take(args, i));
        else if (a == "--device")
            o.device = take(args, i);
        else if (a == "--no-resume")
            o.resume = false;
        else
            throw UsageError{"unknown argument '" + a + "'"};
    }
    if (o.base_config.empty()) {
        o.base_config =
            app::single_file_config_folder(QString::fromStdString(o.base_model.string()))
                .toStdString();
    }
    if (data.empty() || o.out_dir.empty()) {
        throw UsageError{"train needs --data DIR and --out DIR"};
    }
    const auto examples = app::load_training_folder(QString::fromStdString(data));
    std::fprintf(
        stderr, "train: %zu images from %s -> %s (%s)\n", examples.size(), data.c_str(),
        o.out_dir.string().c_str(),
        o.base_model.empty()
            ? "from scratch"
            : ((o.lora_rank > 0 ? "a LoRA on " : "fine-tuning ") + o.base_model.string()).c_str());
    std::signal(SIGINT, request_stop);
    std::signal(SIGTERM, request_stop);
    TrainProgress last;
    try {
        train(
            examples, o,
            [&last](const TrainProgress& p) {
                last = p;
                if (p.step % 10 == 0 || p.step == p.total) {
                    std::fprintf(stderr, "\r%s step %d/%d, loss %.4f, %.0f s left   ",
                                 p.phase.c_str(), p.step, p.total, p.loss, p.seconds_left);
                    progress_line_open(true);
                    if (p.step == p.total) {
                        end_progress_line();
                    }
                }
            },
            &g_stop_training);
    } catch (const Cancelled&) {
        std::fprintf(stderr,
                     "\nstopped after %s step %d; the checkpoint is saved in %s: run the same "
                     "command again to continue\n",
                     last.phase.c_str(), last.step, (o.out_dir / "checkpoint").string().c_str());
        return 130;
    }
    std::printf("%s\n", (o.lora_rank > 0 ? lora_file(o) : o.out_dir).string().c_str());
    return 0;
}

int command_dataset(const Args& args) {
    std::string out;
    int count = 1000, size = 128;
    uint64_t seed = 0;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--out")
            out = take(args, i);
        else if (a == "--count")
            count = number<int>(a, take(args, i));
        else if (a == "--size")
            size = number<int>(a, take(args, i));
        else if (a == "--seed")
            seed = static_cast<uint64_t>(number<int>(a, take(args, i)));
        else
            throw UsageError{"unknown argument '" + a + "'"};
    }
    if (out.empty() || count < 1 || size < 32) {
        throw UsageError{
            "dataset needs --out DIR, a --count of at least 1 and a --size of 32 or more"};
    }
    imaging::write_dataset(out, count, size, seed);
    std::printf("%s\n", out.c_str());
    return 0;
}

}  // namespace sds::cli
