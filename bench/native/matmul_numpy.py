#!/usr/bin/env python3
"""matmul_numpy.py — the peer for bench/native/matmul_bench.cc: numpy (OpenBLAS) on the same shapes,
same JSON fields, same timing rule (median and best over ~0.6 s of repeats after one warm-up call).

The development machine is noisy (its two vCPUs are shared with other guests), so only compare
runs taken back to back, and prefer several alternating rounds:

    for r in 1 2 3; do build-native/matmul_bench; python3 bench/native/matmul_numpy.py; done
"""
import json
import sys
import time

import numpy as np

QUICK = "--quick" in sys.argv
SHAPES = [  # name, Bt, M, K, N, b transposed (weight stored [N, K]), dtype
    ("square", 1, 256, 256, 256, False, np.float32),
    ("square", 1, 512, 512, 512, False, np.float32),
    ("square", 1, 1024, 1024, 1024, False, np.float32),
    ("square", 1, 2048, 2048, 2048, False, np.float32),
]
if not QUICK:
    SHAPES += [
        ("x@W^T", 1, 512, 1024, 4096, True, np.float32),
        ("decode_gemv", 1, 1, 4096, 4096, True, np.float32),
        ("batched_small", 64, 64, 64, 64, False, np.float32),
        ("square_f64", 1, 512, 512, 512, False, np.float64),
    ]

rng = np.random.default_rng(42)
for name, bt, m, k, n, bt_col, dt in SHAPES:
    a = rng.uniform(-1, 1, (bt, m, k)).astype(dt)
    b = rng.uniform(-1, 1, (bt, n, k) if bt_col else (bt, k, n)).astype(dt)
    if bt_col:
        b = b.transpose(0, 2, 1)
    if bt == 1:  # plain 2-D GEMM, as a user would call it
        a, b = a[0], b[0]
    out = np.matmul(a, b)
    times = []
    start = time.perf_counter()
    while (time.perf_counter() - start < (0.3 if QUICK else 0.6) and len(times) < 1000) or len(times) < 3:
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    times.sort()
    flop = 2.0 * bt * m * n * k
    med = times[len(times) // 2]
    print(json.dumps({"op": "matmul", "peer": "numpy " + np.__version__, "shape": name, "Bt": bt, "M": m, "K": k,
                      "N": n, "b": "transposed" if bt_col else "row", "dtype": np.dtype(dt).name,
                      "median_ms": round(med * 1e3, 4), "gflops": round(flop / med / 1e9, 1),
                      "best_gflops": round(flop / times[0] / 1e9, 1), "reps": len(times)}), flush=True)
