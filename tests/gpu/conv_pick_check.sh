#!/bin/sh
# conv_pick_check.sh DDPM MODULE FIXTURES: each convolution shape's plan timed at planning (kernels/conv_pick.cu,
# $DDPM_CUDA_CONV_PICK) on the CUDA emulator (suite gpu-emu). The emulator's times are CPU times, so which plan
# "timed" keeps is not checked; "slowest" (keep the slowest candidate) makes the picks differ from the defaults':
# 1. with slowest, every shape is timed once and picks one candidate, some not the backend's own plan; the
#    sample's bits differ from the defaults' (the picks are what runs) and both agree with the CPU's;
# 2. the picks written out (CONV_PICKS, as the tuner caches them) give the same bits without timing anything, with
#    or without CONV_PICK;
# 3. a switch the user fixed (a tile) is not second-guessed: nothing timed;
# 4. the engine's tuner offers it as a variant and judges it against the defaults; a cached CONV_PICKS that is
#    malformed is refused and the shape timed again;
# 5. a candidate whose output differs from the backend's own plan's is never picked (the emulator's m64n256k16
#    made wrong, as a wrong fragment layout on some GPU would be).
set -u
DDPM=$1 MODULE=$2 FIXTURES=$3
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
export DDPM_CUDA_MODULE="$MODULE" DDPM_TUNING_FILE="$DIR/tuning.ini" OMP_NUM_THREADS=1
. "$(dirname "$0")/check_lib.sh"
sample () {   # sample OUT.npy DEVICE [ddpm options]: a 2-step DDIM sample of the cifar-like fixture (fp16 on cuda)
  out=$1 device=$2
  shift 2
  [ "$device" = cuda ] && set -- --precision fp16 "$@"
  "$DDPM" sample -m "$FIXTURES/models/cifar-like" --device "$device" --sampler ddim --steps 2 --seed 5 -o "$out" "$@"
}
# fp16 against the CPU's float32 over two steps: the defaults measured 3.7e-3 (2026-12-07), 5x room
BOUND=0.02

sample "$DIR/cpu.npy" cpu -q > "$DIR/cpu.log" 2>&1
sample "$DIR/defaults.npy" cuda -q > "$DIR/defaults.log" 2>&1
check "the defaults' sample agrees with the CPU's (max |diff| <= $BOUND)" \
  "$("$DDPM" compare --max-abs $BOUND "$DIR/defaults.npy" "$DIR/cpu.npy" > "$DIR/cmp0.log" 2>&1; echo $?)" "$DIR/cmp0.log"

# 1. slowest
DDPM_CUDA_CONV_PICK=slowest DDPM_CUDA_CONV_PICK_LOG=1 sample "$DIR/slowest.npy" cuda -q > "$DIR/slowest.log" 2>&1
rc=$?
lines=$(grep -c '^conv pick ' "$DIR/slowest.log")
shapes=$(awk '/^conv pick / { split($3, kv, ":"); print kv[1] }' "$DIR/slowest.log" | sort -u | wc -l)
one_each=$(grep '^conv pick ' "$DIR/slowest.log" | awk -F'[(]picked[)]' 'NF != 2' | wc -l)
moved=$(grep '^conv pick ' "$DIR/slowest.log" | cut -d';' -f1 | grep -vc '(picked)')
[ $rc -eq 0 ] && [ "$lines" -gt 0 ] && [ "$lines" -eq "$shapes" ] && [ "$one_each" -eq 0 ] && [ "$moved" -gt 0 ]
check "slowest (exit $rc): $lines shapes timed ($shapes distinct), one pick each ($one_each without), $moved not the backend's own plan" \
  $? "$DIR/slowest.log"
! cmp -s "$DIR/slowest.npy" "$DIR/defaults.npy"
check "the picked plans run: the sample's bits differ from the defaults'" $?
check "the picked plans' sample agrees with the CPU's (max |diff| <= $BOUND)" \
  "$("$DDPM" compare --max-abs $BOUND "$DIR/slowest.npy" "$DIR/cpu.npy" > "$DIR/cmp1.log" 2>&1; echo $?)" "$DIR/cmp1.log"

# 2. the picks as text: the same plans, nothing timed
PICKS=$(awk '/^conv pick / { printf "%s%s", sep, $3; sep = "," }' "$DIR/slowest.log")
DDPM_CUDA_CONV_PICKS=$PICKS sample "$DIR/given.npy" cuda -q > "$DIR/given.log" 2>&1
cmp -s "$DIR/given.npy" "$DIR/slowest.npy"
check "CONV_PICKS=<the $lines picks> alone: the slowest picks' bits" $? "$DIR/given.log"
DDPM_CUDA_CONV_PICKS=$PICKS DDPM_CUDA_CONV_PICK=slowest DDPM_CUDA_CONV_PICK_LOG=1 sample "$DIR/given2.npy" cuda -q \
  > "$DIR/given2.log" 2>&1
cmp -s "$DIR/given2.npy" "$DIR/slowest.npy" && ! grep -q '^conv pick ' "$DIR/given2.log"
check "CONV_PICKS with CONV_PICK=slowest: the same bits, no shape timed again" $? "$DIR/given2.log"

# ... and picks naming the wgmma tile (algo 0, tile 3, the rule's split) at the fixture's 64-channel 3x3 shapes,
# without CONV_PICK: that tile is made ready for them (else they would quietly take another plan)
WG="1.64.8.8.32.3.1.1.1.8.8:0.3.0,1.64.4.4.32.3.1.1.1.4.4:0.3.0,1.64.2.2.32.3.1.1.1.2.2:0.3.0"
DDPM_CUDA_CONV_PICKS=$WG sample "$DIR/wgmma.npy" cuda -q > "$DIR/wgmma.log" 2>&1
! cmp -s "$DIR/wgmma.npy" "$DIR/defaults.npy" \
  && "$DDPM" compare --max-abs $BOUND "$DIR/wgmma.npy" "$DIR/cpu.npy" >> "$DIR/wgmma.log" 2>&1
