"""Seeded random UNet2DConditionModel and AutoencoderKL saved by diffusers, with inputs and the
reference's outputs.

usage: make_unet_vae_fixture.py OUT_DIR tiny|full
OUT_DIR/unet{,_sd2}/ and OUT_DIR/vae/ (config.json + diffusion_pytorch_model.safetensors) and
OUT_DIR/expected.safetensors:
  unet{,_sd2}_sample, _t, _context, _out   (tiny: also _odd_* at a size not divisible by 4)
  unet_lcm_*, unet_lcm_guidance: a guidance-distilled UNet (time_cond_proj_dim, odd) given the
  guidance w of each row as its timestep_cond; unet_lcm_bare_*: the same UNet given none
  vae_image, vae_mean, vae_logvar, vae_latents, vae_decoded
"""
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file

TINY_UNET = dict(block_out_channels=(32, 64, 64), layers_per_block=1, sample_size=16,
                 in_channels=4, out_channels=4, cross_attention_dim=24,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 attention_head_dim=(2, 4, 4), norm_num_groups=16, flip_sin_to_cos=False,
                 freq_shift=1)
# The SD 2.x knobs: linear projections, upcast attention, heads given per block, 2 layers.
TINY_UNET_SD2 = dict(TINY_UNET, use_linear_projection=True, upcast_attention=True,
                     attention_head_dim=(4, 8, 8), layers_per_block=2, flip_sin_to_cos=True,
                     freq_shift=0, transformer_layers_per_block=2)
# Latent consistency models' UNets: a guidance embedding (an odd width: its zero pad too).
TINY_UNET_LCM = dict(TINY_UNET, time_cond_proj_dim=31)
TINY_VAE = dict(block_out_channels=(32, 64), layers_per_block=1, in_channels=3, out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=16)
FULL_UNET = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64,
                 cross_attention_dim=768, attention_head_dim=8)  # the rest: SD 1.x defaults
FULL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)


def perturb(model):
    # Random init leaves biases at zero and norms at one; perturb them so they are tested too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def unet_case(out, tensors, name, config, hw, ctx_dim, batch=2):
    unet = perturb(UNet2DConditionModel(**config))
    unet.save_pretrained(out / name, safe_serialization=True)
    g = torch.Generator().manual_seed(5)
    cases = [("", hw)]
    if len(hw) == 3:  # a second, odd size
        cases = [("", hw[:2]), ("_odd", (hw[2], hw[2] + 6))]
    guided = config.get("time_cond_proj_dim") is not None
    if guided:
        cases.append(("_bare", hw[:2]))
    for suffix, (h, w) in cases:
        sample = torch.randn(batch, 4, h, w, generator=g)
        t = torch.tensor([999.0, 10.5][:batch])
        ctx = torch.randn(batch, 7 if ctx_dim < 100 else 77, ctx_dim, generator=g)
        cond = None
        if guided and suffix != "_bare":
            # w, as the pipelines pass it (guidance scale - 1), embedded by diffusers itself
            wv = torch.tensor([7.5 - 1, 2.0 - 1][:batch])
            cond = StableDiffusionPipeline.get_guidance_scale_embedding(
                None, wv, embedding_dim=config["time_cond_proj_dim"])
            tensors[f"{name}{suffix}_guidance"] = wv
        with torch.no_grad():
            o = unet(sample, t, encoder_hidden_states=ctx, timestep_cond=cond).sample
        tensors.update({f"{name}{suffix}_sample": sample, f"{name}{suffix}_t": t,
                        f"{name}{suffix}_context": ctx, f"{name}{suffix}_out": o.contiguous()})


def vae_case(out, tensors, config, size):
    vae = perturb(AutoencoderKL(**config))
    vae.save_pretrained(out / "vae", safe_serialization=True)
    g = torch.Generator().manual_seed(6)
    image = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    latents = torch.randn(2, 4, size // 8, size // 8, generator=g)
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
        decoded = vae.decode(latents).sample
    tensors.update({"vae_image": image, "vae_mean": dist.mean.contiguous(),
                    "vae_logvar": dist.logvar.contiguous(), "vae_latents": latents,
                    "vae_decoded": decoded.contiguous()})


def main(out_dir, size):
    torch.manual_seed(0)
    out = Path(out_dir)
    tensors = {}
    if size == "tiny":
        unet_case(out, tensors, "unet", TINY_UNET, (16, 16, 10), 24)
        unet_case(out, tensors, "unet_sd2", TINY_UNET_SD2, (8, 12), 24)
        unet_case(out, tensors, "unet_lcm", TINY_UNET_LCM, (8, 12), 24)
        vae_case(out, tensors, TINY_VAE, 32)
    else:
        unet_case(out, tensors, "unet", FULL_UNET, (32, 32), 768)
        vae_case(out, tensors, FULL_VAE, 64)
    save_file(tensors, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
