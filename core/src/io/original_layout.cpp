#include "sds/original_layout.h"

#include <map>

#include "sds/error.h"

namespace sds {

namespace {

std::vector<std::string> split(const std::string& name) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t dot; (dot = name.find('.', start)) != std::string::npos; start = dot + 1) {
        parts.push_back(name.substr(start, dot - start));
    }
    parts.push_back(name.substr(start));
    return parts;
}

// parts[from..] joined by dots, the first one renamed through `renames` when listed there.
std::string join_from(const std::vector<std::string>& parts, size_t from,
                      const std::map<std::string, std::string>& renames = {}) {
    std::string out;
    for (size_t i = from; i < parts.size(); ++i) {
        const auto it = i == from ? renames.find(parts[i]) : renames.end();
        out += (out.empty() ? "" : ".") + (it != renames.end() ? it->second : parts[i]);
    }
    return out;
}

int index_at(const std::vector<std::string>& parts, size_t i) {
    return std::stoi(parts.at(i));
}

// diffusers' ResnetBlock2D names -> the original ResBlock's sequential layers.
const std::map<std::string, std::string> kUNetResnet = {
    {"norm1", "in_layers.0"},  {"conv1", "in_layers.2"},  {"time_emb_proj", "emb_layers.1"},
    {"norm2", "out_layers.0"}, {"conv2", "out_layers.3"}, {"conv_shortcut", "skip_connection"}};
const std::map<std::string, std::string> kVaeResnet = {{"conv_shortcut", "nin_shortcut"}};
const std::map<std::string, std::string> kVaeAttention = {
    {"group_norm", "norm"}, {"to_q", "q"}, {"to_k", "k"}, {"to_v", "v"}, {"to_out", "proj_out"}};

}  // namespace

std::string original_controlnet_key(const std::string& name, const UNetConfig& config,
                                    int cond_blocks) {
    const auto p = split(name);
    if (p.size() >= 3 && p[0] == "controlnet_cond_embedding") {
        if (p[1] == "conv_in") {
            return "input_hint_block.0." + join_from(p, 2);
        }
        if (p[1] == "conv_out") {
            return "input_hint_block." + std::to_string(2 * cond_blocks + 2) + "." +
                   join_from(p, 2);
        }
        if (p[1] == "blocks" && p.size() >= 4) {
            return "input_hint_block." + std::to_string(2 * index_at(p, 2) + 2) + "." +
                   join_from(p, 3);
        }
    }
    if (p.size() == 3 && p[0] == "controlnet_down_blocks") {
        return "zero_convs." + p[1] + ".0." + p[2];
    }
    if (p.size() == 2 && p[0] == "controlnet_mid_block") {
        return "middle_block_out.0." + p[1];
    }
    return original_unet_key(name, config);
}

std::string original_unet_key(const std::string& name, const UNetConfig& config) {
    const auto p = split(name);
    const int layers_per_block = static_cast<int>(config.layers_per_block);
    const int per_down = layers_per_block + 1;  // resnets (+ attentions), then the downsampler
    const int per_up = layers_per_block + 1;    // one resnet more than a down block
    try {
        if (p[0] == "time_embedding" && p.size() == 3 &&
            (p[1] == "linear_1" || p[1] == "linear_2")) {
            return std::string("time_embed.") + (p[1] == "linear_1" ? "0." : "2.") + p[2];
        }
        if (p[0] == "add_embedding" && p.size() == 3) {  // SDXL's pooled text and size ids
            return std::string("label_emb.0.") + (p[1] == "linear_1" ? "0." : "2.") + p[2];
        }
        if (p[0] == "conv_in") {
            return "input_blocks.0.0." + join_from(p, 1);
        }
        if (p[0] == "conv_norm_out") {
            return "out.0." + join_from(p, 1);
        }
        if (p[0] == "conv_out") {
            return "out.2." + join_from(p, 1);
        }
        if (p[0] == "down_blocks") {
            const int first = 1 + index_at(p, 1) * per_down;
            if (p[2] == "resnets") {
                return "input_blocks." + std::to_string(first + index_at(p, 3)) + ".0." +
                       join_from(p, 4, kUNetResnet);
            }
            if (p[2] == "attentions") {
                return "input_blocks." + std::to_string(first + index_at(p, 3)) + ".1." +
                       join_from(p, 4);
            }
            if (p[2] == "downsamplers" && p.at(4) == "conv") {
                return "input_blocks." + std::to_string(first + layers_per_block) + ".0.op." +
                       join_from(p, 5);
            }
        }
        if (p[0] == "mid_block") {
            if (p[1] == "resnets") {
                return "middle_block." + std::to_string(2 * index_at(p, 2)) + "." +
                       join_from(p, 3, kUNetResnet);
            }
            if (p[1] == "attentions") {
                return "middle_block.1." + join_from(p, 3);
            }
        }
        if (p[0] == "up_blocks") {
            const size_t block = static_cast<size_t>(index_at(p, 1));
            const int first = static_cast<int>(block) * per_up;
            if (p[2] == "resnets") {
                return "output_blocks." + std::to_string(first + index_at(p, 3)) + ".0." +
                       join_from(p, 4, kUNetResnet);
            }
            if (p[2] == "attentions") {
                return "output_blocks." + std::to_string(first + index_at(p, 3)) + ".1." +
                       join_from(p, 4);
            }
            if (p[2] == "upsamplers" && p.at(4) == "conv") {
                // The upsampler comes after the attention in the original output block.
                const bool attention = config.up_block_types.at(block) == "CrossAttnUpBlock2D";
                return "output_blocks." + std::to_string(first + layers_per_block) +
                       (attention ? ".2.conv." : ".1.conv.") + join_from(p, 5);
            }
        }
    } catch (const std::exception&) {  // a missing or non-numeric index
    }
    throw ModelError("the UNet module '" + name +
                     "' has no place in an original Stable Diffusion checkpoint");
}

