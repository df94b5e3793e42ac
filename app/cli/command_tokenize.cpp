// sdstudio-cli tokenize MODEL PROMPT [--padded] [--config DIR]
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "sds/clip_tokenizer.h"
#include "settings.h"

namespace sds::cli {

int command_tokenize(const Args& args) {
    std::vector<std::string> pos;
    bool padded = false;
    std::string config;
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--padded") {
            padded = true;
        } else if (args[i] == "--config" && i + 1 < args.size()) {
            config = args[++i];
        } else {
            pos.push_back(args[i]);
        }
    }
    if (pos.size() != 2) {
        throw UsageError{"expects MODEL_DIR and PROMPT"};
    }
    // Only the tokenizer is needed: MODEL_DIR/tokenizer, or a tokenizer folder itself; a
    // single-file checkpoint has none, so --config's (default the bundled configs of its SD
    // version) is used.
    std::filesystem::path dir = pos[0];
    if (std::filesystem::is_regular_file(dir)) {
        dir = config.empty()
                  ? app::single_file_config_folder(QString::fromStdString(pos[0])).toStdString()
                  : config;
    }
    if (std::filesystem::is_directory(dir / "tokenizer")) {
        dir /= "tokenizer";
    }
    const ClipTokenizer tok = ClipTokenizer::load_folder(dir);
    std::vector<int64_t> ids;
    if (padded) {
        ids = tok.encode_padded(pos[1]);
    } else {
        ids.push_back(tok.start_id());
        for (int32_t id : tok.encode(pos[1])) {
            ids.push_back(id);
        }
        ids.push_back(tok.end_id());
    }
    std::string line;
    for (int64_t id : ids) {
        line += (line.empty() ? "" : " ") + std::to_string(id);
    }
    std::printf("%s\n%s\n", line.c_str(), tok.count_text(pos[1]).c_str());
    return 0;
}

}  // namespace sds::cli
