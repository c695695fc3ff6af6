// cases_nn.ts — device parity cases for the fused neural-network ops: softmax / logSoftmax, cross-entropy
// (ignore_index, reductions), layer and RMS norm, embedding / indexSelect / gather (backward accumulates
// repeated indices), rope, patch embedding, AdamW (bf16 parameters with f32 master weights), the seeded
// random streams, and attention.
//
// Attention runs each shape (causal or not, T=1 decode against S=300 cached keys, GQA, key-padding and
// full boolean masks, D 64/80/128, strided q/k/v, sizes off the tile grid) in float32 as plain parity
// with the CPU kernel, and in bf16/f16 under the flash-attention rule: for out, dq, dk, dv the max error
// of the fused kernel against a float64 reference (the composite on the CPU over the same rounded
// inputs and upstream gradient) must be at most 2x the composite's own error in that dtype on the device
// under test, plus one rounding of the largest reference value.
import * as L from '../../lib';
import { ropeTables } from '../../lib/models/llama';
import { AdamW } from '../../lib/optim';
import {
  DEFAULT_TOL,
  EPS,
  Input,
  OutputStat,
  Outputs,
  ParityCase,
  Tol,
  f64,
  forwardBackward,
  inp,
  intInp,
  ints,
  maxAbs,
  maxAbsErr,
  noGradInp,
  numel,
  parity,
  roundTo,
  uniform,
  upload,
} from './parity';

const short = (d: L.DType): string => ({ float32: 'f32', bfloat16: 'bf16', float16: 'f16', float64: 'f64' })[d as 'float32'] ?? d;

// ------------------------------------------------------------------ softmax, cross-entropy
function softmaxCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const dt of ['float32', 'bfloat16', 'float16'] as L.DType[]) {
    const x = inp([64, 1000], dt, 1000, -6, 6);
    out.push(
      parity('softmax', `softmax+logSoftmax ${short(dt)} [64,1000] fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [x], (t) => [L.softmax(t, -1), L.logSoftmax(t, -1)]),
      ),
    );
    const y = inp([33, 65, 7], dt, 1001, -4, 4);
    out.push(
      parity('softmax', `softmax ${short(dt)} over dim 1 of [33,65,7] fwd+bwd`, dt, (dev) => forwardBackward(dev, [y], (t) => L.softmax(t, 1))),
    );
  }
  // More rows than the block-per-row kernel's grid (C > 1024: one block per row, grid capped at 64 blocks per SM,
  // 256 on the default 4-SM emulated device): blocks loop and run their block reduction twice on the same
  // shared memory, which is what the barrier at the top of group_reduce (cuda/reduce.cu) guards.
  const xl = inp([300, 1100], 'float32', 1005, -6, 6);
  out.push(
    parity('softmax', 'softmax+logSoftmax f32 [300,1100] fwd+bwd (blocks loop over rows)', 'float32', (dev) =>
      forwardBackward(dev, [xl], (t) => [L.softmax(t, -1), L.logSoftmax(t, -1)]),
    ),
  );
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const x = inp([4, 32000], dt, 1002, -10, 10);
    out.push(parity('softmax', `logSoftmax ${short(dt)} [4,32000] fwd+bwd`, dt, (dev) => forwardBackward(dev, [x], (t) => L.logSoftmax(t, -1))));
    // Partly masked rows (-inf entries, as attention masks make them).
    const z = inp([16, 50], dt, 1003, -3, 3);
    const m = intInp([16, 50], 'int32', 1004, 0, 3);
    out.push(
      parity('softmax', `softmax ${short(dt)} with -inf entries fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [z, m], (t, mm) =>
          L.softmax(L.maskedFill(t, L.logicalAnd(L.eq(mm, 0), L.gt(L.arange(50, undefined, 1, { device: t.device }), 0)), -Infinity), -1),
        ),
      ),
    );
  }
  return out;
}

function targets(N: number, V: number, seed: number, ignore: number, frac: number): Float64Array {
  const t = ints(N, seed, 0, V);
  const r = uniform(N, seed + 1, 0, 1);
  for (let i = 0; i < N; i++) if (r[i] < frac) t[i] = ignore;
  return t;
}

