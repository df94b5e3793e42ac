"""Random tiny models and random requests: sdstudio-cli's images against diffusers'.

Each case, from its own seed, makes a random SD 1.x or SDXL pipeline with diffusers (block
count, block types, channels, heads, transformer depth, norm groups, embedding flip/shift,
linear projections, upcast attention, VAE depth and scaling factor, text encoder widths and
activations, a tokenizer padding with "!" or not, the scheduler config the model ships with,
SDXL's force_zeros_for_empty_prompt and inpainting UNets), then a random request (sampler,
steps, guidance, seed, batch, size, negative prompt, clip skip, txt2img / img2img / inpaint,
strength), and compares the CLI's PNGs with diffusers' images: at most 2/255 apart, as the
parity tests ask. Where diffusers refuses (e.g. strength x steps below 1), the CLI must refuse
with an error. Where diffusers has no answer to compare with (NaN timesteps; a schedule whose
first timestep repeats, which sends diffusers' step index lookup past the first step), the
case says so and counts as not compared.

usage: parity_fuzz.py --cli CLI [--seconds S | --count N] [--seed FIRST] [--work DIR]
Runs cases FIRST, FIRST+1, ... (FIRST random unless given) until S seconds have passed or N
cases have run. A mismatch prints the case and the command that reruns it, and exits 1.
"""
import argparse
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
    scheduler = r.choice(SCHEDULERS)
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


def make_sdxl(r, tokenizer_dir, out):
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
                projection_class_embeddings_input_dim=6 * time_dim + projection,
                cross_attention_dim=h1 + h2, norm_num_groups=g, upcast_attention=r.random() < 0.3)
    vae = random_vae(r)
    # SDXL's second encoder says eos_token_id 2 (transformers' old rule: the highest id ends).
    text = random_text_config(r, h1)
    text_2 = {**random_text_config(r, h2, projection_dim=projection),
              "eos_token_id": r.choice([2, 49407])}
    scheduler = ("EulerDiscreteScheduler", dict(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing=r.choice(["leading", "trailing", "linspace"]),
        prediction_type=r.choice(["epsilon", "epsilon", "v_prediction"])))
    zeros = r.random() < 0.6
    diffusers.StableDiffusionXLPipeline(
        vae=diffusers.AutoencoderKL(**vae),
        text_encoder=transformers.CLIPTextModel(transformers.CLIPTextConfig(**text)),
        text_encoder_2=transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(**text_2)),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77),
        tokenizer_2=transformers.CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77,
                                                               pad_token="!"),
        unet=diffusers.UNet2DConditionModel(**unet),
        scheduler=getattr(diffusers, scheduler[0])(**scheduler[1]),
        force_zeros_for_empty_prompt=zeros).save_pretrained(out, safe_serialization=True)
    return dict(family="sdxl", unet=unet, vae=vae, text=text, text_2=text_2,
                scheduler=scheduler, force_zeros_for_empty_prompt=zeros)


def random_request(r, inpainting_unet):
    mode = "inpaint" if inpainting_unet else r.choice(["txt2img", "img2img", "inpaint"])
    return dict(mode=mode, sampler=r.choice(sorted(SAMPLERS)), width=8 * r.randint(2, 8),
                height=8 * r.randint(2, 8), steps=r.randint(1, 12),
                guidance=r.choice([1.0, round(r.uniform(1.5, 9), 2)]), batch=r.randint(1, 2),
                seed=r.randint(0, 10**6), negative=r.choice([None, "blurry, dark"]),
                strength=round(r.uniform(0.15, 1.0), 2), clip_skip=r.choice([0, 0, 1]))


def pictures(case_seed, q, work):
    """The init picture (noise) and the mask (a white rectangle) at the request's size."""
    w, h = q["width"], q["height"]
    init = Image.fromarray(
        (np.random.RandomState(case_seed).rand(h, w, 3) * 255).astype(np.uint8))
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 3:] = 255
    init.save(work / "init.png")
    Image.fromarray(mask).convert("RGB").save(work / "mask.png")
    return init, Image.open(work / "mask.png")


