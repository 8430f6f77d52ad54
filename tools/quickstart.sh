#!/usr/bin/env bash
# quickstart.sh: from a fresh Debian machine (as root) to a picture made by GIMP: installs what is missing,
# builds the engine, the ddpm CLI and the GIMP 3 plug-in (on Debian 12 inside a Debian 13 tree, which
# has GIMP 3), installs the plug-in and the shipped models for the current user, and runs
# Filters > Diffusion > Generate in gimp-console-3.0 (batch mode) on the default model, weights/emoji-32.
# Usage: tools/quickstart.sh [OUT.png]     (default: generated/emoji-32.png)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-generated/emoji-32.png}
tools/install-deps.sh --test
[ -f build/build.ninja ] || meson setup build
ninja -C build
tests/gimp/run.sh --generate "$out"
echo "quickstart: GIMP generated $(realpath "$out")"
