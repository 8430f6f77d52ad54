#!/bin/sh
# time_table_check.sh DDPM MODULE FIXTURES: the time table (engine/unet.h ddpm_unet_prepare_timesteps) against
# the chain it replaces. Each forward either gathers its time projections from the table (the default on CUDA)
# or computes them (sinusoid, two linears, the stacked projection; DDPM_CUDA_TIME_TABLE=0). The table's rows
# are those four ops run on all the sample's timesteps at once, so a whole DDIM sample must come out bit for
# bit the same both ways, in each precision (suite gpu-emu, on the CUDA emulator). The emulator's kernel count
# proves which way ran: the table takes 4 launches once (its rows) and saves 3 per forward.
set -u
DDPM=$1 MODULE=$2 FIXTURES=$3
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
STEPS=4
fail=0
# every precision on one fixture, fp16 on the other (the CI's time)
for model in cifar-like celebahq-like; do
  precisions="fp32 fp16 bf16"
  [ $model = celebahq-like ] && precisions=fp16
  for precision in $precisions; do
    for table in 1 0; do
      DDPM_CUDA_TIME_TABLE=$table DDPM_CUDA_EMU_LAUNCHES=1 DDPM_CUDA_MODULE=$MODULE "$DDPM" sample \
        -m "$FIXTURES/models/$model" --device cuda --precision $precision --sampler ddim --steps $STEPS --seed 11 \
        -o "$DIR/$table.npy" > "$DIR/$table.log" 2>&1
      eval "runs_$table=\$(sed -n 's/^cuda emulator: \([0-9]*\) kernel runs.*/\1/p' \"\$DIR/\$table.log\")"
    done
    # shellcheck disable=SC2154
    saved=$((${runs_0:-0} - ${runs_1:-0}))
    if [ -s "$DIR/1.npy" ] && cmp -s "$DIR/1.npy" "$DIR/0.npy" && [ "$saved" -eq $((3 * STEPS - 4)) ]; then
      echo "PASS: $model $precision: the table gives the chain's bits, $saved kernel runs fewer in $STEPS steps"
    else
      echo "FAIL: $model $precision: same bits: $(cmp -s "$DIR/1.npy" "$DIR/0.npy" && echo yes || echo no);" \
           "kernel runs $runs_1 with the table, $runs_0 without (want $((3 * STEPS - 4)) fewer)"
      tail -3 "$DIR/1.log" "$DIR/0.log"
      fail=1
    fi
  done
done
exit $fail
