"""Random tiny models and random requests: sdstudio-cli's images against diffusers'.

Each case, from its own seed, makes a random SD 1.x, SDXL or SDXL refiner pipeline with
diffusers (block count, block types, channels, heads, transformer depth, norm groups, embedding
flip/shift, linear projections, upcast attention, VAE depth and scaling factor, text encoder
widths and activations, a tokenizer padding with "!" or not, the scheduler config the model
ships with (a known one or one made knob by knob: class, betas, spacing, offset, prediction
type, zero SNR, Karras sigmas), SDXL's force_zeros_for_empty_prompt and inpainting UNets), then
a random request (the model's own scheduler or one of ours, steps, guidance, seed, batch, size,
prompt and negative prompt (empty, other scripts, emoji, brackets, past 77 tokens), clip skip,
DDIM's eta, the refiner's aesthetic scores, txt2img / img2img / inpaint, strength, an init
picture of another size, a mask of a box or of blobs with grey levels, mask blur, keeping the
unmasked pixels, only the masked area; a random ControlNet made from the UNet, with its scale,
span and guess mode), and compares the CLI's PNGs with diffusers' images: at
most 2/255 apart, as the parity tests ask. Where diffusers refuses (e.g. strength x steps
below 1), the CLI must refuse with an error. Where diffusers has no answer to compare with (NaN
timesteps; a schedule whose first timestep repeats, which sends diffusers' step index lookup
past the first step), the case says so and counts as not compared.

usage: parity_fuzz.py --cli CLI [--seconds S | --count N] [--seed FIRST] [--work DIR]
                      [--keep-going]
Runs cases FIRST, FIRST+1, ... (FIRST random unless given) until S seconds have passed or N
cases have run. A mismatch prints the case and the command that reruns it, and exits 1 (with
--keep-going, at the end, after the other cases).
"""
import argparse
import inspect
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import make_clip_vocab  # noqa: E402
from make_pipeline_fixture import SAMPLERS, clip_skip_embeds  # noqa: E402

# The scheduler configs a random model ships with: SD 1.5's and SD 2.1's, diffusers' defaults
# and settings seen in the wild.
SCHEDULERS = [
    ("PNDMScheduler", dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           set_alpha_to_one=False, steps_offset=1, skip_prk_steps=True)),
    ("PNDMScheduler", {}),
    ("DDIMScheduler", {}),
    ("DDIMScheduler", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                           clip_sample=False, prediction_type="v_prediction",
                           set_alpha_to_one=False, steps_offset=1)),
    ("EulerDiscreteScheduler", dict(timestep_spacing="trailing")),
    ("DPMSolverMultistepScheduler", {}),
    ("DDIMScheduler", dict(timestep_spacing="linspace", beta_schedule="squaredcos_cap_v2")),
]
# The scheduler classes a model folder may name, for configs made knob by knob.
SCHEDULER_CLASSES = ["PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler",
                     "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
                     "LMSDiscreteScheduler", "UniPCMultistepScheduler", "HeunDiscreteScheduler"]
# Prompts as people type them: empty, cased, with punctuation, brackets (words, not syntax, in
# diffusers), accents, other scripts, emoji, runs of spaces, and past the 75 tokens that fit.
WORDS = ("red blue circle square fox cat astronaut riding horse castle forest night sunset "
         "watercolor photo detailed portrait of a the in on with").split()
PROMPTS = ["a red circle", "", "A Photo of an ASTRONAUT, 4k, (highly detailed), [blurry]",
           "café au lait — naïve façade, 東京の夜 🌸✨", "a  red   circle ,,, on:1.5 {blue}",
           "masterpiece, best quality, 1girl, solo, looking at viewer, smile"]


def random_scheduler(r):
    """The scheduler config a model ships with: a known one, or one made knob by knob."""
    if r.random() < 0.4:
        return r.choice(SCHEDULERS)
    name, c = r.choice(SCHEDULER_CLASSES), {}
    c["beta_schedule"] = r.choice(["linear", "scaled_linear", "squaredcos_cap_v2"])
    if c["beta_schedule"] != "squaredcos_cap_v2" and r.random() < 0.7:
        c.update(beta_start=0.00085, beta_end=0.012)
    c["timestep_spacing"] = r.choice(["leading", "trailing", "linspace"])
    c["steps_offset"] = r.choice([0, 1])
    c["prediction_type"] = r.choice(["epsilon", "epsilon", "v_prediction"])
    if name in ("PNDMScheduler", "DDIMScheduler"):
        c["set_alpha_to_one"] = r.random() < 0.5
    if name == "DDIMScheduler":
        c["clip_sample"] = r.random() < 0.3
    if r.random() < 0.15:
        c["rescale_betas_zero_snr"] = True
    if r.random() < 0.2:
        c["use_karras_sigmas"] = True
    # The knobs the class has.
    import diffusers
    known = inspect.signature(getattr(diffusers, name).__init__).parameters
    return name, {k: v for k, v in c.items() if k in known}


