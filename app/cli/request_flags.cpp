#include "request_flags.h"

#include "image_io.h"
#include "sds/scheduler.h"
#include "settings.h"
#include "styles.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

namespace sds::cli {

namespace {
const char* const kFlagsBeforeSamplers =
    "  --model PATH       a diffusers model folder (SD 1.x, 2.x, SDXL) or a single-file\n"
    "                     SD 1.x/2.x/SDXL checkpoint (.safetensors or .ckpt, original\n"
    "                     layout; default: the bundled demo model)\n"
    "  --config DIR       a single file's configs and tokenizers: a diffusers folder,\n"
    "                     weights optional (default: SD 1.5's, models/sd1-config; SD 2.1's,\n"
    "                     models/sd2-config, for an SD 2.x file; SDXL 1.0's,\n"
    "                     models/sdxl-config, for an SDXL file)\n"
    "  --vae PATH         a VAE instead of the model's (A1111's SD VAE): a diffusers\n"
    "                     AutoencoderKL folder or one file, diffusers' or original names\n"
    "                     (vae-ft-mse-840000-ema-pruned.safetensors and the like)\n"
    "  --prompt TEXT      --negative TEXT\n"
    "  --prompt-syntax S  plain (the prompts as typed, cut after 75 tokens, as diffusers;\n"
    "                     the default), a1111 (A1111's (word), (word:1.3), [word], BREAK,\n"
    "                     and prompts past 75 tokens in chunks of 75) or a1111-no-norm\n"
    "                     (the same with A1111's Emphasis \"No norm\")\n"
    "  --steps N (50)     --guidance G (7.5)     --seed S (0)\n"
    "  --sampler NAME     the model's own scheduler (as diffusers) by default, or one of\n";
const char* const kFlagsAfterSamplers =
    "  --batch N (1)      images i = 0..N-1 use seed + i\n"
    "  --width W --height H   multiples of 8 (default: the model's size)\n"
    "  --init IMAGE --strength S (0.8)   img2img (inpaint: the image to repaint)\n"
    "  --mask IMAGE       inpaint: white repaints, black keeps (grey from 128 up repaints)\n"
    "  --keep-unmasked    inpaint: put the init image's pixels back where the mask keeps\n"
    "                     them (diffusers' apply_overlay; grey levels blend)\n"
    "  --mask-blur PX (0) inpaint: blur the mask first (Pillow's GaussianBlur, as\n"
    "                     diffusers' mask_processor.blur)\n"
    "  --mask-padding PX  inpaint only the masked area: the box around the mask plus PX\n"
    "                     pixels, at --width x --height, put back into the whole image\n"
    "                     (diffusers' padding_mask_crop, A1111's \"Only masked\")\n"
    "  --clip-skip K (0)  --eta E (0, DDIM)\n"
    "  --aesthetic-score A (6)  --negative-aesthetic-score A (2.5)   an SDXL refiner's\n"
    "                     conditioning (diffusers' aesthetic_score, negative_aesthetic_score)\n"
    "  --refiner MODEL    SDXL's refiner takes over at --refiner-switch-at F\n"
    "                     (0.8) of the way, as diffusers' denoising_end/denoising_start\n"
    "                     (A1111's Refiner)\n"
    "  --controlnet MODEL a ControlNet (a diffusers ControlNetModel folder, or one\n"
    "                     .safetensors/.pth file, as A1111's ControlNet extension loads) or a\n"
    "                     T2I-Adapter (a diffusers T2IAdapter folder or TencentARC's\n"
    "                     t2iadapter_*.pth; --control-end is its adapter_conditioning_factor)\n"
    "                     with --control-image IMAGE (a scribble, edges, depth, ...; without\n"
    "                     --width/--height it sets the size, as diffusers), --control-scale\n"
    "                     S (1), --control-start A (0) and --control-end B (1): the part of\n"
    "                     the steps it guides, --control-preprocessor none|invert|canny|\n"
    "                     binary|depth|lineart_standard (invert: a sketch of dark lines on\n"
    "                     white; lineart_standard: a picture's dark lines, as A1111's; canny: a\n"
    "                     picture's edges, as OpenCV's Canny with --canny-low L (100) and\n"
    "                     --canny-high H (200); binary: its dark parts white on black, grey\n"
    "                     levels up to --binary-threshold T, 0 or 255 for Otsu's (0);\n"
    "                     depth: its depth map, near bright, by the Depth Anything model\n"
    "                     of --depth-model DIR, a transformers folder such as\n"
    "                     Depth-Anything-V2-Small-hf); repeat --controlnet for more\n"
    "  --control-guess-mode   diffusers' guess mode: the ControlNets see the prompt alone\n"
    "  --hires-scale X (1: off)   A1111's hires fix (txt2img): the images scaled by X\n"
    "                     (size floored to a multiple of 8) and made again as img2img\n"
    "                     with --hires-strength S (0.7) and --hires-steps N (0: --steps)\n"
    "  --hires-upscaler U Lanczos (the images; default) or A1111's latent upscalers (the\n"
    "                     latents, no VAE between): \"Latent\", \"Latent (antialiased)\",\n"
    "                     \"Latent (bicubic)\", \"Latent (bicubic antialiased)\",\n"
    "                     \"Latent (nearest)\", \"Latent (nearest-exact)\"\n"
    "  --lora FILE[:W[:U]]   merge a LoRA (kohya-ss/A1111 or diffusers format, LyCORIS)\n"
    "                     at weight W (default 1), the UNet's at U where given (A1111's\n"
    "                     <lora:NAME:TE:UNET>); repeat for several (their changes add up)\n"
    "  --lora-dir DIR     where A1111's <lora:NAME:W> prompt tags find NAME.safetensors\n"
    "                     (in DIR or below); the tags are taken out of the prompt\n"
    "  --embedding FILE[:WORD]   a textual inversion embedding (A1111 .pt/.safetensors,\n"
    "                     diffusers learned_embeds, SDXL clip_l + clip_g) that WORD in the\n"
    "                     prompts stands for (default: a diffusers file's own word, else the\n"
    "                     file's name); repeat for several\n"
    "  --embedding-dir DIR   A1111's embeddings folder: each file there (or below) whose\n"
    "                     name is a word of the prompts is used, as A1111 does\n"
    "  --style NAME       merge a prompt style into the prompts, as A1111 does (its\n"
    "                     {prompt}, else after the prompt); repeat for several, in order\n"
    "  --styles FILE      the styles (A1111's styles.csv; default: the studio's)\n"
    "  --from PNG         start from the parameters a PNG carries (ours, or A1111's\n"
    "                     parameters text): prompt, negative, steps, guidance, seed,\n"
    "                     sampler, size, strength, clip skip, eta, prompt syntax; the flags\n"
    "                     given override them (an img2img or inpaint PNG still needs\n"
    "                     --init, --mask)\n"
    "  --out DIR (outputs)   --device auto|cpu|cuda   --dtype auto|fp32|bf16|fp16\n";

// The sampler names, wrapped into the help's second column.
std::string sampler_list_help() {
    const std::string indent(21, ' ');
    // The families, then how their schedule twins are named.
    std::vector<std::string> words, twins;
    for (const auto& n : sampler_names()) {
        const Sampler s = sampler_from_name(n);
        if (sampler_schedule(s) == NoiseSchedule::Default) {
            words.push_back(n + ",");
            if (with_schedule(s, NoiseSchedule::Karras)) {
                twins.push_back(n + ",");
            }
        }
    }
    words.back().pop_back();
    twins.back().pop_back();
    twins[twins.size() - 2].pop_back();
    twins.insert(twins.end() - 1, "and");
    words.insert(words.end(), {"(or", "A1111's", "names);"});
    words.insert(words.end(), twins.begin(), twins.end());
    words.insert(words.end(), {"also", "with", "_karras,", "_exponential", "or", "_beta",
                               "(A1111's", "schedule", "types)"});
    std::string out, line;
    for (const auto& w : words) {
        if (!line.empty() && indent.size() + line.size() + 1 + w.size() > 88) {
            out += indent + line + "\n";
            line.clear();
        }
        line += (line.empty() ? "" : " ") + w;
    }
    return out + indent + line + "\n";
}
}  // namespace

PromptSyntax prompt_syntax_flag(const std::string& name) {
    const auto syntax = prompt_syntax_from_name(name);
    if (!syntax) {
        throw UsageError{"--prompt-syntax: '" + name +
                         "' is not one of plain, a1111, a1111-no-norm"};
    }
    return *syntax;
}

std::string generate_flags_help() {
    return std::string(kFlagsBeforeSamplers) + sampler_list_help() + kFlagsAfterSamplers;
}

namespace {
double seconds_now() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// FILE or FILE:WEIGHT (a file name may hold ':' itself: only a number after the last one is a
// weight).
// FILE or FILE:WORD (a file that exists is taken whole, colons and all).
EmbeddingRef parse_embedding(const std::string& text) {
    const size_t colon = text.rfind(':');
    if (std::filesystem::exists(text) || colon == std::string::npos || colon == 0 ||
        colon + 1 == text.size()) {
        return {text, ""};
    }
    return {text.substr(0, colon), text.substr(colon + 1)};
}

// FILE, FILE:WEIGHT or FILE:WEIGHT:UNET_WEIGHT (the text encoders' weight, then the UNet's).
LoraRef parse_lora(const std::string& text) {
    std::vector<double> weights;  // trailing numbers, last first
    std::string file = text;
    while (weights.size() < 2) {
        const size_t colon = file.rfind(':');
        if (colon == std::string::npos || colon + 1 >= file.size()) {
            break;
        }
        const std::string tail = file.substr(colon + 1);
        char* end = nullptr;
        const double w = std::strtod(tail.c_str(), &end);
        if (end == nullptr || *end != '\0') {
            break;
        }
        weights.push_back(w);
        file = file.substr(0, colon);
    }
    LoraRef ref{file, weights.empty() ? 1.0 : weights.back()};
    if (weights.size() == 2 && weights[0] != weights[1]) {
        ref.unet_weight = weights[0];
    }
    return ref;
}

}  // namespace

std::vector<std::string> read_text_lines(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        throw FileError(file + ": cannot be read");
    }
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        if (lines.empty() && line.starts_with("\xEF\xBB\xBF")) {
            line.erase(0, 3);
        }
        if (line.ends_with('\r')) {
            line.pop_back();
        }
        lines.push_back(std::move(line));
    }
    return lines;
}

