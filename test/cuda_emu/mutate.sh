#!/usr/bin/env bash
# test/cuda_emu/mutate.sh — mutation check for the emulator and its sanitizers (see README.md).
#
#   bash test/cuda_emu/mutate.sh FILE 'old' 'new' [test-filter]
#
# Copies the kernel sources into a scratch build dir, replaces the first occurrence of 'old' with 'new'
# in FILE (a name inside cuda/, e.g. matmul.cu or attention_common.cuh), builds that mutant and runs it
# once per mode of EMU_MODES (default: "race", then "" = default timing, "EMU_CP_EAGER=1" and
# "EMU_RANDOM=1 EMU_CP_EAGER=1"; "race" = EMU_RACECHECK=1 EMU_RANDOM=1, plus EMU_DEFERRED=1 for the
# addon). For each mode it prints the failed checks
# (wrong numbers), the racecheck hazards and the first fatal error (synccheck, bounds, deadlock):
#   mode[race]: 3 failures, 12 hazards, fatal: -
#     first hazard: EMU RACE shared-memory WAR hazard in ...
# Targets (EMU_TARGET):
#   test   (default) the kernel test binary (build.sh): matmul and attention; test-filter = matmul|attn
#   addon  the emulated addon (build_addon.sh) running test/gpu/check.ts --no-bench --filter test-filter
#          (every cuda/*.cu: norms, reductions, cross-entropy, elementwise, index, adamw too)
# The repository is not touched. Env: EMU_OUT (scratch dir, kept and reused: only what the mutation
# changes is rebuilt; default a fresh temp dir, removed), EMU_MODES, EMU_TARGET.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[ $# -ge 3 ] || { echo "usage: $0 FILE 'old' 'new' [test-filter]" >&2; exit 2; }
TARGET=${EMU_TARGET:-test}

if [ -n "${EMU_OUT:-}" ]; then
  OUT=$(realpath -m "$EMU_OUT")
  case "$OUT/" in
    "$ROOT"/*) echo "mutate.sh: EMU_OUT $OUT is inside the repository; pick one outside it" >&2; exit 2 ;;
  esac
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d "${TMPDIR:-/tmp}/cuda_emu_mutant.XXXXXX")
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT/src"
cp "$ROOT"/cuda/*.cu "$ROOT"/cuda/*.cuh "$OUT/src/"

python3 - "$OUT/src/$1" "$2" "$3" <<'PY' || exit 1
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
assert s.count(old) >= 1, 'mutation anchor not found: ' + old
s = s.replace(old, new, 1)
open(p, 'w').write(s)
PY

if [ "$TARGET" = addon ]; then
  SKIP_COPY=1 bash "$HERE/build_addon.sh" "$OUT" >"$OUT/build.log" 2>&1 || { echo "build failed (see $OUT/build.log)"; exit 1; }
else
  SKIP_COPY=1 bash "$HERE/build.sh" "$OUT" >"$OUT/build.log" 2>&1 || { echo "build failed (see $OUT/build.log)"; exit 1; }
fi

MODES=${EMU_MODES-race||EMU_CP_EAGER=1|EMU_RANDOM=1 EMU_CP_EAGER=1}
IFS='|' read -r -a MODE_LIST <<<"$MODES"
for mode in "${MODE_LIST[@]}"; do
  envs=$mode
  [ "$mode" = race ] && envs="EMU_RACECHECK=1 EMU_RANDOM=1"
  [ "$mode" = race ] && [ "$TARGET" = addon ] && envs="$envs EMU_DEFERRED=1"  # as CI runs the GPU check
  if [ "$TARGET" = addon ]; then
    out=$(cd "$ROOT" && env $envs LLAVA_NATIVE="$OUT/llava_native.node" OUT="$OUT/check" timeout 600 \
      node --import=tsx test/gpu/check.ts --no-bench --filter "${4:-.}" 2>&1)
    fails=$(echo "$out" | grep -c "^FAIL")
  else
    out=$(env $envs timeout 300 "$OUT/test" ${4:-} 2>&1)
    fails=$(echo "$out" | grep -E "^FAIL" | grep -vc "racecheck:")
  fi
  hz=$(echo "$out" | sed -n 's/^EMU racecheck: \([0-9]*\) hazard.*/\1/p' | tail -1)
  fatal=$(echo "$out" | grep -m1 "EMU FATAL" | cut -c1-220)
  echo "  mode[$mode]: $fails failures, ${hz:--} hazards, fatal: ${fatal:--}"
  first=$(echo "$out" | grep -m1 "^EMU RACE" | cut -c1-400)
  [ -n "$first" ] && echo "    first hazard: $first"
done
exit 0
