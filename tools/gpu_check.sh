#!/usr/bin/env bash
# The GPU machine's check (run through the device tool, from the repository root): builds core
# and the C++ tests against that machine's own torch (CUDA 13) with no Qt, then runs the tests
# whose fixtures .deps/ holds, on the CPU and on the GPU. Stage .deps/ here first with
# tools/gpu_deps.sh SET (text, nn or pipeline: one set per call, for the 64 MiB the working tree
# may take) and carry it, e.g. the device call
#   run(command="tools/gpu_check.sh", carry=[".deps"], timeout_s=540)
# For the text set the full-size text encoder fixture is made there (torch + transformers).
set -uo pipefail
out=${OUT:-/tmp/sds_out}
mkdir -p "$out"
py=$(command -v python3)
exec > >(tee "$out/gpu_check.log") 2>&1
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0), 'transformers', transformers.__version__)"
cmake --version | head -1; c++ --version | head -1
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDS_PYTHON="$py" \
      -DSDS_BUILD_APP=OFF -DSDS_BUILD_FUZZ=OFF -DSDS_TEST_CUDA=ON \
      -DCMAKE_PREFIX_PATH="$PWD/.deps" -DGTEST_ROOT="$PWD/.deps" 2>&1 | grep -E "LibTorch|Error|error" 
ninja -C build-gpu -j16 2>&1 | grep -E "error|warning:|FAILED|Linking" | tail -20
echo "configure + build: $(( $(date +%s) - t0 )) s"
export SDS_FIXTURES=$PWD/.deps/fixtures SDS_TEST_TMP=/tmp/sds_tmp
set_name=$(cat .deps/set 2>/dev/null || echo text)
case "$set_name" in
text)
    (cd tests/reference && "$py" make_text_encoder_fixture.py "$SDS_FIXTURES/text_encoder_full" full >/dev/null 2>&1) || echo "full fixture: FAILED"
    tests="safetensors_test model_folder_test clip_tokenizer_test clip_text_model_test clip_text_model_full_test clip_text_model_cuda_test" ;;
nn) tests="unet_vae_test unet_vae_cuda_test" ;;
pipeline) tests="pipeline_test pipeline_cuda_test" ;;
inpaint) tests="inpaint_test inpaint_cuda_test" ;;
esac
echo "set: $set_name"
fail=0
for t in $tests; do
    bin=$t; env=()
    case "$t" in *_cuda_test) [ -e "build-gpu/tests/$t" ] || { bin=${t%_cuda_test}_test; env=(SDS_TEST_DEVICE=cuda); } ;; esac
    if env "${env[@]}" build-gpu/tests/$bin > "$out/$t.log" 2>&1; then r=ok; else r=FAILED; fail=1; fi
    echo "$t: $r ($(grep -E '^\[  (PASSED|FAILED) ' "$out/$t.log" | tr '\n' ' '))"
    grep -E "max abs error|relative error|max pixel difference|Failure" "$out/$t.log" | head -40
done
exit $fail
