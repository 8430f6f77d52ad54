#!/bin/bash
# tools/gpu_prepare.sh: builds, on this (GPU-less) machine, everything tests/gpu/run.sh needs on the lent
# GPU machine, and gathers it into build-gpu/carry/ for the device tool's `carry`.
#
# Why build here: the GPU machine (Ubuntu 24.04, glibc 2.39, CUDA 13.0) has no GLib / json-glib and no
# internet. Our binaries are built against Debian 12's glibc 2.36 (older, so they run there) with the same
# nvcc 13.0, and the GLib family of shared libraries travels with them.
#
# build-gpu/carry/
#   bin/ddpm, bin/test_cuda        the CLI (bench, sample) and the GPU test program, stripped
#   lib/libddpm-cuda.so            the CUDA backend module (sm_80/86/89/90a + compute_90 PTX), stripped
#   lib/libddpm-kernel-trace.so    the in-graph kernel trace (tools/kernel_trace.c, CUPTI; run.sh stage 3b).
#                                  libcupti.so.13 itself stays behind: the GPU machine's toolkit has it
#   lib/libddpm-crash-backtrace.so a backtrace on SIGSEGV/SIGBUS/SIGFPE/SIGABRT (tools/crash_backtrace.c; run.sh
#                                  preloads it); resolve frames with addr2line against the unstripped build
#   lib/libglib-2.0.so.0 ...       what the binaries need and the GPU machine lacks (GLib, GObject, GIO,
#                                  json-glib)
#   lib-fallback/                  pcre2, ffi, gomp: used there only where the system has none
#   MANIFEST                       what was built, from which commit, and the newest glibc symbol needed
# build-gpu/carry.tar.xz: the same folder, xz-compressed (14 MB -> 2.4 MB with CUDA_ARCHS=90a), what the device
# command carries: the tracked tree alone is ~46 MB (weights, fixtures), and on 2026-11-27 tree + carry + wheels
# came to ~66 MB, past the device tool's 64 MiB. run.sh unpacks it (Python's tarfile) when the folder is absent.
# Python wheels for tools/bench_gpu.py (diffusers and importlib_metadata; PyTorch is there) go to .whl/.
#
# Usage: tools/gpu_prepare.sh            (then run the device command printed at the end)
#        CUDA_ARCHS=90a tools/gpu_prepare.sh  machine code for sm_90a (H100 / H200) only, no PTX, no line information
#                                          (H100/H200): the module shrinks from ~36 MB to under a quarter,
#                                          for when the tracked tree (~46 MB), the carry and the wheels
#                                          would pass the device tool's 64 MiB
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
CARRY=$BUILD/carry

ARCHS=(-Dgpu_archs="$(sh tools/gpu_archs_default.sh)" -Dgpu_ptx=true -Dgpu_lineinfo=true)   # meson_options.txt's defaults
[ -n "${CUDA_ARCHS:-}" ] && ARCHS=(-Dgpu_archs="$CUDA_ARCHS" -Dgpu_ptx=false -Dgpu_lineinfo=false)
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" -Dcuda=enabled -Dgimp=disabled -Dbuildtype=release "${ARCHS[@]}"
else
  meson setup --reconfigure "$BUILD" "${ARCHS[@]}" > /dev/null
