"""A diffusers Stable Diffusion 1.x or 2.x folder written as one single-file checkpoint in the
original (CompVis latent-diffusion) layout that A1111 and most shared .safetensors checkpoints
use: model.diffusion_model.* (UNet), first_stage_model.* (VAE), and the text encoder as
cond_stage_model.transformer.* (SD 1.x: CLIP with transformers' names) or
cond_stage_model.model.* (SD 2.x: OpenCLIP's names, q/k/v stacked in one in_proj, and one layer
more than the model uses). An SDXL folder (one with text_encoder_2) is written in Stability's
generative-models layout: the UNet's added conditioning as label_emb.0.*, the first encoder
under conditioner.embedders.0.transformer.* (transformers' names), the second under
conditioner.embedders.1.model.* (OpenCLIP's, its projection stored transposed, as OpenCLIP
multiplies by it from the right). The names are derived from the LDM and OpenCLIP module trees
(input_blocks / middle_block / output_blocks, encoder.down.N.block.M, transformer.resblocks.N,
...); the fixture makers check the result against diffusers' own single-file loader, so a
wrong name fails there.

usage (as a module): write(PIPE_DIR, OUT_FILE, extra=True, dtype=None, openclip=False)
(openclip: SD 2.x; an SDXL folder is recognised by its text_encoder_2)
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
    if p[0] == "add_embedding":
        return f"label_emb.0.{0 if p[1] == 'linear_1' else 2}.{p[2]}"
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


OPENCLIP_WHOLE = {"embeddings.token_embedding.weight": "token_embedding.weight",
                  "embeddings.position_embedding.weight": "positional_embedding",
                  "final_layer_norm.weight": "ln_final.weight",
                  "final_layer_norm.bias": "ln_final.bias"}
OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
                  "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
OPENCLIP_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}


def openclip_key(name):
    """A CLIPTextModel name (without "text_model.") -> (OpenCLIP name, part): part 0/1/2 is the
    q/k/v third of an in_proj tensor, None for a whole tensor, "T" for the transpose."""
    if name in OPENCLIP_WHOLE:
        return OPENCLIP_WHOLE[name], None
    if name == "text_projection.weight":  # CLIPTextModelWithProjection's, transposed
        return "text_projection", "T"
    p = name.split(".")  # encoder.layers.I.MODULE[.SUB].weight|bias
    assert p[:2] == ["encoder", "layers"], name
    layer, module = f"transformer.resblocks.{int(p[2])}", ".".join(p[3:-1])
    if module in OPENCLIP_LAYER:
        return f"{layer}.{OPENCLIP_LAYER[module]}.{p[-1]}", None
    return f"{layer}.attn.in_proj_{p[-1]}", OPENCLIP_QKV[module]


def openclip_tensors(tensors):
    """CLIPTextModel(WithProjection) tensors -> OpenCLIP's."""
    out, parts = {}, {}
    for k, v in tensors.items():
        k = k.removeprefix("text_model.")
        if k.endswith("position_ids"):
            continue
        key, part = openclip_key(k)
        if part is None:
            out[key] = v
        elif part == "T":
            out[key] = v.T.contiguous()
        else:
            parts.setdefault(key, {})[part] = v
    for key, qkv in parts.items():
        out[key] = torch.cat([qkv[0], qkv[1], qkv[2]], 0)
    return out


def openclip_text(tensors, layers):
    """CLIPTextModel tensors -> OpenCLIP's, with a random extra last layer (SD 2.x files keep
    all 24 of OpenCLIP's layers; the model uses 23) and the image-side projection and scale."""
    out = openclip_tensors(tensors)
    gen = torch.Generator().manual_seed(99)
    last = f"transformer.resblocks.{layers - 1}."
    for k in [k for k in out if k.startswith(last)]:
        out[k.replace(last, f"transformer.resblocks.{layers}.")] = torch.randn(
            out[k].shape, generator=gen)
    hidden = out["ln_final.weight"].shape[0]
    out["text_projection"] = torch.randn(hidden, hidden, generator=gen)
    out["logit_scale"] = torch.tensor(4.6052)
    return out


def convert(pipe_dir, openclip=False):
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
    text = load_file(pipe / "text_encoder/model.safetensors")
    if (pipe / "text_encoder_2").is_dir():
        for k, v in text.items():
            k = k if k.startswith("text_model.") else "text_model." + k
            out["conditioner.embedders.0.transformer." + k] = v
        text_2 = load_file(pipe / "text_encoder_2/model.safetensors")
        for k, v in openclip_tensors(text_2).items():
            out["conditioner.embedders.1.model." + k] = v
        out["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6052)
        return out
    if openclip:
        layers = json.loads((pipe / "text_encoder/config.json").read_text())["num_hidden_layers"]
        for k, v in openclip_text(text, layers).items():
            out["cond_stage_model.model." + k] = v
        return out
    for k, v in text.items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + k] = v
    return out


def write(pipe_dir, out_file, extra=True, dtype=None, openclip=False):
    sd = convert(pipe_dir, openclip)
    clip = next((p for p in ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
                 if any(k.startswith(p) for k in sd)), None)
    if extra and clip:  # SD 1.x and SDXL files keep transformers' position ids buffer
        sd[clip + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
    if extra:  # what original checkpoints carry besides the three models, left unused
        sd["betas"] = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
        sd["alphas_cumprod"] = torch.cumprod(1 - sd["betas"], 0)
        sd["model_ema.decay"] = torch.tensor(0.9999)
        sd["model_ema.diffusion_modelinput_blocks00weight"] = \
            sd["model.diffusion_model.input_blocks.0.0.weight"].clone()
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out_file))
