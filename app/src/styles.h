#pragma once
// Prompt styles, as A1111 keeps them: a styles.csv of name, prompt and negative_prompt, each
// style's texts merged into the prompts on demand (in the studio's Styles menu, or the CLI's
// --style NAME).
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace sds::app {

struct PromptStyle {
    std::string name, prompt, negative_prompt;
    bool operator==(const PromptStyle&) const = default;
};

// A style's text merged into a prompt as A1111 does: in place of "{prompt}" where the style
// has it, else after the prompt with ", " between (white space at the ends dropped; an empty
// side left out).
std::string merge_style(std::string_view style_text, std::string_view prompt);

// A1111's styles.csv: a header naming the columns (name, prompt, negative_prompt; A1111's
// older "text" for prompt), then a style a row; rows whose name starts with '#' are A1111's
// dividers and are skipped, as are empty rows. Read as Python's csv module reads it
// (skipinitialspace, quoted fields with "" for a quote and line breaks inside). A file that
// is not there is no styles; one that cannot be read throws sds::Error naming it and the
// problem.
std::vector<PromptStyle> load_styles(const std::filesystem::path& file);
// Writes the styles as A1111 writes its file (UTF-8 with a byte order mark, the three columns,
// fields quoted where they need it, CRLF), through a temporary file so that a failed write
// leaves the old file whole.
void save_styles(const std::filesystem::path& file, const std::vector<PromptStyle>& styles);

// The style named `name` (exactly), or nullptr.
const PromptStyle* find_style(const std::vector<PromptStyle>& styles, std::string_view name);
// `style` in place of the one of its name, else after the others.
void put_style(std::vector<PromptStyle>& styles, PromptStyle style);
// Takes out the style named `name`; false where there is none.
bool remove_style(std::vector<PromptStyle>& styles, std::string_view name);

}  // namespace sds::app
