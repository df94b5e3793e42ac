"""A seeded random CLIPTextModel saved as a diffusers text_encoder component, with inputs and
the reference's outputs.

usage: make_text_encoder_fixture.py OUT_DIR tiny|full
Writes OUT_DIR/text_encoder/{config.json, model.safetensors, model.fp16.safetensors} and
OUT_DIR/expected.safetensors with:
  ids            [3, 77] int64 (padded prompts, including one of 77 tokens)
  out_skip{K}    [3, 77, hidden] fp32: the fp32 model, diffusers' clip_skip K (0 = none)
  out_fp16w      [3, 77, hidden] fp32: the model with fp16-rounded weights, run in fp32
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

CONFIGS = {
    "tiny": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                 vocab_size=1000, max_position_embeddings=77, hidden_act="quick_gelu"),
    "full": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, vocab_size=49408, max_position_embeddings=77,
                 hidden_act="quick_gelu"),
}


def encode(model, ids, clip_skip):
    # As diffusers' StableDiffusionPipeline.encode_prompt does it.
    with torch.no_grad():
        if clip_skip == 0:
            return model(ids)[0]
        out = model(ids, output_hidden_states=True)
        h = out.hidden_states[-(clip_skip + 1)]
        # transformers 5 dropped the text_model level (diffusers 0.42 still reaches for it).
        inner = getattr(model, "text_model", model)
        return inner.final_layer_norm(h)


def main(out_dir, size):
    torch.manual_seed(0)
    out = Path(out_dir)
    cfg = CLIPTextConfig(**CONFIGS[size], layer_norm_eps=1e-5, bos_token_id=49406 % CONFIGS[size]["vocab_size"],
                         eos_token_id=49407 % CONFIGS[size]["vocab_size"], pad_token_id=1)
    model = CLIPTextModel(cfg).eval()
    # Random init leaves biases at zero and norms at one; perturb them so they are tested too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    # fp16 variant first, so that config.json is the fp32 model's.
    model_fp16w = CLIPTextModel(cfg).eval()
    model_fp16w.load_state_dict(model.state_dict())
    model_fp16w.to(torch.float16).save_pretrained(out / "text_encoder", safe_serialization=True,
                                                  variant="fp16")
    model_fp16w.to(torch.float32)  # weights now fp16-rounded
    model.save_pretrained(out / "text_encoder", safe_serialization=True)
    model = CLIPTextModel.from_pretrained(out / "text_encoder", dtype=torch.float32).eval()

    v = cfg.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.full((3, 77), v - 1, dtype=torch.int64)  # the end id pads
    ids[:, 0] = v - 2  # start
    ids[0, 1:6] = torch.randint(0, v - 2, (5,), generator=g)
    ids[0, 6] = v - 1
    ids[1, 1:40] = torch.randint(0, v - 2, (39,), generator=g)
    ids[1, 40] = v - 1
    ids[2, 1:76] = torch.randint(0, v - 2, (75,), generator=g)
    tensors = {"ids": ids}
    for k in (0, 1, 2):
        tensors[f"out_skip{k}"] = encode(model, ids, k).contiguous()
    tensors["out_fp16w"] = encode(model_fp16w.eval(), ids, 0).contiguous()
    save_file(tensors, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