def random_prompt(r):
    if r.random() < 0.15:  # past 77 tokens: diffusers cuts it, as the plain syntax does
        return ", ".join(" ".join(r.choice(WORDS) for _ in range(3)) for _ in range(30))
    return r.choice(PROMPTS)


def groups_and_channels(r, blocks, most):
    g = r.choice([4, 8, 16])
    return g, sorted(g * r.randint(1, most) for _ in range(blocks))


def heads_for(r, channels):
    """Per block, a head count that divides the block's channels."""
    heads = [r.choice([1, 2, 4, 8]) for _ in channels]
    for i, c in enumerate(channels):
        while c % heads[i]:
            heads[i] //= 2
    return heads


def block_types(r, n):
    cross = [r.random() < 0.6 for _ in range(n)]
    if not any(cross):
        cross[r.randrange(n)] = True
    down = ["CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross]
    up = ["CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross)]
    if r.random() < 0.2:  # up blocks that do not mirror the down blocks
        up = [r.choice(["CrossAttnUpBlock2D", "UpBlock2D"]) for _ in range(n)]
    return down, up


def random_vae(r):
    n = r.randint(1, 4)
    g, channels = groups_and_channels(r, n, 4)
    return dict(block_out_channels=channels, in_channels=3, out_channels=3,
                down_block_types=["DownEncoderBlock2D"] * n,
                up_block_types=["UpDecoderBlock2D"] * n, latent_channels=4, norm_num_groups=g,
                sample_size=32, layers_per_block=r.randint(1, 2),
                scaling_factor=r.choice([0.18215, 0.13025, 0.5]),
                force_upcast=r.random() < 0.5)


def random_text_config(r, hidden, **extra):
    return dict(hidden_size=hidden, intermediate_size=r.randint(16, 64),
                num_hidden_layers=r.randint(1, 3),
                num_attention_heads=r.choice([h for h in (1, 2, 4, 8) if hidden % h == 0]),
                vocab_size=49408, max_position_embeddings=77,
                hidden_act=r.choice(["quick_gelu", "gelu"]), bos_token_id=49406,
                eos_token_id=49407, pad_token_id=49407, **extra)


def make_sd(r, tokenizer_dir, out):
    import diffusers
    import transformers
    cross = r.choice([16, 24, 32, 48])
    n = r.randint(1, 4)
    g, channels = groups_and_channels(r, n, 6)
    heads = heads_for(r, channels)
    down, up = block_types(r, n)
    unet = dict(block_out_channels=channels, layers_per_block=r.randint(1, 3), sample_size=16,
                in_channels=9 if r.random() < 0.15 else 4, out_channels=4,
                down_block_types=down, up_block_types=up, cross_attention_dim=cross,
                attention_head_dim=heads if r.random() < 0.5 or len(set(heads)) > 1 else heads[0],
                norm_num_groups=g, flip_sin_to_cos=r.random() < 0.7, freq_shift=r.choice([0, 1]),
                use_linear_projection=r.random() < 0.4, upcast_attention=r.random() < 0.3,
                norm_eps=r.choice([1e-5, 1e-6]),
                transformer_layers_per_block=r.choice([1, 2, [r.randint(1, 2) for _ in range(n)]]))
    vae, text = random_vae(r), random_text_config(r, cross)
    scheduler = random_scheduler(r)
    pad = r.random() < 0.3
    pipe = diffusers.StableDiffusionPipeline(
        vae=diffusers.AutoencoderKL(**vae),
        text_encoder=transformers.CLIPTextModel(transformers.CLIPTextConfig(**text)),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(
            tokenizer_dir, model_max_length=77, **({"pad_token": "!"} if pad else {})),
        unet=diffusers.UNet2DConditionModel(**unet),
        scheduler=getattr(diffusers, scheduler[0])(**scheduler[1]), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return dict(family="sd", unet=unet, vae=vae, text=text, scheduler=scheduler, pad=pad)


def make_sdxl(r, tokenizer_dir, out, refiner=False):
    """SDXL's base, or (refiner) a refiner: the second text encoder alone, an aesthetic score in
    the time ids (5 of them, not 6) and img2img / inpainting only."""
    import diffusers
    import transformers
    h1, h2 = r.choice([16, 24, 32]), r.choice([16, 32, 40])
    projection, time_dim = r.choice([8, 16, 24]), r.choice([4, 8])
    n = r.randint(1, 3)
    g, channels = groups_and_channels(r, n, 5)
    down, up = block_types(r, n)
    unet = dict(block_out_channels=channels, layers_per_block=r.randint(1, 2), sample_size=16,
                in_channels=9 if r.random() < 0.2 else 4, out_channels=4,
                down_block_types=down, up_block_types=up, attention_head_dim=heads_for(r, channels),
                use_linear_projection=r.random() < 0.7, addition_embed_type="text_time",
                addition_time_embed_dim=time_dim,
                transformer_layers_per_block=[r.randint(1, 2) for _ in range(n)],
                projection_class_embeddings_input_dim=(5 if refiner else 6) * time_dim + projection,
                cross_attention_dim=h2 if refiner else h1 + h2, norm_num_groups=g,
                upcast_attention=r.random() < 0.3)
    vae = random_vae(r)
    # SDXL's second encoder says eos_token_id 2 (transformers' old rule: the highest id ends).
    text = None if refiner else random_text_config(r, h1)
    text_2 = {**random_text_config(r, h2, projection_dim=projection),
              "eos_token_id": r.choice([2, 49407])}
    scheduler = ("EulerDiscreteScheduler", dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing=r.choice(["leading", "trailing", "linspace"]),
        prediction_type=r.choice(["epsilon", "epsilon", "v_prediction"])))
    zeros = not refiner and r.random() < 0.6
    parts = dict(
        vae=diffusers.AutoencoderKL(**vae),
        text_encoder=text and transformers.CLIPTextModel(transformers.CLIPTextConfig(**text)),
        text_encoder_2=transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(**text_2)),
        tokenizer=text and transformers.CLIPTokenizer.from_pretrained(tokenizer_dir,
                                                                      model_max_length=77),
        tokenizer_2=transformers.CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77,
                                                               pad_token="!"),
        unet=diffusers.UNet2DConditionModel(**unet),
        scheduler=getattr(diffusers, scheduler[0])(**scheduler[1]),
        force_zeros_for_empty_prompt=zeros)
    if refiner:
        diffusers.StableDiffusionXLImg2ImgPipeline(
            **parts, requires_aesthetics_score=True).save_pretrained(out, safe_serialization=True)
    else:
        diffusers.StableDiffusionXLPipeline(**parts).save_pretrained(out, safe_serialization=True)
    return dict(family="refiner" if refiner else "sdxl", unet=unet, vae=vae, text=text,
                text_2=text_2, scheduler=scheduler, force_zeros_for_empty_prompt=zeros)


