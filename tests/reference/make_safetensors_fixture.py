"""A safetensors file written by the reference writer, one tensor per dtype.

usage: make_safetensors_fixture.py OUT_DIR
Tensor NAME_DTYPE holds arange(numel) (mod 2 for bool, mod 256 for u8) in the shape below,
converted to the dtype; "empty" has shape [0, 3]; "scalar" has shape [] and value 7.
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}


def main(out_dir):
    tensors = {}
    for name, dt in DTYPES.items():
        v = torch.arange(2 * 3 * 5)
        if dt == torch.bool:
            v = v % 2
        elif dt in (torch.uint8, torch.int8):
            v = v % 100
        tensors[f"t_{name}"] = v.reshape(2, 3, 5).to(dt)
    tensors["empty"] = torch.zeros(0, 3)
    tensors["scalar"] = torch.tensor(7.0)
    save_file(tensors, str(Path(out_dir) / "reference.safetensors"),
              metadata={"format": "pt", "note": "made by make_safetensors_fixture.py"})


if __name__ == "__main__":
    main(sys.argv[1])
