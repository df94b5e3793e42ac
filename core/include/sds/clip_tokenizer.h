#pragma once
// The CLIP BPE tokenizer of SD 1.x, reading a model's tokenizer/vocab.json + merges.txt.
// It gives the ids transformers' CLIPTokenizer gives in the reference environment: special
// markers split out first, then NFC, whitespace runs to one space, lower case, the CLIP
// pre-tokenizer regex, byte-level mapping, and BPE with </w> on each word's last symbol.
// Thread-safe: all methods are const.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sds {

class ClipTokenizer {
  public:
    static ClipTokenizer load(const std::filesystem::path& vocab_json,
                              const std::filesystem::path& merges_txt);
    // A model's tokenizer folder: vocab.json + merges.txt, or else tokenizer.json (what
    // transformers 5 saves); the padding token and model_max_length from
    // tokenizer_config.json / special_tokens_map.json as CLIPTokenizer reads them (SD 2.x pads
    // with "!"). Throws sds::FileError naming the file.
    static ClipTokenizer load_folder(const std::filesystem::path& dir);

    // The ids of the text, without start and end markers.
    std::vector<int32_t> encode(std::string_view text) const;

    // [start] + ids + [end], truncated to `length` (the end marker always kept) and padded
    // with the padding token: what diffusers feeds the text encoder. length < 0: the
    // tokenizer's model_max_length (77 unless its config says otherwise).
    std::vector<int64_t> encode_padded(std::string_view text, int length = -1) const;

    // Words that stand for given ids (textual inversion: ids past the vocabulary, one per
    // vector of the embedding). A word is found in the normalized text (so regardless of case)
    // where it stands alone, not inside a longer word: a letter or digit of the word's first or
    // last character must not touch another. The longest word wins where several start at one
    // place. Replaces the words set before; none by default.
    struct AddedWord {
        std::string text;
        std::vector<int32_t> ids;
    };
    void set_added_words(const std::vector<AddedWord>& words);
    // How many ids the added word whose ids start with `id` has; 0 where no added word starts
    // with it.
    size_t added_word_length(int32_t id) const;

    // The prompt's token count the way A1111 shows it: "23/75", "80/150".
    std::string count_text(std::string_view text) const;

    int32_t start_id() const { return start_id_; }
    int32_t end_id() const { return end_id_; }
    int32_t pad_id() const { return pad_id_; }
    int max_length() const { return max_length_; }
    size_t vocab_size() const { return vocab_.size(); }

  private:
    static ClipTokenizer load_folder_vocabulary(const std::filesystem::path& dir);
    using Merge = std::pair<std::string, std::string>;
    static ClipTokenizer build(std::unordered_map<std::string, int32_t> vocab,
                               const std::vector<Merge>& merges, const std::string& vocab_file,
                               const std::string& merges_file);
    void bpe(const std::string& word, std::vector<int32_t>& out) const;
    void encode_segment(std::u32string_view text, std::vector<int32_t>& out) const;
    // The pre-tokenizer and BPE over normalized text from `from` to its end.
    void pretokenize(std::u32string_view text, size_t from, std::vector<int32_t>& out) const;

    std::unordered_map<std::string, int32_t> vocab_;
    // (left id << 32 | right id) -> (rank << 32 | merged id)
    std::unordered_map<uint64_t, uint64_t> merges_;
    int32_t start_id_ = -1;
    int32_t end_id_ = -1;
    int32_t pad_id_ = -1;  // CLIPTokenizer's default padding token is the end marker
    int max_length_ = 77;
    std::string byte_symbol_[256];  // byte -> its printable character, UTF-8
    struct Added {
        std::u32string text;  // normalized
        std::vector<int32_t> ids;
    };
    std::vector<Added> added_;  // longest first
};

}  // namespace sds