function crossEntropyCases(): ParityCase[] {
  const out: ParityCase[] = [];
  const [N, V] = [67, 1031];
  for (const dt of ['float32', 'bfloat16', 'float16'] as L.DType[]) {
    const x = inp([N, V], dt, 1100, -5, 5);
    const t: Input = { shape: [N], dtype: 'int64', values: targets(N, V, 1101, -100, 0.2) };
    for (const reduction of ['mean', 'sum', 'none'] as const)
      out.push(
        parity(
          'cross_entropy',
          `${short(dt)} [${N},${V}] ignore_index -100 (20%) ${reduction} fwd+bwd`,
          'float32',
          (dev) => forwardBackward(dev, [x, t], (a, b) => L.crossEntropy(a, b, { reduction })),
          dt === 'float32' ? {} : ceTol(dt),
        ),
      );
  }
  const x3 = inp([2, 5, 301], 'float32', 1102, -3, 3);
  const t3: Input = { shape: [2, 5], dtype: 'int32', values: targets(10, 301, 1103, 5, 0.3) };
  out.push(
    parity('cross_entropy', 'f32 [2,5,301] int32 targets, ignoreIndex 5 fwd+bwd', 'float32', (dev) =>
      forwardBackward(dev, [x3, t3], (a, b) => L.crossEntropy(a, b, { ignoreIndex: 5 })),
    ),
  );
  const all: Input = { shape: [4], dtype: 'int64', values: [-100, -100, -100, -100] };
  const x4 = inp([4, 9], 'float32', 1104);
  out.push(
    parity('cross_entropy', 'all targets ignored (mean = NaN, zero gradient rows)', 'float32', (dev) =>
      forwardBackward(dev, [x4, all], (a, b) => L.crossEntropy(a, b)),
    ),
  );
  const big = inp([16, 32000], 'bfloat16', 1105, -8, 8);
  const tb: Input = { shape: [16], dtype: 'int64', values: targets(16, 32000, 1106, -100, 0.1) };
  out.push(
    parity(
      'cross_entropy',
      'bf16 [16,32000] fwd+bwd',
      'float32',
      (dev) => forwardBackward(dev, [big, tb], (a, b) => L.crossEntropy(a, b)),
      ceTol('bfloat16'),
    ),
  );
  return out;
}

// Cross-entropy of 16-bit logits: the loss is float32 and must agree closely; the logits' gradient is
// rounded to the logits' dtype, where the two devices' f32 values (summed in a different order) may
// round to neighbouring values, so it gets that dtype's tolerance (2 ulps).
function ceTol(dt: L.DType): (out: string) => Tol {
  return (out) => (out === 'out' ? { rtol: 1e-3, atolRms: 1e-4 } : DEFAULT_TOL[dt]);
}

// ------------------------------------------------------------------ norms
function normCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const dt of ['float32', 'bfloat16', 'float16'] as L.DType[]) {
    // Row widths for each backward layout (cuda/norm.cu): several rows a block (1024), one 256-thread
    // group a row at 16 elements a thread (4096), at 32 (5120), re-reading rows (8200), unaligned (1000).
    for (const [N, C] of [
      [50, 1024],
      [8, 4096],
      [6, 5120],
      [3, 8200],
      [33, 1000],
    ]) {
      const x = inp([N, C], dt, 1200 + C, -3, 3);
      const w = inp([C], dt, 1201, 0.5, 1.5);
      const b = inp([C], dt, 1202);
      out.push(
        parity('norm', `layer_norm ${short(dt)} [${N},${C}] w+b fwd+bwd`, dt, (dev) =>
          forwardBackward(dev, [x, w, b], (p, q, r) => L.layerNorm(p, C, q, r, 1e-5)),
        ),
      );
      out.push(
        parity('norm', `rms_norm ${short(dt)} [${N},${C}] w fwd+bwd`, dt, (dev) => forwardBackward(dev, [x, w], (p, q) => L.rmsNorm(p, q, 1e-6))),
      );
    }
  }
  const x = inp([9, 7], 'float32', 1203, -2, 2);
  out.push(parity('norm', 'layer_norm f32 C=7 no affine fwd+bwd', 'float32', (dev) => forwardBackward(dev, [x], (p) => L.layerNorm(p, 7))));
  out.push(parity('norm', 'rms_norm f32 C=7 no weight fwd+bwd', 'float32', (dev) => forwardBackward(dev, [x], (p) => L.rmsNorm(p))));
  const x3 = inp([5, 4, 6], 'bfloat16', 1204, -2, 2);
  const w3 = inp([4, 6], 'bfloat16', 1205, 0.5, 1.5);
  const b3 = inp([4, 6], 'bfloat16', 1206);
  out.push(
    parity('norm', 'layer_norm bf16 over trailing [4,6] (2-D weight) fwd+bwd', 'bfloat16', (dev) =>
      forwardBackward(dev, [x3, w3, b3], (p, q, r) => L.layerNorm(p, [4, 6], q, r)),
    ),
  );
  const xs = inp([6, 16], 'float32', 1207, -2, 2);
  const ws = inp([8], 'float32', 1208, 0.5, 1.5);
  out.push(
    parity('norm', 'rms_norm f32 on a strided view (non-contiguous input) fwd+bwd', 'float32', (dev) =>
      forwardBackward(dev, [xs, ws], (p, q) => L.rmsNorm(L.slice(p, 1, 0, 16, 2), q)),
    ),
  );
  return out;
}

