"""diffusers' ControlNetModel and its SD pipelines (StableDiffusionControlNetPipeline,
StableDiffusionControlNetImg2ImgPipeline) on the tiny random SD model and two tiny random
ControlNets made from its UNet, every weight random (diffusers starts the output convolutions at
zero, which would make a ControlNet do nothing).

usage: make_controlnet_fixture.py OUT_DIR
OUT_DIR/tiny-sd (make_tiny_pipeline), OUT_DIR/tiny-controlnet{,-b} (ControlNetModel folders;
-b with other conditioning channels and BGR channel order), OUT_DIR/{control,control_big,
init}.png (also in expected.safetensors as [H, W, 3] uint8), OUT_DIR/cases.json ([{"name", "model", "request": {our request JSON}}]),
OUT_DIR/expected.safetensors:
  the ControlNet alone: "net_sample" [2, 4, 8, 8], "net_t" [], "net_context" [2, 77, 32],
  "net_cond" [2, 3, 16, 16]; "net_down{k}" and "net_mid" at scale 0.7, "guess_down{k}" and
  "guess_mid" in guess mode at scale 0.7 (tiny-controlnet); "unet_out" [2, 4, 8, 8]: the UNet
  with the scale-0.7 residuals added;
  per case NAME [B, H, W, 3] uint8.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import (ControlNetModel, StableDiffusionControlNetImg2ImgPipeline,
                       StableDiffusionControlNetPipeline, UNet2DConditionModel)
from PIL import Image
from safetensors.torch import save_file

import make_tiny_pipeline
from make_pipeline_fixture import SAMPLERS, init_image


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
    return out


def run_case(pipes, nets, out, req):
    units = req["controls"]
    multi = len(units) > 1
    controlnet = [nets[u["model"]] for u in units] if multi else nets[units[0]["model"]]
    images = [Image.open(out / u["image"]) for u in units]
    cls, extra = SAMPLERS[req["sampler"]]
    img2img = "init_image" in req
    pipe_cls = (StableDiffusionControlNetImg2ImgPipeline if img2img
                else StableDiffusionControlNetPipeline)
    base = pipes["tiny-sd"]
    pipe = pipe_cls(**dict(base.components, controlnet=controlnet))
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
    return pipe(**kwargs).images


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
    pictures = {"control": control_image(32, 32), "control_big": control_image(44, 60),
                "init": init_image(32, 32)}
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

    pipes = {"tiny-sd": base}
    listed = []
    for name, req in cases():
        images = run_case(pipes, nets, out, req)
        t[name] = torch.from_numpy(np.stack([np.array(i) for i in images]))
        listed.append({"name": name, "model": "tiny-sd", "request": req})
    (out / "cases.json").write_text(json.dumps(listed, indent=1))
    save_file(t, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
