#include "sds/prompt_syntax.h"

#include <algorithm>
#include <charconv>

#include "sds/error.h"
#include "unicode.h"

namespace sds {

namespace {

constexpr double kRoundMultiplier = 1.1;
constexpr double kSquareMultiplier = 1 / 1.1;
constexpr size_t kChunkTokens = 75;
constexpr size_t kCommaBacktrack = 20;  // A1111's comma_padding_backtrack default

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
// Python's \w (letters, numbers, '_') for the character that starts at text[at] / ends just
// before text[at] (UTF-8).
bool is_word_char(char32_t c) {
    return c == U'_' || unicode::is_letter(c) || unicode::is_number(c);
}
bool word_at(std::string_view text, size_t at) {
    if (at >= text.size()) {
        return false;
    }
    size_t end = at + 1;
    while (end < text.size() && end < at + 4 && (static_cast<unsigned char>(text[end]) >> 6) == 2) {
        ++end;
    }
    return is_word_char(unicode::decode_utf8(text.substr(at, end - at)).front());
}
bool word_before(std::string_view text, size_t at) {
    if (at == 0) {
        return false;
    }
    size_t from = at - 1;
    while (from > 0 && from + 4 > at && (static_cast<unsigned char>(text[from]) >> 6) == 2) {
        --from;
    }
    return is_word_char(unicode::decode_utf8(text.substr(from, at - from)).back());
}
// text[at, end) stands as a word (Python's \b on both sides).
bool stands_alone(std::string_view text, size_t at, size_t end) {
    return !word_before(text, at) && !word_at(text, end);
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// A run of plain text split at each BREAK that stands as a word, with the white space around
// it (A1111's \s*\bBREAK\b\s*), into `out`.
void add_text(std::string_view text, std::vector<WeightedText>& out) {
    static constexpr std::string_view kBreak = "BREAK";
    size_t from = 0;
    size_t search = 0;
    while (true) {
        const size_t at = text.find(kBreak, search);
        if (at == std::string_view::npos) {
            break;
        }
        const size_t end = at + kBreak.size();
        if (!stands_alone(text, at, end)) {
            search = at + 1;
            continue;
        }
        size_t cut = at;
        while (cut > from && is_space(text[cut - 1])) {
            --cut;
        }
        size_t next = end;
        while (next < text.size() && is_space(text[next])) {
            ++next;
        }
        out.push_back({std::string(text.substr(from, cut - from)), 1.0, false});
        out.push_back({"BREAK", 1.0, true});
        from = search = next;
    }
    out.push_back({std::string(text.substr(from)), 1.0, false});
}

// At text[i] == ':', the length of ":" W ")" with white space allowed around W (A1111's
// :\s*([+-]?[.\d]+)\s*\)) and W itself; 0 where there is none.
size_t weight_token(std::string_view text, size_t i, std::string_view& weight) {
    size_t j = i + 1;
    while (j < text.size() && is_space(text[j])) {
        ++j;
    }
    const size_t w = j;
    if (j < text.size() && (text[j] == '+' || text[j] == '-')) {
        ++j;
    }
    const size_t digits = j;
    while (j < text.size() && (is_digit(text[j]) || text[j] == '.')) {
        ++j;
    }
    if (j == digits) {
        return 0;
    }
    weight = text.substr(w, j - w);
    while (j < text.size() && is_space(text[j])) {
        ++j;
    }
    if (j == text.size() || text[j] != ')') {
        return 0;
    }
    return j + 1 - i;
}

double parse_weight(std::string_view w) {
    // As Python's float(): an optional sign, digits with at most one point.
    const std::string_view number = w.front() == '+' ? w.substr(1) : w;
    double value = 0;
    const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (ec != std::errc() || end != number.data() + number.size()) {
        throw Error("prompt: the weight '" + std::string(w) + "' is not a number");
    }
    return value;
}

// Prompt editing and alternation: a tree of the prompt's text.
struct Timed {
    enum Kind { Text, Sequence, Edit, Alternate } kind = Text;
    std::string text;          // Text
    std::vector<Timed> parts;  // Sequence: its pieces; Edit: from, to; Alternate: the options
    int until = 0;             // Edit: the last step that reads `from`
};

// The end of the bracket group opened at text[open] ('['), nested brackets and escapes
// skipped, and where its own ':' and '|' are; npos when it does not close.
size_t group_end(std::string_view text, size_t open, std::vector<size_t>& colons,
                 std::vector<size_t>& bars) {
    int depth = 0;
    for (size_t i = open + 1; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\\') {
            ++i;
        } else if (c == '[' || c == '(') {
            ++depth;
        } else if (c == ']' || c == ')') {
            if (depth == 0) {
                return c == ']' ? i : std::string_view::npos;
            }
            --depth;
        } else if (depth == 0 && c == ':') {
            colons.push_back(i);
        } else if (depth == 0 && c == '|') {
            bars.push_back(i);
        }
    }
    return std::string_view::npos;
}

// A1111's NUMBER (a signed decimal, exponent allowed), white space around it.
std::optional<std::string_view> edit_number(std::string_view s) {
    while (!s.empty() && is_space(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_space(s.back())) {
        s.remove_suffix(1);
    }
    size_t i = 0;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
        ++i;
    }
    const size_t digits = i;
    bool point = false;
    size_t n = 0;
    for (; i < s.size() && (is_digit(s[i]) || (s[i] == '.' && !point)); ++i) {
        point = point || s[i] == '.';
        n += is_digit(s[i]) ? 1 : 0;
    }
    if (n == 0 || i == digits) {
        return std::nullopt;
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < s.size() && (s[j] == '+' || s[j] == '-')) {
            ++j;
        }
        const size_t exp = j;
        while (j < s.size() && is_digit(s[j])) {
            ++j;
        }
        i = j > exp ? j : i;
    }
    return i == s.size() ? std::optional(s) : std::nullopt;
}

struct ScheduleContext {
    int steps;
    int int_offset;
    double float_offset;
    std::vector<int> stops;  // the steps where the text may change
    bool alternates = false;
    size_t stray_bars = 0;  // '|' outside an alternation: A1111's parser gives up
};

Timed parse_timed(std::string_view text, ScheduleContext& ctx) {
    Timed seq{Timed::Sequence, {}, {}, 0};
    std::string plain;
    const auto flush = [&] {
        if (!plain.empty()) {
            seq.parts.push_back({Timed::Text, std::move(plain), {}, 0});
            plain.clear();
        }
    };
    size_t i = 0;
    while (i < text.size()) {
        const char c = text[i];
        if (c == '\\') {
            plain += text.substr(i, 2);
            i += 2;
            continue;
        }
        if (c == '|') {
            ++ctx.stray_bars;
        }
        if (c != '[') {
            plain += c;
            ++i;
            continue;
        }
        std::vector<size_t> colons, bars;
        const size_t close = group_end(text, i, colons, bars);
        if (close == std::string_view::npos) {
            plain += c;
            ++i;
            continue;
        }
        const auto part = [&](size_t from, size_t to) {
            return parse_timed(text.substr(from, to - from), ctx);
        };
        std::optional<std::string_view> number;
        if (!colons.empty() && colons.size() <= 2 && bars.empty()) {
            number = edit_number(text.substr(colons.back() + 1, close - colons.back() - 1));
        }
        if (number) {  // [to:when] or [from:to:when]
            flush();
            Timed edit{Timed::Edit, {}, {}, 0};
            const bool has_from = colons.size() == 2;
            edit.parts.push_back(has_from ? part(i + 1, colons[0])
                                          : Timed{Timed::Sequence, {}, {}, 0});
            edit.parts.push_back(part(has_from ? colons[0] + 1 : i + 1, colons.back()));
            double v = std::stod(std::string(*number));
            v = number->find('.') != std::string_view::npos ? (v - ctx.float_offset) * ctx.steps
                                                            : v - ctx.int_offset;
            const double capped = std::min(static_cast<double>(ctx.steps), v);
            edit.until = static_cast<int>(capped);  // toward zero, as Python's int()
            if (edit.until >= 1) {
                ctx.stops.push_back(edit.until);
            }
            seq.parts.push_back(std::move(edit));
        } else if (!bars.empty() && colons.empty()) {  // [a|b|c]
            flush();
            Timed alt{Timed::Alternate, {}, {}, 0};
            size_t from = i + 1;
            for (size_t bar : bars) {
                alt.parts.push_back(part(from, bar));
                from = bar + 1;
            }
            alt.parts.push_back(part(from, close));
            ctx.alternates = true;
            seq.parts.push_back(std::move(alt));
        } else {  // emphasis brackets: kept, what is inside read on
            plain += '[';
            flush();
            seq.parts.push_back(part(i + 1, close));
            plain += ']';
        }
        i = close + 1;
    }
    flush();
    return seq;
}

void render(const Timed& t, int step, std::string& out) {
    switch (t.kind) {
        case Timed::Text:
            out += t.text;
            break;
        case Timed::Sequence:
            for (const Timed& p : t.parts) {
                render(p, step, out);
            }
            break;
        case Timed::Edit:
            render(t.parts[step <= t.until ? 0 : 1], step, out);
            break;
        case Timed::Alternate: {
            const auto n = static_cast<int>(t.parts.size());
            render(t.parts[static_cast<size_t>(((step - 1) % n + n) % n)], step, out);
            break;
        }
    }
}

}  // namespace