check "CONV_PICKS of the wgmma tile alone: it runs (bits differ from the defaults'), agrees with the CPU" $? \
  "$DIR/wgmma.log"

# ... and picks naming the 128 x 256 wgmma tile (tile 4), whatever WGMMA_BN says: the profile names its launches
# (the 8x8 shape's tile 4 beside the 4x4 shape's tile 3), and they give the bits of tile 3 under WGMMA_BN=256
WIDE="1.64.8.8.32.3.1.1.1.8.8:0.4.0,1.64.4.4.32.3.1.1.1.4.4:0.3.0"
DDPM_CUDA_PROFILE=1 DDPM_CUDA_CONV_PICKS=$WIDE "$DDPM" bench -m "$FIXTURES/models/cifar-like" --device cuda \
  --precision fp16 -n 1 --warmup 1 -q > "$DIR/wide-profile.log" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q '^ *conv_nhwc_wgmma_wide  *2\.0 ' "$DIR/wide-profile.log" \
  && grep -q '^ *conv_nhwc_wgmma  *[1-9]' "$DIR/wide-profile.log"
check "CONV_PICKS naming tile 4: the 128 x 256 wgmma tile runs at that shape only (exit $rc)" $? "$DIR/wide-profile.log"
WG4=$(echo "$WG" | sed 's/:0\.3\./:0.4./g')
DDPM_CUDA_CONV_PICKS=$WG4 sample "$DIR/wide.npy" cuda -q > "$DIR/wide.log" 2>&1
DDPM_CUDA_WGMMA_BN=256 DDPM_CUDA_CONV_PICKS=$WG sample "$DIR/bn256.npy" cuda -q > "$DIR/bn256.log" 2>&1
cmp -s "$DIR/wide.npy" "$DIR/bn256.npy" && ! cmp -s "$DIR/wide.npy" "$DIR/defaults.npy"
check "tile 4 picks: the bits of tile 3 under WGMMA_BN=256, not the defaults'" $? "$DIR/wide.log"

# 3. a fixed tile: nothing to pick
DDPM_CUDA_CONV_TILE=small DDPM_CUDA_CONV_PICK=slowest DDPM_CUDA_CONV_PICK_LOG=1 sample "$DIR/fixed.npy" cuda -q \
  > "$DIR/fixed.log" 2>&1
rc=$?
[ $rc -eq 0 ] && ! grep -q '^conv pick ' "$DIR/fixed.log"
check "DDPM_CUDA_CONV_TILE=small set: no shape timed (exit $rc)" $? "$DIR/fixed.log"

# 4. through the tuner
DDPM_CUDA_VARIANTS="CONV_PICK=slowest" sample "$DIR/tuned.npy" cuda --tune-again > "$DIR/tune.log" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "CONV_PICK=slowest.*max |eps - defaults'|" "$DIR/tune.log"
check "the tuner times and judges CONV_PICK=slowest (exit $rc)" $? "$DIR/tune.log"
sed "s/^variant=.*/variant=CONV_PICK=slowest CONV_PICKS=1.2.3:x/" "$DIR/tuning.ini" > "$DIR/t.ini" \
  && mv "$DIR/t.ini" "$DIR/tuning.ini"
DDPM_CUDA_VARIANTS="CONV_PICK=slowest" sample "$DIR/bad.npy" cuda --tune > "$DIR/bad.log" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "the cache's CONV_PICK=slowest CONV_PICKS=1.2.3:x cannot run here (CONV_PICKS has an entry" \
  "$DIR/bad.log" && grep -q '^  kept: ' "$DIR/bad.log"
check "a malformed cached CONV_PICKS is refused and the shape tuned again (exit $rc)" $? "$DIR/bad.log"
# 5. a candidate that computes something else: with the emulator's m64n256k16 reading B's rows in swapped pairs,
# the 128 x 256 wgmma candidates (which slowest picks at the 64-channel shapes otherwise) disagree with the
# backend's own plan, are never picked, and the sample agrees with the CPU's
wide_before=$(grep '^conv pick ' "$DIR/slowest.log" | tr ';' '\n' | grep -c 'wgmma 128x256.*(picked)')
DDPM_CUDA_EMU_FAULT=wgmma-n256 DDPM_CUDA_CONV_PICK=slowest DDPM_CUDA_CONV_PICK_LOG=1 sample "$DIR/broken.npy" cuda -q \
  > "$DIR/broken.log" 2>&1
rc=$?
disagree=$(grep '^conv pick ' "$DIR/broken.log" | tr ';' '\n' | grep -c 'wgmma 128x256.* disagrees')
wide_after=$(grep '^conv pick ' "$DIR/broken.log" | tr ';' '\n' | grep -c 'wgmma 128x256.*(picked)')
[ $rc -eq 0 ] && [ "$wide_before" -gt 0 ] && [ "$disagree" -gt 0 ] && [ "$wide_after" -eq 0 ] \
  && "$DDPM" compare --max-abs $BOUND "$DIR/broken.npy" "$DIR/cpu.npy" >> "$DIR/broken.log" 2>&1
check "a wrong 128 x 256 tile (exit $rc): $disagree candidates disagree, picked $wide_after times (without the fault $wide_before), the sample agrees with the CPU" \
  $? "$DIR/broken.log"
exit $fail
