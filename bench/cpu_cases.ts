// cpu_cases.ts — the CPU benchmark cases: f32 GEMM against numpy (one python3 run for all shapes),
// the fused ops (softmax, layer/RMS norm, attention, cross-entropy) against an outside peer and against
// their own composite fallbacks, and the tiny LLaVA fixture: a stage-2 training step (loss, backward,
// AdamW) and a forward.
//
// The fused ops' peer is PyTorch on the CPU (bench/torch_peer.py) when `import torch` works, numpy
// otherwise (bench/numpy_peer.py --spec: the same ops written with numpy arrays), run once for every
// selected case before the engine's timings. Their JSON line's `baseline` / `ratio` are the peer's; the
// composite made of the engine's own plain ops stays in `composite_ms` / `composite_ratio`, and is the
// baseline when no peer can run.
//
// Shapes: matmul M x K @ K x N square; softmax 4096x4096; norms 8192x1024; attention `vit_l14_336`
// (B1 H16 T577 D64, the CLIP tower) and B1 H8 T2048 D128 causal; cross-entropy 2048x32000.
// Attention FLOPs = 4·B·H·T·S·D, halved when causal (fwd+bwd counted 3.5x fwd: bwd = 2.5x), the rule
// of docs/anchors.md. Bytes for memory-bound ops = what the fused kernel must read + write once.
import * as L from '../lib';
import { loadLlava } from '../lib/models/loader';
import { AdamW } from '../lib/optim';
import { fixtureDir, tinyLlavaRef } from '../test/gpu/fixture';
import {
  BenchOptions,
  CaseRecord,
  PeerResult,
  Timing,
  emit,
  peerMs,
  randU,
  report,
  runPeer,
  runPeerSpec,
  selected,
  timeIt,
  benchDir,
  round,
  attentionFlops,
} from './harness';
import * as path from 'path';
import { runCpuKernelCases } from './cpu_kernels';
import { runPoolWakeCase } from './pool_wake';
import { runBf16Cases } from './bf16_cases';
import { decodeCases } from './decode_cases';

const dev = 'cpu' as const;

interface Knobs {
  reps: number;
  maxMs: number;
}
const knobs = (o: BenchOptions): Knobs => (o.quick ? { reps: 5, maxMs: 1200 } : { reps: 10, maxMs: 3000 });

