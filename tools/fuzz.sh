#!/usr/bin/env bash
# fuzz.sh: builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan halting on error) in their own
# build dir, replays the kept crashing inputs (tests/fixtures/fuzz-regressions/<target>/), then fuzzes each
# target for SECONDS (one per core, niced) from a seed corpus made of the test fixtures. Fails on any
# crash, sanitizer report, leak, timeout (-timeout per input) or out-of-memory (-rss_limit_mb, which is
# also the largest single malloc allowed). Prints the executions of each target and the total.
#
# Usage: tools/fuzz.sh [SECONDS per target, default 60] [TARGET...]
#   targets: safetensors torch_zip pickle config npy png model (default: all)
# Environment: FUZZ_BUILD (build dir, default build-fuzz), FUZZ_RSS_MB (default 2048),
#   FUZZ_TIMEOUT (seconds per input, default 10), FUZZ_KEEP_CORPUS=1 (keep the grown corpus between runs),
#   FUZZ_JOBS (targets fuzzed at once, default: the number of cores),
#   FUZZ_SEED (libFuzzer -seed; default 1 under CI=true so a CI failure replays, else 0 = a new one each run).
# A failing input is written to $FUZZ_BUILD/fuzz-artifacts/<target>/: to keep it as a regression test,
# copy it to tests/fixtures/fuzz-regressions/<target>/ (test_faults replays that folder in the CPU suite).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
all_targets=(safetensors torch_zip pickle config npy png model)
targets=("${@:-${all_targets[@]}}")
build=${FUZZ_BUILD:-build-fuzz}
rss_mb=${FUZZ_RSS_MB:-2048}
per_input=${FUZZ_TIMEOUT:-10}
fuzz_seed=${FUZZ_SEED:-$([ "${CI:-}" = true ] && echo 1 || echo 0)}
fixtures=tests/fixtures
regressions=$fixtures/fuzz-regressions

command -v clang >/dev/null || { echo "fuzz.sh: clang is needed (apt-get install clang libclang-rt-dev libomp-dev)" >&2; exit 1; }
if [ ! -f "$build/build.ninja" ]; then
  log=$(mktemp)
  CC=clang meson setup "$build" -Dfuzz=true -Dcuda=disabled -Dgimp=disabled --buildtype=debugoptimized \
    >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
fi
# No grep -q after a pipe under pipefail: grep quitting early kills the writer with SIGPIPE (141).
if ! ninja -C "$build" -t targets all 2>/dev/null | grep '^tests/fuzz/fuzz_' >/dev/null; then
  echo "fuzz.sh: $build has no fuzz targets: clang could not link libFuzzer + ASan/UBSan" \
       "(apt-get install clang libclang-rt-dev libomp-dev; see $build/meson-logs/meson-log.txt)" >&2
  exit 1
fi
ninja -C "$build" $(for t in "${targets[@]}"; do echo "tests/fuzz/fuzz_$t"; done) >/dev/null

# ---- seed corpora (small fixture files only; written under the build dir, never committed) ----------
corpus=$build/fuzz-corpus
[ "${FUZZ_KEEP_CORPUS:-0}" = 1 ] || rm -rf "$corpus"
mkdir -p "$corpus"
seed() {  # seed TARGET FILE...: copies the files under 64 KiB into the target's corpus
  local t=$1; shift
  mkdir -p "$corpus/$t"
  for f in "$@"; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] && cp "$f" "$corpus/$t/$(echo "$f" | tr / _)"
  done
  return 0
}
seed safetensors $fixtures/loader/dtypes.safetensors $fixtures/bin/edge/mixed.safetensors \
  tests/fuzz/seeds/model-tiny/diffusion_pytorch_model.safetensors
