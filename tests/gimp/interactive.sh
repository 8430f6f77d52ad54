#!/usr/bin/env bash
# interactive.sh: the plug-in's dialogs in the real GIMP GUI (gimp-3.0 under Xvfb), driven with xdotool:
# parameter dialogs, the progress dialog with its live preview, Cancel mid-run (the image stays exactly as
# it was, no image is created), and interactive runs that finish. TAP output; skipped (exit 77) without
# Xvfb, xdotool or xwd.
#
# Usage: interactive.sh PLUGIN_EXECUTABLE SOURCE_ROOT [SCREENSHOT_DIR]
#   With SCREENSHOT_DIR it also saves PNG screenshots there: generate-dialog.png, progress-preview.png,
#   generated-result.png, denoise-dialog.png, denoise-progress.png, noise-dialog.png.
#   SCREENSHOT_MODEL: the model for the dialogs and the generated result (default: the random test model
#   tests/fixtures/models/cifar-like; for screenshots weights/emoji-32 when it exists). RESULT_SAMPLER and
#   RESULT_STEPS: how the generated result is sampled (default ddim, 50). CANCEL_AT: a regular expression
#   for the percentage at which the progress dialogs are photographed and cancelled (default 3[0-9]|4[0-9]:
#   the progress dialog puts "(P%)" in its title).
set -u
plugin=$1
src=$2
shots=${3:-}
here=$src/tests/gimp
check="python3 $here/pngcheck.py"
for tool in Xvfb xdotool xwd gimp-3.0; do
  command -v $tool >/dev/null || { echo "1..0 # SKIP $tool not installed"; exit 77; }
done

fast=$src/tests/fixtures/models/demo-tiny
slow=${SCREENSHOT_MODEL:-}
if [ -z "$slow" ]; then
  slow=$src/tests/fixtures/models/cifar-like
  [ -n "$shots" ] && [ -f "$src/weights/emoji-32/config.json" ] && slow=$src/weights/emoji-32
