// gpu_cases.ts — the CUDA benchmark cases, each beside the PyTorch figure for the same shape measured by
// bench/torch_peer.py in the same bench run (one python3 process for all cases, run before the engine
// touches the GPU so the two never share device memory).
//
// Cases (bf16): GEMM 4096³, 8192x11008x4096 and 8192x4096x11008 (M x N x K, a[M,K] @ b[K,N]), each also
// with every tile native.cudaGemmTile can force (the wgmma ones on sm_90); linear x[8192,4096] @
// W[11008,4096]ᵀ fwd and fwd+bwd (the three layouts of a training step), with the same tile rows; attention
// `llama7b_train` B4 H32 T2048 D128 causal and `vit_l14_336` B16 H16 T577 D64, fwd and fwd+bwd; layer and
// RMS norm 16384x4096 fwd (GB/s) and layer norm fwd+bwd; patch embed B32 336 px 1024 ch (conv 14/14);
// cross-entropy 8192x32000 fwd+bwd (fp32 upcast in the peer); a LLaMA-7B-shaped training step, B4 x T2048
// with 2 (and 4) decoder layers, embed + lm_head, AdamW: tokens/s and peak device memory.
// The peer spec is built from the same table, so shapes cannot drift apart. --gpu-dry-run runs the table
// on the CPU at toy sizes (each dim / 16) to exercise this file on a machine with no GPU.
import * as L from '../lib';
import { LlamaForCausalLM, LlamaConfig } from '../lib/models/llama';
import { AdamW } from '../lib/optim';
import { forcedGemmTiles, withGemmTile } from '../test/gpu/cases_core';
import {
  BenchDevice,
  BenchOptions,
  CaseRecord,
  PeerResult,
  attentionFlops,
  emit,
  peerMs,
  randU,
  report,
  round,
  runPeerSpec,
  selected,
  timeIt,
} from './harness';

export type Spec =
  | { kind: 'gemm'; M: number; N: number; K: number; tile?: string }
  | { kind: 'linear'; M: number; N: number; K: number; bwd: boolean; tile?: string }
  | { kind: 'attention'; B: number; H: number; T: number; S: number; D: number; causal: boolean; bwd: boolean }
  | { kind: 'layer_norm' | 'rms_norm'; N: number; C: number; bwd: boolean }
  | { kind: 'patch_embed'; B: number; C: number; img: number; patch: number; O: number }
  | { kind: 'cross_entropy'; N: number; V: number }
  | { kind: 'llama_train'; B: number; T: number; layers: number; hidden: number; inter: number; heads: number; vocab: number; steps: number };

interface GpuCase {
  rec: CaseRecord;
  key: string;
  spec: Spec;
  /** The case whose torch time is this one's baseline (a forced GEMM tile shares its shape's). */
  peerKey: string;
}

const GiB = 1024 ** 3;

