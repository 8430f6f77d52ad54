#!/usr/bin/env bash
# test.sh: installs what is missing, builds, and runs every test this machine can run:
#   1. meson test: the CPU suite (engine vs diffusers fixtures, loaders, CLI, faults), the CUDA module
#      checks and the CUDA kernels on the CPU emulator (suite gpu-emu); the real-GPU suite skips (77)
#      without a GPU (tests/gpu/run.sh runs it on a lent GPU machine);
#   2. the GIMP 3 plug-in in real headless GIMP (on Debian 12, inside a Debian 13 tree: tests/gimp/run.sh);
#   3. the reliability harness: libFuzzer on every parser (FUZZ_SECONDS each, default 35: CI's 30 minutes), the CPU suite
#      under ASan + UBSan + LSan, the CUDA kernels on an ASan-built emulator (every fp16 op check and variant),
#      ThreadSanitizer on the fault tests, valgrind memcheck of the CLI.
# Usage: tools/test.sh [build-dir]         (default: build)
#   TEST_STAGES="meson gimp fuzz asan asan-emu tsan valgrind"  (default: all) to run a subset.
# Ends with one line "N passed, N failed, N skipped": meson's tests plus one per other stage.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
stages=${TEST_STAGES:-meson gimp fuzz asan asan-emu tsan valgrind}
tools/install-deps.sh --test || exit 1
echo "=== install-deps: $SECONDS s"

passed=0 failed=0 skipped=0 failures=()
logs=$build-stage-logs
mkdir -p "$logs"
stage() {  # stage NAME COMMAND...: runs one stage, counts it, times it, keeps its output in $logs/NAME.log
  local name=$1; shift
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$logs/$name.log"
  if [ "${PIPESTATUS[0]}" -eq 0 ]; then
    passed=$((passed + 1)); echo "=== $name: passed ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($((SECONDS - start)) s)"
  fi
}
has() { [[ " $stages " == *" $1 "* ]]; }

# On Debian 12 the plug-in's stage runs in a Debian 13 tree (tools/trixie.sh). Made fresh it takes minutes of
# downloads and of dpkg, so it is made in the background from the start, at the lowest CPU and I/O priority:
# it takes what the build and meson test leave idle (downloads, their single-threaded stretches) and slows
# neither much. The gimp stage waits for what is left. Its output is in $logs/trixie.log (the last lines again
# in the gimp stage's when it failed).
trixie_pid=
if has gimp && ! pkg-config --exists gimp-3.0 && [ "$(id -u)" = 0 ]; then
  nice -n 19 ionice -c 3 tools/trixie.sh > "$logs/trixie.log" 2>&1 &
  trixie_pid=$!
  trap '[ -z "$trixie_pid" ] || wait "$trixie_pid"' EXIT   # never leave it writing the tree behind us
fi
gimp_stage() {  # gimp_stage [STATUS]: the background tree's log and exit status (when made so), then run.sh
  if [ $# -gt 0 ] && [ "$1" = 0 ]; then
    echo "tools/trixie.sh, in the background since the start: $(tail -n 1 "$logs/trixie.log") ($logs/trixie.log)"
  elif [ $# -gt 0 ]; then
    echo "--- tools/trixie.sh, in the background since the start, failed (exit status $1); its last lines:"
    tail -n 40 "$logs/trixie.log"
    echo "---"
  fi
  tests/gimp/run.sh   # runs tools/trixie.sh again: a second when the tree is ready, else it says what is wrong
}

if has meson; then
  start=$SECONDS
  [ -f "$build/build.ninja" ] || meson setup "$build" || exit 1
  ninja -C "$build" || exit 1
  echo "=== build: $((SECONDS - start)) s"
  start=$SECONDS
  meson test -C "$build" --print-errorlogs --num-processes 2
  echo "=== meson test: $((SECONDS - start)) s"
  # meson's own counts, from its log.
  read -r m_pass m_fail m_skip < <(python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
c = {}
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    c[r] = c.get(r, 0) + 1
print(c.get("OK", 0) + c.get("EXPECTEDFAIL", 0),
      sum(c.get(k, 0) for k in ("FAIL", "UNEXPECTEDPASS", "TIMEOUT", "ERROR")), c.get("SKIP", 0))
PY
)
  passed=$((passed + m_pass)); failed=$((failed + m_fail)); skipped=$((skipped + m_skip))
  [ "$m_fail" -eq 0 ] || failures+=("meson test ($m_fail)")
fi
# On a Debian 13 host the plug-in's suite is part of meson test above; elsewhere it runs in a Debian 13 tree.
if has gimp && ! pkg-config --exists gimp-3.0; then
  if [ -n "$trixie_pid" ]; then   # waited for here: the stage runs in a subshell (a pipeline), not its parent
    tree_status=0
    wait "$trixie_pid" || tree_status=$?
    trixie_pid=
    stage gimp gimp_stage "$tree_status"
  else
    stage gimp gimp_stage
  fi
fi
# 35 s per target, two targets at a time on two cores (fuzz.sh: FUZZ_JOBS): CI's 30 minutes
if has fuzz; then stage fuzz tools/fuzz.sh "${FUZZ_SECONDS:-35}"; fi
if has asan; then stage asan tools/sanitize.sh asan; fi
if has asan-emu; then stage asan-emu tools/sanitize.sh asan-emu; fi
if has tsan; then stage tsan tools/sanitize.sh tsan; fi
if has valgrind; then stage valgrind tools/valgrind.sh; fi

# A failed stage's last lines again, at the end, where a log that keeps only its tail still shows them.
for name in "${failures[@]}"; do
  [ -f "$logs/$name.log" ] || continue
  echo "=== last lines of the failed stage $name ($logs/$name.log):"
  tail -n 30 "$logs/$name.log"
done
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
