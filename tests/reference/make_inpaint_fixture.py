"""diffusers' StableDiffusionInpaintPipeline on two tiny random models: tiny-sd (an ordinary
4-channel UNet: the kept part is blended back in after each step) and tiny-sd-inpaint (a
9-channel inpainting UNet: latents, mask and masked image's latents), for every sampler, at
strength 1 (pure noise) and below, with and without guidance and a negative prompt, a mask with
colours and grey levels either side of the threshold, and an init image and mask of another
size than the request's.

Image i of a batch is what diffusers makes alone with the generator seed + i (batch 1). diffusers'
batched inpainting draws the init and masked images' posteriors from the first generator only,
so its image i > 0 depends on the batch it was in; SD Studio keeps each image reproducible from
its own seed, as for txt2img and img2img.

usage: make_inpaint_fixture.py OUT_DIR
OUT_DIR/tiny-sd, OUT_DIR/tiny-sd-inpaint (the models; the second's text encoder, tokenizer,
VAE and scheduler are links to the first's), OUT_DIR/{init,mask,init_big,mask_big}.png,
OUT_DIR/cases.json ([{"name", "model", "request": {our request JSON}}]),
OUT_DIR/expected.safetensors: "init", "mask", "init_big", "mask_big" [H, W, 3] uint8,
"mask_condition" [32, 32] and "mask_big_condition" [48, 32] float32 (diffusers' mask processor at
the requests' sizes), "overlay_{generated,init,mask,expected}" [37, 41, 3] uint8 (diffusers'
apply_overlay on random pictures), "overlay_blur{1,4,25}" (mask_processor.blur of that mask), "resize_src{k}" and
"resize_{fill,crop}{k}" (the image processor's aspect-keeping resizes to 32x32),
"crop_regions" [n, 7] int64 (x1, y1, x2, y2 of mask_processor.get_crop_region for the mask named
in the code at width, height, pad), and per case NAME [B, H, W, 3] uint8 (only-masked cases:
the init image's size).
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import save_file

import make_tiny_pipeline
from make_pipeline_fixture import SAMPLERS, TWINS, clip_skip_embeds, init_image


def mask_image(w, h):
    """White (repaint) on the right and in a disc, black elsewhere, with stripes of colours and
    grey levels whose Pillow grey level falls either side of 128."""
    y, x = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w, 3), np.uint8)
    m[x >= w * 0.55] = 255
    m[(x - w * 0.25) ** 2 + (y - h * 0.3) ** 2 < (min(w, h) * 0.18) ** 2] = 255
    stripes = [(128, 128, 128), (127, 127, 127), (0, 255, 0), (255, 0, 0), (0, 0, 255),
               (200, 120, 40), (60, 140, 160), (255, 255, 255)]
    for k, colour in enumerate(stripes):  # 4-pixel rows at the bottom, each a colour
        m[h - 4 * (k % 2 + 1):h - 4 * (k % 2), (k // 2) * (w // 4):(k // 2 + 1) * (w // 4)] = colour
    return m


def cases():
    out = []
    for name in SAMPLERS:
        if name in TWINS:  # their sigmas are the scheduler fixture's, their images the pipeline's
            continue
        base = {"prompt": "a red circle on a blue background", "steps": 8, "width": 32,
                "height": 32, "sampler": name, "init_image": "init.png", "mask_image": "mask.png"}
        for model in ("tiny-sd", "tiny-sd-inpaint"):
            short = "sd" if model == "tiny-sd" else "inp"
            out.append((f"{short}_{name}_s1_g7.5_neg_b2", model,
                        dict(base, guidance_scale=7.5, seed=11, strength=1.0,
                             negative_prompt="blurry, green", batch_count=2)))
            out.append((f"{short}_{name}_s0.6_g1_b1", model,
                        dict(base, guidance_scale=1.0, seed=3, strength=0.6, batch_count=1)))
    # An init image and mask of another size than the request's: both resized (Lanczos), the
    # mask before its grey level is taken; DDIM with eta draws noise in every step.
    big = {"prompt": "a small yellow star", "steps": 10, "width": 32, "height": 48,
           "guidance_scale": 5.0, "seed": 1234, "batch_count": 2, "strength": 0.75,
           "init_image": "init_big.png", "mask_image": "mask_big.png"}
    out.append(("sd_ddim_eta_resized", "tiny-sd", dict(big, sampler="ddim", eta=0.5)))
    out.append(("inp_euler_a_resized", "tiny-sd-inpaint", dict(big, sampler="euler_a")))
    out.append(("inp_dpmpp_2m_karras_s0.9_clip_skip1", "tiny-sd-inpaint",
                dict(big, sampler="dpmpp_2m_karras", strength=0.9, clip_skip=1, batch_count=1)))
    # The init image put back where the mask keeps it (diffusers' apply_overlay), grey levels of
    # the stripes and of the resized mask's edges blending.
    out.append(("sd_euler_keep_unmasked", "tiny-sd",
                dict(big, sampler="euler", keep_unmasked=True, init_image="init.png",
                     mask_image="mask.png", width=32, height=32)))
    out.append(("inp_unipc_keep_unmasked_resized", "tiny-sd-inpaint",
                dict(big, sampler="unipc", keep_unmasked=True)))
    # A blurred mask (diffusers' mask_processor.blur before the pipeline, and in the overlay).
    out.append(("sd_dpmpp_2m_blur3_keep", "tiny-sd",
                dict(big, sampler="dpmpp_2m", mask_blur=3, keep_unmasked=True)))
    out.append(("inp_ddim_blur6", "tiny-sd-inpaint", dict(big, sampler="ddim", mask_blur=6)))
    # Only the masked area (diffusers' padding_mask_crop, A1111's "Only masked"): a box around
    # the mask plus the padding, grown to the request's aspect, cut out, resized to the request's
    # size ("fill"), inpainted, and pasted back into the whole init image through the mask.
    wide = {"prompt": "a blue dot", "steps": 6, "guidance_scale": 6.0, "seed": 8,
            "batch_count": 2, "strength": 0.8, "init_image": "init_wide.png",
            "mask_image": "mask_blob.png", "width": 32, "height": 32}
    out.append(("sd_euler_a_only_masked_pad6", "tiny-sd",
                dict(wide, sampler="euler_a", mask_padding=6)))
    out.append(("inp_dpmpp_2m_only_masked_pad0_tall", "tiny-sd-inpaint",
                dict(wide, sampler="dpmpp_2m", mask_padding=0, height=48, strength=1.0)))
    out.append(("sd_ddim_only_masked_edge_blur2", "tiny-sd",
                dict(wide, sampler="ddim", mask_padding=20, mask_image="mask_edge.png",
                     mask_blur=2, batch_count=1)))
    return out


def blob_mask(w, h, cx, cy, rx, ry):
    """An ellipse of white (repaint) in black, grey at its rim."""
    y, x = np.mgrid[0:h, 0:w]
    d = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    m = np.where(d < 1, 255, np.where(d < 1.5, 140, 0)).astype(np.uint8)
    return np.repeat(m[:, :, None], 3, axis=2)


def main(out_dir):
    out = Path(out_dir)
    make_tiny_pipeline.main(str(out))  # tiny-sd
    plain = StableDiffusionInpaintPipeline.from_pretrained(out / "tiny-sd")
    plain.set_progress_bar_config(disable=True)
    # The same text encoder, VAE and scheduler with a 9-channel UNet.
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**dict(plain.unet.config, in_channels=9))
    inpaint = StableDiffusionInpaintPipeline(**dict(plain.components, unet=unet))
    inpaint.save_pretrained(out / "tiny-sd-inpaint", safe_serialization=True)
    for part in ("text_encoder", "tokenizer", "vae", "scheduler"):  # shared: links, half the size
        shutil.rmtree(out / "tiny-sd-inpaint" / part)
        (out / "tiny-sd-inpaint" / part).symlink_to(Path("..") / "tiny-sd" / part,
                                                    target_is_directory=True)
    inpaint.set_progress_bar_config(disable=True)
    pipes = {"tiny-sd": plain, "tiny-sd-inpaint": inpaint}

    pictures = {"init": init_image(32, 32), "mask": mask_image(32, 32),
                "init_big": init_image(40, 56), "mask_big": mask_image(40, 56),
                "init_wide": init_image(64, 40), "mask_blob": blob_mask(64, 40, 38, 17, 9, 5),
                "mask_edge": blob_mask(64, 40, 60, 35, 6, 8)}
    for key, pixels in pictures.items():
        Image.fromarray(pixels).save(out / f"{key}.png")
    tensors = {k: torch.from_numpy(v) for k, v in pictures.items()}
    # What diffusers' mask processor makes of the masks at the requests' sizes: 0 or 1.
    for key, (w, h) in (("mask", (32, 32)), ("mask_big", (32, 48))):
        tensors[f"{key}_condition"] = plain.mask_processor.preprocess(
            Image.open(out / f"{key}.png"), height=h, width=w)[0, 0].contiguous()
    # apply_overlay alone on random pictures, every grey level of the mask.
    rng = np.random.default_rng(0)
    overlay = {k: rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
               for k in ("generated", "init", "mask")}
    overlay["mask"][:4] = 0
    overlay["mask"][4:8] = 255
    overlay["expected"] = np.array(plain.image_processor.apply_overlay(
        *(Image.fromarray(overlay[k]) for k in ("mask", "init", "generated"))))
    # Pillow's GaussianBlur at radii up to wider than the picture.
    for radius in (1, 4, 25):
        overlay[f"blur{radius}"] = np.array(
            plain.mask_processor.blur(Image.fromarray(overlay["mask"]), blur_factor=radius))
    tensors.update({f"overlay_{k}": torch.from_numpy(v) for k, v in overlay.items()})
    # The image processor's "fill" and "crop" resizes (aspect kept: the edges repeated into the
    # rest, or the excess cut) and the mask processor's crop regions.
    for k, (w, h) in enumerate(((23, 37), (41, 17), (40, 40), (33, 32))):
        src = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        tensors[f"resize_src{k}"] = torch.from_numpy(np.array(src))
        for mode in ("fill", "crop"):
            tensors[f"resize_{mode}{k}"] = torch.from_numpy(np.array(
                plain.image_processor.resize(src, height=32, width=32, resize_mode=mode)))
    regions = []
    for key, (w, h, pad) in (("mask_blob", (32, 32, 6)), ("mask_blob", (32, 48, 0)),
                             ("mask_edge", (32, 32, 20)), ("mask_edge", (48, 16, 3)),
                             ("mask", (32, 32, 4))):
        regions.append(list(plain.mask_processor.get_crop_region(
            Image.fromarray(pictures[key]), w, h, pad=pad)) + [w, h, pad])
    tensors["crop_regions"] = torch.tensor(regions, dtype=torch.int64)
    listed = []
    model_config = plain.scheduler.config
    for name, model, req in cases():
        pipe = pipes[model]
        cls, extra = SAMPLERS[req["sampler"]]
        pipe.scheduler = cls.from_config(model_config, **extra)
        init = Image.open(out / req["init_image"])
        mask = Image.open(out / req["mask_image"])
        if req.get("mask_blur"):
            mask = pipe.mask_processor.blur(mask, blur_factor=req["mask_blur"])
        images = []
        crop = {} if req.get("mask_padding") is None else {"padding_mask_crop": req["mask_padding"]}
        for i in range(req["batch_count"]):
            kwargs = dict(prompt=req["prompt"], negative_prompt=req.get("negative_prompt") or None,
                          num_inference_steps=req["steps"], guidance_scale=req["guidance_scale"],
                          generator=[torch.Generator("cpu").manual_seed(req["seed"] + i)],
                          eta=req.get("eta", 0.0), height=req["height"], width=req["width"],
                          strength=req["strength"])
            if req.get("clip_skip"):  # the prompt's embeddings given, the negative prompt encoded
                kwargs["prompt_embeds"] = clip_skip_embeds(pipe, kwargs.pop("prompt"),
                                                           req["clip_skip"])
            images += pipe(image=init, mask_image=mask, **crop, **kwargs).images
        if req.get("keep_unmasked"):  # at the request's size, as the pipeline resized them
            size = (req["width"], req["height"])
            images = [pipe.image_processor.apply_overlay(
                mask.resize(size, Image.LANCZOS), init.resize(size, Image.LANCZOS), i)
                for i in images]
        tensors[name] = torch.from_numpy(np.stack([np.array(i) for i in images]))
        listed.append({"name": name, "model": model, "request": req})
    (out / "cases.json").write_text(json.dumps(listed, indent=1))
    save_file(tensors, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
