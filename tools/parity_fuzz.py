"""A search for parity gaps: random tiny SD pipelines (UNet, VAE, text encoder, tokenizer and
scheduler configs) and random requests, each run through sdstudio-cli and through diffusers, the
images compared. Not a test (random, and minutes long); run it after changing the engine.

usage: .venv/bin/python tools/parity_fuzz.py [--first N] [--trials N] [--cli PATH]
                                             [--fixtures DIR] [--work DIR]
Prints one JSON line per request that is not a match within 2/255: "MISMATCH" (pixels differ),
"we-fail" (diffusers makes an image, the CLI fails), "diffusers-fails-we-run", and "both-fail"
(refusals on both sides, counted only); then the counts, in all and by sampler ("own X": no
--sampler, the model's scheduler class X). Trial k is the same model and requests
on every run (seeded with k), so a finding can be rerun with --first k --trials 1.
"""
import argparse
import collections
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
from make_pipeline_fixture import SAMPLERS  # noqa: E402  each sampler as diffusers makes it

SCHEDULER_CLASSES = ["PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler",
                     "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
                     "UniPCMultistepScheduler", "HeunDiscreteScheduler", "LCMScheduler",
                     "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                     "LMSDiscreteScheduler", "DPMSolverSinglestepScheduler"]


def random_scheduler(rng):
    cls = rng.choice(SCHEDULER_CLASSES)
    sc = {}
    if rng.random() < 0.7:
        sc.update(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    if rng.random() < 0.3:
        sc["timestep_spacing"] = rng.choice(["leading", "trailing", "linspace"])
    if rng.random() < 0.2 and cls != "PNDMScheduler":
        sc["prediction_type"] = "v_prediction"
    if rng.random() < 0.5 and cls in ("PNDMScheduler", "DDIMScheduler"):
        sc["steps_offset"] = 1
    if cls == "PNDMScheduler" and rng.random() < 0.6:
        sc["skip_prk_steps"] = True
    if cls == "DDIMScheduler" and rng.random() < 0.5:
        sc.update(clip_sample=False, set_alpha_to_one=False)
    if (cls in ("DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
                "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "LMSDiscreteScheduler",
                "DPMSolverSinglestepScheduler")
            and rng.random() < 0.3):
        sc["use_karras_sigmas"] = True
    if cls == "DPMSolverMultistepScheduler" and rng.random() < 0.3:
        sc["algorithm_type"] = "sde-dpmsolver++"
    if cls in ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler") and rng.random() < 0.3:
        sc["lambda_min_clipped"] = rng.choice([-5.1, -3.0, -2.0])
    if cls == "DPMSolverSinglestepScheduler" and rng.random() < 0.5:
        sc.update(solver_order=rng.choice([1, 2, 3]), solver_type=rng.choice(["midpoint", "heun"]),
                  final_sigmas_type=rng.choice(["zero", "sigma_min"]),
                  lower_order_final=rng.choice([True, False]))
    if cls in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler") and rng.random() < 0.5:
        sc.update(solver_order=rng.choice([1, 2, 3]),
                  final_sigmas_type=rng.choice(["zero", "sigma_min"]))
        if cls == "UniPCMultistepScheduler" and sc["final_sigmas_type"] == "sigma_min":
            sc.update(solver_type=rng.choice(["bh1", "bh2"]), predict_x0=rng.choice([True, False]))
    if cls == "EulerDiscreteScheduler" and rng.random() < 0.3:
        sc.update(interpolation_type="log_linear", final_sigmas_type="sigma_min")
    if cls == "LCMScheduler" and rng.random() < 0.5:
        sc.update(original_inference_steps=rng.choice([20, 50, 100]),
                  timestep_scaling=rng.choice([1.0, 10.0]))
    return cls, sc


def random_model(rng, base_dir, out):
    n = rng.choice([1, 2, 2, 3])
    channels = [rng.choice([16, 32])]
    for _ in range(n - 1):
        channels.append(channels[-1] * rng.choice([1, 2]))
    types = [rng.choice(["CrossAttnDownBlock2D", "DownBlock2D"]) for _ in range(n)]
    hidden = rng.choice([32, 48, 64])
    unet = dict(block_out_channels=channels, down_block_types=types,
                up_block_types=["CrossAttnUpBlock2D" if t.startswith("Cross") else "UpBlock2D"
                                for t in reversed(types)],
                layers_per_block=rng.choice([1, 2]), norm_num_groups=rng.choice([4, 8, 16]),
                cross_attention_dim=hidden,
                attention_head_dim=(rng.choice([2, 4, 8]) if rng.random() < 0.6
                                    else [rng.choice([1, 2, 4]) for _ in range(n)]),
                use_linear_projection=rng.random() < 0.4, upcast_attention=rng.random() < 0.3,
                flip_sin_to_cos=rng.random() < 0.8, freq_shift=rng.choice([0, 1]),
                transformer_layers_per_block=rng.choice([1, 1, 2]),
                norm_eps=rng.choice([1e-5, 1e-6]), sample_size=rng.choice([8, 16]))
    vn = rng.choice([1, 2, 3])
    vae = dict(block_out_channels=[rng.choice([16, 32]) for _ in range(vn)],
               down_block_types=["DownEncoderBlock2D"] * vn,
               up_block_types=["UpDecoderBlock2D"] * vn, layers_per_block=rng.choice([1, 2]),
               norm_num_groups=rng.choice([4, 8, 16]),
               scaling_factor=rng.choice([0.18215, 0.13025, 1.0, 0.5]))
    text = dict(hidden_size=hidden, intermediate_size=rng.choice([37, 64]),
                num_hidden_layers=rng.choice([1, 2, 3]), num_attention_heads=rng.choice([2, 4]),
                hidden_act=rng.choice(["quick_gelu", "gelu"]),
                layer_norm_eps=rng.choice([1e-5, 1e-6]))
    tokenizer = rng.choice([{}, {"pad_token": "!"}, {"model_max_length": rng.choice([16, 40])}])
    sched_cls, sched = random_scheduler(rng)
    torch.manual_seed(rng.randrange(1000))
    base = {c: json.loads((base_dir / c / "config.json").read_text())
            for c in ("unet", "vae", "text_encoder")}
    pipe = diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel.from_config({**base["unet"], **unet}),
        vae=diffusers.AutoencoderKL.from_config({**base["vae"], **vae}),
        text_encoder=transformers.CLIPTextModel(
            transformers.CLIPTextConfig(**{**base["text_encoder"], **text})),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(base_dir / "tokenizer", **tokenizer),
        scheduler=getattr(diffusers, sched_cls)(**sched), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return dict(unet=unet, vae=vae, text=text, tokenizer=tokenizer, scheduler=[sched_cls, sched])


def reference(pipe, req, init):
    sampler = req["sampler"]
    config = pipe.scheduler.config
    if sampler is None:  # the model's own scheduler, as from_pretrained(model)(prompt)
        scheduler = pipe.scheduler.__class__.from_config(config)
    else:
        cls, extra = SAMPLERS[sampler]
        scheduler = cls.from_config(config, **extra)
    kwargs = dict(prompt=req["prompt"], negative_prompt=req["negative"],
                  num_inference_steps=req["steps"], guidance_scale=req["guidance"],
                  num_images_per_prompt=req["batch"], eta=req["eta"],
                  generator=[torch.Generator("cpu").manual_seed(req["seed"] + i)
                             for i in range(req["batch"])])
    cls = diffusers.StableDiffusionImg2ImgPipeline if init else diffusers.StableDiffusionPipeline
    p = cls(**pipe.components)
    p.scheduler = scheduler
    p.set_progress_bar_config(disable=True)
    if init:
        images = p(image=Image.open(init), strength=req["strength"], **kwargs).images
    else:
        images = p(width=req["width"], height=req["height"], **kwargs).images
    return [np.array(i).astype(int) for i in images]


def trial(k, args):
    rng = random.Random(k)
    work = Path(args.work) / f"trial{k}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "model"
    desc = random_model(rng, Path(args.fixtures) / "pipeline" / "tiny-sd", model)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(model)
    results = []
    for r in range(3):
        sampler = rng.choice(list(SAMPLERS) + [None])
        label = sampler or "own " + pipe.scheduler.__class__.__name__
        req = dict(sampler=sampler, steps=rng.choice([1, 2, 3, 4, 5, 7, 10]),
                   guidance=rng.choice([0.0, 1.0, 1.5, 7.5]),
                   seed=rng.choice([0, 1, 12345, 2**32 + 5, 2**40 + 3]),
                   batch=rng.choice([1, 1, 2]), negative=rng.choice([None, "", "blurry"]),
                   prompt=rng.choice(["a cat", "", "a red circle on blue " * 6]),
                   width=rng.choice([8, 16, 24, 32, 40]), height=rng.choice([8, 16, 32, 48]),
                   strength=rng.choice([0.3, 0.5, 0.75, 1.0]),
                   eta=rng.choice([0.0, 0.0, 0.5]) if sampler == "ddim" else 0.0)
        init = None
        if rng.random() < 0.35:
            init = work / "init.png"
            pixels = np.random.RandomState(req["seed"] % 1000).rand(req["height"], req["width"], 3)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(init)
        try:
            want = reference(pipe, req, init)
        except Exception as e:  # diffusers refuses or breaks: we must not make up an image
            want = f"{type(e).__name__}: {e}"[:200]
        flags = ["img2img" if init else "txt2img", "--model", str(model),
                 "--prompt", req["prompt"], "--steps", str(req["steps"]),
                 "--guidance", str(req["guidance"]), "--seed", str(req["seed"]),
                 "--batch", str(req["batch"]), "--out", str(work / f"out{r}")]
        if sampler:
            flags += ["--sampler", sampler]
        if req["negative"] is not None:
            flags += ["--negative", req["negative"]]
        if req["eta"]:
            flags += ["--eta", str(req["eta"])]
        flags += (["--init", str(init), "--strength", str(req["strength"])] if init else
                  ["--width", str(req["width"]), "--height", str(req["height"])])
        run = subprocess.run([args.cli, *flags], capture_output=True, text=True)
        if isinstance(want, str):
            status = "both-fail" if run.returncode != 0 else "diffusers-fails-we-run"
            results.append((status, label, req, want, run.stderr[-300:]))
            continue
        if run.returncode != 0:
            results.append(("we-fail", label, req, run.stderr[-300:]))
            continue
        diffs = [int(np.abs(np.array(Image.open(p).convert("RGB")).astype(int) - w).max())
                 if np.array(Image.open(p)).shape[:2] == w.shape[:2] else 999
                 for p, w in zip(run.stdout.split(), want)]
        results.append(("ok" if max(diffs) <= 2 else "MISMATCH", label, req, diffs))
    shutil.rmtree(work, ignore_errors=True)
    return desc, results


def main():
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--cli", default=str(root / "build" / "app" / "sdstudio-cli"))
    ap.add_argument("--fixtures", default=str(root / "build" / "fixtures"))
    ap.add_argument("--work", default="/tmp/sds_parity_fuzz")
    args = ap.parse_args()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    counts = collections.Counter()
    by_sampler = collections.defaultdict(collections.Counter)
    for k in range(args.first, args.first + args.trials):
        desc, results = trial(k, args)
        for res in results:
            counts[res[0]] += 1
            by_sampler[res[1]][res[0]] += 1
            if res[0] not in ("ok", "both-fail"):
                print(json.dumps({"trial": k, "model": desc, "result": res}), flush=True)
    print(json.dumps(dict(counts)))
    print(json.dumps({s: dict(c) for s, c in sorted(by_sampler.items())}))


if __name__ == "__main__":
    main()