export function table(o: BenchOptions): GpuCase[] {
  const s = (n: number): number => (o.gpuDryRun ? Math.max(1, Math.round(n / 16)) : n);
  const device: BenchDevice = o.gpuDryRun ? 'cpu' : 'cuda';
  const dtype = 'bfloat16';
  const cases: GpuCase[] = [];
  const add = (op: string, scenario: string, shape: string, spec: Spec, peerKey?: string): void => {
    const key = `${op} ${scenario} ${shape}`;
    cases.push({
      rec: { op, scenario: o.gpuDryRun ? `${scenario} (dry run /16)` : scenario, dtype, device, shape },
      key,
      spec,
      peerKey: peerKey ?? key,
    });
  };
  // Each GEMM shape once with the tile the engine picks, then once per tile forced through
  // native.cudaGemmTile, all against the same torch time: the numbers that choose the default tile.
  const tiles = forcedGemmTiles();
  for (const [M, N, K] of [
    [4096, 4096, 4096],
    [8192, 11008, 4096],
    [8192, 4096, 11008],
  ]) {
    const shape = `${s(M)}x${s(N)}x${s(K)}`;
    add('matmul', 'gemm', shape, { kind: 'gemm', M: s(M), N: s(N), K: s(K) });
    const plain = cases[cases.length - 1].key;
    if (M === N || !(o.quick || o.gpuDryRun))
      for (const tile of tiles) add('matmul', `gemm tile=${tile}`, shape, { kind: 'gemm', M: s(M), N: s(N), K: s(K), tile }, plain);
  }
  // The layouts a training step runs: x @ Wᵀ forward, then dX = dY @ W and dW = dYᵀ @ X (LLaMA-7B's MLP up
  // projection at B4 x T2048), with the same tile rows.
  for (const bwd of [false, true]) {
    const [M, N, K] = [s(8192), s(11008), s(4096)];
    const shape = `x[${M},${K}] W[${N},${K}]`;
    const scenario = bwd ? 'fwd+bwd' : 'fwd';
    add('linear', scenario, shape, { kind: 'linear', M, N, K, bwd });
    const plain = cases[cases.length - 1].key;
    if (!(o.quick || o.gpuDryRun))
      for (const tile of tiles) add('linear', `${scenario} tile=${tile}`, shape, { kind: 'linear', M, N, K, bwd, tile }, plain);
  }
  // Decoding: x @ Wᵀ for one sequence and for a batch of 8 (the skinny kernel, one warp per weight row),
  // LLaMA-7B's MLP up projection; bound by reading the 90 MB weight.
  for (const M of [1, 8])
    add('linear', 'decode fwd (skinny)', `x[${M},${s(4096)}] W[${s(11008)},${s(4096)}]`, { kind: 'linear', M, N: s(11008), K: s(4096), bwd: false });
  const attn = [
    { sc: 'llama7b_train', B: 4, H: 32, T: 2048, D: 128, causal: true },
    ...(o.quick ? [] : [{ sc: 'llama7b_train', B: 4, H: 32, T: 2048, D: 128, causal: false }]),
    { sc: 'vit_l14_336', B: 16, H: 16, T: 577, D: 64, causal: false },
  ];
  for (const a of attn)
    for (const bwd of [false, true]) {
      const T = s(a.T);
      add('attention', `${a.sc} ${bwd ? 'fwd+bwd' : 'fwd'}`, `B${a.B} H${a.H} T${T} D${a.D}${a.causal ? ' causal' : ''}`, {
        kind: 'attention',
        B: a.B,
        H: a.H,
        T,
        S: T,
        D: a.D,
        causal: a.causal,
        bwd,
      });
    }
  // `llama7b_decode`: one new query against 2048 cached keys (all visible, so no mask either side:
  // torch's is_causal is top-left aligned and would hide them).
  if (!o.quick)
    add('attention', 'llama7b_decode fwd', `B1 H32 T1 S${s(2048)} D128`, {
      kind: 'attention',
      B: 1,
      H: 32,
      T: 1,
      S: s(2048),
      D: 128,
      causal: false,
      bwd: false,
    });
  const [N, C] = [s(16384), 4096];
  add('layer_norm', 'fwd', `${N}x${C}`, { kind: 'layer_norm', N, C, bwd: false });
  add('rms_norm', 'fwd', `${N}x${C}`, { kind: 'rms_norm', N, C, bwd: false });
  add('layer_norm', 'fwd+bwd', `${N}x${C}`, { kind: 'layer_norm', N, C, bwd: true });
  if (!o.quick) add('rms_norm', 'fwd+bwd', `${N}x${C}`, { kind: 'rms_norm', N, C, bwd: true });
  const img = o.gpuDryRun ? 56 : 336;
  add('patch_embed', 'vit_l14_336', `B${s(32)} 3x${img}x${img} p14 -> 1024`, { kind: 'patch_embed', B: s(32), C: 3, img, patch: 14, O: 1024 });
  add('cross_entropy', 'fwd+bwd', `${s(8192)}x32000`, { kind: 'cross_entropy', N: s(8192), V: 32000 });
  for (const layers of o.quick ? [2] : [2, 4]) {
    const B = o.gpuDryRun ? 1 : 4;
    const T = s(2048);
    const hidden = s(4096);
    add('llama_train_step', `llama7b_train ${layers} layers`, `B${B} T${T} C${hidden}`, {
      kind: 'llama_train',
      B,
      T,
      layers,
      hidden,
      inter: s(11008),
      heads: o.gpuDryRun ? 4 : 32,
      vocab: s(32000),
      steps: o.quick ? 3 : 5,
    });
  }
  return cases;
}

