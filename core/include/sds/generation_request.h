#pragma once
// Everything that determines a generation, with its defaults in this one place and one
// serialiser (JSON: CLI echo, history rows, PNG metadata; plus the A1111 "parameters" text
// derived from it for other tools).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sds/prompt_syntax.h"
#include "sds/scheduler.h"

namespace sds {

// A LoRA to merge into the model for a generation: a file (kohya-ss/A1111 or diffusers
// format, LyCORIS) and the multiplier of its change (1: as trained; 0: none; negative: the
// opposite). `unet_weight`, where set, is the UNet's multiplier and `weight` the text
// encoders' (A1111's <lora:NAME:TE:UNET>).
struct LoraRef {
    std::string file;
    double weight = 1.0;
    std::optional<double> unet_weight;

    LoraRef() = default;
    LoraRef(std::string file, double weight = 1.0, std::optional<double> unet_weight = {})
        : file(std::move(file)), weight(weight), unet_weight(unet_weight) {}
    double unet() const { return unet_weight.value_or(weight); }
    bool operator==(const LoraRef&) const = default;
};

// A textual inversion embedding for a generation: a file (A1111's .pt or .safetensors,
// diffusers' learned_embeds, SDXL's clip_l + clip_g) and the word that stands for it in the
// prompts (empty: the file's own, see find_embeddings).
struct EmbeddingRef {
    std::string file;
    std::string token;
    bool operator==(const EmbeddingRef&) const = default;
};

// A ControlNet for a generation, as diffusers' StableDiffusionControlNetPipeline takes one and
// A1111's ControlNet unit: the model (a diffusers ControlNetModel folder, or one file as
// sds::ControlNet::load reads it; or a T2I-Adapter, sds/t2i_adapter.h, whose feature maps go
// into the UNet times `scale` in the steps from `start` while step i < int(n x end), diffusers'
// adapter_conditioning_factor) and its conditioning image (a scribble, edges, a depth map,
// ...; resized to the request's size with Lanczos where it differs), whose residuals go into the
// UNet times `scale` in the steps from `start` to `end` of the way (diffusers'
// control_guidance_start/end: step i of n when i / n >= start and (i + 1) / n <= end).
struct ControlRef {
    std::string model;
    std::string image;  // where the conditioning image came from
    double scale = 1.0;
    double start = 0.0, end = 1.0;
    // What is done to the image first: "none"; "invert" (255 - x: a sketch of dark lines on
    // white made the white lines on black that scribble and line-art ControlNets read, as
    // A1111's "invert (from white bg & black line)"); "canny" (a picture's edges, sds::canny,
    // at the request's size, for canny ControlNets: A1111's "canny" with its Threshold A and
    // B, the low and high thresholds below); "binary" (sds::binary: dark parts white on black,
    // A1111's "binary" with its Threshold A, binary_threshold below: 0 or 255 Otsu's level);
    // "depth" (the picture's depth map at the request's size, for depth ControlNets: the
    // Depth Anything model of depth_model below, sds/depth_anything.h, A1111's
    // "depth_anything"); "lineart_standard" (a picture's dark lines white on black, at the
    // request's size, for line-art ControlNets: sds::lineart_standard, A1111's
    // "lineart_standard (from white bg & black line)").
    std::string preprocessor = "none";
    double canny_low = 100, canny_high = 200;
    int binary_threshold = 0;
    std::string depth_model;  // a transformers Depth Anything folder
    bool operator==(const ControlRef&) const = default;
};
// The preprocessors a ControlRef may name.
const std::vector<std::string>& control_preprocessors();

// The hires fix's upscalers, A1111's names: "Lanczos", then the latent ones: "Latent"
// (bilinear), "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
// "Latent (nearest)", "Latent (nearest-exact)".
const std::vector<std::string>& hires_upscalers();

// The files a generation was made with as A1111's text names them, for the sites that find
// models by it (Civitai): each hash the first hex digits of a sha256 (A1111's short hashes).
struct A1111Files {
    std::string model;       // "Model": the model's name (a checkpoint's file name, no extension)
    std::string model_hash;  // "Model hash": a checkpoint file's, 10 digits (none for a folder)
    std::string vae, vae_hash;  // "VAE", "VAE hash": a VAE file of its own (name, 10 digits)
    // "Lora hashes": each LoRA's name and hash (12 digits; of a .safetensors file's data after
    // its header, kohya-ss's hash, as A1111 hashes LoRAs); "TI hashes": each textual inversion
    // word used and its file's hash (12 digits).
    std::vector<std::pair<std::string, std::string>> lora_hashes, ti_hashes;
};

struct GenerationRequest {
    std::string prompt;
    std::string negative_prompt;
    int steps = 50;               // diffusers' default
    double guidance_scale = 7.5;  // classifier-free guidance is on above 1
    int64_t seed = 0;             // image i of the batch uses seed + i
    int width = 0;                // 0: the model's native size; else a multiple of 8
    int height = 0;
    Sampler sampler = Sampler::Pndm;  // the SD 1.x default (PLMS)
    int batch_count = 1;
    double strength = 0.8;   // img2img only
    std::string init_image;  // img2img when set: where the init image came from
    // Inpainting when set (with init_image): where the mask came from. White repaints, black
    // keeps (grey levels: from 128 up repaints), as diffusers' StableDiffusionInpaintPipeline.
    std::string mask_image;
    // Inpainting: the init image's pixels put back where the mask keeps them (grey levels blend),
    // as diffusers' image processor's apply_overlay; otherwise the whole image is the VAE's.
    bool keep_unmasked = false;
    // Inpainting: the mask blurred first (Pillow's GaussianBlur with this radius in pixels, as
    // diffusers' mask_processor.blur), which rounds its shape and softens the overlay's edge.
    int mask_blur = 0;
    // Inpainting only the masked area (diffusers' padding_mask_crop, A1111's "Only masked"): the
    // box around the mask plus this many pixels, grown to width:height, is cut out, inpainted at
    // width x height and put back into the whole init image through the mask (the images have
    // the init image's size). -1: the whole image at width x height.
    int mask_padding = -1;
    // A1111's hires fix (txt2img): the images made at width x height are scaled by
    // hires_scale (the size floored to a multiple of 8) and made again from there as img2img
    // with hires_strength and hires_steps (0: steps), image i with seed + i, as diffusers'
    // img2img pipeline from the resized image. 1: off.
    double hires_scale = 1.0;
    int hires_steps = 0;
    double hires_strength = 0.7;
    // How the hires fix scales: "Lanczos" (the decoded images, as Pillow) or one of A1111's
    // latent upscalers (hires_upscalers()), which scale the first pass's latents with torch's
    // interpolate and hand them to the second pass without a VAE decode and encode, as
    // diffusers' img2img pipeline takes latents for its image.
    std::string hires_upscaler = "Lanczos";
    int clip_skip = 0;  // diffusers' clip_skip (A1111's "Clip skip" minus one)
    // An SDXL refiner's conditioning (a model whose model_index.json says
    // requires_aesthetics_score): the aesthetic score the prompt's images are told they have,
    // and the negative prompt's, as diffusers' aesthetic_score and negative_aesthetic_score
    // (A1111's "SDXL high/low aesthetic score"). Other models do not read them.
    double aesthetic_score = 6.0;
    double negative_aesthetic_score = 2.5;
    // SDXL base and refiner in one generation (txt2img, img2img, inpainting but not only the
    // masked area; not with the hires fix), as diffusers' "ensemble of expert denoisers" and
    // A1111's Refiner: the model denoises until refiner_switch_at of the way (diffusers'
    // denoising_end), then the refiner (a model folder) goes on from its latents
    // (denoising_start) with the same generators, and its VAE decodes. Empty: no refiner.
    std::string refiner;
    double refiner_switch_at = 0.8;
    // ControlNets (their residuals add up), for txt2img, img2img, inpainting and the hires fix
    // (each run with the images at its size); with a refiner, the model's steps alone (the
    // ControlNet is the model's; start and end count the whole schedule, as diffusers' SDXL
    // ControlNet pipeline with denoising_end does). With control_guess_mode, diffusers' guess mode:
    // the ControlNets see the prompt's half of the batch alone, their residuals scaled from 0.1
    // (the first skip connection) to 1 (the mid block), and the negative prompt's half gets none.
    std::vector<ControlRef> controls;
    bool control_guess_mode = false;
    // How the prompts are read: as typed (diffusers), or A1111's emphasis, BREAK and long
    // prompts (sds/prompt_syntax.h), for the prompt and the negative prompt alike.
    PromptSyntax prompt_syntax = PromptSyntax::Plain;
    double eta = 0.0;            // DDIM only
    std::vector<LoraRef> loras;  // merged in this order (their changes add up)
    // Textual inversion embeddings whose words the prompts may use (later ones win a word that
    // two share).
    std::vector<EmbeddingRef> embeddings;

