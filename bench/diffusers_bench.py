"""The reference side of bench/compare.py: the same measurements with diffusers, JSON on stdout.

usage: diffusers_bench.py --model DIR|FILE [--config DIR] [--device cpu|cuda] [--dtype fp32|bf16|fp16]
       [--what unet,vae,image] [--size 512] [--steps 20] [--repeat 3] [--trace FILE]
"""
import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch
import diffusers
from diffusers import DiffusionPipeline, EulerDiscreteScheduler

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


WARMUP = 1


def time_it(repeat, device, f):
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    if WARMUP:
        f()
        sync()
    out = []
    for _ in range(repeat):
        s = time.perf_counter()
        f()
        sync()
        out.append(time.perf_counter() - s)
    return statistics.median(out)


def write_trace(path, f):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        f()
    prof.export_chrome_trace(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--config", help="a single-file checkpoint's configs (from_single_file)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--what", default="unet,vae,image")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (0 or 1)")
    p.add_argument("--trace", help="Chrome trace of one VAE decode (or UNet step) here")
    a = p.parse_args()
    global WARMUP
    WARMUP = a.warmup
    dtype = DTYPES[a.dtype]
    t0 = time.perf_counter()
    if a.config:
        # The configs' pipeline class (StableDiffusionPipeline, StableDiffusionXLPipeline).
        index = json.loads((Path(a.config) / "model_index.json").read_text())
        pipe = getattr(diffusers, index["_class_name"]).from_single_file(
            a.model, config=a.config, local_files_only=True, torch_dtype=dtype).to(a.device)
    else:
        # The folder's own pipeline class (StableDiffusionPipeline, StableDiffusionXLPipeline).
        pipe = DiffusionPipeline.from_pretrained(a.model, torch_dtype=dtype).to(a.device)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    res = {"impl": "diffusers", "device": a.device, "dtype": a.dtype,
           "threads": torch.get_num_threads(), "load_s": round(time.perf_counter() - t0, 3)}
    h = a.size // pipe.vae_scale_factor
    with torch.no_grad():
        if "unet" in a.what:
            x = torch.randn(2, 4, h, h, device=a.device, dtype=dtype)
            ctx = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, device=a.device, dtype=dtype)
            t = torch.tensor([500], device=a.device)
            added = None
            if pipe.unet.config.addition_embed_type == "text_time":  # SDXL
                width = (pipe.unet.config.projection_class_embeddings_input_dim
                         - 6 * pipe.unet.config.addition_time_embed_dim)
                added = {"text_embeds": torch.randn(2, width, device=a.device, dtype=dtype),
                         "time_ids": torch.tensor([[a.size, a.size, 0, 0, a.size, a.size]] * 2,
                                                  device=a.device, dtype=dtype)}
            step = lambda: pipe.unet(x, t, ctx, added_cond_kwargs=added)
            res["unet_step_s"] = round(time_it(a.repeat, a.device, step), 4)
            if a.trace and "vae" not in a.what:
                write_trace(a.trace, step)
        if "vae" in a.what:
            z = torch.randn(1, 4, h, h, device=a.device, dtype=dtype)
            decode = lambda: pipe.image_processor.postprocess(
                pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample)
            res["vae_decode_s"] = round(time_it(a.repeat, a.device, decode), 4)
            if a.trace:
                write_trace(a.trace, decode)
        if "image" in a.what:
            run = lambda: pipe("a photograph of an astronaut riding a horse",
                               num_inference_steps=a.steps, height=a.size, width=a.size)
            res["image_s"] = round(time_it(max(1, a.repeat // 2), a.device, run), 3)
            res["steps"], res["size"] = a.steps, a.size
    res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
