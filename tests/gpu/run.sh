#!/bin/bash
# tests/gpu/run.sh: the whole GPU check as one command on the lent GPU machine, from the repository root:
#   1. the GPU test program (every CUDA op against the CPU backend at cifar10-32 / celebahq-256 layer shapes,
#      in fp32, fp16 and bf16, the backend variants, whole-model checks against diffusers' float64
#      references, op timings);
#   2. the benchmark against diffusers/PyTorch on the same card (tools/bench_gpu.py);
#   2t. the tuner (ddpm bench --tune-again): every backend variant timed and judged at the benchmark shapes;
#   3. per-kernel profiles of our forward (DDPM_CUDA_PROFILE, kernels/profile.cu) at the benchmark shapes;
#   3b. the replayed graph's kernels as they really run (tools/kernel_trace.c, a CUPTI injection library): GPU
#      start and end of every kernel, launch gaps, programmatic-dependent-launch overlap;
#   3c. what the first sampling call pays (cold against warm; module loading and cuBLAS's shares);
#   4. the run-time switches (PDL, the GroupNorm -> conv and upsampling fusions, conv kernels, split-K sums,
#      attention cores) against the default, alternating, at the benchmark's forward shapes.
# Nothing is built there: tools/gpu_prepare.sh builds everything here into build-gpu/carry (the binaries and
# the GLib libraries the GPU machine lacks), packs it as build-gpu/carry.tar.xz and puts the diffusers wheels
# into .whl; the archive and .whl travel with `carry` (run.sh unpacks the archive into /tmp). Logs go to $OUT (the device tool's output folder, at most 8 files) or build-gpu/gpu-out.
#
# Without a GPU (a rehearsal) the tests exit 77 (skipped) and the benchmark reports what it could not run;
# the script exits 0 then too. Its exit status is the GPU test program's otherwise.
#
# Expected run time on an H100/H200 (e465425's whole run took 2 min 41 s): ~2 min of tests, <= 1.5 min of
# compute-sanitizer, ~1 min of benchmarks (~2 with the tuned column: untimed), ~25 s of per-kernel profiles, ~20 s
# of in-graph traces, ~90 s of switch A/B (68 short benches; limits: 260 s, 45 + 3 x 25 s, 300 s, 5 x 60 s, 3 x 60 s
# and 60 s per bench).
# Failed-check retries start only in the first 300 s and A/B benches only in the first 450 s, so that the run
# ends within the device tool's 600 s per command with its logs.
# Shorter runs when device time is short: DDPM_TEST_ARGS= (no op timings), DDPM_TEST_TIMEOUT=S, MEMCHECK=quick|0,
# SKIP_BENCH=1 (no PyTorch comparison), SKIP_TUNE=1 / TUNE_UNTIL=S (stage 2t), TRACE_SHAPES="cifar10-32:1 ..." (config:batch[:VAR=V,VAR=V]), AB_LIST (lines of stage 4),
# BENCH_CONVS=auto, SKIP_PROFILE=1, SKIP_TRACE=1 (no stage 3b), SKIP_COLD=1 (no stage 3c), RETRY_UNTIL=S,
# AB_UNTIL=S. RUN=short sets what is unset of them as the second H100 call of 2026-11-27 had them (fp16 tests
# without timings, the quick memchecks, the default conv only in the benchmark, no eager profile, A/B until
# 370 s: 380 s in all then, so `timeout_s` 460 covers the machine's start), and since 2026-12-07 also no trace
# and no cold start: stages 1w, 1g and the GroupNorm / wgmma memchecks added ~3 min, and stage 4's first lines
# decide the defaults (a trace in another call: SKIP_TRACE=0 AB_UNTIL=0, or by hand as kernels/NOTES.md says);
# since the tuner (2026-12-07, twentieth session) the benchmark has the tuned defaults beside the default conv.
set -u
if [ "${RUN:-full}" = short ]; then
  : "${DDPM_TEST_ARGS=--precision fp16}" "${DDPM_TEST_TIMEOUT:=120}" "${MEMCHECK:=quick}" "${BENCH_CONVS:=auto,tuned}"
  : "${SKIP_PROFILE:=1}" "${SKIP_TRACE:=1}" "${SKIP_COLD:=1}" "${RETRY_UNTIL:=0}" "${AB_UNTIL:=370}"
  export DDPM_TEST_ARGS DDPM_TEST_TIMEOUT MEMCHECK BENCH_CONVS SKIP_PROFILE SKIP_TRACE SKIP_COLD RETRY_UNTIL AB_UNTIL
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/build-gpu/gpu-out}
mkdir -p "$OUT"
CARRY=${DDPM_CARRY:-$ROOT/build-gpu/carry}
exec > >(tee "$OUT/run.log") 2>&1

echo "== $(date -u) on $(hostname)"
# the carry travels compressed (tools/gpu_prepare.sh: the device tool's 64 MiB): unpack it where the folder is not
if [ ! -x "$CARRY/bin/test_cuda" ] && [ -z "${DDPM_CARRY:-}" ] && [ -f "$ROOT/build-gpu/carry.tar.xz" ]; then
  rm -rf /tmp/ddpm-carry && mkdir -p /tmp/ddpm-carry
  python3 -c 'import sys, tarfile
t = tarfile.open(sys.argv[1])
try:
    t.extractall(sys.argv[2], filter="data")
except TypeError:
    t.extractall(sys.argv[2])' \
    "$ROOT/build-gpu/carry.tar.xz" /tmp/ddpm-carry && CARRY=/tmp/ddpm-carry/carry
  echo "unpacked build-gpu/carry.tar.xz into $CARRY"
fi
if [ ! -x "$CARRY/bin/test_cuda" ]; then
  echo "no $CARRY/bin/test_cuda: run tools/gpu_prepare.sh first and carry build-gpu/carry.tar.xz"
  exit 2
