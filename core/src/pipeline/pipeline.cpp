#include "sds/pipeline.h"

#include <cmath>
#include <exception>
#include <map>
#include <optional>

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/_upsample_bicubic2d_aa.h>
#include <ATen/ops/_upsample_bilinear2d_aa.h>
#include <ATen/ops/_upsample_nearest_exact2d.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/linalg_lstsq.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/upsample_bicubic2d.h>
#include <ATen/ops/upsample_bilinear2d.h>
#include <ATen/ops/upsample_nearest2d.h>
#include <ATen/ops/zeros_like.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include "io/json_config.h"
#include "pipeline/lora.h"
#include "sched/schedule_math.h"
#include "sds/clip_text_model.h"
#include "sds/clip_tokenizer.h"
#include "sds/controlnet.h"
#include "sds/cpu_buffer_cache.h"
#include "sds/depth_anything.h"
#include "sds/model_folder.h"
#include "sds/original_layout.h"
#include "sds/safetensors.h"
#include "sds/t2i_adapter.h"
#include "sds/textual_inversion.h"
#include "sds/unet.h"
#include "sds/vae.h"

namespace sds {

c10::Device parse_device(const std::string& name) {
    const bool cuda = torch::cuda::is_available();
    if (name == "auto" || name.empty()) {
        return cuda ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
    }
    if (name == "cpu") {
        return c10::Device(c10::kCPU);
    }
    if (name.rfind("cuda", 0) == 0) {
        if (!cuda) {
            throw DeviceError("device '" + name +
                              "': LibTorch sees no CUDA GPU here (no GPU, "
                              "no driver, or a CPU-only LibTorch); use --device cpu");
        }
        c10::Device d(c10::kCUDA, 0);
        try {
            d = c10::Device(name);
        } catch (const std::exception&) {
            throw DeviceError("device '" + name + "' is not a device name (cpu, cuda, cuda:N)");
        }
        if (d.index() >= static_cast<int>(torch::cuda::device_count())) {
            throw DeviceError("device '" + name + "': only " +
                              std::to_string(torch::cuda::device_count()) + " CUDA device(s)");
        }
        return d;
    }
    throw DeviceError("unknown device '" + name + "' (auto, cpu, cuda, cuda:N)");
}

c10::ScalarType parse_dtype(const std::string& name, c10::Device device) {
    if (name == "auto" || name.empty()) {
        return device.is_cuda() ? at::kHalf : at::kFloat;
    }
    if (name == "fp32" || name == "float32") {
        return at::kFloat;
    }
    if (name == "bf16" || name == "bfloat16") {
        return at::kBFloat16;
    }
    if (name == "fp16" || name == "float16") {
        if (!device.is_cuda()) {
            throw DeviceError("precision fp16 is for CUDA GPUs; on the CPU use bf16 or fp32");
        }
        return at::kHalf;
    }
    throw DeviceError("unknown precision '" + name + "' (fp32, bf16, fp16, auto)");
}

struct Pipeline::Impl {
    ModelFolder folder;
    std::unique_ptr<ClipTokenizer> tokenizer;
    std::unique_ptr<ClipTextModel> text;
    std::unique_ptr<ClipTokenizer> tokenizer_2;  // SDXL
    std::unique_ptr<ClipTextModel> text_2;
    std::unique_ptr<UNet> unet;
    std::unique_ptr<Vae> vae;
    at::Tensor preview_map;  // preview_map_for(*vae)
    Options options;
    LoraMerger lora;                       // the LoRAs merged into the weights now
    std::vector<EmbeddingRef> embeddings;  // the textual inversions set now
    std::unique_ptr<Pipeline> refiner;     // the refiner last named (GenerationRequest::refiner)
    std::string refiner_path;
    std::map<std::string, std::unique_ptr<ControlNet>> controlnets;  // by path: the last named
    std::map<std::string, std::unique_ptr<T2IAdapter>> adapters;     // the same
};

namespace {
// A VAE of its own (Options::vae): a diffusers folder (config.json and its weights), or one file
// whose names tell its layout; a file takes `model_config`.
struct VaeFiles {
    ComponentFiles files;
    bool original_layout = false;  // the original names without a prefix
};

VaeFiles vae_files(const std::filesystem::path& path, const std::filesystem::path& model_config) {
    namespace fs = std::filesystem;
    VaeFiles out;
    if (fs::is_directory(path)) {
        out.files = ModelFolder::component_folder(path, "diffusion_pytorch_model");
        return out;
    }
    ComponentFiles& c = out.files;
    c.name = "vae";
    c.dir = path;
    if (!fs::exists(path)) {
        throw FileError(path.string() + ": no such VAE file or folder");
    }
    c.config = model_config;
    c.weights = {path};
    const SafeTensorsFile f = SafeTensorsFile::open(path);
    if (f.contains("encoder.down_blocks.0.resnets.0.conv1.weight")) {
        return out;  // diffusers' names
    }
    if (f.contains("encoder.down.0.block.0.conv1.weight")) {
        out.original_layout = true;
        return out;
    }
    if (f.contains("first_stage_model.encoder.down.0.block.0.conv1.weight")) {
        c.original_prefix = "first_stage_model.";
        return out;
    }
    throw ModelError(path.string() +
                     ": not a VAE (no encoder.down_blocks.0... or encoder.down.0... tensors)");
}

bool is_sd1_vae(const VaeConfig& c) {
    return c.latent_channels == 4 &&
           c.block_out_channels == std::vector<int64_t>{128, 256, 512, 512} &&
           std::abs(c.scaling_factor - 0.18215) < 1e-6;
}

// The UNet's conditioning widths against the text encoders' (diffusers checks the added
// embedding's width too).
void check_xl_fits(const ModelFolder& folder, const UNetConfig& unet, const ClipTextModel* text,
                   const ClipTextModel* text_2) {
    const std::string where = folder.component("unet").config.string();
    if (text_2 == nullptr) {
        if (unet.text_time) {
            throw ModelError(where +
                             ": an SDXL UNet (addition_embed_type text_time) in a folder "
                             "without text_encoder_2 and tokenizer_2");
        }
        return;
    }
    // A refiner has the second encoder alone, and 5 size numbers (the aesthetic score).
    const int64_t context = (text ? text->config().hidden_size : 0) + text_2->config().hidden_size;
    if (!unet.text_time || unet.cross_attention_dim != context ||
        unet.text_embeds_dim() != text_2->config().projection_dim) {
        const std::string n = std::to_string(unet.time_ids);
        throw ModelError(
            where +
            ": does not fit the SDXL text encoders: it needs addition_embed_type "
            "text_time, cross_attention_dim " +
            std::to_string(context) +
            (text ? " (both encoders' widths)" : " (text_encoder_2's width)") +
            " and projection_class_embeddings_input_dim " +
            std::to_string(text_2->config().projection_dim +
                           unet.time_ids * unet.addition_time_embed_dim) +
            " (text_encoder_2's projection_dim + " + n + " x addition_time_embed_dim" +
            (folder.requires_aesthetics_score()
                 ? ": model_index.json's requires_aesthetics_score puts an aesthetic score in "
                   "place of the target size)"
                 : ")"));
    }
}
}  // namespace

Pipeline::Pipeline() : impl_(std::make_unique<Impl>()) {}
Pipeline::~Pipeline() = default;
Pipeline::Pipeline(Pipeline&&) noexcept = default;
Pipeline& Pipeline::operator=(Pipeline&&) noexcept = default;

Pipeline Pipeline::load(const std::filesystem::path& dir, const Options& options,
                        const std::function<void(const std::string&, double)>& progress) {
    auto tell = [&](const std::string& what, double f) {
        if (progress) {
            progress(what, f);
        }
    };
    Pipeline p;
    auto& m = *p.impl_;
    m.options = options;
    tell("reading the model folder", 0.0);
    m.folder = ModelFolder::open_any(dir, options.single_file_config, options.variant);
    m.tokenizer =
        std::make_unique<ClipTokenizer>(ClipTokenizer::load_folder(m.folder.tokenizer_dir()));
    m.folder.explain_load_errors([&] {
        tell("loading the text encoder", 0.05);
        if (!m.folder.is_refiner()) {  // a refiner has the second alone
            m.text = std::make_unique<ClipTextModel>(ClipTextModel::load(
                m.folder.component("text_encoder"), options.dtype, options.device));
        }
        if (m.folder.is_xl()) {
            m.tokenizer_2 = std::make_unique<ClipTokenizer>(
                ClipTokenizer::load_folder(m.folder.tokenizer_2_dir()));
            m.text_2 = std::make_unique<ClipTextModel>(ClipTextModel::load(
                m.folder.component("text_encoder_2"), options.dtype, options.device));
        }
        tell("loading the UNet", 0.2);
        const auto& unet = m.folder.component("unet");
        // A refiner's size numbers: original size, crop corner, aesthetic score.
        UNetConfig unet_config =
            UNetConfig::from_file(unet.config, m.folder.requires_aesthetics_score() ? 5 : 6);
        if (m.folder.is_single_file()) {
            // A single file's UNet takes as many channels as its first convolution: 9 for an
            // inpainting checkpoint (sd-v1-5-inpainting), whose configs are otherwise its
            // family's, as diffusers' from_single_file finds it.
            if (const int64_t c = ModelFolder::single_file_unet_in_channels(m.folder.source())) {
                unet_config.in_channels = c;
            }
        }
        m.unet = std::make_unique<UNet>(unet_config);
        // The (uninitialised) model in its device and precision first, then the weights copied
        // into it converted on the way; or, when the file has that precision and the device is
        // the CPU, used in place from the mapped file.
        m.unet->to(options.device, options.dtype);
        m.unet->load_weights(unet.weights, unet.original_prefix);
        tell("loading the VAE", 0.85);
        const VaeFiles own = options.vae.empty()
                                 ? VaeFiles{m.folder.component("vae")}
                                 : vae_files(options.vae, m.folder.component("vae").config);
        const ComponentFiles& vae = own.files;
        m.vae = std::make_unique<Vae>(VaeConfig::from_file(vae.config));
        const bool upcast =
            m.folder.is_xl() && options.dtype == at::kHalf && m.vae->config().force_upcast;
        m.vae->to(options.device, upcast ? at::kFloat : options.dtype);
        m.vae->load_weights(vae.weights, vae.original_prefix, own.original_layout);
    });
    check_xl_fits(m.folder, m.unet->config(), m.text.get(), m.text_2.get());
    const UNetConfig unet_config = m.unet->config();
    m.lora.add(LoraMerger::Component::UNet, m.unet->module(),
               [unet_config](const std::string& n) { return original_unet_key(n, unet_config); });
    if (m.text) {
        m.lora.add(LoraMerger::Component::TextEncoder, m.text->module());
    }
    if (m.text_2) {
        m.lora.add(LoraMerger::Component::TextEncoder2, m.text_2->module());
    }
    // The preview map's fit encodes 27 small images: in fp32 on the CPU, where bf16
    // convolutions are slower (the round trip through fp32 keeps the weights as they are).
    const c10::ScalarType vae_dtype = m.vae->dtype();
    const bool fit_in_fp32 =
        !options.device.is_cuda() && vae_dtype != at::kFloat && !is_sd1_vae(m.vae->config());
    if (fit_in_fp32) {
        m.vae->to(options.device, at::kFloat);
    }
    m.preview_map = preview_map_for(*m.vae);
    if (fit_in_fp32) {
        m.vae->to(options.device, vae_dtype);
    }
    // Check before the first generation that this scheduler config makes a sampler at all (one
    // for a model that predicts x0 makes no PNDM, say: choosing that one then says why).
    std::exception_ptr first_error;
    for (const auto& name : sampler_names()) {
        try {
            Scheduler::create(sampler_from_name(name), m.folder.component("scheduler").config);
            first_error = nullptr;
            break;
        } catch (const Error&) {
            if (!first_error) {
                first_error = std::current_exception();
            }
        }
    }
    if (first_error) {
        std::rethrow_exception(first_error);
    }
    tell("ready", 1.0);
    return p;
}

void Pipeline::set_loras(const std::vector<LoraRef>& loras) {
    impl_->lora.apply(loras);
}

const std::vector<LoraRef>& Pipeline::loras() const {
    return impl_->lora.applied();
}

void Pipeline::set_embeddings(const std::vector<EmbeddingRef>& list) {
    Impl& m = *impl_;
    auto clear = [&] {
        m.tokenizer->set_added_words({});
        if (m.text) {
            m.text->set_added_embeddings({});
        }
        if (m.text_2) {
            m.tokenizer_2->set_added_words({});
            m.text_2->set_added_embeddings({});
        }
        m.embeddings.clear();
    };
    clear();
    if (list.empty()) {
        return;
    }
    // Each vector gets the next id past the text encoder's vocabulary, in the order given, as
    // diffusers' load_textual_inversion appends them (SDXL's pooled output depends on the order).
    std::vector<ClipTokenizer::AddedWord> words, words_2;
    std::vector<at::Tensor> rows, rows_2;
    // A refiner has the second text encoder alone: an SDXL embedding's clip_g vectors.
    const ClipTextModel& first = m.text ? *m.text : *m.text_2;
    const int64_t base = first.config().vocab_size;
    const int64_t base_2 = m.text_2 ? m.text_2->config().vocab_size : 0;
    int64_t n = 0;
    for (const EmbeddingRef& e : list) {
        const TextualInversion ti = load_textual_inversion(e.file, e.token);
        const int64_t width = m.text ? m.text->config().hidden_size : ti.vectors.size(1);
        if (m.text_2 && !ti.vectors_2.defined()) {
            throw FileError(e.file +
                            ": an SD 1.x/2.x embedding; this SDXL model takes ones "
                            "with clip_l and clip_g vectors");
        }
        if (!m.text_2 && ti.vectors_2.defined()) {
            throw FileError(e.file +
                            ": an SDXL embedding (clip_l and clip_g); this model is SD "
                            "1.x/2.x");
        }
        if (ti.vectors.size(1) != width ||
            (m.text_2 && ti.vectors_2.size(1) != m.text_2->config().hidden_size)) {
            throw FileError(e.file + ": its vectors are " + std::to_string(ti.vectors.size(1)) +
                            " wide, made for another model; this model's text encoder takes " +
                            std::to_string(width));
        }
        ClipTokenizer::AddedWord w{ti.token, {}}, w_2{ti.token, {}};
        for (int64_t k = 0; k < ti.vectors.size(0); ++k, ++n) {
            w.ids.push_back(static_cast<int32_t>(base + n));
            w_2.ids.push_back(static_cast<int32_t>(base_2 + n));
        }
        // A word given twice: the later file's vectors (its ids replace the earlier ones).
        std::erase_if(words, [&](const auto& x) { return x.text == ti.token; });
        std::erase_if(words_2, [&](const auto& x) { return x.text == ti.token; });
        words.push_back(std::move(w));
        words_2.push_back(std::move(w_2));
        rows.push_back(ti.vectors);
        if (m.text_2) {
            rows_2.push_back(ti.vectors_2);
        }
    }
    try {
        m.tokenizer->set_added_words(m.text ? words : words_2);  // a refiner's counts the second's
        if (m.text) {
            m.text->set_added_embeddings(at::cat(rows));
        }
        if (m.text_2) {
            m.tokenizer_2->set_added_words(words_2);
            m.text_2->set_added_embeddings(at::cat(rows_2));
        }
    } catch (...) {
        clear();
        throw;
    }
    m.embeddings = list;
}

const ClipTokenizer& Pipeline::tokenizer() const {
    return *impl_->tokenizer;
}

const std::vector<EmbeddingRef>& Pipeline::embeddings() const {
    return impl_->embeddings;
}

const ModelFolder& Pipeline::model() const {
    return impl_->folder;
}
UNet& Pipeline::unet() {
    return *impl_->unet;
}
Vae& Pipeline::vae() {
    return *impl_->vae;
}
ClipTextModel& Pipeline::text_encoder() {
    return impl_->text ? *impl_->text : *impl_->text_2;
}
c10::Device Pipeline::device() const {
    return impl_->options.device;
}
c10::ScalarType Pipeline::dtype() const {
    return impl_->options.dtype;
}
int Pipeline::downscale() const {
    return static_cast<int>(impl_->vae->config().downscale());
}
bool Pipeline::is_inpainting_model() const {
    return impl_->unet->config().in_channels == 2 * impl_->vae->config().latent_channels + 1;
}
int Pipeline::native_size() const {
    return static_cast<int>(impl_->unet->config().sample_size) * downscale();
}

Sampler Pipeline::default_sampler() const {
    const ComponentFiles& sc = impl_->folder.component("scheduler");
    const std::string& cls = sc.class_name;
    const auto config = [&] { return JsonConfig::load(sc.config); };
    Sampler family = Sampler::Pndm;
    if (cls == "DDIMScheduler")
        family = Sampler::Ddim;
    else if (cls == "EulerDiscreteScheduler")
        family = Sampler::Euler;
    else if (cls == "EulerAncestralDiscreteScheduler")
        family = Sampler::EulerAncestral;
    else if (cls == "UniPCMultistepScheduler")
        family = Sampler::UniPC;
    else if (cls == "LCMScheduler")
        family = Sampler::Lcm;
    else if (cls == "KDPM2DiscreteScheduler")
        family = Sampler::Dpm2;
    else if (cls == "KDPM2AncestralDiscreteScheduler")
        family = Sampler::Dpm2Ancestral;
    else if (cls == "DPMSolverSinglestepScheduler" &&
             config().string("algorithm_type", "dpmsolver++") == "dpmsolver++")
        family = Sampler::DpmPP2S;
    else if (cls == "LMSDiscreteScheduler")
        family = Sampler::Lms;
    else if (cls == "HeunDiscreteScheduler")
        family = Sampler::Heun;
    else if (cls == "DPMSolverMultistepScheduler")
        family = config().string("algorithm_type", "") == "sde-dpmsolver++" ? Sampler::DpmPP2MSde
                                                                            : Sampler::DpmPP2M;
    // The config's use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas pick the twin.
    return with_schedule(family, sched::noise_schedule(config(), NoiseSchedule::Default))
        .value_or(family);
}

at::Tensor emphasize(const at::Tensor& states, const std::vector<float>& weights,
                     PromptSyntax syntax) {
    const at::Tensor z = states.to(at::kFloat);
    const at::Tensor w = at::tensor(weights, at::kFloat).view({1, -1, 1}).to(z.device());
    at::Tensor weighed = z * w;
    if (syntax == PromptSyntax::A1111) {
        const at::Tensor mean = weighed.mean();
        if (mean.item<float>() != 0.0F) {  // A1111 divides by it: 0 / 0 made the states NaN
            weighed = weighed * (z.mean() / mean);
        }
    }
    return weighed.to(states.scalar_type());
}

namespace {

at::Tensor chunk_ids(const PromptChunk& chunk) {
    return at::tensor(chunk.ids, at::kLong).unsqueeze(0);
}
}  // namespace

at::Tensor Pipeline::encode_prompt(const std::string& text, int clip_skip, PromptSyntax syntax) {
    if (impl_->text_2) {
        return encode_prompt_xl(text, clip_skip, syntax).first;
    }
    if (syntax == PromptSyntax::Plain) {
        const auto ids = impl_->tokenizer->encode_padded(text);
        return impl_->text->encode(at::tensor(ids, at::kLong).unsqueeze(0), clip_skip);
    }
    std::vector<at::Tensor> parts;
    for (const PromptChunk& chunk : chunk_prompt(*impl_->tokenizer, text).chunks) {
        parts.push_back(
            emphasize(impl_->text->encode(chunk_ids(chunk), clip_skip), chunk.weights, syntax));
    }
    return at::cat(parts, 1);
}

std::pair<at::Tensor, at::Tensor> Pipeline::encode_prompt_xl(const std::string& text, int clip_skip,
                                                             PromptSyntax syntax) {
    auto& m = *impl_;
    if (!m.text_2) {
        throw Error("encode_prompt_xl: " + m.folder.source().string() + " is not an SDXL model");
    }
    if (syntax == PromptSyntax::Plain) {
        auto ids = [&](const ClipTokenizer& tok) {
            return at::tensor(tok.encode_padded(text), at::kLong).unsqueeze(0);
        };
        const auto second = m.text_2->encode_xl(ids(*m.tokenizer_2), clip_skip);
        if (!m.text) {  // a refiner: the second encoder's states alone
            return {second.hidden, second.pooled};
        }
        const auto first = m.text->encode_xl(ids(*m.tokenizer), clip_skip);
        return {at::cat({first.hidden, second.hidden}, -1), second.pooled};
    }
    const auto chunks_2 = chunk_prompt(*m.tokenizer_2, text).chunks;
    const auto chunks = m.text ? chunk_prompt(*m.tokenizer, text).chunks : chunks_2;
    if (chunks.size() != chunks_2.size()) {
        throw Error(m.folder.source().string() +
                    ": the two tokenizers cut the prompt into different chunks");
    }
    std::vector<at::Tensor> parts;
    at::Tensor pooled;
    for (size_t k = 0; k < chunks.size(); ++k) {
        const auto second = m.text_2->encode_xl(chunk_ids(chunks_2[k]), clip_skip);
        at::Tensor states = emphasize(second.hidden, chunks_2[k].weights, syntax);
        if (m.text) {
            const auto first = m.text->encode_xl(chunk_ids(chunks[k]), clip_skip);
            states = at::cat({emphasize(first.hidden, chunks[k].weights, syntax), states}, -1);
        }
        parts.push_back(states);
        if (k == 0) {
            pooled = second.pooled;
        }
    }
    return {at::cat(parts, 1), pooled};
}

std::vector<Image> Pipeline::decode(const at::Tensor& latents) {
    torch::NoGradGuard no_grad;
    const at::Tensor images =
        impl_->vae->decode((latents / impl_->vae->config().scaling_factor).to(impl_->vae->dtype()));
    std::vector<Image> out;
    for (int64_t i = 0; i < images.size(0); ++i) {
        out.push_back(tensor_to_image(images[i]));
    }
    return out;
}

at::Tensor sd1_preview_map() {
    // REFERENCE.md: rows = latent channels 0..3, columns = R, G, B; no constant term.
    static const float kSd1[5][3] = {{0.3512f, 0.2297f, 0.3227f},
                                     {0.3250f, 0.4974f, 0.2350f},
                                     {-0.2829f, 0.1762f, 0.2721f},
                                     {-0.2120f, -0.2616f, -0.7177f},
                                     {0.0f, 0.0f, 0.0f}};
    return at::from_blob(const_cast<float*>(&kSd1[0][0]), {5, 3}, at::kFloat).clone();
}

at::Tensor preview_map_for(const Vae& vae) {
    const int64_t c = vae.config().latent_channels;
    if (is_sd1_vae(vae.config())) {
        return sd1_preview_map();
    }
    torch::NoGradGuard no_grad;
    // Every mix of three levels per channel, as flat images 8 latents across; the centre 4x4
    // latents (away from the borders' padding) stand for each colour.
    std::vector<float> levels;
    for (float r : {-0.7f, 0.0f, 0.7f}) {
        for (float g : {-0.7f, 0.0f, 0.7f}) {
            for (float b : {-0.7f, 0.0f, 0.7f}) {
                levels.insert(levels.end(), {r, g, b});
            }
        }
    }
    const at::Tensor colours = at::tensor(levels, at::kFloat).view({27, 3});
    const int64_t side = 8 * vae.config().downscale();
    const at::Tensor images = colours.view({27, 3, 1, 1})
                                  .expand({27, 3, side, side})
                                  .to(vae.device(), vae.dtype())
                                  .contiguous();
    const at::Tensor mean = vae.encode(images).first.to(at::kCPU, at::kFloat);
    const at::Tensor z = mean.slice(2, 2, 6).slice(3, 2, 6).mean({2, 3}) *
                         static_cast<float>(vae.config().scaling_factor);  // [27, C]
    const at::Tensor x = at::cat({z, at::ones({27, 1}, at::kFloat)}, 1);
    at::Tensor map = std::get<0>(at::linalg_lstsq(x, colours));
    TORCH_CHECK(map.size(0) == c + 1);
    return map.contiguous();
}

const at::Tensor& Pipeline::preview_map() const {
    return impl_->preview_map;
}

std::vector<Image> Pipeline::preview(const at::Tensor& latents) const {
    return latents_to_preview(latents, impl_->preview_map);
}

std::vector<Image> latents_to_preview(const at::Tensor& latents, const at::Tensor& map) {
    const int64_t c = map.size(0) - 1;
    const at::Tensor x = latents.detach().to(at::kCPU, at::kFloat);  // [B, C, h, w]
    const at::Tensor rgb =
        (at::einsum("bchw,cr->brhw", {x, map.slice(0, 0, c)}) + map[c].view({1, 3, 1, 1}))
            .clamp(-1, 1);
    std::vector<Image> out;
    for (int64_t i = 0; i < rgb.size(0); ++i) {
        out.push_back(tensor_to_image(rgb[i]));
    }
    return out;
}

namespace {
// A1111's latent upscalers: torch's interpolate to h x w with the mode (and antialiasing) each
// name stands for (align_corners false), in float32 (the CPU has no bf16 antialiasing).
at::Tensor scale_latents(const at::Tensor& latents, int64_t h, int64_t w,
                         const std::string& upscaler) {
    const at::Tensor x = latents.to(at::kFloat);
    const std::vector<int64_t> size = {h, w};
    const auto scaled = [&]() -> at::Tensor {
        if (upscaler == "Latent")
            return at::upsample_bilinear2d(x, size, false);
        if (upscaler == "Latent (antialiased)")
            return at::_upsample_bilinear2d_aa(x, size, false);
        if (upscaler == "Latent (bicubic)")
            return at::upsample_bicubic2d(x, size, false);
        if (upscaler == "Latent (bicubic antialiased)")
            return at::_upsample_bicubic2d_aa(x, size, false);
        if (upscaler == "Latent (nearest)")
            return at::upsample_nearest2d(x, size);
        if (upscaler == "Latent (nearest-exact)")
            return at::_upsample_nearest_exact2d(x, size);
        throw Error("unknown latent upscaler '" + upscaler + "'");
    };
    return scaled().to(latents.scalar_type());
}

// The hires fix's two runs: the first at the request's size, the second img2img at the scaled
// size with the hires strength and steps.
std::pair<GenerationRequest, GenerationRequest> hires_runs(const GenerationRequest& req) {
    GenerationRequest low = req;
    low.hires_scale = 1;
    GenerationRequest high = low;
    std::tie(high.width, high.height) = req.hires_size(req.width, req.height);
    high.init_image = "hires";
    high.strength = req.hires_strength;
    high.steps = req.hires_steps > 0 ? req.hires_steps : req.steps;
    high.validate();
    return {low, high};
}
}  // namespace

GenerationRequest Pipeline::sized(const GenerationRequest& in) const {
    GenerationRequest req = in;
    req.width = req.width == 0 ? native_size() : req.width;
    req.height = req.height == 0 ? native_size() : req.height;
    req.validate();
    if (req.width % downscale() != 0 || req.height % downscale() != 0) {
        throw Error("request: width and height must be multiples of " +
                    std::to_string(downscale()) + " for this model");
    }
    return req;
}

namespace {
// The indices [first, last) of the timesteps a part of the way runs, cut as diffusers' SDXL
// pipelines cut them: the timesteps from round(T - end x T) on for the model (denoising_end),
// those below round(T - start x T) for the refiner (denoising_start; one more for a second-order
// scheduler whose count is even, so that a step is not cut between its two calls). Python's
// round: half to even, as nearbyint.
std::pair<int64_t, int64_t> span_indices(const Scheduler& s, double start, double end) {
    const at::Tensor& ts = s.timesteps();
    const int64_t n = ts.size(0);
    const auto t = static_cast<double>(s.train_timesteps());
    const auto cutoff = [&](double fraction) { return std::nearbyint(t - fraction * t); };
    int64_t first = 0, last = n;
    if (end > 0 && end < 1) {
        last = (ts >= cutoff(end)).sum().item<int64_t>();
    }
    if (start > 0 && start < 1) {
        int64_t k = (ts < cutoff(start)).sum().item<int64_t>();
        if (s.order() == 2 && k % 2 == 0) {
            ++k;
        }
        first = n - k;
    }
    return {first, last};
}
}  // namespace

int Pipeline::run_steps(const GenerationRequest& r) const {
    auto s = Scheduler::create(r.sampler, impl_->folder.component("scheduler").config);
    s->set_eta(r.eta);
    s->set_timesteps(r.steps);
    const int64_t n = s->timesteps().size(0);
    const int64_t cut = r.is_img2img() ? s->first_index_for_strength(r.steps, r.strength) : 0;
    if (!r.refiner.empty()) {  // the model's part and the refiner's (counted on this model's
                               // schedule: the refiner's is the same unless its config differs)
        const int64_t last = span_indices(*s, 0.0, r.refiner_switch_at).second;
        const auto [from, to] = span_indices(*s, r.refiner_switch_at, 1.0);
        return static_cast<int>(std::max<int64_t>(last - cut, 0) + (to - from));
    }
    return static_cast<int>(n - cut);
}

Pipeline& Pipeline::refiner(const std::string& path) {
    auto& m = *impl_;
    if (!m.refiner || m.refiner_path != path) {
        m.refiner.reset();
        Options options = m.options;
        options.vae.clear();  // the refiner's own VAE decodes
        options.single_file_config.clear();
        auto loaded = std::make_unique<Pipeline>(load(path, options));
        if (loaded->vae().config().latent_channels != m.vae->config().latent_channels ||
            loaded->downscale() != downscale()) {
            throw ModelError(path + ": a refiner whose latents are not this model's (" +
                             std::to_string(loaded->vae().config().latent_channels) +
                             " channels, 1/" + std::to_string(loaded->downscale()) +
                             " of the size; this model's " +
                             std::to_string(m.vae->config().latent_channels) + ", 1/" +
                             std::to_string(downscale()) + ")");
        }
        m.refiner = std::move(loaded);
        m.refiner_path = path;
    }
    return *m.refiner;
}

int Pipeline::denoising_steps(const GenerationRequest& in) const {
    const GenerationRequest req = sized(in);
    if (!req.is_hires()) {
        return run_steps(req);
    }
    const auto [low, high] = hires_runs(req);
    return run_steps(low) + run_steps(sized(high));
}

Image preprocess_control(const Image& sized, const ControlRef& control) {
    if (control.preprocessor == "invert") {
        Image out = sized;
        for (uint8_t& v : out.rgb) {
            v = static_cast<uint8_t>(255 - v);
        }
        return out;
    }
    if (control.preprocessor == "canny") {  // the edges at the size the ControlNet sees
        return canny(sized, control.canny_low, control.canny_high);
    }
    if (control.preprocessor == "binary") {
        return binary(sized, control.binary_threshold);
    }
    if (control.preprocessor == "lineart_standard") {
        return lineart_standard(sized);
    }
    if (control.preprocessor == "depth") {  // the depth at the size the ControlNet sees
        if (control.depth_model.empty()) {
            throw Error("the depth preprocessor needs a Depth Anything model folder");
        }
        return DepthAnything::cached(control.depth_model)->depth_map(sized);
    }
    if (control.preprocessor != "none") {
        throw Error("unknown ControlNet preprocessor '" + control.preprocessor + "'");
    }
    return sized;
}

T2IAdapter& Pipeline::adapter(const std::string& path) {
    auto& m = *impl_;
    auto& a = m.adapters[path];
    if (!a) {
        a = std::make_unique<T2IAdapter>(T2IAdapter::load(path, m.options.device, m.options.dtype));
    }
    return *a;
}

ControlNet& Pipeline::controlnet(const std::string& path) {
    auto& m = *impl_;
    auto& net = m.controlnets[path];
    if (!net) {
        net = std::make_unique<ControlNet>(
            ControlNet::load(path, m.unet->config(), m.options.device, m.options.dtype));
        if (net->downscale() != downscale()) {
            const int64_t theirs = net->downscale();
            m.controlnets.erase(path);
            throw ModelError(path + ": a ControlNet whose conditioning image is " +
                             std::to_string(theirs) + " times the latents' size (this model's " +
                             std::to_string(downscale()) + ")");
        }
    }
    return *net;
}

GenerationResult Pipeline::generate(const GenerationRequest& in, const Image* init,
                                    const Image* mask, const StepObserver& observer,
                                    const std::atomic<bool>* cancel,
                                    std::span<const Image> controls) {
    if (in.refiner.empty() && impl_->refiner) {  // a refiner is kept while requests name it
        impl_->refiner.reset();
        impl_->refiner_path.clear();
    }
    // ControlNets are kept while the requests name them.
    const auto unnamed = [&](const auto& entry) {
        return std::none_of(in.controls.begin(), in.controls.end(),
                            [&](const ControlRef& c) { return c.model == entry.first; });
    };
    std::erase_if(impl_->controlnets, unnamed);
    std::erase_if(impl_->adapters, unnamed);
    if (!in.refiner.empty()) {
        // The model until the switch, its latents out; the refiner from there, drawing on the
        // same generators (diffusers' ensemble of expert denoisers). The observer counts the
        // two runs' steps as one; the refiner's VAE decodes. img2img: the model's part starts
        // where the strength cuts the schedule (none of it where that is past the switch: the
        // refiner starts at the switch whatever the strength, as diffusers' denoising_start).
        const GenerationRequest req = sized(in);
        Pipeline& second = refiner(req.refiner);
        const bool inpaint = req.is_inpaint();
        GenerationRequest refined = req;
        if (!inpaint) {
            refined.init_image.clear();  // the refiner goes on from the model's latents
        }
        refined.refiner.clear();
        refined.loras.clear();  // the model's, which do not fit the refiner
        refined.embeddings.clear();
        refined.controls.clear();  // the model's ControlNets guide the model's steps alone
        const int total = denoising_steps(req);
        int done = 0, seen = 0;  // the model's steps, then the refiner's after them
        const StepObserver counted = [&](const StepEvent& e) {
            ++seen;
            StepEvent c = e;
            c.index = done + e.index;
            c.total = total;
            if (observer) {
                observer(c);
            }
        };
        std::vector<at::Generator> gens;
        at::Tensor latents;
        const bool given = init != nullptr && !init->empty();
        const auto inits = given ? std::span<const Image>(init, 1) : std::span<const Image>();
        run(req, inits, mask, controls, counted, cancel, {}, &latents, 0,
            {0.0, req.refiner_switch_at}, &gens);
        done = seen;
        // Inpainting: the refiner blends the kept part back in too (and keeps it, as asked).
        GenerationResult result = second.run(refined, inpaint ? inits : std::span<const Image>(),
                                             inpaint ? mask : nullptr, {}, counted, cancel, latents,
                                             nullptr, 0, {req.refiner_switch_at, 1.0}, &gens);
        result.request = req;
        return result;
    }
    if (!in.is_hires()) {
        const bool given = init != nullptr && !init->empty();
        return run(in, given ? std::span<const Image>(init, 1) : std::span<const Image>(), mask,
                   controls, observer, cancel);
    }
    // The hires fix: the first run at the request's size, each image scaled up (Lanczos, as
    // Pillow; or its latents, by torch's interpolate), then an img2img run from them, image i
    // with seed + i. The observer counts both runs' steps as one.
    const GenerationRequest req = sized(in);
    const auto [low, high] = hires_runs(req);
    const int n_low = run_steps(low), total = n_low + run_steps(sized(high));
    StepObserver counted_low, counted_high;
    if (observer) {
        counted_low = [&](const StepEvent& e) {
            StepEvent c = e;
            c.total = total;
            observer(c);
        };
        counted_high = [&](const StepEvent& e) {
            StepEvent c = e;
            c.index += n_low;
            c.total = total;
            observer(c);
        };
    }
    GenerationResult result;
    if (req.is_latent_hires()) {
        at::Tensor latents;
        run(low, {}, nullptr, controls, counted_low, cancel, {}, &latents);
        const at::Tensor scaled = scale_latents(latents, high.height / downscale(),
                                                high.width / downscale(), req.hires_upscaler);
        result = run(high, {}, nullptr, controls, counted_high, cancel, scaled, nullptr, low.steps);
    } else {
        const GenerationResult first = run(low, {}, nullptr, controls, counted_low, cancel);
        std::vector<Image> scaled;
        for (const Image& image : first.images) {
            scaled.push_back(resize(image, high.width, high.height));
        }
        result = run(high, scaled, nullptr, controls, counted_high, cancel, {}, nullptr, low.steps);
    }
    result.request = req;
    return result;
}

Pipeline::PromptEmbeddings Pipeline::encode_prompts(const GenerationRequest& req,
                                                    bool with_negative) {
    torch::NoGradGuard no_grad;
    auto& m = *impl_;
    if (req.loras != m.lora.applied()) {
        m.lora.apply(req.loras);
    }
    if (req.embeddings != m.embeddings) {
        set_embeddings(req.embeddings);
    }
    // Clip skip applies to the prompt only: diffusers' pipelines (SD and SDXL) encode the
    // negative prompt as if there were none.
    const PromptSyntax syntax = req.prompt_syntax;
    PromptEmbeddings out;
    if (!m.text_2) {
        out.prompt = encode_prompt(req.prompt, req.clip_skip, syntax);
        if (with_negative) {
            out.negative = encode_prompt(req.negative_prompt, 0, syntax);
        }
        return out;
    }
    // SDXL: both encoders' states side by side and the second's pooled output. No negative
    // prompt: zeros, when the model says so.
    std::tie(out.prompt, out.pooled) = encode_prompt_xl(req.prompt, req.clip_skip, syntax);
    if (with_negative) {
        if (req.negative_prompt.empty() && m.folder.force_zeros_for_empty_prompt()) {
            out.negative = at::zeros_like(out.prompt);
            out.negative_pooled = at::zeros_like(out.pooled);
        } else {
            std::tie(out.negative, out.negative_pooled) =
                encode_prompt_xl(req.negative_prompt, 0, syntax);
        }
    }
    return out;
}

GenerationResult Pipeline::run(const GenerationRequest& in, std::span<const Image> inits,
                               const Image* mask, std::span<const Image> control_images,
                               const StepObserver& observer, const std::atomic<bool>* cancel,
                               const at::Tensor& init_latents, at::Tensor* latents_out,
                               int first_pass_steps, DenoisingSpan span,
                               std::vector<at::Generator>* generators) {
    torch::NoGradGuard no_grad;
    // Every step allocates the same buffers: keep them from one step to the next, and let them
    // go before the VAE decode, whose sizes differ.
    std::optional<CpuBufferScope> keep_buffers(std::in_place);
    auto& m = *impl_;
    const GenerationRequest req = sized(in);
    if (control_images.size() != req.controls.size()) {
        throw Error("ControlNets: " + std::to_string(req.controls.size()) + " in the request but " +
                    std::to_string(control_images.size()) + " images given");
    }
    if (req.is_img2img() && inits.empty() && !init_latents.defined()) {
        throw Error("img2img needs an init image (" + req.init_image + ")");
    }
    if (inits.size() > 1 && static_cast<int>(inits.size()) != req.batch_count) {
        throw Error("img2img: " + std::to_string(inits.size()) + " init images for a batch of " +
                    std::to_string(req.batch_count));
    }
    const bool inpaint = req.is_inpaint();
    const bool inpainting_unet = is_inpainting_model();
    if (inpaint && (mask == nullptr || mask->empty())) {
        throw Error("inpainting needs a mask image (" + req.mask_image + ")");
    }
    if (inpainting_unet && !inpaint) {
        throw Error(m.folder.source().string() +
                    " is an inpainting model (its UNet takes the mask and the masked image "
                    "too): it needs an init image and a mask to repaint");
    }
    const auto device = m.options.device;
    const auto dtype = m.options.dtype;
    const int64_t b = req.batch_count;

    // One CPU generator per image, seeded seed + i (diffusers' list of generators); or those a
    // run before this one drew from.
    std::vector<at::Generator> own;
    std::vector<at::Generator>& gens = generators != nullptr ? *generators : own;
    if (gens.empty()) {
        for (int64_t i = 0; i < b; ++i) {
            gens.push_back(
                at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(req.seed + i)));
        }
    }
    if (static_cast<int64_t>(gens.size()) != b) {
        throw Error("a run of " + std::to_string(b) + " images given " +
                    std::to_string(gens.size()) + " generators");
    }
    const NoiseFn noise = [&](at::IntArrayRef shape, at::ScalarType dt) {
        std::vector<int64_t> one(shape.begin(), shape.end());
        one[0] = 1;
        std::vector<at::Tensor> parts;
        for (int64_t i = 0; i < shape[0]; ++i) {
            parts.push_back(
                at::randn(one, gens[static_cast<size_t>(i)], at::TensorOptions().dtype(dt)));
        }
        return at::cat(parts, 0);
    };

