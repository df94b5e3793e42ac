"""LoRA files in the format A1111 and kohya-ss's sd-scripts write (what people share), and the
images diffusers makes with them: a tiny SD 1.x pipeline (1x1-convolution proj_in/proj_out, as
SD 1.x has) and a tiny SDXL pipeline (make_sdxl_fixture.make_model), each with random LoRAs,
loaded by diffusers' own load_lora_weights (peft) and weighted with set_adapters.

A kohya LoRA names each module it changes by its path with "_" for ".", under lora_unet_ (SD 1.x:
diffusers' UNet names; SDXL: the original UNet's, input_blocks_4_1_...), lora_te_ (SD 1.x's text
encoder, transformers' names) or lora_te1_ / lora_te2_ (SDXL's two), with NAME.lora_down.weight
[rank, in(, kh, kw)], NAME.lora_up.weight [out, rank(, 1, 1)] and NAME.alpha: the module's weight
gains weight * alpha / rank * up @ down.

Also one LoRA in diffusers' own format (lora_A/lora_B, its settings in the file's metadata), and
LyCORIS LoHa and LoKr files (kohya's names with NAME.hada_w1_a ... / NAME.lokr_w1 ...), whose
images come from peft's LoHa and LoKr layers (ported from LyCORIS) in diffusers' pipeline; a
LyCORIS LoCon with Tucker cores on 3x3 convolutions (NAME.lora_mid.weight), whose images come
from the pipeline with each changed module run beside its LoRA's own convolutions (down 1x1,
mid 3x3, up 1x1); and a LyCORIS full file (NAME.diff, NAME.diff_b: the changes themselves),
whose images come from the pipeline with those changes added to its weights.

usage: make_lora_fixture.py OUT_DIR
OUT_DIR/tiny-sd, OUT_DIR/tiny-sdxl (the models), OUT_DIR/*.safetensors (the LoRAs),
OUT_DIR/cases.json ([{"name", "model", "loras": [[file, weight]...], "request"}]),
OUT_DIR/expected.safetensors (per case NAME [B, H, W, 3] uint8, and NAME.nolora: the same
request without LoRAs).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from peft import LoHaConfig, LoKrConfig, LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

import make_sdxl_fixture
import make_tiny_pipeline
import original_checkpoint


def make_sd(out):
    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=16)
    vae = AutoencoderKL(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, sample_size=16)
    make_tiny_pipeline.save_pipeline(out / "tiny-sd", unet, vae, text_layers=2)


def kohya_lora(modules, rank, seed, scale, alpha):
    """{prefix + module path: weight tensor} -> a kohya LoRA for each (random down/up)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, w in modules.items():
        out_ch, in_ch = w.shape[0], w.shape[1]
        kernel = tuple(w.shape[2:])  # () linear, (1, 1) or (3, 3) convolution
        down = torch.randn((rank, in_ch) + kernel, generator=g) * scale
        up = torch.randn((out_ch, rank) + ((1, 1) if kernel else ()), generator=g) * scale
        sd[name + ".lora_down.weight"] = down
        sd[name + ".lora_up.weight"] = up
        if alpha is not None:
            sd[name + ".alpha"] = torch.tensor(float(alpha))
    return sd


def flat(name):
    return name.removesuffix(".weight").replace(".", "_")


def sd_targets(pipe):
    """SD 1.x modules kohya's LoRA/LoCon touch: attention projections, 1x1 proj_in/proj_out,
    feed-forward, a resnet's 3x3 convolution and its time projection; the text encoder's
    attention and MLP."""
    out = {}
    for n, w in pipe.unet.state_dict().items():
        keep = any(k in n for k in ("attn1.to_", "attn2.to_", "proj_in.weight", "proj_out.weight",
                                    "ff.net.", "down_blocks.0.resnets.0.conv1.weight",
                                    "down_blocks.0.resnets.0.time_emb_proj.weight"))
        if keep and n.endswith(".weight") and w.dim() in (2, 4):
            out["lora_unet_" + flat(n)] = w
    for n, w in pipe.text_encoder.state_dict().items():
        if any(k in n for k in ("self_attn.", "mlp.")) and n.endswith(".weight"):
            out["lora_te_" + flat("text_model." + n.removeprefix("text_model."))] = w
    return out