def make_controlnet(r, model, vae_blocks, out):
    """A ControlNet made from the model's UNet at random init, its zero convolutions (and the
    conditioning embedding's last) made random so that it changes the images; its conditioning
    embedding halves the picture once per VAE block after the first (to the latents' size)."""
    import diffusers
    unet = diffusers.UNet2DConditionModel.from_pretrained(model / "unet")
    widths = tuple(sorted(r.choice([8, 16, 24, 32]) for _ in range(vae_blocks)))
    net = diffusers.ControlNetModel.from_unet(unet, load_weights_from_unet=False,
                                              conditioning_embedding_out_channels=widths)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                "controlnet_cond_embedding.conv_out")):
                p.normal_(0, 0.2 if p.dim() > 1 else 0.05)
    net.save_pretrained(out, safe_serialization=True)
    return dict(conditioning_embedding_out_channels=widths)


def random_control(r):
    start = r.choice([0.0, 0.0, round(r.uniform(0, 0.5), 2)])
    return dict(scale=r.choice([1.0, round(r.uniform(0.2, 1.8), 2)]), start=start,
                end=r.choice([1.0, round(r.uniform(start + 0.1, 1.0), 2)]),
                guess_mode=r.random() < 0.2)


def random_request(r, family, inpainting_unet, vae_blocks):
    modes = ["txt2img", "img2img", "inpaint"][family == "refiner":]
    mode = "inpaint" if inpainting_unet else r.choice(modes)
    sampler = r.choice([None, *sorted(SAMPLERS)])  # None: the model's own scheduler
    q = dict(mode=mode, sampler=sampler, width=8 * r.randint(2, 8), height=8 * r.randint(2, 8),
             steps=r.randint(1, 12), guidance=r.choice([1.0, round(r.uniform(1.5, 9), 2)]),
             batch=r.randint(1, 2), seed=r.randint(0, 10**6), prompt=random_prompt(r),
             negative=r.choice([None, "blurry, dark", random_prompt(r)]),
             strength=round(r.uniform(0.15, 1.0), 2), clip_skip=r.choice([0, 0, 1]))
    if sampler == "ddim" and r.random() < 0.6:
        q["eta"] = r.choice([1.0, round(r.uniform(0, 1), 2)])
    if family == "refiner" and r.random() < 0.7:
        q.update(aesthetic=round(r.uniform(0, 10), 1), negative_aesthetic=round(r.uniform(0, 5), 1))
    # The init picture: at the request's size, or any size. Inpainting resizes it to the
    # request's; img2img works at its size floored to a multiple of 8, which is diffusers'
    # flooring to the VAE's factor where that is 8 (SD's VAEs, 4 blocks), and only there.
    q["init_size"] = [q["width"], q["height"]] if r.random() < 0.6 or \
        (mode == "img2img" and vae_blocks != 4) else [r.randint(12, 70), r.randint(12, 70)]
    if mode == "inpaint":
        q["mask"] = r.choice(["box", "blobs"])
        q["mask_blur"] = r.choice([0, 0, r.randint(1, 6)])
        q["keep_unmasked"] = r.random() < 0.3
        q["mask_padding"] = r.choice([None, None, r.randint(0, 12)])
    return q


