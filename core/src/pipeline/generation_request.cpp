#include "sds/generation_request.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sds/error.h"

namespace sds {

void GenerationRequest::validate() const {
    auto fail = [](const std::string& m) { throw Error("request: " + m); };
    // "a, b, c": the names an unknown one is not.
    const auto listed = [](const std::vector<std::string>& names) {
        std::string out;
        for (const auto& n : names) {
            out += (out.empty() ? "" : ", ") + n;
        }
        return out;
    };
    if (steps < 1 || steps > 1000)
        fail("steps must be 1..1000 (got " + std::to_string(steps) + ")");
    if (!std::isfinite(guidance_scale) || guidance_scale < 0 || guidance_scale > 100) {
        fail("guidance must be 0..100");
    }
    if (seed < 0)
        fail("seed must not be negative");
    for (auto [name, v] : {std::pair{"width", width}, {"height", height}}) {
        if (v != 0 && (v < 8 || v > 8192 || v % 8 != 0)) {
            fail(std::string(name) + " must be a multiple of 8 from 8 to 8192 (got " +
                 std::to_string(v) + ")");
        }
    }
    if (batch_count < 1 || batch_count > 64)
        fail("batch count must be 1..64");
    if (!(strength > 0 && strength <= 1))
        fail("strength must be in (0, 1]");
    if (!mask_image.empty() && init_image.empty())
        fail("a mask (" + mask_image + ") needs an init image to inpaint");
    if (mask_padding < -1 || mask_padding > 4096)
        fail("mask padding must be -1 (off) or 0..4096 pixels");
    if (mask_padding >= 0 && !is_inpaint())
        fail("only the masked area (mask padding) is for inpainting");
    if (mask_blur < 0 || mask_blur > 64)
        fail("mask blur must be 0..64 pixels");
    if (!(hires_scale >= 1 && hires_scale <= 4))
        fail("hires scale must be 1..4 (1: off)");
    if (hires_steps < 0 || hires_steps > 1000)
        fail("hires steps must be 0..1000 (0: the steps)");
    if (!(hires_strength > 0 && hires_strength <= 1))
        fail("hires strength must be in (0, 1]");
    if (is_hires() && is_img2img())
        fail("the hires fix is for txt2img (an img2img or inpainting has its own size)");
    const auto& upscalers = hires_upscalers();
    if (std::find(upscalers.begin(), upscalers.end(), hires_upscaler) == upscalers.end())
        fail("unknown hires upscaler '" + hires_upscaler + "' (known: " + listed(upscalers) + ")");
    if (clip_skip < 0 || clip_skip > 11)
        fail("clip_skip must be 0..11");
    if (!(eta >= 0 && eta <= 1))
        fail("eta must be 0..1");
    if (!refiner.empty() && !(refiner_switch_at > 0 && refiner_switch_at < 1))
        fail(
            "the refiner's switch must be between 0 and 1 (the part of the way the model "
            "goes before the refiner takes over)");
    if (!refiner.empty() && (is_hires() || (is_inpaint() && mask_padding >= 0)))
        fail("the refiner does not go with the hires fix or inpainting only the masked area");
    if (!(aesthetic_score >= 0 && aesthetic_score <= 10) ||
        !(negative_aesthetic_score >= 0 && negative_aesthetic_score <= 10))
        fail("aesthetic scores must be 0..10");
    for (const auto& e : embeddings) {
        if (e.file.empty())
            fail("an embedding needs a file");
    }
    const auto& preprocessors = control_preprocessors();
    for (const auto& c : controls) {
        if (c.model.empty() || c.image.empty())
            fail("a ControlNet needs a model and an image");
        if (!(std::isfinite(c.scale) && c.scale >= 0 && c.scale <= 5))
            fail("a ControlNet's scale must be 0..5 (" + c.model + ")");
        if (!(c.start >= 0 && c.start < c.end && c.end <= 1))
            fail("a ControlNet's start and end must be 0 <= start < end <= 1 (" + c.model + ")");
        if (std::find(preprocessors.begin(), preprocessors.end(), c.preprocessor) ==
            preprocessors.end())
            fail("unknown ControlNet preprocessor '" + c.preprocessor +
                 "' (known: " + listed(preprocessors) + ")");
        // 2040: the largest gradient there is (|dx| + |dy| of 3x3 Sobel filters on 8 bits).
        if (!(c.canny_low >= 0 && c.canny_low <= c.canny_high && c.canny_high <= 2040))
            fail("a ControlNet's canny thresholds must be 0 <= low <= high <= 2040 (" + c.model +
                 ")");
        if (c.binary_threshold < 0 || c.binary_threshold > 255)
            fail("a ControlNet's binary threshold must be 0..255, 0 or 255 for Otsu's (" + c.model +
                 ")");
        if (c.preprocessor == "depth" && c.depth_model.empty())
            fail("the depth preprocessor needs a Depth Anything model folder (" + c.model + ")");
    }
    for (const auto& l : loras) {
        if (l.file.empty())
            fail("a LoRA needs a file");
        if (!std::isfinite(l.weight) || std::abs(l.weight) > 100 || !std::isfinite(l.unet()) ||
            std::abs(l.unet()) > 100) {
            fail("LoRA weight must be -100..100 (" + l.file + ")");
        }
    }
}

std::string GenerationRequest::to_json() const {
    nlohmann::ordered_json j;
    j["prompt"] = prompt;
    j["negative_prompt"] = negative_prompt;
    j["steps"] = steps;
    j["guidance_scale"] = guidance_scale;
    j["seed"] = seed;
    j["width"] = width;
    j["height"] = height;
    j["sampler"] = sampler_name(sampler);
    j["batch_count"] = batch_count;
    j["strength"] = strength;
    j["init_image"] = init_image;
    j["mask_image"] = mask_image;
    j["keep_unmasked"] = keep_unmasked;
    j["mask_blur"] = mask_blur;
    j["mask_padding"] = mask_padding;
    j["hires_scale"] = hires_scale;
    j["hires_steps"] = hires_steps;
    j["hires_strength"] = hires_strength;
    j["hires_upscaler"] = hires_upscaler;
    j["clip_skip"] = clip_skip;
    j["eta"] = eta;
    j["aesthetic_score"] = aesthetic_score;
    j["negative_aesthetic_score"] = negative_aesthetic_score;
    j["refiner"] = refiner;
    j["refiner_switch_at"] = refiner_switch_at;
    if (prompt_syntax != PromptSyntax::Plain) {  // left out when plain, as before there was one
        j["prompt_syntax"] = prompt_syntax_name(prompt_syntax);
    }
    j["loras"] = nlohmann::ordered_json::array();
    for (const auto& l : loras) {
        nlohmann::ordered_json lj = {{"file", l.file}, {"weight", l.weight}};
        if (l.unet_weight) {
            lj["unet_weight"] = *l.unet_weight;
        }
        j["loras"].push_back(lj);
    }
    if (!embeddings.empty()) {
        j["embeddings"] = nlohmann::ordered_json::array();
        for (const auto& e : embeddings) {
            j["embeddings"].push_back({{"file", e.file}, {"token", e.token}});
        }
    }
    if (!controls.empty()) {  // left out when none, as before there were any
        j["controls"] = nlohmann::ordered_json::array();
        for (const auto& c : controls) {
            nlohmann::ordered_json unit = {{"model", c.model}, {"image", c.image},
                                           {"scale", c.scale}, {"start", c.start},
                                           {"end", c.end},     {"preprocessor", c.preprocessor}};
            if (c.preprocessor == "canny") {  // the thresholds only where they mean something
                unit["canny_low"] = c.canny_low;
                unit["canny_high"] = c.canny_high;
            } else if (c.preprocessor == "binary") {
                unit["binary_threshold"] = c.binary_threshold;
            } else if (c.preprocessor == "depth") {
                unit["depth_model"] = c.depth_model;
            }
            j["controls"].push_back(unit);
        }
        j["control_guess_mode"] = control_guess_mode;
    }
    return j.dump();
}

GenerationRequest GenerationRequest::from_json(const std::string& text) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("request JSON is not valid: ") + e.what());
    }
    if (!j.is_object()) {
        throw Error("request JSON must be an object");
    }
    GenerationRequest r;
    auto get = [&](const char* key, auto& field) {
        if (!j.contains(key)) {
            return;
        }
        try {
            j.at(key).get_to(field);
        } catch (const nlohmann::json::exception&) {
            throw Error(std::string("request JSON: ") + key + " has the wrong type (" +
                        j.at(key).dump() + ")");
        }
    };
    get("prompt", r.prompt);
    get("negative_prompt", r.negative_prompt);
    get("steps", r.steps);
    get("guidance_scale", r.guidance_scale);
    get("seed", r.seed);
    get("width", r.width);
    get("height", r.height);
    std::string sampler = sampler_name(r.sampler);
    get("sampler", sampler);
    r.sampler = sampler_from_name(sampler);
    get("batch_count", r.batch_count);
    get("strength", r.strength);
    get("init_image", r.init_image);
    get("mask_image", r.mask_image);
    get("keep_unmasked", r.keep_unmasked);
    get("mask_blur", r.mask_blur);
    get("mask_padding", r.mask_padding);
    get("hires_scale", r.hires_scale);
    get("hires_steps", r.hires_steps);
    get("hires_strength", r.hires_strength);
    get("hires_upscaler", r.hires_upscaler);
    get("clip_skip", r.clip_skip);
    get("aesthetic_score", r.aesthetic_score);
    get("negative_aesthetic_score", r.negative_aesthetic_score);
    get("refiner", r.refiner);
    get("refiner_switch_at", r.refiner_switch_at);
    get("eta", r.eta);
    std::string syntax = prompt_syntax_name(r.prompt_syntax);
    get("prompt_syntax", syntax);
    const auto read_syntax = prompt_syntax_from_name(syntax);
    if (!read_syntax) {
        throw Error("request JSON: unknown prompt_syntax '" + syntax +
                    "' (known: plain, a1111, a1111-no-norm)");
    }
    r.prompt_syntax = *read_syntax;
    if (j.contains("loras")) {
        const auto& list = j.at("loras");
        if (!list.is_array()) {
            throw Error("request JSON: loras must be a list (" + list.dump() + ")");
        }
        for (const auto& l : list) {
            if (!l.is_object() || !l.contains("file") || !l.at("file").is_string() ||
                (l.contains("weight") && !l.at("weight").is_number()) ||
                (l.contains("unet_weight") && !l.at("unet_weight").is_number())) {
                throw Error(
                    "request JSON: a LoRA is {\"file\": path, \"weight\": number} (and "
                    "\"unet_weight\": number, the UNet's where it differs) (got " +
                    l.dump() + ")");
            }
            LoraRef ref{l.at("file").get<std::string>(), l.value("weight", 1.0)};
            if (l.contains("unet_weight")) {
                ref.unet_weight = l.at("unet_weight").get<double>();
            }
            r.loras.push_back(ref);
        }
    }
    if (j.contains("embeddings")) {
        const auto& list = j.at("embeddings");
        if (!list.is_array()) {
            throw Error("request JSON: embeddings must be a list (" + list.dump() + ")");
        }
        for (const auto& e : list) {
            if (!e.is_object() || !e.contains("file") || !e.at("file").is_string() ||
                (e.contains("token") && !e.at("token").is_string())) {
                throw Error(
                    "request JSON: an embedding is {\"file\": path, \"token\": word} (got " +
                    e.dump() + ")");
            }
            r.embeddings.push_back(
                {e.at("file").get<std::string>(), e.value("token", std::string())});
        }
    }
    get("control_guess_mode", r.control_guess_mode);
    if (j.contains("controls")) {
        const auto& list = j.at("controls");
        if (!list.is_array()) {
            throw Error("request JSON: controls must be a list (" + list.dump() + ")");
        }
        for (const auto& c : list) {
            const auto is = [&](const char* key, bool (nlohmann::json::*test)() const noexcept) {
                return !c.contains(key) || (c.at(key).*test)();
            };
            if (!c.is_object() || !c.contains("model") || !c.contains("image") ||
                !is("model", &nlohmann::json::is_string) ||
                !is("image", &nlohmann::json::is_string) ||
                !is("scale", &nlohmann::json::is_number) ||
                !is("start", &nlohmann::json::is_number) ||
                !is("end", &nlohmann::json::is_number) ||
                !is("preprocessor", &nlohmann::json::is_string) ||
                !is("canny_low", &nlohmann::json::is_number) ||
                !is("canny_high", &nlohmann::json::is_number) ||
                !is("binary_threshold", &nlohmann::json::is_number_integer) ||
                !is("depth_model", &nlohmann::json::is_string)) {
                throw Error(
                    "request JSON: a ControlNet is {\"model\": path, \"image\": path, "
                    "\"scale\": number, \"start\": number, \"end\": number, "
                    "\"preprocessor\": name, \"canny_low\": number, \"canny_high\": number, "
                    "\"binary_threshold\": integer, \"depth_model\": path} "
                    "(got " +
                    c.dump() + ")");
            }
            ControlRef ref;
            ref.model = c.at("model").get<std::string>();
            ref.image = c.at("image").get<std::string>();
            ref.scale = c.value("scale", ref.scale);
            ref.start = c.value("start", ref.start);
            ref.end = c.value("end", ref.end);
            ref.preprocessor = c.value("preprocessor", ref.preprocessor);
            ref.canny_low = c.value("canny_low", ref.canny_low);
            ref.canny_high = c.value("canny_high", ref.canny_high);
            ref.binary_threshold = c.value("binary_threshold", ref.binary_threshold);
            ref.depth_model = c.value("depth_model", ref.depth_model);
            r.controls.push_back(ref);
        }
    }
    return r;
}

