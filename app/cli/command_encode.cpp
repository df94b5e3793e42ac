// sdstudio-cli encode --prompt TEXT [--negative TEXT] --out FILE.safetensors [flags]: the prompts
// as the UNet takes them, under the names diffusers' pipelines take them as arguments.
#include <cstdio>

#include <ATen/ops/cat.h>

#include "request_flags.h"
#include "sds/safetensors.h"

namespace sds::cli {

int command_encode(const Args& args) {
    GenerateFlags f = parse_generate_flags(args);
    if (!f.rest.empty()) {
        throw UsageError{"unknown argument '" + f.rest.front() + "'"};
    }
    if (f.out_dir.size() < 12 || f.out_dir.substr(f.out_dir.size() - 12) != ".safetensors") {
        throw UsageError{"encode writes --out FILE.safetensors"};
    }
    f.request.validate();
    f.sampler_given = true;  // no sampler runs
    Pipeline pipeline = load_pipeline(f);
    // A1111's prompt editing and alternation: the texts of the first step, with a note.
    GenerationRequest first = f.request;
    if (first.prompt_syntax != PromptSyntax::Plain) {
        const auto parts = split_and(first.prompt);
        if (composes(parts)) {
            throw Error(
                "encode: the prompt is A1111's composable prompts (AND, or a weight after "
                "':'), which the UNet takes as " +
                std::to_string(parts.size()) +
                " prompts guided apart, not as one prompt's embeddings");
        }
        first.prompt = parts.front().text;
        for (std::string* t : {&first.prompt, &first.negative_prompt}) {
            const auto schedule = prompt_schedule(*t, first.steps);
            if (schedule.size() > 1) {
                std::fprintf(stderr,
                             "note: the prompt changes as the %d steps go (A1111's prompt "
                             "editing or alternation); written: its first step's, \"%s\"\n",
                             first.steps, schedule.front().text.c_str());
            }
            *t = schedule.front().text;
        }
    }
    const auto text = pipeline.encode_prompts(first, true);
    // fp32 on the CPU, whatever the model ran in.
    const auto cpu = [](const at::Tensor& t) { return t.to(at::kCPU, at::kFloat).contiguous(); };
    std::vector<std::pair<std::string, at::Tensor>> tensors = {
        {"prompt_embeds", cpu(text.prompt)}, {"negative_prompt_embeds", cpu(text.negative)}};
    if (text.pooled.defined()) {
        tensors.emplace_back("pooled_prompt_embeds", cpu(text.pooled));
        tensors.emplace_back("negative_pooled_prompt_embeds", cpu(text.negative_pooled));
    }
    save_safetensors(f.out_dir, tensors, {{"sdstudio", f.request.to_json()}});
    for (const auto& [name, t] : tensors) {
        std::fprintf(stderr, "%s: [%s]\n", name.c_str(),
                     [&] {
                         std::string dims;
                         for (int64_t d : t.sizes()) {
                             dims += (dims.empty() ? "" : ", ") + std::to_string(d);
                         }
                         return dims;
                     }()
                         .c_str());
    }
    std::printf("%s\n", f.out_dir.c_str());
    return 0;
}

}  // namespace sds::cli
