// sdstudio-cli tokenize MODEL PROMPT [--padded] [--prompt-syntax S] [--config DIR]
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "request_flags.h"
#include "sds/clip_tokenizer.h"
#include "sds/prompt_syntax.h"
#include "settings.h"

namespace sds::cli {

namespace {

std::string join(const auto& values, auto format) {
    std::string line;
    for (const auto& v : values) {
        line += (line.empty() ? "" : " ") + format(v);
    }
    return line;
}

// A1111's reading of a prompt: with prompt editing or alternation, each text and the model
// calls it is read for (counted from 0, as A1111 counts them); else each chunk's 77 ids, then
// their weights, then A1111's count.
void print_a1111(const ClipTokenizer& tok, const std::string& prompt, int steps) {
    const auto schedule = prompt_schedule(prompt, steps);
    if (schedule.size() > 1) {
        int from = 0;
        for (const TimedPrompt& t : schedule) {
            const std::string calls = &t == &schedule.back()
                                          ? std::to_string(from) + " on"
                                          : std::to_string(from) + "-" + std::to_string(t.until);
            std::printf("calls %s: %s\n", calls.c_str(), t.text.c_str());
            from = t.until + 1;
        }
        return;
    }
    const ChunkedPrompt chunked = chunk_prompt(tok, prompt);
    for (const PromptChunk& c : chunked.chunks) {
        std::printf("%s\n%s\n", join(c.ids, [](int64_t id) { return std::to_string(id); }).c_str(),
                    join(c.weights, [](float w) {
                        char buf[32];
                        std::snprintf(buf, sizeof buf, "%g", static_cast<double>(w));
                        return std::string(buf);
                    }).c_str());
    }
    std::printf("%s\n", chunked.count_text().c_str());
}

}  // namespace

int command_tokenize(const Args& args) {
    std::vector<std::string> pos;
    bool padded = false;
    std::string config;
    PromptSyntax syntax = PromptSyntax::Plain;
    int steps = 20;
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--padded") {
            padded = true;
        } else if (args[i] == "--steps" && i + 1 < args.size()) {
            steps = number<int>("--steps", args[++i]);
        } else if (args[i] == "--prompt-syntax" && i + 1 < args.size()) {
            syntax = prompt_syntax_flag(args[++i]);
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
    } else if (std::filesystem::is_directory(dir / "tokenizer_2")) {
        dir /= "tokenizer_2";  // SDXL's refiner has the second alone
    }
    const ClipTokenizer tok = ClipTokenizer::load_folder(dir);
    // LoRA tags are taken out before a prompt is read.
    const std::string prompt = without_lora_tags(pos[1]);
    if (syntax != PromptSyntax::Plain) {
        // A1111's composable prompts: each part under a line that names it.
        const auto parts = split_and(prompt);
        for (size_t k = 0; k < parts.size(); ++k) {
            if (composes(parts)) {
                std::printf("part %zu, weight %g: %s\n", k + 1, parts[k].weight,
                            parts[k].text.c_str());
            }
            print_a1111(tok, parts[k].text, steps);
        }
        return 0;
    }
    std::vector<int64_t> ids;
    if (padded) {
        ids = tok.encode_padded(prompt);
    } else {
        ids.push_back(tok.start_id());
        for (int32_t id : tok.encode(prompt)) {
            ids.push_back(id);
        }
        ids.push_back(tok.end_id());
    }
    std::string line;
    for (int64_t id : ids) {
        line += (line.empty() ? "" : " ") + std::to_string(id);
    }
    std::printf("%s\n%s\n", line.c_str(), tok.count_text(prompt).c_str());
    return 0;
}

}  // namespace sds::cli