namespace {
// A1111 writes a value containing ',', ':' or a newline as a JSON string.
std::string a1111_value(const std::string& v) {
    if (v.find_first_of(",:\n") != std::string::npos) {
        return nlohmann::json(v).dump();
    }
    return v;
}

std::string number(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
}

// "name: weight" per LoRA, its file's name without folder and extension (what A1111 shows);
// "name: te:unet" where the UNet's weight differs, as in the prompt tag.
std::string lora_list(const std::vector<LoraRef>& loras) {
    std::string out;
    for (const auto& l : loras) {
        const std::string stem = std::filesystem::path(l.file).stem().string();
        out += (out.empty() ? "" : ", ") + stem + ": " + number(l.weight);
        if (l.unet_weight) {
            out += ":" + number(*l.unet_weight);
        }
    }
    return out;
}
}  // namespace

std::string GenerationRequest::emphasis_a1111() const {
    switch (prompt_syntax) {
        case PromptSyntax::Plain: {
            // A1111's "None" reads brackets as text, as diffusers does (A1111 writes it where a
            // prompt has one; elsewhere the two read a prompt of up to 75 tokens alike).
            const auto bracket = [](const std::string& t) {
                return t.find_first_of("([") != std::string::npos;
            };
            return bracket(prompt) || bracket(negative_prompt) ? "None" : "";
        }
        case PromptSyntax::A1111:
            return "Original";  // A1111's default, which it leaves out; ours is plain
        case PromptSyntax::A1111NoNorm:
            return "No norm";
    }
    return "";
}

