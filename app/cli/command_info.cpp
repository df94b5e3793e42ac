// sdstudio-cli info MODEL [--config DIR]: what a model folder or a single-file checkpoint
// holds, read from the headers only.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "sds/clip_tokenizer.h"
#include "sds/model_folder.h"
#include "settings.h"

namespace sds::cli {

namespace {
std::string thousands(uint64_t n) {
    std::string s = std::to_string(n);
    for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) {
        s.insert(static_cast<size_t>(i), ",");
    }
    return s;
}
}  // namespace

int command_info(const Args& args) {
    std::string path, config;
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--config" && i + 1 < args.size()) {
            config = args[++i];
        } else if (path.empty() && args[i].rfind("--", 0) != 0) {
            path = args[i];
        } else {
            throw UsageError{
                "expects MODEL_DIR or CHECKPOINT (.safetensors or .ckpt) [--config DIR]"};
        }
    }
    if (path.empty()) {
        throw UsageError{"expects MODEL_DIR or CHECKPOINT (.safetensors or .ckpt) [--config DIR]"};
    }
    if (config.empty()) {
        config = app::single_file_config_folder(QString::fromStdString(path)).toStdString();
    }
    const ModelFolder model = ModelFolder::open_any(path, config);
    std::printf("model: %s (%s)\n", model.source().string().c_str(),
                model.pipeline_class().c_str());
    if (model.is_single_file()) {
        std::printf("configs: %s\n", model.dir().string().c_str());
        const int64_t channels = ModelFolder::single_file_unet_in_channels(model.source());
        if (channels == 9) {
            std::printf(
                "an inpainting model: its UNet takes 9 input channels (latents, mask, "
                "masked image)\n");
        }
    }
    if (model.is_refiner()) {
        std::printf("an SDXL refiner: the second text encoder alone%s\n",
                    model.requires_aesthetics_score()
                        ? ", and an aesthetic score (--aesthetic-score, --negative-aesthetic-score)"
                        : "");
    }
    std::printf("\n");
    int name_w = 13, class_w = 22;  // wider for SDXL's text_encoder_2 and its class
    for (const auto& [name, c] : model.components()) {
        name_w = std::max(name_w, static_cast<int>(name.size()));
        class_w = std::max(class_w, static_cast<int>(c.class_name.size()));
    }
    std::printf("%-*s %-*s %-8s %15s  %s\n", name_w, "component", class_w, "class", "dtypes",
                "parameters", "files");
    uint64_t total = 0;
    for (const auto& [name, c] : model.components()) {
        const WeightsSummary summary = summarize_weights(c);
        const uint64_t params = summary.parameters;
        std::string files, dt;
        for (const auto& w : c.weights) {
            files +=
                (files.empty() ? "" : ", ") +
                (model.is_single_file() ? w.filename().string() + " (" + c.original_prefix + "*)"
                                        : w.lexically_relative(model.dir()).string());
        }
        for (const auto& d : summary.dtypes) {
            dt += (dt.empty() ? "" : ",") + d;
        }
        std::string count = c.weights.empty() ? "-" : thousands(params);
        if (name == "tokenizer" || name == "tokenizer_2") {
            const auto dir = name == "tokenizer" ? model.tokenizer_dir() : model.tokenizer_2_dir();
            count = thousands(ClipTokenizer::load_folder(dir).vocab_size()) + " tokens";
            files = std::filesystem::exists(dir / "vocab.json")
                        ? name + "/vocab.json, " + name + "/merges.txt"
                        : name + "/tokenizer.json";
        }
        if (files.empty()) {
            files = c.config.empty() ? c.dir.lexically_relative(model.dir()).string() + "/"
                                     : c.config.lexically_relative(model.dir()).string();
        }
        std::printf("%-*s %-*s %-8s %15s  %s\n", name_w, name.c_str(), class_w,
                    c.class_name.c_str(), dt.empty() ? "-" : dt.c_str(), count.c_str(),
                    files.c_str());
        total += params;
    }
    std::printf("\ntotal parameters: %s\n", thousands(total).c_str());
    return 0;
}

}  // namespace sds::cli