std::vector<std::string> split_command_line(std::string_view line) {
    std::vector<std::string> out;
    std::string arg;
    bool in_arg = false;
    for (size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            if (in_arg) {
                out.push_back(std::move(arg));
                arg.clear();
                in_arg = false;
            }
            continue;
        }
        in_arg = true;
        if (c == '\'') {
            const size_t end = line.find('\'', i + 1);
            if (end == std::string_view::npos) {
                throw UsageError{"a ' is not closed"};
            }
            arg.append(line.substr(i + 1, end - i - 1));
            i = end;
        } else if (c == '"') {
            size_t j = i + 1;
            for (; j < line.size() && line[j] != '"'; ++j) {
                if (line[j] == '\\' && j + 1 < line.size() &&
                    (line[j + 1] == '"' || line[j + 1] == '\\')) {
                    ++j;
                }
                arg += line[j];
            }
            if (j == line.size()) {
                throw UsageError{"a \" is not closed"};
            }
            i = j;
        } else if (c == '\\') {
            if (i + 1 == line.size()) {
                throw UsageError{"a \\ ends the line, escaping nothing"};
            }
            arg += line[++i];
        } else {
            arg += c;
        }
    }
    if (in_arg) {
        out.push_back(std::move(arg));
    }
    return out;
}

