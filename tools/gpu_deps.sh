#!/usr/bin/env bash
# Stages .deps/ for tools/gpu_check.sh: what the GPU machine lacks (nlohmann-json, GoogleTest)
# and the reference fixtures its tests read, copied from this machine's build/fixtures (run
# `scripts/test.sh` here first). The working tree that travels to the GPU machine is limited to
# 64 MiB and the tracked files take about 35, so the fixtures go in sets, one per call (the
# machine keeps build-gpu/ between calls made within its idle time):
#   tools/gpu_deps.sh text       tokenizer, text encoder, model folder (about 23 MiB)
#   tools/gpu_deps.sh nn         the tiny UNet/VAE configs (about 19 MiB)
#   tools/gpu_deps.sh pipeline   the pipeline parity suite (about 18 MiB)
#   tools/gpu_deps.sh inpaint    the inpainting parity suite (about 24 MiB)
# .deps/ is listed in .git/info/exclude by this script; name it in the device call's `carry`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
set_name=${1:?usage: tools/gpu_deps.sh text|nn|pipeline|inpaint}
grep -qx '/.deps/' .git/info/exclude 2>/dev/null || echo '/.deps/' >> .git/info/exclude
rm -rf .deps
mkdir -p .deps/include .deps/lib .deps/share/cmake .deps/fixtures
cp -r /usr/include/nlohmann /usr/include/gtest .deps/include/
cp -r /usr/share/cmake/nlohmann_json .deps/share/cmake/
cp /usr/lib/x86_64-linux-gnu/libgtest.a /usr/lib/x86_64-linux-gnu/libgtest_main.a .deps/lib/
case "$set_name" in
text) fixtures="tokenizer text_encoder_tiny safetensors tiny_pipeline" ;;
nn) fixtures="unet_vae_tiny" ;;
pipeline) fixtures="pipeline" ;;
inpaint) fixtures="inpaint" ;;
*) echo "unknown set '$set_name' (text, nn, pipeline, inpaint)" >&2; exit 2 ;;
esac
for f in $fixtures; do
    [ -e "build/fixtures/$f/.complete" ] || { echo "build/fixtures/$f is missing: run scripts/test.sh first" >&2; exit 1; }
    # The link to the cached fixture followed, links inside it (models sharing parts) kept.
    cp -rH "build/fixtures/$f" .deps/fixtures/
done
echo "$set_name" > .deps/set
du -sh .deps
