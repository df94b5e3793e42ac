// sdstudio-cli styles [--styles FILE] [--save NAME --prompt P [--negative N] | --delete NAME]:
// the prompt styles (A1111's styles.csv) listed, saved or deleted.
#include <cstdio>

#include "commands.h"
#include "request_flags.h"
#include "sds/error.h"
#include "styles.h"

namespace sds::cli {

int command_styles(const Args& args) {
    std::string file, save, remove, prompt, negative;
    bool prompt_given = false;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (i + 1 >= args.size()) {
            throw UsageError{a == "--styles" || a == "--save" || a == "--delete" ||
                                     a == "--prompt" || a == "--negative"
                                 ? a + " needs a value"
                                 : "unknown argument '" + a + "'"};
        }
        const std::string& v = args[++i];
        if (a == "--styles") {
            file = v;
        } else if (a == "--save") {
            save = v;
        } else if (a == "--delete") {
            remove = v;
        } else if (a == "--prompt") {
            prompt = v;
            prompt_given = true;
        } else if (a == "--negative") {
            negative = v;
        } else {
            throw UsageError{"unknown argument '" + a + "'"};
        }
    }
    if (!save.empty() && !remove.empty()) {
        throw UsageError{"styles: --save or --delete, not both"};
    }
    if (!save.empty() && !prompt_given) {
        throw UsageError{
            "styles --save NAME needs --prompt (\"{prompt}\" marks where the prompt "
            "goes; without it the style goes after the prompt)"};
    }
    file = styles_path(file);
    auto styles = app::load_styles(file);
    if (!save.empty()) {
        app::put_style(styles, {save, prompt, negative});
        app::save_styles(file, styles);
        std::fprintf(stderr, "saved style '%s' in %s\n", save.c_str(), file.c_str());
        return 0;
    }
    if (!remove.empty()) {
        if (!app::remove_style(styles, remove)) {
            throw Error("styles --delete '" + remove + "': no such style in " + file);
        }
        app::save_styles(file, styles);
        std::fprintf(stderr, "deleted style '%s' from %s\n", remove.c_str(), file.c_str());
        return 0;
    }
    for (const app::PromptStyle& s : styles) {
        std::printf("%s\n  prompt: %s\n  negative: %s\n", s.name.c_str(), s.prompt.c_str(),
                    s.negative_prompt.c_str());
    }
    if (styles.empty()) {
        std::fprintf(stderr, "no styles in %s\n", file.c_str());
    }
    return 0;
}

}  // namespace sds::cli
