"""Expected CLIPTokenizer ids for the prompt corpus and for random strings.

usage: make_tokenizer_fixture.py OUT_DIR CORPUS_JSON
Writes OUT_DIR/tokenizer/{vocab.json,merges.txt} (the real SD 1.x vocabulary) and
OUT_DIR/expected.json: [{"text": ..., "ids": [...], "padded": [77 ids]}, ...] for the corpus
followed by 3000 seeded random strings drawn from many Unicode blocks.
"""
import json
import random
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
