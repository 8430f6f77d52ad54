#!/usr/bin/env bash
# sanitize.sh: the CPU test suite under sanitizers, each in its own build dir (never the normal build).
#
#   tools/sanitize.sh [asan] [BUILD]  AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer, every
#                                     report fatal (-fno-sanitize-recover=all); runs `meson test --suite cpu`
#                                     (default BUILD: build-asan)
#   tools/sanitize.sh tsan [BUILD]    ThreadSanitizer on test_faults (two contexts on two threads, cancel from
#                                     another thread, files rewritten while loading) (default BUILD: build-tsan)
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
  *) echo "usage: tools/sanitize.sh [asan|tsan] [build-dir]" >&2; exit 2 ;;
esac

if [ ! -f "$build/build.ninja" ]; then
  log=${TMPDIR:-/tmp}/ddpm-setup-$$.log
  # -Db_lundef=false: meson's default -Wl,--no-undefined cannot link sanitizer runtimes into shared modules.
  meson setup "$build" -Db_sanitize="$sanitize" -Db_lundef=false --buildtype=debugoptimized \
    -Dc_args="-fno-sanitize-recover=all -fno-omit-frame-pointer" -Dcuda=disabled -Dgimp=disabled >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  rm -f "$log"
fi
supp=$PWD/tools/lsan.supp
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

if [ "$mode" = asan ]; then
  ninja -C "$build"
  # Sanitized code runs 2-3x slower: the multiplier keeps meson's per-test timeouts meaningful.
  meson test -C "$build" --suite cpu --print-errorlogs --num-processes 2 --timeout-multiplier 3
else
  ninja -C "$build" tests/test_faults
  # Run directly: meson's test environment would set OMP_NUM_THREADS=2.
  DDPM_FIXTURES=$PWD/tests/fixtures OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$build/tests/test_faults"
fi
