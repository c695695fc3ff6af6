#!/usr/bin/env bash
# test/cuda_emu/build.sh — builds the host CUDA emulator test binary (see README.md).
#
#   bash test/cuda_emu/build.sh [OUT_DIR]      (or EMU_OUT=OUT_DIR)
#
# Compiles cuda/gemm.cu, cuda/flash_attn_fwd.cu and cuda/flash_attn_bwd.cu with g++ against the emulator
# (emu_core.h force-included, shim/gemm_mma.cuh in place of cuda/gemm_mma.cuh), plus the CPU reference
# kernels from cpp/, into OUT_DIR/test. Without OUT_DIR a fresh directory under ${TMPDIR:-/tmp} is made;
# build outputs never go inside the repository. The last line printed is the path of the binary.
# Env: EMU_JOBS (parallel compiles, 1 or 2; default 2), OPT (default -O1), CXX (default g++),
#      CUDA_INC (default /usr/local/cuda/include: only the headers are needed, no GPU, no nvcc),
#      SKIP_COPY=1 (reuse OUT_DIR/src as is; mutate.sh edits a kernel there first).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-${EMU_OUT:-}}
if [ -z "$OUT" ]; then
  OUT=$(mktemp -d "${TMPDIR:-/tmp}/cuda_emu.XXXXXX")
fi
OUT=$(realpath -m "$OUT")
case "$OUT/" in
  "$ROOT"/*) echo "build.sh: output dir $OUT is inside the repository; pick one outside it" >&2; exit 2 ;;
esac
mkdir -p "$OUT"

CXX=${CXX:-g++}
CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
OPT=${OPT:--O1}
JOBS=${EMU_JOBS:-2}
if ! [[ "$JOBS" =~ ^[0-9]+$ ]] || [ "$JOBS" -lt 1 ]; then JOBS=1; fi
if [ "$JOBS" -gt 2 ]; then JOBS=2; fi

command -v "$CXX" >/dev/null || { echo "build.sh: $CXX not found" >&2; exit 2; }
[ -f "$CUDA_INC/cuda_bf16.h" ] || { echo "build.sh: $CUDA_INC/cuda_bf16.h not found (set CUDA_INC)" >&2; exit 2; }

SRC=$OUT/src
OBJ=$OUT/obj
mkdir -p "$SRC" "$OBJ"
# The kernel sources are copied next to each other WITHOUT cuda/gemm_mma.cuh, so that their
# `#include "gemm_mma.cuh"` (searched first in the including file's directory) falls through to
# -I shim and picks up the emulated PTX wrappers; cuda_common.cuh is the real one.
if [ -z "${SKIP_COPY:-}" ]; then
  for f in gemm.cu flash_attn_fwd.cu flash_attn_bwd.cu flash_attn_common.cuh cuda_common.cuh; do
    cp "$ROOT/cuda/$f" "$SRC/"
  done
fi
rm -f "$SRC/gemm_mma.cuh" "$SRC/backend.cu"

FLAGS=(-std=c++17 "$OPT" -g -mavx2 -mfma -mf16c -Wno-attributes -I"$HERE/shim" -I"$SRC" -I"$ROOT/cpp" -I"$CUDA_INC")
CPU_FLAGS=(-std=c++17 -O2 -mavx2 -mfma -mf16c -pthread -I"$ROOT/cpp")

# A tiny job pool: at most $JOBS compiles at a time; any failure fails the build (after the rest finish).
running=0
failed=0
reap() {
  if wait -n; then :; else failed=1; fi
  running=$((running - 1))
}
job() {
  while [ "$running" -ge "$JOBS" ]; do reap; done
  echo "  CXX $1" >&2
  shift
  "$@" &
  running=$((running + 1))
}

# Longest compiles first.
for f in flash_attn_bwd flash_attn_fwd gemm; do
  job "cuda/$f.cu" "$CXX" "${FLAGS[@]}" -include "$HERE/emu_core.h" -x c++ -c "$SRC/$f.cu" -o "$OBJ/$f.o"
done
for f in cpu_attention cpu_matmul registry cpu_backend; do
  # CPU reference kernels: rebuilt only when the source is newer (an OUT_DIR can be reused).
  if [ ! "$OBJ/$f.o" -nt "$ROOT/cpp/$f.cc" ]; then
    job "cpp/$f.cc" "$CXX" "${CPU_FLAGS[@]}" -c "$ROOT/cpp/$f.cc" -o "$OBJ/$f.o"
  fi
done
job "test_main.cc" "$CXX" "${FLAGS[@]}" -c "$HERE/test_main.cc" -o "$OBJ/test_main.o"
job "emu.cc" "$CXX" "${FLAGS[@]}" -include "$HERE/emu_core.h" -c "$HERE/emu.cc" -o "$OBJ/emu.o"
while [ "$running" -gt 0 ]; do reap; done
if [ "$failed" -ne 0 ]; then
  echo "build.sh: compilation failed" >&2
  exit 1
fi

OBJS=()
for f in gemm flash_attn_fwd flash_attn_bwd emu test_main registry cpu_backend cpu_matmul cpu_attention; do
  OBJS+=("$OBJ/$f.o")
done
"$CXX" -pthread -rdynamic -fsanitize=undefined "${OBJS[@]}" -o "$OUT/test" -ldl
echo "$OUT/test"
