#!/usr/bin/env bash
# Sets up, builds and runs every test (ctest: unit, reference parity at tiny and full size,
# the CLI, and the fuzzer for about a minute). CI runs exactly this (.ci/run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh"
build=${SDS_BUILD_DIR:-$root/build}
cd "$build"
ctest --output-on-failure -j "${SDS_JOBS:-2}" "$@"