fi
cat "$CARRY/MANIFEST" 2>/dev/null
{
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  echo; uname -a; ldd --version 2>&1 | head -1; nproc
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1
} > "$OUT/machine.txt"
head -15 "$OUT/machine.txt"

# cuBLAS: the toolkit's if it has one, else PyTorch's wheel (nvidia/cu13/lib). The module dlopens it.
CUBLAS=${DDPM_CUBLAS:-}
if [ -z "$CUBLAS" ]; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/libcublas.so.13" ] && CUBLAS=$d/libcublas.so.13 && break
  done
fi
if [ -z "$CUBLAS" ]; then
  CUBLAS=$(python3 -c 'import glob, site, sys
for p in site.getsitepackages() + sys.path:
    for f in glob.glob(p + "/nvidia/cu13/lib/libcublas.so.13") + glob.glob(p + "/nvidia/cublas/lib/libcublas.so.13"):
        print(f); sys.exit()' 2>/dev/null)
fi
if [ -z "$CUBLAS" ]; then
  CUBLAS=$(find /opt /usr/local -name 'libcublas.so.13' 2>/dev/null | head -1)
fi
echo "cuBLAS: ${CUBLAS:-not found (the backend will use its own, slow GEMM)}"
LIBS=$CARRY/lib
# pcre2, ffi, gomp: the system's where it has them (newer, and what its own libraries expect), else ours
for f in "$CARRY"/lib-fallback/*; do
  [ -e "$f" ] || continue
  if ! ldconfig -p 2>/dev/null | grep "$(basename "$f")" >/dev/null; then
    echo "using the carried $(basename "$f") (the system has none)"
    mkdir -p "$CARRY/lib-used" && cp -f "$f" "$CARRY/lib-used/"
  fi
done
[ -d "$CARRY/lib-used" ] && LIBS=$LIBS:$CARRY/lib-used
[ -n "$CUBLAS" ] && LIBS=$LIBS:$(dirname "$CUBLAS")
export DDPM_CUBLAS=$CUBLAS
export DDPM_CUDA_MODULE=$CARRY/lib/libddpm-cuda.so
export DDPM_FIXTURES=$ROOT/tests/fixtures
# our binaries get the carried GLib; Python does not need it
export DDPM_RUN_LD_LIBRARY_PATH=$LIBS
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export PYTHONUNBUFFERED=1

echo "== 0. module checks"
# a carry built with CUDA_ARCHS=90a has sm_90a code only (tools/gpu_prepare.sh writes which into MANIFEST)
EXPECT_ARCHS=$(sed -n 's/^archs: //p' "$CARRY/MANIFEST" 2>/dev/null) sh tests/gpu/check_module.sh "$CARRY/lib/libddpm-cuda.so"

echo "== 1. GPU tests"
# A crash prints a backtrace into tests-full.txt (tools/crash_backtrace.c; addr2line against build-gpu).
# DDPM_TEST_ARGS / DDPM_TEST_TIMEOUT: a shorter run when device time is short (e.g. no --timing).
CRASH_PRELOAD=
[ -e "$CARRY/lib/libddpm-crash-backtrace.so" ] && CRASH_PRELOAD=$CARRY/lib/libddpm-crash-backtrace.so
LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} LD_PRELOAD=$CRASH_PRELOAD \
  timeout "${DDPM_TEST_TIMEOUT:-260}" "$CARRY/bin/test_cuda" ${DDPM_TEST_ARGS---timing} \
  --log "$OUT/tests.log" > "$OUT/tests-full.txt" 2>&1
rc=$?
grep -A24 '^crash_backtrace' "$OUT/tests-full.txt"
grep -v '^PASS' "$OUT/tests-full.txt" | grep -v '^     ' | tail -60
echo "(all lines: tests-full.txt; timings: lines starting with spaces)"
case $rc in
  0) echo "GPU tests: all passed" ;;
  77) echo "GPU tests: skipped (no usable CUDA device)" ;;
  124) echo "GPU tests: TIMED OUT after ${DDPM_TEST_TIMEOUT:-260} s" ;;
  *) echo "GPU tests: FAILED (exit $rc)" ;;
esac

# bf16 conv checks at full size on the default tiles, so a short run (whose stage 1 may end before bf16) checks
# the WMMA tiles' bf16 fragment loads, named .shared in inline PTX since 2026-12-07 (conv2d.cuh wmma_load_shared)
echo "== 1c. bf16 conv checks, full size, default tiles"
[ $rc -eq 77 ] || { LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} timeout 60 "$CARRY/bin/test_cuda" --no-variants \
  --no-models --precision bf16 --only conv > "$OUT/tests-bf16.txt" 2>&1; echo "test_cuda bf16 conv: exit $?"; }
[ -e "$OUT/tests-bf16.txt" ] && grep -E '^FAIL|^====' "$OUT/tests-bf16.txt" | head -12

# The wgmma convolution tile (2026-12-06, never run on a GPU yet) on its own, so a short run still checks it:
# every conv check at full size in fp16 and at the quick sizes in bf16, then the whole models in fp16, with
# the tile wherever it fits. Its FAIL lines keep it out of the benchmarks below.
echo "== 1w. the wgmma conv tile (DDPM_CUDA_CONV_TILE=wgmma): full-size fp16 and quick bf16 conv checks, fp16 models"
: > "$OUT/tests-wgmma.txt"; : > "$OUT/tests-wgmma256.txt"
[ $rc -eq 77 ] || for args in "--no-models --precision fp16 --only conv" "--quick --no-models --precision bf16 --only conv" \
                              "--no-ops --precision fp16"; do
  for pipe in OVERLAP=0 OVERLAP=1 BN=256; do   # 128 x 128, 3 or 4 stages; 128 x 256 (m64n256k16)
    [ $pipe = OVERLAP=1 ] && [ "$args" = "--no-ops --precision fp16" ] && continue
    log=$OUT/tests-wgmma.txt; [ $pipe = BN=256 ] && log=$OUT/tests-wgmma256.txt   # a 128 x 256 failure keeps 128 x 128
    LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_CUDA_CONV_TILE=wgmma env DDPM_CUDA_WGMMA_$pipe \
      timeout 60 "$CARRY/bin/test_cuda" --no-variants $args >> "$log" 2>&1
    echo "test_cuda $args (WGMMA_$pipe): exit $?"
  done
done
grep -m3 -E 'wgmma|cuda:' "$OUT/tests-wgmma.txt"
grep -E '^FAIL|^====' "$OUT/tests-wgmma.txt" "$OUT/tests-wgmma256.txt" | head -20
# where a conv_layout check failed: which output holds which (pixel, channel) (tests/gpu/conv_layout_checks.c)
grep -E '^FAIL conv_layout|^     layout:' "$OUT/tests-wgmma.txt" "$OUT/tests-wgmma256.txt" | head -24

# Whole models with the opt-in launch merging of 2026-12-06 (GroupNorm clusters + held-back split-K sums; never
# run on a GPU yet), so one call says whether they can become the default; and with the time table off (the
# embedding chain each forward computes where no table is kept).
echo "== 1g. whole models (fp16) with DDPM_CUDA_GN=cluster DDPM_CUDA_DEFER_REDUCE=1, and with DDPM_CUDA_TIME_TABLE=0"
: > "$OUT/tests-models-opt.txt"
[ $rc -eq 77 ] || for setting in "DDPM_CUDA_GN=cluster DDPM_CUDA_DEFER_REDUCE=1" DDPM_CUDA_TIME_TABLE=0; do
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} env $setting timeout 60 "$CARRY/bin/test_cuda" \
    --no-ops --no-variants --precision fp16 >> "$OUT/tests-models-opt.txt" 2>&1
  echo "test_cuda --no-ops ($setting): exit $?"
done
grep -E '^FAIL|^====' "$OUT/tests-models-opt.txt" | head -20

# When checks fail, find out whether one of the switchable features is to blame (programmatic dependent
# launch, GroupNorm writing the conv's channels-last input, the conv sampling the upsampled input, the out
# projection inside the attention core, the mma.sync attention core; and 2026-11-27's cluster attention block
# and weight copies before the dependency wait):
# the failing checks again with each off. If turning one off clears them, the rest of the run
# goes on without it, so its numbers still come.
if [ $rc -eq 1 ]; then
  echo "== 1a. the failed checks again with each switchable feature off"
  for setting in DDPM_CUDA_FA_CLUSTER=0 DDPM_CUDA_CONV_PREFETCH=0 DDPM_CUDA_PDL=0 \
                 DDPM_CUDA_GN_CONV=0 DDPM_CUDA_UPSAMPLE_CONV=0 DDPM_CUDA_ATTN_OUT=0 DDPM_CUDA_ATTN=mma DDPM_CUDA_ATTN=wmma; do
    if [ $SECONDS -gt "${RETRY_UNTIL:-300}" ]; then   # the device session's time: leave it to the benchmarks
      echo "$setting: not tried ($SECONDS s into the run)"
      continue
    fi
    failed=$(grep -c '^FAIL' "$OUT/tests-full.txt")
    LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} env "$setting" timeout 120 "$CARRY/bin/test_cuda" \
      --no-variants > "$OUT/tests-${setting%%=*}-off.txt" 2>&1
    frc=$?
    still=$(grep -c '^FAIL' "$OUT/tests-${setting%%=*}-off.txt")
    echo "$setting: exit $frc, $still failed (without variants; $failed failed with everything on)"
    if [ $frc -eq 0 ]; then
      echo "$setting clears the failures: the benchmarks and profiles below run with it"
      export "$setting"
      break
    fi
  done
fi

# compute-sanitizer's memcheck on the small shapes: out-of-bounds and misaligned accesses on the real GPU
# (the emulator cannot see those). Capped at 70 s; a timeout is reported, not counted as a failure. API errors are
# not findings: the out-of-memory check fails a cudaMalloc on purpose (the H100 run of fcae280 counted it).
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
# MEMCHECK=quick: only the first (fp16 ops); MEMCHECK=0: none.
[ "${MEMCHECK:-full}" = 0 ] && SAN=
if [ -n "$SAN" ] && [ $rc -ne 77 ]; then
  echo "== 1b. compute-sanitizer memcheck (quick shapes, fp16 and fp32)"
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} timeout 45 "$SAN" --tool memcheck --report-api-errors no --error-exitcode 3 \
    "$CARRY/bin/test_cuda" --quick --no-models --no-variants --precision fp16 > "$OUT/memcheck.txt" 2>&1
  mrc=$?
  # the 16 x 16-token attention blocks at full size (the quick shapes are too small for flash_cluster.cu)
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} timeout 40 "$SAN" --tool memcheck --report-api-errors no --error-exitcode 3 \
    "$CARRY/bin/test_cuda" --no-models --no-variants --precision fp16 --only "attention 16x16" >> "$OUT/memcheck.txt" 2>&1
  mrc=$mrc/$?
  # GroupNorm over thread-block clusters (4 blocks per group wherever that fits), with held-back split-K sums
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_CUDA_GN=cluster DDPM_CUDA_GN_CLUSTER=4 \
    DDPM_CUDA_DEFER_REDUCE=1 timeout 30 "$SAN" --tool memcheck --report-api-errors no --error-exitcode 3 \
    "$CARRY/bin/test_cuda" --quick --no-models --no-variants --precision fp16 --only norm >> "$OUT/memcheck.txt" 2>&1
  mrc=$mrc/$?
  # the wgmma conv tile wherever it fits, its K split too (forced 3 ways), never run on a GPU before
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_CUDA_CONV_TILE=wgmma DDPM_CUDA_CONV_SPLITK=3 timeout 25 \
    "$SAN" --tool memcheck --report-api-errors no --error-exitcode 3 \
    "$CARRY/bin/test_cuda" --quick --no-models --no-variants --precision fp16 --only conv >> "$OUT/memcheck.txt" 2>&1
  mrc5=$?
  # ... and the 128 x 256 wgmma tile (m64n256k16, 193 KiB of shared memory), split too
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_CUDA_CONV_TILE=wgmma DDPM_CUDA_WGMMA_BN=256 \
    DDPM_CUDA_CONV_SPLITK=3 timeout 25 "$SAN" --tool memcheck --report-api-errors no --error-exitcode 3 \
    "$CARRY/bin/test_cuda" --quick --no-models --no-variants --precision fp16 --only conv >> "$OUT/memcheck.txt" 2>&1
  mrc5=$mrc5/$?
  mrc2=skipped mrc3=skipped mrc4=skipped
  [ "${MEMCHECK:-full}" = quick ] || {
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} timeout 25 "$SAN" --tool memcheck --report-api-errors no --error-exitcode 3 \
    "$CARRY/bin/test_cuda" --quick --no-models --no-variants --precision fp32 --only conv >> "$OUT/memcheck.txt" 2>&1
  mrc2=$?
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_CUDA_CONV=nhwc timeout 25 "$SAN" --tool memcheck --report-api-errors no \
    --error-exitcode 3 "$CARRY/bin/test_cuda" --quick --no-models --no-variants --precision fp16 --only conv \
    >> "$OUT/memcheck.txt" 2>&1
  mrc3=$?
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_CUDA_CONV_TILE=mma timeout 25 "$SAN" --tool memcheck --report-api-errors no \
    --error-exitcode 3 "$CARRY/bin/test_cuda" --quick --no-models --no-variants --precision fp16 --only conv \
    >> "$OUT/memcheck.txt" 2>&1
  mrc4=$?
  }
  grep -E '^=+ (ERROR|Invalid|Program hit|.*errors)|^====' "$OUT/memcheck.txt" | head -20
  echo "memcheck: exit $mrc / $mrc2 / $mrc3 / $mrc4 / $mrc5 (fp16 ops/full-size 16x16 attention/GroupNorm clusters, fp32 conv, fp16 channels-last conv," \
    "fp16 mma.sync conv, fp16 wgmma conv split 3 / 128 x 256 split 3;" \
    "exit 0: clean, 3: errors found, 124: timed out; memcheck.txt)"
fi

# Benchmark the conv paths that passed their checks: the default ("auto": channels last where it fits),
# the candidates "wgmma" and "mma" (the 128 x 128 wgmma / mma.sync tiles where they fill a wave) and "tuned" (the
# defaults with `ddpm --tune`: the tuner's report under each of its lines; it never keeps a failing variant); im2col +
# cuBLAS only when the default failed. The NCHW kernel's per-shape times are in tests-full.txt (lines "time ... conv=implicit").
CONVS=${BENCH_CONVS:-auto,wgmma,mma,tuned}
if grep -q '^FAIL conv2d  ' "$OUT/tests-full.txt" && ! grep -q '^FAIL conv2d\[conv=gemm\]' "$OUT/tests-full.txt"; then
  echo "the default conv failed a check: benchmarking the im2col + cuBLAS path"
  CONVS=gemm
fi
if grep -q '^FAIL conv2d\[conv=mma\|^FAIL conv2d\[conv_tile=mma\|^FAIL norm_conv\[conv=mma' "$OUT/tests-full.txt"; then
  echo "the mma.sync conv failed a check: not benchmarked"
  CONVS=${CONVS/,mma/}
fi
# (the 128 x 256 variants' FAIL lines, wgmma_bn=256, count against that tile only: stage 4 skips its lines)
if grep '^FAIL conv2d\[conv=wgmma\|^FAIL conv2d\[conv_tile=wgmma\|^FAIL norm_conv\[conv=wgmma\|^FAIL upsample_conv\[conv=wgmma\|^FAIL conv_layout\[conv=wgmma\|^FAIL conv_layout\[conv_tile=wgmma' "$OUT/tests-full.txt" \
     | grep -qv 'wgmma_bn=256' || grep -q '^FAIL' "$OUT/tests-wgmma.txt"; then
  echo "the wgmma conv failed a check: not benchmarked"
  CONVS=${CONVS/,wgmma/}
fi

echo "== 2. Benchmarks against PyTorch"
if [ "${SKIP_BENCH:-0}" = 1 ]; then
  echo "(skipped: SKIP_BENCH=1; stage 4 times the switches against our default)"
elif python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
     > "$OUT/pip.txt" 2>&1; then
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "installing the carried wheels failed (see pip.txt): the PyTorch side may be skipped"
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  timeout 300 python3 tools/bench_gpu.py --ddpm "$CARRY/bin/ddpm" --conv "$CONVS" --json "$OUT/bench.json"
  brc=$?
  [ $brc -ne 0 ] && echo "benchmark: exit $brc"
fi

# The tuner (engine/tuning.c, 2026-12-07, never run on a GPU yet): at each benchmark shape, every variant of the
# backend (cuda_switches.cu: GroupNorm clusters, held-back sums, the wgmma tiles, ...) timed in-process against the
# defaults and judged by its eps against theirs (fp16 bound 1e-2). One model load per shape instead of stage 4's
# four benches per switch: its lines say which defaults to change, and a "disagrees" line names a broken variant.
# SKIP_TUNE=1: none; a shape starts only in the first TUNE_UNTIL (380) s of the run, and has 60 s.
echo "== 2t. The tuner at the benchmark shapes (ddpm bench --tune-again, fp16; also in tuning.txt)"
if [ $rc -eq 77 ] || [ "${SKIP_TUNE:-0}" = 1 ]; then
  echo "(skipped)"
elif [ "${SKIP_BENCH:-0}" != 1 ] && [[ ,$CONVS, == *,tuned,* ]]; then
  echo "(done in stage 2: its 'tuned' lines and the reports under them)"
else
  for shape in cifar10-32:1 cifar10-32:128 celebahq-256:1 celebahq-256:4; do
    if [ $SECONDS -gt "${TUNE_UNTIL:-380}" ]; then
      echo "tuning $shape: not run ($SECONDS s into the run)" | tee -a "$OUT/tuning.txt"
      continue
    fi
    # CONV_PICK_LOG: every convolution shape's candidate plans timed (the CONV_PICK=timed variant)
    LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_TUNING_FILE=/tmp/tuning.ini \
      DDPM_CUDA_CONV_PICK_LOG=1 timeout 60 \
      "$CARRY/bin/ddpm" bench --config "${shape%:*}" --batch "${shape#*:}" --device cuda --precision fp16 \
      --tune-again --warmup 2 --iters 20 2>&1 | grep -v 'bench: \(warm-up\|forward\)' | tee -a "$OUT/tuning.txt"
  done
  # convolution plans whose output differed from the rule plan's at some shape (conv_pick.cu): broken here
  echo "conv pick candidates that disagreed with the rule's plan (count, plan; none: every one agreed):"
  grep '^conv pick ' "$OUT/tuning.txt" | tr ';' '\n' | grep ' ms disagrees ' | sed 's/^[^:]*: //; s/^ *//; s/ [-0-9.]* ms disagrees.*//' \
    | sort | uniq -c
fi

# Where the time goes: every kernel timed with events in eager forwards (kernels/profile.cu), fp16.
echo "== 3. Per-kernel profile (DDPM_CUDA_PROFILE=1, fp16; all rows in profile.txt)"
: > "$OUT/profile.txt"
[ $rc -eq 77 ] && echo "(skipped: no usable CUDA device)"
[ "${SKIP_PROFILE:-0}" = 1 ] && echo "(skipped: SKIP_PROFILE=1)"
[ $rc -eq 77 ] || [ "${SKIP_PROFILE:-0}" = 1 ] || for shape in "cifar10-32 1 auto" "cifar10-32 128 auto" "cifar10-32 128 wgmma" "celebahq-256 1 auto" "celebahq-256 1 wgmma"; do
  set -- $shape
  echo "---- $1 batch $2 conv=$3" >> "$OUT/profile.txt"
  LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} DDPM_CUDA_CONV=$3 DDPM_CUDA_PROFILE=1 timeout 60 "$CARRY/bin/ddpm" bench \
    --config "$1" --batch "$2" --device cuda --precision fp16 --warmup 1 --iters 3 --quiet >> "$OUT/profile.txt" 2>&1 \
    || echo "profile of $1 batch $2: exit $?" >> "$OUT/profile.txt"
