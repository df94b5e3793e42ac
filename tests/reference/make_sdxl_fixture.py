"""A tiny random SDXL pipeline saved by diffusers (two CLIP text encoders, the second with a
projection and the tokenizer padding with "!", a UNet with SDXL's added size conditioning and
two transformer blocks in its second level, SDXL's Euler scheduler), the UNet's output for one
input, and the images diffusers' StableDiffusionXLPipeline / StableDiffusionXLImg2ImgPipeline
make, each image from a CPU generator seeded seed + i.

usage: make_sdxl_fixture.py OUT_DIR UNET_CONFIG TEXT_2_CONFIG
UNET_CONFIG, TEXT_2_CONFIG: SDXL 1.0's UNet and second text encoder configs, which SD Studio
opens SDXL single files with (models/sdxl-config); OUT_DIR/sdxl_names.json maps each tensor name
of those models to its original name ("unet": name -> key; "text_encoder_2": name -> [OpenCLIP
key, part of 3, -1 for the whole tensor or -2 for its transpose]), checked by diffusers'
converters.
OUT_DIR/tiny-sdxl (the model), OUT_DIR/tiny-sdxl-nozeros (the same with
force_zeros_for_empty_prompt false: no negative prompt means that of ""), OUT_DIR/tiny-sdxl-refiner
(a refiner as SDXL 1.0's: the second text encoder alone, and a UNet conditioned on an aesthetic
score in place of the target size: requires_aesthetics_score),
OUT_DIR/unet.safetensors (sample, timestep, context, text_embeds, time_ids, out; and
prompt_embeds, pooled: encode_prompt's for PROMPT and clip skip 0, prompt_embeds_skip1 for 1),
OUT_DIR/cases.json ([{"name", "model", "request"}]), OUT_DIR/expected.safetensors ("init" and
"mask" [H, W, 3] uint8, and per case NAME [B, H, W, 3] uint8; inpainting cases as
StableDiffusionXLInpaintPipeline makes each image alone with seed + i), OUT_DIR/tiny-sdxl.safetensors (the model
as one single-file checkpoint in SDXL's original layout, original_checkpoint.py, which diffusers'
StableDiffusionXLPipeline.from_single_file reads as the folder: checked here).
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint,
                                                 convert_open_clip_checkpoint)
from PIL import Image
from safetensors.torch import save_file
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                          CLIPTokenizer)

import make_clip_vocab
import make_inpaint_fixture
import make_pipeline_fixture
import original_checkpoint

SAMPLERS = {"euler": EulerDiscreteScheduler, "euler_a": EulerAncestralDiscreteScheduler,
            "dpmpp_2m": DPMSolverMultistepScheduler, "ddim": DDIMScheduler}


def make_model(out):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 24,
        cross_attention_dim=32 + 40, norm_num_groups=16)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=32, sample_size=32, scaling_factor=0.13025)
    common = dict(intermediate_size=37, num_attention_heads=4, vocab_size=49408,
                  max_position_embeddings=77, hidden_act="gelu", bos_token_id=0, pad_token_id=1)
    # SDXL's configs carry transformers' old eos_token_id 2 (the end token is then the highest
    # id); the first encoder here has the real one, so both rules are exercised.
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, num_hidden_layers=3,
                                                eos_token_id=49407, **common))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=40, num_hidden_layers=4, projection_dim=24, eos_token_id=2, **common))
    tok_dir = out / "_tokenizer_src"
    make_clip_vocab.main(str(tok_dir))
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77, pad_token="!")
    shutil.rmtree(tok_dir)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
        interpolation_type="linear", use_karras_sigmas=False, prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder,
                                     text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(out / "tiny-sdxl", safe_serialization=True)
    nozeros = out / "tiny-sdxl-nozeros"
    shutil.copytree(out / "tiny-sdxl", nozeros)
    index = json.loads((nozeros / "model_index.json").read_text())
    index["force_zeros_for_empty_prompt"] = False
    (nozeros / "model_index.json").write_text(json.dumps(index, indent=1))
    # The refiner: SDXL 1.0 refiner's layout (no text_encoder and tokenizer; cross-attention to
    # the second encoder alone; 5 size ids with the aesthetic score), its own weights.
    torch.manual_seed(1)
    refiner_unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=5 * 8 + 24,
        cross_attention_dim=40, norm_num_groups=16)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None,
        tokenizer_2=tokenizer_2, unet=refiner_unet, scheduler=scheduler,
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    refiner.save_pretrained(out / "tiny-sdxl-refiner", safe_serialization=True)


CASES = [
    ("euler_neg_b2_wide", "tiny-sdxl",
     {"prompt": "a red circle on a blue background", "negative_prompt": "green, blurry",
      "steps": 6, "guidance_scale": 5.0, "seed": 11, "batch_count": 2, "width": 48,
      "height": 32, "sampler": "euler"}),
    ("dpmpp_2m_no_negative_zeros", "tiny-sdxl",
     {"prompt": "a yellow star", "steps": 5, "guidance_scale": 7.5, "seed": 3, "batch_count": 1,
      "width": 32, "height": 40, "sampler": "dpmpp_2m"}),
    ("dpmpp_2m_no_negative_empty_prompt", "tiny-sdxl-nozeros",
     {"prompt": "a yellow star", "steps": 5, "guidance_scale": 7.5, "seed": 3, "batch_count": 1,
      "width": 32, "height": 40, "sampler": "dpmpp_2m"}),
    ("euler_a_g1", "tiny-sdxl",
     {"prompt": "a green square", "steps": 4, "guidance_scale": 1.0, "seed": 8, "batch_count": 2,
      "width": 32, "height": 32, "sampler": "euler_a"}),
    ("ddim_clip_skip1_neg", "tiny-sdxl",
     {"prompt": "two small circles", "negative_prompt": "red", "steps": 5, "guidance_scale": 4.0,
      "seed": 21, "batch_count": 1, "width": 32, "height": 32, "sampler": "ddim",
      "clip_skip": 1}),
    ("img_euler_s0.6_neg_b2", "tiny-sdxl",
     {"prompt": "a blue disc", "negative_prompt": "dark", "steps": 8, "guidance_scale": 6.0,
      "seed": 5, "batch_count": 2, "width": 32, "height": 32, "sampler": "euler",
      "strength": 0.6, "init_image": "init.png"}),
    ("img_dpmpp_2m_s0.9_no_negative", "tiny-sdxl",
     {"prompt": "a blue disc", "steps": 6, "guidance_scale": 3.0, "seed": 9, "batch_count": 1,
      "width": 32, "height": 32, "sampler": "dpmpp_2m", "strength": 0.9,
      "init_image": "init.png"}),
    ("inpaint_euler_s1_neg_b2", "tiny-sdxl",
     {"prompt": "a blue disc", "negative_prompt": "dark", "steps": 6, "guidance_scale": 5.0,
      "seed": 12, "batch_count": 2, "width": 32, "height": 32, "sampler": "euler",
      "strength": 1.0, "init_image": "init.png", "mask_image": "mask.png"}),
    ("inpaint_euler_a_s0.7_no_negative_keep_blur2", "tiny-sdxl",
     {"prompt": "a blue disc", "steps": 6, "guidance_scale": 3.0, "seed": 4, "batch_count": 1,
      "width": 32, "height": 32, "sampler": "euler_a", "strength": 0.7,
      "init_image": "init.png", "mask_image": "mask.png", "keep_unmasked": True,
      "mask_blur": 2}),
    # The refiner (img2img and inpainting; its aesthetic scores as given or diffusers' 6 and
    # 2.5).
    ("refiner_img_euler_s0.3_neg_b2", "tiny-sdxl-refiner",
     {"prompt": "a blue disc", "negative_prompt": "dark", "steps": 10, "guidance_scale": 5.0,
      "seed": 6, "batch_count": 2, "width": 32, "height": 32, "sampler": "euler",
      "strength": 0.3, "init_image": "init.png"}),
    ("refiner_img_dpmpp_2m_s0.8_no_negative_aesthetic", "tiny-sdxl-refiner",
     {"prompt": "a blue disc", "steps": 6, "guidance_scale": 4.0, "seed": 2, "batch_count": 1,
      "width": 32, "height": 32, "sampler": "dpmpp_2m", "strength": 0.8,
      "init_image": "init.png", "aesthetic_score": 8.5, "negative_aesthetic_score": 1.0}),
    ("refiner_img_euler_a_g1", "tiny-sdxl-refiner",
     {"prompt": "a blue disc", "steps": 5, "guidance_scale": 1.0, "seed": 13, "batch_count": 1,
      "width": 32, "height": 32, "sampler": "euler_a", "strength": 0.5,
      "init_image": "init.png"}),
    ("refiner_inpaint_euler_s0.75_neg", "tiny-sdxl-refiner",
     {"prompt": "a blue disc", "negative_prompt": "dark", "steps": 6, "guidance_scale": 5.0,
      "seed": 14, "batch_count": 1, "width": 32, "height": 32, "sampler": "euler",
      "strength": 0.75, "init_image": "init.png", "mask_image": "mask.png"}),
    # Base and refiner in one generation, as diffusers' "ensemble of expert denoisers": the base
    # with denoising_end = refiner_switch_at and latents out, the refiner from there with
    # denoising_start (its own scheduler, the same generators).
    ("ensemble_euler_0.8_neg_b2", "tiny-sdxl",
     {"prompt": "a red circle", "negative_prompt": "green", "steps": 10, "guidance_scale": 5.0,
      "seed": 31, "batch_count": 2, "width": 32, "height": 32, "sampler": "euler",
      "refiner": "tiny-sdxl-refiner", "refiner_switch_at": 0.8}),
    ("ensemble_dpmpp_2m_0.6_aesthetic", "tiny-sdxl",
     {"prompt": "a red circle", "steps": 7, "guidance_scale": 4.0, "seed": 32,
      "batch_count": 1, "width": 32, "height": 40, "sampler": "dpmpp_2m",
      "refiner": "tiny-sdxl-refiner", "refiner_switch_at": 0.6, "aesthetic_score": 7.5}),
    ("ensemble_euler_a_0.5_g1", "tiny-sdxl",
     {"prompt": "a red circle", "steps": 6, "guidance_scale": 1.0, "seed": 33,
      "batch_count": 1, "width": 32, "height": 32, "sampler": "euler_a",
      "refiner": "tiny-sdxl-refiner", "refiner_switch_at": 0.5}),
]


PROMPT = "a red fox in the snow, 4k"


def unet_check(out, pipe):
    unet = pipe.unet
    g = torch.Generator("cpu").manual_seed(1)
    sample = torch.randn(2, 4, 6, 4, generator=g)
    context = torch.randn(2, 77, 72, generator=g)
    text_embeds = torch.randn(2, 24, generator=g)
    time_ids = torch.tensor([[48.0, 32.0, 0.0, 0.0, 48.0, 32.0], [1024.0, 768.0, 8.0, 16.0,
                                                                  1024.0, 1024.0]])
    timestep = torch.tensor([601.0, 33.0])
    with torch.no_grad():
        y = unet(sample, timestep, context,
                 added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    embeds_skip1 = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False, clip_skip=1)[0]
    save_file({"sample": sample, "timestep": timestep, "context": context,
               "text_embeds": text_embeds, "time_ids": time_ids, "out": y,
               "prompt_embeds": embeds, "pooled": pooled, "prompt_embeds_skip1": embeds_skip1},
              str(out / "unet.safetensors"))


def single_file(out):
    """The folder as one original-layout file; diffusers' own single-file loader must give every
    tensor of every component back."""
    file = out / "tiny-sdxl.safetensors"
    original_checkpoint.write(out / "tiny-sdxl", file)
    folder = StableDiffusionXLPipeline.from_pretrained(out / "tiny-sdxl")
    single = StableDiffusionXLPipeline.from_single_file(str(file), config=str(out / "tiny-sdxl"))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want = getattr(folder, name).state_dict()
        got = getattr(single, name).state_dict()
        assert sorted(got) == sorted(want), (name, sorted(set(got) ^ set(want))[:5])
        for k, v in want.items():
            assert torch.equal(got[k], v), (name, k)
    assert single.tokenizer_2.pad_token == "!"


def sdxl_names(unet_config, text_2_config):
    """Our original names for every tensor of SDXL 1.0's UNet and second text encoder, each
    tensor marked with its own number, run back through diffusers' converters: every tensor must
    come back, each with its own mark."""
    cfg = json.loads(Path(unet_config).read_text())
    with torch.device("meta"):  # names only, no memory
        unet = UNet2DConditionModel.from_config(cfg)
    names = list(unet.state_dict())
    unet_map = {n: original_checkpoint.unet_key(n, cfg) for n in names}
    marked = {"model.diffusion_model." + o: torch.tensor([float(i)])
              for i, o in enumerate(unet_map.values())}
    back = convert_ldm_unet_checkpoint(marked, dict(unet.config))
    assert sorted(back) == sorted(names), sorted(set(back) ^ set(names))[:5]
    for i, n in enumerate(names):
        assert back[n].flatten()[0].item() == i, n

    text_cfg = CLIPTextConfig.from_json_file(text_2_config)
    with torch.device("meta"):
        text = CLIPTextModelWithProjection(text_cfg)
    names = [n for n in text.state_dict() if not n.endswith("position_ids")]
    text_map = {n: original_checkpoint.openclip_key(n.removeprefix("text_model.")) for n in names}
    hidden, prefix = text_cfg.hidden_size, "conditioner.embedders.1.model."
    marked = {}
    for i, (name, (key, part)) in enumerate(text_map.items()):
        if part is None:
            marked[prefix + key] = torch.tensor([float(i)])
        elif part == "T":  # [hidden, projection]: diffusers splits q/k/v by its first size
            marked[prefix + key] = torch.full((hidden, 1), float(i))
        else:
            fused = marked.setdefault(prefix + key, torch.zeros(3 * hidden, 1))
            fused[part * hidden:(part + 1) * hidden] = float(i)
    back = convert_open_clip_checkpoint(text, marked, prefix=prefix)
    assert sorted(back) == sorted(names), sorted(set(back) ^ set(names))[:5]
    for i, n in enumerate(names):
        assert torch.all(back[n] == i), n
    code = {None: -1, "T": -2}
    return {"unet": unet_map,
            "text_encoder_2": {n: [k, code.get(p, p)] for n, (k, p) in text_map.items()}}


def main(out_dir, unet_config, text_2_config):
    out = Path(out_dir)
    names = sdxl_names(unet_config, text_2_config)
    (out / "sdxl_names.json").write_text(json.dumps(names, indent=0))
    make_model(out)
    single_file(out)
    init = make_pipeline_fixture.init_image(32, 32)
    mask = make_inpaint_fixture.mask_image(32, 32)
    tensors = {"init": torch.from_numpy(init), "mask": torch.from_numpy(mask)}
    listed = []
    pipes = {}
    for name, model, req in CASES:
        if model not in pipes:
            if model.endswith("refiner"):  # no text-to-image pipeline for a refiner
                pipe = None
                img2img = StableDiffusionXLImg2ImgPipeline.from_pretrained(out / model)
                assert img2img.config.requires_aesthetics_score
                inpaint = StableDiffusionXLInpaintPipeline(**img2img.components,
                                                           requires_aesthetics_score=True)
            else:
                pipe = StableDiffusionXLPipeline.from_pretrained(out / model)
                pipe.set_progress_bar_config(disable=True)
                img2img = StableDiffusionXLImg2ImgPipeline(**pipe.components)
                inpaint = StableDiffusionXLInpaintPipeline(**pipe.components)
            img2img.set_progress_bar_config(disable=True)
            inpaint.set_progress_bar_config(disable=True)
            pipes[model] = (pipe, img2img, inpaint, img2img.scheduler.config)
        pipe, img2img, inpaint, config = pipes[model]
        scheduler = SAMPLERS[req["sampler"]].from_config(config)
        b = req["batch_count"]
        gens = [torch.Generator("cpu").manual_seed(req["seed"] + i) for i in range(b)]
        kwargs = dict(prompt=req["prompt"], negative_prompt=req.get("negative_prompt") or None,
                      num_inference_steps=req["steps"], guidance_scale=req["guidance_scale"],
                      num_images_per_prompt=b, generator=gens, output_type="pil",
                      clip_skip=req.get("clip_skip") or None)
        for key in ("aesthetic_score", "negative_aesthetic_score"):
            if key in req:
                kwargs[key] = req[key]
        if "mask_image" in req:
            inpaint.scheduler = scheduler
            m = Image.fromarray(mask)
            if req.get("mask_blur"):
                m = inpaint.mask_processor.blur(m, blur_factor=req["mask_blur"])
            images = []
            for i in range(b):  # each image alone with its seed
                kwargs.update(num_images_per_prompt=1, generator=[gens[i]])
                images += inpaint(image=Image.fromarray(init), mask_image=m,
                                  strength=req["strength"], height=req["height"],
                                  width=req["width"], **kwargs).images
            if req.get("keep_unmasked"):
                images = [inpaint.image_processor.apply_overlay(m, Image.fromarray(init), i)
                          for i in images]
        elif "refiner" in req:
            pipe.scheduler = scheduler
            refiner = pipes[req["refiner"]][1]
            refiner.scheduler = SAMPLERS[req["sampler"]].from_config(refiner.scheduler.config)
            scores = {k: kwargs.pop(k) for k in ("aesthetic_score", "negative_aesthetic_score")
                      if k in kwargs}
            base_kwargs = dict(kwargs, output_type="latent")
            latents = pipe(height=req["height"], width=req["width"],
                           denoising_end=req["refiner_switch_at"], **base_kwargs).images
            images = refiner(image=latents, denoising_start=req["refiner_switch_at"],
                             **kwargs, **scores).images
        elif "init_image" in req:
            img2img.scheduler = scheduler
            images = img2img(image=Image.fromarray(init), strength=req["strength"],
                             **kwargs).images
        else:
            pipe.scheduler = scheduler
            images = pipe(height=req["height"], width=req["width"], **kwargs).images
        assert images[0].size == (req["width"], req["height"])
        tensors[name] = torch.from_numpy(np.stack([np.array(i) for i in images]))
        listed.append({"name": name, "model": model, "request": req})
    unet_check(out, pipes["tiny-sdxl"][0])
    (out / "cases.json").write_text(json.dumps(listed, indent=1))
    save_file(tensors, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