std::string styles_path(const std::string& flag) {
    return flag.empty() ? app::StudioSettings::load().stylesFile().toStdString() : flag;
}

void apply_styles(GenerationRequest& r, const std::vector<std::string>& names,
                  const std::string& styles_file) {
    const std::string file = styles_path(styles_file);
    const auto styles = app::load_styles(file);
    for (const std::string& name : names) {
        const app::PromptStyle* style = app::find_style(styles, name);
        if (style == nullptr) {
            std::string known;
            for (const app::PromptStyle& s : styles) {
                known += (known.empty() ? "" : ", ") + s.name;
            }
            throw UsageError{"--style '" + name + "': no such style in " + file +
                             (known.empty() ? " (it has none)" : " (its styles: " + known + ")")};
        }
        r.prompt = app::merge_style(style->prompt, r.prompt);
        r.negative_prompt = app::merge_style(style->negative_prompt, r.negative_prompt);
    }
}

GenerateFlags parse_generate_flags(const Args& args) {
    GenerateFlags f;
    auto& r = f.request;
    // --from first, wherever it stands: the flags override what the PNG says.
    for (size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "--from") {
            r = app::read_request(QString::fromStdString(args[i + 1]));
            r.init_image.clear();  // where its init image came from; --init names one here
            r.mask_image.clear();  // likewise its mask: --mask
            r.batch_count = 1;
            f.sampler_given = true;
        }
    }
    bool lora_given = false, embedding_given = false, control_given = false;
    std::string lora_dir, embedding_dir, styles_file;
    std::vector<std::string> styles;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> const std::string& {
            if (i + 1 >= args.size()) {
                throw UsageError{a + " needs a value"};
            }
            return args[++i];
        };
        auto last_control = [&](const std::string& flag) -> ControlRef& {
            if (!control_given) {
                throw UsageError{flag + " goes after the --controlnet it is for"};
            }
            return r.controls.back();
        };
        if (a == "--model")
            f.model = value();
        else if (a == "--from")
            value();  // read above
        else if (a == "--config")
            f.config = value();
        else if (a == "--vae")
            f.vae = value();
        else if (a == "--prompt")
            r.prompt = value();
        else if (a == "--negative")
            r.negative_prompt = value();
        else if (a == "--steps")
            r.steps = number<int>(a, value());
        else if (a == "--guidance")
            r.guidance_scale = number<double>(a, value());
        else if (a == "--seed")
            r.seed = number<int64_t>(a, value());
        else if (a == "--sampler") {
            r.sampler = sampler_from_name(value());
            f.sampler_given = true;
        } else if (a == "--batch")
            r.batch_count = number<int>(a, value());
        else if (a == "--width")
            r.width = number<int>(a, value());
        else if (a == "--height")
            r.height = number<int>(a, value());
        else if (a == "--strength")
            r.strength = number<double>(a, value());
        else if (a == "--init")
            r.init_image = value();
        else if (a == "--mask")
            r.mask_image = value();
        else if (a == "--keep-unmasked")
            r.keep_unmasked = true;
        else if (a == "--mask-blur")
            r.mask_blur = number<int>(a, value());
        else if (a == "--mask-padding")
            r.mask_padding = number<int>(a, value());
        else if (a == "--hires-scale")
            r.hires_scale = number<double>(a, value());
        else if (a == "--hires-steps")
            r.hires_steps = number<int>(a, value());
        else if (a == "--hires-strength")
            r.hires_strength = number<double>(a, value());
        else if (a == "--hires-upscaler")
            r.hires_upscaler = value();
        else if (a == "--prompt-syntax") {
            r.prompt_syntax = prompt_syntax_flag(value());
        } else if (a == "--clip-skip")
            r.clip_skip = number<int>(a, value());
        else if (a == "--eta")
            r.eta = number<double>(a, value());
        else if (a == "--aesthetic-score")
            r.aesthetic_score = number<double>(a, value());
        else if (a == "--negative-aesthetic-score")
            r.negative_aesthetic_score = number<double>(a, value());
        else if (a == "--refiner")
            r.refiner = value();
        else if (a == "--refiner-switch-at")
            r.refiner_switch_at = number<double>(a, value());
        else if (a == "--controlnet") {
            if (!control_given) {  // the flags' ControlNets replace those a --from PNG names
                r.controls.clear();
                control_given = true;
            }
            ControlRef unit;
            unit.model = value();
            r.controls.push_back(unit);
        } else if (a == "--control-image")
            last_control(a).image = value();
        else if (a == "--control-scale")
            last_control(a).scale = number<double>(a, value());
        else if (a == "--control-start")
            last_control(a).start = number<double>(a, value());
        else if (a == "--control-end")
            last_control(a).end = number<double>(a, value());
        else if (a == "--control-preprocessor")
            last_control(a).preprocessor = value();
        else if (a == "--canny-low")
            last_control(a).canny_low = number<double>(a, value());
        else if (a == "--canny-high")
            last_control(a).canny_high = number<double>(a, value());
        else if (a == "--binary-threshold")
            last_control(a).binary_threshold = number<int>(a, value());
        else if (a == "--depth-model")
            last_control(a).depth_model = value();
        else if (a == "--control-guess-mode")
            r.control_guess_mode = true;
        else if (a == "--lora") {
            if (!lora_given) {  // the flags' LoRAs replace those a --from PNG names
                r.loras.clear();
                lora_given = true;
            }
            r.loras.push_back(parse_lora(value()));
        } else if (a == "--lora-dir")
            lora_dir = value();
        else if (a == "--style")
            styles.push_back(value());
        else if (a == "--styles")
            styles_file = value();
        else if (a == "--embedding") {
            if (!embedding_given) {  // likewise the embeddings
                r.embeddings.clear();
                embedding_given = true;
            }
            r.embeddings.push_back(parse_embedding(value()));
        } else if (a == "--embedding-dir")
            embedding_dir = value();
        else if (a == "--out")
            f.out_dir = value();
        else if (a == "--device")
            f.device = value();
        else if (a == "--dtype")
            f.dtype = value();
        else
            f.rest.push_back(a);
    }
    if (!styles.empty()) {  // before the LoRA tags: a style may have some
        apply_styles(r, styles, styles_file);
    }
    r.take_lora_tags(lora_dir);
    if (!embedding_dir.empty()) {
        if (!std::filesystem::is_directory(embedding_dir)) {
            throw FileError(embedding_dir + ": no such folder (--embedding-dir)");
        }
        r.find_embeddings(embedding_dir);
    }
    if (f.model.empty()) {  // the bundled demo model
        f.model = app::bundled_model_folder().toStdString();
        if (f.model.empty()) {
            throw UsageError{"--model DIR is required (the bundled demo model is not installed)"};
        }
    }
    return f;
}