std::string GenerationRequest::to_a1111(int index, const std::string& model_name) const {
    A1111Files files;
    files.model = model_name;
    return to_a1111(index, files);
}

std::string GenerationRequest::to_a1111(int index, const A1111Files& files) const {
    // "name: hash, name: hash", the names without ':' and ',' (as A1111 writes them).
    const auto hash_list = [](const std::vector<std::pair<std::string, std::string>>& hashes) {
        std::string out;
        for (const auto& [name, hash] : hashes) {
            std::string clean;
            for (const char c : name) {
                if (c != ':' && c != ',') {
                    clean += c;
                }
            }
            out += (out.empty() ? "" : ", ") + clean + ": " + hash;
        }
        return out;
    };
    std::string out = prompt;
    if (!negative_prompt.empty()) {
        out += "\nNegative prompt: " + negative_prompt;
    }
    std::vector<std::pair<std::string, std::string>> kv = {
        {"Steps", std::to_string(steps)},
        {"Sampler", sampler_a1111(sampler)},
        {"Schedule type", schedule_a1111(sampler)},
        {"CFG scale", number(guidance_scale)},
        {"Seed", std::to_string(seed + index)},
        {"Size", std::to_string(width) + "x" + std::to_string(height)},
        {"Model hash", files.model_hash},
        {"Model", files.model},
        {"VAE hash", files.vae_hash},
        {"VAE", files.vae},
        {"Denoising strength", is_img2img() ? number(strength)
                               : is_hires() ? number(hires_strength)
                                            : ""},
        {"Mask blur", is_inpaint() && mask_blur > 0 ? std::to_string(mask_blur) : ""},
        {"Inpaint area", is_inpaint() && mask_padding >= 0 ? "Only masked" : ""},
        {"Masked area padding",
         is_inpaint() && mask_padding >= 0 ? std::to_string(mask_padding) : ""},
        {"Clip skip", clip_skip > 0 ? std::to_string(clip_skip + 1) : ""},
        {"Hires upscale", is_hires() ? number(hires_scale) : ""},
        {"Hires steps", is_hires() && hires_steps > 0 ? std::to_string(hires_steps) : ""},
        {"Hires upscaler", is_hires() ? hires_upscaler : ""},
        {"Eta", sampler == Sampler::Ddim && eta > 0 ? number(eta) : ""},
        {"Refiner",
         refiner.empty() ? "" : std::filesystem::path(refiner).filename().stem().string()},
        {"Refiner switch at", refiner.empty() ? "" : number(refiner_switch_at)},
        {"Lora", lora_list(loras)},
        {"Lora hashes", hash_list(files.lora_hashes)},
        {"TI hashes", hash_list(files.ti_hashes)},
        {"Emphasis", emphasis_a1111()},
        {"Version", "SD Studio"},
    };
    // A1111's ControlNet extension: a unit each, "ControlNet 0", "ControlNet 1", ...
    auto at = kv.end() - 2;  // before Emphasis and Version
    for (size_t k = 0; k < controls.size(); ++k) {
        const ControlRef& c = controls[k];
        const std::string unit =
            "Module: " + (c.preprocessor == "depth" ? "depth_anything" : c.preprocessor) +
            ", Model: " + std::filesystem::path(c.model).filename().stem().string() +
            ", Weight: " + number(c.scale) +
            (c.preprocessor == "canny" ? ", Threshold A: " + number(c.canny_low) +
                                             ", Threshold B: " + number(c.canny_high)
             : c.preprocessor == "binary" ? ", Threshold A: " + number(c.binary_threshold)
                                          : "") +
            ", Guidance Start: " + number(c.start) + ", Guidance End: " + number(c.end) +
            (control_guess_mode ? ", Guess Mode: True" : "");  // diffusers' (not A1111's)
        at = kv.insert(at, {"ControlNet " + std::to_string(k), unit}) + 1;
    }
    std::string line;
    for (const auto& [k, v] : kv) {
        if (!v.empty()) {
            line += (line.empty() ? "" : ", ") + k + ": " + a1111_value(v);
        }
    }
    return out + "\n" + line;
}

