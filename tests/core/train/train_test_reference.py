"""diffusers loads the model train_test wrote and, with the same seed and scheduler, makes the
same image our engine made (max difference 2/255, fp32 CPU).

usage: train_test_reference.py MODEL_DIR
"""
import sys

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.numpy import load_file


def main(model):
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on a blue background", num_inference_steps=8,
                 generator=[torch.Generator("cpu").manual_seed(5)], output_type="np").images[0]
    theirs = np.round(image * 255).astype(np.int64)
    ours = load_file(f"{model}/ours.safetensors")["image"].reshape(theirs.shape)
    diff = np.abs(theirs - ours).max()
    print(f"max pixel difference {diff}/255")
    assert diff <= 2, diff


if __name__ == "__main__":
    main(sys.argv[1])