    // A1111's composable prompts (AND, or a weight after the prompt): each part guided against
    // the negative prompt on its own, the guidance added up with the parts' weights. The
    // negative prompt is run then even at a guidance of 1, as A1111 runs it.
    std::vector<PromptPart> parts{{req.prompt, 1.0}};
    if (req.prompt_syntax != PromptSyntax::Plain) {
        parts = split_and(req.prompt);
    }
    // A guidance-distilled UNet (time_cond_proj_dim) takes the guidance as a condition and runs
    // once a step, without the negative prompt, as diffusers' pipelines run it.
    const bool distilled = m.unet->config().time_cond_proj_dim > 0;
    if (distilled && composes(parts)) {
        throw Error(
            "composable prompts (AND, or a weight after the prompt) need classifier-free "
            "guidance, which this model's UNet does not run: it is guidance-distilled "
            "(time_cond_proj_dim in " +
            m.folder.component("unet").config.string() + ")");
    }
    const bool guided = !distilled && (req.guided() || composes(parts));
    // The UNet's batch: [negative x B when guided, part 1 x B, ..., part n x B].
    const auto copies = static_cast<int64_t>(parts.size()) + (guided ? 1 : 0);

    // With A1111's syntax the texts may differ in length (chunks of 77): the parts are padded
    // to the longest with their last vector, as A1111 stacks them; a negative of another
    // length goes through the UNet on its own (`uncond_context`), as in A1111.
    struct StepText {
        at::Tensor context, uncond_context;
        UNet::Added added;
    };
    const auto encode_text = [&](const std::vector<std::string>& prompts,
                                 const std::string& negative) {
        std::vector<at::Tensor> contexts, pooled;
        at::Tensor uncond, uncond_pooled;
        for (size_t k = 0; k < prompts.size(); ++k) {
            GenerationRequest texts = req;
            texts.prompt = prompts[k];
            texts.negative_prompt = negative;
            const PromptEmbeddings text = encode_prompts(texts, guided && k == 0);
            contexts.push_back(text.prompt.to(dtype));
            pooled.push_back(text.pooled);
            if (k == 0 && text.negative.defined()) {
                uncond = text.negative.to(dtype).repeat({b, 1, 1});
                uncond_pooled = text.negative_pooled;
            }
        }
        int64_t longest = 0;
        for (const at::Tensor& c : contexts) {
            longest = std::max(longest, c.size(1));
        }
        for (at::Tensor& c : contexts) {
            if (c.size(1) < longest) {
                c = at::cat({c, c.narrow(1, c.size(1) - 1, 1)
                                    .expand({c.size(0), longest - c.size(1), c.size(2)})},
                            1);
            }
            c = c.repeat({b, 1, 1});
        }
        StepText out;
        out.context = at::cat(contexts, 0);
        if (distilled) {  // diffusers' w: the guidance scale less 1
            out.added.guidance = at::scalar_tensor(req.guidance_scale - 1.0, at::kDouble);
        }
        if (uncond.defined()) {
            if (uncond.size(1) == longest) {
                out.context = at::cat({uncond, out.context}, 0);
            } else {
                out.uncond_context = uncond;
            }
        }
        if (m.text_2) {
            // SDXL: the pooled embeddings and the size ids (original size, crop corner 0,
            // target size: the image's size, as diffusers defaults them).
            std::vector<at::Tensor> embeds;
            if (uncond.defined()) {
                embeds.push_back(uncond_pooled.to(dtype).repeat({b, 1}));
            }
            for (const at::Tensor& p : pooled) {
                embeds.push_back(p.to(dtype).repeat({b, 1}));
            }
            // A refiner's: original size, crop corner, and the aesthetic score (the negative
            // prompt's rows the negative one), as diffusers' img2img pipeline.
            const double h = req.height, w = req.width;
            out.added.text_embeds = at::cat(embeds, 0);
            const auto ids = [&](double last, int64_t rows) {
                std::vector<double> v{h, w, 0, 0, h, w};
                if (m.folder.requires_aesthetics_score()) {
                    v = {h, w, 0, 0, last};
                }
                const auto n = static_cast<int64_t>(v.size());
                return at::tensor(v, at::kDouble).to(device, dtype).view({1, n}).repeat({rows, 1});
            };
            const int64_t negative_rows = uncond.defined() ? b : 0;
            out.added.time_ids =
                at::cat({ids(req.negative_aesthetic_score, negative_rows),
                         ids(req.aesthetic_score, out.added.text_embeds.size(0) - negative_rows)},
                        0);
        }
        return out;
    };
    auto scheduler = Scheduler::create(req.sampler, m.folder.component("scheduler").config);
    scheduler->set_eta(req.eta);
    scheduler->set_timesteps(req.steps);
    const int64_t latent_channels = m.vae->config().latent_channels;
    const std::vector<int64_t> shape = {b, latent_channels, req.height / downscale(),
                                        req.width / downscale()};
    // The ControlNets, each with its image at this run's size ([1, 3, H, W] in [0, 1]), and the
    // T2I-Adapters, each with its feature maps (made once, times its scale).
    struct Control {
        const ControlNet* net;  // null: a T2I-Adapter
        at::Tensor image;
        const ControlRef* ref;
        std::vector<at::Tensor> features;
    };
    std::vector<Control> controls;  // filled once the init image is sized (below)
    // The ControlNets' residuals and the T2I-Adapters' feature maps, summed, for rows of the
    // UNet's batch whose first `uncond` are the negative prompt's, at model call `call` of
    // `calls`; none where none runs. In guess mode the ControlNets see the other rows alone and
    // the negative prompt's get zeros, as diffusers' pipelines do it; an adapter's maps go to
    // every row. An adapter runs from `start` of the way while the call is below `end` x the
    // steps (diffusers' adapter_conditioning_factor; the calls of a run that starts part of the
    // way).
    const auto control_for = [&](const at::Tensor& input, const at::Tensor& t,
                                 const at::Tensor& context, const UNet::Added& added,
                                 int64_t uncond, int64_t call,
                                 int64_t calls) -> std::optional<UNet::Residuals> {
        std::optional<UNet::Residuals> sum;
        const int64_t rows = input.size(0);
        const int64_t from = req.control_guess_mode ? uncond : 0;
        const at::Tensor x = input.narrow(0, from, rows - from).narrow(1, 0, latent_channels);
        const at::Tensor ctx = context.narrow(0, from, rows - from);
        UNet::Added a;
        if (added.text_embeds.defined()) {
            a.text_embeds = added.text_embeds.narrow(0, from, rows - from);
            a.time_ids = added.time_ids.narrow(0, from, rows - from);
        }
        const double now = static_cast<double>(call) / static_cast<double>(calls);
        const double next = static_cast<double>(call + 1) / static_cast<double>(calls);
        // The whole schedule: diffusers' steps; a run from part of the way: its calls.
        const int64_t adapter_steps = calls == scheduler->timesteps().size(0) ? req.steps : calls;
        std::vector<at::Tensor> intrablock;
        for (const Control& c : controls) {
            if (!c.net) {
                if (now < c.ref->start ||
                    call >= static_cast<int64_t>(static_cast<double>(adapter_steps) * c.ref->end)) {
                    continue;
                }
                for (size_t k = 0; k < c.features.size(); ++k) {
                    const at::Tensor f = c.features[k].expand({rows, -1, -1, -1});
                    if (k < intrablock.size()) {
                        intrablock[k] = intrablock[k] + f;
                    } else {
                        intrablock.push_back(f);
                    }
                }
                continue;
            }
            if (from == rows || now < c.ref->start || next > c.ref->end) {
                continue;  // diffusers runs it at a scale of 0: its residuals add nothing
            }
            const at::Tensor image = c.image.expand({rows - from, -1, -1, -1}).contiguous();
            UNet::Residuals r =
                c.net->forward(x, t, ctx, image, c.ref->scale, req.control_guess_mode, a);
            if (!sum) {
                sum = std::move(r);
                continue;
            }
            for (size_t k = 0; k < r.down.size(); ++k) {
                sum->down[k] = sum->down[k] + r.down[k];
            }
            sum->mid = sum->mid + r.mid;
        }
        if (sum && from > 0) {
            const auto pad = [&](const at::Tensor& d) {
                return at::cat({at::zeros_like(d.narrow(0, 0, 1)).expand({from, -1, -1, -1}), d},
                               0);
            };
            for (at::Tensor& d : sum->down) {
                d = pad(d);
            }
            sum->mid = pad(sum->mid);
        }
        if (!intrablock.empty()) {
            if (!sum) {
                sum.emplace();
            }
            sum->intrablock = std::move(intrablock);
        }
        return sum;
    };
    // The UNet's noise prediction for the batch above (`uncond` rows of the negative prompt
    // first), at model call `call` of `calls`.
    const auto predict = [&](const at::Tensor& input, const at::Tensor& t, const StepText& text,
                             int64_t uncond, int64_t call, int64_t calls) {
        const auto unet = [&](const at::Tensor& x, const at::Tensor& context,
                              const UNet::Added& added, int64_t x_uncond) {
            const auto control = control_for(x, t, context, added, x_uncond, call, calls);
            return m.unet->forward(x, t, context, added, control ? &*control : nullptr);
        };
        if (!text.uncond_context.defined()) {
            return unet(input, text.context, text.added, uncond);
        }
        const auto rows = [&](int64_t from, int64_t count) {
            UNet::Added a;
            a.guidance = text.added.guidance;
            if (text.added.text_embeds.defined()) {
                a.text_embeds = text.added.text_embeds.narrow(0, from, count);
                a.time_ids = text.added.time_ids.narrow(0, from, count);
            }
            return a;
        };
        const int64_t rest = input.size(0) - b;
        return at::cat({unet(input.narrow(0, 0, b), text.uncond_context, rows(0, b), b),
                        unet(input.narrow(0, b, rest), text.context, rows(b, rest), 0)},
                       0);
    };