    bool is_img2img() const { return !init_image.empty(); }  // inpainting too
    bool is_inpaint() const { return !mask_image.empty(); }
    bool guided() const { return guidance_scale > 1.0; }
    bool is_hires() const { return hires_scale > 1.0; }
    bool is_latent_hires() const { return is_hires() && hires_upscaler != "Lanczos"; }
    // The hires pass's size for a first pass of `w` x `h` (floored to multiples of 8).
    std::pair<int, int> hires_size(int w, int h) const;

    // Throws sds::Error naming the field for values out of range.
    void validate() const;

    std::string to_json() const;  // every field, stable key order
    // Unknown keys are ignored, missing keys keep their defaults; a wrong type is an error.
    static GenerationRequest from_json(const std::string& json);

    // A1111's parameters text for image `index` of the batch (seed + index), naming the files
    // it was made with (`files`; or the model's name alone).
    std::string to_a1111(int index, const A1111Files& files) const;
    std::string to_a1111(int index = 0, const std::string& model_name = "") const;
    // A1111's "Emphasis" for prompt_syntax: "None" (plain, where a prompt has a bracket),
    // "Original" (a1111) or "No norm"; empty where it is left out.
    std::string emphasis_a1111() const;
    // Reads A1111's parameters text (prompt, negative, and the settings line). Its prompts are
    // read with A1111's syntax unless it says "Emphasis: None", or it is SD Studio's and says
    // nothing (plain).
    static GenerationRequest from_a1111(const std::string& text);

