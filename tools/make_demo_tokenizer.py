"""Writes the SD 1.x CLIP tokenizer (the real 49,408-token vocabulary, rebuilt from the BPE merges
that ship in open-clip-torch) as transformers saves it, for the demo model.

usage: make_demo_tokenizer.py OUT_DIR
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import make_clip_vocab  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402


def main(out_dir):
    with tempfile.TemporaryDirectory() as src:
        make_clip_vocab.main(src)
        CLIPTokenizer.from_pretrained(src, model_max_length=77).save_pretrained(out_dir)


if __name__ == "__main__":
    main(sys.argv[1])