GenerationRequest GenerationRequest::from_a1111(const std::string& text) {
    GenerationRequest r;
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) {
        lines.push_back(l);
    }
    // The settings line: the last one, when it has at least 3 "Key: value" entries.
    static const std::regex kv(R"re(\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$))re");
    std::vector<std::pair<std::string, std::string>> settings;
    if (!lines.empty()) {
        const std::string& last = lines.back();
        for (auto it = std::sregex_iterator(last.begin(), last.end(), kv);
             it != std::sregex_iterator(); ++it) {
            std::string v = (*it)[2].str();
            if (!v.empty() && v.front() == '"') {
                try {
                    v = nlohmann::json::parse(v).get<std::string>();
                } catch (...) {
                }
            }
            settings.emplace_back((*it)[1].str(), v);
        }
        if (settings.size() >= 3) {
            lines.pop_back();
        } else {
            settings.clear();
        }
    }
    bool negative = false;
    for (const auto& l : lines) {
        if (l.rfind("Negative prompt:", 0) == 0) {
            negative = true;
            r.negative_prompt = l.substr(16);
            if (!r.negative_prompt.empty() && r.negative_prompt[0] == ' ') {
                r.negative_prompt.erase(0, 1);
            }
        } else if (negative) {
            r.negative_prompt += "\n" + l;
        } else {
            r.prompt += (r.prompt.empty() ? "" : "\n") + l;
        }
    }
    std::string sampler, schedule, upscaler, emphasis, version;
    bool only_masked = false;
    int padding = 32;  // A1111's default
    for (const auto& [k, v] : settings) {
        try {
            if (k == "Steps")
                r.steps = std::stoi(v);
            else if (k == "Sampler")
                sampler = v;
            else if (k == "Schedule type")
                schedule = v;
            else if (k == "CFG scale")
                r.guidance_scale = std::stod(v);
            else if (k == "Seed")
                r.seed = std::stoll(v);
            else if (k == "Size") {
                const auto x = v.find('x');
                r.width = std::stoi(v.substr(0, x));
                r.height = std::stoi(v.substr(x + 1));
            } else if (k == "Denoising strength")
                r.strength = std::stod(v);
            else if (k == "Hires upscale")
                r.hires_scale = std::stod(v);
            else if (k == "Hires steps")
                r.hires_steps = std::stoi(v);
            else if (k == "Hires upscaler")
                upscaler = v;
            else if (k == "Mask blur")
                r.mask_blur = std::stoi(v);
            else if (k == "Masked area padding")
                padding = std::stoi(v);
            else if (k == "Inpaint area")
                only_masked = v == "Only masked";
            else if (k == "Clip skip")
                r.clip_skip = std::max(0, std::stoi(v) - 1);
            else if (k == "Eta")
                r.eta = std::stod(v);
            else if (k == "Emphasis")
                emphasis = v;
            else if (k == "Version")
                version = v;
        } catch (const std::exception&) {
            throw Error("A1111 parameters: '" + k + ": " + v + "' is not a valid value");
        }
    }
    if (only_masked) {
        r.mask_padding = std::max(0, padding);
    }
    // A1111 reads prompts with its syntax ("Original") unless the text says otherwise; SD
    // Studio's texts say so where its syntax is not plain.
    if (emphasis == "None" || (emphasis.empty() && version == "SD Studio")) {
        r.prompt_syntax = PromptSyntax::Plain;
    } else if (emphasis == "Original" || emphasis.empty()) {
        r.prompt_syntax = PromptSyntax::A1111;
    } else if (emphasis == "No norm") {
        r.prompt_syntax = PromptSyntax::A1111NoNorm;
    } else {
        throw Error("A1111 parameters: 'Emphasis: " + emphasis +
                    "' is not one SD Studio has (it has Original, No norm and None)");
    }
    if (r.is_hires()) {  // A1111 writes the hires pass's strength as the denoising strength
        r.hires_strength = r.strength;
        // A1111's other upscalers (ESRGAN and the like, which SD Studio does not have) become
        // Lanczos.
        const auto& upscalers = hires_upscalers();
        if (std::find(upscalers.begin(), upscalers.end(), upscaler) != upscalers.end()) {
            r.hires_upscaler = upscaler;
        }
        r.strength = GenerationRequest().strength;
    }
    if (!sampler.empty()) {
        // "Uniform" is k-diffusion's spacing of the timesteps over the train range, as
        // diffusers' samplers space them by default.
        const bool own = schedule.empty() || schedule == "Automatic" || schedule == "Uniform";
        try {
            r.sampler = sampler_from_name(own ? sampler : sampler + " " + schedule);
        } catch (const Error&) {
            // Old files name the schedule in the sampler ("DPM++ 2M Karras"), and may repeat
            // it. A1111 gives every sampler a schedule type: those without twins here (Euler a,
            // DDIM, LCM, PLMS) run as they are.
            const Sampler named = sampler_from_name(sampler);  // throws: an unknown sampler
            if (schedule != schedule_a1111(named) &&
                with_schedule(named, NoiseSchedule::Karras).has_value()) {
                throw Error("A1111 parameters: 'Schedule type: " + schedule + "' for '" + sampler +
                            "' is not one SD Studio has (it has Karras, Exponential and Beta)");
            }
            r.sampler = named;
        }
    }
    return r;
}

