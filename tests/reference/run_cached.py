"""Runs a fixture maker only when its inputs changed, and links its output where the tests look.

usage: run_cached.py LINK_PATH SCRIPT [ARGS...]

The output lives in $SDS_FIXTURE_CACHE (default ~/.cache/sdstudio/fixtures) under a key made of
the script's text, the files named in its DEPENDS list (module attribute), the arguments and
the reference environment's versions; LINK_PATH becomes a symlink to it. A fresh clone on the
same machine thus reuses fixtures made before, and a changed maker makes new ones. Each run
marks its output used; outputs of the same maker beyond the KEEP used last are deleted (any edit
of a reference script makes every fixture anew, and the full-size UNet/VAE one is 3.6 GB).
"""
import hashlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = ["torch", "diffusers", "transformers", "safetensors", "open_clip_torch", "tokenizers"]
KEEP = 4  # per maker: a maker run with several arguments (tiny, full) has an output for each


def prune(cache, stem):
    made = [p for p in cache.glob(f"{stem}-*")
            if not p.name.endswith(".tmp") and (p / ".complete").exists()]
    made.sort(key=lambda p: (p / ".complete").stat().st_mtime, reverse=True)
    for old in made[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
        print(f"pruned {old}")


def main():
    link, script, args = Path(sys.argv[1]), Path(sys.argv[2]).resolve(), sys.argv[3:]
    h = hashlib.sha256()
    h.update(script.read_bytes())
    for dep in sorted(script.parent.glob("*.py")):  # shared helpers of the makers
        h.update(dep.name.encode() + dep.read_bytes())
    for a in args:  # a file argument counts by its content, not its path
        p = Path(a)
        h.update((p.read_bytes() if p.is_file() else a.encode()) + b"\0")
    for pkg in PACKAGES:
        h.update(f"{pkg}={md.version(pkg)}".encode())
    key = f"{script.stem}-{h.hexdigest()[:16]}"
    cache = Path(os.environ.get("SDS_FIXTURE_CACHE", Path.home() / ".cache/sdstudio/fixtures"))
    out = cache / key
    if not (out / ".complete").exists():
        tmp = cache / (key + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run([sys.executable, str(script), str(tmp), *args], check=True)
        (tmp / ".complete").touch()
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        print(f"made {out}")
    else:
        (out / ".complete").touch()  # used now
        print(f"cached {out}")
    prune(cache, script.stem)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(out, target_is_directory=True)


if __name__ == "__main__":
    main()
