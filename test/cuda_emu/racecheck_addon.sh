#!/usr/bin/env bash
# test/cuda_emu/racecheck_addon.sh — the full racecheck of the emulated addon (README.md, "Sanitizers"):
# builds it with racecheck's load/store hooks and runs the GPU check (test/gpu/check.ts --no-bench: the
# 300 device parity cases, allocator and out-of-memory checks) with EMU_RACECHECK=1 EMU_DEFERRED=1
# EMU_RANDOM=1. Exits non-zero on a hazard, a synccheck error or a failed check. CI runs a cheaper
# subset (test/cuda/cuda_emu_addon.test.ts builds without the hooks); this is the whole thing:
# ~3 min of CPU for the check on top of the build (~10 min of CPU).
#
#   bash test/cuda_emu/racecheck_addon.sh [OUT_DIR] [check.ts --filter REGEX]
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/cuda_emu_race.XXXXXX")}
bash "$HERE/build_addon.sh" "$OUT" >"$OUT.build.log" 2>&1 || { echo "build failed: $OUT.build.log"; exit 1; }
log=$OUT/check.log
(cd "$ROOT" && EMU_RACECHECK=1 EMU_DEFERRED=1 EMU_RANDOM=1 LLAVA_NATIVE="$OUT/llava_native.node" OUT="$OUT/check" \
  node --import=tsx test/gpu/check.ts --no-bench ${2:+--filter "$2"} >"$log" 2>&1)
code=$?
grep -E "^EMU RACE|EMU FATAL|^FAIL" "$log" | head -40
grep -E "passed, [0-9]+ failed|^EMU racecheck" "$log"
hz=$(sed -n 's/^EMU racecheck: \([0-9]*\) hazard.*/\1/p' "$log" | tail -1)
[ "$code" -eq 0 ] && [ "${hz:-1}" = 0 ] || { echo "racecheck_addon: FAILED (exit $code, ${hz:-?} hazards; log $log)"; exit 1; }
echo "racecheck_addon: OK (log $log)"
