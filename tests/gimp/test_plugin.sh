#!/usr/bin/env bash
# test_plugin.sh: drives the three procedures of the built plug-in through Script-Fu in a headless GIMP
# (gimp-console-3.0) and checks the PNGs they save with pngcheck.py. TAP output.
#
# Usage: test_plugin.sh PLUGIN_EXECUTABLE SOURCE_ROOT   (meson runs it: suite 'gimp'; tests/gimp/run.sh
#        runs meson inside a Debian 13 tree on Debian 12 hosts)
# The plug-in is installed into a temporary GIMP3_DIRECTORY (plug-ins/gimp-ddpm/gimp-ddpm); the model is
# the tiny random test model tests/fixtures/models/demo-tiny (16 x 16), so every run takes seconds on a CPU.
# GIMP_TEST_KEEP=1 keeps the temporary folder (logs and PNGs) and prints its path.
set -u
plugin=$1
src=$2
here=$src/tests/gimp
model=$src/tests/fixtures/models/demo-tiny
model4=$src/tests/fixtures/models/fp16-4ch   # 4 channels (RGBA), fp16 weights, pipeline folder
check="python3 $here/pngcheck.py"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gimp-ddpm-test.XXXXXX")
out=$tmp/out
mkdir -p "$out"
if [ -n "${GIMP_TEST_KEEP:-}" ]; then echo "# keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
export GIMP3_DIRECTORY=$tmp/gimp3
mkdir -p "$GIMP3_DIRECTORY/plug-ins/gimp-ddpm"
install -m 755 "$plugin" "$GIMP3_DIRECTORY/plug-ins/gimp-ddpm/gimp-ddpm"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=1
# Only models this test names: none from the user's or the installed folders.
export XDG_DATA_HOME=$tmp/xdg GIMP_DDPM_MODEL_PATH=$tmp/models

# A broken model: the test model's configs with a truncated weights file.
broken=$tmp/broken
mkdir -p "$broken"
cp "$model/config.json" "$model/scheduler_config.json" "$broken/"
head -c 200 "$model/diffusion_pytorch_model.safetensors" > "$broken/diffusion_pytorch_model.safetensors"

# An unsupported architecture: a text-conditioned down block.
unsupported=$tmp/unsupported
mkdir -p "$unsupported"
sed 's/"AttnDownBlock2D"/"CrossAttnDownBlock2D"/' "$model/config.json" > "$unsupported/config.json"
cp "$model/scheduler_config.json" "$model/diffusion_pytorch_model.safetensors" "$unsupported/"

