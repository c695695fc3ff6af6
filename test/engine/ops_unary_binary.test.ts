// ops_unary_binary.test.ts — the op table's unary and binary ops (the other parts: ops_*.test.ts beside it):
// unary ops in f32/f64/bf16 and on integers, gelu exact and tanh; binary ops with broadcasting, scalars,
// 0-d tensors and non-contiguous operands, type promotion, comparisons and logical ops, where, maskedFill
// and clamp. Each on the CPU against a float64 reference computed in plain JS from the values the kernel
// actually saw (inputs read back after rounding to their dtype); shape and dtype are checked before values.
// Tolerances as in docs/design.md: f32 atol 1e-6 / rtol 1e-5, scaled by sqrt(K) where an op reduces over K
// terms (f32Tol(K)); f64 results must agree to ~1e-12 (F64_TOL, op_refs.ts: the kernels compute f64 in f64);
// bf16 tolerances are derived from bf16 rounding.
import t from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import type { DType } from '../../lib';
import { assertClose, f32Tol, f64, randT } from '../helpers';
import { F64_TOL, leaveNoTensorsBehind, refBroadcast, toNum } from './op_refs';

/** erf to ~1e-14 on [-6, 6] (Taylor series for |x| < 2.5, continued fraction beyond). */
function erfRef(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = x;
    let s = x;
    for (let n = 1; n < 80; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      s += add;
      if (Math.abs(add) < 1e-17 * Math.abs(s)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * s;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (Lentz-free, fixed depth)
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (ax + f);
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
  return Math.sign(x) * (1 - erfc);
}
const sigm = (x: number): number => 1 / (1 + Math.exp(-x));

// ====================================================================== unary
interface UnaryCase {
  name: string;
  fn: (x: Tensor) => Tensor;
  ref: (x: number) => number;
  lo: number;
  hi: number;
}
const UNARY: UnaryCase[] = [
  { name: 'neg', fn: L.neg, ref: (x) => -x, lo: -3, hi: 3 },
  { name: 'exp', fn: L.exp, ref: Math.exp, lo: -3, hi: 3 },
  { name: 'log', fn: L.log, ref: Math.log, lo: 0.05, hi: 5 },
  { name: 'sqrt', fn: L.sqrt, ref: Math.sqrt, lo: 0, hi: 5 },
  { name: 'rsqrt', fn: L.rsqrt, ref: (x) => 1 / Math.sqrt(x), lo: 0.05, hi: 5 },
  { name: 'abs', fn: L.abs, ref: Math.abs, lo: -3, hi: 3 },
  { name: 'sin', fn: L.sin, ref: Math.sin, lo: -3, hi: 3 },
  { name: 'cos', fn: L.cos, ref: Math.cos, lo: -3, hi: 3 },
  { name: 'tanh', fn: L.tanh, ref: Math.tanh, lo: -3, hi: 3 },
  { name: 'sigmoid', fn: L.sigmoid, ref: sigm, lo: -6, hi: 6 },
  { name: 'relu', fn: L.relu, ref: (x) => Math.max(x, 0), lo: -3, hi: 3 },
  { name: 'gelu (exact erf)', fn: (x) => L.gelu(x), ref: (x) => 0.5 * x * (1 + erfRef(x / Math.SQRT2)), lo: -4, hi: 4 },
  {
    name: 'gelu (tanh)',
    fn: (x) => L.gelu(x, 'tanh'),
    ref: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
    lo: -4,
    hi: 4,
  },
  { name: 'quickGelu', fn: L.quickGelu, ref: (x) => x * sigm(1.702 * x), lo: -4, hi: 4 },
  { name: 'silu', fn: L.silu, ref: (x) => x * sigm(x), lo: -4, hi: 4 },
  { name: 'square', fn: L.square, ref: (x) => x * x, lo: -3, hi: 3 },
  { name: 'reciprocal', fn: L.reciprocal, ref: (x) => 1 / x, lo: 0.1, hi: 3 },
  { name: 'sign', fn: L.sign, ref: Math.sign, lo: -3, hi: 3 },
  { name: 'erf', fn: L.erf, ref: erfRef, lo: -3, hi: 3 },
  { name: 'pow 3', fn: (x) => L.pow(x, 3), ref: (x) => x ** 3, lo: -2, hi: 2 },
  { name: 'pow 0.5', fn: (x) => L.pow(x, 0.5), ref: Math.sqrt, lo: 0, hi: 4 },
  { name: 'pow -1.5', fn: (x) => x.pow(-1.5), ref: (x) => x ** -1.5, lo: 0.2, hi: 4 },
];

t.test('unary ops: f32 and f64 against float64 references, contiguous and strided', async (t) => {
  for (const [ci, c] of UNARY.entries()) {
    for (const dtype of ['float32', 'float64'] as DType[]) {
      L.tidy(() => {
        const tol = dtype === 'float64' ? F64_TOL : f32Tol();
        const x = randT([5, 7], 100 + ci, dtype, c.lo, c.hi);
        const y = c.fn(x);
        const xv = f64(x);
        assertClose(t, y, Array.from(xv, c.ref), { shape: [5, 7], dtype, ...tol, msg: `${c.name} ${dtype}` });
        // Transposed and step-sliced inputs (non-contiguous) give the same values.
        const xt = x.T;
        assertClose(t, c.fn(xt), Array.from(f64(xt), c.ref), { shape: [7, 5], dtype, ...tol, msg: `${c.name} ${dtype} transposed` });
        const xs = x.slice(1, 1, 7, 2);
        assertClose(t, c.fn(xs), Array.from(f64(xs), c.ref), { shape: [5, 3], dtype, ...tol, msg: `${c.name} ${dtype} step slice` });
      });
    }
  }
});

t.test('unary ops: gelu exact and tanh differ; bf16 inputs round once', async (t) => {
  L.tidy(() => {
    const x = tensor([-3, -1, 0.5, 2.5], { dtype: 'float64' });
    const d = f64(L.sub(L.gelu(x), L.gelu(x, 'tanh')));
    t.ok(
      d.some((v) => Math.abs(v) > 1e-5),
      'the tanh approximation is a different function',
    );
    t.ok(
      d.every((v) => Math.abs(v) < 1e-3),
      '... but close to the exact one',
    );
    const xb = randT([64], 7, 'bfloat16', -3, 3);
    const yb = L.gelu(xb);
    // f32 math then one bf16 rounding: relative error <= 2^-9 (plus f32 error, negligible)
    assertClose(
      t,
      yb,
      Array.from(f64(xb), (v) => 0.5 * v * (1 + erfRef(v / Math.SQRT2))),
      { dtype: 'bfloat16', atol: 1e-6, rtol: 2 ** -8 },
    );
  });
});

t.test('gelu (exact erf) in float32: forward and derivative within 1e-6 over [-8, 8]', async (t) => {
  // The vectorised CPU path evaluates erf(x / sqrt 2) as a fitted rational function (3e-7 in float);
  // a dense grid through every code path (full vectors and the tail) against the series reference.
  const n = 16001;
  const xs = Array.from({ length: n }, (_, i) => -8 + (16 * i) / (n - 1));
  const phi = (v: number) => Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
  L.tidy(() => {
    const x = tensor(xs, { dtype: 'float32', requiresGrad: true });
    const y = L.gelu(x);
    y.sum().backward();
    const xv = f64(x);
    const cdf = Array.from(xv, (v) => 0.5 * (1 + erfRef(v / Math.SQRT2)));
    assertClose(
      t,
      y,
      Array.from(xv, (v, i) => v * cdf[i]),
      { atol: 1e-6, rtol: 1e-6, msg: 'gelu forward' },
    );
    assertClose(
      t,
      x.grad!,
      Array.from(xv, (v, i) => cdf[i] + v * phi(v)),
      { atol: 1e-6, rtol: 1e-6, msg: 'gelu derivative' },
    );
  });
});

t.test('unary ops on integers: neg/abs/sign/square keep the dtype, others promote to float32', async (t) => {
  L.tidy(() => {
    const xi = tensor([-3, 0, 2], { dtype: 'int32' });
    assertClose(t, L.neg(xi), [3, 0, -2], { dtype: 'int32' });
    assertClose(t, L.abs(xi), [3, 0, 2], { dtype: 'int32' });
    assertClose(t, L.sign(xi), [-1, 0, 1], { dtype: 'int32' });
    assertClose(t, L.square(tensor([-3, 4])), [9, 16], { dtype: 'int64' });
    assertClose(t, L.exp(tensor([0, 1])), [1, Math.E], { dtype: 'float32', ...f32Tol() });
    assertClose(t, L.sqrt(xi.abs()), [Math.sqrt(3), 0, Math.SQRT2], { dtype: 'float32', ...f32Tol() });
    assertClose(t, L.pow(tensor([2, 3]), 2), [4, 9], { dtype: 'int64' });
  });
});

// ====================================================================== binary
interface BinCase {
  name: string;
  fn: (a: L.TensorOrScalar, b: L.TensorOrScalar) => Tensor;
  ref: (a: number, b: number) => number;
  bLo?: number;
  aLo?: number;
}
const BINARY: BinCase[] = [
  { name: 'add', fn: (a, b) => L.add(a, b), ref: (a, b) => a + b },
  { name: 'sub', fn: (a, b) => L.sub(a, b), ref: (a, b) => a - b },
  { name: 'mul', fn: L.mul, ref: (a, b) => a * b },
  { name: 'div', fn: L.div, ref: (a, b) => a / b, bLo: 0.2 },
  { name: 'maximum', fn: L.maximum, ref: Math.max },
  { name: 'minimum', fn: L.minimum, ref: Math.min },
  { name: 'pow', fn: L.pow, ref: (a, b) => a ** b, aLo: 0.1 },
];

t.test('binary ops: broadcasting shapes, f32 and f64', async (t) => {
  const shapes: [number[], number[], number[]][] = [
    [
      [3, 4],
      [3, 4],
      [3, 4],
    ],
    [
      [3, 1],
      [1, 4],
      [3, 4],
    ],
    [[2, 3, 4], [4], [2, 3, 4]],
    [
      [2, 1, 4],
      [3, 1],
      [2, 3, 4],
    ],
    [[], [2, 3], [2, 3]],
    [[2, 3], [], [2, 3]],
    [[1], [5], [5]],
    [[0, 3], [3], [0, 3]],
    // one operand a row (block of trailing axes) repeated over the other's rows: the per-row CPU path
    [[3, 17], [17], [3, 17]],
    [[17], [4, 17], [4, 17]],
    [
      [2, 5, 16],
      [5, 16],
      [2, 5, 16],
    ],
    [
      [2, 1, 3, 16],
      [3, 16],
      [2, 1, 3, 16],
    ],
  ];
  for (const [ci, c] of BINARY.entries()) {
    for (const dtype of ['float32', 'float64'] as DType[]) {
      for (const [si, [sa, sb, so]] of shapes.entries()) {
        L.tidy(() => {
          const a = randT(sa, 1000 + ci * 10 + si, dtype, c.aLo ?? -2, 2);
          const b = randT(sb, 2000 + ci * 10 + si, dtype, c.bLo ?? -2, 2);
          const ra = refBroadcast(f64(a), sa, so);
          const rb = refBroadcast(f64(b), sb, so);
          const exp = ra.map((v, i) => c.ref(v, rb[i]));
          const tol = dtype === 'float64' ? F64_TOL : f32Tol();
          assertClose(t, c.fn(a, b), exp, { shape: so, dtype, ...tol, msg: `${c.name} ${dtype} [${sa}] x [${sb}]` });
        });
      }
    }
  }
});

t.test('binary ops: scalars, 0-d tensors, alpha', async (t) => {
  L.tidy(() => {
    const a = randT([2, 3], 5, 'float32', 0.5, 2);
    const av = f64(a);
    const tol = f32Tol();
    assertClose(
      t,
      L.add(a, 2),
      av.map((v) => v + 2),
      { shape: [2, 3], dtype: 'float32', ...tol, msg: 'tensor + number' },
    );
    assertClose(
      t,
      L.sub(3, a),
      av.map((v) => 3 - v),
      { dtype: 'float32', ...tol, msg: 'number - tensor' },
    );
    assertClose(
      t,
      L.div(1, a),
      av.map((v) => Math.fround(1) / v),
      { dtype: 'float32', ...tol, msg: 'number / tensor' },
    );
    assertClose(
      t,
      L.pow(2, a),
      av.map((v) => 2 ** v),
      { dtype: 'float32', ...tol, msg: 'number ** tensor' },
    );
    assertClose(
      t,
      a.mul(tensor(0.5)),
      av.map((v) => v * 0.5),
      { dtype: 'float32', ...tol, msg: '0-d tensor' },
    );
    assertClose(
      t,
      L.add(a, a, 2),
      av.map((v) => v + 2 * v),
      { dtype: 'float32', ...tol, msg: 'add alpha' },
    );
    assertClose(
      t,
      L.sub(a, a, 0.5),
      av.map((v) => v - 0.5 * v),
      { dtype: 'float32', ...tol, msg: 'sub alpha' },
    );
    const s = L.add(tensor(1.5, { dtype: 'float64' }), tensor(2, { dtype: 'float64' }));
    assertClose(t, s, [3.5], { shape: [], dtype: 'float64', msg: '0-d + 0-d is 0-d' });
    t.throws(() => L.add(1 as unknown as Tensor, 2), /\[add\]/, 'two numbers are refused');
  });
});

t.test('binary ops: non-contiguous operands (transposed, step-sliced, expanded)', async (t) => {
  L.tidy(() => {
    const base = randT([6, 8], 11, 'float32');
    const other = randT([4, 6], 12, 'float32');
    const at = base.slice(1, 0, 8, 2); // [6, 4], stride 2 in the last dim
    const bt = other.T; // [6, 4] transposed
    const ra = f64(at);
    const rb = f64(bt);
    assertClose(
      t,
      L.mul(at, bt),
      ra.map((v, i) => v * rb[i]),
      { shape: [6, 4], dtype: 'float32', ...f32Tol(), msg: 'sliced * transposed' },
    );
    const col = randT([6, 1], 13, 'float32');
    const ex = col.expand(6, 4);
    t.same(ex.strides, [1, 0], 'expand is a stride-0 view');
    const rc = refBroadcast(f64(col), [6, 1], [6, 4]);
    assertClose(
      t,
      L.sub(ex, bt),
      rc.map((v, i) => v - rb[i]),
      { shape: [6, 4], dtype: 'float32', ...f32Tol(), msg: 'expanded - transposed' },
    );
    // permuted 3-D against a broadcast row
    const p = randT([2, 3, 4], 14, 'float64').permute(2, 0, 1); // [4, 2, 3]
    const row = randT([3], 15, 'float64');
    const rp = f64(p);
    const rr = refBroadcast(f64(row), [3], [4, 2, 3]);
    assertClose(
      t,
      L.add(p, row),
      rp.map((v, i) => v + rr[i]),
      { shape: [4, 2, 3], dtype: 'float64', ...F64_TOL, msg: 'permuted + row' },
    );
  });
});

t.test('type promotion', async (t) => {
  L.tidy(() => {
    const i64 = tensor([1, 2, 3]);
    const i32 = tensor([4, 5, 6], { dtype: 'int32' });
    const f32 = tensor([0.5, 0.25, 2], { dtype: 'float32' });
    const f64v = tensor([0.5, 0.25, 2], { dtype: 'float64' });
    const bf = tensor([1, 2, 3], { dtype: 'bfloat16' });
    const h = tensor([1, 2, 3], { dtype: 'float16' });
    const b = tensor([true, false, true]);
    assertClose(t, L.add(i64, f32), [1.5, 2.25, 5], { dtype: 'float32', msg: 'int64 + float32 -> float32' });
    assertClose(t, L.add(i64, i32), [5, 7, 9], { dtype: 'int64', msg: 'int64 + int32 -> int64' });
    assertClose(t, L.mul(i32, i32), [16, 25, 36], { dtype: 'int32', msg: 'int32 * int32 -> int32' });
    assertClose(t, L.add(i32, 2), [6, 7, 8], { dtype: 'int32', msg: 'int32 + int number -> int32' });
    assertClose(t, L.add(i32, 0.5), [4.5, 5.5, 6.5], { dtype: 'float32', msg: 'int32 + float number -> float32' });
    assertClose(t, L.div(i64, tensor([2, 4, 4])), [0.5, 0.5, 0.75], { dtype: 'float32', msg: 'int / int -> float32 (true division)' });
    assertClose(t, L.add(f32, f64v), [1, 0.5, 4], { dtype: 'float64', msg: 'float32 + float64 -> float64' });
    assertClose(t, L.add(bf, h), [2, 4, 6], { dtype: 'float32', msg: 'bfloat16 + float16 -> float32' });
    assertClose(t, L.add(bf, 1.5), [2.5, 3.5, 4.5], { dtype: 'bfloat16', msg: 'bf16 + number stays bf16' });
    assertClose(t, L.add(f32, tensor(1, { dtype: 'float64' })), [1.5, 1.25, 3], {
      dtype: 'float32',
      msg: '0-d float64 does not widen a float32 tensor',
    });
    assertClose(t, L.add(i32, tensor(1.5)), [5.5, 6.5, 7.5], { dtype: 'float32', msg: '0-d float lifts an int tensor' });
    assertClose(t, L.add(b, i32), [5, 5, 7], { dtype: 'int32', msg: 'bool + int32 -> int32' });
    assertClose(t, L.mul(b, f32), [0.5, 0, 2], { dtype: 'float32', msg: 'bool * float32 -> float32' });
  });
});

t.test('comparisons and logical ops output bool; where, maskedFill, clamp', async (t) => {
  L.tidy(() => {
    const a = tensor([1, 2, 3, 4], { dtype: 'float32' });
    const bi = tensor([4, 2, 2, 5], { dtype: 'int32' });
    const cases: [string, Tensor, number[]][] = [
      ['eq', L.eq(a, bi), [0, 1, 0, 0]],
      ['ne', L.ne(a, bi), [1, 0, 1, 1]],
      ['lt', L.lt(a, bi), [1, 0, 0, 1]],
      ['le', L.le(a, bi), [1, 1, 0, 1]],
      ['gt', L.gt(a, bi), [0, 0, 1, 0]],
      ['ge', L.ge(a, bi), [0, 1, 1, 0]],
      ['gt scalar', a.gt(2.5), [0, 0, 1, 1]],
      ['eq broadcast', L.eq(tensor([[1], [2]]), tensor([1, 2, 3])), [1, 0, 0, 0, 1, 0]],
      ['logicalAnd', L.logicalAnd(tensor([true, true, false, false]), tensor([true, false, true, false])), [1, 0, 0, 0]],
      ['logicalOr', L.logicalOr(tensor([true, true, false, false]), tensor([true, false, true, false])), [1, 1, 1, 0]],
      ['nan ne nan', L.ne(tensor([NaN], { dtype: 'float32' }), tensor([NaN], { dtype: 'float32' })), [1]],
    ];
    for (const [name, out, exp] of cases) {
      t.equal(out.dtype, 'bool', `${name} is bool`);
      t.same(toNum(out), exp, name);
    }
    const c = tensor([[true, false, true]]);
    const w = L.where(c, tensor([[1], [2]], { dtype: 'float32' }), tensor([10, 20, 30], { dtype: 'float32' }));
    assertClose(t, w, [1, 20, 1, 2, 20, 2], { shape: [2, 3], dtype: 'float32', msg: 'where broadcasts all three' });
    assertClose(t, L.where(c, 1, 0), [1, 0, 1], { shape: [1, 3], dtype: 'int64', msg: 'where with two integer scalars (int64, as torch)' });
    assertClose(t, L.where(c, 0.5, 0), [0.5, 0, 0.5], { shape: [1, 3], dtype: 'float32', msg: 'where with float scalars' });
    t.throws(() => L.where(tensor([1, 0]), a, a), /\[where\]/);
    assertClose(t, L.maskedFill(a, tensor([true, false, false, true]), -1), [-1, 2, 3, -1], { dtype: 'float32' });
    assertClose(t, L.clamp(tensor([-2, 0.5, 3], { dtype: 'float64' }), -1, 1), [-1, 0.5, 1], { dtype: 'float64' });
    assertClose(t, L.maximum(tensor([NaN, 1], { dtype: 'float32' }), tensor([0, NaN], { dtype: 'float32' })), [NaN, NaN], {
      msg: 'maximum propagates NaN',
    });
  });
});

leaveNoTensorsBehind(t);
