#!/usr/bin/env bash
# trixie.sh: creates or updates a Debian 13 (trixie) tree in which the GIMP 3 plug-in is built and tested
# on a Debian 12 host (Debian 12 has no GIMP 3). Idempotent: a complete, up-to-date tree costs a second.
#
# Usage: tools/trixie.sh [DIR]          DIR defaults to $TRIXIE_DIR, else /work/trixie
#        TRIXIE_EXTRA="pkg ..."         extra packages
#        TRIXIE_MIRROR=http://...       Debian mirror (default http://deb.debian.org/debian)
#
# Needs root (debootstrap, chroot). On a Debian 13 host the tree is not needed: it says so and exits 0,
# and tests/gimp/run.sh uses the host directly.
#
# Steps: debootstrap --variant=minbase trixie DIR (only when DIR is empty or absent), then inside
# the tree: dpkg --configure -a, apt-get -f install (a debootstrap --include of GIMP leaves packages
# unconfigured: their gir1.2-* alternatives are not resolved), and apt-get install of what is missing.
# /proc is mounted only for the apt run and unmounted on exit.
set -euo pipefail

dir=${1:-${TRIXIE_DIR:-/work/trixie}}
mirror=${TRIXIE_MIRROR:-http://deb.debian.org/debian}
# Build and test tools; Xvfb, xdotool and xwd (x11-apps) run the dialogs for tests/gimp/interactive.sh.
pkgs=(gimp libgimp-3.0-dev meson ninja-build gcc pkg-config libglib2.0-dev libjson-glib-dev libopenblas-dev
      libpng-dev python3 xvfb xdotool x11-apps ${TRIXIE_EXTRA:-})

say () { echo "trixie.sh: $*"; }

if [ -r /etc/os-release ] && . /etc/os-release && [ "${VERSION_CODENAME:-}" = trixie ]; then
  say "this host is Debian 13 (trixie): no tree needed; install ${pkgs[*]} on the host"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "needs root (debootstrap and chroot)" >&2
  exit 1
fi

# 1. The base system, when DIR has none. A base is there once dpkg inside calls apt and base-files installed;
# debootstrap's own work folder (DIR/debootstrap) is then only a leftover of a run whose --include failed.
base_ok () { [ -x "$dir/usr/bin/dpkg-query" ] && [ "$(chroot "$dir" /usr/bin/dpkg-query -W -f='${Status}\n' \
               apt base-files 2>/dev/null | grep -c 'install ok installed')" = 2 ]; }
if ! base_ok; then
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    say "$dir exists but holds no finished Debian base system: remove it (or pick another DIR) and rerun" >&2
    exit 1
  fi
  if ! command -v debootstrap >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
  fi
  # Up to 3 tries: a mirror caught mid-update can serve an InRelease whose signature does not verify ("Invalid
  # Release signature", seen 2026-12-07; it verified a minute later), and debootstrap does not retry itself.
  for try in 1 2 3; do
    say "debootstrap --variant=minbase trixie $dir (a few minutes; try $try of 3)"
    mkdir -p "$dir"
    if debootstrap --variant=minbase trixie "$dir" "$mirror"; then
      break
    fi
    rm -rf "${dir:?}"          # it was empty or absent before (checked above): a rerun starts clean
    [ "$try" -lt 3 ] || { say "debootstrap failed 3 times" >&2; exit 1; }
    sleep 30
  done
fi
rm -rf "${dir:?}/debootstrap"

# 2. Packages, inside the tree.
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
mounted_proc=0
cleanup () { if [ $mounted_proc = 1 ]; then umount "$dir/proc" || true; fi; }
trap cleanup EXIT
if ! mountpoint -q "$dir/proc"; then
  mount -t proc proc "$dir/proc"
  mounted_proc=1
fi
in_tree () { chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
               DEBIAN_FRONTEND=noninteractive "$@"; }

if [ -n "$(in_tree dpkg --audit 2>/dev/null)" ]; then
  say "repairing half-configured packages"
  in_tree dpkg --configure -a >/dev/null 2>&1 || true
  in_tree apt-get update -q
  in_tree apt-get -f install -y -q
fi

missing=()
for p in "${pkgs[@]}"; do
  in_tree dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  in_tree apt-get update -q
  in_tree apt-get install -y -q --no-install-recommends "${missing[@]}"
  in_tree apt-get clean
fi
if [ -n "$(in_tree dpkg --audit 2>/dev/null)" ]; then
  say "dpkg --audit still reports problems in $dir:" >&2
  in_tree dpkg --audit >&2
  exit 1
fi
say "$dir ready ($(in_tree dpkg-query -W -f='${Version}' gimp 2>/dev/null | sed 's/^/gimp /'))"
