#pragma once
// txt2img and img2img for Stable Diffusion 1.x/2.x and SDXL, step for step as diffusers'
// StableDiffusionPipeline / StableDiffusionImg2ImgPipeline / StableDiffusionXLPipeline /
// StableDiffusionXLImg2ImgPipeline (called with one CPU generator per image, seeded seed + i),
// and inpainting as StableDiffusionInpaintPipeline / StableDiffusionXLInpaintPipeline (with a
// 9-channel inpainting UNet, or any other by blending the kept part back in after each step),
// each image as diffusers makes it alone with its seed.
//
// Threads: one Pipeline is used by one thread at a time; `cancel` may be set from any thread
// and is checked between steps.
#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "sds/error.h"
#include "sds/generation_request.h"
#include "sds/image.h"
#include "sds/model_folder.h"
#include "sds/scheduler.h"

namespace sds {

class ClipTextModel;
class ClipTokenizer;
class ControlNet;
class T2IAdapter;
class UNet;
class Vae;

class Cancelled : public Error {
  public:
    Cancelled() : Error("cancelled") {}
};

// "auto" (CUDA when LibTorch sees a GPU, else CPU), "cpu", "cuda", "cuda:N"; throws
// sds::DeviceError when that device is not available here.
c10::Device parse_device(const std::string& name);
// "fp32", "bf16", "fp16" (also float32/bfloat16/float16); "auto": fp16 on CUDA, fp32 on CPU.
// Throws sds::DeviceError when the device cannot run that precision (fp16 on the CPU).
c10::ScalarType parse_dtype(const std::string& name, c10::Device device);

struct StepEvent {
    int index = 0;  // 0-based step
    int total = 0;  // steps this run takes (img2img: after the strength cut)
    double timestep = 0;
    at::Tensor latents;  // [B, 4, h, w] after the step
    at::Tensor pred_x0;  // [B, 4, h, w] the model's estimate of the final latents
};
using StepObserver = std::function<void(const StepEvent&)>;

struct GenerationResult {
    GenerationRequest request;  // width/height resolved
    std::vector<Image> images;  // image i: seed + i
};

// The live preview's linear map from scaled latents (C channels, then a constant 1) to RGB in
// [-1, 1], as a [C + 1, 3] CPU fp32 tensor. SD 1.x's VAE gets REFERENCE.md's factors; any other
// VAE (the demo model's, a custom one) gets a least-squares fit to its own encodings of 27 flat
// colours, made when the pipeline loads (a fraction of a second for a small VAE).
at::Tensor preview_map_for(const Vae& vae);
at::Tensor sd1_preview_map();  // REFERENCE.md's, with a zero constant row
// Scaled latents [B, C, h, w] through `map` -> images of h x w.
std::vector<Image> latents_to_preview(const at::Tensor& latents, const at::Tensor& map);

// A1111's emphasis on one chunk's states [1, 77, C]: each token's states times its weight and,
// for PromptSyntax::A1111 ("Original"), the whole scaled back to the mean it had before (left as
// it is where the weighed mean is exactly 0, which A1111 would divide by). In float32, as
// A1111's float32 weights promote its states; returned in the states' dtype.
at::Tensor emphasize(const at::Tensor& states, const std::vector<float>& weights,
                     PromptSyntax syntax);

// What a ControlNet sees of its image once it has the generation's size: its preprocessor's
// result (ControlRef::preprocessor: the image itself, inverted, its Canny edges, its dark parts
// or its depth map). The studio's preview and `sdstudio-cli preprocess` show the same.
Image preprocess_control(const Image& sized, const ControlRef& control);

// A part of the way a run goes (the refiner's ensemble), as diffusers' denoising_start and
// denoising_end, fractions of the scheduler's num_train_timesteps: from `start` > 0 a run goes
// on from latents another model left (not noised again); with `end` < 1 it stops there.
struct DenoisingSpan {
    double start = 0.0, end = 1.0;
};

class Pipeline {
  public:
    struct Options {
        c10::Device device = c10::Device(c10::kCPU);
        c10::ScalarType dtype = at::kFloat;
        Variant variant = Variant::Auto;
        // For a single-file checkpoint: the diffusers folder its configs, tokenizer and
        // scheduler come from (ModelFolder::open_single_file). Unused for a folder.
        std::filesystem::path single_file_config = {};
        // A VAE to use instead of the model's (A1111's "SD VAE"): a diffusers AutoencoderKL
        // folder, or one weights file (.safetensors, .ckpt, .pt, .bin) with diffusers' names or
        // the original ones (vae-ft-mse-840000-ema-pruned and the like; with or without
        // first_stage_model.), which takes the model's own VAE config. Empty: the model's.
        std::filesystem::path vae = {};
    };
    // Loads every component of a diffusers folder or a single-file checkpoint;
    // `progress(what, fraction)` is told as it goes.
    static Pipeline load(const std::filesystem::path& model, const Options& options,
                         const std::function<void(const std::string&, double)>& progress = {});
    ~Pipeline();
    Pipeline(Pipeline&&) noexcept;
    Pipeline& operator=(Pipeline&&) noexcept;

