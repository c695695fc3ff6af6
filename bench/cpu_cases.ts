// cpu_cases.ts — the CPU benchmark cases: f32 GEMM against numpy (one python3 run for all shapes),
// the fused ops against their composite fallbacks (softmax, layer/RMS norm, attention, cross-entropy),
// and the tiny LLaVA fixture: a stage-2 training step (loss, backward, AdamW) and a forward.
//
// Shapes: matmul M x K @ K x N square; softmax 4096x4096; norms 8192x1024; attention `vit_l14_336`
// (B1 H16 T577 D64, the CLIP tower) and B1 H8 T2048 D128 causal; cross-entropy 2048x32000.
// Attention FLOPs = 4·B·H·T·S·D, halved when causal (fwd+bwd counted 3.5x fwd: bwd = 2.5x), the rule
// of docs/anchors.md. Bytes for memory-bound ops = what the fused kernel must read + write once.
import * as L from '../lib';
import { loadLlava } from '../lib/models/loader';
import { AdamW } from '../lib/optim';
import { fixtureDir, tinyLlavaRef } from '../test/gpu/fixture';
import { BenchOptions, CaseRecord, Timing, emit, peerMs, randU, report, runPeer, selected, timeIt, benchDir, round } from './harness';
import * as path from 'path';

const dev = 'cpu' as const;

interface Knobs {
  reps: number;
  maxMs: number;
}
const knobs = (o: BenchOptions): Knobs => (o.quick ? { reps: 5, maxMs: 1200 } : { reps: 10, maxMs: 3000 });

/** Time the engine and its composite baseline back to back; one JSON line. */
function fusedVsComposite(
  rec: CaseRecord,
  k: Knobs,
  fused: () => unknown,
  composite: () => unknown,
  kind: 'flops' | 'bytes',
  work: number,
  slow = false,
): void {
  const o = slow ? { device: dev, reps: 3, minReps: 2, maxMs: k.maxMs } : { device: dev, reps: k.reps, maxMs: k.maxMs };
  const tf = timeIt(fused, o);
  const tc = timeIt(composite, o);
  report(rec, tf, kind, work, { name: 'composite', ms: tc.median_ms });
}

function matmulCases(o: BenchOptions, k: Knobs): void {
  const sizes = [256, 512, 1024, 2048];
  const recs = sizes.map((n) => ({ n, rec: { op: 'matmul', scenario: `square ${n}`, dtype: 'float32', device: dev, shape: `${n}x${n}x${n}` } as CaseRecord }));
  const todo = recs.filter((r) => selected(o, r.rec));
  if (!todo.length) return;
  // numpy first, in one python3 run, so both sides see the machine in the same state.
  let peer = null;
  if (!o.noPeers) {
    peer = runPeer(o.python, path.join(benchDir(), 'numpy_peer.py'), ['--shapes', todo.map((r) => `${r.n}x${r.n}x${r.n}`).join(','), '--max-time', String(k.maxMs / 1000), '--reps', String(k.reps)], 600_000);
    if (!peer.ok) {
      emit({ op: 'matmul', device: dev, skipped: 'numpy', reason: peer.reason });
      peer = null;
    }
  }
  for (const { n, rec } of todo) {
    const a = randU([n, n], 'float32', dev, 1);
    const b = randU([n, n], 'float32', dev, 2);
    const t = timeIt(() => L.matmul(a, b), { device: dev, reps: k.reps, maxMs: k.maxMs });
    const base = peer ? { name: peer.version ?? 'numpy', ms: peerMs(peer, `matmul ${n}x${n}x${n} float32`) } : null;
    report(rec, t, 'flops', 2 * n * n * n, base);
    a.dispose();
    b.dispose();
  }
}

function softmaxCase(o: BenchOptions, k: Knobs): void {
  const [N, C] = [4096, 4096];
  const rec: CaseRecord = { op: 'softmax', scenario: 'rows', dtype: 'float32', device: dev, shape: `${N}x${C}` };
  if (!selected(o, rec)) return;
  const x = randU([N, C], 'float32', dev, 3);
  fusedVsComposite(
    rec,
    k,
    () => L.softmax(x, -1),
    () => {
      const e = L.exp(L.sub(x, L.max(x, -1, true)));
      return L.div(e, L.sum(e, -1, true));
    },
    'bytes',
    2 * N * C * 4,
  );
  x.dispose();
}

