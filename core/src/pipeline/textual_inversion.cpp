#include "sds/textual_inversion.h"

#include "sds/error.h"
#include "sds/safetensors.h"

namespace sds {

namespace {
at::Tensor as_rows(const at::Tensor& t, const std::string& file, const std::string& key) {
    if (t.dim() == 1) {
        return t.unsqueeze(0).to(at::kFloat).contiguous();
    }
    if (t.dim() != 2 || t.size(0) < 1) {
        throw FileError(file + ": the embedding '" + key + "' is not [vectors, width]");
    }
    return t.to(at::kFloat).contiguous();
}
}  // namespace

TextualInversion load_textual_inversion(const std::filesystem::path& path,
                                        const std::string& token) {
    const std::string file = path.string();
    const SafeTensorsFile f = SafeTensorsFile::open(path);
    TextualInversion ti;
    ti.token = token.empty() ? path.stem().string() : token;
    if (f.contains("clip_l") && f.contains("clip_g")) {  // SDXL
        ti.vectors = as_rows(f.tensor("clip_l"), file, "clip_l");
        ti.vectors_2 = as_rows(f.tensor("clip_g"), file, "clip_g");
        if (ti.vectors.size(0) != ti.vectors_2.size(0)) {
            throw FileError(file + ": clip_l and clip_g have different numbers of vectors");
        }
    } else if (f.contains("emb_params")) {  // A1111 .safetensors
        ti.vectors = as_rows(f.tensor("emb_params"), file, "emb_params");
    } else if (f.tensors().size() == 1) {  // diffusers (its key is the token), A1111 .pt ("*")
        const std::string& key = f.tensors().front().name;
        ti.vectors = as_rows(f.tensor(key), file, key);
        if (token.empty() && key != "*") {
            ti.token = key;
        }
    } else {
        throw FileError(file + ": not a textual inversion embedding (it has " +
                        std::to_string(f.tensors().size()) +
                        " tensors; an embedding has one, emb_params, string_to_param or clip_l "
                        "and clip_g)");
    }
    if (ti.token.empty()) {
        throw FileError(file + ": the embedding needs a word for prompts");
    }
    return ti;
}

}  // namespace sds
