"""A diffusers Stable Diffusion 1.x folder written as one single-file checkpoint in the original
(CompVis latent-diffusion) layout that A1111 and most shared .safetensors checkpoints use:
model.diffusion_model.* (UNet), first_stage_model.* (VAE), cond_stage_model.transformer.*
(CLIP text encoder). The names are derived from the LDM module tree (input_blocks /
middle_block / output_blocks, encoder.down.N.block.M, ...); the fixture makers check the
result against diffusers' own single-file loader, so a wrong name fails there.

usage (as a module): write(PIPE_DIR, OUT_FILE, extra=True, dtype=None)
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}


def _resnet(parts):
    return ".".join([RESNET.get(parts[0], parts[0])] + parts[1:])


def unet_key(name, cfg):
    p = name.split(".")
    n = cfg["layers_per_block"]
    if p[0] == "time_embedding":
        return f"time_embed.{0 if p[1] == 'linear_1' else 2}.{p[2]}"
    if p[0] == "conv_in":
        return f"input_blocks.0.0.{p[1]}"
    if p[0] == "conv_norm_out":
        return f"out.0.{p[1]}"
    if p[0] == "conv_out":
        return f"out.2.{p[1]}"
    if p[0] == "down_blocks":
        first = 1 + int(p[1]) * (n + 1)
        if p[2] == "resnets":
            return f"input_blocks.{first + int(p[3])}.0.{_resnet(p[4:])}"
        if p[2] == "attentions":
            return f"input_blocks.{first + int(p[3])}.1.{'.'.join(p[4:])}"
        if p[2] == "downsamplers":  # downsamplers.0.conv.weight
            return f"input_blocks.{first + n}.0.op.{'.'.join(p[5:])}"
    if p[0] == "mid_block":
        if p[1] == "resnets":
            return f"middle_block.{2 * int(p[2])}.{_resnet(p[3:])}"
        return f"middle_block.1.{'.'.join(p[3:])}"
    if p[0] == "up_blocks":
        first = int(p[1]) * (n + 1)
        if p[2] == "resnets":
            return f"output_blocks.{first + int(p[3])}.0.{_resnet(p[4:])}"
        if p[2] == "attentions":
            return f"output_blocks.{first + int(p[3])}.1.{'.'.join(p[4:])}"
        if p[2] == "upsamplers":
            has_attn = cfg["up_block_types"][int(p[1])].startswith("CrossAttn")
            return f"output_blocks.{first + n}.{2 if has_attn else 1}.conv.{'.'.join(p[5:])}"
    raise KeyError(name)


def vae_key(name, cfg):
    p = name.split(".")
    blocks = len(cfg["block_out_channels"])
    if p[1] == "conv_norm_out":
        return f"{p[0]}.norm_out.{p[2]}"
    if p[1] == "mid_block":
        if p[2] == "resnets":
            return f"{p[0]}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}"
        return f"{p[0]}.mid.attn_1.{VAE_ATTN[p[4]]}.{p[-1]}"
    if p[1] == "down_blocks":
        if p[3] == "downsamplers":
            return f"encoder.down.{p[2]}.downsample.conv.{p[-1]}"
        return f"encoder.down.{p[2]}.block.{p[4]}.{p[5].replace('conv_shortcut', 'nin_shortcut')}.{p[6]}"
    if p[1] == "up_blocks":
        level = blocks - 1 - int(p[2])
        if p[3] == "upsamplers":
            return f"decoder.up.{level}.upsample.conv.{p[-1]}"
        return f"decoder.up.{level}.block.{p[4]}.{p[5].replace('conv_shortcut', 'nin_shortcut')}.{p[6]}"
    return name  # encoder/decoder conv_in, conv_out, quant_conv, post_quant_conv


def convert(pipe_dir):
    pipe = Path(pipe_dir)
    out = {}
    cfg = json.loads((pipe / "unet/config.json").read_text())
    for k, v in load_file(pipe / "unet/diffusion_pytorch_model.safetensors").items():
        out["model.diffusion_model." + unet_key(k, cfg)] = v
    cfg = json.loads((pipe / "vae/config.json").read_text())
    for k, v in load_file(pipe / "vae/diffusion_pytorch_model.safetensors").items():
        if ".mid_block.attentions." in k and k.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # the original VAE's attention projections are 1x1 convs
        out["first_stage_model." + vae_key(k, cfg)] = v
    for k, v in load_file(pipe / "text_encoder/model.safetensors").items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + k] = v
    return out


def write(pipe_dir, out_file, extra=True, dtype=None):
    sd = convert(pipe_dir)
    if extra:  # what original checkpoints carry besides the three models, left unused
        sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = \
            torch.arange(77)[None]
        sd["betas"] = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
        sd["alphas_cumprod"] = torch.cumprod(1 - sd["betas"], 0)
        sd["model_ema.decay"] = torch.tensor(0.9999)
        sd["model_ema.diffusion_modelinput_blocks00weight"] = \
            sd["model.diffusion_model.input_blocks.0.0.weight"].clone()
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out_file))
