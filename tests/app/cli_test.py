"""sdstudio-cli info / tokenize, run as a user runs them, against the reference."""
import json
import os
import random
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


def test_tokenize_matches_clip_tokenizer_on_unseen_prompts():
    ref = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    for prompt in unseen_prompts():
        r = run("tokenize", str(TINY), prompt)
        assert r.returncode == 0, r.stderr
        ids_line, count_line = r.stdout.splitlines()
        want = ref(prompt).input_ids
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
