"""PyTorch checkpoints as torch.save writes them (every pickle protocol, nested state dicts,
views, every dtype SD Studio has a name for, parameters, Lightning-style extras, an object that
would run a command if unpickled in Python), the same archives re-packed (ZIP64, unaligned,
compressed, a storage missing, big-endian) and files that are not readable checkpoints.

usage: make_torch_checkpoint_fixture.py OUT_DIR
OUT_DIR/cases.json: [{"file", "tensors": bool, "error": substring or null}]; for each readable
file OUT_DIR/FILE.expected.safetensors holds the tensors it must give (contiguous copies).
OUT_DIR/payload_marker.txt: the file the command in `payload.ckpt` would create (it must not
appear when the file is read).
"""
import collections
import json
import struct
import sys
import types
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file


class Lightning:  # stands in for pytorch_lightning's ModelCheckpoint callback state
    def __init__(self):
        self.best_model_path = "epoch=3.ckpt"
        self.monitor = None


class Payload:  # what a hostile checkpoint carries: unpickling it in Python runs a command
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os
        return (os.system, (self.command,))


def state_dict():
    torch.manual_seed(0)
    sd = collections.OrderedDict()
    sd["model.diffusion_model.conv.weight"] = torch.randn(4, 3, 3, 3)
    sd["model.diffusion_model.conv.bias"] = torch.randn(4).half()
    sd["first_stage_model.w"] = torch.randn(2, 5).to(torch.bfloat16)
    stacked = torch.randn(6, 4)
    sd["q"], sd["k"], sd["v"] = stacked.chunk(3)  # views at offsets into one storage
    sd["transposed"] = torch.randn(3, 5).t()       # strided: stored as the base
    sd["every_other"] = torch.arange(10.0, dtype=torch.float64)[::2]
    sd["expanded"] = torch.tensor([1.0, 2.0]).expand(3, 2)  # stride 0
    sd["ids"] = torch.arange(77).unsqueeze(0)
    sd["mask"] = torch.tensor([True, False, True])
    sd["bytes"] = torch.arange(5, dtype=torch.uint8)
    sd["int8"] = torch.arange(-3, 3, dtype=torch.int8)
    sd["int32"] = torch.arange(4, dtype=torch.int32)
    sd["int16"] = torch.arange(4, dtype=torch.int16)
    sd["uint16"] = torch.arange(4, dtype=torch.int32).to(torch.uint16)  # rebuilt by _v3
    sd["f8"] = torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn)
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2))
    sd["logit_scale"] = torch.tensor(4.6)
    return sd


def expected(sd):
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def repack(src, dst, *, compress=False, drop=None, replace=None):
    """The archive's entries written again by Python's zipfile (no 64-byte alignment)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(
            dst, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if drop and info.filename.endswith(drop):
                continue
            data = zin.read(info.filename)
            if replace and info.filename.endswith(replace[0]):
                data = replace[1]
            zout.writestr(info.filename, data)


def write_zip64(src, dst):
    """The archive's entries written with every ZIP64 field (sizes, offsets, end records), as
    archives over 4 GiB are; zipfile writes those only when it must."""
    with zipfile.ZipFile(src) as zin:
        entries = [(i.filename.encode(), zin.read(i.filename)) for i in zin.infolist()]
    out, central = bytearray(), bytearray()
    for name, data in entries:
        crc = zipfile.crc32(data)
        offset = len(out)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF,
                           0xFFFFFFFF, len(name), len(extra)) + name + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(name), len(cextra), 0, 0, 0, 0,
                               0xFFFFFFFF) + name + cextra
    cd_offset = len(out)
    out += central
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, len(entries), len(entries),
                       len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064b50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    Path(dst).write_bytes(bytes(out))


def main(out_dir):
    out = Path(out_dir)
    cases = []

    def good(name, obj, tensors, **save):
        torch.save(obj, out / name, **save)
        save_file(tensors, str(out / (name + ".expected.safetensors")))
        cases.append({"file": name, "tensors": True, "error": None})

    def bad(name, error):
        cases.append({"file": name, "tensors": False, "error": error})

    sd = state_dict()
    want = expected(sd)
    for protocol in (1, 2, 3, 4, 5):
        good(f"nested_p{protocol}.ckpt", {"state_dict": {"state_dict": sd}, "global_step": 7},
             want, pickle_protocol=protocol)
    good("flat.pt", sd, want)
    # What Lightning and the original SD training code save beside the weights.
    marker = "/tmp/sdstudio_payload_ran"
    lightning = {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.4.2",
                 "callbacks": {Lightning: Lightning()}, "optimizer_states": [{"lr": 1e-4}],
                 "lr_schedulers": [], "hparams": types.SimpleNamespace(lr=1e-4),
                 "extras": {1, 2, frozenset({3})}, "bytes": b"\x00\x01", "big": 2 ** 80,
                 "pi": 3.14159, "state_dict": sd}
    good("lightning.ckpt", lightning, want)
    good("payload.ckpt", {"state_dict": sd, "evil": Payload(f"touch {marker}")}, want)
    (out / "payload_marker.txt").write_text(str(marker))

    repack(out / "flat.pt", out / "repacked.ckpt")
    save_file(want, str(out / "repacked.ckpt.expected.safetensors"))
    cases.append({"file": "repacked.ckpt", "tensors": True, "error": None})
    write_zip64(out / "flat.pt", out / "zip64.ckpt")
    save_file(want, str(out / "zip64.ckpt.expected.safetensors"))
    cases.append({"file": "zip64.ckpt", "tensors": True, "error": None})
    for name in ("repacked.ckpt", "zip64.ckpt"):  # torch itself reads both
        back = torch.load(out / name, weights_only=True)
        assert all(torch.equal(back[k].contiguous(), want[k]) for k in want), name
    with zipfile.ZipFile(out / "zip64.ckpt") as z:
        assert z.testzip() is None

    repack(out / "flat.pt", out / "compressed.ckpt", compress=True)
    bad("compressed.ckpt", "is compressed")
    repack(out / "flat.pt", out / "no_storage.ckpt", drop="/data/0")
    bad("no_storage.ckpt", "/data/0 is missing")
    repack(out / "flat.pt", out / "big_endian.ckpt", replace=("/byteorder", b"big"))
    bad("big_endian.ckpt", "stored big-endian")
    torch.save(sd, out / "legacy.ckpt", _use_new_zipfile_serialization=False)
    bad("legacy.ckpt", "before PyTorch 1.6")
    data = (out / "flat.pt").read_bytes()
    (out / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    bad("truncated.ckpt", "truncated")
    torch.save({"epoch": 3, "note": "no weights"}, out / "no_tensors.ckpt")
    bad("no_tensors.ckpt", "holds no tensors")
    torch.save([torch.zeros(2)], out / "a_list.ckpt")
    bad("a_list.ckpt", "holds no dictionary of tensors")
    with zipfile.ZipFile(out / "not_torch.ckpt", "w") as z:
        z.writestr("readme.txt", "hello")
    bad("not_torch.ckpt", "without data.pkl")
    (out / "cases.json").write_text(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