n=0
failed=0
tap () {  # tap OK DESCRIPTION [DETAIL]
  n=$((n + 1))
  if [ "$1" = 0 ]; then echo "ok $n - $2${3:+ # $3}"
  else echo "not ok $n - $2${3:+ # $3}"; failed=$((failed + 1)); fi
}
# png CHECK ARGS... -- DESCRIPTION: one pngcheck.py check as one TAP line.
png () {
  local args=() desc
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  desc=$2
  local detail rc
  detail=$($check "${args[@]}" 2>&1); rc=$?
  tap $rc "$desc" "$detail"
}
# gimp_run NAME: runs NAME.scm (after prelude.scm) in gimp-console; output in $tmp/NAME.log; sets $rc.
gimp_run () {
  local t0=$SECONDS
  timeout 300 gimp-console-3.0 -i -n -c --batch-interpreter=plug-in-script-fu-eval \
    -b "(begin (define out \"$out\") (define model \"$model\") (define broken \"$broken\") (define model4 \"$model4\")
               (define unsupported \"$unsupported\")
               (load \"$here/prelude.scm\") (load \"$here/$1.scm\"))" \
    --quit > "$tmp/$1.log" 2>&1
  rc=$?
  echo "# $1.scm: exit $rc in $((SECONDS - t0)) s"
  if [ $rc != 0 ] && [ "${2:-0}" != "$rc" ]; then
    grep -v "tag cache\|cannot open display\|unexpected EOF\|Broken pipe" "$tmp/$1.log" | tail -20 | sed 's/^/#   /'
  fi
}
# result NAME KEY: the value the script reported with (report KEY ...).
result () { sed -n "s/^.*RESULT $2=//p" "$tmp/$1.log" | head -1; }
expect () {  # expect NAME KEY VALUE
  local got
  got=$(result "$1" "$2")
  [ "$got" = "$3" ]; tap $? "$1: $2 is '$3'" "got '$got'"
}
has () {  # has NAME TEXT DESCRIPTION
  grep -qF -- "$2" "$tmp/$1.log"; tap $? "$3" "log has: $2"
}

echo "# GIMP: $(gimp-console-3.0 --version 2>/dev/null | head -1); model: $model"

# ---- Generate ----------------------------------------------------------------------------------------
gimp_run generate
tap $rc "generate: batch run succeeds" "exit $rc"
expect generate two-seed 7
expect generate two-layers 2
expect generate two-names "seed 7,seed 8"
png size "$out/gen-two-top.png" 16 16 3 -- "generate: default size is the model's sample_size (16 x 16 RGB)"
png same "$out/gen-two-top.png" "$out/gen-seed7.png" -- "generate: variation 1 equals a run with seed 7"
png same "$out/gen-two-second.png" "$out/gen-seed8.png" -- "generate: variation 2 equals a run with seed 8 (tune TRUE)"
has generate "gimp-ddpm: tuning: cpu" "generate: #:tune TRUE reaches the engine (its report: nothing to tune on the CPU)"
[ "$(grep -c 'gimp-ddpm: tuning: ' "$tmp/generate.log")" = 1 ]
tap $? "generate: a tuning report only where tuning was asked for" "$(grep -c 'gimp-ddpm: tuning: ' "$tmp/generate.log") reports"
png differ "$out/gen-seed7.png" "$out/gen-seed9.png" -- "generate: another seed gives other pixels"
png size "$out/gen-24x12.png" 24 12 -- "generate: width 24, height 12"
png size "$out/gen-ddpm.png" 16 16 -- "generate: DDPM sampler"
png size "$out/gen-eta1.png" 16 16 -- "generate: DDIM with eta 1"
seed=$(result generate random-seed)
[ -n "$seed" ] && [ "$seed" != 0 ]; tap $? "generate: random-seed reports the seed it drew" "seed '$seed'"
png same "$out/gen-random.png" "$out/gen-random-again.png" -- "generate: the reported random seed reproduces the picture"
expect generate layers-same-image yes
expect generate layers-count 3
png size "$out/gen-layers.png" 40 30 -- "generate: new layers keep the image's size"
expect generate rgba-layer-alpha yes
png size "$out/gen-rgba.png" 16 16 4 -- "generate: a 4-channel model gives RGBA"

# ---- Noise -------------------------------------------------------------------------------------------
gimp_run noise
tap $rc "noise: batch run succeeds" "exit $rc"
expect noise noise-seed 3
png noise "$out/noise-clean.png" "$out/noise-t20.png" "$model" 20 8 8 40 32 -- \
  "noise: selection = sqrt(abar_20) x + sqrt(1 - abar_20) z, outside unchanged"
png same "$out/noise-t20.png" "$out/noise-t20-again.png" -- "noise: the same seed gives the same noise"
png differ "$out/noise-t20.png" "$out/noise-t20-seed4.png" -- "noise: another seed gives other noise"
png noise "$out/noise-clean.png" "$out/noise-t8-all.png" "$model" 8 0 0 64 48 -- \
  "noise: no selection noises the whole drawable (t = 8)"
png size "$out/noise-gray-t20.png" 64 48 1 -- "noise: gray stays gray"
png noise "$out/noise-gray-clean.png" "$out/noise-gray-t20.png" "$model" 20 0 0 64 48 -- "noise: gray statistics"
png alpha-same "$out/noise-rgba-clean.png" "$out/noise-rgba-t20.png" -- "noise: alpha kept"
png noise "$out/noise-rgba-clean.png" "$out/noise-rgba-t20.png" "$model" 20 0 0 64 48 -- \
  "noise: RGBA statistics (opaque pixels)"
png noise "$out/noise-float-clean.png" "$out/noise-float-t20.png" "$model" 20 0 0 64 48 -- \
  "noise: 32-bit float image (16-bit PNG) statistics"

# ---- Denoise -----------------------------------------------------------------------------------------
gimp_run denoise
tap $rc "denoise: batch run succeeds" "exit $rc"
png same "$out/den-clean.png" "$out/den-s0.png" -- "denoise: strength 0 leaves the pixels unchanged"
png changed-only "$out/den-clean.png" "$out/den-s06.png" 20 12 16 16 0 -- \
  "denoise: strength 0.6 changes the selection and nothing else"
png same "$out/den-s06.png" "$out/den-s06-again.png" -- "denoise: the same seed gives the same pixels (tune TRUE)"
has denoise "gimp-ddpm: tuning: cpu" "denoise: #:tune TRUE reaches the engine (its report: nothing to tune on the CPU)"
png changed-only "$out/den-clean.png" "$out/den-tiled.png" 4 4 52 36 0 -- \
  "denoise: a selection larger than the model runs in tiles, only the selection changes"
png changed-only "$out/den-clean.png" "$out/den-feather.png" 16 12 24 20 6 -- \
  "denoise: feathered selection: changes stay within the feather"
png alpha-same "$out/den-rgba-clean.png" "$out/den-rgba.png" -- "denoise: alpha kept"
png same "$out/den-gray-clean.png" "$out/den-gray-s0.png" -- "denoise: gray, strength 0 unchanged"
png changed-only "$out/den-gray-clean.png" "$out/den-gray-s06.png" 20 12 16 16 0 -- \
  "denoise: gray, strength 0.6 changes only the selection"
png same "$out/den-u16-clean.png" "$out/den-u16-s0.png" -- "denoise: 16-bit image, strength 0 unchanged"
t=$(result denoise noisy-est-t); s=$(result denoise noisy-est-sigma)
python3 -c "import sys; sys.exit(0 if int('$t') > 0 and float('$s') > 1 else 1)" 2>/dev/null
tap $? "denoise: already-noisy estimates sigma and its timestep" "sigma $s px -> t $t"
t=$(result denoise noisy-20-t); s=$(result denoise noisy-20-sigma)
python3 -c "import sys; sys.exit(0 if int('$t') > 0 and abs(float('$s') - 20) < 1e-9 else 1)" 2>/dev/null
tap $? "denoise: already-noisy with sigma 20 starts at its timestep" "sigma $s px -> t $t"
png alpha-same "$out/den-m4-clean.png" "$out/den-m4.png" -- "denoise: 4-channel model, the layer's alpha is kept"
png changed-only "$out/den-m4-clean.png" "$out/den-m4.png" 4 4 40 30 0 -- \
  "denoise: 4-channel model changes only the selection"
expect denoise xt-t 30
png changed-only "$out/den-xt-in.png" "$out/den-xt.png" 20 12 16 16 0 -- \
  "denoise: diffusion-xt after Noise to step 30 changes only the selection"
png changed-only "$out/den-ens-in.png" "$out/den-ens8.png" 20 12 20 12 0 -- \
  "denoise: already-noisy with ensemble 8 changes only the selection"
png differ "$out/den-ens1.png" "$out/den-ens8.png" -- "denoise: ensemble 8 differs from the single run"

# ---- Errors ------------------------------------------------------------------------------------------
gimp_run broken_model 70
[ "$rc" = 70 ]; tap $? "broken model: batch run ends with an execution error (exit 70)" "exit $rc"
expect broken_model broken-caught yes
expect broken_model missing-caught yes
png same "$out/broken-before.png" "$out/broken-after.png" -- "broken model: the image is unchanged"
has broken_model "Procedure execution of plug-in-ddpm-noise failed" "broken model: reported as an execution error"
has broken_model "cannot load the model in $broken" "broken model: the message names the folder"
has broken_model "model \"no-such-model-anywhere\" not found" "missing model: the message says it was not found"
expect broken_model unsupported-caught yes
has broken_model "unsupported down_block_types[1] = CrossAttnDownBlock2D" \
  "unsupported architecture: the message names the field"

gimp_run bad_width 70
has bad_width "failed on invalid input arguments" "width 33: a calling error"
has bad_width "argument \"width\" is 33, not a multiple of 2" "width 33: the message names the argument"
gimp_run bad_steps 70
has bad_steps "failed on invalid input arguments" "steps 5000: a calling error"
has bad_steps "argument \"steps\" is 5000" "steps 5000: the message names the argument"

echo "1..$n"
[ $failed = 0 ]