function workOf(spec: Spec): { kind: 'flops' | 'bytes' | 'tokens' | 'none'; work: number } {
  switch (spec.kind) {
    case 'gemm':
      return { kind: 'flops', work: 2 * spec.M * spec.N * spec.K };
    case 'linear':
      return { kind: 'flops', work: (spec.bwd ? 6 : 2) * spec.M * spec.N * spec.K };
    case 'attention':
      return { kind: 'flops', work: attentionFlops(spec.B, spec.H, spec.T, spec.S, spec.D, spec.causal, spec.bwd) };
    case 'layer_norm':
    case 'rms_norm':
      // bf16: fwd reads x and writes y; fwd+bwd is reported as time only (anchors give ms)
      return spec.bwd ? { kind: 'none', work: 0 } : { kind: 'bytes', work: 2 * spec.N * spec.C * 2 };
    case 'patch_embed':
      return { kind: 'flops', work: 2 * spec.B * (spec.img / spec.patch) ** 2 * spec.O * spec.C * spec.patch * spec.patch };
    case 'cross_entropy':
      return { kind: 'none', work: 0 };
    case 'llama_train':
      return { kind: 'tokens', work: spec.B * spec.T };
  }
}

function runEngine(c: GpuCase, o: BenchOptions): void {
  const dev = c.rec.device;
  const dt: L.DType = 'bfloat16';
  const reps = o.quick ? 5 : 10;
  const tOpts = { device: dev, warmup: 2, reps, maxMs: o.gpuDryRun ? 1500 : 3000 };
  const sp = c.spec;
  const { kind, work } = workOf(sp);
  const owned: L.Tensor[] = [];
  const u = (shape: number[], seed: number, scale = 1): L.Tensor => {
    const t = scale === 1 ? randU(shape, dt, dev, seed) : L.tidy(() => L.mul(randU(shape, dt, dev, seed), scale));
    owned.push(t);
    return t;
  };
  let peerName = 'torch';
  try {
    let t;
    let extra: Record<string, unknown> = {};
    switch (sp.kind) {
      case 'gemm': {
        const a = u([sp.M, sp.K], 1);
        const b = u([sp.K, sp.N], 2);
        t = withGemmTile(sp.tile, () => timeIt(() => L.matmul(a, b), tOpts));
        if (sp.tile) extra.tile = sp.tile;
        break;
      }
      case 'linear': {
        const x = u([sp.M, sp.K], 15);
        const w = u([sp.N, sp.K], 16, 0.05);
        if (!sp.bwd) t = withGemmTile(sp.tile, () => timeIt(() => L.linear(x, w), tOpts));
        else {
          [x, w].forEach((z) => z.setRequiresGrad(true));
          const g = u([sp.M, sp.N], 17);
          t = withGemmTile(sp.tile, () =>
            timeIt(() => {
              L.linear(x, w).backward(g);
              [x, w].forEach((z) => z.zeroGrad());
            }, tOpts),
          );
        }
        if (sp.tile) extra.tile = sp.tile;
        break;
      }
      case 'attention': {
        const shape = [sp.B, sp.H, sp.T, sp.D];
        const kvShape = [sp.B, sp.H, sp.S, sp.D];
        const [q, k, v] = [u(shape, 3), u(kvShape, 4), u(kvShape, 5)];
        const opts = { isCausal: sp.causal };
        if (!sp.bwd) t = timeIt(() => L.scaledDotProductAttention(q, k, v, opts), tOpts);
        else {
          [q, k, v].forEach((x) => x.setRequiresGrad(true));
          const g = u(shape, 6);
          t = timeIt(() => {
            L.scaledDotProductAttention(q, k, v, opts).backward(g);
            [q, k, v].forEach((x) => x.zeroGrad());
          }, tOpts);
        }
        break;
      }
      case 'layer_norm':
      case 'rms_norm': {
        const x = u([sp.N, sp.C], 7);
        const w = u([sp.C], 8);
        const b = u([sp.C], 9);
        const f = sp.kind === 'layer_norm' ? (xx: L.Tensor) => L.layerNorm(xx, sp.C, w, b, 1e-5) : (xx: L.Tensor) => L.rmsNorm(xx, w, 1e-6);
        if (!sp.bwd) t = timeIt(() => f(x), tOpts);
        else {
          [x, w, b].forEach((z) => z.setRequiresGrad(true));
          const g = u([sp.N, sp.C], 10);
          t = timeIt(() => {
            f(x).backward(g);
            [x, w, b].forEach((z) => z.zeroGrad());
          }, tOpts);
        }
        break;
      }
      case 'patch_embed': {
        const x = u([sp.B, sp.C, sp.img, sp.img], 11);
        const w = u([sp.O, sp.C, sp.patch, sp.patch], 12, 0.05);
        const b = u([sp.O], 13);
        t = timeIt(() => L.patchEmbed(x, w, b), tOpts);
        break;
      }
      case 'cross_entropy': {
        const x = u([sp.N, sp.V], 14, 4).setRequiresGrad(true);
        const tgt = L.tensor(
          Array.from({ length: sp.N }, (_, i) => (i * 7919) % sp.V),
          { dtype: 'int64', device: dev },
        );
        owned.push(tgt);
        t = timeIt(() => {
          L.crossEntropy(x, tgt).backward();
          x.zeroGrad();
        }, tOpts);
        break;
      }
      case 'llama_train': {
        const r = llamaTrain(sp, dev, tOpts.maxMs);
        t = r.t;
        extra = r.extra;
        break;
      }
    }
    const p = peer && peer.ok ? peer : null;
    const pj = p?.times.get(c.peerKey);
    if (pj && typeof pj.peak_gib === 'number') extra.baseline_peak_gib = pj.peak_gib;
    if (p?.version) peerName = p.version;
    if (sp.kind === 'llama_train')
      llamaFits.push({ layers: sp.layers, shape: c.rec.shape, tokens: sp.B * sp.T, ms: t.median_ms, peerMs: peerMs(p, c.peerKey) });
    if (peer && !peer.ok) extra.note = `no peer: ${peer.reason}`;
    if (pj && typeof pj.error === 'string') extra.note = `peer failed: ${pj.error}`;
    report(c.rec, t, kind, work, p ? { name: peerName, ms: peerMs(p, c.peerKey) } : null, extra);
  } finally {
    owned.forEach((x) => x.dispose());
  }
}