def sdxl_targets(pipe):
    """SDXL modules by the original UNet's names (as kohya's SDXL LoRAs name them) and both
    text encoders."""
    cfg = dict(pipe.unet.config)
    out = {}
    for n, w in pipe.unet.state_dict().items():
        keep = any(k in n for k in ("attn1.to_", "attn2.to_", "proj_in.weight",
                                    "up_blocks.0.resnets.1.conv2.weight"))
        if keep and n.endswith(".weight") and w.dim() in (2, 4):
            out["lora_unet_" + flat(original_checkpoint.unet_key(n, cfg))] = w
    for prefix, te in (("lora_te1_", pipe.text_encoder), ("lora_te2_", pipe.text_encoder_2)):
        for n, w in te.state_dict().items():
            if any(k in n for k in ("self_attn.", "mlp.")) and n.endswith(".weight"):
                out[prefix + flat("text_model." + n.removeprefix("text_model."))] = w
    return out


def peft_lora(pipe, out_file):
    """A LoRA in diffusers' own format (save_lora_weights: unet.MODULE.lora_A/lora_B.weight, the
    adapter's LoraConfig in the file's metadata), with a rank and an alpha that differ per module
    (rank_pattern, alpha_pattern) on the UNet, and rsLoRA scaling on the text encoder."""
    ucfg = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0",
                                                         "proj_in", "conv1"],
                      rank_pattern={"proj_in": 2}, alpha_pattern={"to_k": 3})
    tcfg = LoraConfig(r=2, lora_alpha=1, use_rslora=True, target_modules=["q_proj", "v_proj",
                                                                          "fc1"])
    pipe.unet.add_adapter(ucfg)
    # transformers' add_adapter asks for a newer peft than diffusers needs; peft's own does it.
    inject_adapter_in_model(tcfg, pipe.text_encoder)
    g = torch.Generator().manual_seed(5)
    for m in (pipe.unet, pipe.text_encoder):
        for n, p in m.named_parameters():
            if "lora_" in n:
                p.data = torch.randn(p.shape, generator=g) * 0.3
    tmp = out_file.parent / "_peft"
    type(pipe).save_lora_weights(
        tmp, unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        unet_lora_adapter_metadata=ucfg.to_dict(), text_encoder_lora_adapter_metadata=tcfg.to_dict(),
        safe_serialization=True)
    (tmp / "pytorch_lora_weights.safetensors").rename(out_file)
    tmp.rmdir()


def lycoris_targets(pipe):
    """peft target modules (suffixes): attention, 1x1 proj_in/proj_out, feed-forward, every
    resnet's 3x3 conv1 and time projection; the text encoder's attention and MLP."""
    return (["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "conv1",
             "time_emb_proj"], ["q_proj", "v_proj", "out_proj", "fc1"])


def lycoris_file(pipe, kind, seed, scale, weight, out_file):
    """A LyCORIS LoHa or LoKr with random factors, put into pipe's UNet and text encoder as peft's
    own layers (so that diffusers' images are made with them, unmerged) at `weight`, and written
    with kohya's module names as LyCORIS writes them: NAME.hada_w1_a, hada_w1_b, hada_w2_a,
    hada_w2_b (hada_t1, hada_t2: a 3x3 convolution's Tucker cores) or NAME.lokr_w1(_a, _b),
    lokr_w2(_a, _b), lokr_t2; NAME.alpha. The change is alpha / rank times (w1a @ w1b) * (w2a @
    w2b) for LoHa and kron(w1, w2) for LoKr (peft's scaling; A1111 divides by the same rank)."""
    unet_t, te_t = lycoris_targets(pipe)
    if kind == "loha":
        cfgs = (LoHaConfig(r=4, alpha=2, target_modules=unet_t, use_effective_conv2d=True),
                LoHaConfig(r=2, alpha=3, target_modules=te_t))
    else:  # decompose_both: w1 too is a product where the rank is small enough
        cfgs = (LoKrConfig(r=2, alpha=3, target_modules=unet_t, use_effective_conv2d=True,
                           decompose_both=True),
                LoKrConfig(r=2, alpha=1, target_modules=te_t))
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for (prefix, model), cfg in zip((("lora_unet_", pipe.unet), ("lora_te_", pipe.text_encoder)),
                                    cfgs):
        inject_adapter_in_model(cfg, model, adapter_name="ly")
        for name, m in model.named_modules():
            factors = {k: getattr(m, k)["ly"] for k in getattr(m, "adapter_layer_names", ())
                       if "ly" in getattr(m, k)}
            if not factors:
                continue
            if kind == "lokr":
                # A1111 and LyCORIS divide alpha by the rank of a product (w2's, else w1's) and
                # take the whole change where both are full matrices; peft always divides by r.
                assert "lokr_w2_b" in factors, name
            module = prefix + flat(name if prefix == "lora_unet_"
                                   else "text_model." + name.removeprefix("text_model."))
            for k, p in factors.items():
                p.data = torch.randn(p.shape, generator=g) * scale
                sd[module + "." + k] = p.data.clone()
            sd[module + ".alpha"] = torch.tensor(float(m.alpha["ly"]))
            m.scaling["ly"] *= weight
    assert any(".hada_t1" in k or ".lokr_t2" in k for k in sd), "no Tucker core: no 3x3 case"
    assert any(k.startswith("lora_te_") for k in sd)
    save_file(sd, str(out_file))


