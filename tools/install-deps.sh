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