    // Images [1 or B, 3, H, W] in [-1, 1] -> scaled latents [B, C, h, w], entry i a sample of
    // the VAE's posterior (of image i, or of the one image) drawn with generator i. diffusers
    // encodes one image once per entry; the encoding is deterministic, so once is enough.
    auto encode_samples = [&](const at::Tensor& images) {
        const auto [means, logvars] = m.vae->encode(images.to(device, m.vae->dtype()));
        std::vector<at::Tensor> encoded;
        for (int64_t i = 0; i < b; ++i) {
            const int64_t k = means.size(0) == 1 ? 0 : i;
            const at::Tensor mean = means.narrow(0, k, 1);
            const at::Tensor std_dev = at::exp(0.5 * logvars.narrow(0, k, 1));
            const at::Tensor eps = at::randn(mean.sizes(), gens[static_cast<size_t>(i)],
                                             at::TensorOptions().dtype(mean.scalar_type()))
                                       .to(device);
            encoded.push_back(mean + std_dev * eps);
        }
        return (m.vae->config().scaling_factor * at::cat(encoded, 0)).to(dtype);
    };
    int64_t first = 0;
    at::Tensor latents;
    // Inpainting: the mask at the latents' size ([B, 1, h, w], 1 repaints), the init image's
    // latents and the first noise (blended back in after each step where the UNet does not
    // take the mask), the masked image's latents (for an inpainting UNet).
    at::Tensor mask_latent, image_latents, first_noise, masked_latents;
    Image init_sized, mask_sized;  // at the request's size
    Image init_full, mask_full;    // only the masked area: the whole pictures
    std::optional<Box> region;     // only the masked area: where it is cut out
    const auto [span_first, span_last] = span_indices(*scheduler, span.start, span.end);
    // The mask as the request blurs it, and at the latents' size for each image.
    const auto blurred_mask = [&] {
        return req.mask_blur > 0 ? gaussian_blur(*mask, static_cast<float>(req.mask_blur)) : *mask;
    };
    const auto latent_mask = [&](const at::Tensor& repaint) {
        return at::upsample_nearest2d(repaint, {shape[2], shape[3]})
            .to(device, dtype)
            .repeat({b, 1, 1, 1});
    };
    if (span.start > 0) {  // on from where another model left the latents
        if (!init_latents.defined()) {
            throw Error("a run from part of the way needs the latents it starts from");
        }
        first = span_first;
        latents = init_latents.to(device, dtype);
        if (inpaint) {
            // After an inpainting run (SDXL's refiner): as diffusers' SDXL inpainting pipeline
            // given those latents for its image and denoising_start, the kept part is blended
            // back from them, noised with noise drawn now; there is no masked image.
            if (inpainting_unet) {  // (only the masked area: refused by the request)
                throw Error(m.folder.source().string() +
                            ": a refiner after inpainting takes the latents alone, not an "
                            "inpainting UNet's mask and masked image");
            }
            init_sized = resize(inits.front(), req.width, req.height);
            mask_sized = resize(blurred_mask(), req.width, req.height);
            image_latents = latents;
            first_noise = noise(shape, dtype).to(device);
            mask_latent = latent_mask(mask_to_tensor(mask_sized));
        }
    } else if (!req.is_img2img()) {
        latents = noise(shape, dtype).to(device) * scheduler->init_noise_sigma();
    } else if (!inpaint) {
        first = scheduler->first_index_for_strength(req.steps, req.strength);
        at::Tensor x0;
        if (init_latents.defined()) {  // as diffusers takes latents for its image: no VAE
            x0 = init_latents.to(device, dtype);
        } else {
            std::vector<at::Tensor> images;
            for (const Image& init : inits) {
                images.push_back(image_to_tensor(resize(init, req.width, req.height)));
            }
            x0 = encode_samples(at::cat(images, 0));
        }
        latents = scheduler->add_noise(x0, noise(x0.sizes(), dtype).to(device), first);
    } else {
        // As StableDiffusionInpaintPipeline, each generator drawing in its order: the init
        // image's posterior (unless an inpainting UNet starts from pure noise), the first noise,
        // the masked image's posterior (drawn even where it is not used).
        first = scheduler->first_index_for_strength(req.steps, req.strength);
        const bool pure_noise = req.strength == 1.0;
        const Image blurred = blurred_mask();
        if (req.mask_padding >= 0) {  // only the masked area, cut out at the request's size
            init_full = inits.front();
            mask_full = blurred.width == init_full.width && blurred.height == init_full.height
                            ? blurred
                            : resize(blurred, init_full.width, init_full.height);
            region = mask_crop_region(mask_full, req.width, req.height, req.mask_padding);
            init_sized = resize_fill(crop(init_full, *region), req.width, req.height);
            mask_sized = resize_fill(crop(mask_full, *region), req.width, req.height);
        } else {
            init_sized = resize(inits.front(), req.width, req.height);
            mask_sized = resize(blurred, req.width, req.height);
        }
        const at::Tensor image = image_to_tensor(init_sized);
        const at::Tensor repaint = mask_to_tensor(mask_sized);
        if (!inpainting_unet || !pure_noise) {
            image_latents = encode_samples(image);
        }
        first_noise = noise(shape, dtype).to(device);
        latents = pure_noise ? first_noise * scheduler->init_noise_sigma()
                             : scheduler->add_noise(image_latents, first_noise, first);
        masked_latents = encode_samples(image * (repaint < 0.5));
        mask_latent = latent_mask(repaint);
    }

