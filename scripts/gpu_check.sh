#!/bin/bash
# gpu_check.sh — the GPU check of a session that was lent a GPU machine, in two halves.
#
# 1. Here (the development machine, which has nvcc but no GPU), from the project root:
#        bash scripts/gpu_check.sh prepare          # add --rebuild to force the native build
#    builds the addon with CUDA (build/Release/llava_native.node; cudart is static, so the .node needs
#    only libc/libstdc++ there), compiles TypeScript to dist/, runs ../shared/gpu/pack.sh (Node.js for the
#    GPU machine, which has none, in .gpu/node.xz plus .gpu/run.sh), packs the addon as
#    .gpu/llava_native.node.xz (the sm_80 + sm_90 fatbins make the .node ~33 MiB; xz brings it to ~3 MiB),
#    copies the production dependencies
#    (package.json "dependencies" and what they need: @huggingface/tokenizers, pngjs, jpeg-js,
#    commander, cli-progress, ...) into .gpu/node_modules (~2 MiB), and checks that everything that
#    must travel stays under the 64 MiB a call may carry.
#
# 2. There, with the device tool (`run`), one call, e.g. timeout_s 540:
#        command: bash scripts/gpu_check.sh
#        carry:   [".gpu", "dist"]
#    which unpacks .gpu/llava_native.node.xz to build/Release/llava_native.node and comes down to
#        NODE_PATH=$PWD/.gpu/node_modules OUT=${OUT:-out/gpu-check} bash .gpu/run.sh node dist/test/gpu/check.js
#    i.e. the parity suite (test/gpu/cases.ts on cuda vs cpu), the memory checks,
#    `node dist/bench/run.js --device cuda` with the PyTorch peer (python3 + torch exist there), and,
#    where the host CPU has AMX, the AMX GEMM tile's parity and speed (test/gpu/cpu_amx.ts).
#    Results: $OUT/gpu_check.json, $OUT/gpu_check.log, $OUT/bench_cuda.jsonl, $OUT/bench_cpu.jsonl (they
#    come back with the call's files). Extra arguments go to check.js: --quick (fewer cases and bench
#    shapes), --no-bench, --filter REGEX (parity cases by "group/name"; "cpu_amx" selects the host-CPU
#    phase), --bench-args "--filter gemm".
#    node_modules itself is not carried (the dev tree's is far over 64 MiB); NODE_PATH points Node's
#    require() at the small production copy instead (today's check needs none of it: lib/ops, models
#    and optim import only Node built-ins; the copy keeps a later import from breaking the run).
#    The tracked tree (lib/, test/fixtures/, bench/*.py, scripts/) travels anyway.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

carry_paths=(.gpu dist)

prepare() {
  local rebuild=0
  [ "${1:-}" = "--rebuild" ] && rebuild=1
  local addon=build/Release/llava_native.node
  # Rebuild when asked, when missing, when a native source is newer, or when the build lacks CUDA.
  if [ $rebuild = 0 ] && [ -f $addon ] && [ -z "$(find cpp cuda binding.gyp scripts/sources.js -newer $addon -print -quit)" ] &&
     node -e "process.exit(require('./$addon').deviceInfo(1).compiled ? 0 : 1)"; then
    echo "addon up to date (CUDA compiled in): $addon"
  else
    command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "nvcc not found: the GPU build needs it" >&2; exit 1; }
    echo "building the addon with CUDA (several minutes on 2 cores) ..."
    env -u LLAVA_NO_CUDA node scripts/install.js --force
  fi
  node -e "const a=require('./$addon').deviceInfo(1); if(!a.compiled){console.error('the addon was built without CUDA: '+a.description);process.exit(1)}"
  echo "compiling TypeScript to dist/ ..."
  npx tsc -p tsconfig.json
  [ -f dist/test/gpu/check.js ] && [ -f dist/bench/run.js ] || { echo "dist/test/gpu/check.js or dist/bench/run.js missing after tsc" >&2; exit 1; }
  bash ../shared/gpu/pack.sh
  echo "packing the addon into .gpu/llava_native.node.xz ..."
  xz -T2 -6 -c $addon > .gpu/llava_native.node.xz
  sha256sum $addon | cut -d' ' -f1 > .gpu/llava_native.node.sha256
  echo "copying the production dependencies to .gpu/node_modules ..."
  rm -rf .gpu/node_modules
  mkdir -p .gpu/node_modules
  npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | while read -r dir; do
    rel=${dir#*/node_modules/} # relative to node_modules/ (a linked node_modules prints its real path)
    [ "$rel" = "$dir" ] && continue
    mkdir -p ".gpu/node_modules/$(dirname "$rel")"
    cp -r "$dir" ".gpu/node_modules/$rel"
  done
  # node-addon-api holds only headers for the build: not needed at run time. The check decodes no JPEG and
  # calls no OpenAI endpoint, and sharp's libvips (~20 MiB) and the openai SDK (~20 MiB) would take the
  # carry past its 64 MiB: they stay behind (a JPEG decode there would fail, naming sharp).
  rm -rf .gpu/node_modules/node-addon-api .gpu/node_modules/sharp .gpu/node_modules/@img .gpu/node_modules/openai
  local total
  total=$(du -scb "${carry_paths[@]}" | tail -1 | cut -f1)
  du -sh "${carry_paths[@]}"
  echo "total to carry: $((total / 1048576)) MiB of 64 MiB"
  [ "$total" -lt $((64 * 1048576)) ] || { echo "over the 64 MiB carry limit" >&2; exit 1; }
  cat <<EOF

ready. Device tool call:
  command: bash scripts/gpu_check.sh
  carry:   [$(printf '"%s", ' "${carry_paths[@]}" | sed 's/, $//')]
EOF
}

run_check() {
  [ -f .gpu/run.sh ] || { echo ".gpu/run.sh missing: run 'bash scripts/gpu_check.sh prepare' on the dev machine and carry .gpu" >&2; exit 1; }
  if [ -f .gpu/llava_native.node.xz ]; then
    mkdir -p build/Release
    xz -dc .gpu/llava_native.node.xz > build/Release/llava_native.node
    echo "addon unpacked: build/Release/llava_native.node (sha256 $(cut -c1-12 .gpu/llava_native.node.sha256 2>/dev/null)...)"
  fi
  [ -f build/Release/llava_native.node ] || { echo "no addon: carry .gpu (with llava_native.node.xz) or build/Release/llava_native.node" >&2; exit 1; }
  export NODE_PATH="$root/.gpu/node_modules${NODE_PATH:+:$NODE_PATH}"
  export OUT="${OUT:-$root/out/gpu-check}"
  exec bash .gpu/run.sh node dist/test/gpu/check.js "$@"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  -h|--help) sed -n '2,30p' "$0" ;;
  *) run_check "$@" ;;
esac