class BesideItsLora(torch.nn.Module):
    """A module run with its LoRA beside it: base(x) + scale * up(mid(down(x))), the LoRA's
    factors as layers of their own (for a convolution: down 1x1, mid with the module's kernel,
    stride and padding, up 1x1)."""

    def __init__(self, base, down, mid, up, scale):
        super().__init__()
        self.base, self.down, self.mid, self.up, self.scale = base, down, mid, up, scale

    def forward(self, x):
        if isinstance(self.base, torch.nn.Conv2d):
            y = torch.nn.functional.conv2d(x, self.down)
            y = torch.nn.functional.conv2d(y, self.mid, stride=self.base.stride,
                                           padding=self.base.padding)
            y = torch.nn.functional.conv2d(y, self.up)
        else:
            y = torch.nn.functional.linear(torch.nn.functional.linear(x, self.down), self.up)
        return self.base(x) + self.scale * y


def locon_tucker_file(pipe, seed, weight, out_file):
    """A LyCORIS LoCon with Tucker cores: every resnet's 3x3 conv1 and conv2 as lora_down [r,
    in, 1, 1], lora_mid [r, r, 3, 3], lora_up [out, r, 1, 1]; the self-attention's to_q as a plain
    LoRA; alpha 3 over rank 4. Puts each beside its module in pipe's UNet (BesideItsLora)."""
    g = torch.Generator().manual_seed(seed)
    rank, alpha, sd = 4, 3.0, {}
    for name, m in list(pipe.unet.named_modules()):
        conv = isinstance(m, torch.nn.Conv2d) and name.endswith(("conv1", "conv2")) and \
            "resnets" in name and m.kernel_size == (3, 3)
        linear = isinstance(m, torch.nn.Linear) and name.endswith("attn1.to_q")
        if not (conv or linear):
            continue
        out_ch, in_ch = m.weight.shape[:2]
        if conv:
            down = torch.randn((rank, in_ch, 1, 1), generator=g) * 0.3
            mid = torch.randn((rank, rank, 3, 3), generator=g) * 0.3
            up = torch.randn((out_ch, rank, 1, 1), generator=g) * 0.3
        else:
            down = torch.randn((rank, in_ch), generator=g) * 0.3
            mid = None
            up = torch.randn((out_ch, rank), generator=g) * 0.3
        key = "lora_unet_" + flat(name)
        sd[key + ".lora_down.weight"] = down
        sd[key + ".lora_up.weight"] = up
        if mid is not None:
            sd[key + ".lora_mid.weight"] = mid
        sd[key + ".alpha"] = torch.tensor(alpha)
        parent, child = name.rsplit(".", 1)
        setattr(pipe.unet.get_submodule(parent), child,
                BesideItsLora(m, down, mid, up, weight * alpha / rank))
    assert any(k.endswith("lora_mid.weight") for k in sd)
    save_file(sd, str(out_file))


