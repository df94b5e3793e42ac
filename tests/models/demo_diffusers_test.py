"""diffusers' StableDiffusionPipeline loads models/demo as it is and, with the same seed and
scheduler, makes the same images as sdstudio-cli (max pixel difference 2/255, fp32 CPU)."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       PNDMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)
from PIL import Image

CLI = os.environ["SDS_CLI"]
DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"

CASES = [
    ("a green star on a white background", 7.5, 11, "pndm", PNDMScheduler, {}),
    ("two shapes: a red circle and a blue square, yellow background", 5.0, 12, "dpmpp_2m",
     DPMSolverMultistepScheduler, {}),
    ("a large purple triangle at the top, black background", 9.0, 13, "euler_a",
     EulerAncestralDiscreteScheduler, {}),
    ("an orange circle", 1.0, 14, "ddim", DDIMScheduler, {}),
]


@pytest.fixture(scope="module")
def pipe():
    p = StableDiffusionPipeline.from_pretrained(DEMO, safety_checker=None)
    p.set_progress_bar_config(disable=True)
    return p


def ours(tmp_path, *flags):
    r = subprocess.run([CLI, *flags, "--out", str(tmp_path), "--device", "cpu"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return np.asarray(Image.open(r.stdout.split()[0])).astype(np.int64)


@pytest.mark.parametrize("prompt,guidance,seed,sampler,cls,kw", CASES)
def test_txt2img_same_image(pipe, tmp_path, prompt, guidance, seed, sampler, cls, kw):
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **kw)
    image = pipe(prompt, num_inference_steps=15, guidance_scale=guidance,
                 generator=[torch.Generator("cpu").manual_seed(seed)], output_type="np").images[0]
    theirs = np.round(image * 255).astype(np.int64)
    # No --model: the CLI uses the bundled model by default.
    mine = ours(tmp_path, "txt2img", "--prompt", prompt, "--steps", "15", "--guidance",
                str(guidance), "--seed", str(seed), "--sampler", sampler)
    assert mine.shape == theirs.shape == (128, 128, 3)
    assert np.abs(mine - theirs).max() <= 2


def test_img2img_same_image(pipe, tmp_path):
    init = Image.new("RGB", (128, 128), (40, 80, 220))
    for y in range(30, 90):
        for x in range(20, 70):
            init.putpixel((x, y), (220, 40, 40))
    init.save(tmp_path / "init.png")
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    image = i2i("a red square on the left, blue background", image=init, strength=0.6,
                num_inference_steps=20, generator=[torch.Generator("cpu").manual_seed(3)],
                output_type="np").images[0]
    theirs = np.round(image * 255).astype(np.int64)
    mine = ours(tmp_path, "img2img", "--model", str(DEMO), "--init", str(tmp_path / "init.png"),
                "--prompt", "a red square on the left, blue background", "--strength", "0.6",
                "--steps", "20", "--seed", "3", "--sampler", "euler_a")
    assert np.abs(mine - theirs).max() <= 2
