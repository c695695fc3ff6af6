#!/usr/bin/env bash
# scripts/check_arm64.sh — the portability check CI runs: compiles every C++ source of the addon for
# aarch64 (Apple Silicon, Graviton) with Debian's cross compiler, object files only (nothing links or
# runs). The Node and node-addon-api headers are the same on every architecture, so the host's serve.
# The avx2/avx512 sets (scripts/sources.js) compile too: on aarch64 they are empty translation units.
#
#   bash scripts/check_arm64.sh            # CXX=aarch64-linux-gnu-g++ by default; NODE_INC as below
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CXX=${CXX:-aarch64-linux-gnu-g++}
if ! command -v "$CXX" >/dev/null; then
  echo "check_arm64: $CXX not found (Debian: apt-get install g++-aarch64-linux-gnu)" >&2
  exit 2
fi
NODE_INC=${NODE_INC:-$(node -p "require('path').join(process.execPath, '..', '..', 'include', 'node')")}
[ -f "$NODE_INC/node_api.h" ] || NODE_INC=/usr/include/node
[ -f "$NODE_INC/node_api.h" ] || { echo "check_arm64: node_api.h not found (set NODE_INC)" >&2; exit 2; }
NAPI_INC=$(cd "$ROOT" && node -p "require('node-addon-api').include_dir")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cd "$ROOT"
mapfile -t SRC < <(node scripts/sources.js cpp; node scripts/sources.js avx2; node scripts/sources.js avx512)
fail=0
n=0
for f in "${SRC[@]}"; do
  n=$((n + 1))
  if ! "$CXX" -std=c++17 -O1 -fexceptions -DNAPI_VERSION=8 -DNODE_ADDON_API_DISABLE_DEPRECATED \
    -I"$NODE_INC" -I"$NAPI_INC" -Icpp -c "$f" -o "$OUT/$n.o"; then
    echo "check_arm64: $f does not compile for aarch64" >&2
    fail=1
  fi
done
[ "$fail" = 0 ] || exit 1
echo "check_arm64: ${#SRC[@]} files compile for aarch64 ($CXX)"
