#!/usr/bin/env bash
# generate.sh PLUGIN REPO OUT.png: the main job. Installs the built plug-in and the shipped models for the
# current user (install_user.sh), then runs Filters > Diffusion > Generate through gimp-console-3.0 in batch
# mode on the default model and saves the result as OUT.png. Environment: GENERATE_MODEL (default emoji-32), GENERATE_SAMPLER
# (default ddpm), GENERATE_STEPS (default 250), GENERATE_SEED (default 7).
set -euo pipefail
plugin=$1 repo=$2 out=$3
. "$(dirname "$0")/install_user.sh"
install_plugin_and_models "$plugin" "$repo"
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