    for (size_t k = 0; k < req.controls.size(); ++k) {
        const ControlRef& ref = req.controls[k];
        Image image = control_images[k];
        if (image.empty()) {
            throw Error("ControlNet " + ref.model + " needs its image (" + ref.image + ")");
        }
        if (region) {
            // Only the masked area: the same part cut out as from the init image, as diffusers'
            // padding_mask_crop does (an image of another size than the init image's is
            // stretched to it first).
            if (image.width != init_full.width || image.height != init_full.height) {
                image = resize(image, init_full.width, init_full.height);
            }
            image = resize_fill(crop(image, *region), req.width, req.height);
        } else if (image.width != req.width || image.height != req.height) {
            image = resize(image, req.width, req.height);
        }
        if (T2IAdapter::is_adapter(ref.model)) {
            const T2IAdapter& a = adapter(ref.model);
            const int64_t f = a.downscale();
            if (req.width % f != 0 || req.height % f != 0) {
                throw Error(ref.model +
                            ": this T2I-Adapter needs a width and height in "
                            "multiples of " +
                            std::to_string(f) + " (asked for " + std::to_string(req.width) + "x" +
                            std::to_string(req.height) + ")");
            }
            const Image seen = preprocess_control(image, ref);
            std::vector<at::Tensor> features =
                a.forward(control_to_tensor(seen, a.config().in_channels));
            for (at::Tensor& f : features) {
                f = (f * ref.scale).to(dtype);
            }
            controls.push_back({nullptr, {}, &ref, std::move(features)});
            continue;
        }
        controls.push_back({&controlnet(ref.model),
                            control_to_tensor(preprocess_control(image, ref)).to(device, dtype),
                            &ref,
                            {}});
    }

