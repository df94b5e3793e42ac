// sdstudio-cli export MODEL --out FILE.safetensors [--dtype fp16|fp32] [--config DIR]: a model
// as one single-file checkpoint in the original layout (what A1111 loads).
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"
#include "settings.h"

namespace sds::cli {

int command_export(const Args& args) {
    std::string model, out, dtype = "fp16";
    std::string config;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if ((a == "--out" || a == "--dtype" || a == "--config") && i + 1 < args.size()) {
            (a == "--out" ? out : a == "--dtype" ? dtype : config) = args[++i];
        } else if (model.empty() && a.rfind("--", 0) != 0) {
            model = a;
        } else {
            throw UsageError{"unknown argument '" + a + "'"};
        }
    }
    if (model.empty() || out.empty()) {
        throw UsageError{"expects MODEL --out FILE.safetensors [--dtype fp16|fp32]"};
    }
    if (dtype != "fp16" && dtype != "fp32") {
        throw UsageError{"--dtype is fp16 or fp32, not '" + dtype + "'"};
    }
    if (config.empty()) {
        config = app::single_file_config_folder(QString::fromStdString(model)).toStdString();
    }
    const ModelFolder folder = ModelFolder::open_any(model, config);
    write_original_checkpoint(folder, out, dtype == "fp16" ? at::kHalf : at::kFloat);
    std::printf("%s\n", out.c_str());
    std::fprintf(stderr, "wrote %s (%.1f MB, %s) from %s\n", out.c_str(),
                 static_cast<double>(std::filesystem::file_size(out)) / 1e6, dtype.c_str(),
                 folder.source().string().c_str());
    return 0;
}

}  // namespace sds::cli
