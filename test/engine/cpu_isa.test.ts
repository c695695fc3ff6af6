// cpu_isa.test.ts — the CPU kernels on every instruction set this machine runs (cpp/cpu_isa.h:
// portable, avx2, avx512, avx512bf16: the bf16 GEMM tile, bf16 attention products and bf16 stores of
// the activations; amx: the AMX bf16 GEMM tile, emulated in software on a CPU without AMX), each against a
// float64 reference. The cap is switched in process (native.cpuIsa,
// what LLAVA_CPU_ISA / LLAVA_CPU_PORTABLE set at load), so one run covers every path the CPU has; the
// portable path runs everywhere, which is what an ARM or pre-AVX2 machine gets.
//
// Each case computes a forward output and the input gradients of sum(y * w) for fixed random w. The
// reference is the same computation in float64 (the f64 kernels: plain loops) on the values the
// low-precision run saw; matmul is also checked against a plain JS float64 product. Sizes are odd and
// operands strided (transposed views) so edge tiles and the general packing paths run.
import t from 'tap';
import type { Test } from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import type { DType } from '../../lib';
import { native } from '../../lib/native';
import { gemm2d } from '../../lib/ops/quant';
import { ropeTables } from '../../lib/models/llama';
import { cpuIsas, f64, numel, randArray, refAttention, refMatmul, useCpuIsa } from '../helpers';

const detected = native.cpuIsa().detected;
const ISAS = cpuIsas();

interface Case {
  name: string;
  shapes: number[][];
  dtypes: DType[];
  /** Builds the output from the inputs (fresh leaves with requiresGrad). */
  fn: (...xs: Tensor[]) => Tensor;
  lo?: number;
  hi?: number;
}