namespace {
// The files below `dir` (itself too) whose extension is one of `exts`, sorted by path; none
// where `dir` is empty or not a folder.
std::vector<std::filesystem::path> files_below(const std::string& dir,
                                               std::initializer_list<const char*> exts) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    std::error_code ec;
    if (dir.empty() || !fs::is_directory(dir, ec)) {
        return files;
    }
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
        const std::string ext = it->path().extension().string();
        if (std::any_of(exts.begin(), exts.end(), [&](const char* e) { return ext == e; }) &&
            it->is_regular_file(ec)) {
            files.push_back(it->path());
        }
    }
    std::sort(files.begin(), files.end());
    return files;
}

// The LoRA file NAME names in `dir` or below: NAME.safetensors, .pt or .ckpt, the folder's own
// first, else the first in a sorted walk.
std::string find_lora(const std::filesystem::path& dir, const std::string& name) {
    namespace fs = std::filesystem;
    for (const char* ext : {".safetensors", ".pt", ".ckpt"}) {
        if (fs::is_regular_file(dir / (name + ext))) {
            return (dir / (name + ext)).string();
        }
    }
    for (const fs::path& p : lora_files(dir.string())) {
        if (p.stem() == name) {
            return p.string();
        }
    }
    return {};
}
}  // namespace

