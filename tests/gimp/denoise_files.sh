#!/usr/bin/env bash
# denoise_files.sh PLUGIN REPO DIR: Filters > Diffusion > Denoise Selection, mode already-noisy, through
# gimp-console-3.0 in batch mode on every DIR/NAME_sSIGMA_noisy.png (no selection: the whole layer), with
# the sigma in the name; writes DIR/NAME_sSIGMA_gimp.png. For tools/train/eval_photo.py --via-gimp: the
# plug-in's own path (tiling, padding, pixel conversion) rather than the CLI's.
# Environment: DENOISE_MODEL (default: the procedure's default, photo-64), DENOISE_STEPS (default 100),
# DENOISE_ENSEMBLE (default 1), DENOISE_SAMPLER (default: the procedure's, ddim).
set -euo pipefail
plugin=$1 repo=$2 dir=$3
. "$(dirname "$0")/install_user.sh"
install_plugin_and_models "$plugin" "$repo"
extra=""
[ -n "${DENOISE_MODEL:-}" ] && extra+=" #:model \"$DENOISE_MODEL\""
[ -n "${DENOISE_SAMPLER:-}" ] && extra+=" #:sampler \"$DENOISE_SAMPLER\""
calls=""
n=0
for f in "$dir"/*_s*_noisy.png; do
  [ -e "$f" ] || continue
  sigma=$(basename "$f" | sed -n 's/.*_s\([0-9.]*\)_noisy\.png$/\1/p')
  [ -n "$sigma" ] || continue
  [[ $sigma == *.* ]] || sigma+=.0
  out=${f%_noisy.png}_gimp.png
  calls+="
  (let* ((img (car (gimp-file-load RUN-NONINTERACTIVE \"$f\"))))
    (plug-in-ddpm-denoise #:run-mode RUN-NONINTERACTIVE #:image img
                          #:drawables (vector (vector-ref (car (gimp-image-get-layers img)) 0))
                          #:mode \"already-noisy\" #:sigma $sigma #:steps ${DENOISE_STEPS:-100}
                          #:ensemble ${DENOISE_ENSEMBLE:-1} #:seed 0$extra)
    (gimp-file-save RUN-NONINTERACTIVE img \"$out\" #f)
    (gimp-image-delete img))"
  n=$((n + 1))
done
[ $n -gt 0 ] || { echo "denoise_files.sh: no *_sSIGMA_noisy.png in $dir" >&2; exit 1; }
echo "denoise_files.sh: $n pictures through Denoise Selection (already-noisy) in gimp-console-3.0"
gimp-console-3.0 -i -n -c --batch-interpreter=plug-in-script-fu-eval -b "(begin $calls)" --quit
