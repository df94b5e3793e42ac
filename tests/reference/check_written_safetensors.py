"""Reads the file safetensors_test wrote with our writer using the reference reader, and checks
its contents (see WriterOutputIsReadableByTheReference in tests/core/io/safetensors_test.cpp).

usage: check_written_safetensors.py FILE
"""
import sys

import torch
from safetensors import safe_open


def main(path):
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"writer": "sdstudio", "purpose": "test"}, f.metadata()
        names = set(f.keys())
        assert names == {"a_f32", "b_f16", "c_bf16", "d_i64", "e_u8", "f_bool", "g_empty"}, names
        a = f.get_tensor("a_f32")
        assert a.dtype == torch.float32 and a.shape == (4, 5)
        assert torch.equal(a, torch.arange(20, dtype=torch.float32).reshape(4, 5) * 0.5)
        assert torch.equal(f.get_tensor("b_f16"), torch.arange(6, dtype=torch.float16) - 3)
        assert torch.equal(f.get_tensor("c_bf16"), torch.arange(3, dtype=torch.bfloat16) * 1.5)
        assert torch.equal(f.get_tensor("d_i64"), torch.tensor([-1, 0, 1 << 40]))
        assert torch.equal(f.get_tensor("e_u8"), torch.tensor([0, 255], dtype=torch.uint8))
        assert torch.equal(f.get_tensor("f_bool"), torch.tensor([True, False, True]))
        assert f.get_tensor("g_empty").shape == (0, 2)
    print("reference reader: ok")


if __name__ == "__main__":
    main(sys.argv[1])