def full_file(pipe, seed, weight, out_file):
    """A LyCORIS full file: NAME.diff (the weight's change) and NAME.diff_b (the bias's) for the
    attention's to_k (no bias) and to_out.0, each resnet's conv2, and the text encoder's fc1;
    added to pipe's weights at `weight`."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, model in (("lora_unet_", pipe.unet), ("lora_te_", pipe.text_encoder)):
        for name, m in model.named_modules():
            if not (name.endswith(("attn1.to_k", "attn2.to_out.0", "fc1")) or
                    (name.endswith("conv2") and "resnets" in name)):
                continue
            key = prefix + flat(name if prefix == "lora_unet_"
                                else "text_model." + name.removeprefix("text_model."))
            diff = torch.randn(m.weight.shape, generator=g) * 0.05
            sd[key + ".diff"] = diff
            m.weight.data += weight * diff
            if m.bias is not None:
                diff_b = torch.randn(m.bias.shape, generator=g) * 0.2
                sd[key + ".diff_b"] = diff_b
                m.bias.data += weight * diff_b
    assert any(k.endswith(".diff_b") for k in sd) and any(k.startswith("lora_te_") for k in sd)
    save_file(sd, str(out_file))


# (name, model, [(lora file, weight[, the UNet's weight])], request)
CASES = [
    ("sd_one", "tiny-sd", [("sd_a.safetensors", 1.0)],
     {"prompt": "a red circle on a blue background", "negative_prompt": "green", "steps": 5,
      "guidance_scale": 7.5, "seed": 4, "batch_count": 1, "width": 32, "height": 32,
      "sampler": "euler"}),
    ("sd_two_weighted", "tiny-sd", [("sd_a.safetensors", 0.6), ("sd_b.safetensors", -0.8)],
     {"prompt": "a yellow star", "steps": 4, "guidance_scale": 5.0, "seed": 9, "batch_count": 2,
      "width": 32, "height": 32, "sampler": "euler"}),
    # A1111's <lora:sd_a:1.3:0.4>: the text encoder's weight, then the UNet's.
    ("sd_te_unet", "tiny-sd", [("sd_a.safetensors", 1.3, 0.4)],
     {"prompt": "a red circle on a blue background", "steps": 4, "guidance_scale": 7.0,
      "seed": 11, "batch_count": 1, "width": 32, "height": 32, "sampler": "euler"}),
    ("sd_peft", "tiny-sd", [("sd_peft.safetensors", 0.9)],
     {"prompt": "a blue square", "negative_prompt": "red", "steps": 4, "guidance_scale": 6.0,
      "seed": 12, "batch_count": 1, "width": 32, "height": 32, "sampler": "euler"}),
    ("sd_loha", "tiny-sd", [("sd_loha.safetensors", 0.8)],
     {"prompt": "a red circle on a blue background", "negative_prompt": "green", "steps": 4,
      "guidance_scale": 7.5, "seed": 6, "batch_count": 1, "width": 32, "height": 32,
      "sampler": "euler"}),
    ("sd_lokr", "tiny-sd", [("sd_lokr.safetensors", 1.3)],
     {"prompt": "a yellow star", "steps": 4, "guidance_scale": 5.0, "seed": 7, "batch_count": 2,
      "width": 32, "height": 32, "sampler": "euler"}),
    ("sd_locon_tucker", "tiny-sd", [("sd_locon_tucker.safetensors", 0.9)],
     {"prompt": "a blue square", "steps": 4, "guidance_scale": 6.0, "seed": 8, "batch_count": 1,
      "width": 32, "height": 32, "sampler": "euler"}),
    ("sd_full", "tiny-sd", [("sd_full.safetensors", 0.7)],
     {"prompt": "a green triangle", "negative_prompt": "red", "steps": 4, "guidance_scale": 7.0,
      "seed": 10, "batch_count": 1, "width": 32, "height": 32, "sampler": "euler"}),
    ("sdxl_one", "tiny-sdxl", [("sdxl_a.safetensors", 0.7)],
     {"prompt": "a green square", "negative_prompt": "blurry", "steps": 4,
      "guidance_scale": 6.0, "seed": 2, "batch_count": 1, "width": 32, "height": 32,
      "sampler": "euler"}),
]


def check_text_encoders_took_it(pipe, file, adapter):
    if file.name == "sd_peft.safetensors":  # diffusers' own format: diffusers' own names
        sd = load_file(str(file))
        for k, v in pipe.text_encoder.named_parameters():
            if f".lora_B.{adapter}." in k:
                assert torch.equal(v.data, sd["text_encoder." + k.replace(f".{adapter}", "")]), k
        return
    """transformers 5 prints a load report calling the text encoder's LoRA tensors "missing"
    (CLIPTextModel lost its text_model level; diffusers renames for that): each text encoder's
    LoRA up weights must be the file's, so that the reference has the text encoder part."""
    sd = load_file(str(file))
    encoders = [("lora_te_" if "lora_te_" in " ".join(sd) else "lora_te1_", pipe.text_encoder)]
    if isinstance(pipe, StableDiffusionXLPipeline):
        encoders.append(("lora_te2_", pipe.text_encoder_2))
    for prefix, te in encoders:
        found = 0
        for k, v in te.named_parameters():
            if f".lora_B.{adapter}." in k:
                base = k.split(".lora_B.")[0].removeprefix("text_model.")
                assert torch.equal(v.data, sd[prefix + flat("text_model." + base) + ".lora_up.weight"]), k
                found += 1
        assert found > 0, prefix


