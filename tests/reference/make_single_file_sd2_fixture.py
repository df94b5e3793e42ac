"""A tiny random SD 2.x pipeline (linear projections, heads per block, attention upcast, a gelu
text encoder, the tokenizer padding with "!", DDIM with v-prediction) as one single-file
checkpoint in the original layout with OpenCLIP's text encoder names (original_checkpoint.py),
checked against diffusers' own single-file loader, and the images diffusers makes from that file.

usage: make_single_file_sd2_fixture.py OUT_DIR TEXT_CONFIG
TEXT_CONFIG: SD 2.1's text encoder config, which SD Studio opens SD 2.x files with
(models/sd2-config); OUT_DIR/sd21_text_names.json maps each of its tensor names to
[OpenCLIP name, part of 3 or -1 for the whole tensor], checked by diffusers' converter.
OUT_DIR/model, OUT_DIR/config, OUT_DIR/model.safetensors, OUT_DIR/cases.json and
OUT_DIR/expected.safetensors as make_single_file_fixture.py writes them (with its checks).
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, EulerAncestralDiscreteScheduler,
                       UNet2DConditionModel)
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel

import make_single_file_fixture
import make_tiny_pipeline
import original_checkpoint

CASES = [
    ("ddim_neg_b2", {"prompt": "a red circle on a blue background", "negative_prompt": "green",
                     "steps": 6, "guidance_scale": 7.5, "seed": 21, "batch_count": 2,
                     "width": 32, "height": 32, "sampler": "ddim"}),
    ("euler_a_g1", {"prompt": "a yellow star", "steps": 5, "guidance_scale": 1.0, "seed": 4,
                    "batch_count": 1, "width": 48, "height": 32, "sampler": "euler_a"}),
]
SCHEDULERS = {"ddim": DDIMScheduler, "euler_a": EulerAncestralDiscreteScheduler}
PREFIX = "cond_stage_model.model."


def make_model(out):
    torch.manual_seed(11)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64), layers_per_block=2, sample_size=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4, 4), norm_num_groups=16,
        use_linear_projection=True, upcast_attention=True)
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4, sample_size=32)
    make_tiny_pipeline.save_pipeline(out / "model", unet, vae, text_layers=2, sd2=True)
    shutil.copytree(out / "model", out / "config",
                    ignore=shutil.ignore_patterns("*.safetensors"))
    original_checkpoint.write(out / "model", out / "model.safetensors", openclip=True)


def sd21_text_names(text_config):
    """{CLIPTextModel name: [OpenCLIP name, part]} for SD 2.1's text encoder: a file with each
    OpenCLIP tensor (each third of an in_proj) marked by a number, run through diffusers'
    converter, must give every tensor of the model back with its own mark."""
    cfg = CLIPTextConfig.from_json_file(text_config)
    with torch.device("meta"):
        model = CLIPTextModel(cfg)
    names = [n.removeprefix("text_model.") for n in model.state_dict()
             if not n.endswith("position_ids")]
    mapping = {n: original_checkpoint.openclip_key(n) for n in names}
    hidden = cfg.hidden_size
    marked, mark = {}, {}
    for i, (name, (key, part)) in enumerate(mapping.items()):
        mark[name] = float(i)
        if part is None:
            marked[PREFIX + key] = torch.tensor([float(i)])
            continue
        fused = marked.setdefault(PREFIX + key, torch.zeros(3 * hidden, 1))
        fused[part * hidden:(part + 1) * hidden] = float(i)
    # What real SD 2.x files carry besides: OpenCLIP's 24th layer and the image-side projection.
    marked[PREFIX + "transformer.resblocks.23.ln_1.weight"] = torch.tensor([-1.0])
    marked[PREFIX + "text_projection"] = torch.zeros(hidden, 1)
    back = {k.removeprefix("text_model."): v
            for k, v in convert_open_clip_checkpoint(model, marked, prefix=PREFIX).items()}
    back.pop("text_projection.weight", None)
    assert sorted(back) == sorted(names), sorted(set(back) ^ set(names))[:5]
    for name in names:
        assert torch.all(back[name] == mark[name]), name
    return {n: [k, -1 if p is None else p] for n, (k, p) in mapping.items()}


def main(out_dir, text_config):
    out = Path(out_dir)
    names = sd21_text_names(text_config)
    (out / "sd21_text_names.json").write_text(json.dumps(names, indent=0))
    make_model(out)
    single = make_single_file_fixture.check_and_render(out, CASES, SCHEDULERS)
    assert single.scheduler.config.prediction_type == "v_prediction"
    assert single.tokenizer.pad_token == "!"


if __name__ == "__main__":
    main(*sys.argv[1:3])