def pictures(case_seed, q, work):
    """The init picture (noise) and the mask (a white box, or blobs with grey levels)."""
    w, h = q["init_size"]
    rs = np.random.RandomState(case_seed)
    init = Image.fromarray((rs.rand(h, w, 3) * 255).astype(np.uint8))
    if q.get("mask") == "blobs":
        mask = Image.fromarray(rs.randint(0, 256, (4, 5), dtype=np.uint8)).resize(
            (w, h), Image.BILINEAR)
    else:
        box = np.zeros((h, w), np.uint8)
        box[h // 4: 3 * h // 4, w // 3:] = 255
        mask = Image.fromarray(box)
    init.save(work / "init.png")
    mask.convert("RGB").save(work / "mask.png")
    if "control" in q:  # a scribble of noise blobs at the request's size
        Image.fromarray(rs.randint(0, 256, (3, 4, 3), dtype=np.uint8)).resize(
            (q["width"], q["height"]), Image.NEAREST).save(work / "control.png")
    return init, Image.open(work / "mask.png")


def diffusers_images(model, family, q, init, mask):
    """diffusers' images, or None where it has no answer to compare with; raises where it
    refuses. Image i is made alone with a generator seeded seed + i: diffusers' batched
    inpainting draws from one generator, and SD Studio keeps each image to its own seed."""
    import diffusers
    kind = {"txt2img": "", "img2img": "Img2Img", "inpaint": "Inpaint"}[q["mode"]]
    xl = "XL" if family in ("sdxl", "refiner") else ""
    if "control" in q:
        net = diffusers.ControlNetModel.from_pretrained(model.parent / "controlnet")
        pipe = getattr(diffusers, f"StableDiffusion{xl}ControlNet{kind}Pipeline").from_pretrained(
            model, controlnet=net)
    else:
        pipe = getattr(diffusers, f"StableDiffusion{xl}{kind}Pipeline").from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    if q["sampler"]:  # swapped in after loading, as a user of diffusers does
        scheduler_cls, extra = SAMPLERS[q["sampler"]]
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **extra)
    # An empty negative prompt is none (a text box cannot tell "" from nothing); diffusers
    # tells them apart for SDXL's force_zeros_for_empty_prompt, where None gives zeros.
    args = dict(prompt=q["prompt"], negative_prompt=q["negative"] or None,
                num_inference_steps=q["steps"], guidance_scale=q["guidance"],
                clip_skip=q["clip_skip"] or None)
    if family == "sd" and q["clip_skip"]:  # (encode_prompt's clip skip needs transformers 4)
        args.update(prompt_embeds=clip_skip_embeds(pipe, args.pop("prompt"), q["clip_skip"]),
                    clip_skip=None)
    if "eta" in q:
        args["eta"] = q["eta"]
    if "aesthetic" in q:
        args.update(aesthetic_score=q["aesthetic"], negative_aesthetic_score=q["negative_aesthetic"])
    if q["mode"] != "txt2img":
        args.update(image=init, strength=q["strength"])
    if q["mode"] == "inpaint":
        if q["mask_blur"]:
            mask = pipe.mask_processor.blur(mask, blur_factor=q["mask_blur"])
        args.update(mask_image=mask)
        if q["mask_padding"] is not None:
            args.update(padding_mask_crop=q["mask_padding"])
    if q["mode"] != "img2img":
        args.update(width=q["width"], height=q["height"])
    if "control" in q:
        c = q["control"]
        control = Image.open(model.parent / "control.png")
        args.update(controlnet_conditioning_scale=c["scale"], control_guidance_start=c["start"],
                    control_guidance_end=c["end"], guess_mode=c["guess_mode"],
                    **({"image": control} if q["mode"] == "txt2img" else
                       {"control_image": control}))
    pipe.scheduler.set_timesteps(q["steps"])
    t = pipe.scheduler.timesteps
    # txt2img finds its first step by looking timesteps[0] up (img2img and inpainting set the
    # start): where it repeats, the lookup takes its second place.
    if t.isnan().any() or (q["mode"] == "txt2img" and (t == t[0]).sum() > 1):
        return None
    images = []
    for i in range(q["batch"]):
        try:
            image = pipe(generator=[torch.Generator("cpu").manual_seed(q["seed"] + i)],
                         **args).images[0]
        except ValueError as e:
            # torch's group_norm checks its input as batch norm's: one value per group (a 1x1
            # latent in a block with a channel per group) raises when the UNet batch is 1 and
            # runs when it is 2 (guidance). A quirk of torch's, not a refusal of the request.
            if "Expected more than 1 value per channel" in str(e):
                return None
            raise
        if q["mode"] == "inpaint" and q["keep_unmasked"] and q["mask_padding"] is None:
            image = pipe.image_processor.apply_overlay(
                mask.resize((q["width"], q["height"]), Image.LANCZOS),
                init.resize((q["width"], q["height"]), Image.LANCZOS), image)
        images.append(image)
    return [np.array(image).astype(int) for image in images]