const CASES: Case[] = [
  {
    name: 'matmul',
    shapes: [
      [37, 129],
      [129, 70],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.matmul(a, b),
  },
  {
    name: 'matmul a @ b^T (odd K, strided b)',
    shapes: [
      [2, 61, 133],
      [2, 97, 133],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.matmul(a, b.transpose(-1, -2)),
  },
  {
    name: 'matmul a^T @ b',
    shapes: [
      [45, 29],
      [45, 66],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.matmul(a.transpose(0, 1), b),
  },
  {
    // x @ W^T over two depth blocks plus a tail (the bf16 B packer transposes 32-deep pieces in
    // registers and gathers the rest), with a bias and an edge column panel.
    name: 'linear with bias (K over two depth blocks)',
    shapes: [[13, 2100], [70, 2100], [70]],
    dtypes: ['float32', 'bfloat16'],
    fn: (x, w, b) => L.linear(x, w, b),
  },
  {
    // Even K: the bf16 tile reads a's rows in place, here a column slice (rows further apart than K)
    // broadcast over the batch; N 101 ends in a part vector of the 64-wide tile.
    name: 'matmul with a read in place (even K, broadcast over the batch, sliced rows)',
    shapes: [
      [23, 70],
      [3, 66, 101],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.matmul(L.narrow(a, 1, 3, 66), b),
  },
  {
    name: 'matmul N 20 (one part-filled column panel)',
    shapes: [
      [23, 66],
      [66, 20],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.matmul(a, b),
  },
  {
    name: 'matmul x @ W^T with x and W column slices (row strides above K)',
    shapes: [
      [29, 141],
      [67, 130],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (x, w) => L.matmul(L.narrow(x, 1, 5, 99), L.narrow(w, 1, 3, 99).transpose(0, 1)),
  },

  {
    // 2..8 rows of x against W's contiguous rows take the skinny path (each weight row read once for all
    // rows, in pairs of rows plus one): M 5 is two pairs and a single, K 133 ends in a scalar tail.
    name: 'linear M 5 with bias (skinny: rows share each weight load)',
    shapes: [[5, 133], [70, 133], [70]],
    dtypes: ['float32', 'bfloat16'],
    fn: (x, w, b) => L.linear(x, w, b),
  },
  {
    // Batched, x a column slice (row stride above K), M 8 (the largest skinny M), N 17.
    name: 'matmul M 8 x @ W^T batched (skinny, strided x)',
    shapes: [
      [2, 8, 80],
      [2, 17, 64],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (x, w) => L.matmul(L.narrow(x, 2, 7, 64), w.transpose(-1, -2)),
  },
  { name: 'softmax', shapes: [[7, 1001]], dtypes: ['float32', 'bfloat16'], fn: (x) => L.softmax(x.mul(4)), lo: -2, hi: 2 },
  {
    // Half of D 20: two 8-lane steps and a scalar tail; x a strided view, as the attention heads are.
    name: 'rope (strided x, D 40)',
    shapes: [[1, 5, 2, 40]],
    dtypes: ['float32', 'bfloat16'],
    fn: (x) => {
      const { cos, sin } = ropeTables([[0, 1, 2, 3, 7]], 40, 10000, x.dtype, 'cpu');
      return L.rope(x.transpose(1, 2), cos, sin);
    },
    lo: -2,
    hi: 2,
  },
  {
    // Odd V (vector tail), targets in the tail and at the row ends, one ignored row.
    name: 'crossEntropy (per row, ignoreIndex)',
    shapes: [[6, 1003]],
    dtypes: ['float32', 'bfloat16'],
    fn: (x) => L.crossEntropy(x, tensor([0, 1002, 1000, -100, 517, 8], { dtype: 'int64' }), { reduction: 'none' }),
    lo: -4,
    hi: 4,
  },
  { name: 'logSoftmax', shapes: [[5, 333]], dtypes: ['float32', 'bfloat16'], fn: (x) => L.logSoftmax(x) },
  { name: 'layerNorm', shapes: [[9, 203], [203], [203]], dtypes: ['float32', 'bfloat16'], fn: (x, w, b) => L.layerNorm(x, 203, w, b) },
  { name: 'rmsNorm', shapes: [[9, 203], [203]], dtypes: ['float32', 'bfloat16'], fn: (x, w) => L.rmsNorm(x, w, 1e-6) },
  { name: 'gelu', shapes: [[3, 1037]], dtypes: ['float32', 'bfloat16'], fn: (x) => L.gelu(x), lo: -5, hi: 5 },
  { name: 'gelu tanh', shapes: [[3, 1037]], dtypes: ['float32', 'bfloat16'], fn: (x) => L.gelu(x, 'tanh'), lo: -5, hi: 5 },
  { name: 'silu', shapes: [[3, 1037]], dtypes: ['float32', 'bfloat16'], fn: (x) => L.silu(x), lo: -6, hi: 6 },
  {
    name: 'silu(a) * b',
    shapes: [
      [5, 411],
      [5, 411],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.silu(a).mul(b),
    lo: -4,
    hi: 4,
  },
  {
    name: 'swiglu (fused, odd size)',
    shapes: [
      [5, 411],
      [5, 411],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.swiglu(a, b),
    lo: -6,
    hi: 6,
  },
  {
    name: 'swiglu (strided views)',
    shapes: [
      [37, 9],
      [9, 37],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (a, b) => L.swiglu(a.transpose(0, 1), b),
    lo: -4,
    hi: 4,
  },
  { name: 'quick_gelu', shapes: [[3, 1037]], dtypes: ['float32', 'bfloat16'], fn: (x) => L.quickGelu(x), lo: -6, hi: 6 },
  {
    name: 'sigmoid, tanh, exp',
    shapes: [[2, 517]],
    dtypes: ['float32', 'bfloat16'],
    fn: (x) => L.sigmoid(x).add(L.tanh(x)).add(L.exp(x)),
    lo: -3,
    hi: 3,
  },
  {
    name: 'attention (causal, D 40)',
    shapes: [
      [1, 2, 37, 40],
      [1, 2, 37, 40],
      [1, 2, 37, 40],
    ],
    dtypes: ['float32', 'bfloat16'],
    fn: (q, k, v) => L.scaledDotProductAttention(q, k, v, { isCausal: true }),
  },
];

/** Output and input gradients (as float64) of fn on the given input values in dtype. */
function run(c: Case, values: Float64Array[], dtype: DType): { out: Float64Array; grads: Float64Array[] } {
  const xs = values.map((v, i) => tensor(v, { shape: c.shapes[i], dtype, requiresGrad: true }));
  const result = L.tidy(() => {
    const y = c.fn(...xs);
    const w = tensor(randArray(numel(y.shape), 99), { shape: y.shape, dtype });
    y.mul(w).sum().backward();
    return f64(y);
  });
  const grads = xs.map((x) => f64(x.grad!));
  for (const x of xs) x.dispose();
  return { out: result, grads };
}

/** |a - r| <= tol * (max|r| + |r|) elementwise; returns the worst ratio (1 = at the tolerance). */
function check(t: Test, a: Float64Array, r: Float64Array, tol: number, msg: string): void {
  let scale = 0;
  for (const v of r) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  let at = -1;
  for (let i = 0; i < r.length; i++) {
    const err = Math.abs(a[i] - r[i]) / (tol * (scale + Math.abs(r[i])) + 1e-30);
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  t.ok(a.length === r.length && worst <= 1, `${msg} (worst ${worst.toFixed(3)} of tolerance${at >= 0 ? ` at ${at}: ${a[at]} vs ${r[at]}` : ''})`);
}

t.test(`cpu kernels on every instruction set (${ISAS.join(', ')})`, async (tt) => {
  const before = native.cpuIsa().active;
  try {
    tt.ok(ISAS.includes('portable'), 'the portable path is always available');
    for (const c of CASES) {
      for (const dtype of c.dtypes) {
        // Inputs rounded to dtype once, so every run and the reference see the same values.
        const values = c.shapes.map((s, i) => {
          const x = tensor(randArray(numel(s), 17 * i + c.name.length, c.lo ?? -1, c.hi ?? 1), { shape: s, dtype });
          const v = f64(x);
          x.dispose();
          return v;
        });
        useCpuIsa('portable');
        const ref = run(c, values, 'float64');
        if (c.name === 'matmul') {
          const [M, K] = c.shapes[0];
          const N = c.shapes[1][1];
          check(tt, ref.out, refMatmul(values[0], values[1], 1, M, K, N), 1e-12, 'f64 matmul vs JS');
        }
        const tol = dtype === 'float32' ? 3e-6 : 1e-2;
        for (const isa of ISAS) {
          useCpuIsa(isa);
          tt.equal(native.cpuIsa().active, isa, `cap ${isa} applied`);
          const got = run(c, values, dtype);
          check(tt, got.out, ref.out, tol, `${c.name} ${dtype} [${isa}] forward`);
          got.grads.forEach((g, i) => check(tt, g, ref.grads[i], tol * 2, `${c.name} ${dtype} [${isa}] grad ${i}`));
        }
      }
    }
  } finally {
    useCpuIsa(before);
  }
});

t.test('bf16 results below the smallest normal are rounded, not flushed, on every instruction set', async (tt) => {
  // AVX512-BF16's conversion flushes subnormal f32 values to zero, so the activations store vectors
  // holding one with the exact rounding: silu(x) ~ x / 2 for x near 0 lands in bf16's subnormal range.
  const before = native.cpuIsa().active;
  const x = tensor(
    randArray(2 * 40, 5, -1, 1).map((v) => v * 1e-38),
    { shape: [2, 40], dtype: 'bfloat16' },
  );
  try {
    useCpuIsa('portable');
    const ref = L.silu(x);
    const want = ref.toNumbers();
    ref.dispose();
    tt.ok(want.filter((v) => v !== 0 && Math.abs(v) < 1.1754943508222875e-38).length > 60, 'the reference holds subnormal results');
    for (const isa of ISAS) {
      useCpuIsa(isa);
      const y = L.silu(x);
      tt.same(y.toNumbers(), want, `silu bf16 [${isa}] equals the portable path bit for bit`);
      y.dispose();
    }
  } finally {
    useCpuIsa(before);
    x.dispose();
  }
});

t.test('bf16 GEMM into an existing output (out = a @ b + bias + beta * out) on every instruction set', async (tt) => {
  // Full tiles, edge tiles (M 27, N 70); one depth block (K 1100: no f32 scratch), and three for the f32 kernel
  // and two for the bf16 one (K 4200): the bf16 kernel rounds its last depth block straight into the
  // output, adding beta * out there. Odd K (1101) sends bf16 to the packed-A tile instead of reading A in place.
  for (const K of [1100, 1101, 4200]) gemmWithBeta(tt, K);
  // The AMX tile sums whole 32 x 32 blocks of its f32 scratch between depth blocks with tile loads and stores
  // (from the first block on where there is no bias).
  gemmWithBeta(tt, 1500, 70);
  gemmWithBeta(tt, 1500, 70, false);
  // The in-place bf16 tile's units keep their packed B within half of L2: at K 2100, 128 columns at most, so
  // N 300 is cut into several column units over two depth blocks.
  gemmWithBeta(tt, 2100, 40, true, 300);
});

function gemmWithBeta(tt: Test, K: number, M = 27, withBias = true, N = 70): void {
  const vals = [randArray(M * K, 61, -1, 1), randArray(K * N, 62, -1, 1), randArray(N, 63, -1, 1), randArray(M * N, 64, -8, 8)];
  const mk = (v: Float64Array, shape: number[]) => tensor(v, { shape, dtype: 'bfloat16' });
  const [a, b, bias, out0] = [mk(vals[0], [M, K]), mk(vals[1], [K, N]), mk(vals[2], [N]), mk(vals[3], [M, N])];
  const [av, bv, biasv, outv] = [a, b, bias, out0].map(f64);
  const prod = refMatmul(av, bv, 1, M, K, N);
  const want = prod.map((v, i) => v + (withBias ? biasv[i % N] : 0) + 2 * outv[i]);
  const before = native.cpuIsa().active;
  try {
    for (const isa of ISAS) {
      useCpuIsa(isa);
      const out = out0.clone();
      gemm2d(out, a, b, withBias ? bias : null, 2);
      check(tt, f64(out), want, 1e-2, `bf16 gemm ${withBias ? 'with bias ' : ''}and beta 2, M ${M} K ${K} N ${N} [${isa}]`);
      out.dispose();
    }
  } finally {
    useCpuIsa(before);
    for (const x of [a, b, bias, out0]) x.dispose();
  }
}

t.test('bf16 attention forward and backward on every instruction set (avx512bf16: bf16 GEMM tiles)', async (tt) => {
  // Shapes for the packed path's edges: D a whole number of 32-column panels, a part panel, odd; key
  // tiles short of 32 and of 64; one query row (decode); grouped-query heads; masks and rows that see
  // no key. Criterion (FlashAttention's): at most 2x the bf16 composite's error, plus half a bf16 ulp
  // of the largest reference value. References: the forward in float64 (refAttention), the gradients
  // of the float64 kernel (plain loops, gradient-checked in grad.test.ts) on the same bf16 values.
  const shapes = [
    { B: 1, H: 2, Hkv: 2, T: 70, S: 70, D: 64, causal: false, mask: false },
    // More (batch, kv head) problems than threads: a worker moves on to another head's rows.
    { B: 2, H: 3, Hkv: 3, T: 75, S: 75, D: 64, causal: true, mask: false },
    { B: 1, H: 4, Hkv: 2, T: 61, S: 130, D: 40, causal: true, mask: false },
    { B: 2, H: 2, Hkv: 1, T: 1, S: 9, D: 33, causal: false, mask: false },
    { B: 1, H: 2, Hkv: 2, T: 13, S: 100, D: 130, causal: false, mask: true },
    { B: 1, H: 1, Hkv: 1, T: 6, S: 3, D: 8, causal: true, mask: false },
  ];
  const before = native.cpuIsa().active;
  const errOf = (a: Float64Array, r: Float64Array): number => {
    let m = 0;
    for (let i = 0; i < r.length; i++) m = Math.max(m, Math.abs(a[i] - r[i]));
    return m;
  };
  const peak = (r: Float64Array): number => r.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  try {
    for (const [si, d] of shapes.entries()) {
      const vals = (shape: number[], seed: number, lo = -2, hi = 2) => ({ v: randArray(numel(shape), seed, lo, hi), shape });
      const inputs = [vals([d.B, d.H, d.T, d.D], 70 + si), vals([d.B, d.Hkv, d.S, d.D], 80 + si), vals([d.B, d.Hkv, d.S, d.D], 90 + si, -1, 1)];
      const gvals = vals([d.B, d.H, d.T, d.D], 95 + si, -1, 1);
      let mask: Tensor | null = null;
      let maskVals: Uint8Array | undefined;
      if (d.mask) {
        const m = Uint8Array.from(randArray(d.B * d.T * d.S, 99, 0, 1), (x) => (x < 0.6 ? 1 : 0));
        for (let s = 0; s < d.S; s++) m[s] = 0; // row 0 sees no key: output 0
        mask = tensor(m, { shape: [d.B, 1, d.T, d.S], dtype: 'bool' });
        maskVals = new Uint8Array(d.B * d.H * d.T * d.S);
        for (let b = 0; b < d.B; b++)
          for (let h = 0; h < d.H; h++) maskVals.set(m.subarray(b * d.T * d.S, (b + 1) * d.T * d.S), (b * d.H + h) * d.T * d.S);
      }
      // Output and input gradients of fn on the inputs rounded to bf16, computed in dtype.
      const run = (dtype: DType, fn: typeof L.scaledDotProductAttention) => {
        const xs = inputs.map(({ v, shape }) =>
          tensor(f64(L.tidy(() => tensor(v, { shape, dtype: 'bfloat16' }))), { shape, dtype, requiresGrad: true }),
        );
        const g = tensor(f64(L.tidy(() => tensor(gvals.v, { shape: gvals.shape, dtype: 'bfloat16' }))), { shape: gvals.shape, dtype });
        const y = fn(xs[0], xs[1], xs[2], { isCausal: d.causal, mask });
        y.backward(g);
        const res = { out: f64(y), grads: xs.map((x) => f64(x.grad!)) };
        for (const x of [...xs, g, y]) x.dispose();
        return res;
      };
      useCpuIsa('portable');
      const x64 = inputs.map(({ v, shape }) => f64(L.tidy(() => tensor(v, { shape, dtype: 'bfloat16' }))));
      const refOut = refAttention(x64[0], x64[1], x64[2], d, { causal: d.causal, mask: maskVals });
      if (maskVals) for (let h = 0; h < d.B * d.H; h++) refOut.fill(0, h * d.T * d.D, h * d.T * d.D + d.D); // no key: 0
      const refGrads = run('float64', L.scaledDotProductAttention).grads;
      const comp = run('bfloat16', L.attentionComposite);
      const finite = (a: Float64Array) => a.map((x) => (Number.isFinite(x) ? x : 0)); // the composite's no-key rows are NaN
      const eComp = [errOf(finite(comp.out), refOut), ...comp.grads.map((gr, i) => errOf(finite(gr), refGrads[i]))];
      const peaks = [peak(refOut), ...refGrads.map(peak)];
      const slack = peaks.map((m) => m * 2 ** -9);
      // The composite's rows that see no key are NaN (zeroed above), which inflates its dv error: cap
      // its error at two bf16 ulps of the peak.
      eComp.forEach((e, i) => (eComp[i] = Math.min(e, peaks[i] * 2 ** -7)));
      for (const isa of ISAS) {
        useCpuIsa(isa);
        const got = run('bfloat16', L.scaledDotProductAttention);
        const errs = [errOf(got.out, refOut), ...got.grads.map((gr, i) => errOf(gr, refGrads[i]))];
        ['out', 'dq', 'dk', 'dv'].forEach((what, i) =>
          tt.ok(
            errs[i] <= 2 * eComp[i] + slack[i],
            `${JSON.stringify(d)} ${what} [${isa}]: max error ${errs[i].toExponential(2)}, composite ${eComp[i].toExponential(2)}`,
          ),
        );
      }
      mask?.dispose();
    }
  } finally {
    useCpuIsa(before);
  }
});

t.test('a bad instruction set name is refused with the accepted names', async (tt) => {
  tt.throws(() => native.cpuIsa('sse9'), /unknown instruction set 'sse9' \(portable, avx2, avx512, avx512bf16 or amx\)/);
  tt.throws(() => native.cpuIsa(3 as unknown as string), /cap must be a string/);
});

t.test('LLAVA_CPU_PORTABLE and LLAVA_CPU_ISA set the cap at load', async (tt) => {
  const { spawnSync } = await import('child_process');
  const probe = `const { native } = require(${JSON.stringify(require.resolve('../../lib/native'))}); process.stdout.write(native.cpuIsa().active);`;
  const runWith = (env: Record<string, string>): string =>
    spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', probe], { env: { ...process.env, ...env }, encoding: 'utf8' }).stdout;
  tt.equal(runWith({ LLAVA_CPU_PORTABLE: '1' }), 'portable', 'LLAVA_CPU_PORTABLE=1');
  tt.equal(runWith({ LLAVA_CPU_ISA: 'portable' }), 'portable', 'LLAVA_CPU_ISA=portable');
  if (ISAS.includes('avx2')) tt.equal(runWith({ LLAVA_CPU_ISA: 'avx2' }), 'avx2', 'LLAVA_CPU_ISA=avx2');
  if (ISAS.includes('avx512')) tt.equal(runWith({ LLAVA_CPU_ISA: 'avx512' }), 'avx512', 'LLAVA_CPU_ISA=avx512');
  tt.equal(runWith({ LLAVA_CPU_ISA: 'amx' }), detected, 'a cap above the CPU gives what the CPU has');
  if (detected === 'avx512bf16') {
    tt.equal(runWith({ LLAVA_CPU_AMX_EMULATE: '1' }), 'amx', 'LLAVA_CPU_AMX_EMULATE=1: the AMX tile in software');
    tt.equal(runWith({ LLAVA_CPU_AMX_EMULATE: '1', LLAVA_CPU_ISA: 'avx512bf16' }), 'avx512bf16', 'the cap still applies');
  }
});