def diffusers_images(model, family, q, init, mask):
    """diffusers' images, or None where it has no answer to compare with; raises where it
    refuses. Image i is made alone with a generator seeded seed + i: diffusers' batched
    inpainting draws from one generator, and SD Studio keeps each image to its own seed."""
    import diffusers
    kind = {"txt2img": "", "img2img": "Img2Img", "inpaint": "Inpaint"}[q["mode"]]
    cls = getattr(diffusers, f"StableDiffusion{'XL' if family == 'sdxl' else ''}{kind}Pipeline")
    pipe = cls.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    scheduler_cls, extra = SAMPLERS[q["sampler"]]
    # The sampler swapped in after loading, as a user of diffusers does.
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **extra)
    args = dict(prompt="a red circle", negative_prompt=q["negative"],
                num_inference_steps=q["steps"], guidance_scale=q["guidance"],
                clip_skip=q["clip_skip"] or None)
    if family == "sd" and q["clip_skip"]:  # (encode_prompt's clip skip needs transformers 4)
        args.update(prompt_embeds=clip_skip_embeds(pipe, args.pop("prompt"), q["clip_skip"]),
                    clip_skip=None)
    if q["mode"] != "txt2img":
        args.update(image=init, strength=q["strength"])
    if q["mode"] == "inpaint":
        args.update(mask_image=mask)
    if q["mode"] != "img2img":
        args.update(width=q["width"], height=q["height"])
    pipe.scheduler.set_timesteps(q["steps"])
    t = pipe.scheduler.timesteps
    # txt2img finds its first step by looking timesteps[0] up (img2img and inpainting set the
    # start): where it repeats, the lookup takes its second place.
    if t.isnan().any() or (q["mode"] == "txt2img" and (t == t[0]).sum() > 1):
        return None
    images = []
    for i in range(q["batch"]):
        try:
            images += pipe(generator=[torch.Generator("cpu").manual_seed(q["seed"] + i)],
                           **args).images
        except ValueError as e:
            # torch's group_norm checks its input as batch norm's: one value per group (a 1x1
            # latent in a block with a channel per group) raises when the UNet batch is 1 and
            # runs when it is 2 (guidance). A quirk of torch's, not a refusal of the request.
            if "Expected more than 1 value per channel" in str(e):
                return None
            raise
    return [np.array(image).astype(int) for image in images]


def cli_args(model, q, work):
    args = [q["mode"], "--model", str(model), "--prompt", "a red circle", "--steps",
            str(q["steps"]), "--guidance", str(q["guidance"]), "--seed", str(q["seed"]),
            "--batch", str(q["batch"]), "--sampler", q["sampler"], "--out", str(work / "out")]
    if q["mode"] != "img2img":
        args += ["--width", str(q["width"]), "--height", str(q["height"])]
    if q["mode"] != "txt2img":
        args += ["--init", str(work / "init.png"), "--strength", str(q["strength"])]
    if q["mode"] == "inpaint":
        args += ["--mask", str(work / "mask.png")]
    if q["negative"]:
        args += ["--negative", q["negative"]]
    if q["clip_skip"]:
        args += ["--clip-skip", str(q["clip_skip"])]
    return args


def run_case(case_seed, cli, tokenizer_dir, work):
    """(description, verdict): verdict is a list of max pixel differences, "refused by both",
    "no reference", or a string saying what went wrong (a failure)."""
    r = random.Random(case_seed)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "model"
    torch.manual_seed(case_seed)
    make = make_sdxl if r.random() < 0.4 else make_sd
    desc = make(r, tokenizer_dir, model)
    q = random_request(r, desc["unet"]["in_channels"] == 9)
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
    a = ap.parse_args()
    first = a.seed if a.seed is not None else random.SystemRandom().randrange(10**6)
    work = Path(a.work or tempfile.mkdtemp(prefix="parity_fuzz_"))
    tokenizer_dir = work / "tokenizer"
    make_clip_vocab.main(str(tokenizer_dir))
    start, seed, counts = time.monotonic(), first, {"compared": 0, "refused": 0, "none": 0}
    while (a.count and seed - first < a.count) or \
            (not a.count and time.monotonic() - start < a.seconds):
        try:
            desc, verdict = run_case(seed, a.cli, tokenizer_dir, work / "case")
        except Exception:  # noqa: BLE001 (the harness itself broke: a failure too)
            desc, verdict = {}, "the case broke: " + traceback.format_exc()[-1500:]
        q = desc.get("request", {})
        line = f"case {seed}: {desc.get('family')} {q.get('mode')} {q.get('sampler')}"
        refused = isinstance(verdict, str) and verdict.startswith("refused by both")
        ok = refused or verdict == "no reference" or \
            (isinstance(verdict, list) and max(verdict) <= 2)
        print(f"{line}: {verdict}", flush=True)
        if not ok:
            print(json.dumps(desc, indent=1))
            print(f"rerun: {sys.executable} {Path(__file__).resolve()} --cli {a.cli} "
                  f"--seed {seed} --count 1 --work /tmp/parity_case")
            return 1
        counts["compared" if isinstance(verdict, list) else
               "refused" if refused else "none"] += 1
        seed += 1
    print(f"{seed - first} cases from seed {first}: {counts['compared']} compared within 2/255, "
          f"{counts['refused']} refused by both, {counts['none']} without a reference")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
