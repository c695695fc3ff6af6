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

    python3 bench/numpy_peer.py --spec spec.json

The fused-op mode, used on the CPU when PyTorch is not installed: the spec is the one bench/cpu_cases.ts
writes for bench/torch_peer.py ({device: "cpu", dtype: "float32", reps, cases: [{key, kind, ...}]}) and
the results come back the same way, {"key", "median_ms", "min_ms", "samples"}. numpy has no fused
kernels, so each op is written the way a numpy user would: softmax and the norms row-wise with keepdims
reductions, attention with the scores materialised (batched matmul, causal mask, softmax, matmul), and
the backward passes (layer norm, attention, cross-entropy) by their closed forms. Kinds it does not know
answer {"key", "error"}.
"""
import argparse
import json
import math
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="256x256x256,512x512x512,1024x1024x1024,2048x2048x2048")
    ap.add_argument("--max-time", type=float, default=1.0, help="seconds of timed calls per shape (after warm-up)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--spec", help="JSON case list (the fused-op mode); --shapes is then ignored")
    args = ap.parse_args()
    try:
        import numpy as np
    except Exception as e:  # noqa: BLE001 - any import failure means no peer
        print(json.dumps({"skipped": "numpy", "reason": f"numpy cannot be imported: {e}"}))
        return 0
    if args.spec:
        return run_spec(np, args.spec)
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


def blas_name(np):
    try:
        cfg = np.show_config(mode="dicts")  # numpy >= 1.25
        return cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "")
    except Exception:  # noqa: BLE001 - older numpy: the name is only cosmetic
        return ""


def time_fn(fn, reps, max_s=3.0, min_reps=3, warmup=2):
    """Median of up to `reps` single calls (after warm-up) within max_s seconds, in ms."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < reps:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_reps and time.perf_counter() - start > max_s:
            break
    times.sort()
    return {"median_ms": times[len(times) // 2] * 1e3, "min_ms": times[0] * 1e3, "samples": len(times)}


def run_spec(np, spec_file):
    with open(spec_file) as f:
        spec = json.load(f)
    reps = int(spec.get("reps", 10))
    dt = np.dtype(spec.get("dtype", "float32"))
    blas = blas_name(np)
    print(json.dumps({"peer": f"numpy {np.__version__}" + (f" ({blas})" if blas else ""), "python": sys.version.split()[0]}), flush=True)
    rng = np.random.default_rng(0)

    def rand(*shape, scale=1.0):
        return (rng.uniform(-1, 1, shape) * scale).astype(dt)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def case_softmax(c):
        x = rand(c["N"], c["C"])
        return lambda: softmax(x)

    def case_norm(c, rms):
        n, ch, eps = c["N"], c["C"], 1e-5
        x, w, b, g = rand(n, ch), rand(ch), rand(ch), rand(n, ch)
        if rms:
            fwd = lambda: x * (1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)) * w  # noqa: E731
            if not c.get("bwd"):
                return fwd

            def rms_step():
                r = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
                xh = x * r
                gw = g * w
                dx = r * (gw - xh * (gw * xh).mean(-1, keepdims=True))
                return dx, (g * xh).sum(0)

            return rms_step

        def ln_fwd():
            mu = x.mean(-1, keepdims=True)
            xc = x - mu
            r = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps)
            return xc * r * w + b, xc * r, r

        if not c.get("bwd"):
            return lambda: ln_fwd()[0]

        def ln_step():
            _, xh, r = ln_fwd()
            gw = g * w
            dx = r * (gw - gw.mean(-1, keepdims=True) - xh * (gw * xh).mean(-1, keepdims=True))
            return dx, (g * xh).sum(0), g.sum(0)

        return ln_step

    def case_attention(c):
        B, H, T, S, D = c["B"], c["H"], c["T"], c.get("S", c["T"]), c["D"]
        q, k, v, g = rand(B, H, T, D), rand(B, H, S, D), rand(B, H, S, D), rand(B, H, T, D)
        scale = dt.type(1.0 / math.sqrt(D))
        mask = None
        if c["causal"]:
            # bottom-right aligned, as the engine's isCausal (equal to torch's when T == S)
            mask = np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)

        def probs():
            s = (q @ k.swapaxes(-1, -2)) * scale
            if mask is not None:
                s[..., mask] = -np.inf
            return softmax(s)

        if not c["bwd"]:
            return lambda: probs() @ v

        def step():
            p = probs()
            _ = p @ v
            dv = p.swapaxes(-1, -2) @ g
            dp = g @ v.swapaxes(-1, -2)
            ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
            return ds @ k, ds.swapaxes(-1, -2) @ q, dv

        return step

    def case_cross_entropy(c):
        N, V = c["N"], c["V"]
        x = rand(N, V, scale=4.0)
        t = (np.arange(N) * 7919) % V

        def step():
            m = x.max(-1, keepdims=True)
            e = np.exp(x - m)
            s = e.sum(-1, keepdims=True)
            loss = (np.log(s[:, 0]) + m[:, 0] - x[np.arange(N), t]).mean()
            grad = e / s
            grad[np.arange(N), t] -= 1
            grad /= N
            return loss, grad

        return step

    cases = {
        "softmax": case_softmax,
        "layer_norm": lambda c: case_norm(c, False),
        "rms_norm": lambda c: case_norm(c, True),
        "attention": case_attention,
        "cross_entropy": case_cross_entropy,
    }
    for c in spec["cases"]:
        key = c["key"]
        make = cases.get(c["kind"])
        if make is None:
            print(json.dumps({"key": key, "error": f"numpy peer has no case kind '{c['kind']}'"}), flush=True)
            continue
        try:
            res = time_fn(make(c), reps)
            res["key"] = key
            print(json.dumps(res), flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on with the next case
            print(json.dumps({"key": key, "error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