export function llamaTrain(
  sp: Extract<Spec, { kind: 'llama_train' }>,
  dev: BenchDevice,
  maxMs: number,
): { t: ReturnType<typeof timeIt>; extra: Record<string, unknown> } {
  const cfg: LlamaConfig = {
    vocab_size: sp.vocab,
    hidden_size: sp.hidden,
    intermediate_size: sp.inter,
    num_hidden_layers: sp.layers,
    num_attention_heads: sp.heads,
    num_key_value_heads: sp.heads,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: sp.T,
  };
  const gen = new L.Generator(1234);
  const lm = new LlamaForCausalLM(cfg, { dtype: 'bfloat16', device: dev, init: true, generator: gen });
  const emb = lm.embed.getParameter('weight')!;
  L.noGrad(() => L.tidy(() => L.copyInto(emb, L.mul(L.randn(emb.shape, { dtype: 'bfloat16', device: dev, generator: gen }), 0.02))));
  const params = lm.parameters().filter((p) => p.requiresGrad);
  const opt = new AdamW(params, { lr: 1e-5, weightDecay: 0 });
  const N = sp.B * sp.T;
  const tok = (i: number): number => (i * 7919) % sp.vocab;
  const ids = L.tensor(
    Array.from({ length: N }, (_, i) => tok(i)),
    { shape: [sp.B, sp.T], dtype: 'int64', device: dev },
  );
  const targets = L.tensor(
    Array.from({ length: N }, (_, i) => tok(i + 1)),
    { dtype: 'int64', device: dev },
  );
  const positions = Array.from({ length: sp.B }, () => Array.from({ length: sp.T }, (_, i) => i));
  try {
    const step = (): void => {
      const h = lm.hidden(lm.embedTokens(ids), positions);
      const logits = lm.logits(h);
      L.crossEntropy(L.reshape(logits, [N, sp.vocab]), targets).backward();
      opt.stepUpdate();
      opt.zeroGrad();
    };
    const t = timeIt(step, { device: dev, warmup: 1, reps: sp.steps, minReps: 2, maxMs: maxMs * 4 });
    // One more step under the kernel profiler: where the step's device time goes.
    const prof = L.profile(step);
    const m = L.memory();
    const extra: Record<string, unknown> = {
      kernel_ms: round(prof.kernelMs),
      top_kernels: L.byKernel(prof.kernels)
        .slice(0, 8)
        .map((k) => ({ kernel: k.key, ms: round(k.totalMs), calls: k.calls, share: round(k.share, 3) })),
      top_shapes: prof.kernels.slice(0, 8).map((k) => ({ key: k.key, ms: round(k.totalMs), calls: k.calls })),
      tokens: N,
      layers: sp.layers,
      params_m: round(params.reduce((a, p) => a + p.numel, 0) / 1e6, 4),
      memory_note: 'engine: bf16 weight + grad, f32 m, v and master (16 B/param); peer: torch fused AdamW on bf16 params, bf16 m and v (8 B/param)',
    };
    if (m.cuda) {
      extra.peak_gib = round((m.cuda.peakBytes ?? 0) / GiB, 4);
      extra.cached_gib = round((m.cuda.bytesCached ?? 0) / GiB, 4);
      extra.device_mallocs = m.cuda.deviceMallocs;
    }
    return { t, extra };
  } finally {
    opt.dispose();
    lm.dispose();
    ids.dispose();
    targets.dispose();
  }
}

