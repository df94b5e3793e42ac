#include "sds/clip_tokenizer.h"

#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sds/error.h"
#include "text/unicode.h"

namespace sds {

namespace fs = std::filesystem;
using unicode::is_letter;
using unicode::is_number;
using unicode::is_whitespace;

namespace {

constexpr std::u32string_view kStartMarker = U"<|startoftext|>";
constexpr std::u32string_view kEndMarker = U"<|endoftext|>";
constexpr std::string_view kEndOfWord = "</w>";

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw FileError(path.string() + ": cannot open the tokenizer file");
    }
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// GPT-2/CLIP byte-to-character table: printable Latin-1 bytes stand for themselves, the others
// take code points from 256 upwards in byte order.
void make_byte_symbols(std::string (&table)[256]) {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        table[b].clear();
        unicode::append_utf8(table[b], printable ? char32_t(b) : char32_t(256 + extra++));
    }
}

bool starts_with(std::u32string_view s, size_t i, std::u32string_view prefix) {
    return s.substr(i, prefix.size()) == prefix;
}

}  // namespace

namespace {

std::unordered_map<std::string, int32_t> vocab_from_json(const nlohmann::json& vocab,
                                                         const std::string& file) {
    if (!vocab.is_object()) {
        throw FileError(file + ": expected an object of token -> id");
    }
    std::unordered_map<std::string, int32_t> out;
    for (auto& [token, id] : vocab.items()) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
            id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
            throw FileError(file + ": the id of token '" + token +
                            "' is not a non-negative integer");
        }
        out.emplace(token, id.get<int32_t>());
    }
    return out;
}

nlohmann::json parse_json(const fs::path& path) {
    try {
        return nlohmann::json::parse(read_text(path));
    } catch (const nlohmann::json::exception& e) {
        throw FileError(path.string() + ": not valid JSON: " + e.what());
    }
}

}  // namespace

ClipTokenizer ClipTokenizer::load(const fs::path& vocab_json, const fs::path& merges_txt) {
    auto vocab = vocab_from_json(parse_json(vocab_json), vocab_json.string());
    std::vector<Merge> merges;
    std::istringstream lines(read_text(merges_txt));
    std::string line;
    int line_no = 0;
    while (std::getline(lines, line)) {
        ++line_no;
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) {
            continue;
        }
        const size_t sp = line.find(' ');
        if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
            throw FileError(merges_txt.string() + ": line " + std::to_string(line_no) +
                            " is not 'left right'");
        }
        merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    }
    return build(std::move(vocab), merges, vocab_json.string(), merges_txt.string());
}

namespace {

// A special token as tokenizer files write it: "text", or {"content": "text", ...}.
std::optional<std::string> token_text(const nlohmann::json& config, const char* key,
                                      const fs::path& file) {
    if (!config.contains(key) || config[key].is_null()) {
        return std::nullopt;
    }
    const auto& v = config[key];
    if (v.is_string()) {
        return v.get<std::string>();
    }
    if (v.is_object() && v.contains("content") && v["content"].is_string()) {
        return v["content"].get<std::string>();
    }
    throw FileError(file.string() + ": " + key + " must be a token (text or {\"content\": ...})");
}

}  // namespace

