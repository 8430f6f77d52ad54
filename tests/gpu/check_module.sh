#!/bin/sh
# check_module.sh MODULE: static checks of libddpm-cuda.so that need no GPU (suite 'cuda-build').
#
# 1. Host code must never call exit(): nvcc compiles a host-side call of a __device__-only function (one
#    reached through a template, where it does not diagnose it) into a call of exit(1). Such a call made
#    the module's weight upload quit the program on the first real GPU run while every emulator test
#    passed (the emulator compiles everything as host code). Our own code never calls exit.
# 2. The module exports exactly the create function the loader looks up (everything else is hidden).
# 3. It carries machine code for the default gpu_archs (meson_options.txt, read by tools/gpu_archs_default.sh) and
#    PTX of the newest of them without its 'a', when cuobjdump exists; with $EXPECT_ARCHS (e.g. "90a" or "80;86;89;90a") machine code for those, and PTX
#    for $EXPECT_PTX (e.g. "90"; default none: tools/gpu_prepare.sh's CUDA_ARCHS builds have none). meson test
#    passes the configured gpu_archs and gpu_ptx.
set -u
MODULE=$1
# the cuobjdump tools/sass_chains.py finds: PATH, the toolkit's, or the wheel tools/install-deps.sh --test unpacks
CUOBJDUMP=$(python3 "$(dirname "$0")/../../tools/sass_chains.py" --which)
fail=0
calls=$(objdump -d "$MODULE" | grep -cE 'call.*<exit@plt>')
if [ "$calls" -ne 0 ]; then
  echo "FAIL: $calls call(s) of exit() in $MODULE: host code calls a __device__ function:"
  objdump -d -C "$MODULE" | awk '/^[0-9a-f]+ <.*>:$/ { fn = $0 } /call.*<exit@plt>/ { print "  in " fn }'
  fail=1
else
  echo "PASS: no exit() calls in host code"
fi
exports=$(nm -D --defined-only "$MODULE" | awk '$2 == "T" { print $3 }' | sort | tr '\n' ' ')
if [ "$exports" != "ddpm_cuda_backend_create " ]; then
  echo "FAIL: exported functions are '$exports', expected only ddpm_cuda_backend_create"
  fail=1
else
  echo "PASS: exports only ddpm_cuda_backend_create"
fi
if [ -n "$CUOBJDUMP" ]; then
  elf_list=$("$CUOBJDUMP" --list-elf "$MODULE" 2>/dev/null)
  elfs=$(echo "$elf_list" | grep -o 'sm_[0-9]*a\?' | sort -u | tr '\n' ' ')
  ptx=$("$CUOBJDUMP" --list-ptx "$MODULE" 2>/dev/null | grep -o 'sm_[0-9]*a\?' | sort -u | tr '\n' ' ')
  # "all": meson_options.txt's default list, with PTX of its newest without the 'a' (kernels/meson.build's rule)
  archs=${EXPECT_ARCHS:-all} ptx_arch=${EXPECT_PTX:-none}
  if [ "$archs" = all ]; then
    archs=$(sh "$(dirname "$0")/../../tools/gpu_archs_default.sh")
    ptx_arch=$(echo "$archs" | tr ',' '\n' | tail -n 1 | tr -d a)
  fi
  want=$(echo "$archs" | tr ';,' '  ' | sed 's/\([0-9][0-9]*\)/sm_\1/g')
  ptx_want=$(echo "$ptx_arch" | sed 's/^\([0-9][0-9]*\)$/sm_\1/')
  for sm in $want; do
    case " $elfs" in *" $sm "*) ;; *) echo "FAIL: no $sm machine code (have: $elfs)"; fail=1 ;; esac
  done
  # no more than asked for either: each architecture costs minutes of build. (nvcc's device link adds a stub
  # cubin of its own default architecture, libddpm-cuda.1.sm_75.cubin, without kernels: not counted.)
  compiled=$(echo "$elf_list" | grep -v ': libddpm-cuda\.' | grep -o 'sm_[0-9]*a\?' | sort -u)
  for sm in $compiled; do
    case " $want " in *" $sm "*) ;; *) echo "FAIL: $sm machine code, not asked for (want: $want)"; fail=1 ;; esac
  done
  if [ "$ptx_want" = none ]; then
    [ -z "$ptx" ] || { echo "FAIL: PTX $ptx, none asked for"; fail=1; }
  else
    case " $ptx" in *" $ptx_want "*) ;; *) echo "FAIL: no PTX for $ptx_want (have: $ptx)"; fail=1 ;; esac
  fi
  [ $fail -eq 0 ] && echo "PASS: machine code $elfs, PTX ${ptx:-none} (want: $want, PTX $ptx_want)"
else
  echo "SKIP: cuobjdump not found: architectures not checked"
fi
exit $fail