namespace {
bool line_open = false;  // a progress line on stderr waits for its newline
}  // namespace

void progress_line_open(bool open) {
    line_open = open;
}

void end_progress_line() {
    if (line_open) {
        std::fputc('\n', stderr);
        line_open = false;
    }
}

InitImages load_init_images(GenerationRequest& r) {
    InitImages in;
    if (r.is_img2img()) {
        in.init = app::load_image(QString::fromStdString(r.init_image));
        if (r.width == 0) {
            r.width = in.init.width - in.init.width % 8;
            r.height = in.init.height - in.init.height % 8;
        }
    }
    if (r.is_inpaint()) {
        in.mask = app::load_image(QString::fromStdString(r.mask_image));
    }
    for (const ControlRef& c : r.controls) {
        if (c.image.empty()) {
            throw UsageError{"--controlnet " + c.model + " needs a --control-image"};
        }
        in.controls.push_back(app::load_image(QString::fromStdString(c.image)));
    }
    if (r.width == 0 && !in.controls.empty()) {  // as diffusers: the control image's size
        r.width = in.controls.front().width - in.controls.front().width % 8;
        r.height = in.controls.front().height - in.controls.front().height % 8;
    }
    return in;
}

Pipeline load_pipeline(GenerateFlags& f) {
    const c10::Device device = parse_device(f.device);
    Pipeline::Options options;
    options.device = device;
    options.dtype = parse_dtype(f.dtype, device);
    options.single_file_config =
        f.config.empty()
            ? app::single_file_config_folder(QString::fromStdString(f.model)).toStdString()
            : f.config;
    options.vae = f.vae;
    Pipeline p = Pipeline::load(f.model, options, [](const std::string& what, double fraction) {
        std::fprintf(stderr, "\rloading: %-28s %3.0f%%", what.c_str(), fraction * 100);
        progress_line_open(true);
        if (fraction >= 1.0) {
            end_progress_line();
        }
        std::fflush(stderr);
    });
    if (!f.sampler_given) {
        f.request.sampler = p.default_sampler();
        const std::string& own = p.model().component("scheduler").class_name;
        if (f.request.sampler == Sampler::Pndm && own != "PNDMScheduler") {
            std::fprintf(stderr,
                         "note: the model's scheduler %s is not one SD Studio has; using pndm "
                         "(choose one with --sampler)\n",
                         own.c_str());
        }
    }
    return p;
}

Progress::Progress(std::string label) : label_(std::move(label)), start_(seconds_now()) {}

void Progress::operator()(const StepEvent& e) {
    const double elapsed = seconds_now() - start_;
    const double per = elapsed / (e.index + 1);
    std::fprintf(stderr, "\r%s step %d/%d, %.2f s/step, %.0f s left   ", label_.c_str(),
                 e.index + 1, e.total, per, per * (e.total - e.index - 1));
    progress_line_open(true);
    std::fflush(stderr);
}

void Progress::done() {
    std::fprintf(stderr, "\n");
    progress_line_open(false);
    start_ = seconds_now();
}

}  // namespace sds::cli
