#!/usr/bin/env bash
# Trains the bundled demo model (models/demo) from scratch with the project's own trainer:
# the synthetic shapes dataset, the real CLIP tokenizer vocabulary, SD 1.x architecture at
# 128x128. Resumable: rerun after an interruption and it continues from the checkpoint.
#
# usage: tools/train_demo_model.sh [WORK_DIR]   (default: ~/.cache/sdstudio/demo-train)
# env:   DEMO_IMAGES (6000) DEMO_VAE_STEPS (1500) DEMO_STEPS (12000) DEMO_DEVICE (auto)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${SDS_CACHE:-$HOME/.cache/sdstudio}/demo-train}
cli=${SDS_BUILD_DIR:-$root/build}/app/sdstudio-cli
mkdir -p "$work"
[ -f "$work/tokenizer/tokenizer.json" ] || "$root/.venv/bin/python" "$root/tools/make_demo_tokenizer.py" "$work/tokenizer"
[ -f "$work/data/000000.png" ] || "$cli" dataset --out "$work/data" --count "${DEMO_IMAGES:-6000}" --size 128 --seed 0
start=$(date +%s)
"$cli" train --data "$work/data" --out "$work/model" --tokenizer "$work/tokenizer" \
    --vae-steps "${DEMO_VAE_STEPS:-1500}" --steps "${DEMO_STEPS:-12000}" --batch 16 --lr 3e-4 \
    --noise-offset 0.1 --snr-gamma 5 \
    --resolution 128 --seed 0 --device "${DEMO_DEVICE:-auto}"
echo "trained in $(( $(date +%s) - start )) s on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
rm -rf "$root/models/demo"
mkdir -p "$root/models/demo"
for c in model_index.json scheduler text_encoder tokenizer unet vae; do
    cp -r "$work/model/$c" "$root/models/demo/"
done
du -sh "$root/models/demo"