def text_conditioning(pipe, prompt):
    if isinstance(pipe, StableDiffusionXLPipeline):
        return torch.cat([pipe.encode_prompt(prompt, do_classifier_free_guidance=False)[i]
                          .flatten() for i in (0, 2)])
    return pipe.encode_prompt(prompt, "cpu", 1, False)[0].flatten()


def render(pipe, req):
    gens = [torch.Generator("cpu").manual_seed(req["seed"] + i)
            for i in range(req["batch_count"])]
    images = pipe(req["prompt"], negative_prompt=req.get("negative_prompt"),
                  num_inference_steps=req["steps"], guidance_scale=req["guidance_scale"],
                  width=req["width"], height=req["height"], generator=gens,
                  num_images_per_prompt=req["batch_count"]).images
    return torch.from_numpy(np.stack([np.array(i) for i in images]))


def main(out_dir):
    out = Path(out_dir)
    make_sd(out)
    make_sdxl_fixture.make_model(out)
    pipes = {"tiny-sd": StableDiffusionPipeline.from_pretrained(out / "tiny-sd"),
             "tiny-sdxl": StableDiffusionXLPipeline.from_pretrained(out / "tiny-sdxl")}
    sd_t, xl_t = sd_targets(pipes["tiny-sd"]), sdxl_targets(pipes["tiny-sdxl"])
    save_file(kohya_lora(sd_t, rank=4, seed=1, scale=0.3, alpha=2), str(out / "sd_a.safetensors"))
    # Without alpha (= rank: scale 1), rank 2.
    save_file(kohya_lora(sd_t, rank=2, seed=2, scale=0.2, alpha=None),
              str(out / "sd_b.safetensors"))
    save_file(kohya_lora(xl_t, rank=4, seed=3, scale=0.3, alpha=8),
              str(out / "sdxl_a.safetensors"))
    peft_lora(StableDiffusionPipeline.from_pretrained(out / "tiny-sd"), out / "sd_peft.safetensors")
    expected, listed = {}, []
    for name, model, loras, req in CASES:
        pipe = pipes[model]
        if name in ("sd_loha", "sd_lokr", "sd_locon_tucker", "sd_full"):
            # LyCORIS files: the change made in a pipeline of its own.
            pipe = StableDiffusionPipeline.from_pretrained(out / model)
            pipe.set_progress_bar_config(disable=True)
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
            expected[name + ".nolora"] = render(pipe, req)
            before = text_conditioning(pipe, req["prompt"])
            file, weight = out / loras[0][0], loras[0][1]
            if name == "sd_loha":
                lycoris_file(pipe, "loha", seed=21, scale=0.45, weight=weight, out_file=file)
            elif name == "sd_lokr":
                lycoris_file(pipe, "lokr", seed=22, scale=0.5, weight=weight, out_file=file)
            elif name == "sd_locon_tucker":
                locon_tucker_file(pipe, seed=23, weight=weight, out_file=file)
            else:
                full_file(pipe, seed=24, weight=weight, out_file=file)
            if name != "sd_locon_tucker":  # (the UNet alone)
                assert (text_conditioning(pipe, req["prompt"]) - before).abs().max() > 1e-2, name
            expected[name] = render(pipe, req)
            assert (expected[name].int() - expected[name + ".nolora"].int()).abs().max() > 20, name
            listed.append({"name": name, "model": model, "loras": loras, "request": req})
            continue
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        expected[name + ".nolora"] = render(pipe, req)
        before = text_conditioning(pipe, req["prompt"])
        adapters = []
        for i, (file, *_) in enumerate(loras):
            pipe.load_lora_weights(str(out / file), adapter_name=f"l{i}")
            check_text_encoders_took_it(pipe, out / file, f"l{i}")
            adapters.append(f"l{i}")
        pipe.set_adapters(adapters, adapter_weights=[
            w[0] if len(w) == 1 else {"unet": w[1], "text_encoder": w[0]}
            for _, *w in loras])
        # Every text encoder took its part of the LoRA (the conditioning moved), and the
        # images changed: the test means something.
        after = text_conditioning(pipe, req["prompt"])
        assert (after - before).abs().max() > 1e-2, name
        expected[name] = render(pipe, req)
        pipe.unload_lora_weights()
        assert (expected[name].int() - expected[name + ".nolora"].int()).abs().max() > 20, name
        listed.append({"name": name, "model": model, "loras": loras, "request": req})
    save_file(expected, str(out / "expected.safetensors"))
    (out / "cases.json").write_text(json.dumps(listed, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
