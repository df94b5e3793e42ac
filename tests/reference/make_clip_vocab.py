"""Writes the SD 1.x CLIP tokenizer files (vocab.json + merges.txt, diffusers/transformers layout)
derived from the BPE merges that ship in open-clip-torch (open_clip/bpe_simple_vocab_16e6.txt.gz).

Vocabulary order (REFERENCE.md): 256 byte-characters, the same with </w>, one entry per merge
(48,894), then <|startoftext|> = 49406 and <|endoftext|> = 49407.

usage: make_clip_vocab.py OUT_DIR
"""
import gzip
import json
import os
import sys

import open_clip.tokenizer as oct


def byte_chars():
    # GPT-2/CLIP byte-to-unicode table: printable Latin-1 bytes map to themselves, the other
    # bytes to code points from 256 upwards. The vocabulary lists the printable ones first (in
    # byte order), then the others (in byte order).
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


def main(out_dir):
    path = os.path.join(os.path.dirname(oct.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    n_merges = 49152 - 256 - 2  # CLIP's vocabulary size is 49408 = 512 + merges + 2
    merges = [tuple(line.split()) for line in lines[1 : 1 + n_merges]]
    assert len(merges) == 48894 and all(len(m) == 2 for m in merges)
    chars = byte_chars()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


if __name__ == "__main__":
    main(sys.argv[1])