    // A1111's LoRA tags in the prompt and the negative prompt, <lora:NAME>, <lora:NAME:WEIGHT>
    // or <lora:NAME:TE:UNET> (also te=W and unet=W): each is taken out of the text and added to
    // `loras` as the file NAME (.safetensors, .pt or .ckpt) found in `lora_dir` or a folder
    // below it, as A1111 finds them in its LoRA folder. Throws sds::Error naming the tag when
    // there is no such file, no folder was given, a weight is not a number, or the tag asks for
    // what SD Studio does not do (dyn: a dynamic rank).
    void take_lora_tags(const std::string& lora_dir);

    // A1111's embeddings folder: every embedding file in `dir` or below (.pt, .safetensors,
    // .bin) whose name (the file's, without extension) is a word of the prompt or the negative
    // prompt, in any case and not inside a longer word, is added to `embeddings` with that name
    // as its token, unless one with that token is there already.
    void find_embeddings(const std::string& dir);
};

// The files take_lora_tags finds a <lora:NAME> in: .safetensors, .pt and .ckpt in `dir` and
// below, sorted by path; none where `dir` is empty or not a folder.
std::vector<std::filesystem::path> lora_files(const std::string& dir);
// The files find_embeddings reads: .pt, .safetensors and .bin in `dir` and below, sorted.
std::vector<std::filesystem::path> embedding_files(const std::string& dir);

// An A1111 LoRA tag in a prompt, "<lora:NAME:FIELDS>": where it is, the name, and its fields
// as written (":1", ":0.5:1", ":te=1", or empty).
struct LoraTag {
    size_t position = 0, length = 0;
    std::string name, fields;
};
std::vector<LoraTag> lora_tags(const std::string& text);
// `text` without its LoRA tags (what take_lora_tags leaves of a prompt).
std::string without_lora_tags(const std::string& text);

// Where `word` first is in `text` at or after `from` as a word, in any (ASCII) case and not
// inside a longer word (as find_embeddings looks for an embedding's name); else
// std::string::npos.
size_t find_word(const std::string& text, const std::string& word, size_t from = 0);

}  // namespace sds
