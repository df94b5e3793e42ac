#include "sds/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>

#include <ATen/ops/clamp_max.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>
#include <nlohmann/json.hpp>

#include "nn/blocks.h"
#include "sched/schedule_math.h"
#include "sds/clip_text_model.h"
#include "sds/clip_tokenizer.h"
#include "sds/error.h"
#include "sds/model_folder.h"
#include "sds/pipeline.h"
#include "sds/safetensors.h"
#include "sds/unet.h"
#include "sds/vae.h"

namespace sds {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

void write_json(const fs::path& path, const json& j) {
    fs::create_directories(path.parent_path());
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp);
        out << j.dump(2) << "\n";
        if (!out) {
            throw FileError(path.string() + ": cannot write");
        }
    }
    fs::rename(tmp, path);
}

std::vector<std::pair<std::string, at::Tensor>> named_weights(torch::nn::Module& m) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& p : m.named_parameters()) {
        out.emplace_back(p.key(), p.value().detach().to(at::kCPU, at::kFloat).contiguous());
    }
    return out;
}

// Loads tensors saved by save_safetensors into the module's parameters, by name.
void load_into(torch::nn::Module& m, const fs::path& file) {
    const SafeTensorsFile f = SafeTensorsFile::open(file);
    torch::NoGradGuard no_grad;
    for (auto& p : m.named_parameters()) {
        p.value().copy_(f.tensor(p.key()));
    }
}

json unet_config(const UNetConfig& c) {
    return {{"_class_name", "UNet2DConditionModel"},
            {"_diffusers_version", "0.42.1"},
            {"act_fn", "silu"},
            {"attention_head_dim", c.heads.front()},
            {"block_out_channels", c.block_out_channels},
            {"center_input_sample", false},
            {"cross_attention_dim", c.cross_attention_dim},
            {"down_block_types", c.down_block_types},
            {"downsample_padding", 1},
            {"flip_sin_to_cos", c.flip_sin_to_cos},
            {"freq_shift", c.freq_shift},
            {"in_channels", c.in_channels},
            {"layers_per_block", c.layers_per_block},
            {"mid_block_scale_factor", 1},
            {"norm_eps", c.norm_eps},
            {"norm_num_groups", c.norm_num_groups},
            {"out_channels", c.out_channels},
            {"sample_size", c.sample_size},
            {"up_block_types", c.up_block_types},
            {"use_linear_projection", false},
            {"upcast_attention", false}};
}

json vae_config(const VaeConfig& c, int resolution) {
    const size_t n = c.block_out_channels.size();
    return {{"_class_name", "AutoencoderKL"},
            {"_diffusers_version", "0.42.1"},
            {"act_fn", "silu"},
            {"block_out_channels", c.block_out_channels},
            {"down_block_types", std::vector<std::string>(n, "DownEncoderBlock2D")},
            {"in_channels", c.in_channels},
            {"latent_channels", c.latent_channels},
            {"layers_per_block", c.layers_per_block},
            {"norm_num_groups", c.norm_num_groups},
            {"out_channels", c.out_channels},
            {"sample_size", resolution},
            {"scaling_factor", c.scaling_factor},
            {"up_block_types", std::vector<std::string>(n, "UpDecoderBlock2D")}};
}

json text_config(const ClipTextConfig& c) {
    return {{"architectures", {"CLIPTextModel"}},
            {"model_type", "clip_text_model"},
            {"attention_dropout", 0.0},
            {"bos_token_id", 49406},
            {"dropout", 0.0},
            {"eos_token_id", 49407},
            {"hidden_act", c.hidden_act},
            {"hidden_size", c.hidden_size},
            {"initializer_factor", 1.0},
            {"initializer_range", 0.02},
            {"intermediate_size", c.intermediate_size},
            {"layer_norm_eps", c.layer_norm_eps},
            {"max_position_embeddings", c.max_position_embeddings},
            {"num_attention_heads", c.num_attention_heads},
            {"num_hidden_layers", c.num_hidden_layers},
            {"pad_token_id", 1},
            {"projection_dim", c.hidden_size},
            {"torch_dtype", "float32"},
            {"vocab_size", c.vocab_size}};
}

