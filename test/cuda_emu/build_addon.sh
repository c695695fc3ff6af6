#!/usr/bin/env bash
# test/cuda_emu/build_addon.sh — builds the whole native addon with its CUDA backend running under the
# host emulator (see README.md, "The emulated addon"): OUT_DIR/llava_native.node.
#
#   bash test/cuda_emu/build_addon.sh [OUT_DIR]
#   LLAVA_NATIVE=OUT_DIR/llava_native.node node ...    # L.cuda.isAvailable() is true; 'cuda' is emulated
#
# Every cuda/*.cu (the real backend.cu included) is compiled by g++ against the emulator, runtime.cc
# stands in for the CUDA runtime library, and cpp/*.cc are compiled as node-gyp would. The CPU objects
# are reused from an earlier build in the same OUT_DIR when their sources are older. Needs the Node
# headers (node-gyp's nodedir, /usr/include/node by default; set NODE_INC) and node-addon-api.
# Env: NODE_INC, and see common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
emu_setup "${1:-${EMU_OUT:-}}"

NODE_INC=${NODE_INC:-/usr/include/node}
[ -f "$NODE_INC/node_api.h" ] || { echo "$ME: $NODE_INC/node_api.h not found (set NODE_INC)" >&2; exit 2; }
NAPI_INC=$(cd "$ROOT" && node -p "require('node-addon-api').include_dir")
NAPI_INC=$(cd "$ROOT" && realpath "$NAPI_INC")

ADDON_DEFS=(-DNAPI_VERSION=8 -DNODE_ADDON_API_DISABLE_DEPRECATED -fPIC -fexceptions -pthread)
CPU_FLAGS=(-std=c++17 -O2 -fno-math-errno "${ADDON_DEFS[@]}" -I"$NODE_INC" -I"$NAPI_INC" -I"$ROOT/cpp")
# The ISA sets of scripts/sources.js with their flags (as binding.gyp builds them), into one archive.
AVX2_FLAGS=(-DLLAVA_ISA_BUILD=1 -mavx2 -mfma -mf16c)
AVX512_FLAGS=(-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c)

# Every cuda/*.cu of scripts/sources.js, the longest compiles first.
CU=(attention_bwd attention_fwd matmul)
while read -r rel; do
  f=$(basename "$rel" .cu)
  [[ " ${CU[*]} " == *" $f "* ]] || CU+=("$f")
done < <(cd "$ROOT" && node scripts/sources.js cuda)
for f in "${CU[@]}"; do
  emu_job "cuda/$f.cu" "$OBJ/$f.o" "$SRC/$f.cu" "$CXX" "${EMU_FLAGS[@]}" "${SAN_FLAGS[@]}" -fPIC -include "$HERE/emu_core.h" -x c++ -c "$SRC/$f.cu" -o "$OBJ/$f.o"
done
CPP=()
while read -r rel; do
  f=$(basename "$rel" .cc)
  CPP+=("$f")
  # dist_nccl.cc is built as in a CUDA build (its NCCL calls go to the stand-in test/dist/fake_nccl.cc).
  EXTRA=()
  if [ "$f" = dist_nccl ]; then EXTRA=(-DLLAVA_WITH_CUDA=1 -I"$CUDA_INC"); fi
  if stale "$OBJ/cpu_$f.o" "$ROOT/$rel"; then
    job "$rel" "$CXX" "${CPU_FLAGS[@]}" "${EXTRA[@]}" -c "$ROOT/$rel" -o "$OBJ/cpu_$f.o"
  fi
done < <(cd "$ROOT" && node scripts/sources.js cpp)
ISA=()
for level in avx2 avx512; do
  while read -r rel; do
    f=$(basename "$rel" .cc)
    ISA+=("isa_${level}_$f")
    flags=("${AVX2_FLAGS[@]}")
    [ "$level" = avx512 ] && flags=("${AVX512_FLAGS[@]}")
    if stale "$OBJ/isa_${level}_$f.o" "$ROOT/$rel"; then
      job "$rel ($level)" "$CXX" "${CPU_FLAGS[@]}" "${flags[@]}" -c "$ROOT/$rel" -o "$OBJ/isa_${level}_$f.o"
    fi
  done < <(cd "$ROOT" && node scripts/sources.js "$level")
done
for f in emu racecheck runtime; do
  emu_job "$f.cc" "$OBJ/$f.o" "$HERE/$f.cc" "$CXX" "${EMU_FLAGS[@]}" -fPIC -include "$HERE/emu_core.h" -c "$HERE/$f.cc" -o "$OBJ/$f.o"
done
emu_wait

OBJS=()
for f in "${CU[@]}" emu racecheck runtime; do OBJS+=("$OBJ/$f.o"); done
for f in "${CPP[@]}"; do OBJS+=("$OBJ/cpu_$f.o"); done
ISA_OBJS=()
for f in "${ISA[@]}"; do ISA_OBJS+=("$OBJ/$f.o"); done
rm -f "$OBJ/libllava_isa.a"
ar rcs "$OBJ/libllava_isa.a" "${ISA_OBJS[@]}"
"$CXX" -shared -pthread "${OBJS[@]}" "$OBJ/libllava_isa.a" -o "$OUT/llava_native.node" -ldl
echo "$OUT/llava_native.node"
