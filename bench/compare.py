"""Runs sdstudio-bench and the diffusers reference side by side (each measurement in a fresh
process, same machine, same torch) and prints a table of times and ratios (ours / diffusers).

usage: compare.py --bench BUILD/bench/sdstudio-bench --model DIR|FILE [--config DIR] [--device cpu]
                  [--dtypes fp32,bf16] [--steps 20] [--size 512] [--repeat 3]
                  [--what unet,vae,image] [--warmup 1]
The model load is always a row; --what load measures only that. FILE: a single-file checkpoint,
read with the configs of --config (diffusers: from_single_file).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bench", required=True)
    p.add_argument("--model", required=True, help="a diffusers folder or a single-file checkpoint")
    p.add_argument("--config", help="a single-file checkpoint's configs (a diffusers folder)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--steps", default="20")
    p.add_argument("--size", default="512")
    p.add_argument("--repeat", default="3")
    p.add_argument("--what", default="unet,vae,image")
    p.add_argument("--warmup", default="1", help="0: time the first run (for very long ones)")
    a = p.parse_args()
    here = Path(__file__).resolve().parent
    rows = []
    keys = {"load": "load_s", "unet": "unet_step_s", "vae": "vae_decode_s", "image": "image_s"}
    for dtype in a.dtypes.split(","):
        # One process per implementation and precision, measuring everything asked for.
        common = ["--model", a.model, "--device", a.device, "--dtype", dtype, "--what", a.what,
                  "--steps", a.steps, "--size", a.size, "--repeat", a.repeat,
                  "--warmup", a.warmup] + (["--config", a.config] if a.config else [])
        ours = run([a.bench, *common])
        ref = run([sys.executable, str(here / "diffusers_bench.py"), *common])
        print(json.dumps({"ours": ours, "diffusers": ref}), file=sys.stderr)
        for what in ["load"] + [w for w in a.what.split(",") if w not in ("", "load")]:
            rows.append((dtype, what, ours[keys[what]], ref[keys[what]], ours["peak_rss_mib"],
                         ref["peak_rss_mib"]))
    print(f"| precision | measurement | SD Studio s | diffusers s | time ratio | "
          f"SD Studio peak RSS MiB | diffusers peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    names = {"load": "model load", "unet": "guided UNet step (batch 2)", "vae": "VAE decode",
             "image": f"{a.size}x{a.size} image, {a.steps} steps"}
    for dtype, what, o, r, ro, rr in rows:
        print(f"| {dtype} | {names[what]} | {o:.3f} | {r:.3f} | {o / r:.2f} | {ro} | {rr} |")


if __name__ == "__main__":
    main()