ClipTokenizer ClipTokenizer::load_folder(const fs::path& dir) {
    ClipTokenizer tok = load_folder_vocabulary(dir);
    // As transformers: tokenizer_config.json, then special_tokens_map.json's tokens over it
    // when the config does not list its added tokens itself.
    std::optional<std::string> pad;
    fs::path pad_file;  // where it was read, for the error
    const fs::path config_file = dir / "tokenizer_config.json";
    bool added_tokens_listed = false;
    if (fs::exists(config_file)) {
        const nlohmann::json config = parse_json(config_file);
        if (!config.is_object()) {
            throw FileError(config_file.string() + ": expected a JSON object");
        }
        pad = token_text(config, "pad_token", config_file);
        pad_file = config_file;
        added_tokens_listed = config.contains("added_tokens_decoder");
        if (config.contains("model_max_length") && !config["model_max_length"].is_null()) {
            const auto& m = config["model_max_length"];
            // Without a limit transformers writes a huge number; diffusers then cannot pad,
            // and a CLIP text encoder takes 77.
            if (!m.is_number() || m.get<double>() < 2) {
                throw FileError(config_file.string() + ": model_max_length must be a number >= 2");
            }
            if (m.get<double>() <= 100000) {
                tok.max_length_ = m.get<int>();
            }
        }
    }
    const fs::path map_file = dir / "special_tokens_map.json";
    if (!added_tokens_listed && fs::exists(map_file)) {
        if (auto p = token_text(parse_json(map_file), "pad_token", map_file)) {
            pad = p;
            pad_file = map_file;
        }
    }
    if (pad) {
        const auto it = tok.vocab_.find(*pad);
        if (it == tok.vocab_.end()) {
            throw FileError(pad_file.string() + ": pad_token '" + *pad +
                            "' is not in the vocabulary");
        }
        tok.pad_id_ = it->second;
    }
    return tok;
}

ClipTokenizer ClipTokenizer::load_folder_vocabulary(const fs::path& dir) {
    if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) {
        return load(dir / "vocab.json", dir / "merges.txt");
    }
    const fs::path path = dir / "tokenizer.json";
    if (!fs::exists(path)) {
        throw FileError(dir.string() +
                        ": no tokenizer files (vocab.json + merges.txt, or "
                        "tokenizer.json)");
    }
    const nlohmann::json j = parse_json(path);
    const std::string file = path.string();
    if (!j.contains("model") || !j["model"].is_object() || j["model"].value("type", "") != "BPE") {
        throw FileError(file + ": model.type must be \"BPE\" for a CLIP tokenizer");
    }
    const auto& model = j["model"];
    if (model.value("end_of_word_suffix", "") != "</w>") {
        throw FileError(file + ": model.end_of_word_suffix must be \"</w>\" for a CLIP tokenizer");
    }
    auto vocab = vocab_from_json(model.value("vocab", nlohmann::json()), file + ": model.vocab");
    std::vector<Merge> merges;
    if (!model.contains("merges") || !model["merges"].is_array()) {
        throw FileError(file + ": model.merges is missing or not a list");
    }
    for (const auto& m : model["merges"]) {
        if (m.is_string()) {  // older files: "left right"
            const std::string s = m.get<std::string>();
            const size_t sp = s.find(' ');
            if (sp == std::string::npos) {
                throw FileError(file + ": merge '" + s + "' is not 'left right'");
            }
            merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        } else {
            throw FileError(file + ": merge " + m.dump() + " is not a pair of strings");
        }
    }
    return build(std::move(vocab), merges, file, file);
}

ClipTokenizer ClipTokenizer::build(std::unordered_map<std::string, int32_t> vocab,
                                   const std::vector<Merge>& merges, const std::string& vocab_file,
                                   const std::string& merges_file) {
    ClipTokenizer tok;
    make_byte_symbols(tok.byte_symbol_);
    tok.vocab_ = std::move(vocab);
    auto id_of = [&](const std::string& token, const std::string& file) {
        auto it = tok.vocab_.find(token);
        if (it == tok.vocab_.end()) {
            throw FileError(file + ": token '" + token + "' is not in the vocabulary");
        }
        return it->second;
    };
    tok.start_id_ = id_of("<|startoftext|>", vocab_file);
    tok.end_id_ = id_of("<|endoftext|>", vocab_file);
    tok.pad_id_ = tok.end_id_;
    for (const auto& sym : tok.byte_symbol_) {
        id_of(sym, vocab_file);
        id_of(sym + std::string(kEndOfWord), vocab_file);
    }
    uint64_t rank = 0;
    for (const auto& [left, right] : merges) {
        const uint64_t key = (uint64_t(uint32_t(id_of(left, merges_file))) << 32) |
                             uint32_t(id_of(right, merges_file));
        const int32_t merged = id_of(left + right, merges_file);
        tok.merges_.emplace(key, (rank++ << 32) | uint32_t(merged));  // first rank wins
    }
    return tok;
}

