// cpu_kernels.ts — the CPU kernel cases of issue 17 against PyTorch on the CPU: bf16 matmul and
// linear (with our own f32 matmul of the same shape as a second ratio), bf16 and f32 softmax, bf16
// layer and RMS norm, and the activations (silu, gelu, CLIP's quick_gelu, the fused SwiGLU =
// silu(a)·b and that product unfused) forward and forward+backward, in f32 and bf16.
//
// The peer is bench/torch_peer.py (kinds gemm, linear, softmax, layer_norm, rms_norm, unary, swiglu; each case names its
// dtype), run once for every selected case before the engine's timings, with torch pinned to the
// engine's thread count (2 on the dev machine). ratio = torch_ms / ours (> 1: we are faster). Without
// torch a `skipped` line says why and the cases are reported without a baseline.
import * as os from 'os';
import * as L from '../lib';
import { native } from '../lib/native';
import { BenchOptions, CaseRecord, PeerResult, attentionFlops, emit, peerMs, randU, report, round, runPeerSpec, selected, timeIt } from './harness';

const dev = 'cpu' as const;

interface KernelCase {
  rec: CaseRecord;
  spec: Record<string, unknown> & { kind: string };
  kind: 'flops' | 'bytes';
  work: number;
  /** Makes the inputs; returns the call to time, an optional f32 twin (ratio vs our f32) and what to free. */
  setup: () => { run: () => unknown; f32?: () => unknown; owned: L.Tensor[] };
}

const keyOf = (r: CaseRecord): string => `${r.op} ${r.scenario} ${r.dtype} ${r.shape}`;
type DT = 'float32' | 'bfloat16';
const bytesOf = (dt: DT): number => (dt === 'float32' ? 4 : 2);

/** fwd, or fwd+bwd with a fixed upstream gradient and the inputs' grads cleared after each call. */
function step(inputs: L.Tensor[], f: () => L.Tensor, bwd: boolean, g: L.Tensor | null): () => unknown {
  if (!bwd) return () => L.noGrad(f);
  return () => {
    f().backward(g!);
    inputs.forEach((t) => t.zeroGrad());
  };
}

