#!/usr/bin/env bash
# The GPU benchmark (run through the device tool, from the repository root): builds core +
# sdstudio-bench against that machine's torch, makes a random full-size SD 1.5 there, and
# compares with diffusers at 512x512, 50 steps. Needs .deps/ (see tools/gpu_check.sh) and
# .whl/ holding the diffusers wheel (that machine lacks diffusers).
set -uo pipefail
out=${OUT:-/tmp/sds_out}
mkdir -p "$out"
exec > >(tee "$out/gpu_bench.log") 2>&1
py=$(command -v python3)
"$py" -m pip install -q --upgrade --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDS_PYTHON="$py" \
      -DSDS_BUILD_APP=OFF -DSDS_BUILD_TESTS=OFF -DSDS_BUILD_FUZZ=OFF \
      -DCMAKE_PREFIX_PATH="$PWD/.deps" 2>&1 | grep -E "LibTorch|Error"
ninja -C build-gpu -j16 bench/sdstudio-bench 2>&1 | grep -E "error|FAILED" | head
echo "build: $(( $(date +%s) - t0 )) s"
[ -f /tmp/sd15/model_index.json ] || "$py" bench/make_random_sd15.py /tmp/sd15 --tokenizer .deps/fixtures/tokenizer/tokenizer >/dev/null 2>&1 \
    || { echo "making the model failed"; exit 1; }
echo "model: $(( $(date +%s) - t0 )) s"
"$py" bench/compare.py --bench build-gpu/bench/sdstudio-bench --model /tmp/sd15 --device cuda \
    --dtypes "${SDS_GPU_DTYPES:-fp16,bf16}" --steps 50 --size 512 --repeat 5 | tee "$out/gpu_bench.md"
echo "total: $(( $(date +%s) - t0 )) s"
