"""Pillow's Lanczos resize (what diffusers' image processor does to an init image whose size
is not a multiple of the VAE's scale) on random images, for sds::resize to match byte for byte.

usage: make_image_fixture.py OUT_DIR
Writes OUT_DIR/resize.json: [{"in": [w, h], "out": [w, h], "file": NAME}, ...], NAME.in.rgb
and NAME.out.rgb (raw 8-bit RGB, row-major).
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Down, up, one axis only, large ratios, odd sizes, to a single pixel; height shrinking by more
# than twice the width's pixels, where Pillow 13 resizes vertically first.
CASES = [(37, 45, 32, 40), (64, 64, 32, 24), (40, 40, 36, 12), (100, 100, 90, 10), (20, 13, 64, 48), (100, 7, 8, 3), (8, 8, 8, 16),
         (3, 5, 1, 1), (1000, 10, 16, 10), (33, 33, 24, 40), (513, 389, 512, 384), (9, 9, 9, 9)]


def main(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    index = []
    for n, (w, h, ow, oh) in enumerate(CASES):
        # Noise with smooth parts, so that both clamping and in-between values occur.
        pixels = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        pixels[: h // 2] = (np.linspace(0, 255, w)[None, :, None] * np.ones((h // 2, 1, 3)))
        name = f"case{n}"
        (out / f"{name}.in.rgb").write_bytes(pixels.tobytes())
        resized = Image.fromarray(pixels, "RGB").resize((ow, oh), resample=Image.LANCZOS)
        (out / f"{name}.out.rgb").write_bytes(np.asarray(resized).tobytes())
        index.append({"in": [w, h], "out": [ow, oh], "file": name})
    (out / "resize.json").write_text(json.dumps(index))


if __name__ == "__main__":
    main(sys.argv[1])
