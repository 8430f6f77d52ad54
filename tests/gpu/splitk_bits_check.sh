#!/bin/sh
# splitk_bits_check.sh DDPM MODULE FIXTURES: the ways a split convolution's partial tiles are summed
# (a second launch, the default; the same held back so that a GroupNorm reading the output sums them itself,
# DDPM_CUDA_DEFER_REDUCE=1; inside each tile's thread-block cluster, on sm_90; the last block of each tile)
# add the same numbers in the same order, so a whole DDIM sample must come out bit for bit the same with each
# (suite gpu-emu, on the CUDA emulator). Forced K splits (3, and 16 for clusters of more than 8 blocks) make
# sure nearly every convolution of the fixture is split; the run must say which way it took. Then the same
# for GroupNorm over thread-block clusters (DDPM_CUDA_GN=cluster, 2 blocks per group wherever that fits):
# its statistics differ from one block's in the last bits, so it has its own reference (the second launch),
# which the held-back sums, now read by clusters of GroupNorm blocks, must match.
set -u
DDPM=$1 MODULE=$2 FIXTURES=$3
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
fail=0
check () { if [ "$1" = ok ]; then echo "PASS: $2"; else echo "FAIL: $2"; fail=1; fi; }
# sample MODEL OUT SETTING...: a 2-step DDIM sample of a fixture into OUT with these settings (none of the
# caller's conv or GroupNorm choices); its messages, the backend's description among them, on stdout
sample () {
  model=$1 out=$2
  shift 2
  env -u DDPM_CUDA_CONV -u DDPM_CUDA_CONV_TILE -u DDPM_CUDA_GN "$@" DDPM_CUDA_MODULE=$MODULE "$DDPM" sample \
    -m "$FIXTURES/models/$model" --device cuda --precision fp16 --sampler ddim --steps 2 --seed 7 -o "$out" 2>&1
}

for model in cifar-like celebahq-like; do
  for splits in 3 16; do
    for gn in blocks clusters; do
      ref=
      [ $gn = blocks ] && reduces="kernel held-back cluster last-block" set_gn= \
        || reduces="kernel held-back" set_gn="DDPM_CUDA_GN=cluster DDPM_CUDA_GN_CLUSTER=2"
      for reduce in $reduces; do
        case $reduce in
          kernel) set_reduce= ;;
          held-back) set_reduce="DDPM_CUDA_DEFER_REDUCE=1" ;;   # the next GroupNorm sums the partials
          *) set_reduce="DDPM_CUDA_CONV_REDUCE=$reduce" ;;
        esac
        out=$DIR/$model-$splits-$gn-$reduce.npy
        desc=$(sample $model "$out" $set_reduce $set_gn DDPM_CUDA_CONV_SPLITK=$splits | grep -o 'cuda: [^)]*)' | head -1)
        # =cluster must really take conv clusters here (the emulator is sm_90), the others must not; GroupNorm
        # clusters where asked for
        case "$desc" in *", clusters of"*) clustered=yes ;; *) clustered=no ;; esac
        case "$desc" in *"GroupNorm clusters"*) gn_clustered=clusters ;; *) gn_clustered=blocks ;; esac
        [ $reduce = cluster ] && want=yes || want=no
        sum=$(cksum < "$out" 2>/dev/null)
        [ -n "$ref" ] || ref=$sum
        [ -s "$out" ] && [ $clustered = $want ] && [ $gn_clustered = $gn ] && [ "$sum" = "$ref" ] && r=ok || r=no
        check $r "$model splits $splits GroupNorm $gn, $reduce: same bits as the second launch (conv clusters: $clustered; $desc; cksum $sum)"
      done
    done
  done
done

# The wgmma tile's K split (DDPM_CUDA_CONV_TILE=wgmma: the fixtures' 64-channel concatenations, split in 3): its
# partials go to the two 64-pixel halves' tiles and are summed like the others', so a second launch and the
# held-back sums give the same bits (with clusters or the last block's sum that tile runs unsplit).
for model in cifar-like celebahq-like; do
  ref=
  for reduce in kernel held-back; do
    [ $reduce = kernel ] && set_reduce= || set_reduce="DDPM_CUDA_DEFER_REDUCE=1"
    out=$DIR/$model-wgmma-$reduce.npy
    sample $model "$out" $set_reduce DDPM_CUDA_CONV_TILE=wgmma DDPM_CUDA_CONV_SPLITK=3 > /dev/null
    sum=$(cksum < "$out" 2>/dev/null)
    [ -n "$ref" ] || ref=$sum
    [ -s "$out" ] && [ "$sum" = "$ref" ] && r=ok || r=no
    check $r "$model wgmma tile split 3, $reduce: same bits as the second launch (cksum $sum)"
  done
done
exit $fail
