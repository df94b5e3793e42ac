#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and builds SD Studio into build/ with Ninja, -j2, ccache.
# Extra arguments go to CMake's configure step.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cache=${SDS_CACHE:-$HOME/.cache/sdstudio}
export CCACHE_DIR=${CCACHE_DIR:-$cache/ccache}
export CCACHE_BASEDIR="$root"        # fresh clones in other folders still hit the cache
export CCACHE_NOHASHDIR=1
build=${SDS_BUILD_DIR:-$root/build}
if [ ! -f "$build/build.ninja" ] || [ $# -gt 0 ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_COMPILER_LAUNCHER=ccache "$@"
fi
cmake --build "$build" -j "${SDS_JOBS:-2}"