done
awk '/^----/ { n = 0 } { if (n++ < 14) print }' "$OUT/profile.txt"

# The same forwards as the graph replays them, without profile.cu's events: the CUDA driver loads
# tools/kernel_trace.c's library at cuInit ($CUDA_INJECTION64_PATH) and CUPTI records each kernel's GPU start
# and end. Per shape: span, kernel time and gaps of the median launch, a table per kernel name (the first
# launch left out, sorted by own time: what a kernel adds past the latest end before it, the real cost under
# PDL), the median launch's kernels one by one (up to 400). CUPTI is the GPU machine's own (libcupti.so.13 of
# its toolkit); the console gets the first 12 rows of each table.
echo "== 3b. In-graph kernel trace (CUPTI, fp16; all rows and the timelines in trace.txt)"
: > "$OUT/trace.txt"
CUPTI_DIR=
for d in /usr/local/cuda/extras/CUPTI/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -e "$d/libcupti.so.13" ] && CUPTI_DIR=$d && break
done
if [ -z "$CUPTI_DIR" ]; then
  f=$(find /usr/local /opt -name 'libcupti.so.13*' 2>/dev/null | head -1)
  if [ -n "$f" ] && [ -e "$(dirname "$f")/libcupti.so.13" ]; then
    CUPTI_DIR=$(dirname "$f")
  elif [ -n "$f" ]; then           # only a versioned file (libcupti.so.13.0.x): the loader wants the soname
    mkdir -p /tmp/cupti-lib && ln -sf "$f" /tmp/cupti-lib/libcupti.so.13 && CUPTI_DIR=/tmp/cupti-lib
  fi