// ------------------------------------------------------------------ index ops, rope, patch embed
function indexCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const w = inp([50, 24], dt, 1300);
    for (const idt of ['int64', 'int32'] as L.DType[]) {
      const ids = intInp([3, 11], idt, 1301, 0, 20); // 33 ids over 20 rows: repeats accumulate in backward
      out.push(
        parity('index', `embedding ${short(dt)} ids ${idt} [3,11] (repeats) fwd+bwd`, dt, (dev) =>
          forwardBackward(dev, [ids, w], (i, ww) => L.embedding(i, ww)),
        ),
      );
    }
    const x = inp([4, 30, 6], dt, 1302);
    const idx = intInp([7], 'int64', 1303, 0, 30);
    out.push(
      parity('index', `indexSelect ${short(dt)} dim 1 fwd+bwd`, dt, (dev) => forwardBackward(dev, [x, idx], (a, i) => L.indexSelect(a, 1, i))),
    );
    const g = inp([9, 13], dt, 1304);
    const i0 = intInp([4, 13], 'int64', 1305, 0, 9);
    const i1 = intInp([9, 5], 'int64', 1306, 0, 13);
    out.push(
      parity('index', `gather ${short(dt)} dim 0 and dim 1 fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [g, i0, i1], (a, p, q) => [L.gather(a, 0, p), L.gather(a, 1, q)]),
      ),
    );
  }
  // Many repeats of few rows: the backward's accumulation (atomics on the GPU) sums 512 rows into 3.
  const w = inp([3, 64], 'float32', 1307);
  const ids = intInp([512], 'int64', 1308, 0, 3);
  out.push(
    parity(
      'index',
      'embedding f32 512 ids into 3 rows (heavy accumulation) bwd',
      'float32',
      (dev) => forwardBackward(dev, [ids, w], (i, ww) => L.embedding(i, ww)),
      { rtol: 1e-4, atolRms: 1e-5 },
    ),
  );
  return out;
}

function ropeCases(): ParityCase[] {
  const out: ParityCase[] = [];
  const [B, H, T, D] = [2, 4, 9, 16];
  const positions = [Array.from({ length: T }, (_, i) => i), Array.from({ length: T }, (_, i) => i + 3)];
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const x = inp([B, H, T, D], dt, 1400, -2, 2);
    out.push(
      parity('rope', `${short(dt)} [B,T,D] tables fwd+bwd`, dt, (dev) => {
        const { cos, sin } = ropeTables(positions, D, 10000, dt, dev);
        try {
          return forwardBackward(dev, [x], (t) => L.rope(t, cos, sin));
        } finally {
          cos.dispose();
          sin.dispose();
        }
      }),
    );
    const xt = inp([B, T, H, D], dt, 1401, -2, 2);
    out.push(
      parity('rope', `${short(dt)} [T,D] tables on a permuted [B,T,H,D] input fwd+bwd`, dt, (dev) => {
        const { cos, sin } = ropeTables([positions[1]], D, 500000, dt, dev);
        const c2 = L.reshape(cos, [T, D]);
        const s2 = L.reshape(sin, [T, D]);
        try {
          return forwardBackward(dev, [xt], (t) => L.rope(L.permute(t, [0, 2, 1, 3]), c2, s2));
        } finally {
          [cos, sin, c2, s2].forEach((z) => z.dispose());
        }
      }),
    );
  }
  return out;
}

function patchEmbedCases(): ParityCase[] {
  return (['float32', 'bfloat16'] as L.DType[]).map((dt) => {
    const x = inp([2, 3, 28, 28], dt, 1500);
    const w = inp([32, 3, 7, 7], dt, 1501, -0.2, 0.2);
    const b = inp([32], dt, 1502);
    return parity('patch_embed', `${short(dt)} [2,3,28,28] p7 -> 32 fwd+bwd`, dt, (dev) =>
      forwardBackward(dev, [x, w, b], (p, q, r) => L.patchEmbed(p, q, r)),
    );
  });
}

// ------------------------------------------------------------------ optimizer, random
function adamwCase(): ParityCase {
  const specs: { shape: number[]; dtype: L.DType }[] = [
    { shape: [33, 17], dtype: 'float32' },
    { shape: [129], dtype: 'bfloat16' },
    { shape: [2, 3, 5], dtype: 'float16' },
    { shape: [5], dtype: 'float32' },
  ];
  const run = (dev: L.Device): Outputs =>
    L.tidy(() => {
      const params = specs.map((s, i) => upload(inp(s.shape, s.dtype, 1600 + i), dev).setRequiresGrad(true));
      const opt = new AdamW(params, { lr: 1e-2, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.01 });
      for (let step = 0; step < 3; step++) {
        params.forEach((p, i) => (p.grad = L.keep(upload(inp(p.shape, p.dtype, 1700 + 10 * step + i, -0.1, 0.1), dev))));
        opt.stepUpdate(step === 2 ? 5e-3 : undefined);
        params.forEach((p) => p.zeroGrad());
      }
      const outs: Outputs = {};
      params.forEach((p, i) => (outs[`param${i}.${short(p.dtype)}`] = f64(p)));
      for (const [k, t] of opt.stateTensors()) outs[k] = f64(t);
      opt.dispose();
      params.forEach((p) => p.dispose());
      return outs;
    });
  // Per output: parameters in their dtype (bf16/f16 rounded from the f32 master), state in f32.
  return parity('adamw', '3 steps: f32, bf16 and f16 params (f32 master), weight decay', 'float32', run, (k) => {
    if (k.endsWith('.bf16')) return { rtol: 1.6e-2, atolRms: 8e-3 };
    if (k.endsWith('.f16')) return { rtol: 2e-3, atolRms: 1e-3 };
    return { rtol: 1e-5, atolRms: 1e-6 };
  });
}

function randomCase(): ParityCase {
  const run = (dev: L.Device): Outputs =>
    L.tidy(() => {
      const g = new L.Generator(42, 7);
      const o: Outputs = {
        uniform: f64(L.rand([1000], { device: dev, generator: g })),
        uniformNext: f64(L.rand([33], { device: dev, generator: g })), // the offset advanced identically
        normal: f64(L.randn([1001], { device: dev, generator: g })),
        bernoulli: f64(L.bernoulli([999], 0.3, { device: dev, generator: g })),
        uniformBf16: f64(L.rand([77], { dtype: 'bfloat16', device: dev, generator: g })),
        normalF64: f64(L.randn([64], { dtype: 'float64', device: dev, generator: g })),
        dropout: f64(L.dropout(L.ones([500], { device: dev }), 0.25, true, g)),
      };
      L.manualSeed(1234);
      o.defaultGenerator = f64(L.randn([50], { device: dev }));
      return o;
    });
  // Same seed, same numbers: uniform/bernoulli/dropout exactly (to f32 rounding); normals go through
  // log/cos, whose last bit may differ between libm and CUDA's intrinsics.
  return parity('random', 'rand/randn/bernoulli/dropout: same seed, same numbers', 'float32', run, (k) =>
    k.startsWith('normal') || k === 'defaultGenerator' ? { rtol: 1e-5, atolRms: 1e-6 } : { rtol: 1e-6, atol: 1e-7 },
  );
}

// ------------------------------------------------------------------ attention
interface AttnCfg {
  name: string;
  B: number;
  H: number;
  Hkv: number;
  T: number;
  S: number;
  D: number;
  causal: boolean;
  mask?: 'keypad' | 'full';
  /** q/k/v given as [B, T, H, D] and permuted (the LLaMA layout). */
  strided?: boolean;
  f16?: boolean;
  slow?: boolean;
}

const ATTN: AttnCfg[] = [
  { name: 'B2 H4 T37 D64', B: 2, H: 4, Hkv: 4, T: 37, S: 37, D: 64, causal: false, f16: true },
  { name: 'B2 H4 T37 D64 causal', B: 2, H: 4, Hkv: 4, T: 37, S: 37, D: 64, causal: true, f16: true },
  { name: 'decode T1 S300 H4 D64 causal', B: 1, H: 4, Hkv: 4, T: 1, S: 300, D: 64, causal: true },
  { name: 'T5 S300 H4 D64 causal (bottom-right)', B: 1, H: 4, Hkv: 4, T: 5, S: 300, D: 64, causal: true },
  { name: 'GQA H8 Hkv2 T45 D64 causal', B: 1, H: 8, Hkv: 2, T: 45, S: 45, D: 64, causal: true, f16: true },
  { name: 'key-padding mask B2 H4 T40 D64 causal', B: 2, H: 4, Hkv: 4, T: 40, S: 40, D: 64, causal: true, mask: 'keypad' },
  { name: 'full bool mask B2 H2 T24 S31 D64', B: 2, H: 2, Hkv: 2, T: 24, S: 31, D: 64, causal: false, mask: 'full' },
  { name: 'D80 T33', B: 1, H: 3, Hkv: 3, T: 33, S: 33, D: 80, causal: false, f16: true },
  { name: 'D128 T70 causal', B: 1, H: 2, Hkv: 2, T: 70, S: 70, D: 128, causal: true },
  { name: 'strided q/k/v (permuted [B,T,H,D]) T29 D64 causal', B: 2, H: 4, Hkv: 4, T: 29, S: 29, D: 64, causal: true, strided: true },
  { name: 'T129 D64 causal (off the tile grid)', B: 1, H: 2, Hkv: 2, T: 129, S: 129, D: 64, causal: true },
  { name: 'GQA H4 Hkv1 T200 D128 causal', B: 1, H: 4, Hkv: 1, T: 200, S: 200, D: 128, causal: true, slow: true },
];

function attnInputs(c: AttnCfg, dt: L.DType): Input[] {
  const qs = c.strided ? [c.B, c.T, c.H, c.D] : [c.B, c.H, c.T, c.D];
  const ks = c.strided ? [c.B, c.S, c.Hkv, c.D] : [c.B, c.Hkv, c.S, c.D];
  const ins: Input[] = [inp(qs, dt, 1800, -2, 2), inp(ks, dt, 1801, -2, 2), inp(ks, dt, 1802, -1, 1)];
  if (c.mask === 'keypad') {
    // sample b keeps its first S - 15*b keys (right padding)
    const vals = new Float64Array(c.B * c.S);
    for (let b = 0; b < c.B; b++) for (let j = 0; j < c.S; j++) vals[b * c.S + j] = j < c.S - 15 * b ? 1 : 0;
    ins.push({ shape: [c.B, 1, 1, c.S], dtype: 'bool', values: vals, grad: false });
  } else if (c.mask === 'full') {
    const vals = ints(c.B * c.H * c.T * c.S, 1803, 0, 2);
    for (let r = 0; r < c.B * c.H * c.T; r++) vals[r * c.S] = 1; // every row keeps key 0: no empty row
    ins.push({ shape: [c.B, c.H, c.T, c.S], dtype: 'bool', values: vals, grad: false });
  }
  return ins;
}

function attnFn(c: AttnCfg, fused: boolean): (...xs: L.Tensor[]) => L.Tensor {
  return (q, k, v, m) => {
    const p = (t: L.Tensor): L.Tensor => (c.strided ? L.permute(t, [0, 2, 1, 3]) : t);
    const f = fused ? L.scaledDotProductAttention : L.attentionComposite;
    return f(p(q), p(k), p(v), { isCausal: c.causal, mask: m ?? null });
  };
}

const GRAD_NAMES = ['out', 'd0', 'd1', 'd2'];
const LABEL: Record<string, string> = { out: 'out', d0: 'dq', d1: 'dk', d2: 'dv' };

/** The flash-attention rule for a low-precision dtype (see the header). */
function attnFlashCase(c: AttnCfg, dt: L.DType): ParityCase {
  return {
    group: 'attention',
    name: `${short(dt)} ${c.name} fwd+bwd (flash rule)`,
    slow: c.slow,
    evaluate(dev) {
      const low = attnInputs(c, dt);
      // The float64 reference sees the same rounded inputs and the same rounded upstream gradient.
      const hi = low.map((i) => (i.dtype === 'bool' ? i : { ...i, dtype: 'float64' as L.DType, values: roundTo(i.values, dt) }));
      const ref = forwardBackward('cpu', hi, attnFn(c, false), { roundGradTo: dt });
      const fusedOut = forwardBackward(dev, low, attnFn(c, true));
      const compOut = forwardBackward(dev, low, attnFn(c, false));
      const stats: Record<string, OutputStat> = {};
      const notes: string[] = [];
      let pass = true;
      for (const k of GRAD_NAMES) {
        const r = ref[k];
        const ef = maxAbsErr(fusedOut[k], r);
        const ec = maxAbsErr(compOut[k], r);
        const floor = EPS[dt] * maxAbs(r);
        const ok = ef <= 2 * ec + floor;
        if (!ok) pass = false;
        stats[LABEL[k]] = {
          n: r.length,
          bad: ok ? 0 : 1,
          maxAbs: ef,
          maxRel: ef / Math.max(maxAbs(r), 1e-30),
          nmse: NaN,
          ...(ok ? {} : { worst: `fused err ${ef.toExponential(2)} > 2 x composite ${ec.toExponential(2)} + ${floor.toExponential(1)}` }),
        };
        notes.push(`${LABEL[k]} ${ef.toExponential(2)}/${ec.toExponential(2)}`);
      }
      return { pass, stats, detail: `fused/composite err vs f64: ${notes.join(', ')}` };
    },
  };
}

function attentionCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const c of ATTN) {
    const ins = attnInputs(c, 'float32');
    out.push(parity('attention', `f32 ${c.name} fwd+bwd`, 'float32', (dev) => forwardBackward(dev, ins, attnFn(c, true)), {}, c.slow));
    out.push(attnFlashCase(c, 'bfloat16'));
    if (c.f16) out.push(attnFlashCase(c, 'float16'));
  }
  // The fused kernel against the composite on the same device in f32 (both oracles agree).
  const c0 = ATTN[1];
  const ins0 = attnInputs(c0, 'float32');
  out.push({
    group: 'attention',
    name: `f32 fused vs composite on the device, ${c0.name}`,
    evaluate(dev) {
      const a = forwardBackward(dev, ins0, attnFn(c0, true));
      const b = forwardBackward(dev, ins0, attnFn(c0, false));
      const stats: Record<string, OutputStat> = {};
      let pass = true;
      for (const k of GRAD_NAMES) {
        const e = maxAbsErr(a[k], b[k]);
        const ok = e <= 1e-4 * Math.max(1, maxAbs(b[k]));
        if (!ok) pass = false;
        stats[LABEL[k]] = { n: b[k].length, bad: ok ? 0 : 1, maxAbs: e, maxRel: e / Math.max(maxAbs(b[k]), 1e-30), nmse: NaN };
      }
      return { pass, stats };
    },
  });
  return out;
}

export function nnCases(): ParityCase[] {
  return [
    ...softmaxCases(),
    ...crossEntropyCases(),
    ...normCases(),
    ...indexCases(),
    ...ropeCases(),
    ...patchEmbedCases(),
    adamwCase(),
    randomCase(),
    ...attentionCases(),
  ];
}

export { numel, noGradInp };
