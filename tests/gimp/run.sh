#!/usr/bin/env bash
# run.sh: builds the engine and the GIMP 3 plug-in and runs the headless GIMP tests (test_plugin.sh).
#
#   Debian 13 host:  meson setup build-gimp -Dgimp=enabled here, ninja, meson test --suite gimp.
#   Debian 12 host:  tools/trixie.sh makes sure a Debian 13 tree exists ($TRIXIE_DIR, default /work/trixie;
#                    root needed), the source tree is copied into it (/root/gimp-ddpm/src; .git and build
#                    folders left out), and the same build and test run inside it with chroot, in a build
#                    folder that stays in the tree (/root/gimp-ddpm/build), so reruns are incremental.
#
# Usage: tests/gimp/run.sh [meson test options...]     exit status: that of meson test
#        tests/gimp/run.sh --generate OUT.png            the main job instead of the tests: installs the
#                                                        plug-in and models for the user and runs Generate
#                                                        in gimp-console-3.0 (tests/gimp/generate.sh)
#        tests/gimp/run.sh --screenshots                 runs interactive.sh and puts its screenshots into
#                                                        docs/screenshots/ (SCREENSHOT_MODEL: see there)
#        tests/gimp/run.sh --denoise-dir DIR             Denoise Selection (already-noisy) on DIR/*_sS_noisy.png
#                                                        -> DIR/*_sS_gimp.png (denoise_files.sh; DENOISE_* env)
# Environment: TRIXIE_DIR; GIMP_TEST_KEEP=1 keeps the test's temporary folders (their paths are printed).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build_opts=(-Dgimp=enabled -Dcuda=disabled -Dbuildtype=release)

screenshots=0
generate=
denoise_dir=
if [ "${1:-}" = --screenshots ]; then screenshots=1; shift; fi
if [ "${1:-}" = --denoise-dir ]; then denoise_dir=$(realpath "$2"); shift 2; fi
if [ "${1:-}" = --generate ]; then generate=$(realpath -m "$2"); shift 2; fi

codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)
if [ "$codename" != bookworm ] && pkg-config --exists gimp-3.0 2>/dev/null; then
  cd "$repo"
  [ -f build-gimp/build.ninja ] || meson setup build-gimp "${build_opts[@]}"
  ninja -C build-gimp plugin/gimp-ddpm
  if [ -n "$generate" ]; then
    exec tests/gimp/generate.sh build-gimp/plugin/gimp-ddpm "$repo" "$generate"
  fi
  if [ -n "$denoise_dir" ]; then
    exec tests/gimp/denoise_files.sh build-gimp/plugin/gimp-ddpm "$repo" "$denoise_dir"
  fi
  if [ $screenshots = 1 ]; then
    exec tests/gimp/interactive.sh build-gimp/plugin/gimp-ddpm "$repo" "$repo/docs/screenshots"
  fi
  exec meson test -C build-gimp --no-rebuild --suite gimp --print-errorlogs "$@"
fi

tree=${TRIXIE_DIR:-/work/trixie}
"$repo/tools/trixie.sh" "$tree"

work=/root/gimp-ddpm
src="$tree$work/src"
echo "run.sh: copying the source tree into $src"
rm -rf "$src"
mkdir -p "$src"
# tar keeps the files' times, so ninja rebuilds only what changed since the last run.
tar -C "$repo" --exclude=./.git --exclude='./build*' --exclude=./.venv --exclude=./.whl \
    --exclude='__pycache__' -cf - . | tar -C "$src" -xf -

mounted=()
cleanup () {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" || true; done
}
trap cleanup EXIT
mount_in_tree () {  # type source target-in-tree [options]
  if ! mountpoint -q "$tree$3"; then
    mkdir -p "$tree$3"
    mount -t "$1" ${4:+-o "$4"} "$2" "$tree$3"
    mounted+=("$tree$3")
  fi
}
mount_in_tree proc proc /proc
mount_in_tree tmpfs tmpfs /dev/shm mode=1777
mount_in_tree tmpfs tmpfs /tmp mode=1777

opts=$(printf ' %q' "${build_opts[@]}")
test_opts=$( [ $# -eq 0 ] || printf ' %q' "$@")
if [ -n "$generate" ]; then
  run_tests="GENERATE_MODEL=${GENERATE_MODEL:-} src/tests/gimp/generate.sh build/plugin/gimp-ddpm $work/src $work/generated.png"
elif [ -n "$denoise_dir" ]; then
  rm -rf "$tree$work/denoise" && mkdir -p "$tree$work/denoise"
  cp "$denoise_dir"/*_s*_noisy.png "$tree$work/denoise/"
  run_tests="src/tests/gimp/denoise_files.sh build/plugin/gimp-ddpm $work/src $work/denoise"
elif [ $screenshots = 1 ]; then
  run_tests="rm -rf $work/shots; src/tests/gimp/interactive.sh build/plugin/gimp-ddpm $work/src $work/shots"
else
  run_tests="meson test -C build --no-rebuild --suite gimp --print-errorlogs $test_opts"
fi
status=0
chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  GIMP_TEST_KEEP="${GIMP_TEST_KEEP:-}" SCREENSHOT_MODEL="${SCREENSHOT_MODEL:-}" CANCEL_AT="${CANCEL_AT:-}" \
  RESULT_SAMPLER="${RESULT_SAMPLER:-}" RESULT_STEPS="${RESULT_STEPS:-}" DENOISE_MODEL="${DENOISE_MODEL:-}" \
  DENOISE_STEPS="${DENOISE_STEPS:-}" DENOISE_ENSEMBLE="${DENOISE_ENSEMBLE:-}" DENOISE_SAMPLER="${DENOISE_SAMPLER:-}" \
  /bin/bash -c "
    set -e
    cd $work
    [ -f build/build.ninja ] || meson setup build src $opts
    # Only what the GIMP tests need: the plug-in (and the engine it links).
    ninja -C build plugin/gimp-ddpm
    $run_tests" || status=$?
if [ -n "$generate" ] && [ $status = 0 ]; then
  mkdir -p "$(dirname "$generate")"
  cp "$tree$work/generated.png" "$generate"
fi
if [ -n "$denoise_dir" ] && [ $status = 0 ]; then
  cp "$tree$work"/denoise/*_gimp.png "$denoise_dir/"
fi
if [ $screenshots = 1 ]; then
  mkdir -p "$repo/docs/screenshots"
  cp "$tree$work"/shots/*.png "$repo/docs/screenshots/" && echo "run.sh: screenshots in $repo/docs/screenshots"
fi
exit $status