json scheduler_config() {  // SD 1.5's PNDM settings (REFERENCE.md)
    return {{"_class_name", "PNDMScheduler"},
            {"_diffusers_version", "0.42.1"},
            {"beta_end", 0.012},
            {"beta_schedule", "scaled_linear"},
            {"beta_start", 0.00085},
            {"clip_sample", false},
            {"num_train_timesteps", 1000},
            {"prediction_type", "epsilon"},
            {"set_alpha_to_one", false},
            {"skip_prk_steps", true},
            {"steps_offset", 1},
            {"timestep_spacing", "leading"},
            {"trained_betas", nullptr}};
}

json model_index() {
    return {{"_class_name", "StableDiffusionPipeline"},
            {"_diffusers_version", "0.42.1"},
            {"feature_extractor", {nullptr, nullptr}},
            {"image_encoder", {nullptr, nullptr}},
            {"requires_safety_checker", false},
            {"safety_checker", {nullptr, nullptr}},
            {"scheduler", {"diffusers", "PNDMScheduler"}},
            {"text_encoder", {"transformers", "CLIPTextModel"}},
            {"tokenizer", {"transformers", "CLIPTokenizer"}},
            {"unet", {"diffusers", "UNet2DConditionModel"}},
            {"vae", {"diffusers", "AutoencoderKL"}}};
}

// Reports a running mean of the loss and the time left.
class Reporter {
  public:
    Reporter(std::string phase, int start, int total,
             const std::function<void(const TrainProgress&)>& f)
        : phase_(std::move(phase)), start_(start), total_(total), f_(f), t0_(now_s()) {}
    void operator()(int step_done, double loss) {
        mean_ = n_ == 0 ? loss : 0.98 * mean_ + 0.02 * loss;
        ++n_;
        if (!f_) {
            return;
        }
        const double per = (now_s() - t0_) / std::max(1, step_done - start_);
        f_({phase_, step_done, total_, mean_, per * (total_ - step_done)});
    }

  private:
    std::string phase_;
    int start_, total_;
    const std::function<void(const TrainProgress&)>& f_;
    double t0_, mean_ = 0;
    int n_ = 0;
};

struct State {
    std::string phase = "vae";
    int step = 0;
    double scaling_factor = 0;
};

State read_state(const fs::path& file) {
    State s;
    std::ifstream in(file);
    const json j = json::parse(in, nullptr, false);
    if (j.is_discarded()) {
        throw FileError(file.string() + ": the checkpoint state is not valid JSON");
    }
    s.phase = j.value("phase", "vae");
    s.step = j.value("step", 0);
    s.scaling_factor = j.value("scaling_factor", 0.0);
    return s;
}

void write_state(const fs::path& file, const State& s) {
    write_json(file, {{"phase", s.phase}, {"step", s.step}, {"scaling_factor", s.scaling_factor}});
}

void check_cancel(const std::atomic<bool>* cancel, const std::function<void()>& save) {
    if (cancel && cancel->load()) {
        save();
        throw Cancelled();
    }
}

}  // namespace

Image training_image(const Image& image, int res) {
    if (res < 8 || image.empty()) {
        throw Error("training images need a resolution of at least 8 (got " + std::to_string(res) +
                    ")");
    }
    if (image.width == res && image.height == res) {
        return image;
    }
    // The shorter side becomes `res`, the other keeps the aspect (rounded, at least `res`).
    const bool wide = image.width >= image.height;
    const int w =
        wide
            ? std::max(res, static_cast<int>(std::lround(double(image.width) * res / image.height)))
            : res;
    const int h =
        wide ? res
             : std::max(res,
                        static_cast<int>(std::lround(double(image.height) * res / image.width)));
    const Image scaled = resize(image, w, h);
    if (w == res && h == res) {
        return scaled;
    }
    const int x0 = (w - res) / 2, y0 = (h - res) / 2;
    Image out{res, res, std::vector<uint8_t>(static_cast<size_t>(res) * res * 3)};
    for (int y = 0; y < res; ++y) {
        std::copy_n(scaled.rgb.begin() + (static_cast<ptrdiff_t>(y0 + y) * w + x0) * 3, res * 3,
                    out.rgb.begin() + static_cast<ptrdiff_t>(y) * res * 3);
    }
    return out;
}

fs::path lora_file(const TrainOptions& o) {
    const fs::path dir = o.out_dir.filename().empty() ? o.out_dir.parent_path() : o.out_dir;
    return dir / (dir.filename().string() + ".safetensors");
}

