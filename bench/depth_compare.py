"""The ControlNet depth preprocessor against transformers, on the same Depth Anything folder and
a size x size picture: a depth map in a warm process (`sdstudio-bench --what depth` against
pipeline("depth-estimation") called again, medians after a warm-up) and a whole process (load
and one map, as a generation does it: `sdstudio-cli preprocess` against a Python process that
imports transformers), alternated; prints a table row each (seconds, ratio ours / transformers)
and the largest difference between the two maps.

usage: depth_compare.py --cli BUILD/app/sdstudio-cli --bench BUILD/bench/sdstudio-bench
                        [--model DIR] [--size 512] [--repeat 3]
Without --model, a random Depth Anything V2 Small (the published config, random weights: speed
does not depend on the values) is made in a temporary folder.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REFERENCE = """
import sys
from PIL import Image
from transformers import pipeline
pipe = pipeline("depth-estimation", model=sys.argv[1], device="cpu")
pipe(Image.open(sys.argv[2]).convert("RGB"))["depth"].save(sys.argv[3])
"""
WARM = """
import json, statistics, sys, time
import numpy as np
import torch
from PIL import Image
from transformers import pipeline
size, repeat = int(sys.argv[2]), int(sys.argv[3])
pipe = pipeline("depth-estimation", model=sys.argv[1], device="cpu")
picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8))
pipe(picture)
times = []
for _ in range(repeat):
    start = time.perf_counter()
    pipe(picture)
    times.append(time.perf_counter() - start)
print(json.dumps({"depth_s": statistics.median(times), "threads": torch.get_num_threads()}))
"""


def random_v2_small(folder):
    import torch
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation,
                              Dinov2Config, DPTImageProcessor)
    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                            patch_size=14, image_size=518, out_indices=[3, 6, 9, 12],
                            reshape_hidden_states=False, apply_layernorm=True)
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=384,
        neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, head_hidden_size=32,
        patch_size=14)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.head.conv3.bias.fill_(0.5)  # a depth above 0: the ReLU keeps it
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                      ensure_multiple_of=14, resample=3, do_pad=False).save_pretrained(folder)


def timed(cmd):
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--model")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="depth_compare_"))
    model = a.model or str(work / "depth-anything-v2-small-random")
    if not a.model:
        random_v2_small(model)
    picture = work / "picture.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).resize(
        (a.size, a.size), Image.BILINEAR).save(picture)
    ours_cmd = [a.cli, "preprocess", "--image", str(picture), "--preprocessor", "depth",
                "--depth-model", model, "--out", str(work / "ours.png")]
    theirs_cmd = [sys.executable, "-c", REFERENCE, model, str(picture), str(work / "theirs.png")]
    warm_ours, warm_theirs, ours, theirs = [], [], [], []
    for _ in range(2):
        r = subprocess.run([a.bench, "--what", "depth", "--depth-model", model, "--size",
                            str(a.size), "--repeat", str(a.repeat)], capture_output=True, text=True)
        warm_ours.append(json.loads(r.stdout)["depth_s"] if r.returncode == 0 else
                         sys.exit(f"sdstudio-bench failed: {r.stderr}"))
        r = subprocess.run([sys.executable, "-c", WARM, model, str(a.size), str(a.repeat)],
                           capture_output=True, text=True)
        warm_theirs.append(json.loads(r.stdout.strip().splitlines()[-1])["depth_s"])
    for _ in range(a.repeat):
        ours.append(timed(ours_cmd))
        theirs.append(timed(theirs_cmd))
    diff = np.abs(np.array(Image.open(work / "ours.png").convert("L")).astype(int) -
                  np.array(Image.open(work / "theirs.png").convert("L")).astype(int)).max()
    print("| measurement | SD Studio s | transformers s | time ratio |")
    print("|---|---|---|---|")
    for what, o, t in [(f"depth map {a.size}x{a.size}, warm", warm_ours, warm_theirs),
                       (f"process: load and one {a.size}x{a.size} map", ours, theirs)]:
        mo, mt = statistics.median(o), statistics.median(t)
        print(f"| {what} | {mo:.3f} | {mt:.3f} | {mo / mt:.2f} |")
    print(f"runs: warm ours {warm_ours}, transformers {warm_theirs}; process ours "
          f"{[round(x, 2) for x in ours]}, transformers {[round(x, 2) for x in theirs]}; "
          f"largest difference between the maps: {diff}/255")


if __name__ == "__main__":
    main()