const char* prompt_syntax_name(PromptSyntax syntax) {
    switch (syntax) {
        case PromptSyntax::Plain:
            return "plain";
        case PromptSyntax::A1111:
            return "a1111";
        case PromptSyntax::A1111NoNorm:
            return "a1111-no-norm";
    }
    return "plain";
}

std::optional<PromptSyntax> prompt_syntax_from_name(std::string_view name) {
    for (PromptSyntax s : {PromptSyntax::Plain, PromptSyntax::A1111, PromptSyntax::A1111NoNorm}) {
        if (name == prompt_syntax_name(s)) {
            return s;
        }
    }
    return std::nullopt;
}

std::vector<WeightedText> parse_emphasis(std::string_view text) {
    std::vector<WeightedText> res;
    std::vector<size_t> round, square;
    const auto multiply = [&](size_t from, double m) {
        for (size_t p = from; p < res.size(); ++p) {
            res[p].weight *= res[p].is_break ? 1.0 : m;
        }
    };
    static constexpr std::string_view kSpecial = "\\()[]:";
    size_t i = 0;
    std::string_view w;  // the weight in ":W)" when n > 0
    size_t n = 0;
    while (i < text.size()) {
        const char c = text[i];
        if (c == '\\') {  // \( \) \[ \] \\: the character; a lone backslash is dropped
            const bool escapes = i + 1 < text.size() && std::string_view("()[]\\").find(
                                                            text[i + 1]) != std::string_view::npos;
            res.push_back({escapes ? std::string(1, text[i + 1]) : std::string(), 1.0, false});
            i += escapes ? 2 : 1;
        } else if (c == '(') {
            round.push_back(res.size());
            ++i;
        } else if (c == '[') {
            square.push_back(res.size());
            ++i;
        } else if (c == ':' && (n = weight_token(text, i, w)) > 0) {  // ":1.2)" closes "("
            if (!round.empty()) {
                const double weight = parse_weight(w);
                multiply(round.back(), weight);
                round.pop_back();
            } else {
                add_text(text.substr(i, n), res);
            }
            i += n;
        } else if (c == ')' && !round.empty()) {
            multiply(round.back(), kRoundMultiplier);
            round.pop_back();
            ++i;
        } else if (c == ']' && !square.empty()) {
            multiply(square.back(), kSquareMultiplier);
            square.pop_back();
            ++i;
        } else if (c == ':' || c == ')' || c == ']') {
            add_text(text.substr(i, 1), res);
            ++i;
        } else {
            size_t j = i;
            while (j < text.size() && kSpecial.find(text[j]) == std::string_view::npos) {
                ++j;
            }
            add_text(text.substr(i, j - i), res);
            i = j;
        }
    }
    for (size_t pos : round) {
        multiply(pos, kRoundMultiplier);
    }
    for (size_t pos : square) {
        multiply(pos, kSquareMultiplier);
    }
    if (res.empty()) {
        res.push_back({"", 1.0, false});
    }
    // Runs of equal weight joined; a BREAK stays apart.
    std::vector<WeightedText> merged;
    for (WeightedText& piece : res) {
        if (!merged.empty() && !piece.is_break && !merged.back().is_break &&
            merged.back().weight == piece.weight) {
            merged.back().text += piece.text;
        } else {
            merged.push_back(std::move(piece));
        }
    }
    return merged;
}