    const at::Tensor timesteps = scheduler->timesteps();
    const int64_t n = timesteps.size(0);
    const int64_t last = span_last;  // n unless the run stops part of the way
    // Each model call's texts: A1111's prompt editing and alternation switch them as the run
    // goes (the calls counted from 0, as A1111's denoiser counts them); each pair of texts is
    // encoded once, before the first step.
    std::vector<std::vector<TimedPrompt>> prompts;
    std::vector<TimedPrompt> negatives{{req.steps, req.negative_prompt}};
    for (const PromptPart& part : parts) {
        prompts.push_back(req.prompt_syntax == PromptSyntax::Plain
                              ? std::vector<TimedPrompt>{{req.steps, part.text}}
                              : prompt_schedule(part.text, req.steps, first_pass_steps));
    }
    if (req.prompt_syntax != PromptSyntax::Plain) {
        negatives = prompt_schedule(req.negative_prompt, req.steps, first_pass_steps);
    }
    std::map<std::pair<std::vector<std::string>, std::string>, StepText> encoded;
    std::vector<const StepText*> step_texts;
    for (int64_t i = first; i < last; ++i) {
        const int call = static_cast<int>(i - first);
        std::pair<std::vector<std::string>, std::string> key{{}, prompt_at(negatives, call)};
        for (const auto& schedule : prompts) {
            key.first.push_back(prompt_at(schedule, call));
        }
        auto it = encoded.find(key);
        if (it == encoded.end()) {
            it = encoded.emplace(key, encode_text(key.first, key.second)).first;
        }
        step_texts.push_back(&it->second);
    }
    for (int64_t i = first; i < last; ++i) {
        if (cancel != nullptr && cancel->load()) {
            throw Cancelled();
        }
        const at::Tensor t = timesteps[i];
        // Copies side by side by at::cat, as diffusers makes them: it keeps the latents' memory
        // format (an img2img start may be channels-last), which repeat() would not, and bf16
        // convolutions round differently in the two.
        const auto batch = [&](const at::Tensor& x) {
            return copies > 1 ? at::cat(std::vector<at::Tensor>(static_cast<size_t>(copies), x), 0)
                              : x;
        };
        at::Tensor input = scheduler->scale_model_input(batch(latents), i);
        if (inpaint && inpainting_unet) {
            input = at::cat({input, batch(mask_latent), batch(masked_latents)}, 1);
        }
        // The calls counted to the end of the schedule, where the run stops part of the way
        // too (diffusers' ControlNet pipelines count the steps before denoising_end cuts them).
        at::Tensor eps = predict(input, t, *step_texts[static_cast<size_t>(i - first)],
                                 guided ? b : 0, i - first, n - first);
        if (guided) {
            // negative + each part's weight x guidance x (part - negative)
            const auto split = eps.chunk(copies, 0);
            eps = split[0];
            for (size_t k = 0; k < parts.size(); ++k) {
                eps = eps + (parts[k].weight * req.guidance_scale) * (split[k + 1] - split[0]);
            }
        }
        auto step = scheduler->step(eps, i, latents, noise);
        latents = step.prev_sample;
        at::Tensor pred_x0 = step.pred_x0;
        if (inpaint && !inpainting_unet) {
            // The kept part back in, noised to the next step's level (clean after the last
            // step of the run, where it stops part of the way too, as diffusers does).
            const at::Tensor kept = i + 1 < last
                                        ? scheduler->add_noise(image_latents, first_noise, i + 1)
                                        : image_latents;
            latents = (1 - mask_latent) * kept + mask_latent * latents;
            if (pred_x0.defined()) {  // the preview shows the kept part as it will end
                pred_x0 = (1 - mask_latent) * image_latents + mask_latent * pred_x0;
            }
        }
        if (observer) {
            observer(StepEvent{static_cast<int>(i - first), static_cast<int>(last - first),
                               t.item<double>(), latents, pred_x0});
        }
    }
    if (cancel != nullptr && cancel->load()) {
        throw Cancelled();
    }
    keep_buffers.reset();
    if (latents_out != nullptr) {
        *latents_out = latents;
        return {req, {}};
    }
    GenerationResult result{req, decode(latents)};
    if (region) {  // back into the whole picture, through the mask (diffusers' apply_overlay)
        for (Image& image : result.images) {
            Image whole{init_full.width, init_full.height,
                        std::vector<uint8_t>(init_full.rgb.size(), 0)};
            paste(whole, resize_cover(image, region->width(), region->height()), region->x0,
                  region->y0);
            image = overlay_unmasked(whole, init_full, mask_full);
        }
    } else if (inpaint && req.keep_unmasked) {
        for (Image& image : result.images) {
            image = overlay_unmasked(image, init_sized, mask_sized);
        }
    }
    return result;
}

}  // namespace sds
