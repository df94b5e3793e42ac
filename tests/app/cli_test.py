"""sdstudio-cli info / tokenize, run as a user runs them, against the reference."""
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open
from transformers import CLIPTokenizer

CLI = os.environ["SDS_CLI"]
FIXTURES = Path(os.environ["SDS_FIXTURES"])
TINY = FIXTURES / "tiny_pipeline" / "tiny-sd"
TOKENIZER = FIXTURES / "tokenizer" / "tokenizer"


def run(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True)


def test_info_lists_components_dtypes_and_parameter_counts():
    r = run("info", str(TINY))
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.strip()}
    total = 0
    for comp, file in [("unet", "unet/diffusion_pytorch_model.safetensors"),
                       ("vae", "vae/diffusion_pytorch_model.safetensors"),
                       ("text_encoder", "text_encoder/model.safetensors")]:
        with safe_open(TINY / file, "pt") as f:
            n = sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel")
                    else _numel(f.get_slice(k).get_shape()) for k in f.keys())
        total += n
        row = lines[comp]
        assert row[2] == "F32", row
        assert row[3] == f"{n:,}", row
    assert lines["tokenizer"][3] == "49,408"
    assert lines["scheduler"][1] == "PNDMScheduler"
    assert f"total parameters: {total:,}" in r.stdout


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def test_info_on_a_broken_folder_says_what_is_wrong(tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(TINY, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    r = run("info", str(broken))
    assert r.returncode == 1
    assert "unet/diffusion_pytorch_model.safetensors: not a valid safetensors file" in r.stderr
    r = run("info", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "not a folder" in r.stderr
    r = run("info")
    assert r.returncode == 2 and "usage" in r.stderr


def unseen_prompts(n=60, seed=2026):
    # A second corpus, built from parts the committed corpus does not use.
    rng = random.Random(seed)
    subjects = ["koi pond", "steampunk airship", "Neuschwanstein", "Pokémon trainer", "crème fraîche",
                "Ragnarök", "Äpfel und Birnen", "jalapeño", "Zoë's garden", "東京の夜景", "서울 야경",
                "Ελλάδα", "Санкт-Петербург", "🦊🌲", "R2-D2", "x86_64", "3:2 aspect", "f/1.8",
                "O'Reilly", "they'd've", "ROCK'N'ROLL", "<lora:foo:0.8>", "[[nested]]", "(((a)))"]
    mods = ["", ", 4k", " -- ar 16:9", " | watercolor", " &amp; friends", "\t\ttabs", " ...",
            " ©2024", " №5", " ½ size", " ﬀ ligature", "  ", "\u200d", " \u00a0nbsp"]
    return [rng.choice(subjects) + rng.choice(mods) + " " + rng.choice(subjects)
            for _ in range(n)]


def without_lora_tags(prompt):
    # A1111's <lora:NAME:...> tags, which a generation takes out before the prompt is read.
    return re.sub(r"<lora:[^:>]+(?::[^:>]*)*>", "", prompt)


def test_tokenize_matches_clip_tokenizer_on_unseen_prompts():
    ref = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    prompts = unseen_prompts()
    assert any("<lora:" in p for p in prompts)
    for prompt in prompts:
        r = run("tokenize", str(TINY), prompt)
        assert r.returncode == 0, r.stderr
        ids_line, count_line = r.stdout.splitlines()
        want = ref(without_lora_tags(prompt)).input_ids
        assert [int(x) for x in ids_line.split()] == want, prompt
        n = len(want) - 2
        assert count_line == f"{n}/{max(1, -(-n // 75)) * 75}"


def test_tokenize_padded_is_what_diffusers_feeds_the_text_encoder():
    ref = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    prompt = "a photograph of an astronaut riding a horse " * 12
    r = run("tokenize", str(TOKENIZER), prompt, "--padded")
    assert r.returncode == 0, r.stderr
    ids = [int(x) for x in r.stdout.splitlines()[0].split()]
    assert ids == ref(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    n = len(ref(prompt).input_ids) - 2
    assert n == 96 and r.stdout.splitlines()[1] == "96/150"


def a1111_prompts(n=80, seed=7):
    """Prompts in A1111's syntax: nested and weighted brackets, escapes, stray brackets, BREAK,
    commas, up to three chunks."""
    rng = random.Random(seed)
    words = ["red", "circle", "blue", "background", "a", "of", "the", "photo", "Äpfel", "東京",
             "🦊", "x86_64", "koi", "pond", "night", "ROCK'N'ROLL", "f/1.8", "they'd've"]

    def piece(depth=0):
        k = rng.random()
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        if depth < 3 and k < 0.15:
            return "(" + piece(depth + 1) + ")"
        if depth < 3 and k < 0.25:
            return "[" + piece(depth + 1) + "]"
        if depth < 3 and k < 0.35:
            weight = rng.choice(["1.2", "0.5", " 1.5 ", "-0.3", "+.8", "2.", "1.05"])
            return f"({piece(depth + 1)}:{weight})"
        if k < 0.42:
            return text + ","
        if k < 0.45:
            return "BREAK"
        if k < 0.50:
            return rng.choice(["\\(", "\\)", "\\[", "\\]", "\\\\", "(", ")", "]", "[", ":",
                               "BREAKs", "\\x"])
        return text
    return [" ".join(piece() for _ in range(rng.randint(1, 45))) for _ in range(n)]


def test_tokenize_a1111_chunks_match_the_reference_on_unseen_prompts():
    """Each chunk's ids and weights as A1111 makes them (tests/app/a1111_prompts.py)."""
    import numpy as np
    ref = a1111()
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    longest = 0
    for prompt in a1111_prompts():
        r = run("tokenize", str(TOKENIZER), prompt, "--prompt-syntax", "a1111")
        assert r.returncode == 0, (prompt, r.stderr)
        lines = r.stdout.splitlines()
        want = ref.chunks(tok, prompt)
        assert len(lines) == 2 * len(want) + 1, prompt
        for k, (ids, weights) in enumerate(want):
            assert [int(x) for x in lines[2 * k].split()] == ids, (prompt, k)
            got = np.array([float(x) for x in lines[2 * k + 1].split()])  # printed as %g
            assert np.allclose(got, weights, rtol=1e-5, atol=0), (prompt, k)
        longest = max(longest, len(want))
    assert longest >= 3  # the prompts reach a third chunk (BREAKs more)


def test_encode_writes_the_prompts_as_a1111_encodes_them(tmp_path):
    """encode's prompt_embeds against the reference (A1111's chunks, weights and mean through
    transformers' text encoder): SD 1.x with and without clip skip, both norms; plain against
    diffusers' own encode_prompt; SDXL with its pooled embeddings."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file
    ref = a1111()
    model, pipe = a1111_model(tmp_path)

    def close(a, b):
        return a.shape == b.shape and ((a - b).abs().max() / b.abs().max()).item() <= 1e-5

    prompt = LONG + ", (yellow moon:1.6) BREAK [[grey]] sky"
    negative = "(green:1.3) [square]"
    for syntax, clip_skip in [("a1111", 0), ("a1111", 1), ("a1111-no-norm", 0)]:
        out = tmp_path / f"{syntax}-{clip_skip}.safetensors"
        r = run("encode", "--model", str(model), "--prompt", prompt, "--negative", negative,
                "--prompt-syntax", syntax, "--clip-skip", str(clip_skip), "--device", "cpu",
                "--out", str(out))
        assert r.returncode == 0, r.stderr
        got = load_file(str(out))
        norm = syntax == "a1111"
        want = ref.encode(pipe.text_encoder, pipe.tokenizer, prompt, clip_skip, norm)
        assert want.shape[1] == 3 * 77
        assert close(got["prompt_embeds"], want), syntax
        # The negative prompt without clip skip, as diffusers encodes it.
        assert close(got["negative_prompt_embeds"],
                     ref.encode(pipe.text_encoder, pipe.tokenizer, negative, 0, norm)), syntax
    # Plain: diffusers' own encode_prompt.
    r = run("encode", "--model", str(model), "--prompt", "a (red) circle", "--device", "cpu",
            "--out", str(tmp_path / "plain.safetensors"))
    assert r.returncode == 0, r.stderr
    got = load_file(str(tmp_path / "plain.safetensors"))
    cond, uncond = pipe.encode_prompt("a (red) circle", "cpu", 1, True, None)
    assert close(got["prompt_embeds"], cond) and close(got["negative_prompt_embeds"], uncond)
    # SDXL.
    xl = StableDiffusionXLPipeline.from_pretrained(SDXL / "tiny-sdxl")
    r = run("encode", "--model", str(SDXL / "tiny-sdxl"), "--prompt", prompt, "--negative",
            negative, "--prompt-syntax", "a1111", "--device", "cpu",
            "--out", str(tmp_path / "xl.safetensors"))
    assert r.returncode == 0, r.stderr
    got = load_file(str(tmp_path / "xl.safetensors"))
    cond, pooled = ref.encode_xl(xl, prompt)
    uncond, uncond_pooled = ref.encode_xl(xl, negative)
    assert close(got["prompt_embeds"], cond) and close(got["pooled_prompt_embeds"], pooled)
    assert close(got["negative_prompt_embeds"], uncond)
    assert close(got["negative_pooled_prompt_embeds"], uncond_pooled)
    r = run("encode", "--model", str(model), "--prompt", "x", "--out", str(tmp_path / "x.pt"))
    assert r.returncode == 2 and "encode writes --out FILE.safetensors" in r.stderr


def test_clip_skip_reaches_down_to_the_embeddings(tmp_path):
    # diffusers' clip_skip k reads hidden_states[-(k + 1)]: with k the encoder's layer count,
    # the embeddings alone (through the final layer norm); one more is refused.
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file
    pipe = StableDiffusionPipeline.from_pretrained(PIPE)
    layers = pipe.text_encoder.config.num_hidden_layers
    out = tmp_path / "skip.safetensors"
    r = run("encode", "--model", str(PIPE), "--prompt", "a red circle", "--clip-skip",
            str(layers), "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    want = reference_module("make_pipeline_fixture").clip_skip_embeds(pipe, "a red circle", layers)
    got = load_file(str(out))["prompt_embeds"]
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    r = run("encode", "--model", str(PIPE), "--prompt", "a red circle", "--clip-skip",
            str(layers + 1), "--device", "cpu", "--out", str(out))
    assert r.returncode == 1 and (f"clip_skip {layers + 1} is out of range 0..{layers} for a "
                                  f"text encoder of {layers} layers") in r.stderr, r.stderr


# --- txt2img / img2img / grid against diffusers, through the CLI flags -----------------------

PIPE = FIXTURES / "pipeline" / "tiny-sd"


def reference_module(name):
    """A module of tests/reference (the fixture makers and their helpers)."""
    import importlib
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
    return importlib.import_module(name)


def samplers():
    """Each of our samplers as diffusers makes it: {name: (scheduler class, from_config extras)}."""
    return reference_module("make_pipeline_fixture").SAMPLERS


def config_samplers():
    """The samplers the scheduler-config tests run: all but the Karras twins of Euler, Heun,
    DPM++ 2M SDE, DPM2, DPM2 a, LMS and DPM++ 2S, and every exponential and beta twin, which read
    a config as their plain sampler does (scheduler_test runs every sampler on the configs; this
    is about the CLI reading a model's config)."""
    twins = {"euler_karras", "heun_karras", "dpmpp_2m_sde_karras", "dpm2_karras", "dpm2_a_karras",
             "lms_karras", "dpmpp_2s_karras", "unipc_karras",
             *reference_module("make_pipeline_fixture").TWINS}
    return {k: v for k, v in samplers().items() if k not in twins}


def diffusers_images(req, init=None, latents=False):
    """diffusers' images for a request (img2img from `init`: a picture, or latents); with
    `latents`, the txt2img latents (output_type "latent") instead."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(PIPE)
    pipe.set_progress_bar_config(disable=True)
    cls, extra = samplers()[req["sampler"]]
    gens = [torch.Generator("cpu").manual_seed(req["seed"] + i) for i in range(req["batch"])]
    kwargs = dict(prompt=req["prompt"], negative_prompt=req.get("negative") or None,
                  num_inference_steps=req["steps"], guidance_scale=req["guidance"],
                  num_images_per_prompt=req["batch"], generator=gens, eta=req.get("eta", 0.0))
    if init is not None:
        p = StableDiffusionImg2ImgPipeline(**pipe.components)
        p.scheduler = cls.from_config(pipe.scheduler.config, **extra)
        images = p(image=init, strength=req["strength"], **kwargs).images
    else:
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
        images = pipe(height=req["height"], width=req["width"],
                      output_type="latent" if latents else "pil", **kwargs).images
        if latents:
            return images
    return [np.array(i).astype(int) for i in images]


def same_but_for_batch_rounding(alone, in_batch):
    """--from makes image i of a batch again alone (batch 1). The CPU's kernels may round a
    batch of 4 UNet inputs (2 images, guided) differently from a batch of 2: on the AMD EPYC
    test machines a few values come out 1/255 apart (7 of 6912 in the hires case), so such an
    image is the same within 1/255; parameters lost on the way would change far more."""
    import numpy as np
    from PIL import Image
    a = np.array(Image.open(alone)).astype(int)
    b = np.array(Image.open(in_batch)).astype(int)
    return a.shape == b.shape and np.abs(a - b).max() <= 1


def cli_flags(req):
    flags = ["--model", str(PIPE), "--prompt", req["prompt"], "--steps", str(req["steps"]),
             "--guidance", str(req["guidance"]), "--seed", str(req["seed"]),
             "--sampler", req["sampler"], "--batch", str(req["batch"]), "--device", "cpu"]
    if req.get("negative"):
        flags += ["--negative", req["negative"]]
    if "width" in req:
        flags += ["--width", str(req["width"]), "--height", str(req["height"])]
    if "eta" in req:
        flags += ["--eta", str(req["eta"])]
    return flags


@pytest.mark.parametrize("req", [
    {"prompt": "a green triangle", "steps": 7, "guidance": 6.0, "seed": 424242, "sampler": "euler_a",
     "batch": 2, "negative": "red", "width": 40, "height": 32},
    {"prompt": "two circles", "steps": 13, "guidance": 1.0, "seed": 7, "sampler": "dpmpp_2m_karras",
     "batch": 1, "width": 32, "height": 48},
    {"prompt": "a star", "steps": 9, "guidance": 3.5, "seed": 99, "sampler": "ddim", "batch": 1,
     "eta": 0.3, "width": 32, "height": 32},
    {"prompt": "a yellow moon", "steps": 10, "guidance": 7.5, "seed": 1234,
     "sampler": "dpmpp_2m_sde_beta", "batch": 2, "negative": "blue", "width": 32, "height": 32},
])
def test_txt2img_matches_diffusers(tmp_path, req):
    import numpy as np
    from PIL import Image
    r = run("txt2img", *cli_flags(req), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert len(paths) == req["batch"]
    want = diffusers_images(req)
    for path, w in zip(paths, want):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert got.shape == w.shape
        assert np.abs(got - w).max() <= 2, path
    meta = Image.open(paths[-1]).text
    assert f"Seed: {req['seed'] + req['batch'] - 1}" in meta["parameters"]
    stored = json.loads(meta["sdstudio"])
    assert stored["seed"] == req["seed"] + req["batch"] - 1 and stored["batch_count"] == 1
    assert stored["sampler"] == req["sampler"] and stored["steps"] == req["steps"]
    if req["sampler"] == "dpmpp_2m_sde_beta":  # A1111's sampler and schedule type
        assert "Sampler: DPM++ 2M SDE, Schedule type: Beta," in meta["parameters"]


# --- A1111's prompt syntax: emphasis, BREAK, long prompts ----------------------------------

LONG = ", ".join(["a small red circle on a blue background"] * 9)  # 98 tokens: two chunks


def a1111():
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import a1111_prompts
    return a1111_prompts


def image_arrays(images):
    import numpy as np
    return [np.array(i).astype(int) for i in images]


def a1111_model(tmp_path):
    """The tiny pipeline, its text encoder's final layer norm given a weight and bias as a
    trained CLIP has. (At random init the bias is 0, so each chunk's states have a mean of 0 to
    rounding, and A1111's keeping of the mean divides 0 by 0.) -> (folder, diffusers pipeline)"""
    import torch
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(PIPE)
    pipe.set_progress_bar_config(disable=True)
    norm = pipe.text_encoder.final_layer_norm
    g = torch.Generator().manual_seed(2026)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.2 * torch.randn(norm.weight.shape, generator=g))
        norm.bias.copy_(0.3 + 0.3 * torch.randn(norm.bias.shape, generator=g))
    pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model", pipe


def assert_meaningful(z):
    """Encoded prompts with a mean far from 0 (A1111's mean-keeping divides by it)."""
    import torch
    assert torch.isfinite(z).all() and z.mean().abs() > 0.01, z.mean()


@pytest.mark.parametrize("case", [
    # Emphasis in both prompts (one chunk each), batch 2, "Original".
    {"prompt": "a (red:1.3) [circle] on a ((blue)) background", "negative": "green (square:0.8)",
     "syntax": "a1111", "sampler": "euler", "steps": 6, "guidance": 7.5, "batch": 2},
    # Two chunks each: a long prompt, and a negative that breaks; A1111's "No norm".
    {"prompt": LONG + ", (yellow:1.4)", "negative": "green BREAK [square]",
     "syntax": "a1111-no-norm", "sampler": "dpmpp_2m", "steps": 5, "guidance": 5.0, "batch": 1},
    # Unguided: the prompt alone, three chunks.
    {"prompt": "red BREAK " + LONG, "negative": "", "syntax": "a1111", "sampler": "ddim",
     "steps": 4, "guidance": 1.0, "batch": 1},
])
def test_a1111_prompt_syntax_matches_diffusers_with_a1111s_embeddings(tmp_path, case):
    """The prompts encoded as A1111 does (tests/app/a1111_prompts.py, with transformers' text
    encoder), handed to diffusers' pipeline as prompt_embeds: the same images."""
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    import numpy as np
    ref = a1111()
    model, pipe = a1111_model(tmp_path)
    cls, extra = samplers()[case["sampler"]]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    norm = case["syntax"] == "a1111"
    cond = ref.encode(pipe.text_encoder, pipe.tokenizer, case["prompt"], norm=norm)
    uncond = ref.encode(pipe.text_encoder, pipe.tokenizer, case["negative"], norm=norm) \
        if case["guidance"] > 1 else None  # unguided: no negative prompt
    assert uncond is None or cond.shape[1] == uncond.shape[1]
    assert_meaningful(cond)
    gens = [torch.Generator("cpu").manual_seed(5 + i) for i in range(case["batch"])]
    want = image_arrays(pipe(prompt_embeds=cond, negative_prompt_embeds=uncond,
                             num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                             num_images_per_prompt=case["batch"], generator=gens, height=32,
                             width=32).images)
    assert want[0].std() > 5  # a picture, not a flat field
    r = run("txt2img", "--model", str(model), "--prompt", case["prompt"], "--negative",
            case["negative"], "--prompt-syntax", case["syntax"], "--sampler", case["sampler"],
            "--steps", str(case["steps"]), "--guidance", str(case["guidance"]), "--seed", "5",
            "--batch", str(case["batch"]), "--width", "32", "--height", "32", "--device", "cpu",
            "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    for path, w in zip(paths, want, strict=True):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - w).max() <= 1, path
    # Read as diffusers reads it, the same prompt is another picture.
    plain = image_arrays(pipe(prompt=case["prompt"], negative_prompt=case["negative"],
                              num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                              num_images_per_prompt=case["batch"], height=32, width=32,
                              generator=[torch.Generator("cpu").manual_seed(5 + i)
                                         for i in range(case["batch"])]).images)
    assert np.abs(plain[0] - want[0]).max() > 8
    params = Image.open(paths[0]).text
    emphasis = {"a1111": "Original", "a1111-no-norm": "No norm"}[case["syntax"]]
    assert f"Emphasis: {emphasis}," in params["parameters"], params["parameters"]
    assert json.loads(params["sdstudio"])["prompt_syntax"] == case["syntax"]
    # --from brings the syntax back, from our JSON or from A1111's text alone.
    r = run("txt2img", "--model", str(model), "--from", paths[0], "--device", "cpu",
            "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    again = np.array(Image.open(r.stdout.strip()).convert("RGB")).astype(int)
    assert np.abs(again - want[0]).max() <= 1


def test_a1111_prompt_syntax_on_sdxl_matches_diffusers(tmp_path):
    """SDXL: each encoder's chunks weighed on their own, the pooled embedding of the first
    chunk (tests/app/a1111_prompts.py), handed to diffusers' SDXL pipeline."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image
    ref = a1111()
    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL / "tiny-sdxl")
    pipe.set_progress_bar_config(disable=True)
    prompt = "a (red:1.4) circle BREAK [blue] background"
    cond, pooled = ref.encode_xl(pipe, prompt)
    uncond, uncond_pooled = ref.encode_xl(pipe, "green square BREAK (noise:0.7)")
    assert cond.shape[1] == 154
    assert_meaningful(cond)
    gens = [torch.Generator("cpu").manual_seed(3 + i) for i in range(2)]
    want = image_arrays(pipe(prompt_embeds=cond, pooled_prompt_embeds=pooled,
                             negative_prompt_embeds=uncond,
                             negative_pooled_prompt_embeds=uncond_pooled, num_inference_steps=4,
                             guidance_scale=5.0, num_images_per_prompt=2, generator=gens,
                             height=32, width=32).images)
    r = run("txt2img", "--model", str(SDXL / "tiny-sdxl"), "--prompt", prompt, "--negative",
            "green square BREAK (noise:0.7)", "--prompt-syntax", "a1111", "--steps", "4",
            "--guidance", "5", "--seed", "3", "--batch", "2", "--width", "32", "--height", "32",
            "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for path, w in zip(r.stdout.split(), want, strict=True):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - w).max() <= 1, path


def test_a1111_prompts_of_different_lengths_run_the_unet_apart(tmp_path):
    """A prompt of two chunks and a negative of one: as in A1111, the UNet takes each alone
    (not padded side by side). The reference: diffusers' UNet, Euler scheduler and VAE in that
    loop, with the prompts encoded as A1111 does."""
    import numpy as np
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from PIL import Image
    ref = a1111()
    model, pipe = a1111_model(tmp_path)
    cond = ref.encode(pipe.text_encoder, pipe.tokenizer, LONG)
    uncond = ref.encode(pipe.text_encoder, pipe.tokenizer, "(green:1.2) square")
    assert (cond.shape[1], uncond.shape[1]) == (154, 77)
    assert_meaningful(cond)
    assert_meaningful(uncond)
    sched = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(5)
    gens = [torch.Generator("cpu").manual_seed(11 + i) for i in range(2)]
    latents = torch.cat([torch.randn([1, 4, 16, 16], generator=g) for g in gens])
    latents = latents * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.scale_model_input(latents, t)
            e_neg = pipe.unet(x, t, encoder_hidden_states=uncond.repeat(2, 1, 1)).sample
            e_pos = pipe.unet(x, t, encoder_hidden_states=cond.repeat(2, 1, 1)).sample
            latents = sched.step(e_neg + 6.0 * (e_pos - e_neg), t, latents).prev_sample
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    want = ((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round()
    assert np.isfinite(want).all() and want.std() > 5
    r = run("txt2img", "--model", str(model), "--prompt", LONG, "--negative",
            "(green:1.2) square", "--prompt-syntax", "a1111", "--sampler", "euler",
            "--steps", "5", "--guidance", "6", "--seed", "11", "--batch", "2", "--width", "32",
            "--height", "32", "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for path, w in zip(r.stdout.split(), want, strict=True):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - w.astype(int)).max() <= 1, path


def test_a1111_prompt_editing_and_alternation_switch_the_texts_as_the_steps_go(tmp_path):
    """[dog house:a red circle:0.2] at 6 steps reads "dog house" for model calls 0-1 and "a red
    circle" from call 2 (A1111's denoiser counts calls from 0 and switches after
    int(0.2 * 6) = 1); [square|star] takes turns from call 2 (calls 0 and 1 read the first).
    The reference: diffusers' UNet and Euler scheduler in that loop, each call with its texts
    encoded as A1111 does. (The tiny model's picture is set in its first calls: a switch there
    shows.)"""
    import numpy as np
    import torch
    from diffusers import EulerDiscreteScheduler
    from PIL import Image
    ref = a1111()
    model, pipe = a1111_model(tmp_path)
    prompt, negative = "[dog house window:a red circle:0.2], (green:1.2) grass", "[square|star]"
    prompts = ["dog house window, (green:1.2) grass"] * 2 + ["a red circle, (green:1.2) grass"] * 4
    negatives = ["square", "square", "star", "square", "star", "square"]
    r = run("tokenize", str(model), prompt, "--prompt-syntax", "a1111", "--steps", "6")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["calls 0-1: " + prompts[0], "calls 2 on: " + prompts[2]]
    r = run("tokenize", str(model), negative, "--prompt-syntax", "a1111", "--steps", "6")
    assert r.stdout.splitlines()[:4] == ["calls 0-1: square", "calls 2-2: star",
                                         "calls 3-3: square", "calls 4-4: star"], r.stdout

    def enc(text):
        return ref.encode(pipe.text_encoder, pipe.tokenizer, text)

    def images(prompts, negatives):
        sched = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        sched.set_timesteps(6)
        latents = torch.randn([1, 4, 16, 16], generator=torch.Generator().manual_seed(21))
        latents = latents * sched.init_noise_sigma
        with torch.no_grad():
            for k, t in enumerate(sched.timesteps):
                x = sched.scale_model_input(latents, t)
                context = torch.cat([enc(negatives[k]), enc(prompts[k])])
                e_neg, e_pos = pipe.unet(torch.cat([x, x]), t,
                                         encoder_hidden_states=context).sample.chunk(2)
                latents = sched.step(e_neg + 5.0 * (e_pos - e_neg), t, latents).prev_sample
            out = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        return ((out / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round()

    want = images(prompts, negatives)[0].astype(int)
    r = run("txt2img", "--model", str(model), "--prompt", prompt, "--negative", negative,
            "--prompt-syntax", "a1111", "--sampler", "euler", "--steps", "6", "--guidance", "5",
            "--seed", "21", "--width", "32", "--height", "32", "--device", "cpu",
            "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    got = np.array(Image.open(r.stdout.strip()).convert("RGB")).astype(int)
    assert np.abs(got - want).max() <= 1
    # Without the switch (a red circle all through) it is another picture.
    still = images(prompts[2:3] * 6, negatives)[0].astype(int)
    assert np.abs(got - still).max() > 2


def composed_images(pipe, parts, negative, guidance, steps, seeds, size=32, xl=False):
    """A1111's composable prompts by hand: diffusers' UNet, Euler scheduler and VAE, each
    part encoded as A1111 does, the parts padded to the longest with their last vector, the
    noise prediction negative + sum of weight x guidance x (part - negative)."""
    import numpy as np
    import torch
    from diffusers import EulerDiscreteScheduler
    ref = a1111()
    if xl:
        encoded = [ref.encode_xl(pipe, text) for text, _ in parts]
        conds = ref.pad_to_longest([c for c, _ in encoded])
        pooled = [p for _, p in encoded]
        uncond, uncond_pooled = ref.encode_xl(pipe, negative)
    else:
        conds = ref.pad_to_longest([ref.encode(pipe.text_encoder, pipe.tokenizer, text)
                                    for text, _ in parts])
        uncond = ref.encode(pipe.text_encoder, pipe.tokenizer, negative)
    sched = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    side = size // 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    latents = torch.cat([torch.randn([1, 4, side, side],
                                     generator=torch.Generator().manual_seed(s)) for s in seeds])
    latents = latents * sched.init_noise_sigma
    b = len(seeds)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.scale_model_input(latents, t)

            def unet(context, k):
                extra = {}
                if xl:
                    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=x.dtype)
                    extra["added_cond_kwargs"] = {
                        "text_embeds": (uncond_pooled if k < 0 else pooled[k]).repeat(b, 1),
                        "time_ids": time_ids.repeat(b, 1)}
                return pipe.unet(x, t, encoder_hidden_states=context.repeat(b, 1, 1),
                                 **extra).sample

            e_neg = unet(uncond, -1)
            eps = e_neg.clone()
            for k, (cond, (_, weight)) in enumerate(zip(conds, parts)):
                eps += (unet(cond, k) - e_neg) * (weight * guidance)
            latents = sched.step(eps, t, latents).prev_sample
        out = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    want = ((out / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round()
    assert np.isfinite(want).all() and want.std() > 5
    return [w.astype(int) for w in want]


@pytest.mark.parametrize("case", [
    # Three parts, one of two chunks (the others padded to it), a negative weight; the
    # negative prompt of one chunk, so the UNet takes it apart; batch 2.
    {"prompt": "a red circle AND (green:1.2) grass BREAK blue sky:0.7 AND square:-0.4",
     "negative": "yellow", "guidance": 6.0, "batch": 2},
    # One part with a weight, at guidance 1: the negative prompt is run all the same (the
    # weight as a guidance of 4).
    {"prompt": "a red circle on a blue background : 4", "negative": "green square",
     "guidance": 1.0, "batch": 1},
])
def test_a1111_and_guides_each_part_against_the_negative(tmp_path, case):
    """A1111's composable prompts (AND, a part's weight after ':') against the reference loop
    (composed_images) with diffusers' UNet."""
    import numpy as np
    from PIL import Image
    ref = a1111()
    model, pipe = a1111_model(tmp_path)
    parts = ref.split_and(case["prompt"])
    assert len(parts) > 1 or parts[0][1] != 1
    seeds = [13 + i for i in range(case["batch"])]
    want = composed_images(pipe, parts, case["negative"], case["guidance"], 5, seeds)
    r = run("txt2img", "--model", str(model), "--prompt", case["prompt"], "--negative",
            case["negative"], "--prompt-syntax", "a1111", "--sampler", "euler", "--steps", "5",
            "--guidance", str(case["guidance"]), "--seed", "13", "--batch", str(case["batch"]),
            "--width", "32", "--height", "32", "--device", "cpu", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    for path, w in zip(paths, want, strict=True):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - w).max() <= 1, path
    # Read as one prompt (the plain syntax), the same text is another picture.
    r = run("txt2img", "--model", str(model), "--prompt", case["prompt"], "--negative",
            case["negative"], "--sampler", "euler", "--steps", "5", "--guidance",
            str(case["guidance"]), "--seed", "13", "--width", "32", "--height", "32",
            "--device", "cpu", "--out", str(tmp_path / "plain"))
    assert r.returncode == 0, r.stderr
    plain = np.array(Image.open(r.stdout.strip()).convert("RGB")).astype(int)
    assert np.abs(plain - want[0]).max() > 8
    # tokenize shows the parts; encode, which writes one prompt's embeddings, refuses them.
    r = run("tokenize", str(model), case["prompt"], "--prompt-syntax", "a1111")
    assert r.returncode == 0, r.stderr
    heads = [line for line in r.stdout.splitlines() if line.startswith("part ")]
    assert heads == [f"part {k + 1}, weight {w:g}: {t}" for k, (t, w) in enumerate(parts)]
    r = run("encode", "--model", str(model), "--prompt", case["prompt"], "--prompt-syntax",
            "a1111", "--device", "cpu", "--out", str(tmp_path / "e.safetensors"))
    assert r.returncode == 1 and "AND" in r.stderr, r.stderr


def test_a1111_and_on_sdxl_gives_each_part_its_pooled_embedding(tmp_path):
    import numpy as np
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image
    ref = a1111()
    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL / "tiny-sdxl")
    prompt, negative = "a (red:1.3) circle AND a blue background BREAK stars:0.5", "green"
    want = composed_images(pipe, ref.split_and(prompt), negative, 5.0, 4, [3], xl=True)
    r = run("txt2img", "--model", str(SDXL / "tiny-sdxl"), "--prompt", prompt, "--negative",
            negative, "--prompt-syntax", "a1111", "--sampler", "euler", "--steps", "4",
            "--guidance", "5", "--seed", "3", "--width", "32", "--height", "32",
            "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    got = np.array(Image.open(r.stdout.strip()).convert("RGB")).astype(int)
    assert np.abs(got - want[0]).max() <= 1


def test_styles_from_a1111s_file_merge_into_the_prompts(tmp_path):
    """A styles.csv as A1111 writes it (Python's csv module, a byte order mark), --style merged
    as A1111's merge_prompts does; styles --save and --delete write a file Python reads back."""
    import csv
    from PIL import Image
    styles = tmp_path / "styles.csv"
    rows = [{"name": "Oil, \"fine\"", "prompt": "oil painting of {prompt}, framed",
             "negative_prompt": "blurry,\nlow quality"},
            {"name": "Night", "prompt": " at night ", "negative_prompt": ""}]
    with open(styles, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "prompt", "negative_prompt"])
        writer.writeheader()
        writer.writerows(rows)

    def merge(style, prompt):  # A1111's merge_prompts
        if "{prompt}" in style:
            return style.replace("{prompt}", prompt)
        return ", ".join(p for p in (prompt.strip(), style.strip()) if p)

    prompt, negative = "a red circle", "green"
    for row in rows:
        prompt, negative = merge(row["prompt"], prompt), merge(row["negative_prompt"], negative)
    assert prompt == "oil painting of a red circle, framed, at night"
    r = run("txt2img", "--model", str(PIPE), "--prompt", "a red circle", "--negative", "green",
            "--styles", str(styles), "--style", rows[0]["name"], "--style", "Night",
            "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    req = json.loads(Image.open(r.stdout.strip()).text["sdstudio"])
    assert (req["prompt"], req["negative_prompt"]) == (prompt, negative)
    r = run("txt2img", "--model", str(PIPE), "--prompt", "x", "--styles", str(styles),
            "--style", "Day")
    assert r.returncode == 2 and "--style 'Day': no such style in " + str(styles) in r.stderr
    assert 'its styles: Oil, "fine", Night' in r.stderr
    # Saved and deleted through the CLI: Python's csv reads what A1111 would.
    r = run("styles", "--styles", str(styles), "--save", "Mine", "--prompt", " {prompt}, \"q\"",
            "--negative", "a,\r\nb")
    assert r.returncode == 0, r.stderr
    r = run("styles", "--styles", str(styles), "--delete", "Night")
    assert r.returncode == 0, r.stderr
    with open(styles, encoding="utf-8-sig", newline="") as f:
        back = list(csv.DictReader(f, skipinitialspace=True))
    assert back == [rows[0], {"name": "Mine", "prompt": " {prompt}, \"q\"",
                              "negative_prompt": "a,\r\nb"}]
    r = run("styles", "--styles", str(styles))
    assert r.returncode == 0 and r.stdout.startswith('Oil, "fine"\n  prompt: oil painting of')
    (tmp_path / "bad.csv").write_text("title,body\n")
    r = run("styles", "--styles", str(tmp_path / "bad.csv"))
    assert r.returncode == 1 and str(tmp_path / "bad.csv") + ": not a styles file" in r.stderr


def test_prompts_file_makes_a_generation_a_line(tmp_path):
    """--prompts-file: a prompt a line, or flags split as shlex.split splits them (A1111's
    prompts from file); each line's image equals the one txt2img makes from those flags."""
    import shlex
    import numpy as np
    from PIL import Image
    line = """--prompt "a blue square, \\"big\\" it's" --seed 7 --steps 2 --negative 'no "red"'"""
    assert shlex.split(line)[1] == 'a blue square, "big" it\'s'
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeffa red circle\r\n\n  # a comment\n" + line +
                       "\n--guidance 3 --prompt x\\ y  \n", encoding="utf-8")
    base = ["--model", str(PIPE), "--steps", "3", "--seed", "5", "--width", "32", "--height",
            "32", "--device", "cpu"]
    r = run("txt2img", *base, "--prompts-file", str(prompts), "--out", str(tmp_path / "all"))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    reqs = [json.loads(Image.open(p).text["sdstudio"]) for p in paths]
    assert [(q["prompt"], q.get("negative_prompt", ""), q["seed"], q["steps"],
             q["guidance_scale"]) for q in reqs] == [
        ("a red circle", "", 5, 3, 7.5),
        ('a blue square, "big" it\'s', 'no "red"', 7, 2, 7.5),
        ("x y", "", 5, 3, 3.0)]
    # The second line's image is what txt2img makes from its flags alone.
    r = run("txt2img", *base, *shlex.split(line), "--out", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    one = np.array(Image.open(r.stdout.strip()).convert("RGB")).astype(int)
    assert np.array_equal(one, np.array(Image.open(paths[1]).convert("RGB")).astype(int))
    # Every line is checked before anything runs; the error names the file and the line.
    for bad, message in [("a cat\n--steps x\n", ":2: --steps expects a number, not 'x'"),
                         ("--prompt 'a cat\n", ":1: a ' is not closed"),
                         ("a\n\n--model other\n", ":3: --model is the command's"),
                         ("# nothing\n", ": no prompts in it")]:
        prompts.write_text(bad)
        out = tmp_path / "bad"
        r = run("txt2img", *base, "--prompts-file", str(prompts), "--out", str(out))
        assert r.returncode in (1, 2) and str(prompts) + message in r.stderr, (bad, r.stderr)
        assert not out.exists()


def test_plain_prompts_say_emphasis_none_where_a1111_would_read_brackets(tmp_path):
    from PIL import Image
    r = run("txt2img", "--model", str(PIPE), "--prompt", "a (red) circle", "--steps", "1",
            "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    meta = Image.open(r.stdout.strip()).text
    assert "Emphasis: None," in meta["parameters"], meta["parameters"]
    assert "prompt_syntax" not in json.loads(meta["sdstudio"])
    r = run("txt2img", "--model", str(PIPE), "--prompt", "x", "--prompt-syntax", "A1111")
    assert r.returncode == 2 and "'A1111' is not one of plain, a1111, a1111-no-norm" in r.stderr
    r = run("txt2img", "--model", str(PIPE), "--prompt", "(x:1.2.3)", "--prompt-syntax", "a1111",
            "--steps", "1", "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 1 and "the weight '1.2.3' is not a number" in r.stderr, r.stderr


def model_with_scheduler(tmp_path, cls_name, settings, base=None):
    """The tiny pipeline (or the folder `base`) with a scheduler config as diffusers' class
    saves it; and diffusers' pipeline loaded from that folder."""
    import diffusers
    model = tmp_path / "model"
    shutil.copytree(base or PIPE, model)
    shutil.rmtree(model / "scheduler")
    getattr(diffusers, cls_name)(**settings).save_config(model / "scheduler")
    index = json.loads((model / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", cls_name]
    (model / "model_index.json").write_text(json.dumps(index))
    pipe = diffusers.DiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    return model, pipe


# A model's scheduler config as diffusers' classes save it, with their own defaults or settings
# seen in the wild: the CLI must make every sampler from it as the pipeline does (its load-time
# rewrite of steps_offset and clip_sample, then from_config), or refuse where diffusers does.
SCHEDULER_CONFIGS = {
    "pndm_default": ("PNDMScheduler", {}),  # linear betas, PNDM's Runge-Kutta warm-up
    "ddim_default": ("DDIMScheduler", {}),  # clip_sample, set_alpha_to_one, steps_offset 0
    "euler_default": ("EulerDiscreteScheduler", {}),
    "dpm_default": ("DPMSolverMultistepScheduler", {}),  # lambda_min_clipped: -Infinity
    "unipc_default": ("UniPCMultistepScheduler", {}),  # solver_type bh2
    "cosine_trailing": ("DDIMScheduler", {"beta_schedule": "squaredcos_cap_v2",
                                          "timestep_spacing": "trailing"}),
    "zero_snr_v": ("DDIMScheduler", {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                                     "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                     "beta_end": 0.012, "prediction_type": "v_prediction"}),
    "x0_prediction": ("DDIMScheduler", {"prediction_type": "sample"}),
    "dpm_3m_sigma_min": ("DPMSolverMultistepScheduler", {"solver_order": 3,
                                                         "final_sigmas_type": "sigma_min"}),
    "heun_default": ("HeunDiscreteScheduler", {}),  # its own beta range
}


@pytest.mark.parametrize("config", sorted(SCHEDULER_CONFIGS))
def test_every_sampler_from_a_models_scheduler_config_matches_diffusers(tmp_path, config):
    import numpy as np
    import torch
    from PIL import Image
    cls_name, settings = SCHEDULER_CONFIGS[config]
    model, pipe = model_with_scheduler(tmp_path, cls_name, settings)
    loaded = pipe.scheduler.config
    compared = 0
    for sampler, (cls, extra) in config_samplers().items():
        try:
            pipe.scheduler = cls.from_config(loaded, **extra)
            want = np.array(pipe("a red circle", num_inference_steps=5, guidance_scale=7.5,
                                 generator=[torch.Generator("cpu").manual_seed(3)], width=32,
                                 height=32).images[0]).astype(int)
            if pipe.scheduler.timesteps.isnan().any():
                raise ValueError("NaN")  # DPM2 a on the cosine schedule: a black image
        except (ValueError, NotImplementedError):
            want = None  # diffusers refuses (e.g. x0 prediction with PNDM): so must we
        except IndexError:
            continue  # diffusers breaks (Karras sigmas near zero SNR): nothing to compare
        out = tmp_path / sampler
        r = run("txt2img", "--model", str(model), "--prompt", "a red circle", "--steps", "5",
                "--guidance", "7.5", "--seed", "3", "--width", "32", "--height", "32",
                "--sampler", sampler, "--out", str(out))
        if want is None:
            assert r.returncode == 1 and "scheduler_config.json" in r.stderr, (sampler, r.stderr)
            continue
        assert r.returncode == 0, (sampler, r.stderr)
        got = np.array(Image.open(r.stdout.split()[0]).convert("RGB")).astype(int)
        assert np.abs(got - want).max() <= 2, sampler
        compared += 1
    assert compared >= 4


@pytest.mark.parametrize("cls_name,settings,sampler", [
    ("DDIMScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                       "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}, "ddim"),
    ("EulerAncestralDiscreteScheduler", {}, "euler_a"),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "dpmpp_2m_karras"),
    ("UniPCMultistepScheduler", {}, "unipc"),
    ("HeunDiscreteScheduler", {"use_karras_sigmas": True}, "heun_karras"),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "dpmpp_2m_sde"),
    ("LCMScheduler", {"original_inference_steps": 40}, "lcm"),
    ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}, "dpm2_a_karras"),
    ("LMSDiscreteScheduler", {"use_karras_sigmas": True}, "lms_karras"),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3, "lambda_min_clipped": -2.5}, "dpmpp_2s"),
    ("EulerDiscreteScheduler", {"use_beta_sigmas": True}, "euler_beta"),
    ("DPMSolverMultistepScheduler", {"use_exponential_sigmas": True}, "dpmpp_2m_exponential"),
])
def test_without_a_sampler_the_models_own_scheduler_runs(tmp_path, cls_name, settings, sampler):
    # As diffusers: StableDiffusionPipeline.from_pretrained(model)(prompt) with no swap.
    import numpy as np
    import torch
    from PIL import Image
    model, pipe = model_with_scheduler(tmp_path, cls_name, settings)
    want = np.array(pipe("a red circle", num_inference_steps=6, guidance_scale=7.5, width=32,
                         height=32, generator=[torch.Generator("cpu").manual_seed(8)]).images[0])
    r = run("txt2img", "--model", str(model), "--prompt", "a red circle", "--steps", "6",
            "--seed", "8", "--width", "32", "--height", "32", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    path = r.stdout.split()[0]
    got = np.array(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(got - want.astype(int)).max() <= 2
    assert json.loads(Image.open(path).text["sdstudio"])["sampler"] == sampler


def test_a_scheduler_class_we_do_not_have_falls_back_to_pndm_and_says_so(tmp_path):
    from PIL import Image
    model, _ = model_with_scheduler(tmp_path, "DEISMultistepScheduler", {})
    # PNDM made from DEIS's config has PNDM's own warm-up (skip_prk_steps false): 4+ steps.
    r = run("txt2img", "--model", str(model), "--prompt", "a red circle", "--steps", "5",
            "--width", "32", "--height", "32", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "DEISMultistepScheduler is not one SD Studio has; using pndm" in r.stderr
    assert json.loads(Image.open(r.stdout.split()[0]).text["sdstudio"])["sampler"] == "pndm"


@pytest.mark.parametrize("config", ["pndm_default", "ddim_default", "zero_snr_v"])
def test_img2img_from_a_models_scheduler_config_matches_diffusers(tmp_path, config):
    # The strength cut on each sampler's schedule (PNDM's warm-up after the cut included).
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    model, pipe = model_with_scheduler(tmp_path, *SCHEDULER_CONFIGS[config])
    loaded = pipe.scheduler.config
    img2img = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    init = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8))
    init.save(tmp_path / "init.png")
    for sampler, (cls, extra) in config_samplers().items():
        img2img.scheduler = cls.from_config(loaded, **extra)
        want = np.array(img2img("a red circle", image=init, strength=0.6, num_inference_steps=10,
                                guidance_scale=7.5,
                                generator=[torch.Generator("cpu").manual_seed(4)]).images[0])
        r = run("img2img", "--model", str(model), "--prompt", "a red circle", "--init",
                str(tmp_path / "init.png"), "--strength", "0.6", "--steps", "10", "--guidance",
                "7.5", "--seed", "4", "--sampler", sampler, "--out", str(tmp_path / sampler))
        assert r.returncode == 0, (sampler, r.stderr)
        got = np.array(Image.open(r.stdout.split()[0]).convert("RGB")).astype(int)
        assert np.abs(got - want.astype(int)).max() <= 2, sampler


# Model configs beyond the tiny SD 1.x one: SD 2.x's knobs (per-block heads, linear
# projections, upcast attention, a GELU text encoder of another width, a tokenizer padding with
# "!"), three blocks with one layer each and 8 norm groups and a tokenizer with
# model_max_length 24, and the timestep embedding's flip/shift, two transformer layers per
# block, other epsilons and VAE scaling factor. (UNet, VAE, text encoder, tokenizer) settings.
MODEL_VARIANTS = {
    "sd2_knobs": ({"attention_head_dim": [2, 4], "use_linear_projection": True,
                   "upcast_attention": True, "cross_attention_dim": 48}, {},
                  {"hidden_size": 48, "hidden_act": "gelu"}, {"pad_token": "!"}),
    "three_blocks": ({"block_out_channels": [16, 32, 32], "layers_per_block": 1,
                      "norm_num_groups": 8, "attention_head_dim": 4,
                      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                           "DownBlock2D"],
                      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]},
                     {"block_out_channels": [16, 32, 32], "norm_num_groups": 8,
                      "layers_per_block": 1, "down_block_types": ["DownEncoderBlock2D"] * 3,
                      "up_block_types": ["UpDecoderBlock2D"] * 3}, {},
                     {"model_max_length": 24}),
    "embedding_knobs": ({"flip_sin_to_cos": False, "freq_shift": 1,
                         "transformer_layers_per_block": 2, "norm_eps": 1e-6},
                        {"scaling_factor": 0.13025}, {"num_hidden_layers": 2, "layer_norm_eps": 1e-6},
                        {}),
}


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
def test_other_model_configs_match_diffusers(tmp_path, variant):
    import diffusers
    import numpy as np
    import torch
    import transformers
    from PIL import Image
    unet_cfg, vae_cfg, text_cfg, tokenizer_cfg = MODEL_VARIANTS[variant]
    base = {c: json.loads((PIPE / c / "config.json").read_text()) for c in ("unet", "vae", "text_encoder")}
    torch.manual_seed(1)
    unet = diffusers.UNet2DConditionModel.from_config({**base["unet"], **unet_cfg})
    vae = diffusers.AutoencoderKL.from_config({**base["vae"], **vae_cfg})
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**{**base["text_encoder"], **text_cfg}))
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(PIPE)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(PIPE / "tokenizer", **tokenizer_cfg)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=pipe.scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    model = tmp_path / "model"
    pipe.save_pretrained(model, safe_serialization=True)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    loaded = pipe.scheduler.config
    for sampler, cls, extra in [("pndm", diffusers.PNDMScheduler, {}),
                                ("dpmpp_2m_karras", diffusers.DPMSolverMultistepScheduler,
                                 {"use_karras_sigmas": True})]:
        pipe.scheduler = cls.from_config(loaded, **extra)
        gens = [torch.Generator("cpu").manual_seed(5 + i) for i in range(2)]
        want = pipe("a blue square", negative_prompt="red", num_inference_steps=5,
                    guidance_scale=6.0, generator=gens, num_images_per_prompt=2, width=48,
                    height=32).images
        r = run("txt2img", "--model", str(model), "--prompt", "a blue square", "--negative", "red",
                "--steps", "5", "--guidance", "6", "--seed", "5", "--batch", "2", "--width", "48",
                "--height", "32", "--sampler", sampler, "--out", str(tmp_path / sampler))
        assert r.returncode == 0, r.stderr
        for path, w in zip(r.stdout.split(), want):
            got = np.array(Image.open(path).convert("RGB")).astype(int)
            assert np.abs(got - np.array(w).astype(int)).max() <= 2, (sampler, path)


# A guidance-distilled UNet, as latent consistency models (LCM_Dreamshaper_v7, lcm-sdxl) ship
# with the LCM scheduler: the guidance goes into the time embedding (time_cond_proj_dim) and the
# UNet runs once a step, without the negative prompt. The guidance projection is scaled up so
# that the guidance shows in the tiny model's pixels (checked below, or the test would prove
# little).
@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_a_guidance_distilled_unet_matches_diffusers(tmp_path, family):
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    base = PIPE if family == "sd" else SDXL / "tiny-sdxl"
    model, _ = model_with_scheduler(tmp_path, "LCMScheduler", {}, base)
    config = json.loads((base / "unet" / "config.json").read_text())
    torch.manual_seed(2)
    unet = diffusers.UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 32})
    with torch.no_grad():
        unet.time_embedding.cond_proj.weight.mul_(20)
    shutil.rmtree(model / "unet")
    unet.save_pretrained(model / "unet", safe_serialization=True)
    txt = diffusers.AutoPipelineForText2Image.from_pretrained(model)
    img = diffusers.AutoPipelineForImage2Image.from_pretrained(model)
    for pipe in (txt, img):
        pipe.set_progress_bar_config(disable=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(
        tmp_path / "init.png")
    wants = {}
    for guidance in (8.5, 2.0):
        gens = [torch.Generator("cpu").manual_seed(4 + i) for i in range(2)]
        wants[("txt2img", guidance)] = txt(
            "a blue square", negative_prompt="red", num_inference_steps=4,
            guidance_scale=guidance, generator=gens, num_images_per_prompt=2, width=32,
            height=32).images
        wants[("img2img", guidance)] = img(
            "a blue square", image=Image.open(tmp_path / "init.png"), strength=0.6,
            num_inference_steps=4, guidance_scale=guidance,
            generator=[torch.Generator("cpu").manual_seed(4)]).images
    # The guidance is seen (the images at 8.5 and 2 differ), the negative prompt is not.
    for command in ("txt2img", "img2img"):
        a, b = image_arrays(wants[(command, 8.5)])[0], image_arrays(wants[(command, 2.0)])[0]
        assert np.abs(a - b).max() > 8, command  # four times the tolerance
    for (command, guidance), want in wants.items():
        args = ["--init", str(tmp_path / "init.png"), "--strength", "0.6"] \
            if command == "img2img" else ["--batch", "2", "--width", "32", "--height", "32"]
        out = tmp_path / f"{command}-{guidance}"
        r = run(command, "--model", str(model), "--prompt", "a blue square", "--negative", "red",
                "--steps", "4", "--guidance", str(guidance), "--seed", "4", "--out", str(out),
                *args)
        assert r.returncode == 0, r.stderr
        got = [np.array(Image.open(p).convert("RGB")).astype(int) for p in r.stdout.split()]
        assert len(got) == len(want)
        for g, w in zip(got, image_arrays(want)):
            assert np.abs(g - w).max() <= 2, (command, guidance)
        assert "Sampler: LCM" in Image.open(r.stdout.split()[0]).text["parameters"]
    # AND needs the negative prompt's prediction, which such a UNet never makes.
    r = run("txt2img", "--model", str(model), "--prompt", "a cat AND a dog", "--prompt-syntax",
            "a1111", "--steps", "2", "--width", "32", "--height", "32", "--out",
            str(tmp_path / "and"))
    assert r.returncode == 1 and "guidance-distilled" in r.stderr and "unet" in r.stderr, r.stderr
    # The original single-file layout has no name for the guidance embedding.
    r = run("export", str(model), "--out", str(tmp_path / "x.safetensors"))
    assert r.returncode == 1 and "time_cond_proj_dim" in r.stderr, r.stderr
    assert not (tmp_path / "x.safetensors").exists()


# An init image whose size is not a multiple of 8 is resized down to one as diffusers' image
# processor does it (Pillow's Lanczos); 41x49 -> 40x48 (the tiny VAE's scale is 2, so the
# size diffusers rounds to is the same as ours).
@pytest.mark.parametrize("size", [(32, 32), (41, 49)])
def test_img2img_matches_diffusers(tmp_path, size):
    import numpy as np
    from PIL import Image
    w, h = size
    init = Image.fromarray((np.indices((h, w)).sum(0) * 4 % 256).astype(np.uint8)).convert("RGB")
    init.save(tmp_path / "init.png")
    req = {"prompt": "a blue square", "steps": 10, "guidance": 7.5, "seed": 5, "sampler": "euler",
           "batch": 2, "strength": 0.6, "negative": "noise"}
    r = run("img2img", *cli_flags(req), "--init", str(tmp_path / "init.png"), "--strength", "0.6",
            "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    want = diffusers_images(req, init=init)
    for path, image in zip(r.stdout.split(), want):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert got.shape == (h - h % 8, w - w % 8, 3)
        assert np.abs(got - image).max() <= 2, path
    assert "Denoising strength: 0.6" in Image.open(r.stdout.split()[0]).text["parameters"]


def test_a_second_run_into_the_same_folder_keeps_the_first_images(tmp_path):
    # Same name and seed twice: the second image gets a new name, the first file is untouched.
    args = ["--model", str(PIPE), "--prompt", "a red circle", "--steps", "2", "--width", "32",
            "--height", "32", "--seed", "7", "--out", str(tmp_path)]
    first = run("txt2img", *args, "--guidance", "7")
    assert first.returncode == 0, first.stderr
    before = Path(first.stdout.split()[0]).read_bytes()
    second = run("txt2img", *args, "--guidance", "3")
    assert second.returncode == 0, second.stderr
    assert [Path(p).name for p in first.stdout.split() + second.stdout.split()] == [
        "txt2img-7.png", "txt2img-7-2.png"]
    assert Path(first.stdout.split()[0]).read_bytes() == before
    grid = ["--model", str(PIPE), "--prompt", "a red circle", "--steps", "2", "--width", "32",
            "--height", "32", "--x", "guidance=1,3", "--out", str(tmp_path)]
    sheets = [run("grid", *grid).stdout.split()[0] for _ in range(2)]
    assert [Path(p).name for p in sheets] == ["grid-guidance-0.png", "grid-guidance-0-2.png"]


def test_grid_is_a_labelled_sheet_with_the_same_seed(tmp_path):
    from PIL import Image
    r = run("grid", "--model", str(PIPE), "--prompt", "a cat", "--x", "steps=2,4,6",
            "--y", "guidance=1,5", "--seed", "8", "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    im = Image.open(r.stdout.strip())
    assert im.width >= 3 * 32 and im.height > 2 * 32
    params = im.text["parameters"]
    assert "X Type: Steps" in params and "Y Type: CFG Scale" in params and "Seed: 8" in params
    assert "Size: 32x32" in params  # the model's size, not 0x0
    grid = json.loads(im.text["sdstudio-grid"])
    assert grid["x"]["values"] == ["2", "4", "6"] and grid["y"]["axis"] == "guidance"
    assert "cell 6/6" in r.stderr and "s left" in r.stderr


def test_a_grid_cell_the_model_cannot_run_stops_the_grid_before_the_first_cell(tmp_path):
    # LCM takes at most the model's original_inference_steps (50 by default): the 60-step
    # column is refused up front, not after the cells before it were made.
    r = run("grid", "--model", str(PIPE), "--prompt", "a cat", "--sampler", "lcm",
            "--x", "steps=2,4,60", "--y", "guidance=1,2", "--out", str(tmp_path / "out"))
    assert r.returncode == 1, r.stderr
    assert "grid cell (Steps: 60, CFG: 1): lcm takes 1 to 50 steps" in r.stderr, r.stderr
    assert "cell 1/6" not in r.stderr
    assert not list(tmp_path.glob("out/*.png"))


def _find(sheet, cell):
    """The (x, y) where `cell` sits in `sheet` pixel for pixel, or None."""
    import numpy as np
    h, w = cell.shape[:2]
    for y in range(sheet.shape[0] - h + 1):
        for x in range(sheet.shape[1] - w + 1):
            if np.array_equal(sheet[y:y + h, x:x + w], cell):
                return x, y
    return None


def test_grid_prompt_search_and_replace_and_clip_skip_cells_are_those_images(tmp_path):
    """Each cell of a prompt S/R x clip skip grid is the image txt2img makes with that prompt
    and clip skip; --cells writes them with their parameters, and the sheet shows them."""
    import numpy as np
    from PIL import Image
    prompt, negative = "a red circle, red border", "red noise"
    r = run("grid", "--model", str(PIPE), "--prompt", prompt, "--negative", negative,
            "--x", 'prompt=red,"dark, blue",""', "--y", "clip_skip=0-1", "--steps", "4",
            "--sampler", "euler", "--seed", "3", "--device", "cpu", "--cells",
            "--out", str(tmp_path / "grid"))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split("\n")[:-1]
    assert len(paths) == 7, paths
    sheet = np.array(Image.open(paths[0]).convert("RGB"))
    params = Image.open(paths[0]).text["parameters"]
    assert 'X Type: Prompt S/R, X Values: "red,\\"dark, blue\\",\\"\\""' in params, params
    assert 'Y Type: Clip skip, Y Values: "1, 2"' in params, params
    places = set()
    for j, clip_skip in enumerate([0, 1]):
        for i, word in enumerate(["red", "dark, blue", ""]):
            cell_path = paths[1 + j * 3 + i]
            assert cell_path.endswith(f"-x{i + 1}-y{j + 1}.png")
            want_prompt = prompt.replace("red", word)
            want_negative = negative.replace("red", word)
            cell = Image.open(cell_path)
            saved = json.loads(cell.text["sdstudio"])
            assert (saved["prompt"], saved["negative_prompt"], saved["clip_skip"], saved["seed"]) \
                == (want_prompt, want_negative, clip_skip, 3)
            single = run("txt2img", "--model", str(PIPE), "--prompt", want_prompt,
                         "--negative", want_negative, "--clip-skip", str(clip_skip),
                         "--steps", "4", "--sampler", "euler", "--seed", "3", "--device", "cpu",
                         "--out", str(tmp_path / f"single{i}{j}"))
            assert single.returncode == 0, single.stderr
            want = np.array(Image.open(single.stdout.strip()).convert("RGB"))
            got = np.array(cell.convert("RGB"))
            assert np.array_equal(got, want), cell_path
            place = _find(sheet, got)
            assert place is not None, cell_path
            places.add(place)
    # Six different places, in three columns and two rows.
    assert len(places) == 6
    assert len({x for x, _ in places}) == 3 and len({y for _, y in places}) == 2
    # A search text in neither prompt: refused before the model loads.
    r = run("grid", "--model", str(PIPE), "--prompt", prompt, "--x", "prompt=green,blue")
    assert r.returncode == 1 and "'green' is in neither the prompt nor the negative prompt" \
        in r.stderr


def test_png_parameters_keep_their_lines_and_spaces(tmp_path):
    from PIL import Image
    prompt = "a  red\ncircle"
    r = run("txt2img", "--model", str(PIPE), "--prompt", prompt, "--negative", "noise",
            "--steps", "2", "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    im = Image.open(r.stdout.strip())
    lines = im.text["parameters"].split("\n")
    assert lines[:3] == ["a  red", "circle", "Negative prompt: noise"], lines
    assert lines[3].startswith("Steps: 2, Sampler: PLMS, CFG scale: 7.5, Seed: 0"), lines
    assert json.loads(im.text["sdstudio"])["prompt"] == prompt


def test_from_png_regenerates_the_same_image(tmp_path):
    """txt2img --from PNG takes every parameter from the PNG (our JSON, or A1111's text alone)
    and makes the same image; flags given override it."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    def pixels(path):
        return np.array(Image.open(path).convert("RGB"))

    r = run("txt2img", "--model", str(PIPE), "--prompt", "a red  circle", "--negative", "blue",
            "--steps", "4", "--guidance", "5.5", "--seed", "77", "--sampler", "ddim",
            "--eta", "0.5", "--clip-skip", "1", "--width", "40", "--height", "32",
            "--device", "cpu", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    png = r.stdout.strip()
    r = run("txt2img", "--model", str(PIPE), "--from", png, "--device", "cpu",
            "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    again = r.stdout.strip()
    assert np.array_equal(pixels(again), pixels(png))
    assert json.loads(Image.open(again).text["sdstudio"]) == json.loads(Image.open(png).text["sdstudio"])
    # A1111's parameters text alone (as from A1111 or another tool).
    info = PngInfo()
    info.add_text("parameters", Image.open(png).text["parameters"])
    Image.open(png).save(tmp_path / "a1111.png", pnginfo=info)
    r = run("txt2img", "--model", str(PIPE), "--from", str(tmp_path / "a1111.png"),
            "--device", "cpu", "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(pixels(r.stdout.strip()), pixels(png))
    # A flag overrides the PNG, before or after --from.
    r = run("txt2img", "--model", str(PIPE), "--seed", "78", "--from", png, "--device", "cpu",
            "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    changed = json.loads(Image.open(r.stdout.strip()).text["sdstudio"])
    assert changed["seed"] == 78 and changed["eta"] == 0.5 and changed["clip_skip"] == 1
    assert not np.array_equal(pixels(r.stdout.strip()), pixels(png))
    r = run("txt2img", "--model", str(PIPE), "--from", str(tmp_path / "missing.png"))
    assert r.returncode == 1 and "missing.png: cannot read the image" in r.stderr
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    r = run("txt2img", "--model", str(PIPE), "--from", str(tmp_path / "plain.png"))
    assert r.returncode == 1 and "plain.png: has no generation parameters" in r.stderr


def test_generation_errors_are_clear(tmp_path):
    r = run("txt2img", "--model", str(PIPE), "--width", "33", "--device", "cpu")
    assert r.returncode == 1 and "multiple of 8" in r.stderr
    r = run("txt2img", "--model", str(PIPE), "--sampler", "dpm_fast")
    assert r.returncode == 1 and "unknown sampler 'dpm_fast'" in r.stderr
    r = run("img2img", "--model", str(PIPE), "--init", str(tmp_path / "nope.png"))
    assert r.returncode == 1 and "nope.png: cannot read the image" in r.stderr
    # diffusers fails inside torch here (an empty tensor's reshape): we say why.
    init = tmp_path / "init.png"
    from PIL import Image
    Image.new("RGB", (32, 32), (200, 60, 30)).save(init)
    r = run("img2img", "--model", str(PIPE), "--init", str(init), "--strength", "0.3",
            "--steps", "3", "--sampler", "euler", "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and ("strength 0.3 with 3 steps leaves no denoising step "
                                  "(3 x 0.3 is below 1)") in r.stderr, r.stderr
    r = run("txt2img", "--model", str(PIPE), "--dtype", "fp16", "--device", "cpu")
    assert r.returncode == 1 and "fp16 is for CUDA GPUs" in r.stderr
    r = run("grid", "--model", str(PIPE), "--x", "colour=red")
    assert r.returncode == 2 and "unknown axis 'colour'" in r.stderr


# --- single-file checkpoints ------------------------------------------------------------------

def _original_checkpoint():
    return reference_module("original_checkpoint")


def single_file_of(pipe_dir, out_file, dtype=None):
    _original_checkpoint().write(pipe_dir, out_file, dtype=dtype)
    return out_file


def original_layout_of(pipe_dir):
    return _original_checkpoint().convert(pipe_dir)


def test_a_single_file_checkpoint_makes_diffusers_images(tmp_path):
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    # Half-precision weights, as most shared checkpoints are, read into fp32 on both sides.
    ckpt = single_file_of(PIPE, tmp_path / "tiny.safetensors", dtype=torch.float16)
    pipe = diffusers.StableDiffusionPipeline.from_single_file(
        str(ckpt), config=str(PIPE), local_files_only=True, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    gens = [torch.Generator("cpu").manual_seed(31 + i) for i in range(2)]
    want = pipe("a blue square", negative_prompt="red", num_inference_steps=6, guidance_scale=5.0,
                generator=gens, num_images_per_prompt=2, width=32, height=40).images
    r = run("txt2img", "--model", str(ckpt), "--config", str(PIPE), "--prompt", "a blue square",
            "--negative", "red", "--steps", "6", "--guidance", "5", "--seed", "31", "--batch", "2",
            "--width", "32", "--height", "40", "--sampler", "dpmpp_2m", "--device", "cpu",
            "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    for path, w in zip(r.stdout.split(), want):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - np.array(w).astype(int)).max() <= 2, path

    r = run("info", str(ckpt), "--config", str(PIPE))
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[3:] if line.strip()}
    assert rows["unet"][2] == "F16" and rows["unet"][4:] == ["tiny.safetensors", "(model.diffusion_model.*)"]
    assert f"configs: {PIPE}" in r.stdout
    # Without --config an SD 1.x file is read with SD 1.5's configs, which this tiny one does
    # not fit: the error says so and where the configs came from.
    r = run("txt2img", "--model", str(ckpt), "--steps", "1", "--out", str(tmp_path / "x"))
    assert r.returncode == 1
    assert "tiny.safetensors: tensor" in r.stderr and "models/sd1-config" in r.stderr, r.stderr
    r = run("tokenize", str(ckpt), "a red fox")
    assert r.returncode == 0 and r.stdout.split()[:5] == ["49406", "320", "736", "3240", "49407"]
    cfg = tmp_path / "cfg"  # a config folder whose tokenizer pads to 24
    shutil.copytree(TINY / "tokenizer", cfg / "tokenizer")
    tc = json.loads((cfg / "tokenizer" / "tokenizer_config.json").read_text())
    (cfg / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({**tc, "model_max_length": 24}))
    r = run("tokenize", str(ckpt), "a red fox", "--padded", "--config", str(cfg))
    assert r.returncode == 0 and len(r.stdout.split()) == 25, r.stdout  # 24 ids, then the count
    (tmp_path / "old.ckpt").write_bytes(b"PK\x03\x04")
    r = run("info", str(tmp_path / "old.ckpt"))
    assert r.returncode == 1 and "old.ckpt: not a readable PyTorch checkpoint" in r.stderr


class RunsACommand:
    """What a hostile .ckpt carries: unpickling it in Python (torch.load without weights_only)
    runs the command."""
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def pixels(paths):
    import numpy as np
    from PIL import Image
    return [np.array(Image.open(p).convert("RGB")) for p in paths]


def test_ckpt_files_and_bin_folders_make_the_same_images_and_run_nothing(tmp_path):
    import diffusers
    import torch
    from safetensors.torch import load_file
    st = single_file_of(PIPE, tmp_path / "tiny.safetensors", dtype=torch.float16)
    marker = tmp_path / "the_pickle_ran"
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(st)), "global_step": 4000, "epoch": 2,
                "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.1)}},
                "hook": RunsACommand(f"touch {marker}")}, ckpt)
    gen = ["--prompt", "a blue square", "--negative", "red", "--steps", "4", "--seed", "8",
           "--width", "32", "--height", "40", "--sampler", "euler_a", "--device", "cpu"]
    images = {}
    for name, model in [("st", st), ("ckpt", ckpt)]:
        r = run("txt2img", "--model", str(model), "--config", str(PIPE), *gen,
                "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        images[name] = pixels(r.stdout.split())
    assert (images["st"][0] == images["ckpt"][0]).all()
    assert not marker.exists(), "the .ckpt's pickle ran a command"
    r = run("info", str(ckpt), "--config", str(PIPE))
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[3:] if line.strip()}
    assert rows["unet"][2] == "F16" and rows["unet"][4] == "tiny.ckpt", rows["unet"]
    # export converts a .ckpt to safetensors: the same file as from the .safetensors.
    for name, model in [("st", st), ("ckpt", ckpt)]:
        r = run("export", str(model), "--config", str(PIPE), "--out", str(tmp_path / f"{name}.out.safetensors"))
        assert r.returncode == 0, r.stderr
    a, b = (load_file(str(tmp_path / f"{n}.out.safetensors")) for n in ("st", "ckpt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not marker.exists()

    # A diffusers folder with PyTorch's .bin weights only (as older models on the hub are).
    bin_dir = tmp_path / "bin-sd"
    diffusers.StableDiffusionPipeline.from_pretrained(PIPE).save_pretrained(
        bin_dir, safe_serialization=False)
    te = bin_dir / "text_encoder"  # transformers 5 writes safetensors only; older ones wrote this
    torch.save(load_file(str(te / "model.safetensors")), te / "pytorch_model.bin")
    (te / "model.safetensors").unlink()
    assert not list(bin_dir.rglob("*.safetensors")) and len(list(bin_dir.rglob("*.bin"))) == 3
    for name, model in [("folder", PIPE), ("bin", bin_dir)]:
        r = run("txt2img", "--model", str(model), *gen, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        images[name] = pixels(r.stdout.split())
    assert (images["folder"][0] == images["bin"][0]).all()
    r = run("info", str(bin_dir))
    assert r.returncode == 0 and "diffusion_pytorch_model.bin" in r.stdout, r.stdout


def assert_reads_back_as(folder, single_file, config, dtype):
    """diffusers' from_single_file reads `single_file` (written in `dtype`) as the pipeline
    `folder`: every tensor of its models (three, SDXL's four), rounded to that dtype."""
    import diffusers
    import torch
    single = type(folder).from_single_file(
        str(single_file), config=str(config), local_files_only=True, torch_dtype=torch.float32)
    for c in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if not hasattr(folder, c):
            continue
        a, b = getattr(folder, c).state_dict(), getattr(single, c).state_dict()
        assert a.keys() == b.keys(), c
        for k in a:
            assert torch.equal(a[k].to(dtype).float(), b[k]), (dtype, c, k)


def test_export_writes_a_single_file_that_diffusers_and_we_read_back(tmp_path):
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    folder = diffusers.StableDiffusionPipeline.from_pretrained(PIPE)
    for dtype, torch_dtype in [("fp32", torch.float32), ("fp16", torch.float16)]:
        out = tmp_path / f"tiny-{dtype}.safetensors"
        r = run("export", str(PIPE), "--out", str(out), "--dtype", dtype)
        assert r.returncode == 0, r.stderr
        with safe_open(out, "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32" if dtype == "fp32" else "F16"}
            # The original's names and shapes (its VAE attention projections are 1x1 convs).
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        assert shapes == {k: list(v.shape) for k, v in original_layout_of(PIPE).items()}
        assert_reads_back_as(folder, out, PIPE, torch_dtype)
    # Our own reading of the fp32 file makes the folder's images exactly.
    flags = ["--prompt", "a cat", "--steps", "3", "--seed", "2", "--sampler", "euler",
             "--device", "cpu"]
    r1 = run("txt2img", "--model", str(PIPE), *flags, "--out", str(tmp_path / "a"))
    r2 = run("txt2img", "--model", str(tmp_path / "tiny-fp32.safetensors"), "--config", str(PIPE),
             *flags, "--out", str(tmp_path / "b"))
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    a = np.array(Image.open(r1.stdout.strip()))
    b = np.array(Image.open(r2.stdout.strip()))
    assert np.array_equal(a, b)
    r = run("export", str(PIPE), "--out", str(tmp_path / "x.safetensors"), "--dtype", "bf16")
    assert r.returncode == 2 and "fp16 or fp32" in r.stderr


SD2 = FIXTURES / "single_file_sd2"


def test_an_sd2_single_file_opens_with_sd2_configs_and_exports_back(tmp_path):
    """An SD 2.x file (OpenCLIP text encoder) is read with SD 2.1's configs unless --config says
    otherwise; with its own configs it makes diffusers' from_single_file images (the fixture's),
    and exporting its folder gives a file diffusers reads back as the folder."""
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    ckpt, cfg = SD2 / "model.safetensors", SD2 / "config"
    r = run("info", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert "configs: " in r.stdout and r.stdout.split("configs: ")[1].split()[0].endswith(
        "models/sd2-config"), r.stdout
    # SD 2.x's tokenizer pads with "!" (id 0), from the bundled SD 2.1 configs.
    r = run("tokenize", str(ckpt), "a red fox", "--padded")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:7] == ["49406", "320", "736", "3240", "49407", "0", "0"], r.stdout
    r = run("info", str(ckpt), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "(cond_stage_model.model.*)" in r.stdout and "DDIMScheduler" in r.stdout, r.stdout
    case = json.loads((SD2 / "cases.json").read_text())[0]
    req = case["request"]
    r = run("txt2img", "--model", str(ckpt), "--config", str(cfg), "--prompt", req["prompt"],
            "--negative", req["negative_prompt"], "--steps", str(req["steps"]),
            "--guidance", str(req["guidance_scale"]), "--seed", str(req["seed"]),
            "--batch", str(req["batch_count"]), "--width", str(req["width"]),
            "--height", str(req["height"]), "--sampler", req["sampler"], "--device", "cpu",
            "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file
    want = load_file(SD2 / "expected.safetensors")[case["name"]].numpy().astype(int)
    for i, path in enumerate(r.stdout.split()):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - want[i]).max() <= 2, path
    out = tmp_path / "sd2-export.safetensors"
    r = run("export", str(SD2 / "model"), "--out", str(out), "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    folder = diffusers.StableDiffusionPipeline.from_pretrained(SD2 / "model")
    assert_reads_back_as(folder, out, cfg, torch.float32)


# --- dataset / train ---------------------------------------------------------------------------

def test_dataset_writes_images_with_captions(tmp_path):
    r = run("dataset", "--out", str(tmp_path / "d"), "--count", "5", "--size", "64", "--seed", "3")
    assert r.returncode == 0, r.stderr
    pngs = sorted((tmp_path / "d").glob("*.png"))
    assert len(pngs) == 5
    for p in pngs:
        caption = p.with_suffix(".txt").read_text().strip()
        assert "background" in caption
    again = tmp_path / "e"
    run("dataset", "--out", str(again), "--count", "5", "--size", "64", "--seed", "3")
    assert (again / "000004.png").read_bytes() == (tmp_path / "d" / "000004.png").read_bytes()


def test_train_says_which_image_has_no_caption(tmp_path):
    data = tmp_path / "d"
    run("dataset", "--out", str(data), "--count", "3", "--size", "64")
    (data / "000001.txt").unlink()
    r = run("train", "--data", str(data), "--out", str(tmp_path / "m"), "--tokenizer",
            str(TINY / "tokenizer"), "--steps", "1")
    assert r.returncode == 1
    assert "000001.png: no caption file beside it" in r.stderr
    r = run("train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m"))
    assert r.returncode == 1 and "no such folder" in r.stderr
    r = run("train", "--data", str(data), "--out", str(tmp_path / "m"), "--steps", "many")
    assert r.returncode == 2 and "--steps expects a number" in r.stderr


def test_train_ctrl_c_saves_a_checkpoint_and_a_rerun_continues(tmp_path):
    import signal
    import time
    data, out, log = tmp_path / "d", tmp_path / "m", tmp_path / "stderr.txt"
    run("dataset", "--out", str(data), "--count", "4", "--size", "32")
    args = ["train", "--data", str(data), "--out", str(out), "--tokenizer",
            str(TINY / "tokenizer"), "--resolution", "32", "--steps", "3", "--device", "cpu"]
    with open(log, "w") as err:
        p = subprocess.Popen([CLI, *args, "--vae-steps", "100000"], stderr=err, text=True)
        deadline = time.time() + 120
        while "vae step 10/" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 130
    stderr = log.read_text()
    assert "the checkpoint is saved in" in stderr and "run the same command again" in stderr
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["phase"] == "vae" and state["step"] >= 10
    r = run(*args, "--vae-steps", str(state["step"] + 5))
    assert r.returncode == 0, r.stderr
    assert "vae step 10/" not in r.stderr  # resumed after the saved step, not from the start
    assert "unet step 3/3" in r.stderr
    assert (out / "model_index.json").exists()


SDXL = FIXTURES / "sdxl"


def test_an_sdxl_folder_makes_diffusers_images_from_the_cli(tmp_path):
    """The fixture's StableDiffusionXLPipeline images (checked in C++ too), through the CLI: its
    flags, the model's own Euler scheduler without --sampler, and the PNG's parameters."""
    import numpy as np
    from safetensors.torch import load_file
    from PIL import Image
    cases = {c["name"]: c for c in json.loads((SDXL / "cases.json").read_text())}
    want = load_file(str(SDXL / "expected.safetensors"))
    req = cases["euler_neg_b2_wide"]["request"]
    r = run("txt2img", "--model", str(SDXL / "tiny-sdxl"), "--prompt", req["prompt"],
            "--negative", req["negative_prompt"], "--steps", str(req["steps"]),
            "--guidance", str(req["guidance_scale"]), "--seed", str(req["seed"]),
            "--batch", str(req["batch_count"]), "--width", str(req["width"]),
            "--height", str(req["height"]), "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert len(paths) == 2
    for i, path in enumerate(paths):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - want["euler_neg_b2_wide"][i].numpy().astype(int)).max() <= 2, path
    params = Image.open(paths[0]).text["parameters"]
    assert "Sampler: Euler" in params and "Size: 48x32" in params, params
    # No size given: the model's own (its UNet's sample_size 16 x its two-level VAE's 2).
    r = run("txt2img", "--model", str(SDXL / "tiny-sdxl"), "--prompt", "x", "--steps", "1",
            "--device", "cpu", "--out", str(tmp_path / "native"))
    assert r.returncode == 0, r.stderr
    assert Image.open(r.stdout.split()[0]).size == (32, 32)

    r = run("info", str(SDXL / "tiny-sdxl"))
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[3:] if line.strip()}
    assert rows["text_encoder_2"][1] == "CLIPTextModelWithProjection", rows
    assert rows["tokenizer_2"][2:5] == ["-", "49,408", "tokens"], rows["tokenizer_2"]
    for png in tmp_path.glob("*.png"):  # a dataset: the images made above, captioned
        png.with_suffix(".txt").write_text("a red circle")
    r = run("train", "--data", str(tmp_path), "--out", str(tmp_path / "t"), "--base",
            str(SDXL / "tiny-sdxl"), "--steps", "1")
    assert r.returncode == 1 and "an SDXL model; training fine-tunes SD 1.x and 2.x" in r.stderr, r.stderr


def test_an_sdxl_refiner_makes_diffusers_images_from_the_cli(tmp_path):
    """SDXL's refiner (the second text encoder alone, an aesthetic score in the UNet's size
    conditioning) through img2img with --aesthetic-score and --negative-aesthetic-score, against
    diffusers' StableDiffusionXLImg2ImgPipeline (checked in C++ too, with more cases)."""
    import numpy as np
    from safetensors.torch import load_file
    from PIL import Image
    refiner = SDXL / "tiny-sdxl-refiner"
    name = "refiner_img_dpmpp_2m_s0.8_no_negative_aesthetic"
    req = {c["name"]: c for c in json.loads((SDXL / "cases.json").read_text())}[name]["request"]
    want = load_file(str(SDXL / "expected.safetensors"))
    init = tmp_path / "init.png"
    Image.fromarray(want["init"].numpy()).save(init)
    flags = ["--model", str(refiner), "--prompt", req["prompt"], "--init", str(init),
             "--strength", str(req["strength"]), "--steps", str(req["steps"]),
             "--guidance", str(req["guidance_scale"]), "--seed", str(req["seed"]),
             "--sampler", req["sampler"], "--device", "cpu"]
    r = run("img2img", *flags, "--aesthetic-score", str(req["aesthetic_score"]),
            "--negative-aesthetic-score", str(req["negative_aesthetic_score"]),
            "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    png = r.stdout.split()[0]
    got = np.array(Image.open(png).convert("RGB")).astype(int)
    assert np.abs(got - want[name][0].numpy().astype(int)).max() <= 2
    meta = json.loads(Image.open(png).text["sdstudio"])
    assert (meta["aesthetic_score"], meta["negative_aesthetic_score"]) == (8.5, 1.0), meta
    # diffusers' defaults (6, 2.5) otherwise: another image.
    r = run("img2img", *flags, "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    other = np.array(Image.open(r.stdout.split()[0]).convert("RGB")).astype(int)
    assert np.abs(other - got).max() > 2
    r = run("img2img", *flags, "--aesthetic-score", "11", "--out", str(tmp_path / "c"))
    assert r.returncode != 0 and "aesthetic scores must be 0..10" in r.stderr, r.stderr
    # Its tokenizer is the second's; info says what it is.
    r = run("tokenize", str(refiner), "a blue disc")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1] == "3/75", r.stdout
    r = run("info", str(refiner))
    assert r.returncode == 0 and "SDXL refiner" in r.stdout, r.stdout


def test_sdxl_base_and_refiner_in_one_generation_match_diffusers_ensemble(tmp_path):
    """--refiner: the base until --refiner-switch-at, the refiner from its latents on the same
    generators (Euler a draws from them in both), as diffusers' denoising_end/denoising_start."""
    import numpy as np
    from safetensors.torch import load_file
    from PIL import Image
    name = "ensemble_euler_a_0.5_g1"
    req = {c["name"]: c for c in json.loads((SDXL / "cases.json").read_text())}[name]["request"]
    want = load_file(str(SDXL / "expected.safetensors"))[name]
    r = run("txt2img", "--model", str(SDXL / "tiny-sdxl"), "--prompt", req["prompt"],
            "--refiner", str(SDXL / req["refiner"]), "--refiner-switch-at",
            str(req["refiner_switch_at"]), "--steps", str(req["steps"]), "--guidance",
            str(req["guidance_scale"]), "--seed", str(req["seed"]), "--sampler", req["sampler"],
            "--width", str(req["width"]), "--height", str(req["height"]), "--device", "cpu",
            "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"step {req['steps']}/{req['steps']}" in r.stderr, r.stderr  # both parts counted
    png = r.stdout.split()[0]
    got = np.array(Image.open(png).convert("RGB")).astype(int)
    assert np.abs(got - want[0].numpy().astype(int)).max() <= 2
    params = Image.open(png).text["parameters"]
    assert "Refiner: tiny-sdxl-refiner, Refiner switch at: 0.5" in params, params
    # A grid over the switch (A1111's X/Y plot "Refiner switch at"): its 0.5 cell is that image.
    r = run("grid", "--model", str(SDXL / "tiny-sdxl"), "--prompt", req["prompt"],
            "--refiner", str(SDXL / req["refiner"]), "--steps", str(req["steps"]), "--guidance",
            str(req["guidance_scale"]), "--seed", str(req["seed"]), "--sampler", req["sampler"],
            "--width", str(req["width"]), "--height", str(req["height"]), "--device", "cpu",
            "--x", "refiner_switch=0.5,0.8", "--cells", "--out", str(tmp_path / "grid"))
    assert r.returncode == 0, r.stderr
    sheet, half, late = r.stdout.split()
    assert "X Type: Refiner switch at" in Image.open(sheet).text["parameters"]
    pixels = {p: np.array(Image.open(p).convert("RGB")) for p in (png, half, late)}
    assert np.array_equal(pixels[half], pixels[png])
    assert not np.array_equal(pixels[late], pixels[png])
    # img2img: the base from where the strength cuts the schedule until the switch, as
    # diffusers' SDXL img2img pipeline with strength and denoising_end, the refiner from there.
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline
    cls, extra = samplers()["euler_a"]
    gens = [torch.Generator("cpu").manual_seed(71 + i) for i in range(2)]
    kwargs = dict(prompt="a blue disc", negative_prompt="red", num_inference_steps=8,
                  guidance_scale=4.5, num_images_per_prompt=2, generator=gens)
    base = StableDiffusionXLImg2ImgPipeline.from_pretrained(SDXL / "tiny-sdxl")
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(SDXL / req["refiner"])
    for p in (base, refiner):
        p.set_progress_bar_config(disable=True)
        p.scheduler = cls.from_config(p.scheduler.config, **extra)
    latents = base(image=Image.open(png), strength=0.7, denoising_end=0.6, output_type="latent",
                   **kwargs).images
    want = refiner(image=latents, denoising_start=0.6, **kwargs).images
    flags = ["--model", str(SDXL / "tiny-sdxl"), "--prompt", "a blue disc", "--negative", "red",
             "--init", png, "--strength", "0.7", "--steps", "8", "--guidance", "4.5", "--seed",
             "71", "--batch", "2", "--sampler", "euler_a", "--device", "cpu"]
    r = run("img2img", *flags, "--refiner", str(SDXL / req["refiner"]), "--refiner-switch-at",
            "0.6", "--out", str(tmp_path / "i"))
    assert r.returncode == 0, r.stderr
    # The progress counts the steps that run: the strength's 5 of 8, split between the two.
    counts = re.findall(r"step (\d+)/(\d+)", r.stderr)
    assert counts and counts[-1] == ("5", "5"), r.stderr
    pngs = r.stdout.split()
    for got, w in zip(pngs, want, strict=True):
        got = np.array(Image.open(got).convert("RGB")).astype(int)
        assert np.abs(got - np.array(w).astype(int)).max() <= 2
    r = run("img2img", *flags, "--out", str(tmp_path / "plain"))  # the refiner does something
    plain = np.array(Image.open(r.stdout.split()[0]).convert("RGB")).astype(int)
    assert np.abs(plain - np.array(Image.open(pngs[0]).convert("RGB")).astype(int)).max() > 8
    # Inpainting: the base inpaints until the switch; the refiner, given its latents for its
    # image and the mask, blends the kept part back from them (diffusers' SDXL inpainting
    # pipelines with denoising_end and denoising_start), each image alone with its seed.
    from diffusers import StableDiffusionXLInpaintPipeline
    mask = np.zeros((req["height"], req["width"]), np.uint8)
    mask[4:20, 8:28] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    base = StableDiffusionXLInpaintPipeline.from_pretrained(SDXL / "tiny-sdxl")
    refiner = StableDiffusionXLInpaintPipeline.from_pretrained(SDXL / req["refiner"])
    for p in (base, refiner):
        p.set_progress_bar_config(disable=True)
        p.scheduler = cls.from_config(p.scheduler.config, **extra)
    want = []
    for i in range(2):
        kwargs.update(num_images_per_prompt=1,
                      generator=[torch.Generator("cpu").manual_seed(71 + i)])
        latents = base(image=Image.open(png), mask_image=Image.open(tmp_path / "mask.png"),
                       strength=0.85, denoising_end=0.7, output_type="latent", **kwargs).images
        want += refiner(image=latents, mask_image=Image.open(tmp_path / "mask.png"),
                        denoising_start=0.7, width=req["width"], height=req["height"],
                        **kwargs).images
    inpaint_flags = [f for f in flags if f not in ("--strength", "0.7")]
    r = run("inpaint", *inpaint_flags, "--strength", "0.85", "--mask", str(tmp_path / "mask.png"),
            "--refiner", str(SDXL / req["refiner"]), "--refiner-switch-at", "0.7",
            "--out", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    inpainted = r.stdout.split()
    for got, w in zip(inpainted, want, strict=True):
        got = np.array(Image.open(got).convert("RGB")).astype(int)
        assert np.abs(got - np.array(w).astype(int)).max() <= 2
    r = run("inpaint", *inpaint_flags, "--strength", "0.85", "--mask", str(tmp_path / "mask.png"),
            "--out", str(tmp_path / "m-plain"))
    plain = np.array(Image.open(r.stdout.split()[0]).convert("RGB")).astype(int)
    assert np.abs(plain - np.array(Image.open(inpainted[0]).convert("RGB")).astype(int)).max() > 8
    r = run("inpaint", *inpaint_flags, "--mask", str(tmp_path / "mask.png"), "--mask-padding", "4",
            "--refiner", str(SDXL / req["refiner"]), "--out", str(tmp_path / "m-bad"))
    assert r.returncode != 0 and "only the masked area" in r.stderr, r.stderr


def test_an_sdxl_single_file_makes_the_folder_images_and_exports_back(tmp_path):
    """An SDXL single file (Stability's layout, conditioner.embedders.*; the fixture's, which
    diffusers reads as the folder) opens with SDXL 1.0's bundled configs unless --config says
    otherwise; with the folder's configs it makes diffusers' images; the folder exported in fp16
    is read back by diffusers as the folder."""
    import diffusers
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    ckpt = SDXL / "tiny-sdxl.safetensors"
    r = run("info", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("configs: ")[1].split()[0].endswith("models/sdxl-config"), r.stdout
    assert "(conditioner.embedders.1.model.*)" in r.stdout, r.stdout
    # Those configs are SDXL 1.0's sizes, not the tiny model's: the error says so and whence.
    r = run("txt2img", "--model", str(ckpt), "--prompt", "x", "--steps", "1", "--device", "cpu",
            "--out", str(tmp_path / "no"))
    assert r.returncode == 1 and "The configs came from" in r.stderr, r.stderr
    assert "sdxl-config" in r.stderr, r.stderr
    name = "img_euler_s0.6_neg_b2"
    req = {c["name"]: c for c in json.loads((SDXL / "cases.json").read_text())}[name]["request"]
    want = load_file(str(SDXL / "expected.safetensors"))
    init = tmp_path / "init.png"
    Image.fromarray(want["init"].numpy()).save(init)
    r = run("img2img", "--model", str(ckpt), "--config", str(SDXL / "tiny-sdxl"), "--init",
            str(init), "--strength", str(req["strength"]), "--prompt", req["prompt"],
            "--negative", req["negative_prompt"], "--steps", str(req["steps"]),
            "--guidance", str(req["guidance_scale"]), "--seed", str(req["seed"]),
            "--batch", str(req["batch_count"]), "--sampler", req["sampler"], "--device", "cpu",
            "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert len(paths) == 2
    for i, path in enumerate(paths):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - want[name][i].numpy().astype(int)).max() <= 2, path
    out = tmp_path / "sdxl-export.safetensors"
    r = run("export", str(SDXL / "tiny-sdxl"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    folder = diffusers.StableDiffusionXLPipeline.from_pretrained(SDXL / "tiny-sdxl")
    assert_reads_back_as(folder, out, SDXL / "tiny-sdxl", torch.float16)


LORA = FIXTURES / "lora"


def test_loras_from_the_cli_make_diffusers_images_and_travel_with_the_png(tmp_path):
    """--lora FILE:W (twice, one negative) makes the images diffusers' load_lora_weights +
    set_adapters make (the fixture's); the PNG names them (A1111's "Lora" entry and our JSON) and
    --from that PNG makes the same image again; --lora after --from replaces its LoRAs; a LoRA
    that is missing or made for another model is an error naming the file."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file
    case = {c["name"]: c for c in json.loads((LORA / "cases.json").read_text())}["sd_two_weighted"]
    req = case["request"]
    (a, wa), (b, wb) = case["loras"]
    flags = ["--model", str(LORA / "tiny-sd"), "--prompt", req["prompt"],
             "--steps", str(req["steps"]), "--guidance", str(req["guidance_scale"]),
             "--seed", str(req["seed"]), "--width", str(req["width"]),
             "--height", str(req["height"]), "--sampler", req["sampler"], "--device", "cpu"]
    r = run("txt2img", *flags, "--batch", str(req["batch_count"]), "--lora",
            f"{LORA / a}:{wa}", "--lora", f"{LORA / b}:{wb}", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    want = load_file(str(LORA / "expected.safetensors"))["sd_two_weighted"].numpy().astype(int)
    paths = r.stdout.split()
    assert len(paths) == 2
    for i, path in enumerate(paths):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - want[i]).max() <= 2, path
    png = Image.open(paths[0])
    assert 'Lora: "sd_a: 0.6, sd_b: -0.8"' in png.text["parameters"], png.text["parameters"]
    assert json.loads(png.text["sdstudio"])["loras"] == [
        {"file": str(LORA / a), "weight": wa}, {"file": str(LORA / b), "weight": wb}]
    r = run("txt2img", "--model", str(LORA / "tiny-sd"), "--from", paths[0], "--device", "cpu",
            "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    again = np.array(Image.open(r.stdout.strip()).convert("RGB")).astype(int)
    assert np.abs(again - want[0]).max() <= 2
    r = run("txt2img", "--model", str(LORA / "tiny-sd"), "--from", paths[0], "--lora",
            str(LORA / a), "--device", "cpu", "--out", str(tmp_path / "other"))
    assert r.returncode == 0, r.stderr
    assert json.loads(Image.open(r.stdout.strip()).text["sdstudio"])["loras"] == [
        {"file": str(LORA / a), "weight": 1.0}]
    r = run("txt2img", *flags, "--lora", str(tmp_path / "missing.safetensors"), "--out",
            str(tmp_path / "no"))
    assert r.returncode == 1 and "missing.safetensors" in r.stderr, r.stderr
    r = run("txt2img", *flags, "--lora", str(LORA / "sdxl_a.safetensors") + ":0.5", "--out",
            str(tmp_path / "no"))
    assert r.returncode == 1 and "sdxl_a.safetensors: " in r.stderr, r.stderr
    assert "LoRA modules are not in this model" in r.stderr, r.stderr


def test_a_lora_weight_grid_has_diffusers_images_in_its_cells(tmp_path):
    """grid --x lora_weight=0,1: the weight-0 cell is diffusers' image without the LoRA, the
    weight-1 cell diffusers' image with it (the fixture's sd_one)."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file
    case = {c["name"]: c for c in json.loads((LORA / "cases.json").read_text())}["sd_one"]
    req, ((file, _),) = case["request"], case["loras"]
    r = run("grid", "--model", str(LORA / "tiny-sd"), "--prompt", req["prompt"],
            "--negative", req["negative_prompt"], "--steps", str(req["steps"]),
            "--guidance", str(req["guidance_scale"]), "--seed", str(req["seed"]),
            "--width", str(req["width"]), "--height", str(req["height"]),
            "--sampler", req["sampler"], "--lora", str(LORA / file), "--x", "lora_weight=0,1",
            "--device", "cpu", "--cells", "--out", str(tmp_path / "grid"))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split("\n")[:-1]
    assert len(paths) == 3, paths
    assert "X Type: LoRA weight" in Image.open(paths[0]).text["parameters"]
    want = load_file(str(LORA / "expected.safetensors"))
    for path, name in zip(paths[1:], ["sd_one.nolora", "sd_one"]):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - want[name][0].numpy().astype(int)).max() <= 2, (path, name)
    r = run("grid", "--model", str(LORA / "tiny-sd"), "--prompt", "x", "--x", "lora_weight=0,1")
    assert r.returncode == 1 and "no LoRA is chosen" in r.stderr, r.stderr


def test_a1111_lora_tags_in_the_prompt_find_their_files(tmp_path):
    """--lora-dir: A1111's <lora:NAME:W> tags come out of the prompt and bring in NAME's file,
    making the images of --lora FILE:W (the fixture's sd_two_weighted, diffusers' images)."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file
    case = {c["name"]: c for c in json.loads((LORA / "cases.json").read_text())}["sd_two_weighted"]
    req = case["request"]
    (a, wa), (b, wb) = case["loras"]
    prompt = f"{req['prompt']} <lora:{a[:-12]}:{wa}> <lora:{b[:-12]}:{wb}>"
    r = run("txt2img", "--model", str(LORA / "tiny-sd"), "--prompt", prompt, "--lora-dir",
            str(LORA), "--steps", str(req["steps"]), "--guidance", str(req["guidance_scale"]),
            "--seed", str(req["seed"]), "--width", str(req["width"]), "--height",
            str(req["height"]), "--sampler", req["sampler"], "--batch",
            str(req["batch_count"]), "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    want = load_file(str(LORA / "expected.safetensors"))["sd_two_weighted"].numpy().astype(int)
    for i, path in enumerate(r.stdout.split()):
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - want[i]).max() <= 2, path
    saved = json.loads(Image.open(r.stdout.split()[0]).text["sdstudio"])
    assert "<lora:" not in saved["prompt"] and len(saved["loras"]) == 2, saved
    r = run("txt2img", "--model", str(LORA / "tiny-sd"), "--prompt", prompt, "--out",
            str(tmp_path / "no"))
    assert r.returncode == 1 and "but no LoRA folder" in r.stderr, r.stderr


def test_a1111_two_weight_lora_tags_and_flags_weigh_the_unet_apart(tmp_path):
    """<lora:NAME:TE:UNET> and --lora FILE:TE:UNET: the text encoder's weight, then the UNet's,
    make the images diffusers' set_adapters makes with {"text_encoder": TE, "unet": UNET} (the
    fixture's sd_te_unet); the PNG keeps both."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file
    case = {c["name"]: c for c in json.loads((LORA / "cases.json").read_text())}["sd_te_unet"]
    req = case["request"]
    ((file, te, unet),) = case["loras"]
    want = load_file(str(LORA / "expected.safetensors"))["sd_te_unet"].numpy().astype(int)
    flags = ["--model", str(LORA / "tiny-sd"), "--steps", str(req["steps"]), "--guidance",
             str(req["guidance_scale"]), "--seed", str(req["seed"]), "--width",
             str(req["width"]), "--height", str(req["height"]), "--sampler", req["sampler"],
             "--device", "cpu"]
    for i, how in enumerate((["--prompt", f"{req['prompt']} <lora:{file[:-12]}:{te}:{unet}>",
                              "--lora-dir", str(LORA)],
                             ["--prompt", req["prompt"], "--lora", f"{LORA / file}:{te}:{unet}"])):
        r = run("txt2img", *flags, *how, "--out", str(tmp_path / str(i)))
        assert r.returncode == 0, r.stderr
        path = r.stdout.strip()
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert np.abs(got - want[0]).max() <= 2, (how, np.abs(got - want[0]).max())
        saved = json.loads(Image.open(path).text["sdstudio"])
        assert saved["loras"] == [{"file": str(LORA / file), "weight": te, "unet_weight": unet}]
        assert f'Lora: "{file[:-12]}: {te}:{unet}"' in Image.open(path).text["parameters"]


# --- inpainting -------------------------------------------------------------------------------

INPAINT = FIXTURES / "inpaint"


@pytest.mark.parametrize("model,sampler,strength,keep", [
    ("tiny-sd", "dpmpp_2m", 0.7, False), ("tiny-sd-inpaint", "euler_a", 1.0, False),
    ("tiny-sd-inpaint", "unipc", 0.5, True)])
def test_inpaint_makes_diffusers_images(tmp_path, model, sampler, strength, keep):
    """inpaint --init --mask: an ordinary and an inpainting model, against diffusers'
    StableDiffusionInpaintPipeline, image i alone with seed + i; a random mask of blobs (grey
    levels too) at another size than the init image, which sets the size; --keep-unmasked as
    diffusers' apply_overlay, with --mask-blur as mask_processor.blur."""
    import numpy as np
    import torch
    from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                           StableDiffusionInpaintPipeline, UniPCMultistepScheduler)
    from PIL import Image
    rng = np.random.default_rng(sum(map(ord, model + sampler)))
    init = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize((40, 32))
    blobs = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    mask = Image.fromarray(blobs).resize((24, 20), Image.BILINEAR).convert("RGB")
    init.save(tmp_path / "init.png")
    mask.save(tmp_path / "mask.png")
    req = {"prompt": "a cat in a hat", "steps": 9, "guidance": 6.0, "seed": 31, "sampler": sampler,
           "batch": 2, "negative": "dark"}
    flags = cli_flags(req)
    flags[flags.index("--model") + 1] = str(INPAINT / model)
    r = run("inpaint", *flags, "--init", str(tmp_path / "init.png"), "--mask",
            str(tmp_path / "mask.png"), "--strength", str(strength), "--out", str(tmp_path),
            *(["--keep-unmasked", "--mask-blur", "3"] if keep else []))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert [Path(p).name for p in paths] == ["inpaint-31.png", "inpaint-32.png"]
    pipe = StableDiffusionInpaintPipeline.from_pretrained(INPAINT / model)
    pipe.set_progress_bar_config(disable=True)
    if keep:
        mask = pipe.mask_processor.blur(mask, blur_factor=3)
    cls = {"dpmpp_2m": DPMSolverMultistepScheduler, "euler_a": EulerAncestralDiscreteScheduler,
           "unipc": UniPCMultistepScheduler}[sampler]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    for i, path in enumerate(paths):
        want = pipe(prompt=req["prompt"], negative_prompt=req["negative"], image=init,
                    mask_image=mask, num_inference_steps=req["steps"],
                    guidance_scale=req["guidance"], strength=strength, width=40, height=32,
                    generator=[torch.Generator("cpu").manual_seed(31 + i)]).images[0]
        if keep:
            want = pipe.image_processor.apply_overlay(mask.resize((40, 32), Image.LANCZOS),
                                                      init, want)
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert got.shape == (32, 40, 3)
        assert np.abs(got - np.array(want).astype(int)).max() <= 2, path
    meta = json.loads(Image.open(paths[0]).text["sdstudio"])
    assert meta["mask_image"] == str(tmp_path / "mask.png") and meta["strength"] == strength
    assert meta["keep_unmasked"] == keep and meta["mask_blur"] == (3 if keep else 0)
    assert ("Mask blur: 3" in Image.open(paths[0]).text["parameters"]) == keep
    # --from brings the parameters back, not the files: --init and --mask are given again.
    r = run("inpaint", "--model", str(INPAINT / model), "--from", paths[1], "--init",
            str(tmp_path / "init.png"), "--mask", str(tmp_path / "mask.png"), "--device", "cpu",
            "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.array(Image.open(r.stdout.strip())), np.array(Image.open(paths[1])))


def test_inpaint_errors_are_clear(tmp_path):
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "init.png")
    r = run("inpaint", "--model", str(INPAINT / "tiny-sd"), "--init", str(tmp_path / "init.png"))
    assert r.returncode == 2 and "inpaint needs --mask IMAGE" in r.stderr, r.stderr
    r = run("inpaint", "--model", str(INPAINT / "tiny-sd"), "--init", str(tmp_path / "init.png"),
            "--mask", str(tmp_path / "nope.png"))
    assert r.returncode == 1 and "nope.png: cannot read the image" in r.stderr, r.stderr
    r = run("img2img", "--model", str(INPAINT / "tiny-sd"), "--init", str(tmp_path / "init.png"),
            "--mask", str(tmp_path / "init.png"))
    assert r.returncode == 2 and "--mask is for inpaint" in r.stderr, r.stderr
    r = run("txt2img", "--model", str(INPAINT / "tiny-sd-inpaint"), "--device", "cpu",
            "--out", str(tmp_path))
    assert r.returncode == 1 and "is an inpainting model" in r.stderr, r.stderr


def test_an_inpainting_single_file_opens_with_the_usual_configs(tmp_path):
    """An inpainting checkpoint as one file (sd-v1-5-inpainting's shape: a 9-channel first
    convolution) opens with the 4-channel configs of its family and makes the folder's images."""
    import numpy as np
    from PIL import Image
    ckpt = single_file_of(INPAINT / "tiny-sd-inpaint", tmp_path / "inpainting.safetensors")
    common = ["--init", str(INPAINT / "init.png"), "--mask", str(INPAINT / "mask.png"),
              "--prompt", "a blue square", "--steps", "6", "--seed", "8", "--sampler", "ddim",
              "--device", "cpu"]
    r = run("inpaint", "--model", str(INPAINT / "tiny-sd-inpaint"), *common, "--out",
            str(tmp_path / "folder"))
    assert r.returncode == 0, r.stderr
    folder_png = r.stdout.strip()
    r = run("inpaint", "--model", str(ckpt), "--config", str(INPAINT / "tiny-sd"), *common,
            "--out", str(tmp_path / "file"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.array(Image.open(r.stdout.strip())), np.array(Image.open(folder_png)))


def test_an_sd2_inpainting_single_file_opens_with_sd2_base_configs(tmp_path):
    """SD 2's inpainting checkpoint (a 9-channel first convolution) is a 512 px epsilon model:
    by default it opens with the bundled SD 2.1 base configs, not SD 2.1's 768 px v ones, as
    diffusers' from_single_file takes it; and --config's configs run it."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from PIL import Image
    folder = tmp_path / "sd2-inpaint"
    pipe = StableDiffusionInpaintPipeline.from_pretrained(SD2 / "model")
    torch.manual_seed(3)
    pipe.unet = UNet2DConditionModel(**dict(pipe.unet.config, in_channels=9))
    pipe.save_pretrained(folder, safe_serialization=True)
    ckpt = tmp_path / "sd2-inpainting.safetensors"
    _original_checkpoint().write(folder, ckpt, openclip=True)
    r = run("info", str(ckpt))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("configs: ")[1].split()[0].endswith("models/sd2-base-config"), r.stdout
    assert "an inpainting model: its UNet takes 9 input channels" in r.stdout, r.stdout
    r = run("info", str(SD2 / "model.safetensors"))  # the others keep SD 2.1's
    assert r.stdout.split("configs: ")[1].split()[0].endswith("models/sd2-config"), r.stdout
    assert "inpainting" not in r.stdout, r.stdout
    common = ["--init", str(INPAINT / "init.png"), "--mask", str(INPAINT / "mask.png"),
              "--prompt", "a blue square", "--steps", "5", "--seed", "2", "--sampler", "euler",
              "--device", "cpu"]
    r = run("inpaint", "--model", str(folder), *common, "--out", str(tmp_path / "folder"))
    assert r.returncode == 0, r.stderr
    from_folder = np.array(Image.open(r.stdout.strip()))
    r = run("inpaint", "--model", str(ckpt), "--config", str(folder), *common, "--out",
            str(tmp_path / "file"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.array(Image.open(r.stdout.strip())), from_folder)


def test_an_inpainting_grid_has_the_inpaint_images_in_its_cells(tmp_path):
    """grid --init --mask: each cell (strength across) is the inpaint command's image
    for its values, and is found pixel for pixel in the sheet."""
    import numpy as np
    from PIL import Image
    common = ["--model", str(INPAINT / "tiny-sd"), "--init", str(INPAINT / "init.png"), "--mask",
              str(INPAINT / "mask.png"), "--prompt", "a star", "--steps", "4", "--seed", "6",
              "--sampler", "euler", "--keep-unmasked", "--device", "cpu"]
    r = run("grid", *common, "--x", "strength=0.5,1", "--cells", "--out", str(tmp_path / "g"))
    assert r.returncode == 0, r.stderr
    sheet_path, *cells = r.stdout.split()
    sheet = np.array(Image.open(sheet_path).convert("RGB"))
    assert len(cells) == 2
    for cell, strength in zip(cells, ["0.5", "1"]):
        r = run("inpaint", *common, "--strength", strength, "--out", str(tmp_path / strength))
        assert r.returncode == 0, r.stderr
        alone = np.array(Image.open(r.stdout.strip()).convert("RGB"))
        assert np.array_equal(np.array(Image.open(cell).convert("RGB")), alone), cell
        assert _find(sheet, alone) is not None, cell


def test_train_refuses_to_fine_tune_an_inpainting_model(tmp_path):
    data = tmp_path / "d"
    run("dataset", "--out", str(data), "--count", "2", "--size", "32")
    base = INPAINT / "tiny-sd-inpaint"
    r = run("train", "--data", str(data), "--out", str(tmp_path / "m"), "--base", str(base),
            "--steps", "1", "--resolution", "32")
    assert r.returncode == 1
    assert f"{base}: an inpainting model" in r.stderr and "text-to-image models only" in r.stderr


# --- textual inversion ------------------------------------------------------------------------

TI = FIXTURES / "textual_inversion"


def test_embedding_flags_make_diffusers_images(tmp_path):
    """--embedding FILE:WORD for each of the fixture's SD embeddings gives the image diffusers
    made after load_textual_inversion (expected.safetensors, case sd_words); the request's JSON
    names them, and --from brings them back."""
    import numpy as np
    from PIL import Image
    cases = {c["name"]: c for c in json.loads((TI / "cases.json").read_text())}
    c = cases["sd_words"]
    req = c["request"]
    flags = ["--model", str(TI / "tiny-sd"), "--prompt", req["prompt"], "--negative",
             req["negative_prompt"], "--steps", str(req["steps"]), "--guidance",
             str(req["guidance_scale"]), "--seed", str(req["seed"]), "--sampler", "euler",
             "--width", "32", "--height", "32", "--device", "cpu", "--out", str(tmp_path)]
    for file, word in c["embeddings"]:
        flags += ["--embedding", f"{TI / file}:{word}"]
    r = run("txt2img", *flags)
    assert r.returncode == 0, r.stderr
    path = r.stdout.split()[0]
    with safe_open(str(TI / "expected.safetensors"), "pt") as f:
        want = f.get_tensor("sd_words")[0].numpy().astype(int)
    got = np.array(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(got - want).max() <= 2
    meta = json.loads(Image.open(path).text["sdstudio"])
    assert [[Path(e["file"]).name, e["token"]] for e in meta["embeddings"]] == c["embeddings"]
    again = run("txt2img", "--model", str(TI / "tiny-sd"), "--from", path, "--device", "cpu",
                "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.array(Image.open(again.stdout.split()[0]).convert("RGB")), got)


def test_embedding_dir_uses_the_files_the_prompts_name(tmp_path):
    """--embedding-dir: A1111's folder; the files whose names are prompt words are used (an
    SDXL file there that no prompt names is not read), the same image as naming them with
    --embedding; a word inside a longer one does not count."""
    folder = tmp_path / "embeddings"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(TI / "inkstyle.pt", folder / "inkstyle.pt")
    shutil.copy(TI / "badhands.safetensors", folder / "sub" / "badhands.safetensors")
    shutil.copy(TI / "xlstyle.safetensors", folder / "xlstyle.safetensors")
    common = ["--model", str(TI / "tiny-sd"), "--prompt", "a red circle, InkStyle",
              "--negative", "badhands, xlstyles", "--steps", "3", "--seed", "5", "--sampler",
              "euler", "--width", "32", "--height", "32", "--device", "cpu"]
    by_dir = run("txt2img", *common, "--embedding-dir", str(folder), "--out", str(tmp_path / "a"))
    assert by_dir.returncode == 0, by_dir.stderr
    named = run("txt2img", *common, "--embedding", str(TI / "badhands.safetensors"),
                "--embedding", str(TI / "inkstyle.pt"), "--out", str(tmp_path / "b"))
    assert named.returncode == 0, named.stderr
    plain = run("txt2img", *common, "--out", str(tmp_path / "c"))
    from PIL import Image
    import numpy as np
    a, b, c = (np.array(Image.open(x.stdout.split()[0]).convert("RGB"))
               for x in (by_dir, named, plain))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    meta = json.loads(Image.open(by_dir.stdout.split()[0]).text["sdstudio"])
    assert [e["token"] for e in meta["embeddings"]] == ["inkstyle", "badhands"]
    r = run("txt2img", *common, "--embedding-dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "none: no such folder (--embedding-dir)" in r.stderr
    r = run("txt2img", *common, "--embedding", str(TI / "xlstyle.safetensors"))
    assert r.returncode == 1 and "xlstyle.safetensors: an SDXL embedding" in r.stderr


# --- hires fix --------------------------------------------------------------------------------

def test_hires_fix_makes_diffusers_images(tmp_path):
    """--hires-scale: diffusers' txt2img at 32x32, each image scaled with Pillow's LANCZOS to
    48x48 (1.5x), then diffusers' img2img from it with the hires strength and steps, generator
    seed + i: image i of ours. The PNG says it as A1111 does, and --from makes it again."""
    import numpy as np
    from PIL import Image
    req = {"prompt": "a red circle", "negative": "blue", "steps": 6, "guidance": 6.0,
           "seed": 77, "sampler": "euler_a", "batch": 2, "width": 32, "height": 32}
    r = run("txt2img", *cli_flags(req), "--hires-scale", "1.5", "--hires-strength", "0.6",
            "--hires-steps", "5", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    low = diffusers_images(req)
    for i, path in enumerate(paths):
        up = Image.fromarray(low[i].astype(np.uint8)).resize((48, 48), Image.LANCZOS)
        high = dict(req, steps=5, strength=0.6, seed=77 + i, batch=1)
        want = diffusers_images(high, init=up)[0]
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert got.shape == (48, 48, 3)
        assert np.abs(got - want).max() <= 2, path
    meta = Image.open(paths[0]).text
    assert "Size: 32x32" in meta["parameters"] and "Hires upscale: 1.5" in meta["parameters"]
    assert "Denoising strength: 0.6" in meta["parameters"] and "Hires steps: 5" in meta["parameters"]
    stored = json.loads(meta["sdstudio"])
    assert (stored["hires_scale"], stored["hires_steps"], stored["hires_strength"]) == (1.5, 5, 0.6)
    again = run("txt2img", "--model", str(PIPE), "--from", paths[0], "--device", "cpu",
                "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert same_but_for_batch_rounding(again.stdout.split()[0], paths[0])
    r = run("txt2img", *cli_flags(req), "--hires-scale", "5")
    assert r.returncode == 1 and "hires scale must be 1..4" in r.stderr
    r = run("img2img", *cli_flags(req), "--init", paths[0], "--hires-scale", "2")
    assert r.returncode == 1 and "the hires fix is for txt2img" in r.stderr


@pytest.mark.parametrize("upscaler,mode,antialias,scale,size", [
    ("Latent", "bilinear", False, "2", (80, 64)),
    ("Latent (bicubic antialiased)", "bicubic", True, "2", (80, 64)),
    # (nearest and nearest-exact differ at 1.5x, not at 2x; 60x48 floors to 56x48)
    ("Latent (nearest-exact)", "nearest-exact", False, "1.5", (56, 48)),
])
def test_latent_hires_fix_makes_diffusers_images(tmp_path, upscaler, mode, antialias, scale,
                                                 size):
    """--hires-upscaler Latent...: diffusers' txt2img latents (output_type "latent") scaled by
    torch's interpolate as A1111 names the mode, then diffusers' img2img taking those latents
    for its image (no VAE between), generator seed + i: image i of ours."""
    import numpy as np
    import torch
    from PIL import Image
    req = {"prompt": "a red circle", "negative": "blue", "steps": 6, "guidance": 6.0,
           "seed": 31, "sampler": "dpmpp_2m", "batch": 2, "width": 32, "height": 40}
    r = run("txt2img", *cli_flags(req), "--hires-scale", scale, "--hires-strength", "0.55",
            "--hires-upscaler", upscaler, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    low = diffusers_images(req, latents=True)
    assert low.shape == (2, 4, 20, 16)  # the tiny VAE scales by 2
    for i, path in enumerate(paths):
        up = torch.nn.functional.interpolate(low[i:i + 1], size=(size[0] // 2, size[1] // 2),
                                             mode=mode, antialias=antialias)
        want = diffusers_images(dict(req, strength=0.55, seed=31 + i, batch=1), init=up)[0]
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert got.shape == (*size, 3)
        assert np.abs(got - want).max() <= 2, path
    meta = Image.open(paths[1]).text
    assert f"Hires upscaler: {upscaler}," in meta["parameters"]
    assert json.loads(meta["sdstudio"])["hires_upscaler"] == upscaler
    again = run("txt2img", "--model", str(PIPE), "--from", paths[1], "--device", "cpu",
                "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert same_but_for_batch_rounding(again.stdout.split()[0], paths[1])
    r = run("txt2img", *cli_flags(req), "--hires-scale", "2", "--hires-upscaler", "ESRGAN_4x")
    assert r.returncode == 1 and "unknown hires upscaler 'ESRGAN_4x'" in r.stderr
    # bf16 latents too (torch's CPU antialiasing has no bf16: the scaling runs in float32).
    r = run("txt2img", *cli_flags(req), "--dtype", "bf16", "--hires-scale", scale,
            "--hires-upscaler", upscaler, "--out", str(tmp_path / "bf16"))
    assert r.returncode == 0, r.stderr


def test_inpaint_only_the_masked_area_makes_diffusers_images(tmp_path):
    """inpaint --mask-padding: diffusers' padding_mask_crop. A small blob masked in a 64x40
    picture: the box around it plus the padding, grown to 32x48's aspect, inpainted at 32x48 and
    put back; the images have the picture's size."""
    import numpy as np
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInpaintPipeline
    from PIL import Image
    rng = np.random.default_rng(5)
    init = Image.fromarray(rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)).resize((64, 40))
    y, x = np.mgrid[0:40, 0:64]
    blob = (((x - 20) / 7.0) ** 2 + ((y - 22) / 4.0) ** 2 < 1).astype(np.uint8) * 255
    mask = Image.fromarray(np.repeat(blob[:, :, None], 3, axis=2))
    init.save(tmp_path / "init.png")
    mask.save(tmp_path / "mask.png")
    r = run("inpaint", "--model", str(INPAINT / "tiny-sd"), "--prompt", "a cat", "--steps", "6",
            "--guidance", "5", "--seed", "3", "--sampler", "euler_a", "--batch", "2",
            "--width", "32", "--height", "48", "--strength", "0.9", "--mask-padding", "4",
            "--mask-blur", "2", "--init", str(tmp_path / "init.png"), "--mask",
            str(tmp_path / "mask.png"), "--device", "cpu", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    pipe = StableDiffusionInpaintPipeline.from_pretrained(INPAINT / "tiny-sd")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    blurred = pipe.mask_processor.blur(mask, blur_factor=2)
    for i, path in enumerate(r.stdout.split()):
        want = pipe(prompt="a cat", image=init, mask_image=blurred, num_inference_steps=6,
                    guidance_scale=5.0, strength=0.9, width=32, height=48, padding_mask_crop=4,
                    generator=[torch.Generator("cpu").manual_seed(3 + i)]).images[0]
        got = np.array(Image.open(path).convert("RGB")).astype(int)
        assert got.shape == (40, 64, 3)
        assert np.abs(got - np.array(want).astype(int)).max() <= 2, path
    text = Image.open(r.stdout.split()[0]).text
    assert "Inpaint area: Only masked, Masked area padding: 4" in text["parameters"]
    assert json.loads(text["sdstudio"])["mask_padding"] == 4


# --- a VAE of its own -------------------------------------------------------------------------

def test_vae_flag_uses_another_vae(tmp_path):
    """--vae: another VAE instead of the model's (A1111's "SD VAE"), given as a diffusers
    folder, as one file with diffusers' names, and as one file in the original layout (as
    vae-ft-mse-840000-ema-pruned is): each gives the images diffusers makes with that VAE
    passed to its pipeline."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image
    from safetensors.torch import save_file
    original_checkpoint = _original_checkpoint()
    base = AutoencoderKL.from_pretrained(PIPE / "vae")
    torch.manual_seed(9)
    vae = AutoencoderKL.from_config(base.config)
    vae.save_pretrained(tmp_path / "vae-folder", safe_serialization=True)
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(sd, str(tmp_path / "vae-diffusers.safetensors"))
    original = {}
    for k, v in sd.items():
        if ".mid_block.attentions." in k and k.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None].contiguous()  # 1x1 convolutions there
        original[original_checkpoint.vae_key(k, dict(vae.config))] = v
    save_file(original, str(tmp_path / "vae-original.safetensors"))
    req = {"prompt": "a green square", "steps": 4, "guidance": 5.0, "seed": 12,
           "sampler": "euler", "batch": 1, "width": 32, "height": 32}
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(PIPE, vae=vae)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    want = np.array(pipe(req["prompt"], num_inference_steps=4, guidance_scale=5.0, width=32,
                         height=32, generator=[torch.Generator("cpu").manual_seed(12)])
                    .images[0]).astype(int)
    own = run("txt2img", *cli_flags(req), "--out", str(tmp_path / "own"))
    assert own.returncode == 0, own.stderr
    own_image = np.array(Image.open(own.stdout.split()[0])).astype(int)
    assert np.abs(own_image - want).max() > 10  # another VAE: another picture
    for name in ("vae-folder", "vae-diffusers.safetensors", "vae-original.safetensors"):
        r = run("txt2img", *cli_flags(req), "--vae", str(tmp_path / name), "--out",
                str(tmp_path / name.replace(".", "_")))
        assert r.returncode == 0, r.stderr
        got = np.array(Image.open(r.stdout.split()[0]).convert("RGB")).astype(int)
        assert np.abs(got - want).max() <= 2, name
    save_file(dict(original, **{"model_ema.decay": torch.tensor(0.99)}),
              str(tmp_path / "vae-extra.safetensors"))
    r = run("txt2img", *cli_flags(req), "--vae", str(tmp_path / "vae-extra.safetensors"))
    assert r.returncode == 1 and "vae-extra.safetensors: 1 tensor(s) do not belong" in r.stderr
    assert "model_ema.decay" in r.stderr
    r = run("txt2img", *cli_flags(req), "--vae", str(tmp_path / "none.safetensors"))
    assert r.returncode == 1 and "none.safetensors: no such VAE file or folder" in r.stderr
    r = run("txt2img", *cli_flags(req), "--vae", str(TINY / "text_encoder" / "model.safetensors"))
    assert r.returncode == 1 and "model.safetensors: not a VAE" in r.stderr


def test_train_a_lora_and_use_it(tmp_path):
    """train --base --lora-rank: a LoRA file named after the output folder, which --lora and
    A1111's <lora:NAME> tag then use (the same image both ways, another than without it)."""
    import numpy as np
    from PIL import Image
    data = tmp_path / "d"
    run("dataset", "--out", str(data), "--count", "4", "--size", "32")
    out = tmp_path / "ink"
    r = run("train", "--data", str(data), "--out", str(out), "--base", str(PIPE), "--steps",
            "3", "--lora-rank", "2", "--lr", "0.01", "--resolution", "32", "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out / "ink.safetensors")
    assert "a LoRA on" in r.stderr
    common = ["--model", str(PIPE), "--prompt", "a red circle", "--steps", "3", "--seed", "2",
              "--width", "32", "--height", "32", "--device", "cpu"]
    images = []
    for extra in ([], ["--lora", str(out / "ink.safetensors")],
                  ["--lora-dir", str(tmp_path), "--prompt", "a red circle <lora:ink:1>"]):
        g = run("txt2img", *common, *extra, "--out", str(tmp_path / f"o{len(images)}"))
        assert g.returncode == 0, g.stderr
        images.append(np.array(Image.open(g.stdout.split()[0])))
    assert not np.array_equal(images[0], images[1]) and np.array_equal(images[1], images[2])


# --- A1111's hashes of the files a generation used -----------------------------------------

def test_pngs_name_their_files_by_a1111s_hashes_kept_in_a_cache(tmp_path):
    """A checkpoint's "Model hash" (its sha256, 10 digits) and name without extension, a VAE
    file's "VAE hash", "Lora hashes" (a .safetensors LoRA's sha256 after its header, 12 digits,
    kohya-ss's hash as A1111 takes it) and "TI hashes" (12 digits), as hashlib computes them;
    the hashes come from hashes.json in the data folder while the file's size and time are
    unchanged."""
    import hashlib
    import os
    from PIL import Image
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))

    def run_env(*args):
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=env)

    def sha256(path, offset=0):
        data = path.read_bytes()
        return hashlib.sha256(data[offset:]).hexdigest()

    def safetensors_data_offset(path):
        return 8 + int.from_bytes(path.read_bytes()[:8], "little")

    ckpt = single_file_of(LORA / "tiny-sd", tmp_path / "my model.v2.safetensors")
    vae = tmp_path / "tiny_vae.safetensors"
    shutil.copy(LORA / "tiny-sd" / "vae" / "diffusion_pytorch_model.safetensors", vae)
    lora = LORA / "sd_a.safetensors"
    flags = ["--model", str(ckpt), "--config", str(LORA / "tiny-sd"), "--vae", str(vae),
             "--lora", f"{lora}:0.5", "--prompt",
             "a red circle", "--steps", "1", "--width", "32", "--height", "32", "--device",
             "cpu"]

    def parameters(out):
        r = run_env("txt2img", *flags, "--out", str(tmp_path / out))
        assert r.returncode == 0, r.stderr
        return Image.open(r.stdout.strip()).text["parameters"]

    text = parameters("a")
    model_hash = sha256(ckpt)[:10]
    assert f"Model hash: {model_hash}, Model: my model.v2, " in text, text
    assert f"VAE hash: {sha256(vae)[:10]}, VAE: tiny_vae.safetensors, " in text, text
    lora_hash = sha256(lora, safetensors_data_offset(lora))[:12]
    assert lora_hash != sha256(lora)[:12]
    assert f'Lora hashes: "sd_a: {lora_hash}"' in text, text
    # The cache: a hash changed there is taken while the file is as it was, and computed
    # again once the file changes.
    cache_file = next((tmp_path / "data").rglob("hashes.json"))
    cache = json.loads(cache_file.read_text())
    key = next(k for k in cache if k.startswith("file:") and k.endswith("my model.v2.safetensors"))
    assert cache[key]["sha256"] == sha256(ckpt)
    cache[key]["sha256"] = "f" * 64
    cache["file:" + str(tmp_path / "gone.safetensors")] = cache[key]  # a file since deleted
    cache_file.write_text(json.dumps(cache))
    assert "Model hash: ffffffffff," in parameters("b")
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert f"Model hash: {model_hash}," in parameters("c")
    # Written again, the cache lets the deleted file's entry go.
    assert not any(k.endswith("gone.safetensors") for k in json.loads(cache_file.read_text()))
    # A model folder has no hash, only its name; an embedding's file is hashed whole.
    r = run_env("txt2img", "--model", str(TI / "tiny-sd"), "--prompt", "a red circle, inkstyle",
                "--embedding", str(TI / "inkstyle.pt"), "--steps", "1", "--width", "32",
                "--height", "32", "--device", "cpu", "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    text = Image.open(r.stdout.strip()).text["parameters"]
    assert "Model hash" not in text and "Model: tiny-sd," in text, text
    assert f"TI hashes: \"inkstyle: {sha256(TI / 'inkstyle.pt')[:12]}\"" in text, text


# --- ControlNets ------------------------------------------------------------------------------

CONTROL = FIXTURES / "controlnet"


def test_controlnets_match_diffusers_from_the_cli(tmp_path):
    """txt2img with two ControlNets through --controlnet and its flags, at a seed, sampler,
    scales and spans of its own, against diffusers' StableDiffusionControlNetPipeline run here;
    without --width/--height the control image sets the size (44x60 -> 40x56), as in diffusers;
    the PNG keeps the ControlNets; the flags' errors."""
    import numpy as np
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image
    flags = ["--model", str(CONTROL / "tiny-sd"), "--prompt", "a ring of fire",
             "--negative", "water", "--steps", "6", "--guidance", "5.5", "--seed", "31337",
             "--sampler", "dpmpp_2m", "--batch", "2", "--device", "cpu"]
    units = ["--controlnet", str(CONTROL / "tiny-controlnet"), "--control-image",
             str(CONTROL / "control_big.png"), "--control-scale", "1.2", "--control-end", "0.7",
             "--controlnet", str(CONTROL / "tiny-controlnet-b"), "--control-image",
             str(CONTROL / "control.png"), "--control-scale", "0.7", "--control-start", "0.3"]
    r = run("txt2img", *flags, *units, "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    pngs = r.stdout.split()
    assert len(pngs) == 2
    nets = [ControlNetModel.from_pretrained(CONTROL / n) for n in ("tiny-controlnet",
                                                                   "tiny-controlnet-b")]
    pipe = StableDiffusionControlNetPipeline.from_pretrained(CONTROL / "tiny-sd", controlnet=nets,
                                                             safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    cls, extra = samplers()["dpmpp_2m"]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    # diffusers sizes each image by itself: the first image's size given, the second is resized
    # to it, as the CLI does.
    want = pipe(prompt="a ring of fire", negative_prompt="water", num_inference_steps=6,
                guidance_scale=5.5, num_images_per_prompt=2, width=40, height=56,
                generator=[torch.Generator("cpu").manual_seed(31337 + i) for i in range(2)],
                image=[Image.open(CONTROL / "control_big.png"), Image.open(CONTROL / "control.png")],
                controlnet_conditioning_scale=[1.2, 0.7], control_guidance_start=[0.0, 0.3],
                control_guidance_end=[0.7, 1.0]).images
    for png, w in zip(pngs, want):
        got = np.array(Image.open(png).convert("RGB")).astype(int)
        assert got.shape == (60 - 4, 44 - 4, 3)
        assert np.abs(got - np.array(w).astype(int)).max() <= 2
    meta = json.loads(Image.open(pngs[0]).text["sdstudio"])
    assert [(c["scale"], c["start"], c["end"]) for c in meta["controls"]] == [
        (1.2, 0.0, 0.7), (0.7, 0.3, 1.0)], meta
    assert 'ControlNet 1: "Module: none, Model: tiny-controlnet-b, Weight: 0.7' in \
        Image.open(pngs[0]).text["parameters"]
    # The same again from the PNG (its ControlNets' folders and images are where they were).
    r = run("txt2img", "--model", str(CONTROL / "tiny-sd"), "--from", pngs[1], "--device", "cpu",
            "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert same_but_for_batch_rounding(r.stdout.split()[0], pngs[1])
    # The errors say what is wrong.
    r = run("txt2img", *flags, "--control-scale", "1", "--out", str(tmp_path / "c"))
    assert r.returncode != 0 and "goes after the --controlnet" in r.stderr, r.stderr
    r = run("txt2img", *flags, "--controlnet", str(CONTROL / "tiny-controlnet"),
            "--out", str(tmp_path / "c"))
    assert r.returncode != 0 and "needs a --control-image" in r.stderr, r.stderr
    r = run("txt2img", *flags, "--controlnet", str(tmp_path / "nowhere"), "--control-image",
            str(CONTROL / "control.png"), "--out", str(tmp_path / "c"))
    assert r.returncode != 0 and "nowhere" in r.stderr, r.stderr


def test_a_controlnet_file_gives_the_images_its_folder_gives(tmp_path):
    """--controlnet takes one file as A1111's ControlNet extension loads it: the original layout
    (.pth without a prefix, .safetensors under control_model.) or diffusers' names; each makes
    the folder's images, and the PNG names it as A1111 does (the file's stem). A file of
    something else is refused, naming it."""
    import numpy as np
    from PIL import Image
    flags = ["--model", str(CONTROL / "tiny-sd"), "--prompt", "a ring of fire", "--steps", "4",
             "--guidance", "6", "--seed", "77", "--sampler", "euler", "--width", "32",
             "--height", "32", "--device", "cpu", "--control-image", str(CONTROL / "control.png")]
    pixels = {}
    for name in ("tiny-controlnet", "tiny-controlnet.pth", "tiny-controlnet.safetensors",
                 "tiny-controlnet-diffusers.safetensors"):
        # --control-image goes after the --controlnet it is for.
        r = run("txt2img", *flags[:-2], "--controlnet", str(CONTROL / name), *flags[-2:],
                "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        png = r.stdout.split()[0]
        pixels[name] = np.array(Image.open(png).convert("RGB")).astype(int)
        assert 'Model: tiny-controlnet' in Image.open(png).text["parameters"], name
    plain = run("txt2img", *flags[:-2], "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    off = np.array(Image.open(plain.stdout.split()[0]).convert("RGB")).astype(int)
    assert np.abs(pixels["tiny-controlnet"] - off).max() > 10  # the ControlNet does something
    for name, got in pixels.items():
        assert np.array_equal(got, pixels["tiny-controlnet"]), name
    unet = CONTROL / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors"
    r = run("txt2img", *flags[:-2], "--controlnet", str(unet), *flags[-2:],
            "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "not a ControlNet" in r.stderr and str(unet) in r.stderr, r.stderr


def test_the_canny_preprocessor_takes_its_thresholds_from_the_flags(tmp_path):
    """--control-preprocessor canny with --canny-low/--canny-high: the PNG keeps them (JSON,
    and A1111's Threshold A/B), other thresholds make another image, and the thresholds go after
    the --controlnet they are for. (That canny's edges are OpenCV's, and that the ControlNet gets
    them, is canny_test's.) binary's threshold likewise; lineart_standard through the PNG, --from
    and preprocess."""
    import numpy as np
    from PIL import Image
    flags = ["--model", str(CONTROL / "tiny-sd"), "--prompt", "a ring of fire", "--steps", "3",
             "--seed", "5", "--width", "32", "--height", "32", "--device", "cpu"]
    noise = tmp_path / "noise.png"  # edges of every strength
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(noise)
    unit = ["--controlnet", str(CONTROL / "tiny-controlnet"), "--control-image", str(noise),
            "--control-preprocessor", "canny"]
    pixels = []
    for k, (lo, hi) in enumerate([("60", "120"), ("900", "1400")]):
        r = run("txt2img", *flags, *unit, "--canny-low", lo, "--canny-high", hi,
                "--out", str(tmp_path / str(k)))
        assert r.returncode == 0, r.stderr
        png = r.stdout.split()[0]
        meta = json.loads(Image.open(png).text["sdstudio"])
        assert (meta["controls"][0]["preprocessor"], meta["controls"][0]["canny_low"],
                meta["controls"][0]["canny_high"]) == ("canny", float(lo), float(hi)), meta
        assert f"Module: canny, Model: tiny-controlnet, Weight: 1, Threshold A: {lo}, " \
               f"Threshold B: {hi}" in Image.open(png).text["parameters"]
        pixels.append(np.array(Image.open(png).convert("RGB")).astype(int))
    assert np.abs(pixels[0] - pixels[1]).max() > 0
    r = run("txt2img", *flags, "--canny-low", "3", *unit, "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "goes after the --controlnet" in r.stderr, r.stderr
    r = run("txt2img", *flags, *unit, "--canny-low", "90", "--canny-high", "20",
            "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "canny thresholds" in r.stderr, r.stderr
    # binary's --binary-threshold likewise (A1111's Threshold A; 0, its default, Otsu's).
    unit[-1] = "binary"
    binary = []
    for k, level in enumerate(["0", "40", "200"]):
        r = run("txt2img", *flags, *unit, "--binary-threshold", level,
                "--out", str(tmp_path / f"b{k}"))
        assert r.returncode == 0, r.stderr
        png = r.stdout.split()[0]
        meta = json.loads(Image.open(png).text["sdstudio"])
        assert meta["controls"][0]["binary_threshold"] == int(level), meta
        assert f"Module: binary, Model: tiny-controlnet, Weight: 1, Threshold A: {level}, " \
               in Image.open(png).text["parameters"]
        binary.append(np.array(Image.open(png).convert("RGB")).astype(int))
        r = run("txt2img", "--from", png, "--model", str(CONTROL / "tiny-sd"),
                "--out", str(tmp_path / f"again{k}"))
        assert r.returncode == 0, r.stderr
        assert np.array_equal(np.array(Image.open(r.stdout.split()[0]).convert("RGB")),
                              binary[-1]), level
    assert np.abs(binary[1] - binary[2]).max() > 0 and np.abs(binary[0] - binary[1]).max() > 0
    r = run("txt2img", *flags, *unit, "--binary-threshold", "256", "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "binary threshold must be 0..255" in r.stderr, r.stderr
    # lineart_standard: kept in the PNG, A1111's module name, --from makes it again, and the
    # ControlNet is given what `preprocess` writes of the picture (its arithmetic against
    # A1111's written with OpenCV is canny_test's).
    unit[-1] = "lineart_standard"
    r = run("txt2img", *flags, *unit, "--out", str(tmp_path / "lines"))
    assert r.returncode == 0, r.stderr
    png = r.stdout.split()[0]
    assert json.loads(Image.open(png).text["sdstudio"])["controls"][0]["preprocessor"] == \
        "lineart_standard"
    assert "Module: lineart_standard, Model: tiny-controlnet, Weight: 1, Guidance Start" \
        in Image.open(png).text["parameters"]
    lined = np.array(Image.open(png).convert("RGB")).astype(int)
    assert all(np.abs(lined - b).max() > 0 for b in binary)
    r = run("txt2img", "--from", png, "--model", str(CONTROL / "tiny-sd"),
            "--out", str(tmp_path / "lines-again"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.array(Image.open(r.stdout.split()[0]).convert("RGB")), lined)
    size = Image.open(png).size
    r = run("preprocess", "--image", unit[unit.index("--control-image") + 1], "--out",
            str(tmp_path / "lines-map.png"), "--preprocessor", "lineart_standard",
            "--width", str(size[0]), "--height", str(size[1]))
    assert r.returncode == 0, r.stderr
    as_map = [*unit[:-1], "none"]
    as_map[as_map.index("--control-image") + 1] = str(tmp_path / "lines-map.png")
    r = run("txt2img", *flags, *as_map, "--out", str(tmp_path / "lines-given"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.array(Image.open(r.stdout.split()[0]).convert("RGB")), lined)
    r = run("txt2img", *flags, *unit[:-1], "sobel", "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and \
        "(known: none, invert, canny, binary, depth, lineart_standard)" in r.stderr, r.stderr


def tiny_depth_anything(folder, image_size):
    """A small Depth Anything (DINOv2 backbone, DPT neck and head) at random init, every weight
    moved by noise (so that layer scales and norms are not ones and zeros) and the last bias
    positive (a random head's depth is otherwise mostly 0, flat), saved as transformers
    saves one, with Depth Anything's image processor settings (518, aspect kept, multiples of 14,
    bicubic)."""
    import torch
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation,
                              Dinov2Config, DPTImageProcessor)
    torch.manual_seed(7)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            patch_size=14, image_size=image_size, out_indices=[1, 2, 3, 4],
                            reshape_hidden_states=False, apply_layernorm=True)
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 24, 32],
        fusion_hidden_size=16, head_hidden_size=8, patch_size=14)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.head.conv3.bias.fill_(0.5)  # a depth above 0 almost everywhere: the ReLU keeps it
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                      ensure_multiple_of=14, resample=3, do_pad=False,
                      image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def test_the_depth_preprocessor_makes_transformers_depth_maps(tmp_path):
    """--control-preprocessor depth --depth-model DIR: the picture's depth map at the size the
    ControlNet sees, as transformers' depth-estimation pipeline makes it of that picture (Depth
    Anything; position embeddings resized to the picture's grid, or not where it is theirs);
    `preprocess` shows it; a generation gives the ControlNet the same map; the PNG keeps the
    model; errors name what is wrong."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8)).resize(
        (72, 52), Image.BILINEAR)
    picture.save(tmp_path / "picture.png")
    for image_size, (w, h) in [(56, (64, 48)), (518, (40, 40)), (56, (72, 48))]:
        model = tiny_depth_anything(tmp_path / f"depth{image_size}", image_size)
        sized = picture if (w, h) == picture.size else picture.resize((w, h), Image.LANCZOS)
        want = np.array(pipeline("depth-estimation", model=str(model), device="cpu")(sized)["depth"])
        out = tmp_path / f"depth{image_size}-{w}x{h}.png"
        r = run("preprocess", "--image", str(tmp_path / "picture.png"), "--preprocessor", "depth",
                "--depth-model", str(model), "--width", str(w), "--height", str(h),
                "--out", str(out))
        assert r.returncode == 0, r.stderr
        got = np.array(Image.open(out).convert("RGB")).astype(int)
        assert got.shape == (h, w, 3) and (got == got[..., :1]).all()
        assert np.abs(got[..., 0] - want.astype(int)).max() <= 1, (image_size, w, h)
        assert got.min() == 0 and got.max() >= 254 and got.std() > 20  # a map, not a flat grey
    # A generation: the ControlNet sees the map `preprocess` showed (the same image as when the
    # map is given with no preprocessor), not the picture.
    flags = ["--model", str(CONTROL / "tiny-sd"), "--prompt", "a ring of fire", "--steps", "3",
             "--seed", "5", "--width", "72", "--height", "48", "--device", "cpu",
             "--controlnet", str(CONTROL / "tiny-controlnet")]
    r = run("txt2img", *flags, "--control-image", str(tmp_path / "picture.png"),
            "--control-preprocessor", "depth", "--depth-model", str(model),
            "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    png = r.stdout.split()[0]
    meta = json.loads(Image.open(png).text["sdstudio"])
    assert meta["controls"][0]["preprocessor"] == "depth"
    assert meta["controls"][0]["depth_model"] == str(model)
    assert "Module: depth_anything, Model: tiny-controlnet" in Image.open(png).text["parameters"]
    r = run("txt2img", *flags, "--control-image", str(tmp_path / "depth56-72x48.png"),
            "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    r2 = run("txt2img", *flags, "--control-image", str(tmp_path / "picture.png"),
             "--out", str(tmp_path / "c"))
    assert r2.returncode == 0, r2.stderr
    a, b, c = (np.array(Image.open(x.stdout.split()[0]).convert("RGB")).astype(int)
               for x in (run("txt2img", "--from", png, "--model", str(CONTROL / "tiny-sd"),
                             "--out", str(tmp_path / "again")), r, r2))
    assert np.array_equal(a, np.array(Image.open(png).convert("RGB")))  # --from remakes it
    assert np.array_equal(a, b) and np.abs(a - c).max() > 0
    # Errors.
    r = run("txt2img", *flags, "--control-image", str(tmp_path / "picture.png"),
            "--control-preprocessor", "depth", "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "needs a Depth Anything model folder" in r.stderr, r.stderr
    r = run("preprocess", "--image", str(tmp_path / "picture.png"), "--preprocessor", "depth",
            "--depth-model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bad.png"))
    assert r.returncode != 0 and f"{tmp_path / 'nowhere'}: no such Depth Anything folder" \
        in r.stderr, r.stderr
    r = run("preprocess", "--image", str(tmp_path / "picture.png"), "--preprocessor", "depth",
            "--depth-model", str(CONTROL / "tiny-controlnet"), "--out", str(tmp_path / "bad.png"))
    assert r.returncode != 0 and "config.json: model_type is ''" in r.stderr, r.stderr
    assert not (tmp_path / "bad.png").exists()
    r = run("preprocess", "--image", str(tmp_path / "picture.png"), "--width", "40")
    assert r.returncode == 2 and "preprocess: needs --image IN and --out OUT.png" in r.stderr
    r = run("preprocess", "--image", str(tmp_path / "picture.png"), "--out",
            str(tmp_path / "bad.png"), "--width", "40")
    assert r.returncode == 2 and "--width and --height go together" in r.stderr, r.stderr


def tiny_adapter(folder, seed, **config):
    """A T2IAdapter at random init, saved as a diffusers folder; its last convolutions made
    20x larger, so that it changes the tiny models' images clearly."""
    import torch
    from diffusers import T2IAdapter
    torch.manual_seed(seed)
    adapter = T2IAdapter(**config)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if "block2" in name or "out_conv" in name:
                p.mul_(20)
    adapter.save_pretrained(folder)
    return adapter


def test_t2i_adapters_match_diffusers_from_the_cli(tmp_path):
    """--controlnet takes a T2I-Adapter folder: a full adapter reading a grey sketch (in_channels
    1) and a light adapter reading a colour picture of another size, on an SD 1.x model whose
    first block has attention, against diffusers' StableDiffusionAdapterPipeline; a full_adapter_xl
    on the SDXL model (its first block without attention: the map goes after its downsampler)
    with --control-end as diffusers' adapter_conditioning_factor, against
    StableDiffusionXLAdapterPipeline. Each adapter changes the image; an adapter for another
    model is refused, saying why."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionAdapterPipeline, StableDiffusionXLAdapterPipeline
    from PIL import Image, ImageDraw
    sd = FIXTURES / "single_file" / "model"  # blocks: attention, attention, none; latents 1/4
    sketch = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(sketch).ellipse((12, 10, 50, 54), outline="black", width=3)
    ImageDraw.Draw(sketch).line((4, 60, 60, 6), fill=(200, 30, 30), width=4)
    sketch.save(tmp_path / "sketch.png")
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 56, 3), np.uint8))
    picture.save(tmp_path / "picture.png")  # 56x40, resized to 64x64
    full = tiny_adapter(tmp_path / "full", 1, in_channels=1, channels=[32, 32, 64],
                        num_res_blocks=2, downscale_factor=4, adapter_type="full_adapter")
    light = tiny_adapter(tmp_path / "light", 2, in_channels=3, channels=[32, 32, 64],
                         num_res_blocks=1, downscale_factor=4, adapter_type="light_adapter")

    def ours(model, flags, unit, out):
        r = run("txt2img", "--model", str(model), *flags, *unit, "--device", "cpu",
                "--out", str(tmp_path / out))
        assert r.returncode == 0, r.stderr
        return [np.array(Image.open(p).convert("RGB")).astype(int) for p in r.stdout.split()]

    def close(got, want):
        for g, w in zip(got, want, strict=True):
            assert np.abs(g - np.array(w).astype(int)).max() <= 2

    flags = ["--prompt", "a ring of fire", "--negative", "water", "--steps", "5",
             "--guidance", "6", "--seed", "4242", "--sampler", "euler_a", "--batch", "2",
             "--width", "64", "--height", "64"]
    plain = ours(sd, flags, [], "plain")
    folder_images = {}
    for name, adapter, picture_path, scale in [("full", full, tmp_path / "sketch.png", "0.8"),
                                               ("light", light, tmp_path / "picture.png", "1")]:
        got = ours(sd, flags, ["--controlnet", str(tmp_path / name), "--control-image",
                               str(picture_path), "--control-scale", scale], name)
        pipe = StableDiffusionAdapterPipeline.from_pretrained(sd, adapter=adapter,
                                                              safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        cls, extra = samplers()["euler_a"]
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
        image = Image.open(picture_path)
        want = pipe(prompt="a ring of fire", negative_prompt="water", num_inference_steps=5,
                    guidance_scale=6, num_images_per_prompt=2, width=64, height=64,
                    image=image.convert("L") if name == "full" else image,
                    adapter_conditioning_scale=float(scale),
                    generator=[torch.Generator("cpu").manual_seed(4242 + i) for i in range(2)]
                    ).images
        close(got, want)
        assert np.abs(got[0] - plain[0]).max() > 8 * 2, name  # the adapter does something
        folder_images[name] = got

    # TencentARC's files (as A1111's ControlNet extension loads them): the same adapters under
    # the original names, a .pth and a .safetensors, make the folders' images.
    import re as regex
    from safetensors.torch import save_file

    def original_names(adapter, light, per_level=2):
        state = {}
        for key, value in adapter.state_dict().items():
            key = key.removeprefix("adapter.")
            m = regex.match(r"body\.(\d+)\.(in_conv|resnets\.(\d+))\.(.*)", key)
            if m and light and m[3] is not None:
                key = f"body.{m[1]}.body.{m[3]}.{m[4]}"
            elif m and not light:
                k = int(m[1]) * per_level + (int(m[3]) if m[3] is not None else 0)
                key = f"body.{k}.{'in_conv.' if m[3] is None else ''}{m[4]}"
            state[key] = value.contiguous()
        return state

    full_file = original_names(full, light=False)
    assert "body.5.block2.weight" in full_file and "body.4.in_conv.weight" in full_file
    torch.save(full_file, tmp_path / "t2iadapter_sketch_tiny.pth")
    save_file(original_names(light, light=True), tmp_path / "t2iadapter_color_tiny.safetensors")
    for name, file, picture_path, scale in [
            ("full", "t2iadapter_sketch_tiny.pth", tmp_path / "sketch.png", "0.8"),
            ("light", "t2iadapter_color_tiny.safetensors", tmp_path / "picture.png", "1")]:
        r = run("txt2img", "--model", str(sd), *flags, "--controlnet", str(tmp_path / file),
                "--control-image", str(picture_path), "--control-scale", scale, "--device", "cpu",
                "--out", str(tmp_path / ("out-" + file)))
        assert r.returncode == 0, r.stderr
        for png, want in zip(r.stdout.split(), folder_images[name], strict=True):
            assert np.array_equal(np.array(Image.open(png).convert("RGB")).astype(int), want)
        assert f"Model: {Path(file).stem}," in Image.open(png).text["parameters"]
    torch.save(dict(full_file, **{"body.0.skep.weight": full_file["body.0.block2.weight"]}),
               tmp_path / "t2iadapter_skep.pth")
    r = run("txt2img", "--model", str(sd), *flags, "--controlnet",
            str(tmp_path / "t2iadapter_skep.pth"), "--control-image", str(tmp_path / "sketch.png"),
            "--device", "cpu", "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "t2iadapter_skep.pth" in r.stderr and "skep" in r.stderr, \
        r.stderr

    # SDXL: latents 1/2, the first block's output (after its downsampler) 1/4 of the picture.
    xl = SDXL / "tiny-sdxl"
    xl_adapter = tiny_adapter(tmp_path / "xl", 3, in_channels=3, channels=[32, 64],
                              num_res_blocks=1, downscale_factor=4, adapter_type="full_adapter_xl")
    flags = ["--prompt", "a ring of fire", "--steps", "6", "--guidance", "5", "--seed", "9",
             "--sampler", "dpmpp_2m", "--width", "32", "--height", "48"]
    unit = ["--controlnet", str(tmp_path / "xl"), "--control-image", str(tmp_path / "picture.png"),
            "--control-scale", "1.3"]
    pipe = StableDiffusionXLAdapterPipeline.from_pretrained(xl, adapter=xl_adapter)
    pipe.set_progress_bar_config(disable=True)
    cls, extra = samplers()["dpmpp_2m"]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    plain = ours(xl, flags, [], "xl-plain")
    images = {}
    for end in ("1", "0.2"):
        got = ours(xl, flags, [*unit, "--control-end", end], "xl" + end)
        want = pipe(prompt="a ring of fire", num_inference_steps=6, guidance_scale=5, width=32,
                    height=48, image=Image.open(tmp_path / "picture.png"),
                    adapter_conditioning_scale=1.3, adapter_conditioning_factor=float(end),
                    generator=[torch.Generator("cpu").manual_seed(9)]).images
        close(got, want)
        assert np.abs(got[0] - plain[0]).max() > 8 * 2, end
        images[end] = got[0]
    # The factor counts: more apart than two images each within 2/255 of diffusers could be.
    assert np.abs(images["1"] - images["0.2"]).max() > 6
    # --control-start (ours: diffusers has none) leaves the first steps to the prompt alone.
    late = ours(xl, flags, [*unit, "--control-start", "0.1"], "xl-late")[0]
    assert np.abs(late - images["1"]).max() > 6 and np.abs(late - plain[0]).max() > 6, (
        np.abs(late - images["1"]).max(), np.abs(late - plain[0]).max())

    # An SD 1.x adapter on the SDXL model: its maps do not fit the blocks.
    r = run("txt2img", "--model", str(xl), *flags, "--controlnet", str(tmp_path / "full"),
            "--control-image", str(tmp_path / "sketch.png"), "--device", "cpu",
            "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "T2I-Adapter" in r.stderr, r.stderr
    # A size the adapter cannot unshuffle (72 is not a multiple of its 16).
    tiny_adapter(tmp_path / "x16", 4, in_channels=1, channels=[32, 32, 64], num_res_blocks=1,
                 downscale_factor=16)
    r = run("txt2img", "--model", str(sd), "--prompt", "x", "--steps", "1", "--width", "72",
            "--height", "64", "--controlnet", str(tmp_path / "x16"), "--control-image",
            str(tmp_path / "sketch.png"), "--device", "cpu", "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "multiples of 16" in r.stderr and "x16" in r.stderr, r.stderr


def test_a_controlnet_weight_grid_has_diffusers_images_in_its_cells(tmp_path):
    """grid --x control_weight=0,1: the weight-1 cell is diffusers' image of the fixture's
    euler_g7.5_neg_b2 (its first), the weight-0 cell the image txt2img makes without the
    ControlNet."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file
    case = {c["name"]: c for c in json.loads((CONTROL / "cases.json").read_text())}
    req = case["euler_g7.5_neg_b2"]["request"]
    flags = ["--model", str(CONTROL / "tiny-sd"), "--prompt", req["prompt"],
             "--negative", req["negative_prompt"], "--steps", str(req["steps"]),
             "--guidance", str(req["guidance_scale"]), "--seed", str(req["seed"]),
             "--width", str(req["width"]), "--height", str(req["height"]),
             "--sampler", req["sampler"], "--device", "cpu"]
    r = run("grid", *flags, "--controlnet", str(CONTROL / "tiny-controlnet"), "--control-image",
            str(CONTROL / "control.png"), "--x", "control_weight=0,1", "--cells",
            "--out", str(tmp_path / "grid"))
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split("\n")[:-1]
    assert len(paths) == 3, paths
    assert "X Type: ControlNet weight" in Image.open(paths[0]).text["parameters"]
    want = load_file(str(CONTROL / "expected.safetensors"))["euler_g7.5_neg_b2"][0].numpy()
    controlled = np.array(Image.open(paths[2]).convert("RGB")).astype(int)
    assert np.abs(controlled - want.astype(int)).max() <= 2
    r = run("txt2img", *flags, "--out", str(tmp_path / "plain"))
    assert r.returncode == 0, r.stderr
    plain = np.array(Image.open(r.stdout.split()[0]).convert("RGB")).astype(int)
    assert np.array_equal(np.array(Image.open(paths[1]).convert("RGB")).astype(int), plain)
    assert np.abs(plain - controlled).max() > 30