TensorSource original_openclip_key(const std::string& full_name) {
    // A CLIPTextModelWithProjection's names have a text_model. level; OpenCLIP's do not.
    const std::string inner = "text_model.";
    const std::string name =
        full_name.rfind(inner, 0) == 0 ? full_name.substr(inner.size()) : full_name;
    static const std::map<std::string, std::string> whole = {
        {"embeddings.token_embedding.weight", "token_embedding.weight"},
        {"embeddings.position_embedding.weight", "positional_embedding"},
        {"final_layer_norm.weight", "ln_final.weight"},
        {"final_layer_norm.bias", "ln_final.bias"}};
    static const std::map<std::string, std::string> in_layer = {
        {"layer_norm1", "ln_1"},
        {"layer_norm2", "ln_2"},
        {"mlp.fc1", "mlp.c_fc"},
        {"mlp.fc2", "mlp.c_proj"},
        {"self_attn.out_proj", "attn.out_proj"}};
    if (const auto it = whole.find(name); it != whole.end()) {
        return it->second;
    }
    if (name == "text_projection.weight") {
        return TensorSource::transposed_of("text_projection");
    }
    const auto p = split(name);  // encoder.layers.I.MODULE[.SUB].weight|bias
    if (p.size() >= 5 && p[0] == "encoder" && p[1] == "layers" &&
        (p.back() == "weight" || p.back() == "bias")) {
        try {
            const std::string layer = "transformer.resblocks." + std::to_string(index_at(p, 2));
            std::string module;
            for (size_t i = 3; i + 1 < p.size(); ++i) {
                module += (module.empty() ? "" : ".") + p[i];
            }
            if (const auto it = in_layer.find(module); it != in_layer.end()) {
                return layer + "." + it->second + "." + p.back();
            }
            static const std::map<std::string, int> qkv = {
                {"self_attn.q_proj", 0}, {"self_attn.k_proj", 1}, {"self_attn.v_proj", 2}};
            if (const auto it = qkv.find(module); it != qkv.end()) {
                return {layer + ".attn.in_proj_" + p.back(), it->second, 3};
            }
        } catch (const std::exception&) {
        }
    }
    throw ModelError("the text encoder module '" + name +
                     "' has no place in an OpenCLIP checkpoint");
}

bool is_openclip_prefix(const std::string& prefix) {
    return prefix == kOriginalOpenClipPrefix || prefix == kOriginalXlText2Prefix;
}

bool openclip_unused(const std::string& key, int64_t layers, bool with_projection) {
    if ((key == "text_projection" && !with_projection) || key == "logit_scale") {
        return true;
    }
    const std::string blocks = "transformer.resblocks.";
    if (key.rfind(blocks, 0) != 0) {
        return false;
    }
    const std::string index =
        key.substr(blocks.size(), key.find('.', blocks.size()) - blocks.size());
    return !index.empty() && index.size() < 9 &&
           index.find_first_not_of("0123456789") == std::string::npos &&
           std::stoll(index) >= layers;
}

std::string original_vae_key(const std::string& name, const VaeConfig& config) {
    const auto p = split(name);
    const int blocks = static_cast<int>(config.block_out_channels.size());
    try {
        const std::string& coder = p.at(0);  // encoder / decoder
        if (p.size() == 3 && p[1] == "conv_norm_out") {
            return coder + ".norm_out." + p[2];
        }
        if (p.size() > 2 && p[1] == "mid_block") {
            if (p[2] == "resnets") {
                return coder + ".mid.block_" + std::to_string(index_at(p, 3) + 1) + "." +
                       join_from(p, 4);
            }
            if (p[2] == "attentions") {  // attentions.0.to_out.0.weight -> attn_1.proj_out.weight
                return coder + ".mid.attn_1." + kVaeAttention.at(p.at(4)) + "." + p.back();
            }
        }
        if (p.size() > 3 && (p[1] == "down_blocks" || p[1] == "up_blocks")) {
            const bool down = p[1] == "down_blocks";
            // The original numbers both stacks from the full-resolution level.
            const int level = down ? index_at(p, 2) : blocks - 1 - index_at(p, 2);
            const std::string base = coder + (down ? ".down." : ".up.") + std::to_string(level);
            if (p[3] == "resnets") {
                return base + ".block." + p.at(4) + "." + join_from(p, 5, kVaeResnet);
            }
            if (p[3] == "downsamplers" || p[3] == "upsamplers") {
                return base + (down ? ".downsample." : ".upsample.") + join_from(p, 5);
            }
        }
        if (p.size() == 3 && (p[1] == "conv_in" || p[1] == "conv_out")) {
            return name;
        }
        if (p.size() == 2 && (p[0] == "quant_conv" || p[0] == "post_quant_conv")) {
            return name;
        }
    } catch (const std::exception&) {
    }
    throw ModelError("the VAE module '" + name +
                     "' has no place in an original Stable Diffusion checkpoint");
}

}  // namespace sds
