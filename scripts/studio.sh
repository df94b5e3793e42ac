#!/usr/bin/env bash
# Sets up, builds and starts the studio.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh"
exec "${SDS_BUILD_DIR:-$root/build}/ui/sdstudio" "$@"