std::vector<std::filesystem::path> lora_files(const std::string& dir) {
    return files_below(dir, {".safetensors", ".pt", ".ckpt"});
}

std::vector<std::filesystem::path> embedding_files(const std::string& dir) {
    return files_below(dir, {".pt", ".safetensors", ".bin"});
}

std::vector<LoraTag> lora_tags(const std::string& text) {
    // <lora:NAME> and whatever follows it, up to the tag's end: A1111's fields, ':'-separated.
    static const std::regex tag(R"(<lora:([^:>]+)((?::[^:>]*)*)>)");
    std::vector<LoraTag> tags;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), tag);
         it != std::sregex_iterator(); ++it) {
        const std::smatch& m = *it;
        tags.push_back({static_cast<size_t>(m.position(0)), static_cast<size_t>(m.length(0)),
                        m[1].str(), m[2].str()});
    }
    return tags;
}

std::string without_lora_tags(const std::string& text) {
    std::string rest;
    size_t last = 0;
    for (const LoraTag& t : lora_tags(text)) {
        rest += text.substr(last, t.position - last);
        last = t.position + t.length;
    }
    return rest + text.substr(last);
}

void GenerationRequest::take_lora_tags(const std::string& lora_dir) {
    for (std::string* text : {&prompt, &negative_prompt}) {
        for (const LoraTag& t : lora_tags(*text)) {
            const std::string& name = t.name;
            const std::string whole = text->substr(t.position, t.length);
            // A1111: positional TE, UNET (default: TE), DYN; or named te=, unet=, dyn=.
            std::vector<std::string> positional;
            std::map<std::string, std::string> named;
            const std::string& fields = t.fields;
            for (size_t at = 0; at < fields.size();) {
                const size_t next = std::min(fields.find(':', at + 1), fields.size());
                const std::string field = fields.substr(at + 1, next - at - 1);
                const size_t eq = field.find('=');
                if (eq == std::string::npos) {
                    positional.push_back(field);
                } else {
                    named[field.substr(0, eq)] = field.substr(eq + 1);
                }
                at = next;
            }
            auto weight_of = [&](const std::string& w) {
                char* end = nullptr;
                const double v = std::strtod(w.c_str(), &end);
                if (w.empty() || end == nullptr || *end != '\0') {
                    throw Error("the prompt's " + whole + ": its weight '" + w +
                                "' is not a number");
                }
                return v;
            };
            for (const auto& [key, value] : named) {
                if (key != "te" && key != "unet" && key != "dyn") {
                    throw Error("the prompt's " + whole + ": '" + key +
                                "=' is not one of A1111's te=, unet=, dyn=");
                }
            }
            if (positional.size() > 2 || named.count("dyn")) {
                throw Error("the prompt's " + whole +
                            ": a dynamic rank (A1111's dyn, the third field) is not something SD "
                            "Studio does; give the text encoder's and the UNet's weights alone");
            }
            LoraRef ref;
            ref.weight = named.count("te")     ? weight_of(named.at("te"))
                         : !positional.empty() ? weight_of(positional[0])
                                               : 1.0;
            if (named.count("unet") || positional.size() > 1) {
                const double unet =
                    weight_of(named.count("unet") ? named.at("unet") : positional[1]);
                if (unet != ref.weight) {
                    ref.unet_weight = unet;
                }
            }
            if (lora_dir.empty()) {
                throw Error("the prompt names a LoRA, " + whole +
                            ", but no LoRA folder was given to find it in");
            }
            ref.file = find_lora(lora_dir, name);
            if (ref.file.empty()) {
                throw Error("the prompt's " + whole + ": no " + name +
                            ".safetensors (.pt, .ckpt) in " + lora_dir + " or below");
            }
            loras.push_back(ref);
        }
        *text = without_lora_tags(*text);
    }
}

