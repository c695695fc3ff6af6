// swiglu.test.ts — the fused SwiGLU op (lib/ops/elementwise.ts `swiglu`, cpp/cpu_elementwise.cc,
// isa/act_math.h): silu(gate) * up forward and its one-pass backward, against a float64 JS reference,
// a finite-difference gradient check, bf16 against the flash-attention rule (its error against the f64
// reference at most 2x the error of the unfused composite computed in bf16), the composite silu(a)·b in
// f32, odd sizes, strided and offset views, bad input and leaks. Every instruction set this CPU runs is
// covered by cpu_isa.test.ts; this file runs the default (fastest) path.
import t from 'tap';
import * as L from '../../lib';
import { tensor } from '../../lib';
import { assertClose, assertNoLeak, f64, gradCheck, randArray } from '../helpers';

const sig = (x: number): number => 1 / (1 + Math.exp(-x));
/** out, d_gate, d_up of sum(swiglu(g, u) * dy) in float64. */
function ref(g: Float64Array, u: Float64Array, dy: Float64Array): { out: Float64Array; dg: Float64Array; du: Float64Array } {
  const n = g.length;
  const out = new Float64Array(n);
  const dg = new Float64Array(n);
  const du = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = sig(g[i]);
    out[i] = g[i] * s * u[i];
    du[i] = dy[i] * g[i] * s;
    dg[i] = dy[i] * u[i] * (s + g[i] * s * (1 - s));
  }
  return { out, dg, du };
}

/** forward output and the two gradients, as float64, for inputs rounded to dtype. */
function runFused(shape: number[], dtype: L.DType, g0: Float64Array, u0: Float64Array, dy0: Float64Array, fused = true) {
  const g = tensor(g0, { shape, dtype, requiresGrad: true });
  const u = tensor(u0, { shape, dtype, requiresGrad: true });
  const out = L.tidy(() => {
    const y = fused ? L.swiglu(g, u) : L.mul(L.silu(g), u);
    y.backward(tensor(dy0, { shape, dtype }));
    return f64(y);
  });
  const r = { out, dg: f64(g.grad!), du: f64(u.grad!) };
  g.dispose();
  u.dispose();
  return r;
}

t.test('swiglu forward and backward against float64 (f32, odd sizes)', async (tt) => {
  for (const shape of [[1], [15], [17], [3, 333], [2, 7, 129]]) {
    const n = shape.reduce((a, b) => a * b, 1);
    const rounded = (seed: number, lo: number, hi: number) => f64(tensor(randArray(n, seed, lo, hi), { shape, dtype: 'float32' }));
    const g = rounded(1 + n, -8, 8);
    const u = rounded(2 + n, -2, 2);
    const dy = rounded(3 + n, -1, 1);
    const r = ref(g, u, dy);
    const got = runFused(shape, 'float32', g, u, dy);
    // f32 maths: a few ulps from exp and the division (2e-7 relative), on values of order 10.
    const tol = { atol: 1e-6, rtol: 2e-6 };
    assertClose(tt, got.out, r.out, { ...tol, msg: `[${shape}] forward` });
    assertClose(tt, got.dg, r.dg, { ...tol, msg: `[${shape}] d_gate` });
    assertClose(tt, got.du, r.du, { ...tol, msg: `[${shape}] d_up` });
  }
});

t.test('swiglu saturates cleanly: large |gate|, infinities, NaN', async (tt) => {
  const g = new Float64Array([-200, -90, -30, 30, 90, 200, Infinity, -Infinity, NaN, 0, 0, 0, 0, 0, 0, 0, 1]);
  const u = new Float64Array(g.length).fill(2);
  const dy = new Float64Array(g.length).fill(1);
  const r = ref(g, u, dy);
  // IEEE: silu(+inf) = inf, silu(-inf) = -inf * 0 = NaN in the reference formula; torch gives NaN too.
  for (const dtype of ['float32', 'bfloat16'] as L.DType[]) {
    const got = runFused([g.length], dtype, g, u, dy);
    const fin = (a: Float64Array) => Array.from(a).map((v, i) => (Number.isFinite(g[i]) ? v : 0));
    assertClose(tt, fin(got.out), fin(r.out), { atol: 1e-6, rtol: 1e-2, msg: `${dtype} forward, finite gates` });
    assertClose(tt, fin(got.dg), fin(r.dg), { atol: 1e-6, rtol: 1e-2, msg: `${dtype} d_gate, finite gates` });
    tt.ok(Number.isNaN(got.out[8]), `${dtype} NaN gate gives NaN`);
    tt.equal(got.out[6], Infinity, `${dtype} +inf gate gives +inf`);
  }
});