fi
echo "CUPTI: ${CUPTI_DIR:-not found}"
if [ $rc -eq 77 ]; then
  echo "(skipped: no usable CUDA device)"
elif [ "${SKIP_TRACE:-0}" = 1 ]; then
  echo "(skipped: SKIP_TRACE=1)"
elif [ -z "$CUPTI_DIR" ]; then
  echo "(skipped: no libcupti.so.13)"
elif [ ! -e "$CARRY/lib/libddpm-kernel-trace.so" ]; then
  echo "(skipped: no $CARRY/lib/libddpm-kernel-trace.so: run tools/gpu_prepare.sh again)"
else
  # the last: GroupNorm over clusters with the held-back split-K sums (opt-in, untimed before this run)
  for shape in ${TRACE_SHAPES:-cifar10-32:1 cifar10-32:128 celebahq-256:1 cifar10-32:1:DDPM_CUDA_GN=cluster,DDPM_CUDA_DEFER_REDUCE=1}; do
    set -- $(echo "$shape" | tr ':' ' ')
    shape_env=$(echo "${3:-}" | tr ',' ' ')
    echo "---- $1 batch $2${3:+ $shape_env}" >> "$OUT/trace.txt"
    before=$(grep -c '^== kernel_trace' "$OUT/trace.txt")
    LD_LIBRARY_PATH=$LIBS:$CUPTI_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} env $shape_env \
      CUDA_INJECTION64_PATH=$CARRY/lib/libddpm-kernel-trace.so DDPM_TRACE_OUT=$OUT/trace.txt timeout 60 \
      "$CARRY/bin/ddpm" bench --config "$1" --batch "$2" --device cuda --precision fp16 --warmup 2 --iters 10 \
      --quiet >> "$OUT/trace.txt" 2>&1 || echo "trace of $1 batch $2: exit $?" >> "$OUT/trace.txt"
    [ "$(grep -c '^== kernel_trace' "$OUT/trace.txt")" -gt "$before" ] \
      || echo "trace of $1 batch $2: no report (the driver did not load the library, or CUPTI failed above)" \
         >> "$OUT/trace.txt"
  done
  # the summary lines, then the column line and 12 rows of each table (not the timelines); failures always
  awk '/^---- / { print; sec = 0; next }
       /^trace of |^kernel_trace: / { print; next }
       /^# / { sec = ($0 ~ /timeline/) ? -1 : 1; n = 0; if (sec > 0) print; next }
       sec == 0 { print; next }
       sec > 0 && n++ < 13 { print }' "$OUT/trace.txt"