const std::vector<std::string>& control_preprocessors() {
    static const std::vector<std::string> names = {"none",   "invert", "canny",
                                                   "binary", "depth",  "lineart_standard"};
    return names;
}

const std::vector<std::string>& hires_upscalers() {
    static const std::vector<std::string> names = {"Lanczos",
                                                   "Latent",
                                                   "Latent (antialiased)",
                                                   "Latent (bicubic)",
                                                   "Latent (bicubic antialiased)",
                                                   "Latent (nearest)",
                                                   "Latent (nearest-exact)"};
    return names;
}

std::pair<int, int> GenerationRequest::hires_size(int w, int h) const {
    auto scaled = [&](int v) { return static_cast<int>(v * hires_scale) / 8 * 8; };
    return {scaled(w), scaled(h)};
}

namespace {
bool word_char(unsigned char c) {
    return std::isalnum(c) || c >= 0x80;  // letters and digits; any non-ASCII as a letter
}
}  // namespace

size_t find_word(const std::string& text, const std::string& word, size_t from) {
    if (word.empty()) {
        return std::string::npos;
    }
    auto lower = [](std::string s) {
        for (char& c : s) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        return s;
    };
    const std::string t = lower(text), w = lower(word);
    const bool open = word_char(w.front()), close = word_char(w.back());
    for (size_t at = t.find(w, from); at != std::string::npos; at = t.find(w, at + 1)) {
        const size_t end = at + w.size();
        if ((!open || at == 0 || !word_char(t[at - 1])) &&
            (!close || end == t.size() || !word_char(t[end]))) {
            return at;
        }
    }
    return std::string::npos;
}

void GenerationRequest::find_embeddings(const std::string& dir) {
    for (const std::filesystem::path& f : embedding_files(dir)) {
        const std::string token = f.stem().string();
        const bool known = std::any_of(embeddings.begin(), embeddings.end(),
                                       [&](const EmbeddingRef& e) { return e.token == token; });
        const auto has_word = [&](const std::string& text) {
            return find_word(text, token) != std::string::npos;
        };
        if (!known && (has_word(prompt) || has_word(negative_prompt))) {
            embeddings.push_back({f.string(), token});
        }
    }
}

}  // namespace sds