t.test('swiglu bf16 meets the flash-attention rule against the composite in bf16', async (tt) => {
  const shape = [64, 173];
  const n = shape[0] * shape[1];
  const rb = (seed: number, lo: number, hi: number) => f64(tensor(randArray(n, seed, lo, hi), { shape, dtype: 'bfloat16' }));
  const g = rb(11, -6, 6);
  const u = rb(12, -3, 3);
  const dy = rb(13, -1, 1);
  const r = ref(g, u, dy);
  const fused = runFused(shape, 'bfloat16', g, u, dy, true);
  const naive = runFused(shape, 'bfloat16', g, u, dy, false);
  const maxErr = (a: Float64Array, b: Float64Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
  for (const k of ['out', 'dg', 'du'] as const) {
    const ef = maxErr(fused[k], r[k]);
    const en = maxErr(naive[k], r[k]);
    // One rounding (to bf16 at the end) instead of the composite's two or three: the fused error is
    // normally below the composite's; 2x is the rule.
    tt.ok(ef <= 2 * en, `${k}: fused max error ${ef.toExponential(2)} <= 2 x composite ${en.toExponential(2)}`);
  }
});

t.test('swiglu matches the composite silu(a) * b in f32 (values and gradients)', async (tt) => {
  const shape = [3, 1001];
  const n = 3003;
  const g = randArray(n, 21, -5, 5);
  const u = randArray(n, 22, -2, 2);
  const dy = randArray(n, 23, -1, 1);
  const a = runFused(shape, 'float32', g, u, dy, true);
  const b = runFused(shape, 'float32', g, u, dy, false);
  for (const k of ['out', 'dg', 'du'] as const) assertClose(tt, a[k], b[k], { atol: 2e-6, rtol: 1e-5, msg: `${k} fused vs composite` });
});

t.test('swiglu on strided and offset views equals it on contiguous copies', async (tt) => {
  for (const dtype of ['float32', 'bfloat16', 'float64'] as L.DType[]) {
    L.tidy(() => {
      const base = tensor(randArray(2 * 31 * 9, 31, -4, 4), { shape: [2, 31, 9], dtype });
      const up = tensor(randArray(9 * 31, 32, -2, 2), { shape: [9, 31], dtype });
      const g = base.select(0, 1).transpose(0, 1); // offset storage, strides [1, 9]
      const u = up.slice(1, 0, 31);
      const want = f64(L.swiglu(g.contiguous(), u.contiguous()));
      // Strided views take the generic loop (libm's expf), contiguous ones the vector exp: 1-2 ulp apart.
      const rtol = dtype === 'float32' ? 5e-7 : 0;
      assertClose(tt, L.swiglu(g, u), want, { atol: 0, rtol, shape: [9, 31], dtype, msg: `${dtype} strided vs contiguous` });
    });
  }
});

t.test('swiglu gradient check (float64, central differences)', async (tt) => {
  const g = tensor(randArray(2 * 13, 41, -4, 4), { shape: [2, 13], dtype: 'float64' });
  const u = tensor(randArray(2 * 13, 42, -2, 2), { shape: [2, 13], dtype: 'float64' });
  gradCheck(tt, (a, b) => L.swiglu(a, b), [g, u], { msg: 'swiglu' });
  gradCheck(tt, (a, b) => L.swiglu(a.transpose(0, 1), b.transpose(0, 1)), [g, u], { msg: 'swiglu strided' });
  g.dispose();
  u.dispose();
});

t.test('swiglu refuses bad input with [swiglu] errors', async (tt) => {
  L.tidy(() => {
    const a = L.zeros([4, 5]);
    tt.throws(() => L.swiglu(a, L.zeros([4, 6])), /\[swiglu\] gate and up shapes differ/);
    tt.throws(() => L.swiglu(a, L.zeros([4, 5], { dtype: 'bfloat16' })), /\[swiglu\] gate and up dtypes differ/);
    tt.throws(() => L.swiglu(L.zeros([4, 5], { dtype: 'int32' }), L.zeros([4, 5], { dtype: 'int32' })), /\[swiglu\] gate must be a float tensor/);
    tt.throws(() => L.swiglu(a, null as unknown as L.Tensor), /\[swiglu\] up must be a Tensor/);
    tt.same(L.swiglu(L.zeros([0, 3]), L.zeros([0, 3])).shape, [0, 3], 'empty tensors pass through');
  });
});

t.test('swiglu forward and backward leak nothing', async (tt) => {
  const g = tensor(randArray(64, 51), { shape: [8, 8], requiresGrad: true });
  const u = tensor(randArray(64, 52), { shape: [8, 8], requiresGrad: true });
  assertNoLeak(tt, () => {
    L.tidy(() => L.swiglu(g, u).sum().backward());
    g.zeroGrad();
    u.zeroGrad();
  });
  g.dispose();
  u.dispose();
});