function table(o: BenchOptions): KernelCase[] {
  const cases: KernelCase[] = [];
  const rec = (op: string, scenario: string, dtype: DT, shape: string): CaseRecord => ({ op, scenario, dtype, device: dev, shape });
  for (const n of o.quick ? [512, 1024] : [512, 1024, 2048]) {
    cases.push({
      rec: rec('matmul', `square ${n}`, 'bfloat16', `${n}x${n}x${n}`),
      spec: { kind: 'gemm', M: n, K: n, N: n, dtype: 'bfloat16' },
      kind: 'flops',
      work: 2 * n * n * n,
      setup: () => {
        const a = randU([n, n], 'bfloat16', dev, 1);
        const b = randU([n, n], 'bfloat16', dev, 2);
        const a32 = randU([n, n], 'float32', dev, 1);
        const b32 = randU([n, n], 'float32', dev, 2);
        return { run: () => L.matmul(a, b), f32: () => L.matmul(a32, b32), owned: [a, b, a32, b32] };
      },
    });
  }
  for (const bwd of o.quick ? [false] : [false, true]) {
    const [M, K, N] = [256, 2048, 5504];
    cases.push({
      rec: rec('linear', bwd ? 'fwd+bwd' : 'fwd', 'bfloat16', `${M}x${K}x${N}`),
      spec: { kind: 'linear', M, K, N, bwd, dtype: 'bfloat16' },
      kind: 'flops',
      work: 2 * M * K * N * (bwd ? 3 : 1),
      setup: () => {
        const mk = (dt: DT) => {
          const x = randU([M, K], dt, dev, 3).setRequiresGrad(bwd);
          const w = randU([N, K], dt, dev, 4).setRequiresGrad(bwd);
          const g = bwd ? randU([M, N], dt, dev, 5) : null;
          return { run: step([x, w], () => L.matmul(x, w.transpose(0, 1)), bwd, g), owned: [x, w, ...(g ? [g] : [])] };
        };
        const b16 = mk('bfloat16');
        const f32 = mk('float32');
        return { run: b16.run, f32: f32.run, owned: [...b16.owned, ...f32.owned] };
      },
    });
  }
  const [SN, SC] = [4096, 4096];
  for (const dt of ['bfloat16', 'float32'] as DT[])
    for (const bwd of [false, true]) {
      cases.push({
        rec: rec('softmax', bwd ? 'fwd+bwd' : 'fwd', dt, `${SN}x${SC}`),
        spec: { kind: 'softmax', N: SN, C: SC, bwd, dtype: dt },
        kind: 'bytes',
        work: (bwd ? 5 : 2) * SN * SC * bytesOf(dt),
        setup: () => {
          const x = randU([SN, SC], dt, dev, 6).setRequiresGrad(bwd);
          const g = bwd ? randU([SN, SC], dt, dev, 7) : null;
          return { run: step([x], () => L.softmax(x, -1), bwd, g), owned: [x, ...(g ? [g] : [])] };
        },
      });
    }
  // bf16 layer/RMS norm, read and written as bf16 with f32 statistics (x, weight and bias all train in
  // fwd+bwd, as in the peer).
  const [NN, NC] = [8192, 1024];
  for (const op of ['layer_norm', 'rms_norm'])
    for (const bwd of [false, true]) {
      cases.push({
        rec: rec(op, bwd ? 'fwd+bwd' : 'fwd', 'bfloat16', `${NN}x${NC}`),
        spec: { kind: op, N: NN, C: NC, bwd, dtype: 'bfloat16' },
        kind: 'bytes',
        work: (bwd ? 5 : 2) * NN * NC * 2,
        setup: () => {
          const x = randU([NN, NC], 'bfloat16', dev, 11).setRequiresGrad(bwd);
          const w = randU([NC], 'bfloat16', dev, 12).setRequiresGrad(bwd);
          const b = randU([NC], 'bfloat16', dev, 13).setRequiresGrad(bwd);
          const g = bwd ? randU([NN, NC], 'bfloat16', dev, 14) : null;
          const f = op === 'layer_norm' ? () => L.layerNorm(x, NC, w, b, 1e-5) : () => L.rmsNorm(x, w, 1e-6);
          return { run: step(op === 'layer_norm' ? [x, w, b] : [x, w], f, bwd, g), owned: [x, w, b, ...(g ? [g] : [])] };
        },
      });
    }
  // bf16 attention at the ViT-L/14-336 shape (f32 twin: our f32 run of the same shape).
  const [AB, AH, AT, AD] = [1, 16, 577, 64];
  for (const bwd of o.quick ? [false] : [false, true])
    cases.push({
      rec: rec('attention', `vit_l14_336 ${bwd ? 'fwd+bwd' : 'fwd'}`, 'bfloat16', `B${AB} H${AH} T${AT} D${AD}`),
      spec: { kind: 'attention', B: AB, H: AH, T: AT, S: AT, D: AD, causal: false, bwd, dtype: 'bfloat16' },
      kind: 'flops',
      work: attentionFlops(AB, AH, AT, AT, AD, false, bwd),
      setup: () => {
        const mk = (dt: DT) => {
          const qkv = [21, 22, 23].map((seed) => randU([AB, AH, AT, AD], dt, dev, seed).setRequiresGrad(bwd));
          const g = bwd ? randU([AB, AH, AT, AD], dt, dev, 24) : null;
          const [q, k, v] = qkv;
          return { run: step(qkv, () => L.scaledDotProductAttention(q, k, v), bwd, g), owned: [...qkv, ...(g ? [g] : [])] };
        };
        const b16 = mk('bfloat16');
        const f32 = mk('float32');
        return { run: b16.run, f32: f32.run, owned: [...b16.owned, ...f32.owned] };
      },
    });
  const [AN, AC] = [512, 1376];
  for (const dt of ['float32', 'bfloat16'] as DT[])
    for (const op of ['silu', 'gelu', 'quick_gelu', 'swiglu', 'swiglu_composite'])
      for (const bwd of [false, true]) {
        const two = op.startsWith('swiglu');
        cases.push({
          rec: rec(op, bwd ? 'fwd+bwd' : 'fwd', dt, `${AN}x${AC}`),
          spec: two ? { kind: 'swiglu', N: AN, C: AC, bwd, dtype: dt } : { kind: 'unary', op, N: AN, C: AC, bwd, dtype: dt },
          kind: 'bytes',
          work: ((two ? 3 : 2) + (bwd ? (two ? 5 : 3) : 0)) * AN * AC * bytesOf(dt),
          setup: () => {
            const a = randU([AN, AC], dt, dev, 8).setRequiresGrad(bwd);
            const b = randU([AN, AC], dt, dev, 9).setRequiresGrad(bwd);
            const g = bwd ? randU([AN, AC], dt, dev, 10) : null;
            const fns: Record<string, () => L.Tensor> = {
              silu: () => L.silu(a),
              gelu: () => L.gelu(a),
              quick_gelu: () => L.quickGelu(a),
              swiglu: () => L.swiglu(a, b),
              swiglu_composite: () => L.mul(L.silu(a), b),
            };
            const f = fns[op];
            return { run: step(two ? [a, b] : [a], f, bwd, g), owned: [a, b, ...(g ? [g] : [])] };
          },
        });
      }
  return cases;
}

