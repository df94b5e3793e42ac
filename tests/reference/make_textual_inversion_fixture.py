"""Textual inversion embeddings in the formats people share them, and what diffusers makes with
them after load_textual_inversion: a tiny SD 1.x pipeline (make_lora_fixture.make_sd) and a tiny
SDXL one (make_sdxl_fixture.make_model).

Files (random vectors):
  cat-toy.safetensors   diffusers' learned_embeds: {"<cat-toy>": [1, 32]}
  inkstyle.pt           A1111's torch.save dict: string_to_param["*"] [3, 32], name, step, ...
  badhands.safetensors  A1111's safetensors: emb_params [2, 32]
  sparkle.bin           diffusers' .bin: {"<sparkle>": [32]} (one vector, 1-D)
  xlstyle.safetensors   SDXL: clip_l [2, 32], clip_g [2, 40]
Tokens are lower case: diffusers' maybe_convert_prompt (multi-vector expansion) compares the
tokenizer's lower-cased tokens with the added tokens as given.

usage: make_textual_inversion_fixture.py OUT_DIR
OUT_DIR/cases.json ([{"name", "model", "embeddings": [[file, token]...], "request"}]),
OUT_DIR/expected.safetensors (per case NAME [B, H, W, 3] uint8, and NAME.text: the prompt's
conditioning flattened, as encode_prompt gives it).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

import make_lora_fixture
import make_sdxl_fixture


def write_embeddings(out):
    g = torch.Generator().manual_seed(11)

    def vec(*shape):
        return torch.randn(shape, generator=g) * 0.6

    save_file({"<cat-toy>": vec(1, 32)}, str(out / "cat-toy.safetensors"))
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec(3, 32)},
                "name": "inkstyle", "step": 1500, "sd_checkpoint": "a9263745",
                "sd_checkpoint_name": "v1-5-pruned"}, str(out / "inkstyle.pt"))
    save_file({"emb_params": vec(2, 32)}, str(out / "badhands.safetensors"))
    torch.save({"<sparkle>": vec(32)}, str(out / "sparkle.bin"))
    save_file({"clip_l": vec(2, 32), "clip_g": vec(2, 40)}, str(out / "xlstyle.safetensors"))


SD_EMBEDDINGS = [["cat-toy.safetensors", "<cat-toy>"], ["inkstyle.pt", "inkstyle"],
                 ["badhands.safetensors", "badhands"], ["sparkle.bin", "<sparkle>"]]
XL_EMBEDDINGS = [["xlstyle.safetensors", "xlstyle"]]

# (name, model, request)
CASES = [
    ("sd_words", "tiny-sd",
     {"prompt": "a photo of <cat-toy> on a table, inkstyle", "negative_prompt": "badhands",
      "steps": 5, "guidance_scale": 7.5, "seed": 4, "batch_count": 1}),
    ("sd_batch", "tiny-sd",
     {"prompt": "inkstyle, <sparkle> over a red circle inkstyle", "negative_prompt": "",
      "steps": 4, "guidance_scale": 5.0, "seed": 9, "batch_count": 2}),
    ("sd_unguided", "tiny-sd",
     {"prompt": "a <sparkle> and a <cat-toy>", "steps": 4, "guidance_scale": 1.0, "seed": 2,
      "batch_count": 1}),
    ("sdxl_words", "tiny-sdxl",
     {"prompt": "a green square, xlstyle", "negative_prompt": "blurry", "steps": 4,
      "guidance_scale": 6.0, "seed": 2, "batch_count": 1}),
]


def load(pipe, out, embeddings):
    for file, token in embeddings:
        if isinstance(pipe, StableDiffusionXLPipeline):
            sd = load_file(str(out / file))
            pipe.load_textual_inversion(sd["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                        tokenizer=pipe.tokenizer)
            pipe.load_textual_inversion(sd["clip_g"], token=token,
                                        text_encoder=pipe.text_encoder_2,
                                        tokenizer=pipe.tokenizer_2)
        else:
            pipe.load_textual_inversion(str(out / file), token=token)


def conditioning(pipe, prompt):
    if isinstance(pipe, StableDiffusionXLPipeline):
        e = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
        return torch.cat([e[0].flatten(), e[2].flatten()])
    return pipe.encode_prompt(prompt, "cpu", 1, False)[0].flatten()


def main(out_dir):
    out = Path(out_dir)
    make_lora_fixture.make_sd(out)
    make_sdxl_fixture.make_model(out)
    write_embeddings(out)
    pipes = {"tiny-sd": StableDiffusionPipeline.from_pretrained(out / "tiny-sd"),
             "tiny-sdxl": StableDiffusionXLPipeline.from_pretrained(out / "tiny-sdxl")}
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
        p.scheduler = EulerDiscreteScheduler.from_config(p.scheduler.config)  # "sampler": "euler"
    plain = {name: conditioning(p, "a photo of inkstyle") for name, p in pipes.items()}
    load(pipes["tiny-sd"], out, SD_EMBEDDINGS)
    load(pipes["tiny-sdxl"], out, XL_EMBEDDINGS)
    expected, cases = {}, []
    for name, model, req in CASES:
        pipe = pipes[model]
        req = dict(req, width=32, height=32, sampler="euler")
        gens = [torch.Generator("cpu").manual_seed(req["seed"] + i)
                for i in range(req["batch_count"])]
        images = pipe(req["prompt"], negative_prompt=req.get("negative_prompt") or None,
                      num_inference_steps=req["steps"], guidance_scale=req["guidance_scale"],
                      width=32, height=32, generator=gens,
                      num_images_per_prompt=req["batch_count"]).images
        expected[name] = torch.from_numpy(np.stack([np.array(i) for i in images]))
        expected[name + ".text"] = conditioning(pipe, req["prompt"]).contiguous()
        embeddings = SD_EMBEDDINGS if model == "tiny-sd" else XL_EMBEDDINGS
        cases.append({"name": name, "model": model, "embeddings": embeddings, "request": req})
    # The embedding changes what its word means: the same prompt without it differs.
    loaded = conditioning(pipes["tiny-sd"], "a photo of inkstyle")
    assert not torch.allclose(loaded, plain["tiny-sd"])
    (out / "cases.json").write_text(json.dumps(cases, indent=1))
    save_file(expected, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
