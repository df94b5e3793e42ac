#pragma once
// sdstudio-cli: one command per file. Each returns the process exit code and throws
// sds::Error for problems the user can fix (main prints them).
#include <string>
#include <vector>

namespace sds::cli {

using Args = std::vector<std::string>;  // the arguments after the command name

int command_info(const Args& args);
int command_tokenize(const Args& args);
int command_encode(const Args& args);
int command_txt2img(const Args& args);
int command_img2img(const Args& args);
int command_inpaint(const Args& args);
int command_grid(const Args& args);
int command_train(const Args& args);
int command_dataset(const Args& args);
int command_export(const Args& args);
int command_styles(const Args& args);
int command_preprocess(const Args& args);

// Thrown for wrong usage; main prints the message and the usage text, exit code 2.
struct UsageError {
    std::string message;
};

}  // namespace sds::cli
