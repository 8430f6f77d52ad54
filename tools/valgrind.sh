#!/usr/bin/env bash
# valgrind.sh: valgrind memcheck of the ddpm CLI on the test fixtures (small sizes: a few minutes in all).
# Every command must exit as expected with zero memcheck errors (invalid reads/writes, uses of
# uninitialised values, bad frees) and zero definitely-lost blocks, error paths included.
# Usage: tools/valgrind.sh [BUILD]   (default build-valgrind: a -g build of its own, no sanitizers)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-valgrind}
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ ! -f "$build/build.ninja" ]; then
  log=${TMPDIR:-/tmp}/ddpm-setup-$$.log
  meson setup "$build" --buildtype=debugoptimized -Dcuda=disabled -Dgimp=disabled >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  rm -f "$log"
fi
ninja -C "$build" cli/ddpm >/dev/null
ddpm=$build/cli/ddpm
fix=tests/fixtures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# OpenMP's pool is kept small: valgrind runs threads one at a time anyway.
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1

# A model folder whose weights are a malicious pickle, for the error path of the .bin loader.
mkdir -p "$tmp/evil"
cp $fix/bin/demo-tiny/config.json "$tmp/evil/"
cp $fix/bin/bad/os-system.bin "$tmp/evil/diffusion_pytorch_model.bin"

fails=0
n=0
vg() {  # vg EXPECTED_EXIT NAME ARGS...: runs ddpm under memcheck
  local want=$1 name=$2; shift 2
  local log=$tmp/vg-$n.log rc=0
  n=$((n + 1))
  valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-leak-kinds=definite --num-callers=30 --log-file="$log" "$ddpm" "$@" >"$tmp/out-$n.txt" 2>&1 || rc=$?
  local errors
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -1)
  local lost
  lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -1)
  if [ "$rc" -ne "$want" ] || [ "${errors:-1}" != 0 ]; then
    echo "FAIL  $name: exit $rc (want $want), ${errors:-?} memcheck errors, definitely lost ${lost:-0} bytes"
    sed -n '/== [A-Z].*\(Invalid\|uninitialised\|definitely lost\|Mismatched\|free\)/,/==$/p' "$log" | head -40 || true
    cat "$tmp/out-$n.txt" | tail -3
    fails=$((fails + 1))
  else
    echo "ok    $name (exit $rc, 0 errors, definitely lost ${lost:-0} bytes)"
  fi
}

vg 0 "info safetensors"            info --model $fix/models/demo-tiny
vg 0 "info pytorch .bin"           info --model $fix/bin/demo-tiny
vg 0 "info pipeline folder"        info --model $fix/models/fp16-4ch
vg 0 "eps bf16 model"              eps --model $fix/models/bf16-tiny --x $fix/models/bf16-tiny/ref/x.npy \
                                       --t $fix/models/bf16-tiny/ref/t.npy --out "$tmp/eps.npy"
vg 0 "sample ddim 3 steps png"     sample --model $fix/models/demo-tiny --sampler ddim --steps 3 --out "$tmp/s.png"
vg 0 "sample ddpm 2 steps npy"     sample --model $fix/models/demo-tiny --steps 2 --batch 2 --out "$tmp/s.npy"
vg 0 "noise rgb png"               noise --t 100 --seed 7 $fix/png/rgb8.png --out "$tmp/n.png"
vg 0 "noise 16-bit gray"           noise --t 10 $fix/png/gray16.png --out "$tmp/n16.png"
vg 0 "denoise strength"            denoise --model $fix/models/demo-tiny --strength 0.2 --steps 5 \
                                       $fix/png/rgb8.png --out "$tmp/d.png"
vg 0 "compare"                     compare "$tmp/eps.npy" "$tmp/eps.npy"
vg 1 "error: malicious pickle"     info --model "$tmp/evil"
vg 1 "error: truncated png"        noise --t 10 $fix/png/bad_truncated.png --out "$tmp/x.png"
vg 1 "error: bad crc png"          noise --t 10 $fix/png/bad_crc.png --out "$tmp/x.png"
vg 1 "error: fortran npy"          eps --model $fix/models/bf16-tiny --x $fix/npy/bad_fortran.npy \
                                       --t $fix/models/bf16-tiny/ref/t.npy --out "$tmp/e.npy"
vg 1 "error: missing model"        info --model "$tmp/none"
vg 2 "error: usage"                sample --model $fix/models/demo-tiny --steps many --out "$tmp/s.npy"

echo "valgrind: $n commands, $fails failing"
[ "$fails" = 0 ]
