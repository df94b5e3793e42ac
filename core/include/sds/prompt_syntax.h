#pragma once
// How a prompt's text becomes the text encoder's input: as typed (diffusers' pipelines), or
// with A1111's prompt syntax: emphasis, BREAK and prompts longer than 75 tokens.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sds/clip_tokenizer.h"

namespace sds {

enum class PromptSyntax {
    // diffusers' pipelines: the text as typed, cut after 75 tokens. A1111's "Emphasis: None"
    // for prompts up to 75 tokens.
    Plain,
    // A1111's (its Emphasis "Original"): (word) weighs a word's encoder states by 1.1, (word:W)
    // by W, [word] by 1/1.1, nested brackets multiply, \( \) \[ \] \\ are the characters
    // themselves; BREAK starts a new chunk of 75 tokens; a longer prompt is encoded in chunks
    // of 75 tokens, each on its own, side by side; each chunk's mean is kept as it was before
    // the weights.
    A1111,
    // A1111's Emphasis "No norm": the same without keeping the mean.
    A1111NoNorm,
};

// "plain", "a1111", "a1111-no-norm".
const char* prompt_syntax_name(PromptSyntax syntax);
std::optional<PromptSyntax> prompt_syntax_from_name(std::string_view name);

// A piece of prompt text and its weight, or a BREAK.
struct WeightedText {
    std::string text;
    double weight = 1.0;
    bool is_break = false;
    bool operator==(const WeightedText&) const = default;
};

// A1111's composable prompts (the prompt, not the negative prompt): "a cat AND a dog:0.5" is
// two prompts, each guided on its own against the negative and added up with its weight, the
// number after its last ':' (white space at a part's end dropped). A prompt without AND is
// one part, which may have a weight too ("a cat:1.2").
struct PromptPart {
    std::string text;
    double weight = 1.0;
    bool operator==(const PromptPart&) const = default;
};
std::vector<PromptPart> split_and(std::string_view prompt);
// More than one part, or a weight other than 1: not one prompt's guidance.
bool composes(const std::vector<PromptPart>& parts);

// A1111's prompt editing and alternation over a run of `steps` steps. [from:to:when] reads
// `from` up to the step `when` and `to` after it (`when` with a point: that fraction of the
// steps, else a step number); [to:when] adds `to` then, [from::when] takes `from` away;
// [a|b|c] reads a, b, c, a, ... from step to step. They nest, and sit inside emphasis
// brackets, which stay in each step's text. The entries hold each step's text until their
// step (`until`, as A1111 counts the model calls of a run from 0: step k reads the first
// entry with k <= until); a prompt with neither is one entry, its text as it is. A1111's
// hires fix second pass (`first_pass_steps` > 0): whole numbers count on from the first
// pass's steps and fractions from 1, so [a:b:0.5] reads b all through it. A '|' outside an
// alternation makes the whole prompt one entry, as A1111's parser gives up on it.
struct TimedPrompt {
    int until = 0;
    std::string text;
    bool operator==(const TimedPrompt&) const = default;
};
std::vector<TimedPrompt> prompt_schedule(std::string_view prompt, int steps,
                                         int first_pass_steps = 0);
// The text for model call `index` (from 0): the first entry with index <= until, else the
// last (A1111 goes back to the first there: Heun's and DPM2's second calls past the steps).
const std::string& prompt_at(const std::vector<TimedPrompt>& schedule, int index);

// A1111's emphasis parse: the text in pieces with their weights (runs of equal weight joined),
// BREAKs between. Brackets left open weigh everything after them; a closing bracket without
// its opening one is text. Throws sds::Error for a weight that is not a number ("(a:1.2.3)").
// Prompt editing and alternation are read by prompt_schedule first, and AND by split_and;
// here they are text. Unlike A1111, a BREAK inside brackets still breaks (A1111 encodes the
// word BREAK there with a negative weight).
std::vector<WeightedText> parse_emphasis(std::string_view prompt);

// One chunk of a prompt for the text encoder: start, 75 tokens (padded with end markers), end;
// after the first end marker, the tokenizer's padding token (SD 2.x pads with "!"). Each id's
// weight: its text's, 1 for the markers and padding.
struct PromptChunk {
    std::vector<int64_t> ids;
    std::vector<float> weights;
};

// A1111's chunks of a prompt (its tokenize_line): the pieces' tokens filled into chunks of 75.
// A chunk that would cut a textual inversion word's vectors apart ends before it; one that
// fills up within 20 tokens after a comma ends after the comma, the rest moving on to the next
// (A1111's comma_padding_backtrack). An empty prompt is one chunk. `token_count`: A1111's
// count (75 for each chunk but the last, which counts its tokens).
struct ChunkedPrompt {
    std::vector<PromptChunk> chunks;
    int token_count = 0;
    // The count as A1111 shows it: "80/150" (the tokens, and the chunks' room).
    std::string count_text() const;
};
ChunkedPrompt chunk_prompt(const ClipTokenizer& tokenizer, std::string_view prompt);

}  // namespace sds
