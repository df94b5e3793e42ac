#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for building and testing SD Studio.
# Idempotent: a second run checks and returns in seconds.
#  - Debian packages: compilers, Ninja, Qt 6, OpenCV, QCustomPlot (Qt 6), nlohmann-json,
#    GoogleTest, Xvfb, ccache, clang (libFuzzer).
#  - The Python reference environment: a venv with the pinned requirements, kept OUTSIDE the
#    clone (under $SDS_CACHE, keyed by a hash of the requirements) and linked as .venv, so a
#    fresh clone on the same machine reuses it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SDS_CACHE:-$HOME/.cache/sdstudio}
mkdir -p "$cache"

debs=(build-essential cmake ninja-build ccache clang libclang-rt-14-dev pkg-config git
      python3 python3-venv
      qt6-base-dev qt6-base-dev-tools libqt6sql6-sqlite libqt6opengl6-dev
      libopencv-dev libqcustomplot-dev libqcustomplot2.1-qt6 nlohmann-json3-dev libgtest-dev
      xvfb xauth fonts-dejavu-core)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  log="$cache/apt.log"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
           --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log"; echo "setup: apt-get failed (full log: $log)" >&2; exit 1
  fi
fi

# Python: prefer the first python3.11+ on PATH (Debian 12 ships 3.11).
py=${SDS_PYTHON:-python3}
key=$( (cat "$root/requirements-reference.txt"; "$py" -c 'import sys; print(sys.version_info[:2])') | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "setup: creating the reference venv in $venv (pip cache in $cache/pip)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  PIP_CACHE_DIR="$cache/pip" "$venv/bin/pip" install -q --upgrade pip
  PIP_CACHE_DIR="$cache/pip" "$venv/bin/pip" install -q -r "$root/requirements-reference.txt"
  touch "$venv/.complete"
fi
# .venv in the clone is a link to the cached venv.
if [ "$(readlink "$root/.venv" 2>/dev/null)" != "$venv" ]; then
  rm -rf "$root/.venv"
  ln -s "$venv" "$root/.venv"
fi
echo "setup: ok (venv: $venv)"