fi
# Meson before 1.3 gives nvcc no depfile arguments, so ninja records no header dependencies for .cu objects
# (`ninja -t deps` says "#deps 0"): a changed .cuh would leave objects built against the old header, each
# with its own idea of struct CudaBackend. That happened at fcae280 (profile.cu read cb->profile 8 bytes
# off: every process crashed in cuda_destroy on the H100). So where the deps are missing, the CUDA objects
# are rebuilt each time (~2-3 min for one architecture).
cuda_obj=$(ls "$BUILD"/kernels/libddpm-cuda.so.p/*.cu.o 2>/dev/null | head -1 || true)   # none yet on a fresh build
# (the output whole before grep: under pipefail a `ninja | grep -q` fails when grep quits before ninja has written)
if [ -n "$cuda_obj" ] && grep -q '#deps 0' <<< "$(ninja -C "$BUILD" -t deps "${cuda_obj#$BUILD/}" 2>/dev/null)"; then
  echo "ninja has no header dependencies for the CUDA objects (meson $(meson --version)): rebuilding them"
  rm -f "$BUILD"/kernels/libddpm-cuda.so.p/*.cu.o
fi
nice ninja -C "$BUILD" cli/ddpm kernels/libddpm-cuda.so tests/gpu/test_cuda

# static checks of the module (host code calling __device__ functions compiles to exit(1), ...); with CUDA_ARCHS,
# machine code for those architectures only (since check_module.sh finds the cuobjdump wheels, e7bf366, a
# CUDA_ARCHS=90a build failed here on the missing sm_80 / sm_86 / sm_89 / PTX; they are sm_80 / sm_90a / PTX now)
EXPECT_ARCHS="${CUDA_ARCHS:-all}" sh tests/gpu/check_module.sh "$BUILD/kernels/libddpm-cuda.so"

rm -rf "$CARRY"
mkdir -p "$CARRY/bin" "$CARRY/lib"
cp "$BUILD/cli/ddpm" "$BUILD/tests/gpu/test_cuda" "$CARRY/bin/"
cp "$BUILD/kernels/libddpm-cuda.so" "$CARRY/lib/"
strip "$CARRY/bin/ddpm" "$CARRY/bin/test_cuda"
# --strip-unneeded keeps the dynamic symbol (ddpm_cuda_backend_create) and the .nv_fatbin section
strip --strip-unneeded "$CARRY/lib/libddpm-cuda.so"

# The CUPTI injection library for the in-graph kernel trace: plain C against the toolkit's CUPTI headers
# (and libstdc++ for its demangler).
# --no-as-needed keeps libcupti.so.13 in NEEDED (the driver dlopens us; nothing else would load it); no
# rpath: run.sh puts the GPU machine's CUPTI directory on LD_LIBRARY_PATH.
CUPTI=${CUDA_HOME:-/usr/local/cuda}/targets/x86_64-linux
cc -std=c11 -O2 -Wall -Wextra -shared -fPIC -I"$CUPTI/include" -o "$CARRY/lib/libddpm-kernel-trace.so" \
  tools/kernel_trace.c -L"$CUPTI/lib" -Wl,--no-as-needed -lcupti -lstdc++ -lpthread
strip --strip-unneeded "$CARRY/lib/libddpm-kernel-trace.so"

# A backtrace on a crash there (no gdb, no core files come back): run.sh preloads it into our binaries.
cc -std=c11 -O2 -Wall -Wextra -shared -fPIC -o "$CARRY/lib/libddpm-crash-backtrace.so" tools/crash_backtrace.c

# The shared libraries the GPU machine lacks: the GLib family and json-glib (lib/). OpenBLAS, libpng, zlib,
# libstdc++ and libc are there. libgomp, pcre2 and ffi normally are too, in newer versions that our binaries
# accept (and that a system OpenBLAS built with OpenMP may need): they go to lib-fallback/, which run.sh adds
# only for those the machine lacks.
mkdir -p "$CARRY/lib-fallback"
for lib in $(ldd "$CARRY"/bin/* "$CARRY"/lib/libddpm-cuda.so | awk '/=>/ { print $3 }' | sort -u); do
  case "$(basename "$lib")" in
    libglib-2.0.so*|libgobject-2.0.so*|libgio-2.0.so*|libgmodule-2.0.so*|libjson-glib-1.0.so*)
      cp -L "$lib" "$CARRY/lib/" ;;
    libpcre2-8.so*|libffi.so*|libgomp.so*)
      cp -L "$lib" "$CARRY/lib-fallback/" ;;
  esac
done

# Every binary must run on glibc 2.39: the newest versioned glibc symbol any of them needs.
newest=$(for f in "$CARRY"/bin/* "$CARRY"/lib/* "$CARRY"/lib-fallback/*; do objdump -T "$f"; done | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "nvcc: $(nvcc --version | tail -1)"
  echo "archs: ${CUDA_ARCHS:-all}"
  echo "newest glibc symbol: $newest (the GPU machine has 2.39)"
  (cd "$CARRY" && ls -l bin lib lib-fallback)
} > "$CARRY/MANIFEST"

# diffusers for the PyTorch side of the benchmark (pure-Python wheels; everything else is on that machine)
mkdir -p .whl
for w in diffusers==0.42.1 importlib_metadata; do
  name=${w%%=*}
  if ! ls .whl/"${name}"-*.whl >/dev/null 2>&1; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$w"
  fi
done

tar cJf "$CARRY.tar.xz" -C "$(dirname "$CARRY")" "$(basename "$CARRY")"

cat "$CARRY/MANIFEST"
# what the device tool sends: tracked files, untracked files git does not ignore, and the carried paths
tree_kb=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -ck 2>/dev/null | awk '$2 == "total" { n += $1 } END { print n + 0 }')
carry_kb=$(du -ck "$CARRY.tar.xz" .whl | awk '$2 == "total" { print $1 }')
echo "carry size: $(du -sh "$CARRY" | cut -f1) as a folder, $(du -sh "$CARRY.tar.xz" | cut -f1) as $CARRY.tar.xz; .whl $(du -sh .whl | cut -f1)"
echo "device transfer: tree $((tree_kb / 1024)) MiB + carry $((carry_kb / 1024)) MiB = $(((tree_kb + carry_kb) / 1024)) MiB (limit 64)"
echo
echo "Device command (from the repository root; carry [\"$CARRY.tar.xz\", \".whl\"]):"
echo "  bash tests/gpu/run.sh"
