#!/usr/bin/env bash
# install_user.sh PLUGIN REPO: installs the built plug-in for the current user
# (~/.config/GIMP/3.0/plug-ins/gimp-ddpm/, or $GIMP3_DIRECTORY) and the shipped models of REPO/weights
# (~/.local/share/gimp-ddpm/models/), as a user who copies them by hand would. Sourced or run.
set -euo pipefail
install_plugin_and_models () {
  local plugin=$1 repo=$2
  local gimpdir=${GIMP3_DIRECTORY:-$HOME/.config/GIMP/3.0}
  install -D -m 755 "$plugin" "$gimpdir/plug-ins/gimp-ddpm/gimp-ddpm"
  local models=$HOME/.local/share/gimp-ddpm/models m
  mkdir -p "$models"
  for m in "$repo"/weights/*/; do
    [ -f "$m/config.json" ] || [ -f "$m/unet/config.json" ] || continue
    rm -rf "$models/$(basename "$m")" && cp -r "$m" "$models/"
  done
}
if [ "${BASH_SOURCE[0]}" = "$0" ]; then install_plugin_and_models "$@"; fi