void ClipTokenizer::bpe(const std::string& word, std::vector<int32_t>& out) const {
    // Symbols start as the word's byte characters; the last carries the end-of-word mark.
    std::vector<int32_t> syms;
    const auto chars = unicode::decode_utf8(word);
    for (size_t i = 0; i < chars.size(); ++i) {
        std::string s;
        unicode::append_utf8(s, chars[i]);
        if (i + 1 == chars.size()) {
            s += kEndOfWord;
        }
        syms.push_back(vocab_.at(s));
    }
    // Merge the lowest-ranked adjacent pair (leftmost first) until no pair is a merge. A merge
    // always ranks after the merges that made its parts, so this equals merging every
    // occurrence of the best pair per pass.
    while (syms.size() > 1) {
        uint64_t best = std::numeric_limits<uint64_t>::max();
        size_t best_at = 0;
        for (size_t i = 0; i + 1 < syms.size(); ++i) {
            auto it = merges_.find((uint64_t(uint32_t(syms[i])) << 32) | uint32_t(syms[i + 1]));
            if (it != merges_.end() && it->second < best) {
                best = it->second;
                best_at = i;
            }
        }
        if (best == std::numeric_limits<uint64_t>::max()) {
            break;
        }
        syms[best_at] = static_cast<int32_t>(best & 0xFFFFFFFFu);
        syms.erase(syms.begin() + static_cast<long>(best_at) + 1);
    }
    out.insert(out.end(), syms.begin(), syms.end());
}

void ClipTokenizer::encode_segment(std::u32string_view raw, std::vector<int32_t>& out) const {
    // Normalizer: NFC, every whitespace run to one space, lower case.
    std::u32string text = unicode::nfc(raw);
    {
        std::u32string collapsed;
        for (size_t i = 0; i < text.size();) {
            if (is_whitespace(text[i])) {
                collapsed.push_back(U' ');
                while (i < text.size() && is_whitespace(text[i])) {
                    ++i;
                }
            } else {
                collapsed.push_back(text[i++]);
            }
        }
        text = unicode::lowercase(collapsed);
    }
    // Added words first: the text between them goes through the pre-tokenizer and BPE.
    if (!added_.empty()) {
        auto alnum = [](char32_t c) { return is_letter(c) || is_number(c); };
        size_t piece = 0;
        for (size_t i = 0; i < text.size();) {
            const Added* hit = nullptr;
            if (i == 0 || !alnum(text[i - 1]) || !alnum(text[i])) {
                for (const Added& a : added_) {
                    const size_t end = i + a.text.size();
                    if (starts_with(text, i, a.text) &&
                        (end == text.size() || !alnum(text[end]) || !alnum(a.text.back()))) {
                        hit = &a;
                        break;
                    }
                }
            }
            if (!hit) {
                ++i;
                continue;
            }
            pretokenize(std::u32string_view(text).substr(0, i), piece, out);
            out.insert(out.end(), hit->ids.begin(), hit->ids.end());
            i += hit->text.size();
            piece = i;
        }
        pretokenize(text, piece, out);
        return;
    }
    pretokenize(text, 0, out);
}

