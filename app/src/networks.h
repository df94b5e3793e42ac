#pragma once
// A1111's extra networks, as its cards put them into a prompt: a LoRA as "<lora:NAME:1>" (which
// GenerationRequest::take_lora_tags reads), an embedding as its word (which find_embeddings
// reads); a second click takes it out again. The studio's Networks menu lists them.
#include <string>
#include <vector>

namespace sds::app {

// A LoRA or an embedding file in its folder.
struct NetworkFile {
    std::string name;   // the file's name without extension: a LoRA tag's NAME, an embedding's word
    std::string shown;  // its path below the folder, without extension ("styles/ink")
    std::string path;
    // A LoRA's most frequent caption tags (kohya-ss's ss_tag_frequency), most frequent first;
    // empty where the file does not say.
    std::vector<std::string> trained_on;
};

// The files the prompts can name, in `folder` and below (GenerationRequest's lora_files and
// embedding_files); none where `folder` is empty or not a folder.
std::vector<NetworkFile> list_loras(const std::string& folder);
std::vector<NetworkFile> list_embeddings(const std::string& folder);

// Whether `prompt` has a <lora:NAME...> tag for `name`.
bool has_lora(const std::string& prompt, const std::string& name);
// Where `prompt` has a tag for `name`: the prompt with each such tag taken out, with the space
// before it (or, at the start, after it). Else the prompt with "<lora:NAME:WEIGHT>" added at its
// end, after a space. Toggling twice gives the prompt back (but for white space at its end).
std::string toggle_lora(const std::string& prompt, const std::string& name, double weight = 1.0);
// The same for an embedding's word, found as find_word finds it.
bool has_word(const std::string& prompt, const std::string& word);
std::string toggle_word(const std::string& prompt, const std::string& word);

}  // namespace sds::app
