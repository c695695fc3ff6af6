#!/usr/bin/env python3
"""numpy_peer.py — the CPU peer of `npm run bench`: numpy (OpenBLAS) `a @ b` on the bench's shapes.

    python3 bench/numpy_peer.py --shapes 256x256x256,1024x1024x1024 [--max-time 1.0] [--reps 10]

Shapes are MxKxN (a [M, K] @ b [K, N], float32, C-contiguous, values uniform in [-1, 1)). The timing
rule is the bench's: warm-up calls, then the median of up to --reps samples (at least 3) within
--max-time seconds, each timed with time.perf_counter() around a batch of `np.matmul(a, b)` calls
(one call, or enough calls to take ~5 ms for small products).
Prints one JSON line first naming the peer, then one per shape with a `key` bench/run.ts matches:
    {"key": "matmul 256x256x256 float32", "median_ms": ..., "min_ms": ..., "gflops": ..., "samples": ...}
Without numpy it prints {"skipped": "numpy", "reason": ...} and exits 0.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="256x256x256,512x512x512,1024x1024x1024,2048x2048x2048")
    ap.add_argument("--max-time", type=float, default=1.0, help="seconds of timed calls per shape (after warm-up)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    try:
        import numpy as np
    except Exception as e:  # noqa: BLE001 - any import failure means no peer
        print(json.dumps({"skipped": "numpy", "reason": f"numpy cannot be imported: {e}"}))
        return 0
    blas = ""
    try:
        cfg = np.show_config(mode="dicts")  # numpy >= 1.25
        blas = cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "")
    except Exception:  # noqa: BLE001 - older numpy: the name is only cosmetic
        pass
    print(json.dumps({"peer": f"numpy {np.__version__}" + (f" ({blas})" if blas else ""), "python": sys.version.split()[0]}), flush=True)
    rng = np.random.default_rng(42)
    dt = np.dtype(args.dtype)
    for spec in args.shapes.split(","):
        m, k, n = (int(x) for x in spec.lower().split("x"))
        a = rng.uniform(-1, 1, (m, k)).astype(dt)
        b = rng.uniform(-1, 1, (k, n)).astype(dt)
        t0 = time.perf_counter()
        for _ in range(3):  # warm-up
            np.matmul(a, b)
        warm = (time.perf_counter() - t0) / 3
        # Like the engine's harness: a sample of a sub-5 ms product is a batch of calls, and each call
        # allocates its result, as the engine's matmul does.
        inner = max(1, min(50, int(0.005 / warm))) if warm > 0 else 1
        times = []
        start = time.perf_counter()
        while len(times) < args.reps:
            t0 = time.perf_counter()
            for _ in range(inner):
                np.matmul(a, b)
            times.append((time.perf_counter() - t0) / inner)
            if len(times) >= 3 and time.perf_counter() - start > args.max_time:
                break
        times.sort()
        med = times[len(times) // 2]
        flop = 2.0 * m * n * k
        print(json.dumps({"key": f"matmul {m}x{k}x{n} {dt.name}", "median_ms": med * 1e3, "min_ms": times[0] * 1e3,
                          "gflops": flop / med / 1e9, "samples": len(times)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
