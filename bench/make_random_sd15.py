"""A full-size SD 1.5 pipeline with random weights (speed does not depend on the values), in
diffusers layout, for the benchmarks.

usage: make_random_sd15.py OUT_DIR [--tokenizer DIR]
--tokenizer copies vocab.json + merges.txt from DIR (machines without open-clip-torch);
otherwise they are derived from open-clip-torch's BPE file.
"""
import argparse
import shutil
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--tokenizer")
    a = p.parse_args()
    out = Path(a.out)
    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).save_pretrained(
        out / "unet", safe_serialization=True)
    AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  sample_size=512).save_pretrained(out / "vae", safe_serialization=True)
    CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, max_position_embeddings=77,
                                 hidden_act="quick_gelu", bos_token_id=49406,
                                 eos_token_id=49407)).save_pretrained(out / "text_encoder",
                                                                      safe_serialization=True)
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1).save_pretrained(out / "scheduler")
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    if a.tokenizer:
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(Path(a.tokenizer) / f, out / "tokenizer" / f)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))
        import make_clip_vocab
        make_clip_vocab.main(str(out / "tokenizer"))
    (out / "tokenizer" / "tokenizer_config.json").write_text(
        '{"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}')
    (out / "model_index.json").write_text("""{
  "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
  "feature_extractor": [null, null], "safety_checker": [null, null],
  "requires_safety_checker": false,
  "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
  "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"]
}""")


if __name__ == "__main__":
    main()
