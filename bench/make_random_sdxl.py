"""A full-size SDXL base pipeline with random weights (SDXL 1.0's shapes; speed does not depend
on the values), saved by diffusers in fp16, for the benchmarks and the by-hand parity check.

usage: make_random_sdxl.py OUT_DIR TOKENIZER_DIR
TOKENIZER_DIR: a CLIP tokenizer folder (e.g. models/demo/tokenizer); SDXL's second tokenizer is
the same vocabulary padding with "!".
"""
import sys

import torch
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


def main(out, tokenizer_dir):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256,
        transformer_layers_per_block=(1, 2, 10), projection_class_embeddings_input_dim=2816,
        cross_attention_dim=2048, norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=2, sample_size=1024, scaling_factor=0.13025,
        force_upcast=True)
    ids = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)  # as SDXL's configs have them
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        hidden_act="quick_gelu", projection_dim=768, **ids))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        hidden_act="gelu", projection_dim=1280, **ids))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77),
        tokenizer_2=CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77,
                                                  pad_token="!"),
        unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