    // `init` is required for img2img (request.is_img2img()), `init` and `mask` for inpainting
    // (request.is_inpaint()); each is resized to the request's size when it differs. With the
    // hires fix (request.is_hires()) the observer sees both runs as one, the second run's steps
    // numbered after the first's, and the images are the second run's. Throws
    // sds::Cancelled when `cancel` becomes true (checked before each step), leaving the
    // pipeline usable. `controls`: the conditioning image of each of request.controls, in its
    // order (the ControlNets are loaded at the first request that names them, and kept while
    // the requests do).
    GenerationResult generate(const GenerationRequest& request, const Image* init = nullptr,
                              const Image* mask = nullptr, const StepObserver& observer = {},
                              const std::atomic<bool>* cancel = nullptr,
                              std::span<const Image> controls = {});

    // The steps a request takes on this model, as generate()'s observer counts them (img2img:
    // those after the strength cut; with the hires fix, both runs'), without running anything.
    // Throws sds::Error for a request that cannot run on this model: a size that is not a
    // multiple of downscale(), steps its sampler refuses (LCM beyond the model's
    // original_inference_steps, ...).
    int denoising_steps(const GenerationRequest& request) const;

    // Merges LoRA files (kohya-ss/A1111 or diffusers format) into the weights, after putting back
    // the weights as loaded: generate() does this when its request's loras differ from loras().
    // Throws sds::Error naming the file for one that cannot be read or does not fit this model,
    // leaving the weights as loaded.
    void set_loras(const std::vector<LoraRef>& loras);
    const std::vector<LoraRef>& loras() const;

    // Textual inversion embeddings: each token becomes a word of the tokenizers (n vectors, n
    // tokens) with its vectors as the text encoders' embeddings, replacing the ones set before;
    // generate() does this when its request's embeddings differ from embeddings(). Throws
    // sds::Error naming the file for one that cannot be read or was made for another model
    // (vector width, SDXL or not), leaving none set.
    void set_embeddings(const std::vector<EmbeddingRef>& embeddings);
    const std::vector<EmbeddingRef>& embeddings() const;