fi
# A 16-pixel random model samples too fast to be caught mid-run: make its canvas bigger.
size=0
python3 -c "import json,sys; sys.exit(0 if json.load(open('$slow/config.json')).get('sample_size', 0) >= 32 else 1)" \
  2>/dev/null || size=64

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gimp-ddpm-ui.XXXXXX")
out=$tmp/out
mkdir -p "$out" "$tmp/models"
pids=()
cleanup () {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null; done
  if [ -n "${GIMP_TEST_KEEP:-}" ]; then echo "# keeping $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
export GIMP3_DIRECTORY=$tmp/gimp3 XDG_DATA_HOME=$tmp/xdg NO_AT_BRIDGE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=1
mkdir -p "$GIMP3_DIRECTORY/plug-ins/gimp-ddpm" "$GIMP3_DIRECTORY/plug-in-settings"
install -m 755 "$plugin" "$GIMP3_DIRECTORY/plug-ins/gimp-ddpm/gimp-ddpm"
# The dialogs' model chooser lists these names.
ln -s "$slow" "$tmp/models/$(basename "$slow")"
ln -s "$fast" "$tmp/models/demo-tiny"
export GIMP_DDPM_MODEL_PATH=$tmp/models

# Starting values of the dialogs (GIMP's "last values"): slow, cancellable runs first.
settings () {  # settings PROCEDURE (name value)...
  local f="$GIMP3_DIRECTORY/plug-in-settings/GimpProcedureConfigRun-$1.last"
  shift
  { echo "# settings"; echo; for kv in "$@"; do echo "($kv)"; done; echo; echo "# end of settings"; } > "$f"
}
slow_name=$(basename "$slow")
settings plug-in-ddpm-generate "model \"$slow_name\"" 'sampler "ddpm"' "steps 1000" "eta 0" "seed 42" \
  "random-seed no" "variations 1" "width $size" "height $size" 'output "new-image"' 'device "cpu"' \
  'precision "auto"'
settings plug-in-ddpm-denoise "model \"$slow_name\"" 'mode "strength"' "strength 0.8" "sigma 0" "timestep 100" \
  'sampler "ddpm"' "steps 1000" "eta 0" "seed 1" "random-seed no" "context 16" 'device "cpu"' 'precision "auto"'
settings plug-in-ddpm-noise "model \"$slow_name\"" "timestep 200" "seed 5" "random-seed no"

n=0
failed=0
tap () {
  n=$((n + 1))
  if [ "$1" = 0 ]; then echo "ok $n - $2${3:+ # $3}"
  else echo "not ok $n - $2${3:+ # $3}"; failed=$((failed + 1)); fi
}

# An X server on a display it picks itself (-displayfd): lock files in /tmp do not show the displays of
# other chroots, which share the abstract X socket names.
Xvfb -displayfd 3 -screen 0 1400x1000x24 -nolisten tcp 3> "$tmp/display" > "$tmp/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^[0-9][0-9]*$' "$tmp/display" 2>/dev/null && break; sleep 0.1; done
export DISPLAY=:$(head -1 "$tmp/display")
for _ in $(seq 50); do xdotool getdisplaygeometry >/dev/null 2>&1 && break; sleep 0.2; done
if ! xdotool getdisplaygeometry >/dev/null 2>&1; then
  echo "# Xvfb did not start (display '$DISPLAY'):"; sed 's/^/#   /' "$tmp/xvfb.log"
  echo "1..0 # SKIP no X server"; exit 77
fi

log=$tmp/gimp.log
t0=$SECONDS
start_gimp () {
  gimp-3.0 -n --no-splash --batch-interpreter=plug-in-script-fu-eval \
    -b "(begin (define out \"$out\") (define model \"$slow\") (define fast-model \"$fast\")
               (define result-sampler \"${RESULT_SAMPLER:-ddim}\") (define result-steps ${RESULT_STEPS:-50})
               (load \"$here/prelude.scm\") (load \"$here/interactive.scm\"))" > "$log" 2>&1 &
  gimp_pid=$!
  pids+=($gimp_pid)
}
start_gimp
# A GIMP that quits at once (seen once on a loaded machine, exit 1 within a second): say why, try again.
sleep 3
if ! kill -0 $gimp_pid 2>/dev/null; then
  echo "# gimp-3.0 ended at once; its output:"; sed 's/^/#   /' "$log" | tail -15
  start_gimp
fi

# wait_win TITLE-REGEX [SECONDS]: the id of the newest visible window whose title matches.
wait_win () {
  local w
  for _ in $(seq $((${2:-90} * 4))); do
    w=$(xdotool search --onlyvisible --name "$1" 2>/dev/null | tail -1)
    [ -n "$w" ] && { echo "$w"; return 0; }
    kill -0 $gimp_pid 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}
shot () {  # shot WINDOW NAME
  [ -n "$shots" ] || return 0
  mkdir -p "$shots"
  xdotool mousemove 1399 999 2>/dev/null; sleep 0.3   # no pointer, no tooltip in the picture
  xwd -id "$1" -silent > "$tmp/$2.xwd" && python3 "$here/xwd2png.py" "$tmp/$2.xwd" "$shots/$2.png"
}
press () {  # press WINDOW KEY
  xdotool windowfocus --sync "$1" 2>/dev/null
  xdotool key --window "$1" "$2"
}
# Without a window manager every window opens at (0, 0), the newest on top: dialogs stay there, the
# generated image's window moves to the right so that the next dialog does not cover it.
place () { xdotool windowmove "$1" "$2" "$3" 2>/dev/null; sleep 0.5; }

# 1. Generate dialog, OK; progress dialog with its preview; Cancel.
if w=$(wait_win "^Generate with a Diffusion Model$" 180); then
  sleep 1; shot "$w" generate-dialog; press "$w" Return
  if p=$(wait_win "^Generating with .*\\((${CANCEL_AT:-3[0-9]|4[0-9]})%\\)" 300); then
    shot "$p" progress-preview; press "$p" Escape
  fi
fi
# 2. The generated result.
if w=$(wait_win "generated-result" 240); then
  place "$w" 560 0
  xdotool windowsize "$w" 820 700; sleep 1
  press "$w" shift+ctrl+j   # View > Zoom > Fit Image in Window
  sleep 2; shot "$w" generated-result
fi
# 3. Denoise dialog, OK, Cancel mid-run.
if w=$(wait_win "^Denoise Selection$" 120); then
  sleep 1; shot "$w" denoise-dialog; press "$w" Return
  if p=$(wait_win "^Denoising with .*\\((${CANCEL_AT:-3[0-9]|4[0-9]})%\\)" 300); then
    shot "$p" denoise-progress; press "$p" Escape
  fi
fi
# The second Denoise run starts from quick values.
settings plug-in-ddpm-denoise 'model "demo-tiny"' 'mode "strength"' "strength 0.6" "sigma 0" "timestep 100" \
  'sampler "ddim"' "steps 20" "eta 0" "seed 1" "random-seed no" "context 16" 'device "cpu"' 'precision "auto"'
# 4. Noise dialog, OK.
if w=$(wait_win "^Noise to Step t$" 120); then
  sleep 1; shot "$w" noise-dialog; press "$w" Return
fi
# 5. Denoise again, to the end.
if w=$(wait_win "^Denoise Selection$" 120); then
  press "$w" Return
fi
for _ in $(seq 240); do kill -0 $gimp_pid 2>/dev/null || break; sleep 0.5; done
if kill -0 $gimp_pid 2>/dev/null; then rc=timeout; else wait $gimp_pid; rc=$?; fi
echo "# GIMP GUI session: exit $rc in $((SECONDS - t0)) s (model $slow)"

result () { sed -n "s/^.*RESULT $1=//p" "$log" | head -1; }
expect () { local got; got=$(result "$1"); [ "$got" = "$2" ]; tap $? "interactive: $1 is '$2'" "got '$got'"; }
png () {
  local args=() desc detail rc
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  desc=$2
  detail=$($check "${args[@]}" 2>&1); rc=$?
  tap $rc "$desc" "$detail"
}
[ "$rc" = 0 ]; tap $? "interactive: the GIMP session ends normally" "exit $rc"
expect images-at-start 1
expect generate-1 cancelled
expect images-after-cancel 1
expect denoise-1 cancelled
png same "$out/ia-before.png" "$out/ia-after-cancel.png" -- "interactive: Cancel leaves the image exactly as it was"
expect noise-1 finished
png changed-only "$out/ia-after-cancel.png" "$out/ia-noised.png" 24 16 32 32 0 -- \
  "interactive: Noise to step t writes the selection only"
expect denoise-2 finished
png changed-only "$out/ia-noised.png" "$out/ia-denoised.png" 24 16 32 32 0 -- \
  "interactive: Denoise with its progress dialog writes the selection only"
expect denoise-last-values finished
png changed-only "$out/ia-denoised.png" "$out/ia-repeated.png" 24 16 32 32 0 -- \
  "interactive: with last values (no dialog) it runs again on the selection"
expect done yes
if [ -n "$shots" ]; then
  for s in generate-dialog progress-preview generated-result denoise-dialog denoise-progress noise-dialog; do
    [ -s "$shots/$s.png" ]; tap $? "screenshot $s.png"
  done
fi
if [ $failed != 0 ]; then
  grep -v "tag cache\|cannot open display\|unexpected EOF\|Broken pipe" "$log" | tail -30 | sed 's/^/#   /'
fi
echo "1..$n"
[ $failed = 0 ]
