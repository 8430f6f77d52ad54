#!/bin/sh
# splitk_bits_check.sh DDPM MODULE FIXTURES: the ways a split convolution's partial tiles are summed
# (a second launch, the default; the same held back so that a GroupNorm reading the output sums them itself,
# DDPM_CUDA_DEFER_REDUCE=1; inside each tile's thread-block cluster, on sm_90; the last block of each tile)
# add the same numbers in the same order, so a whole DDIM sample must come out bit for bit the same with each
# (suite gpu-emu, on the CUDA emulator). Forced K splits (3, and 16 for clusters of more than 8 blocks) make
# sure nearly every convolution of the fixture is split; the run must say which way it took.
set -u
DDPM=$1 MODULE=$2 FIXTURES=$3
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
fail=0
check () { if [ "$1" = ok ]; then echo "PASS: $2"; else echo "FAIL: $2"; fail=1; fi; }

for model in cifar-like celebahq-like; do
  for splits in 3 16; do
    ref=
    for reduce in kernel held-back cluster last-block; do
      case $reduce in
        kernel) set_reduce= ;;
        held-back) set_reduce="DDPM_CUDA_DEFER_REDUCE=1" ;;   # the next GroupNorm sums the partials
        *) set_reduce="DDPM_CUDA_CONV_REDUCE=$reduce" ;;
      esac
      out=$DIR/$model-$splits-$reduce.npy
      desc=$(env -u DDPM_CUDA_CONV -u DDPM_CUDA_CONV_TILE $set_reduce DDPM_CUDA_CONV_SPLITK=$splits \
             DDPM_CUDA_MODULE=$MODULE "$DDPM" sample -m "$FIXTURES/models/$model" --device cuda --precision fp16 \
             --sampler ddim --steps 2 --seed 7 -o "$out" 2>&1 | grep -o 'cuda: [^)]*)' | head -1)
      # =cluster must really take clusters here (the emulator is sm_90), the other two must not
      case "$desc" in *clusters*) clustered=yes ;; *) clustered=no ;; esac
      [ $reduce = cluster ] && want=yes || want=no
      sum=$(cksum < "$out" 2>/dev/null)
      [ -n "$ref" ] || ref=$sum
      [ -s "$out" ] && [ $clustered = $want ] && [ "$sum" = "$ref" ] && r=ok || r=no
      check $r "$model splits $splits $reduce: same bits as the second launch (clusters: $clustered; $desc; cksum $sum)"
    done
  done
done
exit $fail