    // The text encoder's output for a prompt, [1, 77, hidden] (SDXL: both encoders', side by
    // side, as encode_prompt_xl). With A1111's syntax, [1, 77 * chunks, hidden]: each chunk of
    // 75 tokens encoded on its own, its states weighed (sds/prompt_syntax.h).
    at::Tensor encode_prompt(const std::string& text, int clip_skip = 0,
                             PromptSyntax syntax = PromptSyntax::Plain);
    // SDXL: the conditioning [1, 77, hidden + hidden_2] and the pooled embedding
    // [1, projection_dim], as diffusers' StableDiffusionXLPipeline.encode_prompt makes them.
    // With A1111's syntax, each encoder's chunks weighed on their own, and the pooled embedding
    // of the first chunk, as A1111 makes them.
    std::pair<at::Tensor, at::Tensor> encode_prompt_xl(const std::string& text, int clip_skip = 0,
                                                       PromptSyntax syntax = PromptSyntax::Plain);
    // The prompts of a request as the UNet takes them (its LoRAs and embeddings applied first,
    // as generate() does): the prompt's states [1, L, C], the negative prompt's [1, L', C] (left
    // undefined unless `with_negative`; SDXL's empty one is zeros where the model says so), and
    // SDXL's pooled embeddings [1, P] of each. L and L' differ only with A1111's syntax.
    struct PromptEmbeddings {
        at::Tensor prompt, negative, pooled, negative_pooled;
    };
    PromptEmbeddings encode_prompts(const GenerationRequest& request, bool with_negative);
    // Latents (scaled) -> images.
    std::vector<Image> decode(const at::Tensor& latents);
    // The live preview: this model's linear latent -> RGB map (preview_map) applied to scaled
    // latents, [B, C, h, w] -> images of h x w. Costs next to nothing.
    std::vector<Image> preview(const at::Tensor& latents) const;
    const at::Tensor& preview_map() const;  // [C + 1, 3], CPU fp32

    const ModelFolder& model() const;
    UNet& unet();
    Vae& vae();
    ClipTextModel& text_encoder();
    const ClipTokenizer& tokenizer() const;  // with the words of the embeddings set
    c10::Device device() const;
    c10::ScalarType dtype() const;
    int native_size() const;  // unet sample_size * VAE downscale (512 for SD 1.5)
    // The sampler diffusers' pipeline uses for this model when none is chosen: the model's own
    // scheduler class (PNDM, DDIM, Euler, Euler a, DPM++ 2M, DPM++ 2M SDE, UniPC, Heun, LCM,
    // DPM2, DPM2 a, LMS, DPM++ 2S; with Karras sigmas when its config says so). PNDM for a class
    // SD Studio does not have (DPMSolverSDEScheduler, DEIS, a singlestep SDE, ...).
    Sampler default_sampler() const;
    int downscale() const;  // 8 for SD models
    // An inpainting model: its UNet takes the latents, the mask and the masked image's latents
    // (9 channels for SD). It only inpaints.
    bool is_inpainting_model() const;

  private:
    Pipeline();
    // The request with its size filled in (0: native_size()), validated for this model.
    GenerationRequest sized(const GenerationRequest& request) const;
    // denoising_steps() of one run (no hires fix).
    int run_steps(const GenerationRequest& request) const;
    // One denoising run: generate() without the hires fix. `inits`: none, one init image for
    // every entry of the batch, or one per entry. For the latent hires fix: img2img from
    // `init_latents` (when defined; scaled latents, one per entry) instead of encoding images,
    // and with `latents_out` the final latents go there instead of being decoded (the result
    // has no images).
    //
    // `span`: a part of the way (DenoisingSpan). `generators`, where given: those of the run
    // before (drawn on from where it left them), or empty, to be filled with this run's.
    GenerationResult run(const GenerationRequest& request, std::span<const Image> inits,
                         const Image* mask, std::span<const Image> controls,
                         const StepObserver& observer, const std::atomic<bool>* cancel,
                         const at::Tensor& init_latents = {}, at::Tensor* latents_out = nullptr,
                         int first_pass_steps = 0, DenoisingSpan span = {},
                         std::vector<at::Generator>* generators = nullptr);
    // The refiner a request names, loaded with this pipeline's device and precision; kept
    // while the requests name it (generate() lets it go at the first that names none).
    Pipeline& refiner(const std::string& path);
    // The ControlNet a request names, loaded with this pipeline's device and precision.
    ControlNet& controlnet(const std::string& path);
    // The same for a T2I-Adapter (a request's ControlRef naming a T2IAdapter folder).
    T2IAdapter& adapter(const std::string& path);
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sds