fi

# What the first sampling call pays on top of the steps (the DDPM-1000 target counts it: 1184 ms cold, 1079 warm
# on the H100 of 108f44a): DDIM 50 steps on the shipped emoji-32, cold (first call: planning, graph capture,
# first use of every kernel and of cuBLAS) and warm, by default, with attention's projections on cuBLAS
# (DDPM_CUDA_PROJ=cublas: 108f44a's default, whose first GEMM cost ~165 ms cold there), and with the slow own GEMM
# for everything (DDPM_CUDA_GEMM=fallback: no cuBLAS at all). (CUDA_MODULE_LOADING=EAGER: no change at 108f44a.)
echo "== 3c. Cold start (ddpm sample --time, emoji-32, DDIM 50 steps, fp16)"
[ $rc -eq 77 ] && echo "(skipped: no usable CUDA device)"
[ "${SKIP_COLD:-0}" = 1 ] && echo "(skipped: SKIP_COLD=1)"
[ $rc -eq 77 ] || [ "${SKIP_COLD:-0}" = 1 ] || for setting in default DDPM_CUDA_PROJ=cublas DDPM_CUDA_GEMM=fallback; do
  set_env=; [ "$setting" = default ] || set_env=$setting
  line=$(LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} env $set_env timeout 60 "$CARRY/bin/ddpm" sample \
         --model weights/emoji-32 --device cuda --precision fp16 --sampler ddim --steps 50 --seed 1 -o /tmp/cold.npy \
         -q --time --repeat 2 2>&1 | tr '\n' ' ')
  echo "cold $setting: $line" | tee -a "$OUT/profile.txt"