function matmulCases(o: BenchOptions, k: Knobs): void {
  const sizes = [256, 512, 1024, 2048];
  const recs = sizes.map((n) => ({
    n,
    rec: { op: 'matmul', scenario: `square ${n}`, dtype: 'float32', device: dev, shape: `${n}x${n}x${n}` } as CaseRecord,
  }));
  const todo = recs.filter((r) => selected(o, r.rec));
  if (!todo.length) return;
  // numpy first, in one python3 run, so both sides see the machine in the same state.
  let peer = null;
  if (!o.noPeers) {
    peer = runPeer(
      o.python,
      path.join(benchDir(), 'numpy_peer.py'),
      ['--shapes', todo.map((r) => `${r.n}x${r.n}x${r.n}`).join(','), '--max-time', String(k.maxMs / 1000), '--reps', String(k.reps)],
      600_000,
    );
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

/** One fused-op case: its record, the peer's spec (torch_peer.py / numpy_peer.py kinds) and how to run it. */
interface FusedCase {
  rec: CaseRecord;
  spec: Record<string, unknown> & { kind: string };
  kind: 'flops' | 'bytes';
  work: number;
  /** Few repetitions (the composite materialises something large). */
  slow?: boolean;
  /** Makes the inputs; returns the fused and composite calls and what to free afterwards. */
  setup: () => { fused: () => unknown; composite: () => unknown; owned: L.Tensor[] };
}

const keyOf = (r: CaseRecord): string => `${r.op} ${r.scenario} ${r.shape}`;

function fusedTable(o: BenchOptions): FusedCase[] {
  const cases: FusedCase[] = [];
  const rec = (op: string, scenario: string, shape: string): CaseRecord => ({ op, scenario, dtype: 'float32', device: dev, shape });
  // softmax
  {
    const [N, C] = [4096, 4096];
    cases.push({
      rec: rec('softmax', 'rows', `${N}x${C}`),
      spec: { kind: 'softmax', N, C },
      kind: 'bytes',
      work: 2 * N * C * 4,
      setup: () => {
        const x = randU([N, C], 'float32', dev, 3);
        const composite = (): L.Tensor => {
          const e = L.exp(L.sub(x, L.max(x, -1, true)));
          return L.div(e, L.sum(e, -1, true));
        };
        return { fused: () => L.softmax(x, -1), composite, owned: [x] };
      },
    });
  }
  // layer / RMS norm
  {
    const [N, C] = [8192, 1024];
    const eps = 1e-5;
    const inputs = (): { x: L.Tensor; w: L.Tensor; b: L.Tensor } => ({
      x: randU([N, C], 'float32', dev, 4),
      w: randU([C], 'float32', dev, 5),
      b: randU([C], 'float32', dev, 6),
    });
    const lnComposite = (xx: L.Tensor, w: L.Tensor, b: L.Tensor): L.Tensor => {
      const mu = L.mean(xx, -1, true);
      const xc = L.sub(xx, mu);
      const v = L.mean(L.square(xc), -1, true);
      return L.add(L.mul(L.mul(xc, L.rsqrt(L.add(v, eps))), w), b);
    };
    const rmsComposite = (xx: L.Tensor, w: L.Tensor): L.Tensor => L.mul(L.mul(xx, L.rsqrt(L.add(L.mean(L.square(xx), -1, true), eps))), w);
    cases.push({
      rec: rec('layer_norm', 'fwd', `${N}x${C}`),
      spec: { kind: 'layer_norm', N, C, bwd: false },
      kind: 'bytes',
      work: 2 * N * C * 4,
      setup: () => {
        const { x, w, b } = inputs();
        return { fused: () => L.layerNorm(x, C, w, b, eps), composite: () => lnComposite(x, w, b), owned: [x, w, b] };
      },
    });
    cases.push({
      rec: rec('rms_norm', 'fwd', `${N}x${C}`),
      spec: { kind: 'rms_norm', N, C, bwd: false },
      kind: 'bytes',
      work: 2 * N * C * 4,
      setup: () => {
        const { x, w, b } = inputs();
        return { fused: () => L.rmsNorm(x, w, eps), composite: () => rmsComposite(x, w), owned: [x, w, b] };
      },
    });
    if (!o.quick)
      cases.push({
        rec: rec('layer_norm', 'fwd+bwd', `${N}x${C}`),
        spec: { kind: 'layer_norm', N, C, bwd: true },
        kind: 'bytes',
        // fwd reads x, writes y; bwd reads x, dy, writes dx (weights are small)
        work: 5 * N * C * 4,
        setup: () => {
          const { x, w, b } = inputs();
          const xg = x.clone().setRequiresGrad(true);
          const g = randU([N, C], 'float32', dev, 7);
          const step = (f: (t: L.Tensor) => L.Tensor) => () => {
            f(xg).backward(g);
            xg.zeroGrad();
          };
          return { fused: step((t) => L.layerNorm(t, C, w, b, eps)), composite: step((t) => lnComposite(t, w, b)), owned: [x, w, b, xg, g] };
        },
      });
  }
  // attention
  const shapes = [
    { scenario: 'vit_l14_336', B: 1, H: 16, T: 577, D: 64, causal: false, bwd: false },
    { scenario: 'vit_l14_336', B: 1, H: 16, T: 577, D: 64, causal: false, bwd: true },
    { scenario: 'T2048 causal', B: 1, H: 8, T: 2048, D: 128, causal: true, bwd: false },
  ];
  for (const s of shapes) {
    if (s.bwd && o.quick) continue;
    cases.push({
      rec: rec('attention', `${s.scenario} ${s.bwd ? 'fwd+bwd' : 'fwd'}`, `B${s.B} H${s.H} T${s.T} D${s.D}${s.causal ? ' causal' : ''}`),
      spec: { kind: 'attention', B: s.B, H: s.H, T: s.T, S: s.T, D: s.D, causal: s.causal, bwd: s.bwd },
      kind: 'flops',
      work: attentionFlops(s.B, s.H, s.T, s.T, s.D, s.causal, s.bwd),
      slow: s.T >= 2048, // the composite materialises H·T² scores: few repetitions
      setup: () => {
        const q = randU([s.B, s.H, s.T, s.D], 'float32', dev, 11);
        const kk = randU([s.B, s.H, s.T, s.D], 'float32', dev, 12);
        const v = randU([s.B, s.H, s.T, s.D], 'float32', dev, 13);
        const opts = { isCausal: s.causal };
        if (!s.bwd)
          return {
            fused: () => L.scaledDotProductAttention(q, kk, v, opts),
            composite: () => L.attentionComposite(q, kk, v, opts),
            owned: [q, kk, v],
          };
        [q, kk, v].forEach((t) => t.setRequiresGrad(true));
        const g = randU([s.B, s.H, s.T, s.D], 'float32', dev, 14);
        const step = (f: typeof L.attentionComposite) => () => {
          f(q, kk, v, opts).backward(g);
          [q, kk, v].forEach((t) => t.zeroGrad());
        };
        return { fused: step(L.scaledDotProductAttention), composite: step(L.attentionComposite), owned: [q, kk, v, g] };
      },
    });
  }
  // cross-entropy
  {
    const [N, V] = [2048, 32000];
    cases.push({
      rec: rec('cross_entropy', 'fwd+bwd', `${N}x${V}`),
      spec: { kind: 'cross_entropy', N, V },
      kind: 'bytes',
      // fwd reads the logits, bwd reads them again and writes dlogits
      work: 3 * N * V * 4,
      setup: () => {
        const x = randU([N, V], 'float32', dev, 21).setRequiresGrad(true);
        const t = L.tensor(
          Array.from({ length: N }, (_, i) => (i * 7919) % V),
          { dtype: 'int64' },
        );
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
        return { fused, composite, owned: [x, t, t2] };
      },
    });
  }
  return cases;
}

/** The fused ops' outside peer: PyTorch on the CPU, else numpy; null (with a `skipped` line) when neither runs. */
function fusedPeer(o: BenchOptions, k: Knobs, cases: FusedCase[]): PeerResult | null {
  if (o.noPeers || !cases.length) return null;
  const spec = { device: dev, dtype: 'float32', reps: k.reps, cases: cases.map((c) => ({ key: keyOf(c.rec), ...c.spec })) };
  const reasons: string[] = [];
  for (const script of ['torch_peer.py', 'numpy_peer.py']) {
    const p = runPeerSpec(o.python, script, spec, 900_000);
    if (p.ok) return p;
    reasons.push(p.reason ?? `${script} failed`);
  }
  emit({ op: 'fused', device: dev, skipped: 'torch and numpy', reason: reasons.join('; ') });
  return null;
}

/** Time the fused op and its composite back to back; one JSON line with the peer (or the composite) as baseline. */
function runFused(c: FusedCase, k: Knobs, peer: PeerResult | null): void {
  const { fused, composite, owned } = c.setup();
  try {
    const o = c.slow ? { device: dev, reps: 3, minReps: 2, maxMs: k.maxMs } : { device: dev, reps: k.reps, maxMs: k.maxMs };
    const tf = timeIt(fused, o);
    const tc = timeIt(composite, o);
    const extra: Record<string, unknown> = { composite_ms: tc.median_ms, composite_ratio: round(tc.median_ms / tf.median_ms, 3) };
    const pj = peer?.times.get(keyOf(c.rec));
    const pms = peerMs(peer, keyOf(c.rec));
    if (pj && typeof pj.error === 'string') extra.note = `peer failed: ${pj.error}`;
    const base = peer && pms !== null ? { name: peer.version ?? 'peer', ms: pms } : { name: 'composite', ms: tc.median_ms };
    report(c.rec, tf, c.kind, c.work, base, extra);
  } finally {
    owned.forEach((t) => t.dispose());
  }
}

function fusedCases(o: BenchOptions, k: Knobs): void {
  const cases = fusedTable(o).filter((c) => selected(o, c.rec));
  const peer = fusedPeer(o, k, cases);
  for (const c of cases) runFused(c, k, peer);
}

function llavaCases(o: BenchOptions, k: Knobs): void {
  const train: CaseRecord = {
    op: 'llava_train_step',
    scenario: 'tiny-llava stage 2 (loss, backward, AdamW)',
    dtype: 'float32',
    device: dev,
    shape: '',
  };
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
      const opt = new AdamW(
        model.parameters().filter((p) => p.requiresGrad),
        { lr: 1e-5, weightDecay: 0 },
      );
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
  fusedCases(o, k);
  runCpuKernelCases(o);
  runPoolWakeCase(o);
  llavaCases(o, k);
  decodeCases(o, k.maxMs);
  runBf16Cases(o);
  const leftover = L.memory();
  if (!o.filter) emit({ summary: 'cpu', wall_s: round(Number(process.hrtime.bigint() - t0) / 1e9, 3), live_tensors: leftover.numTensors });
}

export type { Timing };
