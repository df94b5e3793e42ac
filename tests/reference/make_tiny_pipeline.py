"""A tiny random Stable Diffusion 1.x pipeline saved by diffusers (safetensors), with the real
SD 1.x tokenizer files.

usage: make_tiny_pipeline.py OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import make_clip_vocab


def save_pipeline(out, unet, vae, text_layers, sd2=False):
    """unet and vae with a random tiny CLIP text encoder (hidden 32), the real SD 1.x tokenizer
    and SD 1.5's PNDM settings, saved by diffusers to the folder `out`. sd2: as SD 2.1 has them
    instead, a gelu text encoder, the tokenizer padding with "!" and DDIM with v-prediction."""
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=text_layers,
        num_attention_heads=4, vocab_size=49408, max_position_embeddings=77,
        hidden_act="gelu" if sd2 else "quick_gelu", bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407))
    tok_dir = Path(out).parent / "_tokenizer_src"
    make_clip_vocab.main(str(tok_dir))
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77,
                                              **({"pad_token": "!"} if sd2 else {}))
    shutil.rmtree(tok_dir)
    settings = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    num_train_timesteps=1000, set_alpha_to_one=False, steps_offset=1)
    if sd2:
        scheduler = DDIMScheduler(**settings, clip_sample=False, prediction_type="v_prediction")
    else:
        scheduler = PNDMScheduler(**settings, skip_prk_steps=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)


def main(out_dir):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=32, sample_size=32)
    save_pipeline(Path(out_dir) / "tiny-sd", unet, vae, text_layers=3)


if __name__ == "__main__":
    main(sys.argv[1])