done

# The run-time switches against the default, each in turn with it (default, switch, default, switch) so drift
# favours neither: ddpm bench median ms (a replayed graph per forward), fp16. A switch that wins says which
# default to change:
#   DDPM_CUDA_PDL=0                      programmatic dependent launch off (cuda_compat.cuh grid_dependency_wait)
#   DDPM_CUDA_GN_CONV=0                  GroupNorm and the conv as separate ops (+ transpose)
#   DDPM_CUDA_CONV=implicit              the NCHW conv kernel everywhere (no transposes, register-staged loads)
#   DDPM_CUDA_CONV_REDUCE=cluster        split-K sums inside each tile's thread-block cluster (sm_90), not by a
#                                        second launch (H100 of 108f44a: 1.141 against 1.046 ms at cifar b1)
#   DDPM_CUDA_CONV_CLUSTER_MAX=8         with =cluster: clusters (and so K splits) of at most 8 blocks, not 16
#   DDPM_CUDA_DIRECT_WARPS=8             the direct conv (conv_in, conv_out) with 8 warps per block, not 128 / its
#                                        output channels per thread (32 at conv_out, 3 channels; untimed)
#   DDPM_CUDA_PROJ=cublas / =conv        attention's QKV (and unfused out) projections by cuBLAS, not as 1x1 convs
#                                        on conv2d_pointwise.cu's kernel (the default up to 4096 pixels, which keeps
#                                        batch-1 sampling off cuBLAS) / as convs at every size
#   DDPM_CUDA_CONV_PW=0                  1x1 convs on conv2d.cu's NCHW kernel (B through registers, 2 bytes a load),
#                                        not conv2d_pointwise.cu's cp.async one (fcae280: the NCHW kernel at ~146 us
#                                        own per call at cifar b128, 62-207 us per call at celebahq b1)
#   DDPM_CUDA_CONV=nhwc                  1x1 convs channels last too (the default keeps them on the NCHW kernel,
#                                        faster at batch 1 on the H200; at b128 fcae280's trace had that kernel
#                                        at ~146 us own time per call, 7 calls)
#   DDPM_CUDA_ATTN=split                 flash_split.cu's core at b128 too (fcae280: flash_mma_kernel 327 us per
#                                        call there, ~40 TFLOP/s)
#   DDPM_CUDA_GN=fused                   GroupNorm -> channels last as statistics + 32 x 32 transposing tiles, not
#                                        one block per group writing 8-byte runs along pixels (b128: gn_regs
#                                        <2, true> ~68 us own per call x 10, ~1 TB/s)
#   DDPM_CUDA_CONV=mma                   the 128 x 128 mma.sync tile where it fills a wave
#   DDPM_CUDA_CONV=wgmma                 the 128 x 128 wgmma tile (sm_90a) where it fills a wave, alone or with K
#                                        split (untimed: first in the list); + DDPM_CUDA_WGMMA_SPLIT=0: only where
#                                        it fills one alone (celebahq b1's 128 x 128 and 64 x 64 levels then take
#                                        the WMMA tiles, split); + DDPM_CUDA_WGMMA_OVERLAP=1: its 4-stage pipeline
#                                        with one wgmma group in flight across each barrier (one block per SM);
#                                        + DDPM_CUDA_WGMMA_BN=256: 128 x 256 tiles (m64n256k16, 4 stages, one block
#                                        per SM; 85 flops per operand byte copied, not 64)
#   DDPM_CUDA_ATTN=mma                   flash_attention.cu's core where the default takes flash_split.cu's (few
#                                        blocks: batch 1 at 16 x 16 tokens)
#   DDPM_CUDA_ATTN=wmma                  the WMMA attention core (+ a QKV bias pass) instead of the mma.sync one
#                                        (flash_attention.cu, biases inside)
#   DDPM_CUDA_ATTN_OUT=0                 the mma.sync core without the out projection (cuBLAS GEMM + a pass)
#   DDPM_CUDA_DEFER_REDUCE=1             a split conv's sum held back for the next GroupNorm to do (one launch fewer
#                                        per conv + GroupNorm pair, but the sum on one block per group)
#   DDPM_CUDA_GN=cluster                 GroupNorm groups split over thread-block clusters where few groups would
#                                        leave SMs idle (batch 1: 4 blocks per group, 128 blocks; celebahq's 128 x
#                                        128 groups in one launch, not statistics + apply); with DEFER_REDUCE=1 the
#                                        held-back sums are then read by 4x as many blocks (untimed: second in
#                                        the list, with DEFER_REDUCE=1). DEFER_REDUCE=1 now also holds conv1's sum across the
#                                        shortcut conv (whose own sum rides along) and into concatenation heads:
#                                        on the emulator planned as an H100, cifar10-32 b1 has 141 kernels per
#                                        forward with both, 204 without (celebahq-256 b1: 199, 277)
#   DDPM_CUDA_TIME_TABLE=0               each forward computes its time projections (sinusoid, two linears, the
#                                        stacked projection) instead of gathering them from the table: 3 launches more
#   DDPM_CUDA_CONV_PREFETCH=0            the cp.async conv kernels' first weight slices copied after the wait on the
#                                        previous kernel, not before it
#   DDPM_CUDA_PROJ_SPLIT=0               attention's projections (1x1 convs) unsplit, as before 2026-11-27's session
#   DDPM_CUDA_FA_CLUSTER=0 / 8 / 2       flash_split.cu's core where the default takes flash_cluster.cu's (batch 1 and
#                                        4 at 16 x 16 tokens) / clusters of 8 or 2 blocks (the rule: 4)
#   DDPM_CUDA_FA_KW=64                   the split core with 64 keys per warp (4 warps at 256 tokens; the rule: 8
#                                        of 32)
#   DDPM_CUDA_FA_DS=128 / DDPM_CUDA_FA_QT=2  the mma.sync core's block shape: 128 output dims per warp (fewer warps,
#                                        less repeated score work; the rule takes 64 where blocks are few) /
#                                        2 query tiles per block (the rule takes up to 4)
#   DDPM_CUDA_FA_DS=256                  one warp of 256 output dims per query tile (240 registers): no repeated
#                                        score work at d = 256 (b128 cifar), two warps, not four, at d = 512
#   DDPM_CUDA_UPSAMPLE_CONV=0            up blocks' upsampling as its own pass (default: the conv samples x)
#   DDPM_CUDA_CONV_SPLIT_BLOCKS_PER_SM=1 half the K splits at batch 1
# (The split rule's two numbers made no difference at cifar b1 on the H200 of e465425, 1.794-1.817 ms for
# blocks per SM 1, 2, 4 and min K slices 2, 4, 8, when the last block summed the splits; on the H100 of 108f44a,
# with clusters summing, 1 and 4 gave 0.994 and 1.026, with the second launch 1 gave 0.925 against clusters
# where the second launch alone gave 0.916; no split at all (SPLITK=1) 2.568.)
ab () {   # ab CONFIG BATCH SETTING
  if [ $SECONDS -gt "${AB_UNTIL:-450}" ]; then   # the device session's time: the rest is cut, not the log
    echo "ab $1 batch $2 $3: not run ($SECONDS s into the run)" | tee -a "$OUT/profile.txt"
    return
  fi
  line="ab $1 batch $2 $3:"
  for which in default switch default switch; do
    if [ $which = default ]; then set_env=; else set_env=$3; fi
    # the exit status counts too: fcae280's ddpm printed its median, then crashed in cuda_destroy (exit 139)
    out=$(LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} env $set_env timeout 60 "$CARRY/bin/ddpm" \
          bench --config "$1" --batch "$2" --device cuda --precision fp16 --warmup 3 --iters 20 --quiet 2>&1)
    st=$?
    ms=$(echo "$out" | grep -o 'median_ms=[0-9.]*' | cut -d= -f2)
    [ $st -eq 0 ] || ms="failed(exit-$st)"
    line="$line $which ${ms:-failed}"
  done
  echo "$line" | awk '{ d = ($(NF-6) + $(NF-2)) / 2; w = ($(NF-4) + $NF) / 2;
    printf "%s  -> switch/default %.3f\n", $0, (d > 0 && w > 0) ? w / d : 0 }' | tee -a "$OUT/profile.txt"
}
echo "== 4. Run-time switches against the default (ddpm bench median ms, fp16; also in profile.txt)"
[ $rc -eq 77 ] && echo "(skipped: no usable CUDA device)"
if [ $rc -ne 77 ]; then
  # most telling first (AB_UNTIL cuts the rest). Left out after the H100 run of fcae280 (within 1.5 % or
  # worse): GN_CONV=0 and UPSAMPLE_CONV=0 everywhere, CONV=implicit and FA_DS=128 at cifar b1 (1.055, 1.052);
  # after 573f2d7's: CONV_REDUCE=last-block (0.671 the other way at cifar b1, as the second launch's gain);
  # after 108f44a's (switch/default, clusters then the default): CONV_SPLITK=1 2.568, CLUSTER_MAX=8 0.995,
  # ATTN=mma 1.024 and SPLIT_BLOCKS_PER_SM=4 1.026 at cifar b1; after the H200 run of 2865982+ (8200496):
  # DIRECT_WARPS=8 1.014 cifar b1 / 0.992 celebahq b1, PROJ=cublas 0.952 cifar b1 (but DDIM-50 cold 142 ms
  # against 44), PROJ=conv 1.049 b128, CONV_REDUCE=cluster 1.048 / 1.007, CONV_PW=0 1.024 b128 / 1.015
  # celebahq, CONV=nhwc 1.018 b128, ATTN=split 1.018 b128, GN=fused 1.055 b128, FA_KW=64 1.021 / 1.006,
  # ATTN=mma 0.999 celebahq b1 (the last six left out now). CONV_REDUCE=cluster moved up (2026-12-07): its sum
  # no longer waits 4 round trips per vector on the epilogue's loads, so it may now beat the second launch.
  # AB_LIST: other lines of "config batch setting" (a shorter run) instead of these
  default_list=$(cat <<'LIST'
cifar10-32 128 DDPM_CUDA_CONV=wgmma
cifar10-32 128 DDPM_CUDA_CONV=wgmma DDPM_CUDA_WGMMA_BN=256
cifar10-32 1 DDPM_CUDA_GN=cluster DDPM_CUDA_DEFER_REDUCE=1
cifar10-32 1 DDPM_CUDA_CONV_REDUCE=cluster
celebahq-256 1 DDPM_CUDA_CONV=wgmma
celebahq-256 1 DDPM_CUDA_CONV=wgmma DDPM_CUDA_WGMMA_BN=256
celebahq-256 4 DDPM_CUDA_CONV=wgmma DDPM_CUDA_WGMMA_BN=256
celebahq-256 1 DDPM_CUDA_CONV=wgmma DDPM_CUDA_WGMMA_SPLIT=0
celebahq-256 4 DDPM_CUDA_CONV=wgmma
cifar10-32 128 DDPM_CUDA_FA_DS=256
celebahq-256 4 DDPM_CUDA_FA_DS=256
cifar10-32 128 DDPM_CUDA_CONV=wgmma DDPM_CUDA_FA_DS=256
cifar10-32 128 DDPM_CUDA_CONV=wgmma DDPM_CUDA_WGMMA_OVERLAP=1
celebahq-256 1 DDPM_CUDA_CONV=wgmma DDPM_CUDA_WGMMA_OVERLAP=1
cifar10-32 1 DDPM_CUDA_GN=cluster
cifar10-32 1 DDPM_CUDA_DEFER_REDUCE=1
celebahq-256 1 DDPM_CUDA_GN=cluster DDPM_CUDA_DEFER_REDUCE=1
celebahq-256 1 DDPM_CUDA_CONV=wgmma DDPM_CUDA_GN=cluster DDPM_CUDA_DEFER_REDUCE=1
celebahq-256 1 DDPM_CUDA_GN=cluster
celebahq-256 1 DDPM_CUDA_DEFER_REDUCE=1
cifar10-32 1 DDPM_CUDA_TIME_TABLE=0
cifar10-32 1 DDPM_CUDA_FA_CLUSTER=0
cifar10-32 128 DDPM_CUDA_CONV_PREFETCH=0
celebahq-256 4 DDPM_CUDA_FA_CLUSTER=0
cifar10-32 1 DDPM_CUDA_CONV_PREFETCH=0
cifar10-32 1 DDPM_CUDA_PROJ_SPLIT=0
celebahq-256 1 DDPM_CUDA_FA_CLUSTER=0
cifar10-32 1 DDPM_CUDA_FA_CLUSTER=8
cifar10-32 1 DDPM_CUDA_PDL=0
cifar10-32 1 DDPM_CUDA_CONV_SPLIT_BLOCKS_PER_SM=1
cifar10-32 128 DDPM_CUDA_CONV=mma
cifar10-32 128 DDPM_CUDA_FA_QT=2
celebahq-256 1 DDPM_CUDA_CONV=mma
cifar10-32 1 DDPM_CUDA_PROJ=cublas
cifar10-32 1 DDPM_CUDA_DIRECT_WARPS=8
celebahq-256 1 DDPM_CUDA_DIRECT_WARPS=8
cifar10-32 128 DDPM_CUDA_PROJ=conv
cifar10-32 128 DDPM_CUDA_GN=fused
celebahq-256 1 DDPM_CUDA_ATTN=mma
cifar10-32 1 DDPM_CUDA_ATTN=wmma
celebahq-256 1 DDPM_CUDA_ATTN=wmma
LIST
)
  while read -r shape batch setting; do
    case "$setting" in   # a tile that failed its checks is not timed
      *WGMMA_BN=256*) { grep -q '^FAIL' "$OUT/tests-wgmma256.txt" || grep -q '^FAIL.*wgmma_bn=256' "$OUT/tests-full.txt"; } \
                        2>/dev/null && { echo "ab $shape $batch $setting: not run (failed checks)"; continue; } ;;
    esac
    [ -n "$shape" ] && ab "$shape" "$batch" "$setting" < /dev/null
  done <<< "${AB_LIST:-$default_list}"
fi

echo "== done $(date -u)"
[ $rc -eq 77 ] && exit 0
exit $rc
