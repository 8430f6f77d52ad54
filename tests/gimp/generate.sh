#!/usr/bin/env bash
# generate.sh PLUGIN REPO OUT.png: the main job. Installs the built plug-in for the current user
# (~/.config/GIMP/3.0/plug-ins/gimp-ddpm/) and the shipped models (~/.local/share/gimp-ddpm/models/),
# then runs Filters > Diffusion > Generate through gimp-console-3.0 in batch mode on the default model
# and saves the result as OUT.png. Environment: GENERATE_MODEL (default emoji-32), GENERATE_SAMPLER
# (default ddpm), GENERATE_STEPS (default 250), GENERATE_SEED (default 7).
set -euo pipefail
plugin=$1 repo=$2 out=$3
gimpdir=${GIMP3_DIRECTORY:-$HOME/.config/GIMP/3.0}
install -D -m 755 "$plugin" "$gimpdir/plug-ins/gimp-ddpm/gimp-ddpm"
models=$HOME/.local/share/gimp-ddpm/models
mkdir -p "$models"
for m in "$repo"/weights/*/; do
  [ -f "$m/config.json" ] || [ -f "$m/unet/config.json" ] || continue
  rm -rf "$models/$(basename "$m")" && cp -r "$m" "$models/"
done
mkdir -p "$(dirname "$out")"
model=${GENERATE_MODEL:-emoji-32}
echo "generate.sh: Generate with $model (${GENERATE_SAMPLER:-ddpm}, ${GENERATE_STEPS:-250} steps, seed ${GENERATE_SEED:-7}) in gimp-console-3.0"
gimp-console-3.0 -i -n -c --batch-interpreter=plug-in-script-fu-eval -b "
  (let* ((r (plug-in-ddpm-generate #:run-mode RUN-NONINTERACTIVE #:model \"$model\"
                                   #:sampler \"${GENERATE_SAMPLER:-ddpm}\" #:steps ${GENERATE_STEPS:-250}
                                   #:seed ${GENERATE_SEED:-7} #:variations 1))
         (image (car r)))
    (gimp-file-save RUN-NONINTERACTIVE image \"$out\" #f))" --quit
[ -s "$out" ] || { echo "generate.sh: GIMP wrote no $out" >&2; exit 1; }
