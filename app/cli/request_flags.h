#pragma once
// The generation flags shared by txt2img, img2img and grid, parsed into a request and the
// pipeline's options.
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "commands.h"
#include "sds/generation_request.h"
#include "sds/pipeline.h"

namespace sds::cli {

struct GenerateFlags {
    GenerationRequest request;
    std::string model;   // a diffusers folder or a single-file checkpoint
    std::string config;  // --config: a single file's configs (default: the bundled ones)
    std::string vae;     // --vae: a VAE instead of the model's (Pipeline::Options::vae)
    std::string out_dir = "outputs";
    std::string device = "auto";
    std::string dtype = "auto";
    bool sampler_given = false;  // else the model's own (Pipeline::default_sampler)
    Args rest;                   // arguments not consumed here (command-specific flags)
};

// A flag's value as a number; UsageError naming the flag when it is not one.
template <typename T>
T number(const std::string& flag, const std::string& v) {
    try {
        size_t used = 0;
        T out;
        if constexpr (std::is_same_v<T, double>) {
            out = std::stod(v, &used);
        } else {
            out = static_cast<T>(std::stoll(v, &used));
        }
        if (used != v.size()) {
            throw std::invalid_argument(v);
        }
        return out;
    } catch (const std::exception&) {
        throw UsageError{flag + " expects a number, not '" + v + "'"};
    }
}

// --model --config --vae --prompt --negative --steps --guidance --seed --sampler --batch --width
// --height
// --strength --init --mask --mask-blur --mask-padding --out --device --dtype --clip-skip --eta
// --hires-scale --hires-steps
// --hires-strength --controlnet --control-image --control-scale --control-start --control-end
// --control-preprocessor --control-guess-mode --lora --lora-dir --embedding
// --embedding-dir --style --styles --from
GenerateFlags parse_generate_flags(const Args& args);
std::string generate_flags_help();
// A text file's lines (UTF-8, a byte order mark and CRs at line ends dropped); FileError naming
// the file where it cannot be read.
std::vector<std::string> read_text_lines(const std::string& file);
// A line of flags split into arguments as a POSIX shell (Python's shlex.split, which A1111's
// prompts-from-file reads lines with) splits it: white space between arguments, '...' as it
// is, "..." with \" and \\ inside, a backslash outside quotes keeping the next character.
// UsageError for a quote left open.
std::vector<std::string> split_command_line(std::string_view line);
// --styles' file, or the studio's styles.csv where it is empty.
std::string styles_path(const std::string& flag);
// The named styles merged into the request's prompts, in order (A1111's apply_styles).
void apply_styles(GenerationRequest& request, const std::vector<std::string>& names,
                  const std::string& styles_file);
// --prompt-syntax's value; UsageError for a name that is not one.
PromptSyntax prompt_syntax_flag(const std::string& name);

// The request's init image and mask (inpainting) and its ControlNets' images, read from their
// files; an unset size becomes the init image's (else the first control image's), down to a
// multiple of 8.
struct InitImages {
    Image init;
    Image mask;
    std::vector<Image> controls;
    const Image* init_or_null() const { return init.empty() ? nullptr : &init; }
    const Image* mask_or_null() const { return mask.empty() ? nullptr : &mask; }
};
InitImages load_init_images(GenerationRequest& request);

// Loads the pipeline the flags name, telling progress on stderr.
// Loads the model and settles what depends on it: without --sampler, the model's own sampler.
Pipeline load_pipeline(GenerateFlags& flags);

// Prints "step 3/20, 1.2 s/step, 21 s left" on stderr, overwriting the line.
// Progress lines on stderr are rewritten in place with \r; an error printed after one first
// ends it, so that the message starts a line of its own.
void progress_line_open(bool open);
void end_progress_line();

class Progress {
  public:
    explicit Progress(std::string label);
    void operator()(const StepEvent& e);
    void done();

  private:
    std::string label_;
    double start_ = 0;
};

}  // namespace sds::cli
