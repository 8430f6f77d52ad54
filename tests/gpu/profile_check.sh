#!/bin/sh
# profile_check.sh DDPM MODULE FIXTURES: $DDPM_CUDA_PROFILE end to end on the CUDA emulator (suite gpu-emu).
# `ddpm bench` with the profiler must still give its result line, and the table on stderr must count what
# the model has: one conv kernel launch per 4-dimensional weight in its safetensors header, plus one per
# attention block (its QKV projection) and one per out projection outside the attention core (each followed by
# an attention_out pass), which run as 1x1 convolutions, per round (one forward), over the timed rounds after
# the cold one; and the launches the fusions removed must stay gone.
set -u
DDPM=$1 MODULE=$2 FIXTURES=$3
MODEL=$FIXTURES/models/cifar-like
ERR=$(mktemp) OUT=$(mktemp)
trap 'rm -f "$ERR" "$OUT"' EXIT
fail=0
check () { if [ "$1" = ok ]; then echo "PASS: $2"; else echo "FAIL: $2"; fail=1; fi; }

env -u DDPM_CUDA_CONV -u DDPM_CUDA_CONV_TILE -u DDPM_CUDA_CONV_SPLITK -u DDPM_CUDA_ATTN -u DDPM_CUDA_ATTN_OUT -u DDPM_CUDA_PROJ \
  DDPM_CUDA_MODULE=$MODULE DDPM_CUDA_PROFILE=1 "$DDPM" bench --model "$MODEL" --device cuda --precision fp16 \
  --warmup 1 --iters 3 --quiet > "$OUT" 2> "$ERR"
rc=$?
[ $rc -eq 0 ] && grep -q '^bench .*median_ms=' "$OUT" && r=ok || r=no
check $r "bench with DDPM_CUDA_PROFILE=1 exits 0 with its result line (exit $rc)"
grep -q '3 rounds after 1 cold one' "$ERR" && r=ok || r=no
check $r "profile header: 3 timed rounds after the cold one"
count () { awk -v k="$1" '$1 == k { n += $2 } END { printf "%g", n }' "$ERR"; }
header=$(head -c 65536 "$MODEL/diffusion_pytorch_model.safetensors")
convs=$(echo "$header" | grep -ao '"shape":\[[0-9]*,[0-9]*,[0-9]*,[0-9]*\]' | wc -l)
attns=$(echo "$header" | grep -ao '"[^"]*to_q\.weight"' | wc -l)
outs=$(count attention_out)
profiled=$(awk '$1 ~ /^conv_((implicit|nhwc|pointwise)_[0-9]+|nhwc_mma|direct)$/ { n += $2 } END { printf "%g", n }' "$ERR")
[ "$convs" -gt 0 ] && [ "$attns" -gt 0 ] && [ "$profiled" = $((convs + attns + outs)) ] && r=ok || r=no
check $r "conv launches per round: profile $profiled, model $convs conv weights + $attns QKV projections + $outs out projections"
# the projections are convolutions, not GEMMs: cuBLAS only for the mid block's scores and P V (its 4 tokens
# are too few for the fused cores), so batch-1 sampling of a model without such a block never loads it
gemms=$(count cublas_gemm)
[ "$gemms" = 2 ] && r=ok || r=no
check $r "cuBLAS launches per round: $gemms, expected 2 (the mid block's scores and P V)"
# the fusions: all resnets' time projections gathered from the time table in one launch (no time MLP or
# projection per forward), and no separate channel-bias or residual passes (they ride in the convolutions'
# epilogues)
linears=$(count linear) gathers=$(count gather_rows) sinusoids=$(count timestep_embedding)
[ "$linears" = 0 ] && [ "$gathers" = 1 ] && [ "$sinusoids" = 0 ] && r=ok || r=no
check $r "time projections per round: gather_rows $gathers, linear $linears, timestep_embedding $sinusoids (expected 1, 0, 0)"
# without the table: the time MLP's two linears and the stacked projections' one, after the sinusoid
env -u DDPM_CUDA_CONV -u DDPM_CUDA_CONV_TILE -u DDPM_CUDA_CONV_SPLITK -u DDPM_CUDA_ATTN -u DDPM_CUDA_ATTN_OUT -u DDPM_CUDA_PROJ \
  DDPM_CUDA_MODULE=$MODULE DDPM_CUDA_PROFILE=1 DDPM_CUDA_TIME_TABLE=0 "$DDPM" bench --model "$MODEL" --device cuda \
  --precision fp16 --warmup 1 --iters 3 --quiet > /dev/null 2> "$ERR.chain"
chain () { awk -v k="$1" '$1 == k { n += $2 } END { printf "%g", n }' "$ERR.chain"; }
[ "$(chain linear)" = 3 ] && [ "$(chain timestep_embedding)" = 1 ] && [ "$(chain gather_rows)" = 0 ] && r=ok || r=no
check $r "DDPM_CUDA_TIME_TABLE=0: linear $(chain linear), timestep_embedding $(chain timestep_embedding), gather_rows $(chain gather_rows) per round (expected 3, 1, 0)"
rm -f "$ERR.chain"
grep -Eq '^  (add_channel_bias|add_scaled) ' "$ERR" && r=no || r=ok
check $r "no add_channel_bias / add_scaled launches (fused into the conv epilogues)"
# conv_in reads the float32 sample and conv_out writes float32 eps themselves (conv2d_f32_ends)
grep -Eq '^  (cast_in|cast_out) ' "$ERR" && r=no || r=ok
check $r "no cast_in / cast_out launches (inside conv_in and conv_out)"
# attention: the fixture has 5 attention blocks at 8x8 (64 tokens: AttnDownBlock2D x 2 layers, AttnUpBlock2D x 3)
# and the mid block's at 2x2 (4 tokens, not a multiple of 16: the cuBLAS core). The 5 take flash_attention.cu's
# core with the biases and the out projection inside: one launch each, and no bias or out pass of their own.
fa=$(count flash_attention_mma) qb=$(count qkv_bias)
[ "$fa" = 5 ] && [ "$qb" = 1 ] && [ "$outs" = 1 ] && r=ok || r=no
check $r "attention launches per round: flash_attention_mma $fa, qkv_bias $qb, attention_out $outs (expected 5, 1, 1)"
kernels=$(awk '/ms in kernels/ { for (i = 1; i <= NF; i++) if ($i == "in" && $(i + 1) == "kernels,") print $(i - 2) }' "$ERR")
span=$(awk '/ms in kernels/ { for (i = 1; i <= NF; i++) if ($i == "first") print $(i - 4) }' "$ERR")
awk -v k="$kernels" -v s="$span" 'BEGIN { exit !(k + 0 > 0 && s + 0 >= k + 0) }' && r=ok || r=no
check $r "kernel time per round $kernels ms > 0 and <= first-to-last span $span ms"
[ $fail -ne 0 ] && cat "$ERR"
exit $fail
