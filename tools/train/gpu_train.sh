#!/usr/bin/env bash
# gpu_train.sh MINUTES [emoji|photo]: trains the emoji-32 model (arch emoji-base, 6.8M parameters) on the GPU machine for
# MINUTES of training-loop wall time and writes the diffusers folder + loss curve to $OUT/emoji-32/:
# config.json, diffusion_pytorch_model.safetensors (fp16 EMA, ~13 MiB < the 16 MiB per-file limit),
# scheduler_config.json, gimp_ddpm.json, loss_curve.csv, training_summary.json: 6 files of the 8 that a
# device run brings back. TRAIN_PACK=tar instead writes them as ONE file, $OUT/emoji-32.tar (~13 MiB),
# leaving 7 files for other tests in the same run. Write MODEL_CARD.md afterwards, on the CPU machine:
#   python3 tools/train/write_model_card.py --model weights/emoji-32 --fallback no
#
# Run from the repository root. Needs, carried into the run (both git-ignored via .git/info/exclude):
#   .whl/diffusers-0.42.1-py3-none-any.whl   (the GPU image has torch, huggingface_hub 1.33, safetensors
#                                            0.8, numpy, Pillow, regex, requests, filelock: diffusers only)
#   .train-data/emoji32.npz                  (tools/train/build_emoji_dataset.py output)
# Environment:
#   TRAIN_DEVICE=cpu   rehearse on a CPU (default cuda); TRAIN_BATCH, TRAIN_LR, TRAIN_EMA override defaults
#   TRAIN_DATA=path    dataset (default .train-data/emoji32.npz or photo64.npz)
#   TRAIN_EVAL_COUNT=N held-out images in the EMA eval (default 256)
#   TRAIN_PREDICTION=v_prediction  train the v target instead of eps (scheduler_config.json says so)
#   OUT=dir            output root (the device tool sets it; default /tmp/gpu-train-out)
#   TRAIN_PACK=tar     one tar file instead of the folder (see above)
# `gpu_train.sh MINUTES photo` trains the photo denoising prior instead (arch photo-64, RGB 64x64, dataset
# .train-data/photo64.npz from build_photo_dataset.py, 29 MB) into $OUT/photo-64/ (fp16 14.4 MiB).
set -euo pipefail

minutes="${1:?usage: tools/train/gpu_train.sh MINUTES [emoji|photo]}"
model="${2:-emoji}"
case "$model" in
  # name, dataset, arch, batch, lr, extra train.py flags
  emoji) name=emoji-32; def_data=.train-data/emoji32.npz; arch=emoji-base; def_batch=256; def_lr=4e-4; extra=() ;;
  photo) name=photo-64; def_data=.train-data/photo64.npz; arch=photo-64;   def_batch=128; def_lr=2e-4; extra=(--dihedral) ;;
  *) echo "gpu_train.sh: model must be emoji or photo, not '$model'" >&2; exit 2 ;;
esac
out_root="${OUT:-/tmp/gpu-train-out}"
data="${TRAIN_DATA:-$def_data}"
device="${TRAIN_DEVICE:-cuda}"
work="${TRAIN_WORK:-/tmp/gpu-train-work}"
py="${PYTHON:-python3}"

[ -f "$data" ] || { echo "gpu_train.sh: no dataset at $data (carry .train-data)" >&2; exit 2; }

# diffusers is not in the GPU image: install the carried wheel into a private target, without deps.
if ! "$py" -c "import diffusers" 2>/dev/null; then
  whl=$(ls .whl/diffusers-*.whl 2>/dev/null | head -n 1 || true)
  [ -n "$whl" ] || { echo "gpu_train.sh: diffusers missing and no .whl/diffusers-*.whl (carry .whl)" >&2; exit 2; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/train-site "$whl"
  export PYTHONPATH="/tmp/train-site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; fi

mkdir -p "$out_root/$name" "$work"
export PYTHONUNBUFFERED=1
# emoji: batch 256 at lr 4e-4, photo: batch 128 at 2e-4 with random flips/rotations; cosine decay over
# the budget; EMA 0.999 (a ~1000-step horizon: a few-minute run makes thousands of steps). Eval of the EMA
# on 256 held-out images every 2 minutes and at the end.
"$py" tools/train/train.py \
  --data "$data" --arch "$arch" --device "$device" "${extra[@]}" \
  --batch-size "${TRAIN_BATCH:-$def_batch}" --lr "${TRAIN_LR:-$def_lr}" --lr-final-frac 0.1 --warmup-steps 300 \
  --ema-decay "${TRAIN_EMA:-0.999}" --dropout 0.1 --prediction "${TRAIN_PREDICTION:-epsilon}" --eval-count "${TRAIN_EVAL_COUNT:-256}" \
  --time-budget-minutes "$minutes" --ckpt-minutes 2 --log-every 100 --print-every-s 20 \
  --out "$out_root/$name" --work-dir "$work/$name" 2>&1 | tee "$work/$name.log"

ls -la "$out_root/$name"
if [ "${TRAIN_PACK:-dir}" = tar ]; then
  tar -C "$out_root" -cf "$out_root/$name.tar" "$name" && rm -rf "$out_root/$name"
  ls -la "$out_root/$name.tar"
fi
