# test/cuda_emu/common.sh — sourced by build.sh and build_addon.sh: settings, the output directory, the
# copied kernel sources, and a small parallel compile pool. Sets HERE, ROOT, OUT, SRC, OBJ, CXX, CUDA_INC,
# OPT, JOBS and EMU_FLAGS (the flags every emulated CUDA source is compiled with).
# Env: EMU_JOBS (parallel compiles, 1 or 2; default 2), OPT (default -O1), CXX (default g++),
#      CUDA_INC (default /usr/local/cuda/include: only the headers are needed, no GPU, no nvcc),
#      SKIP_COPY=1 (reuse OUT/src as is; mutate.sh edits a kernel there first).
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ME=$(basename "$0")

# emu_setup OUT_DIR_OR_EMPTY: resolves OUT (a fresh temp dir when empty; never inside the repository),
# checks the tools, and copies the kernel sources to OUT/src.
emu_setup() {
  OUT=${1:-}
  if [ -z "$OUT" ]; then OUT=$(mktemp -d "${TMPDIR:-/tmp}/cuda_emu.XXXXXX"); fi
  OUT=$(realpath -m "$OUT")
  case "$OUT/" in
    "$ROOT"/*) echo "$ME: output dir $OUT is inside the repository; pick one outside it" >&2; exit 2 ;;
  esac
  mkdir -p "$OUT"

  CXX=${CXX:-g++}
  CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
  OPT=${OPT:--O1}
  JOBS=${EMU_JOBS:-2}
  if ! [[ "$JOBS" =~ ^[0-9]+$ ]] || [ "$JOBS" -lt 1 ]; then JOBS=1; fi
  if [ "$JOBS" -gt 2 ]; then JOBS=2; fi
  command -v "$CXX" >/dev/null || { echo "$ME: $CXX not found" >&2; exit 2; }
  [ -f "$CUDA_INC/cuda_bf16.h" ] || { echo "$ME: $CUDA_INC/cuda_bf16.h not found (set CUDA_INC)" >&2; exit 2; }

  SRC=$OUT/src
  OBJ=$OUT/obj
  mkdir -p "$SRC" "$OBJ"
  # The kernel sources are copied next to each other WITHOUT cuda/mma.cuh, cuda/wgmma.cuh and cuda/launch.cuh,
  # so that their `#include "mma.cuh"` (and the others) (searched first in the including
  # file's directory) fall through to -I shim and pick up the emulated versions; the rest is real.
  if [ -z "${SKIP_COPY:-}" ]; then cp "$ROOT"/cuda/*.cu "$ROOT"/cuda/*.cuh "$SRC/"; fi
  rm -f "$SRC/mma.cuh" "$SRC/wgmma.cuh" "$SRC/launch.cuh"
  # The one rewrite of the kernel sources: a static shared array `__shared__ T name[...];` becomes
  # EMU_STATIC_SHARED(T, name, [...]), which NaN-poisons it at the start of every block (emu_core.h), as
  # dynamic shared memory is, so a thread reading a slot no thread of this block wrote is caught.
  perl -pi -e 's/^(\s*)__shared__ (\w+) (\w+)((?:\[[^\]]*\])+);/$1EMU_STATIC_SHARED($2, $3, $4);/' "$SRC"/*.cu
  if grep -n '__shared__' "$SRC"/*.cu | grep -v 'extern __shared__' >&2; then
    echo "$ME: the __shared__ declarations above are not in the form 'T name[...];' that common.sh rewrites" >&2
    exit 2
  fi
  EMU_FLAGS=(-std=c++17 "$OPT" -g -mavx2 -mfma -mf16c -Wno-attributes -I"$HERE/shim" -I"$SRC" -I"$ROOT/cpp" -I"$CUDA_INC")
  # Added for the kernel sources only (cuda/*.cu): every load and store calls racecheck.cc's hooks
  # (GCC's thread-sanitizer instrumentation; its runtime is not linked, racecheck.cc defines the hooks).
  # EMU_NO_HOOKS=1 leaves them out (EMU_RACECHECK then sees only cp.async and ldmatrix).
  SAN_FLAGS=(-fsanitize=thread)
  if [ -n "${EMU_NO_HOOKS:-}" ]; then SAN_FLAGS=(); fi
}

# job LABEL CMD...: runs CMD in the background, at most $JOBS at a time; emu_wait waits for all and
# fails the build if any of them failed.
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
emu_wait() {
  while [ "$running" -gt 0 ]; do reap; done
  if [ "$failed" -ne 0 ]; then
    echo "$ME: compilation failed" >&2
    exit 1
  fi
}

# stale OBJ SOURCE: OBJ is missing or older than SOURCE or than any header under cpp/ (a struct that
# changes layout must rebuild every object that uses it).
stale() { [ ! "$1" -nt "$2" ] || [ -n "$(find "$ROOT/cpp" -name '*.h' -newer "$1" -print -quit)" ]; }

# emu_job LABEL OBJ SOURCE CMD...: like job, but skipped when OBJ was built from the same SOURCE, kernel
# headers (cuda/ and cpp/), emulator headers and command as now (a content stamp next to OBJ), so mutate.sh and a reused
# OUT_DIR rebuild only what changed.
emu_job() {
  local label=$1 obj=$2 src=$3
  shift 3
  local sum
  sum=$(cat "$src" "$SRC"/*.cuh "$ROOT"/cpp/*.h "$HERE"/*.h "$HERE"/shim/*.cuh | md5sum | cut -d' ' -f1)
  sum="$sum $(echo "$*" | md5sum | cut -d' ' -f1)"
  if [ -f "$obj" ] && [ "$(cat "$obj.stamp" 2>/dev/null)" = "$sum" ]; then return 0; fi
  rm -f "$obj.stamp"
  job "$label" bash -c 'stamp=$1; shift; "$@" && echo "$0" > "$stamp"' "$sum" "$obj.stamp" "$@"
}