/** Runs bench/torch_peer.py on the CPU for these cases (each a key and its peer spec), pinned to the pool's threads. */
export function cpuTorchPeer(o: BenchOptions, cases: Record<string, unknown>[], reps: number): PeerResult | null {
  if (o.noPeers || !cases.length) return null;
  const spec = {
    device: dev,
    dtype: 'float32',
    reps,
    // the engine's pool size (cpp/cpu_backend.cc: LLAVA_NUM_THREADS, else every core)
    threads: Number(process.env.LLAVA_NUM_THREADS) || os.cpus().length,
    clock: o.cpuTime ? 'process' : 'wall',
    cases,
  };
  // The configured python first, then Debian's (python3-torch) when that one has no torch.
  const reasons: string[] = [];
  for (const py of [...new Set([o.python, '/usr/bin/python3'])]) {
    const p = runPeerSpec(py, 'torch_peer.py', spec, 900_000);
    if (p.ok) return p;
    reasons.push(`${py}: ${p.reason ?? 'torch_peer.py failed'}`);
  }
  emit({ op: 'cpu kernels', device: dev, skipped: 'torch', reason: reasons.join('; ') });
  return null;
}

/** The issue-17 kernel cases: ours vs torch (and bf16 vs our f32 where there is an f32 twin). */
export function runCpuKernelCases(o: BenchOptions): void {
  const reps = o.quick ? 5 : 10;
  const maxMs = o.quick ? 1200 : 3000;
  const cases = table(o).filter((c) => selected(o, c.rec));
  const peer = cpuTorchPeer(
    o,
    cases.map((c) => ({ key: keyOf(c.rec), ...c.spec })),
    reps,
  );
  // The instruction set the kernels ran with (cpp/cpu_isa.h): 'amx' means the bf16 products ran the AMX tile.
  const isa = native.cpuIsa().active;
  for (const c of cases) {
    const { run, f32, owned } = c.setup();
    try {
      const t = timeIt(run, { device: dev, reps, maxMs });
      const extra: Record<string, unknown> = { isa };
      if (f32) {
        const t32 = timeIt(f32, { device: dev, reps, maxMs });
        extra.f32_ms = t32.median_ms;
        extra.vs_our_f32 = round(t32.median_ms / t.median_ms, 3);
      }
      const ms = peerMs(peer, keyOf(c.rec));
      report(c.rec, t, c.kind, c.work, peer && ms !== null ? { name: peer.version ?? 'torch', ms } : null, extra);
    } finally {
      owned.forEach((x) => x.dispose());
    }
  }
}