at::Tensor min_snr_weights(const at::Tensor& alphas_cumprod_t, double gamma, bool v_prediction) {
    if (gamma <= 0) {
        return at::ones_like(alphas_cumprod_t);
    }
    const at::Tensor snr = alphas_cumprod_t / (1 - alphas_cumprod_t);
    return at::clamp_max(snr, gamma) / (v_prediction ? snr + 1 : snr);
}

void train(const std::vector<TrainExample>& data, const TrainOptions& o,
           const std::function<void(const TrainProgress&)>& progress,
           const std::atomic<bool>* cancel) {
    if (data.empty()) {
        throw Error("training needs at least one image with a caption");
    }
    if (o.out_dir.empty()) {
        throw Error("training needs an output folder");
    }
    if (o.batch_size < 1 || o.unet_steps < 0 || o.vae_steps < 0) {
        throw Error("batch size must be at least 1 and step counts not negative");
    }
    if (o.noise_offset < 0 || o.snr_gamma < 0) {
        throw Error("the noise offset and the SNR gamma must not be negative");
    }
    const bool scratch = o.base_model.empty();
    const bool lora_mode = o.lora_rank > 0;
    if (lora_mode && scratch) {
        throw Error("a LoRA is trained on a base model (--base)");
    }
    if (o.lora_rank < 0 || o.lora_rank > 1024) {
        throw Error("the LoRA rank must be 1..1024 (0: no LoRA)");
    }
    if (scratch && o.tokenizer_dir.empty()) {
        throw Error("training from scratch needs a tokenizer folder (--tokenizer DIR)");
    }
    const c10::Device device = parse_device(o.device);
    const fs::path ckpt = o.out_dir / "checkpoint";
    fs::create_directories(ckpt);
    State state;
    if (o.resume && fs::exists(ckpt / "state.json")) {
        state = read_state(ckpt / "state.json");
    }
    const int res = o.arch.resolution;

    // The data as tensors: images [N, 3, res, res] in [-1, 1], caption ids [N, 77].
    ModelFolder base;  // a diffusers folder or a single-file checkpoint
    if (!scratch) {
        base = ModelFolder::open_any(o.base_model, o.base_config);
        if (base.is_xl()) {
            throw Error(o.base_model.string() +
                        ": an SDXL model; training fine-tunes SD 1.x and 2.x models only");
        }
    }
    const fs::path tok_dir = scratch ? o.tokenizer_dir : base.tokenizer_dir();
    const ClipTokenizer tokenizer = ClipTokenizer::load_folder(tok_dir);
    std::vector<at::Tensor> images, ids;
    for (const auto& ex : data) {
        images.push_back(image_to_tensor(training_image(ex.image, res)));
        ids.push_back(at::tensor(tokenizer.encode_padded(ex.caption), at::kLong));
    }
    const at::Tensor all_images = at::cat(images);
    const at::Tensor all_ids = at::stack(ids);
    const at::Tensor empty_ids = at::tensor(tokenizer.encode_padded(""), at::kLong);
    images.clear();
    const int64_t n = all_images.size(0);
    auto batch_indices = [&](at::Generator& g) {
        return at::randint(n, {o.batch_size}, g, at::TensorOptions().dtype(at::kLong));
    };

    // The components.
    std::optional<Vae> vae;
    std::optional<ClipTextModel> text;
    std::optional<UNet> unet;
    if (scratch) {
        at::Generator init = at::make_generator<at::CPUGeneratorImpl>(o.seed);
        VaeConfig vc;
        vc.block_out_channels = o.arch.vae_channels;
        vc.layers_per_block = o.arch.vae_layers_per_block;
        vc.norm_num_groups = o.arch.norm_groups;
        vae.emplace(vc);
        nn::initialise_for_training(vae->module(), init);
        ClipTextConfig tc;
        tc.hidden_size = o.arch.text_hidden;
        tc.intermediate_size = o.arch.text_hidden * 4;
        tc.num_hidden_layers = o.arch.text_layers;
        tc.num_attention_heads = o.arch.text_heads;
        text.emplace(tc);
        nn::initialise_for_training(text->module(), init);
        UNetConfig uc;
        uc.sample_size = res / vc.downscale();
        uc.block_out_channels = o.arch.unet_channels;
        uc.down_block_types = o.arch.unet_down;
        uc.up_block_types = o.arch.unet_up;
        uc.layers_per_block = o.arch.unet_layers_per_block;
        uc.heads.assign(uc.block_out_channels.size(), o.arch.unet_heads);
        uc.cross_attention_dim = tc.hidden_size;
        uc.norm_num_groups = o.arch.norm_groups;
        unet.emplace(uc);
        nn::initialise_for_training(unet->module(), init);
    } else {
        base.explain_load_errors([&] {
            text.emplace(ClipTextModel::load(base.component("text_encoder")));
            const auto& uf = base.component("unet");
            unet.emplace(UNetConfig::from_file(uf.config));
            unet->load_weights(uf.weights, uf.original_prefix);
            const auto& vf = base.component("vae");
            vae.emplace(VaeConfig::from_file(vf.config));
            vae->load_weights(vf.weights, vf.original_prefix);
        });
        if (unet->config().in_channels != vae->config().latent_channels) {
            throw Error(o.base_model.string() +
                        ": an inpainting model (its UNet takes the mask and the masked image "
                        "too); training fine-tunes text-to-image models only");
        }
        state.phase = state.phase == "vae" ? "unet" : state.phase;
        state.scaling_factor = vae->config().scaling_factor;
    }
    vae->to(device, at::kFloat);
    text->to(device, at::kFloat);
    unet->to(device, at::kFloat);

    // Phase 1 (from scratch): the VAE.
    if (state.phase == "vae") {
        if (state.step > 0) {
            load_into(vae->module(), ckpt / "vae.safetensors");
        }
        auto& m = vae->module();
        m.train();
        torch::optim::AdamW opt(m.parameters(),
                                torch::optim::AdamWOptions(o.vae_learning_rate).weight_decay(0));
        if (state.step > 0 && fs::exists(ckpt / "vae_optimizer.pt")) {
            torch::load(opt, (ckpt / "vae_optimizer.pt").string());
        }
        auto save = [&] {
            save_safetensors(ckpt / "vae.safetensors", named_weights(m));
            torch::save(opt, (ckpt / "vae_optimizer.pt").string());
            write_state(ckpt / "state.json", state);
        };
        Reporter report("vae", state.step, o.vae_steps, progress);
        for (; state.step < o.vae_steps;) {
            check_cancel(cancel, save);
            at::Generator g =
                at::make_generator<at::CPUGeneratorImpl>(o.seed * 1000003 + state.step);
            at::Tensor x = all_images.index_select(0, batch_indices(g));
            if (at::rand({1}, g).item<double>() < 0.5) {
                x = x.flip({3});  // mirror images: the VAE does not read captions
            }
            if (o.vae_crop > 0 && o.vae_crop < res) {
                const int64_t span = res - o.vae_crop + 1;
                const int64_t y0 =
                    at::randint(span, {1}, g, at::TensorOptions(at::kLong)).item<int64_t>();
                const int64_t x0 =
                    at::randint(span, {1}, g, at::TensorOptions(at::kLong)).item<int64_t>();
                x = x.slice(2, y0, y0 + o.vae_crop).slice(3, x0, x0 + o.vae_crop);
            }
            x = x.to(device);
            auto [mean, logvar] = vae->encode(x);
            const at::Tensor eps = at::randn(mean.sizes(), g).to(device);
            const at::Tensor z = mean + (0.5 * logvar).exp() * eps;
            const at::Tensor rec = vae->decode(z);
            const at::Tensor kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean();
            const at::Tensor loss =
                (rec - x).pow(2).mean() + (rec - x).abs().mean() + o.kl_weight * kl;
            opt.zero_grad();
            loss.backward();
            torch::nn::utils::clip_grad_norm_(m.parameters(), 1.0);
            opt.step();
            ++state.step;
            report(state.step, loss.item<double>());
            if (o.checkpoint_every > 0 && state.step % o.checkpoint_every == 0) {
                save();
            }
        }
        m.eval();
        // The latents' scale: SD divides by their standard deviation (0.18215 for SD 1.x).
        {
            torch::NoGradGuard no_grad;
            std::vector<at::Tensor> means;
            for (int64_t i = 0; i < n; i += 64) {
                means.push_back(vae->encode(all_images.slice(0, i, std::min(n, i + 64)).to(device))
                                    .first.cpu());
            }
            state.scaling_factor = 1.0 / at::cat(means).std().item<double>();
        }
        save_safetensors(ckpt / "vae.safetensors", named_weights(m));
        state.phase = "unet";
        state.step = 0;
        write_state(ckpt / "state.json", state);
    } else if (scratch) {
        load_into(vae->module(), ckpt / "vae.safetensors");
    }
    vae->module().eval();

    // The posterior of every image, once.
    at::Tensor lat_mean, lat_std;
    {
        torch::NoGradGuard no_grad;
        std::vector<at::Tensor> ms, ss;
        for (int64_t i = 0; i < n; i += 64) {
            auto [m, lv] = vae->encode(all_images.slice(0, i, std::min(n, i + 64)).to(device));
            ms.push_back(m.cpu());
            ss.push_back((0.5 * lv).exp().cpu());
        }
        lat_mean = at::cat(ms);
        lat_std = at::cat(ss);
    }
    const double sf = state.scaling_factor;

    // Phase 2: the UNet (and, from scratch, the text encoder). The noise schedule and what the
    // UNet predicts are the base model's (its scheduler config), SD 1.5's from scratch.
    const fs::path sched_file = lora_mode ? base.component("scheduler").config
                                          : o.out_dir / "scheduler" / "scheduler_config.json";
    if (!lora_mode) {
        fs::create_directories(o.out_dir / "scheduler");
        if (scratch) {
            write_json(sched_file, scheduler_config());
        } else {
            fs::copy_file(base.component("scheduler").config, sched_file,
                          fs::copy_options::overwrite_existing);
        }
    }
    const auto sched_config = sched::load_config(sched_file);
    const std::string prediction = sched_config.string("prediction_type", "epsilon");
    if (prediction != "epsilon" && prediction != "v_prediction") {
        throw Error(sched_file.string() + ": training predicts epsilon or v (prediction_type " +
                    prediction + ")");
    }
    const bool v_prediction = prediction == "v_prediction";
    const at::Tensor acp = sched::alphas_cumprod(sched_config).to(at::kFloat);
    auto& um = unet->module();
    auto& tm = text->module();
    // LoRA: the attention projections' weights become W0 + alpha / rank * up @ down for each
    // forward pass, and only down and up learn.
    struct LoraLayer {
        std::string key;  // kohya's: lora_unet_ + the module's path with _ for .
        nn::LinearImpl* linear;
        at::Tensor w0, down, up;
    };
    std::vector<LoraLayer> lora;
    const double lora_scale =
        lora_mode ? (o.lora_alpha > 0 ? o.lora_alpha : o.lora_rank) / o.lora_rank : 0.0;
    if (lora_mode) {
        for (auto& p : um.parameters()) {
            p.requires_grad_(false);
        }
        at::Generator init = at::make_generator<at::CPUGeneratorImpl>(o.seed * 7919 + 17);
        for (const auto& item : um.named_modules()) {
            const std::string& name = item.key();
            auto* linear = item.value()->as<nn::LinearImpl>();
            bool target = false;
            for (const char* end :
                 {".attn1.to_q", ".attn1.to_k", ".attn1.to_v", ".attn1.to_out.0", ".attn2.to_q",
                  ".attn2.to_k", ".attn2.to_v", ".attn2.to_out.0"}) {
                const std::string e = end;
                target = target || (name.size() > e.size() &&
                                    name.compare(name.size() - e.size(), e.size(), e) == 0);
            }
            if (!target || linear == nullptr) {
                continue;
            }
            const int64_t in = linear->weight.size(1), out = linear->weight.size(0);
            const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // Linear's init
            std::string key = "lora_unet_" + name;
            std::replace(key.begin(), key.end(), '.', '_');
            lora.push_back({key, linear, linear->weight,
                            ((at::rand({o.lora_rank, in}, init) * 2 - 1) * bound)
                                .to(device)
                                .requires_grad_(true),
                            at::zeros({out, o.lora_rank}).to(device).requires_grad_(true)});
        }
        if (lora.empty()) {
            throw Error(o.base_model.string() + ": no attention projections to train a LoRA on");
        }
    }
    auto apply_lora = [&] {
        for (auto& l : lora) {
            l.linear->weight = l.w0 + lora_scale * l.up.mm(l.down);
        }
    };
    auto lora_tensors = [&] {
        std::vector<std::pair<std::string, at::Tensor>> out;
        for (const auto& l : lora) {
            out.emplace_back(l.key + ".lora_down.weight", l.down.detach().cpu().contiguous());
            out.emplace_back(l.key + ".lora_up.weight", l.up.detach().cpu().contiguous());
            out.emplace_back(l.key + ".alpha",
                             at::tensor(static_cast<float>(lora_scale * o.lora_rank)));
        }
        return out;
    };
    std::vector<at::Tensor> params;
    if (lora_mode) {
        for (const auto& l : lora) {
            params.push_back(l.down);
            params.push_back(l.up);
        }
    } else {
        params = um.parameters();
    }
    if (scratch) {
        for (const auto& p : tm.parameters()) {
            params.push_back(p);
        }
    }
    if (state.step > 0 && lora_mode) {
        torch::NoGradGuard no_grad;
        const SafeTensorsFile f = SafeTensorsFile::open(ckpt / "lora.safetensors");
        for (auto& l : lora) {
            l.down.copy_(f.tensor(l.key + ".lora_down.weight"));
            l.up.copy_(f.tensor(l.key + ".lora_up.weight"));
        }
    } else if (state.step > 0) {
        load_into(um, ckpt / "unet.safetensors");
        if (scratch) {
            load_into(tm, ckpt / "text_encoder.safetensors");
        }
    }
    std::vector<at::Tensor> ema;  // of the whole UNet's weights (not for a LoRA)
    for (const auto& p : lora_mode ? std::vector<at::Tensor>{} : um.parameters()) {
        ema.push_back(p.detach().clone());
    }
    if (state.step > 0 && fs::exists(ckpt / "unet_ema.safetensors")) {
        const SafeTensorsFile f = SafeTensorsFile::open(ckpt / "unet_ema.safetensors");
        size_t k = 0;
        for (const auto& p : um.named_parameters()) {
            ema[k++].copy_(f.tensor(p.key()));
        }
    }
    torch::optim::AdamW opt(
        params, torch::optim::AdamWOptions(o.learning_rate).weight_decay(o.weight_decay));
    if (state.step > 0 && fs::exists(ckpt / "unet_optimizer.pt")) {
        torch::load(opt, (ckpt / "unet_optimizer.pt").string());
    }
    um.train();
    if (scratch) {
        tm.train();
    }
    auto ema_weights = [&] {
        std::vector<std::pair<std::string, at::Tensor>> out;
        size_t k = 0;
        for (const auto& p : um.named_parameters()) {
            out.emplace_back(p.key(), ema[k++].to(at::kCPU).contiguous());
        }
        return out;
    };
    auto save = [&] {
        if (lora_mode) {
            save_safetensors(ckpt / "lora.safetensors", lora_tensors());
            torch::save(opt, (ckpt / "unet_optimizer.pt").string());
            write_state(ckpt / "state.json", state);
            return;
        }
        save_safetensors(ckpt / "unet.safetensors", named_weights(um));
        save_safetensors(ckpt / "unet_ema.safetensors", ema_weights());
        if (scratch) {
            save_safetensors(ckpt / "text_encoder.safetensors", named_weights(tm));
        }
        torch::save(opt, (ckpt / "unet_optimizer.pt").string());
        write_state(ckpt / "state.json", state);
    };
    Reporter report("unet", state.step, o.unet_steps, progress);
    const auto unet_params = um.parameters();
    for (; state.step < o.unet_steps;) {
        check_cancel(cancel, save);
        at::Generator g =
            at::make_generator<at::CPUGeneratorImpl>(o.seed * 1000003 + 500009 + state.step);
        const at::Tensor idx = batch_indices(g);
        const at::Tensor eps0 =
            at::randn({o.batch_size, lat_mean.size(1), lat_mean.size(2), lat_mean.size(3)}, g);
        const at::Tensor z0 =
            ((lat_mean.index_select(0, idx) + lat_std.index_select(0, idx) * eps0) * sf).to(device);
        const at::Tensor t = at::randint(1000, {o.batch_size}, g, at::TensorOptions(at::kLong));
        at::Tensor noise = at::randn(z0.sizes(), g);
        const at::Tensor a_t = acp.index_select(0, t);
        const at::Tensor a = a_t.to(device).view({-1, 1, 1, 1});
        at::Tensor batch_ids = all_ids.index_select(0, idx);
        const at::Tensor drop = at::rand({o.batch_size}, g) < o.caption_dropout;
        if (o.noise_offset > 0) {
            noise = noise + o.noise_offset * at::randn({z0.size(0), z0.size(1), 1, 1}, g);
        }
        noise = noise.to(device);
        const at::Tensor zt = a.sqrt() * z0 + (1 - a).sqrt() * noise;
        batch_ids = at::where(drop.unsqueeze(1), empty_ids.unsqueeze(0), batch_ids);
        const at::Tensor ctx = text->encode(batch_ids.to(device));
        apply_lora();
        const at::Tensor pred = unet->forward(zt, t.to(device), ctx);
        // The target: the noise, or v = sqrt(a) * noise - sqrt(1 - a) * z0 (diffusers'
        // get_velocity) for a v-prediction model.
        const at::Tensor target = v_prediction ? a.sqrt() * noise - (1 - a).sqrt() * z0 : noise;
        const at::Tensor per_sample = (pred - target).pow(2).mean({1, 2, 3});
        const at::Tensor loss =
            o.snr_gamma > 0
                ? (per_sample * min_snr_weights(a_t, o.snr_gamma, v_prediction).to(device)).mean()
                : per_sample.mean();
        opt.zero_grad();
        loss.backward();
        torch::nn::utils::clip_grad_norm_(params, 1.0);
        opt.step();
        ++state.step;
        {
            torch::NoGradGuard no_grad;
            const double d = std::min(o.ema_decay, (1.0 + state.step) / (10.0 + state.step));
            for (size_t k = 0; k < ema.size(); ++k) {
                ema[k].mul_(d).add_(unet_params[k].detach(), 1.0 - d);
            }
        }
        report(state.step, loss.item<double>());
        if (o.checkpoint_every > 0 && state.step % o.checkpoint_every == 0) {
            save();
        }
    }
    save();
    if (lora_mode) {  // the LoRA file, kohya-ss's names and metadata
        for (auto& l : lora) {
            l.linear->weight = l.w0;
        }
        save_safetensors(lora_file(o), lora_tensors(),
                         {{"ss_network_module", "networks.lora"},
                          {"ss_network_dim", std::to_string(o.lora_rank)},
                          {"ss_network_alpha", std::to_string(lora_scale * o.lora_rank)},
                          {"ss_steps", std::to_string(o.unet_steps)},
                          {"ss_learning_rate", std::to_string(o.learning_rate)},
                          {"ss_resolution", std::to_string(res)},
                          {"sdstudio_base_model", o.base_model.filename().string()}});
        return;
    }

    // The model folder: EMA UNet weights, text encoder, VAE, tokenizer, scheduler.
    const fs::path out = o.out_dir;
    UNetConfig uc = unet->config();
    write_json(
        out / "unet" / "config.json",
        scratch ? unet_config(uc) : json::parse(std::ifstream(base.component("unet").config)));
    save_safetensors(out / "unet" / "diffusion_pytorch_model.safetensors", ema_weights());
    if (scratch) {
        VaeConfig vc = vae->config();
        vc.scaling_factor = sf;
        write_json(out / "vae" / "config.json", vae_config(vc, res));
        save_safetensors(out / "vae" / "diffusion_pytorch_model.safetensors",
                         named_weights(vae->module()));
        write_json(out / "text_encoder" / "config.json", text_config(text->config()));
        save_safetensors(out / "text_encoder" / "model.safetensors", named_weights(tm));
        fs::create_directories(out / "tokenizer");
        for (const auto& f : fs::directory_iterator(tok_dir)) {
            fs::copy_file(f.path(), out / "tokenizer" / f.path().filename(),
                          fs::copy_options::overwrite_existing);
        }
    } else if (!base.is_single_file()) {
        for (const std::string c : {"vae", "text_encoder", "tokenizer"}) {
            fs::copy(o.base_model / c, out / c,
                     fs::copy_options::recursive | fs::copy_options::overwrite_existing);
        }
        // The settings the base works best with suit what was tuned from it.
        if (fs::exists(o.base_model / "sdstudio.json")) {
            fs::copy_file(o.base_model / "sdstudio.json", out / "sdstudio.json",
                          fs::copy_options::overwrite_existing);
        }
    } else {  // the base's VAE and text encoder as diffusers files, with its configs' files
        const auto copy = fs::copy_options::recursive | fs::copy_options::overwrite_existing;
        for (const std::string c : {"vae", "text_encoder"}) {
            fs::create_directories(out / c);
            fs::copy(base.component(c).config, out / c / "config.json", copy);
        }
        save_safetensors(out / "vae" / "diffusion_pytorch_model.safetensors",
                         named_weights(vae->module()));
        save_safetensors(out / "text_encoder" / "model.safetensors", named_weights(tm));
        fs::copy(base.tokenizer_dir(), out / "tokenizer", copy);
    }
    write_json(out / "model_index.json", model_index());
}

}  // namespace sds
