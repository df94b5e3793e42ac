"""diffusers' ControlNetModel and its SD pipelines (StableDiffusionControlNetPipeline,
StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetInpaintPipeline) on the tiny random SD model and two tiny random
ControlNets made from its UNet, every weight random (diffusers starts the output convolutions at
zero, which would make a ControlNet do nothing).

usage: make_controlnet_fixture.py OUT_DIR
OUT_DIR/tiny-sd (make_tiny_pipeline), OUT_DIR/tiny-sd-inpaint (its 9-channel inpainting twin),
OUT_DIR/tiny-sdxl and tiny-sdxl-refiner (make_sdxl_fixture's), OUT_DIR/tiny-controlnet{,-b} (ControlNetModel folders;
-b with other conditioning channels and BGR channel order), OUT_DIR/tiny-controlnet-xl (for
tiny-sdxl; its cases run the SDXL ControlNet pipelines), OUT_DIR/{control,control_big,init,mask}.png (also in expected.safetensors as
[H, W, 3] uint8), OUT_DIR/cases.json ([{"name", "model", "request": {our request JSON}}]),
OUT_DIR/expected.safetensors:
  the ControlNet alone: "net_sample" [2, 4, 8, 8], "net_t" [], "net_context" [2, 77, 32],
  "net_cond" [2, 3, 16, 16]; "net_down{k}" and "net_mid" at scale 0.7, "guess_down{k}" and
  "guess_mid" in guess mode at scale 0.7 (tiny-controlnet); "unet_out" [2, 4, 8, 8]: the UNet
  with the scale-0.7 residuals added;
  "x8_cond" [2, 3, 64, 64], "x8_down{k}", "x8_mid": tiny-controlnet-x8 (conditioning embedding
  16, 32, 96, 256) at scale 1, as diffusers loads it from the single file; "x8_pooled_down{k}",
  "x8_pooled_mid": the same with global_pool_conditions (shuffle) at 0.8 in guess mode;
  per case NAME [B, H, W, 3] uint8.
OUT_DIR/tiny-controlnet-x8 (a folder), tiny-controlnet-x8.safetensors (original layout under
control_model.), tiny-controlnet-x8.pth (original layout, torch.save),
tiny-controlnet-x8-diffusers.safetensors (diffusers' names); the same three files of
tiny-controlnet.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import (ControlNetModel, StableDiffusionControlNetImg2ImgPipeline,
                       StableDiffusionXLImg2ImgPipeline,
                       StableDiffusionControlNetInpaintPipeline, StableDiffusionControlNetPipeline,
                       StableDiffusionInpaintPipeline,
                       StableDiffusionXLControlNetImg2ImgPipeline,
                       StableDiffusionXLControlNetInpaintPipeline,
                       StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from PIL import Image
from safetensors.torch import save_file

import make_sdxl_fixture
import make_tiny_pipeline
import original_checkpoint
from make_inpaint_fixture import blob_mask
from make_pipeline_fixture import SAMPLERS, init_image


def original_controlnet_key(name, cfg):
    """A ControlNetModel tensor's name in the original ControlNet layout (lllyasviel's
    cldm.ControlNet, what A1111's ControlNet extension loads): the UNet's encoder as in the
    original UNet, input_hint_block.N (a Sequential of convolutions and SiLUs: the
    convolutions at the even indices), zero_convs.K.0, middle_block_out.0."""
    p = name.split(".")
    if p[0] == "controlnet_cond_embedding":
        blocks = 2 * (len(cfg["conditioning_embedding_out_channels"]) - 1)
        if p[1] == "blocks":
            return f"input_hint_block.{2 * (int(p[2]) + 1)}.{p[3]}"
        return f"input_hint_block.{0 if p[1] == 'conv_in' else 2 * (blocks + 1)}.{p[2]}"
    if p[0] == "controlnet_down_blocks":
        return f"zero_convs.{p[1]}.0.{p[2]}"
    if p[0] == "controlnet_mid_block":
        return f"middle_block_out.0.{p[1]}"
    return original_checkpoint.unet_key(name, cfg)


def single_files(net, out, stem, diffusers_reads=True):
    """`net` as single files: STEM.safetensors in the original layout under control_model.
    (as the first ControlNet releases), STEM.pth in the original layout without a prefix
    (torch.save, as ControlNet 1.1's), STEM-diffusers.safetensors (diffusers' names). diffusers'
    own single-file loader must read the original ones back to the same weights
    (`diffusers_reads`; its converter knows only the usual conditioning embedding, 16, 32, 96,
    256)."""
    cfg = dict(net.config)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    original = {original_controlnet_key(k, cfg): v for k, v in state.items()}
    save_file({"control_model." + k: v for k, v in original.items()},
              str(out / f"{stem}.safetensors"))
    torch.save(original, out / f"{stem}.pth")
    save_file(state, str(out / f"{stem}-diffusers.safetensors"))
    if not diffusers_reads:
        return net
    for file in (f"{stem}.safetensors", f"{stem}.pth"):
        back = ControlNetModel.from_single_file(str(out / file), config=str(out / stem))
        got = back.state_dict()
        assert set(got) == set(state), file
        assert all(torch.equal(got[k], v) for k, v in state.items()), file
    return ControlNetModel.from_single_file(str(out / f"{stem}.safetensors"), config=str(out / stem))


def random_controlnet(unet, seed, **kwargs):
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, load_weights_from_unet=False, **kwargs)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                "controlnet_cond_embedding.conv_out")):
                p.normal_(0, 0.2 if p.dim() > 1 else 0.05)
    return net


def control_image(w, h):
    """A white scribble on black: a ring and a diagonal stroke, with a grey edge."""
    y, x = np.mgrid[0:h, 0:w]
    r = np.sqrt((x - w * 0.45) ** 2 + (y - h * 0.5) ** 2)
    img = np.zeros((h, w, 3), np.uint8)
    img[np.abs(r - min(w, h) * 0.3) < 1.5] = 255
    img[np.abs(x - y * w / h) < 1.2] = (255, 200, 120)
    img[np.abs(r - min(w, h) * 0.3) < 0.5] = 160
    return img


def cases():
    base = {"prompt": "a red circle on a blue background", "steps": 8, "width": 32,
            "height": 32, "seed": 5, "batch_count": 1, "guidance_scale": 7.5}

    def unit(model="tiny-controlnet", image="control.png", **kw):
        return dict({"model": model, "image": image}, **kw)

    out = [
        ("euler_g7.5_neg_b2", dict(base, sampler="euler", negative_prompt="blurry, green",
                                   batch_count=2, controls=[unit()])),
        ("dpmpp_2m_g1_scale0.6_span", dict(base, sampler="dpmpp_2m", guidance_scale=1.0,
                                           controls=[unit(scale=0.6, start=0.2, end=0.7)])),
        ("euler_a_guess_mode", dict(base, sampler="euler_a", control_guess_mode=True,
                                    negative_prompt="yellow", controls=[unit(scale=0.9)])),
        ("ddim_g1_guess_mode", dict(base, sampler="ddim", guidance_scale=1.0,
                                    control_guess_mode=True, controls=[unit()])),
        ("heun_span", dict(base, sampler="heun", steps=5,
                           controls=[unit(start=0.1, end=0.55)])),
        ("pndm_two_nets", dict(base, sampler="pndm", batch_count=2,
                               controls=[unit(scale=0.8, end=0.6),
                                         unit("tiny-controlnet-b", "control_big.png", scale=0.5,
                                              start=0.3)])),
        ("dpmpp_2m_karras_resized_tall", dict(base, sampler="dpmpp_2m_karras", height=48,
                                              controls=[unit(image="control_big.png")])),
        ("img2img_euler_s0.6", dict(base, sampler="euler", strength=0.6, init_image="init.png",
                                    batch_count=2, controls=[unit(start=0.25, end=0.8)])),
        ("img2img_unipc_s0.9_two_nets", dict(base, sampler="unipc", strength=0.9,
                                             init_image="init.png",
                                             controls=[unit(scale=1.3),
                                                       unit("tiny-controlnet-b", scale=0.4)])),
    ]
    # Inpainting (StableDiffusionControlNetInpaintPipeline), with the plain UNet and with an
    # inpainting one (9 input channels; the ControlNet sees the latents alone).
    masked = dict(base, init_image="init.png", mask_image="mask.png")
    out += [
        ("inpaint_euler_s0.75_neg_b2", "tiny-sd",
         dict(masked, sampler="euler", strength=0.75, negative_prompt="green", batch_count=2,
              controls=[unit(scale=0.9)])),
        ("inpaint_dpmpp_2m_s1_guess_two_nets", "tiny-sd",
         dict(masked, sampler="dpmpp_2m", strength=1.0, control_guess_mode=True,
              controls=[unit(end=0.7), unit("tiny-controlnet-b", scale=0.6)])),
        ("inpaint_ddim_only_masked_pad4", "tiny-sd",
         dict(masked, sampler="ddim", strength=0.9, mask_padding=4, height=48,
              controls=[unit(start=0.2)])),
        ("inpainting_unet_euler_a_s1", "tiny-sd-inpaint",
         dict(masked, sampler="euler_a", strength=1.0, controls=[unit(scale=1.2)])),
        ("inpainting_unet_unipc_only_masked_pad0", "tiny-sd-inpaint",
         dict(masked, sampler="unipc", strength=0.8, mask_padding=0,
              controls=[unit(scale=0.7)])),
    ]
    # SDXL (StableDiffusionXLControlNet{,Img2Img,Inpaint}Pipeline): the ControlNet gets the
    # pooled text embedding and the size ids too.
    xl = {"prompt": "a red circle on a blue background", "steps": 6, "width": 32, "height": 32,
          "seed": 12, "batch_count": 1, "guidance_scale": 6.0}
    xl_unit = unit("tiny-controlnet-xl")
    out += [
        ("xl_euler_neg_b2", "tiny-sdxl",
         dict(xl, sampler="euler", negative_prompt="green", batch_count=2, controls=[xl_unit])),
        ("xl_dpmpp_2m_guess_span", "tiny-sdxl",
         dict(xl, sampler="dpmpp_2m", control_guess_mode=True, height=40,
              controls=[dict(xl_unit, scale=0.8, start=0.2, end=0.8)])),
        ("xl_img2img_euler_a_s0.7", "tiny-sdxl",
         dict(xl, sampler="euler_a", init_image="init.png", strength=0.7,
              controls=[dict(xl_unit, scale=1.1)])),
        ("xl_inpaint_ddim_s0.8_b2", "tiny-sdxl",
         dict(xl, sampler="ddim", init_image="init.png", mask_image="mask.png", strength=0.8,
              batch_count=2, controls=[xl_unit])),
        # With the refiner: the ControlNet guides the model's steps, its span counted over the
        # whole schedule (diffusers' denoising_end cuts the steps after counting them).
        ("xl_refiner_euler_switch0.6", "tiny-sdxl",
         dict(xl, sampler="euler", steps=8, negative_prompt="green", refiner="tiny-sdxl-refiner",
              refiner_switch_at=0.6, controls=[dict(xl_unit, scale=0.9, end=0.5)])),
    ]
    return [c if len(c) == 3 else (c[0], "tiny-sd", c[1]) for c in out]


def run_case(pipes, nets, out, model, req):
    units = req["controls"]
    multi = len(units) > 1
    controlnet = [nets[u["model"]] for u in units] if multi else nets[units[0]["model"]]
    images = [Image.open(out / u["image"]) for u in units]
    cls, extra = SAMPLERS[req["sampler"]]
    img2img = "init_image" in req
    inpaint = "mask_image" in req
    base = pipes[model]
    extra_args = {}
    if model == "tiny-sdxl":
        pipe_cls = (StableDiffusionXLControlNetInpaintPipeline if inpaint
                    else StableDiffusionXLControlNetImg2ImgPipeline if img2img
                    else StableDiffusionXLControlNetPipeline)
        extra_args = {"add_watermarker": False}
    else:
        pipe_cls = (StableDiffusionControlNetInpaintPipeline if inpaint
                    else StableDiffusionControlNetImg2ImgPipeline if img2img
                    else StableDiffusionControlNetPipeline)
    pipe = pipe_cls(**dict(base.components, controlnet=controlnet, **extra_args))
    pipe.scheduler = cls.from_config(base.scheduler.config, **extra)
    pipe.set_progress_bar_config(disable=True)
    pick = (lambda key, d: [u.get(key, d) for u in units]) if multi else (
        lambda key, d: units[0].get(key, d))
    kwargs = dict(prompt=req["prompt"], negative_prompt=req.get("negative_prompt") or None,
                  num_inference_steps=req["steps"], guidance_scale=req["guidance_scale"],
                  generator=[torch.Generator("cpu").manual_seed(req["seed"] + i)
                             for i in range(req["batch_count"])],
                  num_images_per_prompt=req["batch_count"], height=req["height"],
                  width=req["width"], guess_mode=req.get("control_guess_mode", False),
                  controlnet_conditioning_scale=pick("scale", 1.0),
                  control_guidance_start=pick("start", 0.0), control_guidance_end=pick("end", 1.0))
    if img2img:
        kwargs.update(image=Image.open(out / req["init_image"]),
                      control_image=images if multi else images[0], strength=req["strength"])
    else:
        kwargs.update(image=images if multi else images[0])
    if "refiner" in req:  # the model with its ControlNet to the switch, then the refiner
        latents = pipe(denoising_end=req["refiner_switch_at"], output_type="latent",
                       **kwargs).images
        second = pipes[req["refiner"]]
        second.scheduler = cls.from_config(second.scheduler.config, **extra)
        for key in ("image", "height", "width", "guess_mode", "controlnet_conditioning_scale",
                    "control_guidance_start", "control_guidance_end"):
            kwargs.pop(key)
        return second(image=latents, denoising_start=req["refiner_switch_at"], **kwargs).images
    if not inpaint:
        return pipe(**kwargs).images
    # diffusers' batched inpainting samples every image's latents with the first generator:
    # one image at a time, each with its own (as the inpaint fixture does).
    kwargs.update(mask_image=Image.open(out / req["mask_image"]), num_images_per_prompt=1)
    if req.get("mask_padding") is not None:
        kwargs["padding_mask_crop"] = req["mask_padding"]
    gens = kwargs.pop("generator")
    return [pipe(generator=[g], **kwargs).images[0] for g in gens]


def main(out_dir):
    out = Path(out_dir)
    make_tiny_pipeline.main(str(out))  # tiny-sd
    base = StableDiffusionControlNetPipeline.from_pretrained(
        out / "tiny-sd", controlnet=None, safety_checker=None)
    unet = UNet2DConditionModel.from_pretrained(out / "tiny-sd" / "unet")
    # The tiny VAE makes latents at half the size: two conditioning channel entries (one
    # stride-2 convolution) take the image there.
    nets = {"tiny-controlnet": random_controlnet(unet, 7, conditioning_embedding_out_channels=(16, 32)),
            "tiny-controlnet-b": random_controlnet(unet, 8, conditioning_embedding_out_channels=(8, 24),
                                                   controlnet_conditioning_channel_order="bgr")}
    for name, net in nets.items():
        net.save_pretrained(out / name, safe_serialization=True)
    # For the CLI (whose images from them are compared with the folder's).
    single_files(nets["tiny-controlnet"], out, "tiny-controlnet", diffusers_reads=False)
    pictures = {"control": control_image(32, 32), "control_big": control_image(44, 60),
                "init": init_image(32, 32), "mask": blob_mask(32, 32, 20, 14, 8, 10)}
    for key, pixels in pictures.items():
        Image.fromarray(pixels).save(out / f"{key}.png")
    t = {key: torch.from_numpy(pixels) for key, pixels in pictures.items()}

    # The ControlNet alone, and the UNet with its residuals.
    g = torch.Generator().manual_seed(3)
    t.update({"net_sample": torch.randn(2, 4, 8, 8, generator=g), "net_t": torch.tensor(437.0),
              "net_context": torch.randn(2, 77, 32, generator=g),
              "net_cond": torch.rand(2, 3, 16, 16, generator=g)})
    net = nets["tiny-controlnet"]
    with torch.no_grad():
        for prefix, guess in (("net", False), ("guess", True)):
            down, mid = net(t["net_sample"], t["net_t"], encoder_hidden_states=t["net_context"],
                            controlnet_cond=t["net_cond"], conditioning_scale=0.7,
                            guess_mode=guess, return_dict=False)
            for k, d in enumerate(down):
                t[f"{prefix}_down{k}"] = d.contiguous()
            t[f"{prefix}_mid"] = mid.contiguous()
        down = [t[f"net_down{k}"] for k in range(len(down))]
        t["unet_out"] = unet(t["net_sample"], t["net_t"], encoder_hidden_states=t["net_context"],
                             down_block_additional_residuals=down,
                             mid_block_additional_residual=t["net_mid"]).sample.contiguous()

    # A ControlNet with the usual conditioning embedding (16, 32, 96, 256: an image 8 times the
    # latents), as single files in the original layout: diffusers' single-file loader reads
    # them, and its model's residuals for an image of 64x64 are the reference.
    x8 = random_controlnet(unet, 9, conditioning_embedding_out_channels=(16, 32, 96, 256))
    x8.save_pretrained(out / "tiny-controlnet-x8", safe_serialization=True)
    x8 = single_files(x8, out, "tiny-controlnet-x8")
    t["x8_cond"] = torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        down, mid = x8(t["net_sample"], t["net_t"], encoder_hidden_states=t["net_context"],
                       controlnet_cond=t["x8_cond"], conditioning_scale=1.0, return_dict=False)
    for k, d in enumerate(down):
        t[f"x8_down{k}"] = d.contiguous()
    t["x8_mid"] = mid.contiguous()
    # The shuffle ControlNet's global pooling (global_pool_conditions: the residuals averaged
    # over the picture, guess mode's scales not applied), at scale 0.8 in guess mode.
    pooled = ControlNetModel.from_pretrained(out / "tiny-controlnet-x8", global_pool_conditions=True)
    assert pooled.config.global_pool_conditions
    with torch.no_grad():
        down, mid = pooled(t["net_sample"], t["net_t"], encoder_hidden_states=t["net_context"],
                           controlnet_cond=t["x8_cond"], conditioning_scale=0.8, guess_mode=True,
                           return_dict=False)
    for k, d in enumerate(down):
        t[f"x8_pooled_down{k}"] = d.contiguous()
    t["x8_pooled_mid"] = mid.contiguous()

    # An inpainting model: tiny-sd with a 9-channel UNet.
    torch.manual_seed(1)
    plain = StableDiffusionInpaintPipeline.from_pretrained(out / "tiny-sd")
    inpainting = StableDiffusionInpaintPipeline(**dict(
        plain.components, unet=UNet2DConditionModel(**dict(unet.config, in_channels=9))))
    inpainting.save_pretrained(out / "tiny-sd-inpaint", safe_serialization=True)
    # A tiny SDXL (make_sdxl_fixture's; its refiner and twin are not needed) and a ControlNet
    # made from its UNet.
    make_sdxl_fixture.make_model(out)
    shutil.rmtree(out / "tiny-sdxl-nozeros")
    xl = StableDiffusionXLPipeline.from_pretrained(out / "tiny-sdxl")
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(out / "tiny-sdxl-refiner")
    refiner.set_progress_bar_config(disable=True)
    nets["tiny-controlnet-xl"] = random_controlnet(xl.unet, 10,
                                                   conditioning_embedding_out_channels=(16, 32))
    nets["tiny-controlnet-xl"].save_pretrained(out / "tiny-controlnet-xl", safe_serialization=True)
    pipes = {"tiny-sd": base, "tiny-sd-inpaint": inpainting, "tiny-sdxl": xl,
             "tiny-sdxl-refiner": refiner}
    listed = []
    for name, model, req in cases():
        images = run_case(pipes, nets, out, model, req)
        t[name] = torch.from_numpy(np.stack([np.array(i) for i in images]))
        listed.append({"name": name, "model": model, "request": req})
    (out / "cases.json").write_text(json.dumps(listed, indent=1))
    save_file(t, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
