#!/usr/bin/env bash
# test/cuda_emu/mutate.sh — mutation check for the emulator tests (see README.md).
#
#   bash test/cuda_emu/mutate.sh FILE 'old' 'new' [test-filter]
#
# Copies the kernel sources into a scratch build dir, replaces the first occurrence of 'old' with 'new'
# in FILE (a name inside cuda/, e.g. matmul.cu or attention_common.cuh), builds that mutant and runs the
# tests (optionally only `matmul`, `attn`, ...) in three modes: default, EMU_CP_EAGER=1, and
# EMU_RANDOM=1 EMU_CP_EAGER=1. A good test suite reports failures for a meaningful mutant.
# The repository is not touched. Env: EMU_OUT (scratch dir, kept; default a fresh temp dir, removed).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[ $# -ge 3 ] || { echo "usage: $0 FILE 'old' 'new' [test-filter]" >&2; exit 2; }

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

SKIP_COPY=1 bash "$HERE/build.sh" "$OUT" >/dev/null 2>&1 || { echo "build failed"; exit 1; }
for mode in "" "EMU_CP_EAGER=1" "EMU_RANDOM=1 EMU_CP_EAGER=1"; do
  r=$(env $mode timeout 300 "$OUT/test" ${4:-} 2>&1 | grep -cE "^FAIL|FATAL")
  echo "  mode[$mode]: $r failures"
done
