"""diffusers loads the model train_test wrote and, with the same seed and scheduler, makes the
same image our engine made (max difference 2/255, fp32 CPU). With a base model: MODEL_DIR holds
a LoRA train_test trained on it (kohya-ss's format), which diffusers' load_lora_weights reads,
and the image is the base's with that LoRA.

usage: train_test_reference.py MODEL_DIR [BASE_MODEL_DIR]
"""
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.numpy import load_file


def main(model, base=None):
    pipe = StableDiffusionPipeline.from_pretrained(base or model, safety_checker=None)
    size = {}
    if base:
        lora = Path(model) / (Path(model).name + ".safetensors")
        pipe.load_lora_weights(str(lora))
        size = {"width": 32, "height": 32}
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on a blue background", num_inference_steps=8,
                 generator=[torch.Generator("cpu").manual_seed(5)], output_type="np",
                 **size).images[0]
    theirs = np.round(image * 255).astype(np.int64)
    name = "ours_lora" if base else "ours"
    ours = load_file(f"{model}/{name}.safetensors")["image"].reshape(theirs.shape)
    diff = np.abs(theirs - ours).max()
    print(f"max pixel difference {diff}/255")
    assert diff <= 2, diff


if __name__ == "__main__":
    main(*sys.argv[1:3])
