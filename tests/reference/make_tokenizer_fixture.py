"""Expected CLIPTokenizer ids for the prompt corpus and for random strings.

usage: make_tokenizer_fixture.py OUT_DIR CORPUS_JSON
Writes OUT_DIR/tokenizer/{vocab.json,merges.txt} (the real SD 1.x vocabulary) and
OUT_DIR/expected.json: [{"text": ..., "ids": [...], "padded": [77 ids]}, ...] for the corpus
followed by 3000 seeded random strings drawn from many Unicode blocks.
OUT_DIR/settings/NAME/ holds tokenizer folders whose padding token or model_max_length differ
(SD 2.x pads with "!"), written as transformers 5 and as older hub folders write them, and
OUT_DIR/settings/expected.json the ids diffusers feeds the text encoder for a few prompts.
"""
import json
import random
import shutil
import sys
from pathlib import Path

from transformers import CLIPTokenizer

import make_clip_vocab

# Blocks to draw random characters from: ASCII, Latin-1, Latin extended, combining marks,
# Greek, Cyrillic, Arabic, Devanagari, Thai, Hangul jamo and syllables, CJK, kana, fullwidth,
# general punctuation and spaces, letterlike and number forms, emoji, and a few odd controls.
BLOCKS = [(0x20, 0x7E), (0x09, 0x0D), (0xA0, 0xFF), (0x100, 0x24F), (0x300, 0x36F),
          (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F),
          (0x1100, 0x11FF), (0xAC00, 0xD7A3), (0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xFF00, 0xFFEF),
          (0x2000, 0x206F), (0x2100, 0x218F), (0x1F300, 0x1FAFF), (0x1C, 0x1F), (0x2460, 0x24FF),
          (0xFB00, 0xFB4F), (0x1E00, 0x1EFF), (0x3000, 0x303F)]
WORDS = ["a", "photo", "of", "cat", "<|endoftext|>", "<|startoftext|>", "it's", "we'll", "I'M",
         "&amp;", "(masterpiece:1.2)", "don't", "1024", "ÉCOLE", "straße", "İstanbul", "ΟΔΟΣ"]


def random_strings(n, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.3:
                parts.append(rng.choice(WORDS))
            else:
                lo, hi = rng.choice(BLOCKS)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
            parts.append(rng.choice(["", " ", "  ", "\n", "\t", "\u3000"]))
        out.append("".join(parts))
    return out


SETTINGS_PROMPTS = ["a cat", "", "an astronaut riding a horse on the moon, " * 4]
# A token as older hub tokenizer_config.json files write it.
def added(text):
    return {"__type": "AddedToken", "content": text, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def tokenizer_settings(out, source):
    """Folders with other padding settings, and what CLIPTokenizer makes of them."""
    root = out / "settings"
    folders = {}
    # As transformers 5 saves them: tokenizer.json + tokenizer_config.json.
    CLIPTokenizer.from_pretrained(source, pad_token="!", model_max_length=77).save_pretrained(
        root / "sd2_pad")
    CLIPTokenizer.from_pretrained(source, pad_token="!", model_max_length=20).save_pretrained(
        root / "short")
    # As the SD 1.5 and 2.x hub folders are: vocab.json + merges.txt, a tokenizer_config.json
    # with AddedToken objects, and a special_tokens_map.json that wins over it.
    legacy = root / "legacy_map"
    legacy.mkdir(parents=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(Path(source) / f, legacy / f)
    (legacy / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": added("<|startoftext|>"), "eos_token": added("<|endoftext|>"),
        "unk_token": added("<|endoftext|>"), "pad_token": "<|endoftext|>",
        "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}))
    (legacy / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": added("<|startoftext|>"), "eos_token": added("<|endoftext|>"),
        "unk_token": added("<|endoftext|>"), "pad_token": added("!")}))
    # A config listing its added tokens is read alone: its pad token wins over the map.
    listed = root / "listed_tokens"
    shutil.copytree(legacy, listed)
    config = json.loads((listed / "tokenizer_config.json").read_text())
    config["pad_token"] = "<|endoftext|>"
    config["added_tokens_decoder"] = {
        "49406": {**added("<|startoftext|>"), "special": True},
        "49407": {**added("<|endoftext|>"), "special": True}}
    for v in config["added_tokens_decoder"].values():
        v.pop("__type")
    (listed / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("sd2_pad", "short", "legacy_map", "listed_tokens"):
        tok = CLIPTokenizer.from_pretrained(root / name)
        # As StableDiffusionPipeline.encode_prompt calls it.
        folders[name] = [tok(p, padding="max_length", max_length=tok.model_max_length,
                             truncation=True).input_ids for p in SETTINGS_PROMPTS]
    (root / "expected.json").write_text(json.dumps(
        {"prompts": SETTINGS_PROMPTS, "padded": folders}))


def main(out_dir, corpus_path):
    out = Path(out_dir)
    make_clip_vocab.main(str(out / "tokenizer"))
    tok = CLIPTokenizer.from_pretrained(str(out / "tokenizer"))
    corpus = json.loads(Path(corpus_path).read_text(encoding="utf-8"))
    rows = []
    for text in corpus + random_strings(3000):
        ids = tok(text, add_special_tokens=False).input_ids
        padded = tok(text, padding="max_length", max_length=77, truncation=True).input_ids
        rows.append({"text": text, "ids": ids, "padded": padded})
    (out / "expected.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    tokenizer_settings(out, out / "tokenizer")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
