#!/usr/bin/env python3
"""torch_peer.py — the GPU peer of `npm run bench`: PyTorch on the same cases, shapes and dtype.

    python3 bench/torch_peer.py --spec spec.json

bench/gpu_cases.ts writes the spec ({device, dtype, reps, cases: [{key, kind, ...shape}]}) from its own
case table and matches results by `key`; bench/cpu_cases.ts writes one with device "cpu" and float32 for
the CPU's fused ops. Kinds: softmax (x[N, C] over the last dim), gemm (a[M,K] @ b[K,N]), attention
(F.scaled_dot_product_attention, q/k/v [B,H,T,D], fwd or fwd+bwd), layer_norm / rms_norm (F.layer_norm,
F.rms_norm where torch has it; fwd or fwd+bwd), patch_embed (F.conv2d stride = kernel, then the
[B, P, O] view CLIP uses), cross_entropy (fwd+bwd with the fp32 upcast HF uses: F.cross_entropy(x.float())),
llama_train (LLaMA decoder layers as HF writes them: RMSNorm in fp32, rotate-half RoPE, SDPA causal,
SwiGLU; embed + lm_head; loss on fp32 logits; AdamW fused on CUDA) with peak memory.

Timing: warm-up calls, then the median of up to `reps` samples; a sample is `inner` calls between two
torch.cuda.Event records (inner chosen from the warm-up so a sample lasts ~5 ms), divided by inner. On the
CPU (for bench --gpu-dry-run) time.perf_counter() replaces the events.
Prints {"peer": ...} first, then {"key", "median_ms", "min_ms", "samples"[, "peak_gib"]} per case, or
{"key", "error"} for a case that failed. Without torch (or without CUDA when the spec asks for it) it
prints {"skipped": "torch", "reason": ...} and exits 0.
"""
import argparse
import json
import math
import sys
import time


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="JSON file written by bench/gpu_cases.ts")
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    try:
        import torch
        import torch.nn.functional as F  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means no peer
        emit({"skipped": "torch", "reason": f"torch cannot be imported: {e}"})
        return 0
    device = spec.get("device", "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        emit({"skipped": "torch", "reason": f"torch {torch.__version__} sees no CUDA device"})
        return 0
    dtype = getattr(torch, spec.get("dtype", "bfloat16"))
    reps = int(spec.get("reps", 10))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    desc = f"torch {torch.__version__}"
    if device == "cpu":
        desc += f" (cpu, {torch.get_num_threads()} threads)"
    if device == "cuda":
        desc += f" (CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)})"
        # Same numerics as the engine: no TF32 for fp32 maths (the bf16 cases do not use it anyway).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    emit({"peer": desc})
    runner = Runner(torch, device, dtype, reps)
    runner.clock = spec.get("clock", "wall")
    for case in spec["cases"]:
        key = case["key"]
        try:
            res = runner.run(case)
            res["key"] = key
            emit(res)
        except Exception as e:  # noqa: BLE001 - report and go on with the next case
            emit({"key": key, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        finally:
            runner.cleanup()
    return 0


class Runner:
    def __init__(self, torch, device, dtype, reps):
        self.torch = torch
        self.F = torch.nn.functional
        self.device = device
        self.dtype = dtype
        self.reps = reps
        self.clock = "wall"  # or "process": CPU samples in CPU time (the spec's `clock`, bench --cpu-time)
        self.gen = torch.Generator(device="cpu").manual_seed(0)

    def cleanup(self):
        import gc

        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()

    # ------------------------------------------------------------------ helpers
    def rand(self, shape, scale=1.0, requires_grad=False):
        t = (self.torch.rand(shape, generator=self.gen) * 2 - 1) * scale
        t = t.to(device=self.device, dtype=self.dtype)
        return t.requires_grad_(requires_grad)

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def time(self, fn, warmup=2, reps=None, max_s=3.0, min_reps=3):
        reps = reps or self.reps
        torch = self.torch
        self.sync()
        warm = 0.0
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            self.sync()
            warm = time.perf_counter() - t0
        inner = max(1, min(50, int(0.005 / warm))) if self.device == "cuda" and warm > 0 else 1
        samples = []
        start = time.perf_counter()
        while len(samples) < reps:
            if self.device == "cuda":
                a = torch.cuda.Event(enable_timing=True)
                b = torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(inner):
                    fn()
                b.record()
                b.synchronize()
                samples.append(a.elapsed_time(b) / inner)
            else:
                clock = time.process_time if self.clock == "process" else time.perf_counter
                t0 = clock()
                fn()
                samples.append((clock() - t0) * 1e3)
            if len(samples) >= min_reps and time.perf_counter() - start > max_s:
                break
        samples.sort()
        return {"median_ms": samples[len(samples) // 2], "min_ms": samples[0], "samples": len(samples)}

    def sdpa(self, q, k, v, causal):
        F = self.F
        if hasattr(F, "scaled_dot_product_attention"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        # torch < 2.0 (CPU dry runs only): the materialised composite
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if causal:
            T, S = s.shape[-2], s.shape[-1]
            mask = self.torch.ones(T, S, dtype=self.torch.bool, device=q.device).tril(S - T)
            s = s.masked_fill(~mask, float("-inf"))
        return s.softmax(-1) @ v

    def rms_norm(self, x, w, eps):
        F = self.F
        if hasattr(F, "rms_norm"):
            return F.rms_norm(x, (x.shape[-1],), w, eps)
        x32 = x.float()
        return (x32 * self.torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

    # ------------------------------------------------------------------ cases
    def run(self, c):
        kind = c["kind"]
        saved = self.dtype
        if c.get("dtype"):  # a case may override the spec's dtype (bench/cpu_kernels.ts mixes f32 and bf16)
            self.dtype = getattr(self.torch, c["dtype"])
        try:
            return getattr(self, "case_" + kind)(c)
        finally:
            self.dtype = saved

    def _fwd_or_step(self, inputs, f, out_shape, bwd):
        """Times f() under no_grad, or f().backward(g) with the inputs' grads cleared each call."""
        if not bwd:
            with self.torch.no_grad():
                return self.time(f)
        g = self.rand(out_shape)

        def step():
            f().backward(g)
            for t in inputs:
                t.grad = None

        return self.time(step)

    def case_softmax(self, c):
        bwd = c.get("bwd", False)
        x = self.rand((c["N"], c["C"]), requires_grad=bwd)
        return self._fwd_or_step([x], lambda: x.softmax(-1), (c["N"], c["C"]), bwd)

    def case_unary(self, c):
        """silu / gelu / gelu_tanh / quick_gelu on x[N, C], fwd or fwd+bwd. quick_gelu is written as
        transformers' QuickGELUActivation computes it (torch has no fused kernel for it)."""
        bwd = c.get("bwd", False)
        x = self.rand((c["N"], c["C"]), scale=3.0, requires_grad=bwd)
        F = self.F
        op = c["op"]
        f = {
            "silu": lambda: F.silu(x),
            "gelu": lambda: F.gelu(x),
            "gelu_tanh": lambda: F.gelu(x, approximate="tanh"),
            "quick_gelu": lambda: x * self.torch.sigmoid(1.702 * x),
        }[op]
        return self._fwd_or_step([x], f, (c["N"], c["C"]), bwd)

    def case_swiglu(self, c):
        """silu(a) * b, the LLaMA MLP's gate, on [N, C], fwd or fwd+bwd."""
        bwd = c.get("bwd", False)
        a = self.rand((c["N"], c["C"]), scale=3.0, requires_grad=bwd)
        b = self.rand((c["N"], c["C"]), requires_grad=bwd)
        return self._fwd_or_step([a, b], lambda: self.F.silu(a) * b, (c["N"], c["C"]), bwd)

    def case_linear(self, c):
        """x[M, K] @ W[N, K]^T (F.linear, no bias), fwd or fwd+bwd."""
        bwd = c.get("bwd", False)
        x = self.rand((c["M"], c["K"]), requires_grad=bwd)
        w = self.rand((c["N"], c["K"]), scale=0.05, requires_grad=bwd)
        return self._fwd_or_step([x, w], lambda: self.F.linear(x, w), (c["M"], c["N"]), bwd)

    def case_gemm(self, c):
        a = self.rand((c["M"], c["K"]))
        b = self.rand((c["K"], c["N"]))
        with self.torch.no_grad():
            return self.time(lambda: a @ b)

    def case_attention(self, c):
        shape = (c["B"], c["H"], c["T"], c["D"])
        kv_shape = (c["B"], c["H"], c.get("S", c["T"]), c["D"])
        bwd = c["bwd"]
        q = self.rand(shape, requires_grad=bwd)
        k, v = (self.rand(kv_shape, requires_grad=bwd) for _ in range(2))
        causal = c["causal"]
        if not bwd:
            with self.torch.no_grad():
                return self.time(lambda: self.sdpa(q, k, v, causal))
        g = self.rand(shape)

        def step():
            self.sdpa(q, k, v, causal).backward(g)
            q.grad = k.grad = v.grad = None

        return self.time(step)

    def _norm(self, c, kind):
        N, C = c["N"], c["C"]
        bwd = c["bwd"]
        x = self.rand((N, C), requires_grad=bwd)
        w = self.rand((C,), requires_grad=bwd)
        b = self.rand((C,), requires_grad=bwd)
        F = self.F
        if kind == "layer_norm":
            f = lambda: F.layer_norm(x, (C,), w, b, 1e-5)  # noqa: E731
        else:
            f = lambda: self.rms_norm(x, w, 1e-6)  # noqa: E731
        if not bwd:
            with self.torch.no_grad():
                return self.time(f)
        g = self.rand((N, C))

        def step():
            f().backward(g)
            x.grad = w.grad = b.grad = None

        return self.time(step)

    def case_layer_norm(self, c):
        return self._norm(c, "layer_norm")

    def case_rms_norm(self, c):
        return self._norm(c, "rms_norm")

    def case_patch_embed(self, c):
        x = self.rand((c["B"], c["C"], c["img"], c["img"]))
        w = self.rand((c["O"], c["C"], c["patch"], c["patch"]), 0.05)
        b = self.rand((c["O"],))
        p = c["patch"]
        with self.torch.no_grad():
            return self.time(lambda: self.F.conv2d(x, w, b, stride=p).flatten(2).transpose(1, 2))

    def case_cross_entropy(self, c):
        N, V = c["N"], c["V"]
        x = self.rand((N, V), 4.0, requires_grad=True)
        t = (self.torch.arange(N) * 7919 % V).to(self.device)

        def step():
            self.F.cross_entropy(x.float(), t).backward()
            x.grad = None

        return self.time(step)

    def case_llama_train(self, c):
        torch = self.torch
        nn = torch.nn
        F = self.F
        B, T, L, C, I, H, V = c["B"], c["T"], c["layers"], c["hidden"], c["inter"], c["heads"], c["vocab"]
        D = C // H
        runner = self

        class RMSNorm(nn.Module):
            # HF LlamaRMSNorm: normalise in fp32, cast back, then scale
            def __init__(self, n, eps=1e-5):
                super().__init__()
                self.weight = nn.Parameter(torch.ones(n))
                self.eps = eps

            def forward(self, x):
                x32 = x.float()
                return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

        def rot(x, cos, sin):
            x1, x2 = x[..., : D // 2], x[..., D // 2:]
            return x * cos + torch.cat((-x2, x1), -1) * sin

        class Layer(nn.Module):
            def __init__(self):
                super().__init__()
                self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(C, C, bias=False) for _ in range(4))
                self.gate_proj = nn.Linear(C, I, bias=False)
                self.up_proj = nn.Linear(C, I, bias=False)
                self.down_proj = nn.Linear(I, C, bias=False)
                self.input_layernorm = RMSNorm(C)
                self.post_attention_layernorm = RMSNorm(C)

            def forward(self, x, cos, sin):
                h = self.input_layernorm(x)
                heads = lambda t: t.view(B, T, H, D).transpose(1, 2)  # noqa: E731
                q = rot(heads(self.q_proj(h)), cos, sin)
                k = rot(heads(self.k_proj(h)), cos, sin)
                v = heads(self.v_proj(h))
                o = runner.sdpa(q, k, v, True)
                x = x + self.o_proj(o.transpose(1, 2).reshape(B, T, C))
                h = self.post_attention_layernorm(x)
                return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed_tokens = nn.Embedding(V, C)
                nn.init.normal_(self.embed_tokens.weight, std=0.02)
                self.layers = nn.ModuleList(Layer() for _ in range(L))
                self.norm = RMSNorm(C)
                self.lm_head = nn.Linear(C, V, bias=False)

            def forward(self, ids, cos, sin):
                x = self.embed_tokens(ids)
                for layer in self.layers:
                    x = layer(x, cos, sin)
                return self.lm_head(self.norm(x))

        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model = Model().to(device=self.device, dtype=self.dtype)
        try:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=self.device == "cuda")
        except TypeError:  # torch without the fused flag
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
        N = B * T
        ids = (torch.arange(N) * 7919 % V).view(B, T).to(self.device)
        targets = ((torch.arange(N) + 1) * 7919 % V).to(self.device)
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        f = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        emb = torch.cat((f, f), -1)
        cos = emb.cos().to(device=self.device, dtype=self.dtype)
        sin = emb.sin().to(device=self.device, dtype=self.dtype)

        def step():
            logits = model(ids, cos, sin)
            F.cross_entropy(logits.float().view(N, V), targets).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        res = self.time(step, warmup=1, reps=int(c.get("steps", 5)), max_s=12.0, min_reps=2)
        res["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        if self.device == "cuda":
            res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        del model, opt
        return res

    def case_clip_forward(self, c):
        # A CLIP vision tower (HF CLIPVisionModel's layout, quick_gelu) under no_grad: the frozen half of a
        # LLaVA training step. Weights N(0, 0.02), layer norms at their init.
        torch = self.torch
        nn = torch.nn
        F = self.F
        B, S, P, L, C, I, H = c["B"], c["image"], c["patch"], c["layers"], c["hidden"], c["inter"], c["heads"]
        D = C // H
        runner = self

        class Layer(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
                self.q, self.k, self.v, self.o = (nn.Linear(C, C) for _ in range(4))
                self.fc1, self.fc2 = nn.Linear(C, I), nn.Linear(I, C)

            def forward(self, x):
                n = x.shape[1]
                h = self.ln1(x)
                heads = lambda t: t.view(B, n, H, D).transpose(1, 2)  # noqa: E731
                a = runner.sdpa(heads(self.q(h)), heads(self.k(h)), heads(self.v(h)), False)
                x = x + self.o(a.transpose(1, 2).reshape(B, n, C))
                h = self.fc1(self.ln2(x))
                return x + self.fc2(h * torch.sigmoid(1.702 * h))

        class Tower(nn.Module):
            def __init__(self):
                super().__init__()
                self.patch = nn.Conv2d(3, C, P, P, bias=False)
                self.cls = nn.Parameter(torch.zeros(C))
                self.pos = nn.Parameter(torch.zeros((S // P) ** 2 + 1, C))
                self.pre = nn.LayerNorm(C)
                self.layers = nn.ModuleList(Layer() for _ in range(L))

            def forward(self, px):
                x = self.patch(px).flatten(2).transpose(1, 2)
                x = torch.cat((self.cls.expand(B, 1, C), x), 1) + self.pos
                x = self.pre(x)
                for layer in self.layers:
                    x = layer(x)
                return x

        model = Tower()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "ln" not in name and "pre" not in name:
                    p.normal_(0, 0.02)
        model = model.to(device=self.device, dtype=self.dtype)
        px = torch.randn(B, 3, S, S).to(device=self.device, dtype=self.dtype)

        def step():
            with torch.no_grad():
                model(px)

        res = self.time(step, warmup=1, reps=int(c.get("steps", 5)), max_s=12.0, min_reps=2)
        del model
        return res

    def case_llama_decode(self, c):
        """Greedy decode with a KV cache through a LLaMA layer stack (weights N(0, 0.02), RMSNorm weights
        of one, batch 1): 1 prompt token, then `steps` tokens, each step's argmax fed back; times the
        whole decode. Plain tensors, no modules: what a minimal torch decode loop costs."""
        torch = self.torch
        F = self.F
        L, C, I, H, V, steps = c["layers"], c["hidden"], c["inter"], c["heads"], c["vocab"], c["steps"]
        D = C // H
        dt = self.dtype
        gen = torch.Generator().manual_seed(1)

        def w(*shape):
            return (torch.randn(*shape, generator=gen) * 0.02).to(dt)

        names = [("q", C, C), ("k", C, C), ("v", C, C), ("o", C, C), ("gate", I, C), ("up", I, C), ("down", C, I)]
        layers = [{n: w(r, k) for n, r, k in names} for _ in range(L)]
        emb, head = w(V, C), w(V, C)
        T = steps + 1
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        f = torch.outer(torch.arange(T, dtype=torch.float32), inv)
        ang = torch.cat((f, f), -1)
        cos, sin = ang.cos().to(dt), ang.sin().to(dt)

        def rms(x):
            x32 = x.float()
            return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dt)

        def rot(x, p):
            x1, x2 = x[..., : D // 2], x[..., D // 2 :]
            return x * cos[p] + torch.cat((-x2, x1), -1) * sin[p]

        def decode():
            kc = [torch.empty(H, T, D, dtype=dt) for _ in range(L)]
            vc = [torch.empty(H, T, D, dtype=dt) for _ in range(L)]
            tok = 1
            for p in range(T):
                x = emb[tok].view(1, C)
                for i, ly in enumerate(layers):
                    h = rms(x)
                    q = rot(F.linear(h, ly["q"]).view(H, 1, D), p)
                    kc[i][:, p] = rot(F.linear(h, ly["k"]).view(H, D), p)
                    vc[i][:, p] = F.linear(h, ly["v"]).view(H, D)
                    s = (q @ kc[i][:, : p + 1].transpose(1, 2)).float() / D**0.5
                    a = torch.softmax(s, -1).to(dt) @ vc[i][:, : p + 1]
                    x = x + F.linear(a.reshape(1, C), ly["o"])
                    h = rms(x)
                    x = x + F.linear(F.silu(F.linear(h, ly["gate"])) * F.linear(h, ly["up"]), ly["down"])
                tok = int(F.linear(rms(x), head).argmax())

        with torch.no_grad():
            return self.time(decode, warmup=1, reps=int(c.get("reps", 3)), max_s=30.0, min_reps=2)


if __name__ == "__main__":
    sys.exit(main())