def cli_args(model, q, work):
    args = [q["mode"], "--model", str(model), "--prompt", q["prompt"], "--steps",
            str(q["steps"]), "--guidance", str(q["guidance"]), "--seed", str(q["seed"]),
            "--batch", str(q["batch"]), "--out", str(work / "out")]
    if q["sampler"]:
        args += ["--sampler", q["sampler"]]
    if q["mode"] != "img2img":
        args += ["--width", str(q["width"]), "--height", str(q["height"])]
    if q["mode"] != "txt2img":
        args += ["--init", str(work / "init.png"), "--strength", str(q["strength"])]
    if q["mode"] == "inpaint":
        args += ["--mask", str(work / "mask.png"), "--mask-blur", str(q["mask_blur"])]
        if q["keep_unmasked"]:
            args += ["--keep-unmasked"]
        if q["mask_padding"] is not None:
            args += ["--mask-padding", str(q["mask_padding"])]
    if q["negative"] is not None:
        args += ["--negative", q["negative"]]
    if q["clip_skip"]:
        args += ["--clip-skip", str(q["clip_skip"])]
    if "eta" in q:
        args += ["--eta", str(q["eta"])]
    if "aesthetic" in q:
        args += ["--aesthetic-score", str(q["aesthetic"]), "--negative-aesthetic-score",
                 str(q["negative_aesthetic"])]
    if "control" in q:
        c = q["control"]
        args += ["--controlnet", str(work / "controlnet"), "--control-image",
                 str(work / "control.png"), "--control-preprocessor", "none", "--control-scale",
                 str(c["scale"]), "--control-start", str(c["start"]), "--control-end",
                 str(c["end"]), *(["--control-guess-mode"] if c["guess_mode"] else [])]
    return args


