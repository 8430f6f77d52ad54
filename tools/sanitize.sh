#!/usr/bin/env bash
# sanitize.sh: the CPU test suite under sanitizers, each in its own build dir (never the normal build).
#
#   tools/sanitize.sh [asan] [BUILD]  AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer, every
#                                     report fatal (-fno-sanitize-recover=all); runs `meson test --suite cpu`
#                                     (default BUILD: build-asan)
#   tools/sanitize.sh tsan [BUILD]    ThreadSanitizer on test_faults (two contexts on two threads, cancel from
#                                     another thread, files rewritten while loading) (default BUILD: build-tsan)
#   tools/sanitize.sh asan-emu [BUILD] the CUDA kernels on the CPU emulator built with ASan + UBSan: every fp16 op
#                                     check and its kernel variants (test_cuda --quick --no-models), then the
#                                     per-shape convolution picks end to end (conv_pick_check.sh): an out-of-bounds
#                                     index in any kernel is a report, as compute-sanitizer's on a GPU (default
#                                     BUILD: build-asan-emu; needs nvcc's headers, as the emulator does)
#
# OpenMP under TSan: libgomp is not built with TSan, so its barriers and thread pool look like races
# (false positives). The tsan run sets OMP_NUM_THREADS=1, so every parallel region runs on the calling
# thread and what TSan checks is our own threads (g_thread) and the engine's shared state.
# Leaks: LSan is on with ASan; tools/lsan.supp lists the only allowed reports (thread pools of
# libgomp / OpenBLAS, see there).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-asan}
case "$mode" in
  asan) build=${2:-build-asan}; sanitize=address,undefined ;;
  tsan) build=${2:-build-tsan}; sanitize=thread ;;
  asan-emu) build=${2:-build-asan-emu}; sanitize=address,undefined ;;
  *) echo "usage: tools/sanitize.sh [asan|tsan|asan-emu] [build-dir]" >&2; exit 2 ;;
esac

if [ ! -f "$build/build.ninja" ]; then
  log=${TMPDIR:-/tmp}/ddpm-setup-$$.log
  # -Db_lundef=false: meson's default -Wl,--no-undefined cannot link sanitizer runtimes into shared modules.
  flags="-fno-sanitize-recover=all -fno-omit-frame-pointer"
  # the emulator needs the CUDA toolkit found (only its C++ build is made: the nvcc module is never built here)
  cuda=disabled
  [ "$mode" = asan-emu ] && cuda=auto
  meson setup "$build" -Db_sanitize="$sanitize" -Db_lundef=false --buildtype=debugoptimized \
    -Dc_args="$flags" -Dcpp_args="$flags" -Dcuda=$cuda -Dgimp=disabled >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  rm -f "$log"
fi
supp=$PWD/tools/lsan.supp
asan_options=detect_leaks=1:halt_on_error=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1
# stack-use-after-return's fake stacks on every fiber switch made the emulator ~6x slower (200 s -> 20+ min)
[ "$mode" = asan-emu ] || asan_options=$asan_options:detect_stack_use_after_return=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-$asan_options}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

if [ "$mode" = asan ]; then
  ninja -C "$build"
  # Sanitized code runs 2-3x slower: the multiplier keeps meson's per-test timeouts meaningful.
  meson test -C "$build" --suite cpu --print-errorlogs --num-processes 2 --timeout-multiplier 3
elif [ "$mode" = asan-emu ]; then
  # the target list whole before grep: `ninja ... | grep -q` under pipefail failed whenever grep quit before ninja
  # had written all its lines (SIGPIPE, 2 runs in 8), and the stage then said "no emulator" and checked nothing (a
  # CI rehearsal, 2026-12-08)
  targets=$(ninja -C "$build" -t targets all)
  if ! grep -q '^kernels/libddpm-cuda-emu.so:' <<< "$targets"; then
    if command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
      echo "asan-emu: nvcc is here but the build has no CUDA emulator (see $build/meson-logs/meson-log.txt)" >&2
      exit 1
    fi
    echo "asan-emu: no CUDA emulator in this build (nvcc / the CUDA headers not found): nothing to check"
    exit 0
  fi
  ninja -C "$build" kernels/libddpm-cuda-emu.so tests/gpu/test_cuda cli/ddpm
  export DDPM_FIXTURES=$PWD/tests/fixtures OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  emu=$PWD/$build/kernels/libddpm-cuda-emu.so
  # 2026-12-08: ~3300 checks in ~200 s, and ~45 s for the picks; the two at once on two cores
  DDPM_CUDA_MODULE=$emu "$build/tests/gpu/test_cuda" --quick --no-models --precision fp16 > "$build/asan-emu-ops.log" 2>&1 &
  ops=$!
  picks=0
  sh tests/gpu/conv_pick_check.sh "$build/cli/ddpm" "$emu" "$PWD/tests/fixtures" || picks=$?
  wait $ops && ops=0 || ops=$?
  tail -3 "$build/asan-emu-ops.log"
  if [ $ops -ne 0 ]; then
    grep -E -A12 'ERROR: AddressSanitizer|runtime error|^FAIL' "$build/asan-emu-ops.log" | head -60 || true   # head may close the pipe first
  fi
  echo "asan-emu: op checks exit $ops, conv picks exit $picks"
  [ $ops -eq 0 ] && [ $picks -eq 0 ]
else
  ninja -C "$build" tests/test_faults
  # Run directly: meson's test environment would set OMP_NUM_THREADS=2.
  DDPM_FIXTURES=$PWD/tests/fixtures OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$build/tests/test_faults"
fi