function normCases(o: BenchOptions, k: Knobs): void {
  const [N, C] = [8192, 1024];
  const eps = 1e-5;
  const x = randU([N, C], 'float32', dev, 4);
  const w = randU([C], 'float32', dev, 5);
  const b = randU([C], 'float32', dev, 6);
  const lnComposite = (xx: L.Tensor): L.Tensor => {
    const mu = L.mean(xx, -1, true);
    const xc = L.sub(xx, mu);
    const v = L.mean(L.square(xc), -1, true);
    return L.add(L.mul(L.mul(xc, L.rsqrt(L.add(v, eps))), w), b);
  };
  const rmsComposite = (xx: L.Tensor): L.Tensor => L.mul(L.mul(xx, L.rsqrt(L.add(L.mean(L.square(xx), -1, true), eps))), w);
  const ln: CaseRecord = { op: 'layer_norm', scenario: 'fwd', dtype: 'float32', device: dev, shape: `${N}x${C}` };
  if (selected(o, ln)) fusedVsComposite(ln, k, () => L.layerNorm(x, C, w, b, eps), () => lnComposite(x), 'bytes', 2 * N * C * 4);
  const rms: CaseRecord = { op: 'rms_norm', scenario: 'fwd', dtype: 'float32', device: dev, shape: `${N}x${C}` };
  if (selected(o, rms)) fusedVsComposite(rms, k, () => L.rmsNorm(x, w, eps), () => rmsComposite(x), 'bytes', 2 * N * C * 4);
  const lnb: CaseRecord = { op: 'layer_norm', scenario: 'fwd+bwd', dtype: 'float32', device: dev, shape: `${N}x${C}` };
  if (selected(o, lnb) && !o.quick) {
    const xg = x.clone().setRequiresGrad(true);
    const g = randU([N, C], 'float32', dev, 7);
    const step = (f: (t: L.Tensor) => L.Tensor) => () => {
      f(xg).backward(g);
      xg.zeroGrad();
    };
    // fwd reads x, writes y; bwd reads x, dy, writes dx (weights are small)
    fusedVsComposite(lnb, k, step((t) => L.layerNorm(t, C, w, b, eps)), step(lnComposite), 'bytes', 5 * N * C * 4);
    xg.dispose();
    g.dispose();
  }
  [x, w, b].forEach((t) => t.dispose());
}

export function attentionFlops(B: number, H: number, T: number, S: number, D: number, causal: boolean, bwd: boolean): number {
  const f = (4 * B * H * T * S * D) / (causal ? 2 : 1);
  return bwd ? f * 3.5 : f;
}

function attentionCases(o: BenchOptions, k: Knobs): void {
  const shapes = [
    { scenario: 'vit_l14_336', B: 1, H: 16, T: 577, D: 64, causal: false, bwd: false },
    { scenario: 'vit_l14_336', B: 1, H: 16, T: 577, D: 64, causal: false, bwd: true },
    { scenario: 'T2048 causal', B: 1, H: 8, T: 2048, D: 128, causal: true, bwd: false },
  ];
  for (const s of shapes) {
    if (s.bwd && o.quick) continue;
    const rec: CaseRecord = {
      op: 'attention',
      scenario: `${s.scenario} ${s.bwd ? 'fwd+bwd' : 'fwd'}`,
      dtype: 'float32',
      device: dev,
      shape: `B${s.B} H${s.H} T${s.T} D${s.D}${s.causal ? ' causal' : ''}`,
    };
    if (!selected(o, rec)) continue;
    const q = randU([s.B, s.H, s.T, s.D], 'float32', dev, 11);
    const kk = randU([s.B, s.H, s.T, s.D], 'float32', dev, 12);
    const v = randU([s.B, s.H, s.T, s.D], 'float32', dev, 13);
    const opts = { isCausal: s.causal };
    const slow = s.T >= 2048; // the composite materialises H·T² scores: few repetitions
    if (!s.bwd) {
      fusedVsComposite(rec, k, () => L.scaledDotProductAttention(q, kk, v, opts), () => L.attentionComposite(q, kk, v, opts), 'flops', attentionFlops(s.B, s.H, s.T, s.T, s.D, s.causal, false), slow);
    } else {
      [q, kk, v].forEach((t) => t.setRequiresGrad(true));
      const g = randU([s.B, s.H, s.T, s.D], 'float32', dev, 14);
      const step = (f: typeof L.attentionComposite) => () => {
        f(q, kk, v, opts).backward(g);
        [q, kk, v].forEach((t) => t.zeroGrad());
      };
      fusedVsComposite(rec, k, step(L.scaledDotProductAttention), step(L.attentionComposite), 'flops', attentionFlops(s.B, s.H, s.T, s.T, s.D, s.causal, true), slow);
      g.dispose();
    }
    [q, kk, v].forEach((t) => t.dispose());
  }
}

