#!/usr/bin/env bash
# install-deps.sh [--test]: installs the Debian packages that the build needs (as root; idempotent).
# --test adds what the test stages need: clang (libFuzzer), valgrind, debootstrap (the Debian 13 tree
# for GIMP 3 on a Debian 12 host) or, on Debian 13, GIMP 3 itself with Xvfb for the plug-in's tests.
set -euo pipefail
pkgs=(gcc pkg-config meson ninja-build libglib2.0-dev libjson-glib-dev libopenblas-dev libpng-dev python3)
if [ "${1:-}" = --test ]; then
  pkgs+=(clang libclang-rt-dev libomp-dev valgrind)   # libFuzzer runtime; OpenMP for clang builds
  if apt-cache policy libgimp-3.0-dev 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
    pkgs+=(gimp libgimp-3.0-dev xvfb xdotool x11-apps)      # Debian 13: GIMP 3 on the host
  else
    pkgs+=(debootstrap)                                      # Debian 12: GIMP 3 in a Debian 13 tree
  fi
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# cuobjdump (and the nvdisasm it runs) for the SASS check of the CUDA module (meson test cuda-sass-chains,
# tools/sass_chains.py): the toolkit in /usr/local/cuda has neither, PyPI's nvidia-cuda-cuobjdump and
# nvidia-cuda-nvdisasm wheels carry them (5.5 MB). Unpacked where sass_chains.py looks; without them (no
# network) that check skips.
if [ "${1:-}" = --test ] && [ -x /usr/local/cuda/bin/nvcc ] && ! command -v cuobjdump >/dev/null \
   && [ ! -x /usr/local/cuda/bin/cuobjdump ]; then
  tools_dir=$(python3 "$(dirname "$0")/sass_chains.py" --tools-dir)
  if [ ! -x "$tools_dir/nvidia/cu13/bin/cuobjdump" ] || [ ! -x "$tools_dir/nvidia/cu13/bin/nvdisasm" ]; then
    tmp=$(mktemp -d)
    if python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" nvidia-cuda-cuobjdump==13.5.37 \
         nvidia-cuda-nvdisasm==13.5.37 \
       && python3 -m zipfile -e "$tmp"/nvidia_cuda_cuobjdump-*.whl "$tools_dir" \
       && python3 -m zipfile -e "$tmp"/nvidia_cuda_nvdisasm-*.whl "$tools_dir"; then
      chmod +x "$tools_dir/nvidia/cu13/bin/cuobjdump" "$tools_dir/nvidia/cu13/bin/nvdisasm"
      echo "install-deps: cuobjdump unpacked into $tools_dir"
    else
      echo "install-deps: no cuobjdump wheel (the SASS check will skip)"
    fi
    rm -rf "$tmp"
  fi
fi
