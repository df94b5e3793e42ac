#pragma once
// Textual inversion embeddings: learned vectors that a word of the
// prompt stands for, as diffusers' load_textual_inversion and A1111's embeddings folder use them.
//
// Files: A1111's .pt (string_to_param["*"], [n, hidden]) and .safetensors (emb_params),
// diffusers' learned_embeds (.safetensors or .bin: one tensor under the token's name), and SDXL
// embeddings (clip_l for the first text encoder, clip_g for the second). n > 1 vectors take n
// tokens in the prompt (diffusers' multi-vector tokens).
#include <filesystem>
#include <string>

#include <ATen/core/Tensor.h>

namespace sds {

struct TextualInversion {
    std::string token;     // the word in prompts
    at::Tensor vectors;    // [n, hidden] for the (first) text encoder, float32, CPU
    at::Tensor vectors_2;  // SDXL: [n, hidden_2] for the second; undefined for SD 1.x/2.x files
};

// Reads an embedding file. `token` empty: the key of a diffusers file, else the file's name
// without its extension (as A1111 names embeddings). Throws sds::FileError naming the file.
TextualInversion load_textual_inversion(const std::filesystem::path& file,
                                        const std::string& token = {});

}  // namespace sds
