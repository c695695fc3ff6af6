#!/bin/bash
# gpu_check.sh — the GPU check of a session that was lent a GPU machine, in two halves.
#
# 1. Here (the development machine, which has nvcc but no GPU), from the project root:
#        bash scripts/gpu_check.sh prepare          # add --rebuild to force the native build
#    builds the addon with CUDA (build/Release/llava_native.node; cudart is static, so the .node needs
#    only libc/libstdc++ there), compiles TypeScript to dist/, runs ../shared/gpu/pack.sh (Node.js for the
#    GPU machine, which has none, in .gpu/node.xz plus .gpu/run.sh), packs the addon as
#    .gpu/llava_native.node.xz (the sm_80 + sm_90a fatbins make the .node ~33 MiB; xz brings it to ~3 MiB),
#    copies the production dependencies
#    (package.json "dependencies" and what they need: @huggingface/tokenizers, pngjs, jpeg-js,
#    commander, cli-progress, ...) into .gpu/node_modules (~2 MiB), and checks that everything that
#    must travel stays under the 64 MiB a call may carry.
#
# 2. There, with the device tool (`run`), one call with timeout_s 570 or more:
#        command: bash scripts/gpu_check.sh
#        carry:   [".gpu", "dist"]
#    which unpacks .gpu/llava_native.node.xz to build/Release/llava_native.node and runs the first-run
#    stages (first_run below, within GPU_CHECK_BUDGET_S = 540 s): the parity suite with synchronous
#    launches, compute-sanitizer's memcheck, racecheck and synccheck on the matmul and attention cases,
#    then the whole check, which comes down to
#        NODE_PATH=$PWD/.gpu/node_modules OUT=${OUT:-out/gpu-check} bash .gpu/run.sh node dist/test/gpu/check.js
#    i.e. the parity suite (test/gpu/cases.ts on cuda vs cpu), the memory checks,
#    `node dist/bench/run.js --device cuda` with the PyTorch peer (python3 + torch exist there), and,
#    where the host CPU has AMX, the AMX GEMM tile's parity and speed (test/gpu/cpu_amx.ts).
#    Results: $OUT/sync_check.log, $OUT/sanitizers.log, $OUT/gpu_check.json, $OUT/gpu_check.log,
#    $OUT/bench_cuda.jsonl (+ .png), $OUT/bench_cpu.jsonl (+ .png) (they come back with the call's files).
#    With arguments, only check.js runs, with them: --quick (fewer cases and bench shapes), --no-bench,
#    --filter REGEX (parity cases by "group/name"; "cpu_amx" selects the host-CPU phase), --bench-args
#    "--filter gemm"; e.g. a second call after fixes: bash scripts/gpu_check.sh --filter '^attention/'.
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
  # The GPU machine has .gpu/node_modules and nothing else: start both entry points from a copy of dist/
  # outside this checkout (so its node_modules cannot stand in) with only that, as they start there (with
  # no GPU here they stop at their CUDA check, after loading everything they import).
  local smoke
  smoke=$(mktemp -d)
  cp -r dist "$smoke/dist"
  if ! (cd "$smoke" && export NODE_PATH="$root/.gpu/node_modules" LLAVA_NATIVE="$root/$addon" OUT="$smoke/out" &&
        node dist/test/gpu/check.js --no-bench > smoke.log 2>&1 &&
        node dist/bench/run.js --device cuda --quick --json >> smoke.log 2>&1); then
    cat "$smoke/smoke.log" >&2
    rm -rf "$smoke"
    echo "the check does not start with .gpu/node_modules alone (above): a module it imports is missing there" >&2
    exit 1
  fi
  rm -rf "$smoke"
  echo "the check and the bench start with .gpu/node_modules alone"
  local total
  total=$(du -scb "${carry_paths[@]}" | tail -1 | cut -f1)
  du -sh "${carry_paths[@]}"
  echo "total to carry: $((total / 1048576)) MiB of 64 MiB"
  [ "$total" -lt $((64 * 1048576)) ] || { echo "over the 64 MiB carry limit" >&2; exit 1; }
  cat <<EOF

ready. Device tool call (timeout_s 570 or more):
  command: bash scripts/gpu_check.sh
  carry:   [$(printf '"%s", ' "${carry_paths[@]}" | sed 's/, $//')]
EOF
}

# Unpacks the addon and sets the environment check.js runs in (NODE_PATH, OUT).
setup_run() {
  [ -f .gpu/run.sh ] || { echo ".gpu/run.sh missing: run 'bash scripts/gpu_check.sh prepare' on the dev machine and carry .gpu" >&2; exit 1; }
  if [ -f .gpu/llava_native.node.xz ]; then
    mkdir -p build/Release
    xz -dc .gpu/llava_native.node.xz > build/Release/llava_native.node
    echo "addon unpacked: build/Release/llava_native.node (sha256 $(cut -c1-12 .gpu/llava_native.node.sha256 2>/dev/null)...)"
  fi
  [ -f build/Release/llava_native.node ] || { echo "no addon: carry .gpu (with llava_native.node.xz) or build/Release/llava_native.node" >&2; exit 1; }
  export NODE_PATH="$root/.gpu/node_modules${NODE_PATH:+:$NODE_PATH}"
  export OUT="${OUT:-$root/out/gpu-check}"
  mkdir -p "$OUT"
}

run_check() {
  setup_run
  exec bash .gpu/run.sh node dist/test/gpu/check.js "$@"
}

