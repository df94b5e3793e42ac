"""diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline on the tiny random
pipeline, each image from a CPU generator seeded seed + i, for every sampler, txt2img and
img2img at several strengths, with and without a negative prompt, guidance 1 and 7.5, batch 1
and 2.

usage: make_pipeline_fixture.py OUT_DIR
OUT_DIR/tiny-sd (the model), OUT_DIR/cases.json ([{"name", "request": {our request JSON}}]),
OUT_DIR/expected.safetensors: "init" [H, W, 3] uint8, and per case NAME [B, H, W, 3] uint8.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler,
                       EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler,
                       KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler, LCMScheduler,
                       LMSDiscreteScheduler, PNDMScheduler,
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
                       UniPCMultistepScheduler)
from PIL import Image
from safetensors.torch import save_file

import make_tiny_pipeline

# Each sampler of SD Studio as diffusers makes it from a model's scheduler config:
# `cls.from_config(config, **extra)`. The DPM++ names choose the algorithm, whatever the config
# says; a name with a noise schedule chooses it, whatever the config says (the config's other
# use_*_sigmas turned off). The names without one take the config's.
ODE, SDE = {"algorithm_type": "dpmsolver++"}, {"algorithm_type": "sde-dpmsolver++"}
SCHEDULES = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas",
             "beta": "use_beta_sigmas"}
KARRAS = {key: key == "use_karras_sigmas" for key in SCHEDULES.values()}
FAMILIES = {
    "euler": (EulerDiscreteScheduler, {}), "lms": (LMSDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}), "dpm2": (KDPM2DiscreteScheduler, {}),
    "dpm2_a": (KDPM2AncestralDiscreteScheduler, {}), "dpmpp_2s": (DPMSolverSinglestepScheduler, ODE),
    "dpmpp_2m": (DPMSolverMultistepScheduler, ODE), "dpmpp_2m_sde": (DPMSolverMultistepScheduler, SDE),
    "unipc": (UniPCMultistepScheduler, {}),
}
SAMPLERS = {
    "pndm": (PNDMScheduler, {}), "ddim": (DDIMScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}), "lcm": (LCMScheduler, {}),
    **FAMILIES,
    **{f"{family}_{schedule}": (cls, {**extra, **{k: k == key for k in SCHEDULES.values()}})
       for family, (cls, extra) in FAMILIES.items() for schedule, key in SCHEDULES.items()},
}
# The exponential and beta twins (fewer cases: their arithmetic is the Karras twins' but for
# the sigmas, which the scheduler fixture checks at every step count).
TWINS = [name for name in SAMPLERS if name.endswith(("_exponential", "_beta"))]
# The samplers that draw noise in their steps.
RANDOM = {"euler_a", "lcm", *(f"{family}{schedule}" for family in ("dpmpp_2m_sde", "dpm2_a")
                                for schedule in ("", *(f"_{s}" for s in SCHEDULES)))}


def init_image(w, h):
    # A smooth gradient with a bright disc: something the VAE can encode.
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 96)], -1).astype(np.float32)
    disc = (x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (min(w, h) * 0.25) ** 2
    img[disc] = [250, 240, 60]
    return img.astype(np.uint8)


def cases():
    out = []
    for name in SAMPLERS:
        if name in TWINS:
            continue
        base = {"prompt": "a red circle on a blue background", "steps": 8, "width": 32, "height": 32,
                "sampler": name}
        out.append((f"{name}_txt_g7.5_neg_b2", dict(base, guidance_scale=7.5, seed=11,
                                                    negative_prompt="blurry, green", batch_count=2)))
        out.append((f"{name}_txt_g1_b1", dict(base, guidance_scale=1.0, seed=3, batch_count=1)))
        out.append((f"{name}_img_s0.5_g7.5_b2", dict(base, guidance_scale=7.5, seed=5,
                                                     batch_count=2, strength=0.5,
                                                     init_image="init.png")))
        out.append((f"{name}_img_s0.8_g1_neg_b1", dict(base, guidance_scale=1.0, seed=9,
                                                       negative_prompt="dark", batch_count=1,
                                                       strength=0.8, init_image="init.png")))
    # Each twin once: txt2img and img2img, guidance 7.5 and 1, batch 2 and 1 in turn.
    for i, name in enumerate(TWINS):
        base = {"prompt": "a red circle on a blue background", "steps": 8, "width": 32,
                "height": 32, "sampler": name, "seed": 20 + i}
        if i % 2 == 0:
            out.append((f"{name}_txt_g7.5_neg_b2", dict(base, guidance_scale=7.5, batch_count=2,
                                                        negative_prompt="blurry, green")))
        else:
            out.append((f"{name}_img_s0.6_g1_b1", dict(base, guidance_scale=1.0, batch_count=1,
                                                       strength=0.6, init_image="init.png")))
    base = {"prompt": "a small yellow star, white background", "sampler": "ddim", "steps": 12,
            "guidance_scale": 5.0, "seed": 1234, "batch_count": 2, "width": 48, "height": 32}
    out.append(("ddim_eta0.5_wide", dict(base, eta=0.5)))
    out.append(("euler_a_50steps", dict(base, sampler="euler_a", steps=50, width=32)))
    out.append(("pndm_img_s1.0", dict(base, sampler="pndm", strength=1.0, width=32,
                                      init_image="init.png")))
    # Clip skip, which diffusers applies to the prompt and not to the negative prompt.
    out.append(("dpmpp_2m_clip_skip1_neg", dict(base, sampler="dpmpp_2m", steps=6, width=32,
                                                negative_prompt="green", clip_skip=1)))
    return out


def clip_skip_embeds(pipe, prompt, clip_skip):
    """What diffusers' StableDiffusionPipeline.encode_prompt makes of `prompt` with clip_skip
    (its own call reaches for text_encoder.text_model, which transformers 5 no longer has): the
    state `clip_skip` layers before the last, through the final layer norm."""
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = pipe.text_encoder(ids, output_hidden_states=True)
        return pipe.text_encoder.final_layer_norm(out.hidden_states[-(clip_skip + 1)])


def main(out_dir):
    out = Path(out_dir)
    make_tiny_pipeline.main(str(out))
    model = out / "tiny-sd"
    pipe = StableDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    init = init_image(32, 32)
    tensors = {"init": torch.from_numpy(init)}
    listed = []
    # Every sampler from the model's own config (not from the sampler the last case left).
    model_config = pipe.scheduler.config
    for name, req in cases():
        cls, extra = SAMPLERS[req["sampler"]]
        scheduler = cls.from_config(model_config, **extra)
        b = req["batch_count"]
        gens = [torch.Generator("cpu").manual_seed(req["seed"] + i) for i in range(b)]
        kwargs = dict(prompt=req["prompt"], negative_prompt=req.get("negative_prompt") or None,
                      num_inference_steps=req["steps"], guidance_scale=req["guidance_scale"],
                      num_images_per_prompt=b, generator=gens, eta=req.get("eta", 0.0),
                      output_type="pil")
        if req.get("clip_skip"):  # the prompt's embeddings given, the negative prompt encoded
            kwargs["prompt_embeds"] = clip_skip_embeds(pipe, kwargs.pop("prompt"),
                                                       req["clip_skip"])
        if "init_image" in req:
            img2img.scheduler = scheduler
            images = img2img(image=Image.fromarray(init), strength=req["strength"], **kwargs).images
        else:
            pipe.scheduler = scheduler
            images = pipe(height=req["height"], width=req["width"], **kwargs).images
        tensors[name] = torch.from_numpy(np.stack([np.array(i) for i in images]))
        listed.append({"name": name, "request": req})
    (out / "cases.json").write_text(json.dumps(listed, indent=1))
    save_file(tensors, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
