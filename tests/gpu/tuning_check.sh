#!/bin/sh
# tuning_check.sh DDPM MODULE FIXTURES: the tuner (engine/tuning.c) on the CUDA emulator (suite gpu-emu).
# 1. `--tune` times every variant offered ($DDPM_CUDA_VARIANTS here: forced K splits, which change the summation
#    order, and held-back sums), checks each against the defaults' eps, keeps one, and writes it to the cache;
# 2. for each variant, a cached decision for it gives the same bits as that variant's switches set in the
#    environment (set_variant reads the switches as creation does);
# 3. `--tune-again` times again; a switch set in the environment removes the variants that set it; an
#    unwritable cache is reported, and the run still succeeds.
# Which variant the timing keeps is the emulator's business (its times are CPU times), not checked.
set -u
DDPM=$1 MODULE=$2 FIXTURES=$3
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
export DDPM_CUDA_MODULE="$MODULE" DDPM_TUNING_FILE="$DIR/tuning.ini" OMP_NUM_THREADS=1
VARIANTS="CONV_SPLITK=3;GN=cluster DEFER_REDUCE=1 CONV_SPLITK=3;CONV_SPLITK=2"
. "$(dirname "$0")/check_lib.sh"
sample () {   # sample OUT.npy [ddpm options]: a 2-step DDIM sample of the cifar-like fixture in fp16
  out=$1
  shift
  "$DDPM" sample -m "$FIXTURES/models/cifar-like" --device cuda --precision fp16 --sampler ddim --steps 2 --seed 5 \
    -o "$out" "$@"
}

# 1. tune: three variants timed and judged, one kept and cached
DDPM_CUDA_VARIANTS=$VARIANTS sample "$DIR/tuned.npy" --tune > "$DIR/tune.log" 2>&1
rc=$?
judged=$(grep -c "max |eps - defaults'|" "$DIR/tune.log")
kept=$(sed -n 's/^  kept: \([^(]*\) (.*/\1/p' "$DIR/tune.log" | sed 's/ *$//')
cached=$(sed -n 's/^variant=//p' "$DIR/tuning.ini" 2>/dev/null)
[ $rc -eq 0 ] && [ "$judged" -eq 3 ] && { [ "$cached" = "$kept" ] || { [ "$kept" = defaults ] && [ -z "$cached" ]; }; } \
  && grep -q '^variant=' "$DIR/tuning.ini"
check "--tune (exit $rc) judged $judged of 3 variants, kept '$kept', cached '$cached'" $? "$DIR/tune.log"
# a forced split sums in another order: the comparison must have seen a difference somewhere
grep -Eq "max \|eps - defaults'\| ([1-9]|0\.)" "$DIR/tune.log"
check "a forced K split differs from the defaults (within the bound)" $? "$DIR/tune.log"

# 2. each variant from the cache = the same switches from the environment, bit for bit
old_ifs=$IFS
IFS=';'
for v in $VARIANTS; do
  IFS=$old_ifs
  sed "s/^variant=.*/variant=$v/" "$DIR/tuning.ini" > "$DIR/t.ini" && mv "$DIR/t.ini" "$DIR/tuning.ini"
  DDPM_CUDA_VARIANTS=$VARIANTS sample "$DIR/cached.npy" --tune > "$DIR/cached.log" 2>&1 || echo "exit $?" >> "$DIR/cached.log"
  (for kv in $v; do export "DDPM_CUDA_$kv"; done; sample "$DIR/env.npy") > "$DIR/env.log" 2>&1
  ! grep -q '^exit ' "$DIR/cached.log" && grep -q "kept from the cache: $v\$" "$DIR/cached.log" && [ -s "$DIR/env.npy" ] && cmp -s "$DIR/cached.npy" "$DIR/env.npy"
  check "cached '$v' runs it: the bits of DDPM_CUDA_ switches in the environment" $? "$DIR/cached.log"
  IFS=';'
done
IFS=$old_ifs

# 3. again, the environment's precedence, an unwritable cache
DDPM_CUDA_VARIANTS=$VARIANTS sample "$DIR/again.npy" --tune-again > "$DIR/again.log" 2>&1
! grep -q "kept from the cache" "$DIR/again.log" && [ "$(grep -c "max |eps - defaults'|" "$DIR/again.log")" -eq 3 ]
check "--tune-again times the variants again" $? "$DIR/again.log"
DDPM_CUDA_CONV_SPLITK=3 DDPM_CUDA_VARIANTS="$VARIANTS;DEFER_REDUCE=1" sample "$DIR/env.npy" --tune-again \
  > "$DIR/fixed.log" 2>&1
[ "$(grep -c "max |eps - defaults'|" "$DIR/fixed.log")" -eq 1 ] && grep -q "^  DEFER_REDUCE=1 " "$DIR/fixed.log"
check "with DDPM_CUDA_CONV_SPLITK set, only the variant without it is offered" $? "$DIR/fixed.log"
DDPM_TUNING_FILE=/proc/no-such-dir/tuning.ini DDPM_CUDA_VARIANTS=CONV_SPLITK=2 sample "$DIR/env.npy" --tune \
  > "$DIR/unwritable.log" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "not kept: /proc/no-such-dir/tuning.ini cannot be written" "$DIR/unwritable.log"
check "an unwritable cache is reported (exit $rc)" $? "$DIR/unwritable.log"
exit $fail