void ClipTokenizer::pretokenize(std::u32string_view text, size_t from,
                                std::vector<int32_t>& out) const {
    auto emit = [&](size_t begin, size_t end) {
        std::string word;
        for (char c : unicode::encode_utf8(text.substr(begin, end - begin))) {
            word += byte_symbol_[static_cast<uint8_t>(c)];
        }
        bpe(word, out);
    };
    // Pre-tokenizer: the CLIP regex
    //   <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
    // then the byte-level pre-tokenizer's GPT-2 regex, which splits a marker into "<|", the
    // word and "|>" and leaves the other pieces whole.
    static constexpr std::u32string_view kContractions[] = {U"'s", U"'t",  U"'re", U"'ve",
                                                            U"'m", U"'ll", U"'d"};
    size_t i = from;
    while (i < text.size()) {
        const char32_t c = text[i];
        if (is_whitespace(c)) {
            ++i;
            continue;
        }
        bool matched = false;
        for (auto marker : {kStartMarker, kEndMarker}) {
            if (starts_with(text, i, marker)) {
                emit(i, i + 2);
                emit(i + 2, i + marker.size() - 2);
                emit(i + marker.size() - 2, i + marker.size());
                i += marker.size();
                matched = true;
                break;
            }
        }
        for (size_t k = 0; !matched && k < std::size(kContractions); ++k) {
            if (starts_with(text, i, kContractions[k])) {
                emit(i, i + kContractions[k].size());
                i += kContractions[k].size();
                matched = true;
            }
        }
        if (matched) {
            continue;
        }
        size_t j = i + 1;
        if (is_letter(c)) {
            while (j < text.size() && is_letter(text[j])) {
                ++j;
            }
        } else if (!is_number(c)) {
            while (j < text.size() && !is_whitespace(text[j]) && !is_letter(text[j]) &&
                   !is_number(text[j])) {
                ++j;
            }
        }
        emit(i, j);
        i = j;
    }
}

void ClipTokenizer::set_added_words(const std::vector<AddedWord>& words) {
    added_.clear();
    for (const AddedWord& w : words) {
        std::u32string text = unicode::lowercase(unicode::nfc(unicode::decode_utf8(w.text)));
        if (text.empty() || w.ids.empty()) {
            throw Error("an added word needs text and ids");
        }
        added_.push_back({std::move(text), w.ids});
    }
    std::stable_sort(added_.begin(), added_.end(),
                     [](const Added& a, const Added& b) { return a.text.size() > b.text.size(); });
}

size_t ClipTokenizer::added_word_length(int32_t id) const {
    for (const Added& a : added_) {
        if (a.ids.front() == id) {
            return a.ids.size();
        }
    }
    return 0;
}

std::vector<int32_t> ClipTokenizer::encode(std::string_view text) const {
    // The markers typed literally are special tokens, found before any normalization.
    const std::u32string s = unicode::decode_utf8(text);
    std::vector<int32_t> ids;
    size_t seg = 0, i = 0;
    while (i < s.size()) {
        int32_t special = -1;
        size_t len = 0;
        if (starts_with(s, i, kStartMarker)) {
            special = start_id_, len = kStartMarker.size();
        } else if (starts_with(s, i, kEndMarker)) {
            special = end_id_, len = kEndMarker.size();
        }
        if (special < 0) {
            ++i;
            continue;
        }
        encode_segment(std::u32string_view(s).substr(seg, i - seg), ids);
        ids.push_back(special);
        i += len;
        seg = i;
    }
    encode_segment(std::u32string_view(s).substr(seg), ids);
    return ids;
}

std::vector<int64_t> ClipTokenizer::encode_padded(std::string_view text, int length) const {
    if (length < 0) {
        length = max_length_;
    }
    if (length < 2) {
        throw Error("encode_padded: length must be at least 2");
    }
    const auto ids = encode(text);
    std::vector<int64_t> seq;
    seq.reserve(length);
    seq.push_back(start_id_);
    const size_t keep = std::min(ids.size(), static_cast<size_t>(length - 2));
    seq.insert(seq.end(), ids.begin(), ids.begin() + static_cast<long>(keep));
    seq.push_back(end_id_);
    seq.resize(length, pad_id_);
    return seq;
}

std::string ClipTokenizer::count_text(std::string_view text) const {
    const size_t n = encode(text).size();
    const size_t limit = std::max<size_t>(1, (n + 74) / 75) * 75;
    return std::to_string(n) + "/" + std::to_string(limit);
}

}  // namespace sds