# The first run on a GPU, in three stages within GPU_CHECK_BUDGET_S seconds (default 540; give the device
# call a timeout_s of at least that plus 30):
#   1. the parity and memory checks with synchronous launches (LLAVA_CUDA_SYNC=1), so that an
#      asynchronous fault is reported by the op that caused it: $OUT/sync_check.log (at most 150 s);
#      then (1b) the wgmma GEMM tiles' parity cases in a process of their own (at most 60 s, same log);
#      when they fail, stages 2 and 3 run without those tiles (LLAVA_SKIP_WGMMA=1);
#   2. compute-sanitizer, where the machine has it and it accepts the device: memcheck over the matmul,
#      attention and norm parity cases, racecheck and synccheck over matmul and attention, each capped
#      (40-70 s): $OUT/sanitizers.log;
#   3. the whole check with asynchronous launches and the benchmarks (check.js: parity, memory, bench
#      against PyTorch, the host CPU's AMX tile), in the time left: $OUT/gpu_check.{json,log},
#      $OUT/bench_cuda.{jsonl,png} and, on an AMX host, $OUT/bench_cpu.{jsonl,png}.
# That is 8 files, the most a device call brings back. A stage that runs out of time is stopped and the
# next one starts; check.js rewrites its JSON after each phase, so a stopped stage 3 still reports what ran.
first_run() {
  setup_run
  local budget=${GPU_CHECK_BUDGET_S:-540} t0=$SECONDS
  local final_out=$OUT
  left() { echo $((budget - (SECONDS - t0))); }
  # stage(seconds, log, command...): runs the command under `timeout`, appending its output to the log.
  stage() {
    local secs=$1 log=$2
    shift 2
    [ "$secs" -gt 5 ] || { echo "# skipped (no time left): $*" >> "$log"; return 0; }
    echo "# $(date -u +%H:%M:%S) [${secs} s at most] $*" >> "$log"
    local rc=0
    timeout --kill-after=10 "$secs" "$@" >> "$log" 2>&1 || rc=$?
    echo "# exit $rc$([ $rc = 124 ] && echo ' (stopped at its time limit)')" >> "$log"
    stage_rc=$rc
  }
  local stage_rc=0
  local check=(bash .gpu/run.sh node dist/test/gpu/check.js)

  echo "== 1/3: parity and memory with LLAVA_CUDA_SYNC=1"
  local sync_log="$final_out/sync_check.log"
  OUT=/tmp/gpu-check-sync LLAVA_CUDA_SYNC=1 stage $(( $(left) < 150 ? $(left) : 150 )) "$sync_log" "${check[@]}" --no-bench --filter '^(?!cpu_amx|matmul/bf16 tile wgmma)'
  tail -3 "$sync_log"
  # The Hopper GEMM tiles have never run on silicon: their parity cases go first in a process of their own,
  # so that a fault (which poisons the CUDA context) costs only them. If they fail, the rest of the check
  # and the benchmarks leave them out (LLAVA_SKIP_WGMMA, read by test/gpu/cases_core.ts forcedGemmTiles).
  echo "== 1b/3: the wgmma GEMM tiles' parity cases, alone"
  OUT=/tmp/gpu-check-wgmma LLAVA_CUDA_SYNC=1 stage $(( $(left) < 60 ? $(left) : 60 )) "$sync_log" "${check[@]}" --no-bench --filter '^matmul/bf16 tile wgmma'
  if [ "$stage_rc" != 0 ]; then
    export LLAVA_SKIP_WGMMA=1
    echo "# the wgmma tiles failed (exit $stage_rc): stages 2 and 3 leave them out" | tee -a "$sync_log"
  fi
  tail -3 "$sync_log"

  echo "== 2/3: compute-sanitizer"
  local san_log="$final_out/sanitizers.log" sanitizer
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1 || true)
  if [ -n "$sanitizer" ]; then
    # The sanitizer starts node itself (run.sh has unpacked it onto the PATH by now), not through a shell.
    export PATH=/tmp/gpu-node/bin:$PATH
    local tool filter secs
    for spec in "memcheck@^(matmul|attention|norm)/@70" "racecheck@^(matmul/(bf16|f16) (127x129x65|64x256x96)|attention/)@60" \
      "synccheck@^(matmul|attention)/@40"; do
      IFS='@' read -r tool filter secs <<< "$spec"
      # --error-exitcode makes a finding fail the stage even when every value was right.
      OUT=/tmp/gpu-check-$tool stage $(( $(left) - 200 < secs ? $(left) - 200 : secs )) "$san_log" \
        "$sanitizer" --tool "$tool" --target-processes all --error-exitcode 3 --print-limit 30 \
        node dist/test/gpu/check.js --no-bench --quick --filter "$filter"
    done
    grep -E "^# exit|ERROR SUMMARY|RACECHECK SUMMARY|passed, [0-9]+ failed" "$san_log" || true
  else
    echo "compute-sanitizer not found (PATH, /usr/local/cuda): stage 2 skipped" | tee "$san_log"
  fi

  echo "== 3/3: the whole check with the benchmarks ($(left) s left)"
  OUT=$final_out stage $(( $(left) - 5 )) "$final_out/stage3.out" "${check[@]}"
  tail -5 "$final_out/stage3.out"
  rm -f "$final_out/stage3.out"  # gpu_check.log holds the same lines; keep the file count within 8
  echo "== done in $((SECONDS - t0)) s: $(ls "$final_out" | tr '\n' ' ')"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  -h|--help) sed -n '2,40p' "$0" ;;
  "") first_run ;;
  *) run_check "$@" ;;
esac