function crossEntropyCase(o: BenchOptions, k: Knobs): void {
  const [N, V] = [2048, 32000];
  const rec: CaseRecord = { op: 'cross_entropy', scenario: 'fwd+bwd', dtype: 'float32', device: dev, shape: `${N}x${V}` };
  if (!selected(o, rec)) return;
  const x = randU([N, V], 'float32', dev, 21).setRequiresGrad(true);
  const tv = Array.from({ length: N }, (_, i) => (i * 7919) % V);
  const t = L.tensor(tv, { dtype: 'int64' });
  const t2 = L.reshape(t, [N, 1]);
  const fused = (): void => {
    L.crossEntropy(x, t).backward();
    x.zeroGrad();
  };
  const composite = (): void => {
    const lse = L.logsumexp(x, -1);
    const picked = L.reshape(L.gather(x, 1, t2), [N]);
    L.mean(L.sub(lse, picked)).backward();
    x.zeroGrad();
  };
  // fwd reads the logits, bwd reads them again and writes dlogits
  fusedVsComposite(rec, k, fused, composite, 'bytes', 3 * N * V * 4);
  [x, t, t2].forEach((z) => z.dispose());
}

function llavaCases(o: BenchOptions, k: Knobs): void {
  const train: CaseRecord = { op: 'llava_train_step', scenario: 'tiny-llava stage 2 (loss, backward, AdamW)', dtype: 'float32', device: dev, shape: '' };
  const fwd: CaseRecord = { op: 'llava_forward', scenario: 'tiny-llava logits', dtype: 'float32', device: dev, shape: '' };
  const r = tinyLlavaRef();
  const B = r.ids.length;
  const T = r.ids[0].length;
  train.shape = fwd.shape = `B${B} T${T} (${r.pixelShape[0]} images ${r.pixelShape[2]}px)`;
  if (!selected(o, train) && !selected(o, fwd)) return;
  const model = loadLlava(fixtureDir());
  const batch = r.batch(dev);
  try {
    if (selected(o, train)) {
      model.setStage(2);
      const opt = new AdamW(model.parameters().filter((p) => p.requiresGrad), { lr: 1e-5, weightDecay: 0 });
      const t = timeIt(
        () => {
          model.loss(batch).loss.backward();
          opt.stepUpdate();
          opt.zeroGrad();
        },
        { device: dev, warmup: 2, reps: o.quick ? 10 : 30, maxMs: k.maxMs },
      );
      report(train, t, 'tokens', B * T, null, { tokens: B * T });
      opt.dispose();
    }
    if (selected(o, fwd)) {
      const t = timeIt(() => L.noGrad(() => model.forward(batch).logits), { device: dev, warmup: 2, reps: o.quick ? 10 : 30, maxMs: k.maxMs });
      report(fwd, t, 'tokens', B * T, null, { tokens: B * T });
    }
  } finally {
    batch.pixelValues?.dispose();
    model.dispose();
  }
}

export function runCpuCases(o: BenchOptions): void {
  const k = knobs(o);
  const t0 = process.hrtime.bigint();
  matmulCases(o, k);
  softmaxCase(o, k);
  normCases(o, k);
  attentionCases(o, k);
  crossEntropyCase(o, k);
  llavaCases(o, k);
  const leftover = L.memory();
  if (!o.filter) emit({ summary: 'cpu', wall_s: round(Number(process.hrtime.bigint() - t0) / 1e9, 3), live_tensors: leftover.numTensors });
}

export type { Timing };
