// sdstudio-cli info MODEL [--config DIR]: what a model folder or a single-file checkpoint
// holds, read from the headers only.
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
    }
    std::printf("\n");
    std::printf("%-13s %-22s %-8s %15s  %s\n", "component", "class", "dtypes", "parameters",
                "files");
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
        if (name == "tokenizer") {
            count = thousands(ClipTokenizer::load_folder(model.tokenizer_dir()).vocab_size()) +
                    " tokens";
            const bool split = std::filesystem::exists(model.tokenizer_dir() / "vocab.json");
            files =
                split ? "tokenizer/vocab.json, tokenizer/merges.txt" : "tokenizer/tokenizer.json";
        }
        if (files.empty()) {
            files = c.config.empty() ? c.dir.lexically_relative(model.dir()).string() + "/"
                                     : c.config.lexically_relative(model.dir()).string();
        }
        std::printf("%-13s %-22s %-8s %15s  %s\n", name.c_str(), c.class_name.c_str(),
                    dt.empty() ? "-" : dt.c_str(), count.c_str(), files.c_str());
        total += params;
    }
    std::printf("\ntotal parameters: %s\n", thousands(total).c_str());
    return 0;
}

}  // namespace sds::cli