let peer: PeerResult | null = null;
const llamaFits: { layers: number; shape: string; tokens: number; ms: number; peerMs: number | null }[] = [];

/** From the 2- and 4-layer steps: ms per decoder layer, the fixed rest, and a 32-layer (7B) projection. */
function emitLlamaFit(device: BenchDevice): void {
  const a = llamaFits.find((f) => f.layers === 2);
  const b = llamaFits.find((f) => f.layers === 4);
  if (!a || !b) return;
  const fit = (x: number, y: number): { per: number; fixed: number; tps32: number } => {
    const per = (y - x) / (b.layers - a.layers);
    const fixed = x - per * a.layers;
    return { per: round(per), fixed: round(fixed), tps32: round(a.tokens / ((fixed + 32 * per) / 1e3)) };
  };
  const e = fit(a.ms, b.ms);
  const p = a.peerMs !== null && b.peerMs !== null ? fit(a.peerMs, b.peerMs) : null;
  emit({
    op: 'llama_train_step',
    scenario: 'llama7b_train per-layer fit (2 vs 4 layers), 32-layer projection',
    dtype: 'bfloat16',
    device,
    shape: a.shape,
    ms_per_layer: e.per,
    fixed_ms: e.fixed,
    projected_7b_tokens_per_s: e.tps32,
    baseline: p ? 'torch' : null,
    baseline_ms_per_layer: p?.per ?? null,
    baseline_fixed_ms: p?.fixed ?? null,
    baseline_projected_7b_tokens_per_s: p?.tps32 ?? null,
    ratio: p ? round(p.per / e.per, 3) : null,
  });
}

export function runGpuCases(o: BenchOptions): void {
  if (!o.gpuDryRun && !L.cuda.isAvailable()) {
    emit({ skipped: 'cuda', reason: L.cuda.describe() });
    return;
  }
  const all = table(o);
  const cases = all.filter((c) => selected(o, c.rec));
  if (!cases.length) return;
  const peerKeys = new Set(cases.map((c) => c.peerKey));
  const t0 = process.hrtime.bigint();
  peer = null;
  llamaFits.length = 0;
  if (!o.noPeers) {
    const spec = {
      device: o.gpuDryRun ? 'cpu' : 'cuda',
      dtype: 'bfloat16',
      reps: o.quick ? 5 : 10,
      cases: all.filter((c) => peerKeys.has(c.key)).map((c) => ({ key: c.key, ...c.spec })),
    };
    peer = runPeerSpec(o.python, 'torch_peer.py', spec, 900_000);
    if (!peer.ok) emit({ device: cases[0].rec.device, skipped: 'torch', reason: peer.reason });
  }
  if (!o.gpuDryRun) L.emptyCache();
  for (const c of cases) {
    try {
      runEngine(c, o);
    } catch (e) {
      emit({ ...c.rec, error: (e as Error).message.split('\n')[0] });
    }
    if (!o.gpuDryRun) L.emptyCache();
  }
  emitLlamaFit(cases[0].rec.device);
  if (!o.filter)
    emit({
      summary: o.gpuDryRun ? 'gpu dry run' : 'cuda',
      wall_s: round(Number(process.hrtime.bigint() - t0) / 1e9, 3),
      live_tensors: L.memory().numTensors,
    });
}