std::vector<TimedPrompt> prompt_schedule(std::string_view prompt, int steps, int first_pass_steps) {
    steps = std::max(steps, 1);
    ScheduleContext ctx{steps, first_pass_steps, first_pass_steps > 0 ? 1.0 : 0.0, {steps}};
    const Timed tree = parse_timed(prompt, ctx);
    // A '|' of no alternation: A1111's parser fails and the prompt is read as it is.
    if (ctx.stray_bars > 0) {
        return {{steps, std::string(prompt)}};
    }
    if (ctx.alternates) {
        for (int s = 1; s <= steps; ++s) {
            ctx.stops.push_back(s);
        }
    }
    std::sort(ctx.stops.begin(), ctx.stops.end());
    ctx.stops.erase(std::unique(ctx.stops.begin(), ctx.stops.end()), ctx.stops.end());
    std::vector<TimedPrompt> out;
    for (int stop : ctx.stops) {
        std::string text;
        render(tree, stop, text);
        out.push_back({stop, std::move(text)});
    }
    return out;
}

const std::string& prompt_at(const std::vector<TimedPrompt>& schedule, int index) {
    for (const TimedPrompt& t : schedule) {
        if (index <= t.until) {
            return t.text;
        }
    }
    return schedule.back().text;
}

namespace {
// A part of a composable prompt: its text and the weight after its last ':' (A1111's
// ^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$), white space at its end dropped.
PromptPart weighed_part(std::string_view text) {
    const auto trim_end = [](std::string_view t) {
        while (!t.empty() && is_space(t.back())) {
            t.remove_suffix(1);
        }
        return t;
    };
    text = trim_end(text);
    if (const size_t colon = text.rfind(':'); colon != std::string_view::npos) {
        std::string_view number = text.substr(colon + 1);
        while (!number.empty() && is_space(number.front())) {
            number.remove_prefix(1);
        }
        // [-+]? then digits with an optional point after them, or a point and digits.
        std::string_view digits = number;
        if (!digits.empty() && (digits.front() == '+' || digits.front() == '-')) {
            digits.remove_prefix(1);
        }
        const size_t point = digits.find('.');
        const bool all_digits = std::all_of(digits.begin(), digits.end(),
                                            [](char c) { return is_digit(c) || c == '.'; });
        const bool one_point = point == digits.rfind('.');
        const bool has_digit = std::any_of(digits.begin(), digits.end(), is_digit);
        if (all_digits && one_point && has_digit) {
            return {std::string(trim_end(text.substr(0, colon))), parse_weight(number)};
        }
    }
    return {std::string(text), 1.0};
}
}  // namespace

