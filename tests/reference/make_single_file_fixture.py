"""A tiny random SD 1.x pipeline with three levels (the SD 1.5 layout: attention in the first
two, none in the last) as one single-file checkpoint in the original layout
(original_checkpoint.py), checked against diffusers' own single-file loader, and the images
diffusers makes from that file.

usage: make_single_file_fixture.py OUT_DIR UNET_CONFIG VAE_CONFIG
UNET_CONFIG, VAE_CONFIG: the SD 1.5 configs SD Studio opens single files with
(models/sd1-config); OUT_DIR/sd15_names.json maps each of their diffusers tensor names to its
original name, checked by diffusers' converters.
OUT_DIR/model (the diffusers folder), OUT_DIR/config (the same without weights: what a
single file is opened with), OUT_DIR/model.safetensors (the single file, with the unused extras
original checkpoints carry), OUT_DIR/model.ckpt (the same tensors as torch.save writes them,
under "state_dict" beside the training step, as the original SD .ckpt files are),
OUT_DIR/cases.json ([{"name", "request"}]) and
OUT_DIR/expected.safetensors (per case NAME [B, H, W, 3] uint8).
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint)
from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       StableDiffusionPipeline, UNet2DConditionModel)
from safetensors.torch import load_file, save_file

import make_tiny_pipeline
import original_checkpoint

CASES = [
    ("euler_a_neg_b2", {"prompt": "a red circle on a blue background", "negative_prompt": "green",
                        "steps": 6, "guidance_scale": 7.5, "seed": 21, "batch_count": 2,
                        "width": 32, "height": 32, "sampler": "euler_a"}),
    ("dpmpp_2m_g1", {"prompt": "a yellow star", "steps": 5, "guidance_scale": 1.0, "seed": 4,
                     "batch_count": 1, "width": 48, "height": 32, "sampler": "dpmpp_2m"}),
]
SCHEDULERS = {"euler_a": EulerAncestralDiscreteScheduler, "dpmpp_2m": DPMSolverMultistepScheduler}


def make_model(out):
    torch.manual_seed(7)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64), layers_per_block=2, sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=16)
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4, sample_size=32)
    make_tiny_pipeline.save_pipeline(out / "model", unet, vae, text_layers=2)
    shutil.copytree(out / "model", out / "config",
                    ignore=shutil.ignore_patterns("*.safetensors"))
    original_checkpoint.write(out / "model", out / "model.safetensors")


def sd15_names(unet_config, vae_config):
    """{component: {diffusers name: original name}} for SD 1.5's UNet and VAE: our names run
    back through diffusers' single-file converters must give every tensor back, each to itself."""
    out = {}
    for comp, path, cls, key_of, prefix, convert in [
            ("unet", unet_config, UNet2DConditionModel, original_checkpoint.unet_key,
             "model.diffusion_model.", convert_ldm_unet_checkpoint),
            ("vae", vae_config, AutoencoderKL, original_checkpoint.vae_key, "first_stage_model.",
             convert_ldm_vae_checkpoint)]:
        cfg = json.loads(Path(path).read_text())
        with torch.device("meta"):  # names only, no memory
            model = cls.from_config(cfg)
        names = list(model.state_dict())
        mapping = {n: key_of(n, cfg) for n in names}
        marked = {prefix + o: torch.tensor([float(i)]) for i, o in enumerate(mapping.values())}
        back = convert(marked, dict(model.config))
        assert sorted(back) == sorted(names), (comp, sorted(set(back) ^ set(names))[:5])
        for i, n in enumerate(names):
            assert back[n].flatten()[0].item() == i, (comp, n)
        out[comp] = mapping
    return out


def check_and_render(out, cases, schedulers):
    """diffusers' own from_single_file must read OUT/model.safetensors (with the configs of
    OUT/config) as the folder OUT/model, tensor for tensor; then the images it makes from the
    file for `cases` go to OUT/expected.safetensors and the cases to OUT/cases.json. Returns the
    single-file pipeline."""
    folder = StableDiffusionPipeline.from_pretrained(out / "model")
    single = StableDiffusionPipeline.from_single_file(
        str(out / "model.safetensors"), config=str(out / "config"), local_files_only=True)
    single.set_progress_bar_config(disable=True)
    for c in ("unet", "vae", "text_encoder"):  # diffusers reads the file as we wrote it
        a, b = getattr(folder, c).state_dict(), getattr(single, c).state_dict()
        assert a.keys() == b.keys(), (c, sorted(set(a) ^ set(b))[:5])
        bad = [k for k in a if not torch.equal(a[k], b[k])]
        assert not bad, (c, bad[:5])
    expected = {}
    for name, req in cases:
        single.scheduler = schedulers[req["sampler"]].from_config(folder.scheduler.config)
        gens = [torch.Generator("cpu").manual_seed(req["seed"] + i)
                for i in range(req["batch_count"])]
        images = single(req["prompt"], negative_prompt=req.get("negative_prompt"),
                        num_inference_steps=req["steps"], guidance_scale=req["guidance_scale"],
                        width=req["width"], height=req["height"], generator=gens,
                        num_images_per_prompt=req["batch_count"]).images
        expected[name] = torch.from_numpy(np.stack([np.array(i) for i in images]))
    save_file(expected, str(out / "expected.safetensors"))
    (out / "cases.json").write_text(json.dumps([{"name": n, "request": r} for n, r in cases],
                                               indent=1))
    return single


def main(out_dir, unet_config, vae_config):
    out = Path(out_dir)
    (out / "sd15_names.json").write_text(json.dumps(sd15_names(unet_config, vae_config), indent=0))
    make_model(out)
    single = check_and_render(out, CASES, SCHEDULERS)
    # The .ckpt: diffusers reads it (with torch.load(weights_only=True)) as the same model.
    sd = load_file(str(out / "model.safetensors"))
    torch.save({"state_dict": sd, "global_step": 470000, "epoch": 6}, out / "model.ckpt")
    from_ckpt = StableDiffusionPipeline.from_single_file(
        str(out / "model.ckpt"), config=str(out / "config"), local_files_only=True)
    for c in ("unet", "vae", "text_encoder"):
        a, b = getattr(single, c).state_dict(), getattr(from_ckpt, c).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), c


if __name__ == "__main__":
    main(*sys.argv[1:4])
