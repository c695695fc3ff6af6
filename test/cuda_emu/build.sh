#!/usr/bin/env bash
# test/cuda_emu/build.sh — builds the host CUDA emulator test binary (see README.md).
#
#   bash test/cuda_emu/build.sh [OUT_DIR]      (or EMU_OUT=OUT_DIR)
#
# Compiles cuda/matmul.cu, cuda/attention_fwd.cu and cuda/attention_bwd.cu with g++ against the emulator
# (emu_core.h force-included, shim/ in place of cuda/mma.cuh and cuda/launch.cuh), plus the CPU
# reference kernels from cpp/, into OUT_DIR/test. Without OUT_DIR a fresh directory under ${TMPDIR:-/tmp}
# is made; build outputs never go inside the repository. The last line printed is the binary's path.
# Env: see common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
emu_setup "${1:-${EMU_OUT:-}}"

# The CPU reference kernels as one AVX2 build: LLAVA_PORTABLE_ONLY leaves out the run-time ISA dispatch
# (cpp/cpu_isa.h), so these few files link without the avx2/avx512 libraries of the addon.
CPU_FLAGS=(-std=c++17 -O2 -mavx2 -mfma -mf16c -DLLAVA_PORTABLE_ONLY -pthread -I"$ROOT/cpp")

# Longest compiles first.
for f in attention_bwd attention_fwd matmul matmul_sm90; do
  emu_job "cuda/$f.cu" "$OBJ/$f.o" "$SRC/$f.cu" "$CXX" "${EMU_FLAGS[@]}" "${SAN_FLAGS[@]}" -include "$HERE/emu_core.h" -x c++ -c "$SRC/$f.cu" -o "$OBJ/$f.o"
done
for f in cpu_attention cpu_matmul registry cpu_backend cpu_isa; do
  if stale "$OBJ/$f.o" "$ROOT/cpp/$f.cc"; then
    job "cpp/$f.cc" "$CXX" "${CPU_FLAGS[@]}" -c "$ROOT/cpp/$f.cc" -o "$OBJ/$f.o"
  fi
done
for f in test_main test_nan emu racecheck emu_backend; do
  emu_job "$f.cc" "$OBJ/$f.o" "$HERE/$f.cc" "$CXX" "${EMU_FLAGS[@]}" -include "$HERE/emu_core.h" -c "$HERE/$f.cc" -o "$OBJ/$f.o"
done
emu_wait

OBJS=()
for f in matmul matmul_sm90 attention_fwd attention_bwd emu racecheck emu_backend test_main test_nan registry cpu_backend cpu_isa cpu_matmul cpu_attention; do
  OBJS+=("$OBJ/$f.o")
done
"$CXX" -pthread -rdynamic -fsanitize=undefined "${OBJS[@]}" -o "$OUT/test" -ldl
echo "$OUT/test"
