// sdstudio-cli: the engine, headless.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <QGuiApplication>

#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "request_flags.h"
#include "sds/error.h"

namespace {

constexpr const char* kUsage =
    "usage: sdstudio-cli COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  info MODEL [--config DIR]    components, dtypes and parameter counts of a model\n"
    "                               folder or a single-file checkpoint\n"
    "  tokenize MODEL PROMPT        the prompt's token ids (with the start and end markers,\n"
    "            [--padded]         as CLIPTokenizer gives them; --padded: the 77 ids the\n"
    "            [--config DIR]     text encoder sees), then the count as A1111 shows it\n"
    "            [--prompt-syntax S]\n"
    "            [--steps N]        (a single file: --config's tokenizer, default the bundled\n"
    "                               configs' for its SD version); --prompt-syntax a1111: each\n"
    "                               chunk's 77 ids and a line of their weights, or for a\n"
    "                               prompt that changes over N steps (20), each text and the\n"
    "                               model calls that read it. <lora:...> tags are taken\n"
    "                               out first, as a generation takes them out\n"
    "  encode --prompt TEXT --out FILE.safetensors [--negative TEXT] [flags]\n"
    "                               the prompts as the UNet takes them (--prompt-syntax,\n"
    "                               --clip-skip, LoRAs and embeddings applied), in fp32 under\n"
    "                               the names diffusers' pipelines take: prompt_embeds,\n"
    "                               negative_prompt_embeds (SDXL: pooled_prompt_embeds too)\n"
    "  txt2img [flags]              images from a prompt, as PNGs with their parameters\n"
    "    --prompts-file FILE        (txt2img, img2img, inpaint) a generation a line of FILE:\n"
    "                               a prompt, or flags given after the command's own\n"
    "                               (--prompt \"a cat\" --seed 5, quoted as in a shell);\n"
    "                               one model for all, every line checked first\n"
    "  img2img --init IMAGE [flags] images from an image and a prompt\n"
    "  inpaint --init IMAGE --mask MASK [flags]\n"
    "                               repaint the mask's white part of an image (an inpainting\n"
    "                               model, or any SD 1.x, 2.x or SDXL model)\n"
    "  grid --x AXIS=V1,V2,.. [--y AXIS=..] [--cells] [flags]\n"
    "                               an X/Y comparison sheet, the same seed in every cell;\n"
    "                               axes: steps, guidance, strength, seed, sampler, schedule\n"
    "                               (default, karras, exponential, beta), clip_skip,\n"
    "                               prompt_syntax (plain, a1111, a1111-no-norm), eta,\n"
    "                               lora_weight, prompt (search and replace: "
    "prompt=red,green,blue\n"
    "                               puts green, then blue where the prompt says red);\n"
    "                               \"quotes\" keep commas in a value; numbers take ranges:\n"
    "                               10-40 (+10), 2-14 [4]; --cells: each cell's PNG too\n"
    "  train --data DIR --out DIR   train a model from scratch (--tokenizer DIR) or fine-tune\n"
    "        [--base MODEL]         a model's UNet (a folder, or a single file read with\n"
    "        [--config DIR]         --config's configs) on images with .txt captions beside them;\n"
    "                               --steps --vae-steps --batch --lr --vae-lr --resolution\n"
    "                               --caption-dropout --ema --noise-offset --snr-gamma --seed\n"
    "                               --checkpoint-every --device\n"
    "                               --no-resume (by default a rerun resumes the checkpoint)\n"
    "                               --lora-rank R [--lora-alpha A]: with --base, a LoRA on the\n"
    "                               attention layers instead (kohya-ss's format, A1111 loads\n"
    "                               it): OUT/NAME.safetensors, NAME being OUT's own name\n"
    "  dataset --out DIR            the synthetic shapes dataset (PNG + caption .txt)\n"
    "        [--count N --size PX --seed S]\n"
    "  export MODEL --out FILE      a model as one single-file checkpoint in the original SD\n"
    "        [--dtype fp16|fp32]    layout, as A1111 loads it (default fp16)\n"
    "  styles [--styles FILE]       the prompt styles (A1111's styles.csv; default: the\n"
    "                               studio's), listed; --save NAME --prompt P [--negative N]\n"
    "                               adds or replaces one, --delete NAME takes one out\n"
    "  preprocess --image IN --out OUT.png [--preprocessor P]\n"
    "        [--width W --height H] what a ControlNet sees of a picture (A1111's preview\n"
    "        [--canny-low L ...]    annotator result): resized to W x H as a generation\n"
    "        [--depth-model DIR]    does, then none, invert, canny (--canny-low,\n"
    "                               --canny-high), binary (--binary-threshold) or depth\n"
    "                               (--depth-model: a Depth Anything folder)\n"
    "  help                         this text\n"
    "\n"
    "generation flags:\n";

struct Command {
    const char* name;
    int (*run)(const sds::cli::Args&);
};
constexpr Command kCommands[] = {
    {"info", sds::cli::command_info},       {"tokenize", sds::cli::command_tokenize},
    {"encode", sds::cli::command_encode},   {"txt2img", sds::cli::command_txt2img},
    {"img2img", sds::cli::command_img2img}, {"inpaint", sds::cli::command_inpaint},
    {"grid", sds::cli::command_grid},       {"train", sds::cli::command_train},
    {"dataset", sds::cli::command_dataset}, {"export", sds::cli::command_export},
    {"styles", sds::cli::command_styles},   {"preprocess", sds::cli::command_preprocess},
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help") ||
        !std::strcmp(argv[1], "-h")) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        std::fputs(sds::cli::generate_flags_help().c_str(), argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    // Text rendering (grid labels) needs a QGuiApplication; no window is ever shown.
    if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) {
        qputenv("QT_QPA_PLATFORM", "offscreen");
    }
    if (qEnvironmentVariableIsEmpty("XDG_RUNTIME_DIR")) {  // else Qt warns on every run
        const std::string dir = "/tmp/runtime-" + std::to_string(getuid());
        mkdir(dir.c_str(), 0700);
        qputenv("XDG_RUNTIME_DIR", QByteArray::fromStdString(dir));
    }
    int qt_argc = 1;
    QGuiApplication qt(qt_argc, argv);
    const sds::cli::Args args(argv + 2, argv + argc);
    for (const Command& c : kCommands) {
        if (std::strcmp(argv[1], c.name) != 0) {
            continue;
        }
        try {
            return c.run(args);
        } catch (const sds::cli::UsageError& e) {
            std::fprintf(stderr, "sdstudio-cli %s: %s\n\n%s%s", c.name, e.message.c_str(), kUsage,
                         sds::cli::generate_flags_help().c_str());
            return 2;
        } catch (const std::exception& e) {
            sds::cli::end_progress_line();
            std::fprintf(stderr, "error: %s\n", e.what());
            return 1;
        }
    }
    std::fprintf(stderr, "sdstudio-cli: unknown command '%s'\n\n%s", argv[1], kUsage);
    return 2;
}
