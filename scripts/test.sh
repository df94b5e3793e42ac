#!/usr/bin/env bash
# Sets up, builds and runs every test (ctest: unit, reference parity at tiny and full size,
# the CLI, and the fuzzer for about a minute). CI runs exactly this (.ci/run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh"
build=${SDS_BUILD_DIR:-$root/build}
cd "$build"
jobs=${SDS_JOBS:-2}
# Each test's torch threads (ours and the reference's) get its share of the cores: tests whose
# OpenMP threads outnumber the cores spin against each other (two fixture makers at once with 2
# threads each on 2 cores: 295 s; with 1 thread each: 36 s). RUN_SERIAL tests take every core.
cores=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores > jobs ? cores / jobs : 1 ))}
ctest --output-on-failure -j "$jobs" "$@"