std::vector<PromptPart> split_and(std::string_view prompt) {
    static constexpr std::string_view kAnd = "AND";
    std::vector<PromptPart> parts;
    size_t from = 0;
    for (size_t at = prompt.find(kAnd); at != std::string_view::npos;
         at = prompt.find(kAnd, at + 1)) {
        if (stands_alone(prompt, at, at + kAnd.size())) {
            parts.push_back(weighed_part(prompt.substr(from, at - from)));
            from = at + kAnd.size();
        }
    }
    parts.push_back(weighed_part(prompt.substr(from)));
    return parts;
}

bool composes(const std::vector<PromptPart>& parts) {
    return parts.size() > 1 || parts.front().weight != 1.0;
}

std::string ChunkedPrompt::count_text() const {
    return std::to_string(token_count) + "/" +
           std::to_string((std::max(token_count, 1) + 74) / 75 * 75);
}

ChunkedPrompt chunk_prompt(const ClipTokenizer& tokenizer, std::string_view prompt) {
    const std::vector<int32_t> comma_ids = tokenizer.encode(",");
    const int32_t comma = comma_ids.size() == 1 ? comma_ids.front() : -1;
    ChunkedPrompt out;
    std::vector<int64_t> ids;
    std::vector<float> weights;
    size_t last_comma = SIZE_MAX;  // where the chunk's last comma is, if any
    const auto close = [&](bool is_last) {
        out.token_count += static_cast<int>(is_last ? ids.size() : kChunkTokens);
        PromptChunk chunk;
        chunk.ids.reserve(kChunkTokens + 2);
        chunk.ids.push_back(tokenizer.start_id());
        chunk.ids.insert(chunk.ids.end(), ids.begin(), ids.end());
        chunk.ids.resize(kChunkTokens + 1, tokenizer.end_id());
        chunk.ids.push_back(tokenizer.end_id());
        // Padding after the first end marker (A1111's id_pad; the end marker itself for SD 1.x).
        bool ended = false;
        for (size_t k = 1; k < chunk.ids.size(); ++k) {
            if (ended) {
                chunk.ids[k] = tokenizer.pad_id();
            }
            ended = ended || chunk.ids[k] == tokenizer.end_id();
        }
        chunk.weights.reserve(kChunkTokens + 2);
        chunk.weights.push_back(1.0f);
        chunk.weights.insert(chunk.weights.end(), weights.begin(), weights.end());
        chunk.weights.resize(kChunkTokens + 2, 1.0f);
        out.chunks.push_back(std::move(chunk));
        ids.clear();
        weights.clear();
        last_comma = SIZE_MAX;
    };
    for (const WeightedText& piece : parse_emphasis(prompt)) {
        if (piece.is_break) {
            close(false);
            continue;
        }
        const std::vector<int32_t> tokens = tokenizer.encode(piece.text);
        // torch.asarray of A1111's Python floats: float32.
        const auto weight = static_cast<float>(piece.weight);
        size_t pos = 0;
        while (pos < tokens.size()) {
            const int32_t token = tokens[pos];
            if (token == comma) {
                last_comma = ids.size();
            } else if (ids.size() == kChunkTokens && last_comma != SIZE_MAX &&
                       ids.size() - last_comma <= kCommaBacktrack) {
                // Full soon after a comma: what follows the comma moves on to the next chunk.
                const std::vector<int64_t> moved_ids(ids.begin() + last_comma + 1, ids.end());
                const std::vector<float> moved_weights(weights.begin() + last_comma + 1,
                                                       weights.end());
                ids.resize(last_comma + 1);
                weights.resize(last_comma + 1);
                close(false);
                ids = moved_ids;
                weights = moved_weights;
            }
            if (ids.size() == kChunkTokens) {
                close(false);
            }
            const size_t vectors = tokenizer.added_word_length(token);
            if (vectors == 0) {
                ids.push_back(token);
                weights.push_back(weight);
                ++pos;
                continue;
            }
            // A textual inversion word's vectors stay together in one chunk.
            if (ids.size() + vectors > kChunkTokens) {
                close(false);
            }
            const size_t n = std::min(vectors, tokens.size() - pos);
            ids.insert(ids.end(), tokens.begin() + static_cast<long>(pos),
                       tokens.begin() + static_cast<long>(pos + n));
            weights.insert(weights.end(), n, weight);
            pos += n;
        }
    }
    if (!ids.empty() || out.chunks.empty()) {
        close(true);
    }
    return out;
}

}  // namespace sds
