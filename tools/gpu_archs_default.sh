#!/bin/sh
# gpu_archs_default.sh: meson_options.txt's default gpu_archs, comma-separated ("80,90a"), for the scripts that
# build or check the CUDA module outside meson (tools/gpu_prepare.sh, tests/gpu/check_module.sh): one list to edit.
sed -n "/option('gpu_archs'/ s/.*value : \[\([^]]*\)\].*/\1/p" "$(dirname "$0")/../meson_options.txt" | tr -d "' "