def run_case(case_seed, cli, tokenizer_dir, work):
    """(description, verdict): verdict is a list of max pixel differences, "refused by both",
    "no reference", or a string saying what went wrong (a failure)."""
    r = random.Random(case_seed)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "model"
    torch.manual_seed(case_seed)
    pick = r.random()
    if pick < 0.3:
        desc = make_sdxl(r, tokenizer_dir, model)
    elif pick < 0.4:
        desc = make_sdxl(r, tokenizer_dir, model, refiner=True)
    else:
        desc = make_sd(r, tokenizer_dir, model)
    vae_blocks = len(desc["vae"]["block_out_channels"])
    q = random_request(r, desc["family"], desc["unet"]["in_channels"] == 9, vae_blocks)
    # A ControlNet (not for refiners, nor inpainting UNets, whose ControlNets are made for the
    # base UNet): its picture at the request's size, the init picture too.
    if desc["family"] != "refiner" and desc["unet"]["in_channels"] == 4 and r.random() < 0.3:
        desc["controlnet"] = make_controlnet(r, model, vae_blocks, work / "controlnet")
        q["control"] = random_control(r)
        q["init_size"] = [q["width"], q["height"]]
    desc["request"] = q
    init, mask = pictures(case_seed, q, work)
    try:
        want = diffusers_images(model, desc["family"], q, init, mask)
        refusal = None
    except Exception as e:  # noqa: BLE001 (diffusers refuses with whatever it raises)
        want, refusal = None, f"{type(e).__name__}: {e}"
    got = subprocess.run([cli, *cli_args(model, q, work)], capture_output=True, text=True)
    if refusal is not None:
        if got.returncode == 1 and "error: " in got.stderr:
            ours = got.stderr[got.stderr.rindex("error: "):].strip()
            return desc, f"refused by both (diffusers: {refusal[:150]}; the CLI: {ours[:200]})"
        return desc, f"diffusers refuses ({refusal[:300]}) but the CLI gave rc {got.returncode}"
    if want is None:
        return desc, "no reference"
    if got.returncode != 0:
        return desc, f"the CLI failed (rc {got.returncode}): {got.stderr.strip()[-500:]}"
    paths = got.stdout.split()
    if len(paths) != len(want):
        return desc, f"{len(paths)} PNGs for {len(want)} images"
    diffs = []
    for path, expected in zip(paths, want):
        image = np.array(Image.open(path).convert("RGB")).astype(int)
        if image.shape != expected.shape:
            return desc, f"{path}: {image.shape} where diffusers has {expected.shape}"
        diffs.append(int(np.abs(image - expected).max()))
    return desc, diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--count", type=int, default=0, help="cases to run (0: until --seconds)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--work", default=None)
    ap.add_argument("--keep-going", action="store_true",
                    help="run on past a mismatch (each is printed), exit 1 at the end")
    a = ap.parse_args()
    first = a.seed if a.seed is not None else random.SystemRandom().randrange(10**6)
    work = Path(a.work or tempfile.mkdtemp(prefix="parity_fuzz_"))
    tokenizer_dir = work / "tokenizer"
    make_clip_vocab.main(str(tokenizer_dir))
    start, seed, counts = time.monotonic(), first, {"compared": 0, "refused": 0, "none": 0}
    failed = []
    while (a.count and seed - first < a.count) or \
            (not a.count and time.monotonic() - start < a.seconds):
        try:
            desc, verdict = run_case(seed, a.cli, tokenizer_dir, work / "case")
        except Exception:  # noqa: BLE001 (the harness itself broke: a failure too)
            desc, verdict = {}, "the case broke: " + traceback.format_exc()[-1500:]
        q = desc.get("request", {})
        line = f"case {seed}: {desc.get('family')} {q.get('mode')} {q.get('sampler')}" + \
            (" +controlnet" if "control" in q else "")
        refused = isinstance(verdict, str) and verdict.startswith("refused by both")
        ok = refused or verdict == "no reference" or \
            (isinstance(verdict, list) and max(verdict) <= 2)
        print(f"{line}: {verdict}", flush=True)
        if not ok:
            print(json.dumps(desc, indent=1))
            print(f"rerun: {sys.executable} {Path(__file__).resolve()} --cli {a.cli} "
                  f"--seed {seed} --count 1 --work /tmp/parity_case", flush=True)
            failed.append(seed)
            if not a.keep_going:
                return 1
            seed += 1
            continue
        counts["compared" if isinstance(verdict, list) else
               "refused" if refused else "none"] += 1
        seed += 1
    print(f"{seed - first} cases from seed {first}: {counts['compared']} compared within 2/255, "
          f"{counts['refused']} refused by both, {counts['none']} without a reference"
          + (f", {len(failed)} failed: {failed}" if failed else ""))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
