#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages the engine, CLI and tests need (as root; idempotent).
set -euo pipefail
pkgs=(gcc pkg-config meson ninja-build libglib2.0-dev libjson-glib-dev libopenblas-dev libpng-dev python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