seed torch_zip $fixtures/bin/bad/*.bin $fixtures/bin/edge/*.bin
seed config $(find $fixtures tests/fuzz/seeds -name '*config*.json' -size -64k)
seed npy $fixtures/npy/*.npy $fixtures/png/*.npy
seed png $fixtures/png/*.png
# data.pkl of every small PyTorch archive, and the packed model folders (fuzz_parsers.h: fuzz_model).
python3 - "$corpus" $fixtures/bin/bad/*.bin $fixtures/bin/edge/*.bin $fixtures/bin/cifar-like/data.pkl <<'PY'
import os, struct, sys, zipfile
corpus, files = sys.argv[1], sys.argv[2:]
os.makedirs(f"{corpus}/pickle", exist_ok=True)
for f in files:
    if f.endswith(".pkl"):
        data = open(f, "rb").read()
    else:
        try:
            z = zipfile.ZipFile(f)
            data = next(z.read(i) for i in z.infolist() if i.filename.endswith("/data.pkl"))
        except Exception:
            continue
    open(f"{corpus}/pickle/{os.path.basename(f)}.pkl", "wb").write(data)
os.makedirs(f"{corpus}/model", exist_ok=True)
d = "tests/fuzz/seeds/model-tiny"
cfg = open(f"{d}/config.json", "rb").read()
sch = open(f"{d}/scheduler_config.json", "rb").read()
w = open(f"{d}/diffusion_pytorch_model.safetensors", "rb").read()
for flags in (0, 1, 5):   # no scheduler, scheduler beside, pipeline layout
    blob = bytes([flags]) + struct.pack("<H", len(cfg)) + cfg + struct.pack("<H", len(sch)) + sch + w
    open(f"{corpus}/model/tiny-flags{flags}", "wb").write(blob)
PY
for t in "${targets[@]}"; do
  [ -d "$regressions/$t" ] && seed "$t" "$regressions/$t"/*
done

# ---- replay, then fuzz -------------------------------------------------------------------------------
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
logs=$build/fuzz-logs
mkdir -p "$logs"
# fuzz_one TARGET: replays the kept inputs, fuzzes, and writes the target's line of the summary (and its
# executions) to $logs/TARGET.summary; returns 1 on any failure.
fuzz_one() {
  local t=$1 exe=$build/tests/fuzz/fuzz_$1 rc=0 status=0 execs what cov dict=()
  mkdir -p "$build/fuzz-artifacts/$t"
  if [ -d "$regressions/$t" ] && ls "$regressions/$t"/* >/dev/null 2>&1; then
    if ! "$exe" -rss_limit_mb="$rss_mb" -timeout="$per_input" "$regressions/$t"/* >"$logs/$t.replay.log" 2>&1; then
      echo "fuzz.sh: $t: a kept regression input fails again; see $logs/$t.replay.log" >&2
      status=1
    fi
  fi
  case $t in
    safetensors|config|model) dict=(-dict=tests/fuzz/json.dict) ;;
    pickle|torch_zip) dict=(-dict=tests/fuzz/pickle.dict) ;;
  esac
  nice -n 10 "$exe" "${dict[@]}" "$corpus/$t" -max_total_time="$seconds" -seed="$fuzz_seed" -rss_limit_mb="$rss_mb" -timeout="$per_input" \
    -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t/" >"$logs/$t.log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  echo "${execs:-0}" >"$logs/$t.execs"
  if [ "$rc" -ne 0 ]; then
    what=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' "$logs/$t.log" || true)
    { printf '%-12s %10s execs  FAILED (exit %d): %s\n' "$t" "${execs:-0}" "$rc" "$what"
      echo "             input kept in $build/fuzz-artifacts/$t/, log $logs/$t.log"; } >"$logs/$t.summary"
    return 1
  fi
  cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1)
  printf '%-12s %10s execs  ok (%s, %s s)\n' "$t" "${execs:-0}" "$cov" "$seconds" >"$logs/$t.summary"
  return $status
}
# Each fuzzer is one single-threaded process, so $jobs of them run side by side (one per core: CI's two
# cores fuzz the 7 targets in 4 rounds instead of 7, each target still for SECONDS).
# (nproc counts $OMP_NUM_THREADS, set to 1 above for the fuzzers themselves: not here)
jobs=${FUZZ_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
status=0
running=0
for t in "${targets[@]}"; do
  rm -f "$logs/$t.summary" "$logs/$t.execs"
  if [ "$running" -ge "$jobs" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
total=0
summary=""
for t in "${targets[@]}"; do
  if [ -f "$logs/$t.summary" ]; then
    summary+=$(cat "$logs/$t.summary")$'\n'
    total=$((total + $(cat "$logs/$t.execs")))
  else
    summary+="$t: no result (the fuzzing job ended without writing one)"$'\n'
    status=1
  fi
done
printf '%s' "$summary"
echo "fuzz: $total executions in ${#targets[@]} targets (seed ${fuzz_seed/#0/random}), $([ $status = 0 ] && echo 'no failures' || echo FAILURES)"
exit $status
