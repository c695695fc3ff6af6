// ops.test.ts — every public op on the CPU against a float64 reference computed in plain JS from
// the values the kernel actually saw (inputs read back after rounding to their dtype). Shape and
// dtype are checked before values. Tolerances follow docs/design.md: f32 atol 1e-6 / rtol 1e-5,
// scaled by sqrt(K) where an op reduces over K terms (f32Tol(K)); f64 results must agree to
// ~1e-12 (the kernels compute f64 in f64); bf16 tolerances are derived from bf16 rounding.
import t from 'tap';
import type { Test } from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import type { DType } from '../../lib';
import {
  assertClose,
  assertMeta,
  f32Tol,
  f64,
  numel,
  randArray,
  randT,
  refAttention,
  refCrossEntropy,
  refLayerNorm,
  refMatmul,
  refRmsNorm,
  refSoftmax,
  refTranspose,
  rng,
} from '../helpers';

const F64_TOL = { atol: 1e-12, rtol: 1e-10 };

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

/** Reference reduction over `dims` of a row-major array; f receives the reduced values in order. */
function refReduce(x: ArrayLike<number>, shape: number[], dims: number[], f: (v: number[]) => number): Float64Array {
  const nd = shape.length;
  const keep = shape.map((_, i) => i).filter((i) => !dims.includes(i));
  const outN = numel(keep.map((i) => shape[i]));
  const redN = numel(dims.map((i) => shape[i]));
  const strides = shape.map((_, i) => numel(shape.slice(i + 1)));
  const out = new Float64Array(outN);
  for (let o = 0; o < outN; o++) {
    let base = 0;
    let rem = o;
    for (let k = keep.length - 1; k >= 0; k--) {
      const d = keep[k];
      base += (rem % shape[d]) * strides[d];
      rem = Math.floor(rem / shape[d]);
    }
    const vals: number[] = [];
    for (let r = 0; r < redN; r++) {
      let off = base;
      let rr = r;
      for (let k = dims.length - 1; k >= 0; k--) {
        const d = dims[k];
        off += (rr % shape[d]) * strides[d];
        rr = Math.floor(rr / shape[d]);
      }
      vals.push(x[off]);
    }
    out[o] = f(vals);
  }
  void nd;
  return out;
}

/** Row-major permutation of an array with `shape` by `perm` (out dim i = in dim perm[i]). */
function refPermute(x: ArrayLike<number>, shape: number[], perm: number[]): Float64Array {
  const outShape = perm.map((p) => shape[p]);
  const inStr = shape.map((_, i) => numel(shape.slice(i + 1)));
  const n = numel(shape);
  const out = new Float64Array(n);
  for (let o = 0; o < n; o++) {
    let rem = o;
    let off = 0;
    for (let k = outShape.length - 1; k >= 0; k--) {
      off += (rem % outShape[k]) * inStr[perm[k]];
      rem = Math.floor(rem / outShape[k]);
    }
    out[o] = x[off];
  }
  return out;
}

/** Broadcast a row-major array of `shape` to `target`. */
function refBroadcast(x: ArrayLike<number>, shape: number[], target: number[]): Float64Array {
  const n = numel(target);
  const lead = target.length - shape.length;
  const inStr = shape.map((_, i) => numel(shape.slice(i + 1)));
  const out = new Float64Array(n);
  for (let o = 0; o < n; o++) {
    let rem = o;
    let off = 0;
    for (let k = target.length - 1; k >= 0; k--) {
      const c = rem % target[k];
      rem = Math.floor(rem / target[k]);
      const j = k - lead;
      if (j >= 0 && shape[j] !== 1) off += c * inStr[j];
    }
    out[o] = x[off];
  }
  return out;
}

function toNum(x: Tensor): number[] {
  return x.toNumbers();
}

// ====================================================================== creation and readback
t.test('creation: dtype inference, readback types, item, arraySync', async (t) => {
  L.tidy(() => {
    assertMeta(t, tensor([1, 2, 3]), [3], 'int64', 'integers infer int64');
    assertMeta(t, tensor([1.5, 2]), [2], 'float32', 'floats infer float32');
    assertMeta(t, tensor([true, false]), [2], 'bool', 'booleans infer bool');
    assertMeta(t, tensor(3.5), [], 'float32', 'a number is 0-d');
    assertMeta(
      t,
      tensor(
        [
          [1, 2, 3],
          [4, 5, 6],
        ],
        { dtype: 'float64' },
      ),
      [2, 3],
      'float64',
    );
    assertMeta(t, tensor(new Float64Array(6), { shape: [2, 3] }), [2, 3], 'float64', 'typed arrays keep their type');
    assertMeta(t, tensor(new Int32Array(4)), [4], 'int32');

    const f32 = tensor([1.5, -2.25], { dtype: 'float32' });
    t.ok(f32.dataSync() instanceof Float32Array, 'f32 -> Float32Array');
    const f64a = tensor([1.5, -2.25], { dtype: 'float64' });
    t.ok(f64a.dataSync() instanceof Float64Array, 'f64 -> Float64Array');
    const bf = tensor([1.5, -2.25, 1 / 3], { dtype: 'bfloat16' });
    const bfd = bf.dataSync();
    t.ok(bfd instanceof Float32Array, 'bf16 -> Float32Array');
    t.same(Array.from(bfd as Float32Array).slice(0, 2), [1.5, -2.25], 'bf16 exact values survive');
    // 1/3 in bf16: 8 significant bits, round to nearest even -> 0.333984375
    t.equal(bfd[2], 0.333984375, 'bf16 rounds to nearest');
    const h = tensor([0.1], { dtype: 'float16' });
    t.ok(h.dataSync() instanceof Float32Array, 'f16 -> Float32Array');
    t.equal(h.dataSync()[0], 0.0999755859375, 'f16 rounds to nearest');
    const i64 = tensor([1, -2, 3]);
    const i64d = i64.dataSync();
    t.ok(i64d instanceof BigInt64Array, 'int64 -> BigInt64Array');
    t.same(Array.from(i64d as BigInt64Array), [1n, -2n, 3n]);
    t.ok(tensor([1, 2], { dtype: 'int32' }).dataSync() instanceof Int32Array, 'int32 -> Int32Array');
    t.ok(tensor([true]).dataSync() instanceof Uint8Array, 'bool -> Uint8Array');
    t.same(tensor([[true, false]]).arraySync(), [[true, false]], 'bool arraySync gives booleans');
    t.same(
      tensor(
        [
          [1, 2],
          [3, 4],
        ],
        { dtype: 'float32' },
      ).arraySync(),
      [
        [1, 2],
        [3, 4],
      ],
    );
    t.same(
      tensor([
        [1, 2],
        [3, 4],
      ]).arraySync(),
      [
        [1, 2],
        [3, 4],
      ],
      'int64 arraySync gives numbers',
    );
    t.equal(tensor([[7]], { dtype: 'int32' }).item(), 7);
    t.equal(tensor(2.5, { dtype: 'float64' }).item(), 2.5);
    t.throws(() => tensor([1, 2]).item(), /\[item\]/);
    // Readback of a non-contiguous view goes through a copy.
    const m = tensor(
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      { dtype: 'float32' },
    );
    t.same(Array.from(m.T.toNumbers()), [1, 4, 2, 5, 3, 6], 'transposed readback');
    t.same(m.T.arraySync(), [
      [1, 4],
      [2, 5],
      [3, 6],
    ]);
    t.same(Array.from(m.slice(1, 0, 3, 2).toNumbers()), [1, 3, 4, 6], 'step slice readback');
  });
});

t.test('creation: zeros/ones/full/arange/empty, like-variants', async (t) => {
  L.tidy(() => {
    assertClose(t, L.zeros([2, 3]), new Float64Array(6), { shape: [2, 3], dtype: 'float32' });
    assertClose(t, L.ones([4], { dtype: 'float64' }), [1, 1, 1, 1], { shape: [4], dtype: 'float64' });
    assertClose(t, L.full([2], 7, { dtype: 'int32' }), [7, 7], { dtype: 'int32' });
    assertClose(t, L.full([2], true, { dtype: 'bool' }), [1, 1], { dtype: 'bool' });
    assertClose(t, L.arange(5), [0, 1, 2, 3, 4], { shape: [5], dtype: 'int64' });
    assertClose(t, L.arange(1, 2, 0.25), [1, 1.25, 1.5, 1.75], { shape: [4], dtype: 'float32' });
    assertClose(t, L.arange(5, 0, -2), [5, 3, 1], { dtype: 'int64' });
    assertClose(t, L.arange(0, 3, 1, { dtype: 'float64' }), [0, 1, 2], { dtype: 'float64' });
    const x = randT([2, 2], 1, 'float64');
    assertClose(t, L.zerosLike(x), [0, 0, 0, 0], { shape: [2, 2], dtype: 'float64' });
    assertClose(t, L.onesLike(x), [1, 1, 1, 1], { dtype: 'float64' });
    assertClose(t, L.fullLike(x, 3), [3, 3, 3, 3], { dtype: 'float64' });
    assertMeta(t, L.empty([0, 3]), [0, 3], 'float32', 'empty tensors allowed');
    t.equal(L.zeros([0]).dataSync().length, 0);
  });
});

t.test('to(): casts with rounding and truncation', async (t) => {
  L.tidy(() => {
    const x = tensor([1.7, -1.7, 0.5, 300.25], { dtype: 'float32' });
    assertClose(t, x.to('int32'), [1, -1, 0, 300], { dtype: 'int32', msg: 'float -> int truncates toward zero' });
    assertClose(t, x.to('int64'), [1, -1, 0, 300], { dtype: 'int64' });
    assertClose(t, x.to('bool'), [1, 1, 1, 1], { dtype: 'bool' });
    assertClose(t, tensor([0, 2]).to('bool'), [0, 1], { dtype: 'bool' });
    assertClose(t, x.to('float64'), Array.from(Float32Array.of(1.7, -1.7, 0.5, 300.25)), { dtype: 'float64', ...F64_TOL });
    // 300.25 in bf16 (8 bits of precision) -> 300
    assertClose(t, x.to('bfloat16'), [1.703125, -1.703125, 0.5, 300], { dtype: 'bfloat16', atol: 0, rtol: 0 });
    assertClose(t, tensor([true, false]).to('float32'), [1, 0], { dtype: 'float32' });
    const same = x.to('float32');
    t.not(same, x, 'same dtype gives a new handle');
    t.equal(same.storage, x.storage, '... sharing storage');
    const onCpu = x.to('cpu');
    assertClose(t, onCpu, f64(x), { dtype: 'float32', atol: 0, rtol: 0 });
    // non-contiguous source
    const m = randT([3, 4], 2, 'float64');
    assertClose(t, m.T.to('float32'), refTranspose(f64(m), 1, 3, 4), { shape: [4, 3], dtype: 'float32', ...f32Tol() });
  });
});

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

// ====================================================================== reductions
t.test('reductions: sum/mean/var/logsumexp over single, multiple and non-contiguous dims, keepdim', async (t) => {
  const shape = [3, 4, 5];
  const dimSets: (number | number[] | undefined)[] = [undefined, 0, 1, 2, -1, [0, 2], [1, 2], [0, 1], [0, 1, 2], [-3, -1]];
  for (const dtype of ['float32', 'float64'] as DType[]) {
    for (const [di, dim] of dimSets.entries()) {
      for (const keepdim of [false, true]) {
        L.tidy(() => {
          const x = randT(shape, 300 + di, dtype, -2, 2);
          const xv = f64(x);
          const dims = dim === undefined ? [0, 1, 2] : (Array.isArray(dim) ? dim : [dim]).map((d) => (d < 0 ? d + 3 : d)).sort();
          const K = numel(dims.map((d) => shape[d]));
          const outShape = shape.flatMap((s, i) => (dims.includes(i) ? (keepdim ? [1] : []) : [s]));
          const tol = dtype === 'float64' ? F64_TOL : f32Tol(K);
          const lbl = `${dtype} dim=${JSON.stringify(dim)} keepdim=${keepdim}`;
          const sumR = refReduce(xv, shape, dims, (v) => v.reduce((a, b) => a + b, 0));
          assertClose(t, L.sum(x, dim, keepdim), sumR, { shape: outShape, dtype, ...tol, msg: `sum ${lbl}` });
          assertClose(
            t,
            L.mean(x, dim, keepdim),
            sumR.map((s) => s / K),
            { shape: outShape, dtype, ...tol, msg: `mean ${lbl}` },
          );
          for (const correction of [0, 1]) {
            const vr = refReduce(xv, shape, dims, (v) => {
              const m = v.reduce((a, b) => a + b, 0) / v.length;
              return v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - correction);
            });
            assertClose(t, L.variance(x, dim, { correction, keepdim }), vr, {
              shape: outShape,
              dtype,
              ...tol,
              msg: `var(correction=${correction}) ${lbl}`,
            });
          }
          if (dim !== undefined) {
            const lse = refReduce(xv, shape, dims, (v) => {
              const m = Math.max(...v);
              return m + Math.log(v.reduce((a, b) => a + Math.exp(b - m), 0));
            });
            assertClose(t, L.logsumexp(x, dim, keepdim), lse, { shape: outShape, dtype, ...tol, msg: `logsumexp ${lbl}` });
          }
        });
      }
    }
  }
});

t.test('reductions on non-contiguous inputs', async (t) => {
  L.tidy(() => {
    const base = randT([4, 6, 5], 21, 'float32');
    const x = base.permute(2, 0, 1).slice(2, 0, 6, 2); // [5, 4, 3], fully strided
    const xv = f64(x);
    const shape = [5, 4, 3];
    for (const dims of [[0], [1], [2], [0, 2], [1, 2]]) {
      const K = numel(dims.map((d) => shape[d]));
      const r = refReduce(xv, shape, dims, (v) => v.reduce((a, b) => a + b, 0));
      assertClose(t, x.sum(dims, true), r, {
        shape: shape.map((s, i) => (dims.includes(i) ? 1 : s)),
        dtype: 'float32',
        ...f32Tol(K),
        msg: `sum dims ${dims} on a strided view`,
      });
      const mx = refReduce(xv, shape, dims, (v) => Math.max(...v));
      if (dims.length === 1) assertClose(t, x.max(dims[0]), mx, { dtype: 'float32', atol: 0, rtol: 0, msg: `max dim ${dims} on a strided view` });
    }
    // expanded input: sum of a broadcast view
    const row = randT([1, 5], 22, 'float64');
    const ex = row.expand(4, 5);
    assertClose(
      t,
      ex.sum(0),
      f64(row).map((v) => 4 * v),
      { shape: [5], dtype: 'float64', ...F64_TOL, msg: 'sum over an expanded dim' },
    );
  });
});

t.test('max/min/argmax/argmin: values, ties and keepdim', async (t) => {
  L.tidy(() => {
    const shape = [3, 5];
    const x = randT(shape, 31, 'float32');
    const xv = f64(x);
    for (const dim of [0, 1, -1]) {
      const d = dim < 0 ? dim + 2 : dim;
      const rmax = refReduce(xv, shape, [d], (v) => Math.max(...v));
      const rmin = refReduce(xv, shape, [d], (v) => Math.min(...v));
      const ramax = refReduce(xv, shape, [d], (v) => v.indexOf(Math.max(...v)));
      const ramin = refReduce(xv, shape, [d], (v) => v.indexOf(Math.min(...v)));
      const os = shape.filter((_, i) => i !== d);
      assertClose(t, x.max(dim), rmax, { shape: os, dtype: 'float32', atol: 0, rtol: 0, msg: `max dim ${dim}` });
      assertClose(t, x.min(dim), rmin, { shape: os, dtype: 'float32', atol: 0, rtol: 0, msg: `min dim ${dim}` });
      assertClose(t, x.argmax(dim), ramax, { shape: os, dtype: 'int64', atol: 0, rtol: 0, msg: `argmax dim ${dim}` });
      assertClose(t, x.argmin(dim), ramin, { shape: os, dtype: 'int64', atol: 0, rtol: 0, msg: `argmin dim ${dim}` });
      assertMeta(
        t,
        x.argmax(dim, true),
        shape.map((s, i) => (i === d ? 1 : s)),
        'int64',
        `argmax keepdim dim ${dim}`,
      );
    }
    assertClose(t, x.max(), [Math.max(...xv)], { shape: [], dtype: 'float32', atol: 0, rtol: 0, msg: 'max over all' });
    assertClose(t, x.argmax(), [xv.indexOf(Math.max(...xv))], { shape: [], dtype: 'int64', atol: 0, rtol: 0, msg: 'argmax over all (flattened)' });
    // ties: the first index wins (as PyTorch)
    const ties = tensor(
      [
        [1, 3, 3, 0],
        [2, 2, 2, 2],
        [-1, -5, 4, -5],
      ],
      { dtype: 'float32' },
    );
    t.same(toNum(ties.argmax(1)), [1, 0, 2], 'argmax ties -> first index');
    t.same(toNum(ties.argmin(1)), [3, 0, 1], 'argmin ties -> first index');
    t.same(toNum(tensor([1, 3, 3, 0, 3], { dtype: 'float32' }).argmax()), [1], 'flattened argmax tie -> first');
    t.same(toNum(ties.argmax()), [10], 'flattened argmax');
    // integers
    const xi = tensor(
      [
        [4, -2, 9],
        [0, 7, 7],
      ],
      { dtype: 'int32' },
    );
    assertClose(t, xi.max(1), [9, 7], { dtype: 'int32', msg: 'int max keeps dtype' });
    assertClose(t, xi.argmax(1), [2, 1], { dtype: 'int64' });
    assertClose(t, xi.sum(), [25], { shape: [], dtype: 'int64', msg: 'int32 sum accumulates in int64' });
    assertClose(t, tensor([true, true, false]).sum(), [2], { dtype: 'int64', msg: 'bool sum counts' });
    // 0-d and empty
    assertClose(t, tensor(2.5, { dtype: 'float64' }).sum(), [2.5], { shape: [], dtype: 'float64', msg: '0-d sum' });
    assertClose(t, L.zeros([0, 5]).sum(1), [], { shape: [0], dtype: 'float32', msg: 'sum of [0, 5] over dim 1 is empty' });
    assertClose(t, L.zeros([0, 5]).sum(0), [0, 0, 0, 0, 0], { shape: [5], msg: 'sum over an empty dim is 0' });
    assertClose(t, L.zeros([0]).sum(), [0], { shape: [], msg: 'sum of an empty tensor is 0' });
    assertClose(t, L.zeros([3, 0]).mean(0), [], { shape: [0], msg: 'mean of [3, 0] over dim 0 is empty' });
  });
});

// ====================================================================== matmul / linear
t.test('matmul: 1-D, 2-D, batched, broadcast batch, transposed operands (f32 and f64)', async (t) => {
  const cases: { name: string; a: number[]; b: number[]; out: number[]; ta?: boolean; tb?: boolean }[] = [
    { name: '1-D . 1-D', a: [7], b: [7], out: [] },
    { name: '1-D @ 2-D', a: [7], b: [7, 5], out: [5] },
    { name: '2-D @ 1-D', a: [4, 7], b: [7], out: [4] },
    { name: '2-D @ 2-D', a: [4, 7], b: [7, 5], out: [4, 5] },
    { name: '2-D @ 2-D odd sizes', a: [13, 33], b: [33, 17], out: [13, 17] },
    { name: 'batched', a: [3, 4, 7], b: [3, 7, 5], out: [3, 4, 5] },
    { name: 'broadcast batch 2-D rhs', a: [3, 4, 7], b: [7, 5], out: [3, 4, 5] },
    { name: 'broadcast batch 2-D lhs', a: [4, 7], b: [3, 7, 5], out: [3, 4, 5] },
    { name: 'broadcast batch [2,1]x[3]', a: [2, 1, 4, 7], b: [3, 7, 5], out: [2, 3, 4, 5] },
    { name: '1-D @ 3-D', a: [7], b: [2, 7, 5], out: [2, 5] },
    { name: '3-D @ 1-D', a: [2, 4, 7], b: [7], out: [2, 4] },
    { name: 'a transposed', a: [4, 7], b: [7, 5], out: [4, 5], ta: true },
    { name: 'b transposed', a: [4, 7], b: [7, 5], out: [4, 5], tb: true },
    { name: 'both transposed, batched', a: [2, 4, 7], b: [2, 7, 5], out: [2, 4, 5], ta: true, tb: true },
    { name: 'K = 0', a: [3, 0], b: [0, 2], out: [3, 2] },
  ];
  for (const [ci, c] of cases.entries()) {
    for (const dtype of ['float32', 'float64'] as DType[]) {
      L.tidy(() => {
        // Build operands, optionally as transposed views of [.., C, R] storage.
        const mk = (shape: number[], tr: boolean | undefined, seed: number): Tensor => {
          if (!tr || shape.length < 2) return randT(shape, seed, dtype);
          const s = shape.slice();
          [s[s.length - 2], s[s.length - 1]] = [s[s.length - 1], s[s.length - 2]];
          return randT(s, seed, dtype).transpose(-1, -2);
        };
        const a = mk(c.a, c.ta, 400 + ci);
        const b = mk(c.b, c.tb, 500 + ci);
        if (c.ta) t.notOk(a.isContiguous(), `${c.name}: a is a strided view`);
        const y = a.matmul(b);
        // reference: promote 1-D as torch does, broadcast batch dims
        const a2 = c.a.length === 1 ? [1, c.a[0]] : c.a;
        const b2 = c.b.length === 1 ? [c.b[0], 1] : c.b;
        const [M, K] = a2.slice(-2);
        const N = b2[b2.length - 1];
        const batch = bshape(a2.slice(0, -2), b2.slice(0, -2));
        const Bt = numel(batch);
        const av = refBroadcast(f64(a), a2, [...batch, M, K]);
        const bv = refBroadcast(f64(b), b2, [...batch, K, N]);
        const r = refMatmul(av, bv, Bt, M, K, N);
        const tol = dtype === 'float64' ? F64_TOL : f32Tol(K);
        assertClose(t, y, r, { shape: c.out, dtype, ...tol, msg: `matmul ${c.name} ${dtype}` });
      });
    }
  }
});
function bshape(a: number[], b: number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    out.push(x === 1 ? y : x);
  }
  return out;
}

t.test('matmul: bf16 and f16 (f32 accumulation, one rounding of the output)', async (t) => {
  for (const dtype of ['bfloat16', 'float16'] as DType[]) {
    L.tidy(() => {
      const [M, K, N] = [9, 70, 11];
      const a = randT([M, K], 600, dtype);
      const b = randT([K, N], 601, dtype);
      const r = refMatmul(f64(a), f64(b), 1, M, K, N);
      // Inputs are exact in both the kernel and the reference (read back from the rounded tensors);
      // the output is rounded once: half an ulp is 2^-9 (bf16) / 2^-12 (f16) of |r|; f32
      // accumulation adds ~sqrt(K) * 2^-24 * sum|a||b| <= ~1e-5 here.
      const rtol = dtype === 'bfloat16' ? 2 ** -8 : 2 ** -11;
      assertClose(t, L.matmul(a, b), r, { shape: [M, N], dtype, atol: 1e-5 * Math.sqrt(K), rtol, msg: `matmul ${dtype}` });
      const at = randT([K, M], 602, dtype).T;
      const r2 = refMatmul(f64(at), f64(b), 1, M, K, N);
      assertClose(t, L.matmul(at, b), r2, { shape: [M, N], dtype, atol: 1e-5 * Math.sqrt(K), rtol, msg: `matmul ${dtype} transposed a` });
    });
  }
});

t.test('linear: x @ W^T + b for 1-D, 2-D and 3-D inputs, with and without bias', async (t) => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    for (const xs of [[6], [4, 6], [2, 3, 6]]) {
      for (const withBias of [true, false]) {
        L.tidy(() => {
          const [O, I] = [5, 6];
          const x = randT(xs, 700, dtype);
          const w = randT([O, I], 701, dtype);
          const b = withBias ? randT([O], 702, dtype) : null;
          const rows = numel(xs) / I;
          const r = refMatmul(f64(x), refTranspose(f64(w), 1, O, I), 1, rows, I, O);
          if (b) {
            const bv = f64(b);
            for (let i = 0; i < r.length; i++) r[i] += bv[i % O];
          }
          const tol = dtype === 'float64' ? F64_TOL : f32Tol(I);
          assertClose(t, L.linear(x, w, b), r, { shape: [...xs.slice(0, -1), O], dtype, ...tol, msg: `linear ${dtype} x[${xs}] bias=${withBias}` });
        });
      }
    }
  }
  L.tidy(() => {
    // a transposed (non-contiguous) input
    const x = randT([6, 4], 703, 'float32').T;
    const w = randT([3, 6], 704, 'float32');
    const r = refMatmul(f64(x), refTranspose(f64(w), 1, 3, 6), 1, 4, 6, 3);
    assertClose(t, L.linear(x, w), r, { shape: [4, 3], dtype: 'float32', ...f32Tol(6), msg: 'linear on a transposed input' });
  });
});

// ====================================================================== softmax / cross-entropy / norms
t.test('softmax and logSoftmax: last dim, other dims, large values', async (t) => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    L.tidy(() => {
      const shape = [3, 4, 6];
      const x = randT(shape, 800, dtype, -4, 4);
      const xv = f64(x);
      const tolK = (C: number): { atol: number; rtol: number } => (dtype === 'float64' ? F64_TOL : f32Tol(C));
      for (const log of [false, true]) {
        const op = log ? L.logSoftmax : L.softmax;
        const name = log ? 'logSoftmax' : 'softmax';
        assertClose(t, op(x), refSoftmax(xv, 12, 6, log), { shape, dtype, ...tolK(6), msg: `${name} ${dtype} last dim` });
        for (const dim of [0, 1]) {
          const perm = dim === 0 ? [1, 2, 0] : [0, 2, 1];
          const inv = dim === 0 ? [2, 0, 1] : [0, 2, 1];
          const ps = perm.map((p) => shape[p]);
          const moved = refPermute(xv, shape, perm);
          const sm = refSoftmax(moved, numel(ps) / ps[2], ps[2], log);
          assertClose(t, op(x, dim), refPermute(sm, ps, inv), { shape, dtype, ...tolK(shape[dim]), msg: `${name} ${dtype} dim ${dim}` });
        }
        const big = L.add(x, 1000);
        assertClose(t, op(big), refSoftmax(f64(big), 12, 6, log), {
          shape,
          dtype,
          atol: dtype === 'float64' ? 1e-9 : 1e-4,
          rtol: 1e-5,
          msg: `${name} ${dtype} stable at +1000`,
        });
        const xt = x.transpose(0, 2); // non-contiguous input
        assertClose(t, op(xt), refSoftmax(f64(xt), 24, 3, log), { shape: [6, 4, 3], dtype, ...tolK(3), msg: `${name} ${dtype} strided input` });
      }
    });
  }
  L.tidy(() => {
    const m = tensor([[0, -Infinity, 1]], { dtype: 'float32' });
    assertClose(t, L.softmax(m), [1 / (1 + Math.E), 0, Math.E / (1 + Math.E)], { ...f32Tol(), msg: 'softmax with -inf entries' });
  });
});

t.test('crossEntropy: mean/sum/none, ignoreIndex, int32 targets, 3-D logits', async (t) => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    L.tidy(() => {
      const [B, T, V] = [2, 3, 7];
      const logits = randT([B, T, V], 900, dtype, -3, 3);
      const tgt = [0, 6, -100, 3, 3, 1];
      const target = tensor(tgt, { shape: [B, T] });
      const lv = f64(logits);
      const lossDt = dtype === 'float64' ? 'float64' : 'float32';
      const tol = dtype === 'float64' ? F64_TOL : f32Tol(V);
      for (const reduction of ['mean', 'sum', 'none'] as const) {
        const r = refCrossEntropy(lv, tgt, B * T, V, { reduction });
        const y = L.crossEntropy(logits, target, { reduction });
        assertClose(t, y, r, { shape: reduction === 'none' ? [B, T] : [], dtype: lossDt, ...tol, msg: `crossEntropy ${dtype} ${reduction}` });
      }
      const tgt2 = [1, 1, 2, 5, 1, 0];
      const r2 = refCrossEntropy(lv, tgt2, B * T, V, { ignoreIndex: 1 });
      assertClose(t, L.crossEntropy(logits, tensor(tgt2, { dtype: 'int32', shape: [B, T] }), { ignoreIndex: 1 }), r2, {
        shape: [],
        dtype: lossDt,
        ...tol,
        msg: `crossEntropy ${dtype} ignoreIndex=1, int32 target`,
      });
    });
  }
  L.tidy(() => {
    const logits = randT([4, 5], 901, 'bfloat16');
    const r = refCrossEntropy(f64(logits), [0, 1, 2, 3], 4, 5);
    assertClose(t, L.crossEntropy(logits, tensor([0, 1, 2, 3])), r, {
      shape: [],
      dtype: 'float32',
      ...f32Tol(5),
      msg: 'bf16 logits give a float32 loss',
    });
  });
});

t.test('layerNorm: with/without weight and bias, multi-dim normalizedShape, strided input', async (t) => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    for (const [wi, [useW, useB]] of [
      [true, true],
      [true, false],
      [false, true],
      [false, false],
    ].entries()) {
      L.tidy(() => {
        const [N, C] = [6, 10];
        const x = randT([2, 3, C], 1000 + wi, dtype, -2, 3);
        const w = useW ? randT([C], 1010, dtype, 0.5, 1.5) : null;
        const b = useB ? randT([C], 1011, dtype) : null;
        const r = refLayerNorm(f64(x), N, C, w && f64(w), b && f64(b), 1e-5);
        const tol = dtype === 'float64' ? F64_TOL : f32Tol(C);
        assertClose(t, L.layerNorm(x, C, w, b), r, { shape: [2, 3, C], dtype, ...tol, msg: `layerNorm ${dtype} weight=${useW} bias=${useB}` });
      });
    }
  }
  L.tidy(() => {
    const x = randT([3, 4, 5], 1020, 'float64');
    const w = randT([4, 5], 1021, 'float64');
    const b = randT([4, 5], 1022, 'float64');
    const r = refLayerNorm(f64(x), 3, 20, f64(w), f64(b), 1e-6);
    assertClose(t, L.layerNorm(x, [4, 5], w, b, 1e-6), r, {
      shape: [3, 4, 5],
      dtype: 'float64',
      ...F64_TOL,
      msg: 'layerNorm over two trailing dims',
    });
    const xs = randT([8, 5], 1023, 'float32').T; // [5, 8] strided
    assertClose(t, L.layerNorm(xs, 8), refLayerNorm(f64(xs), 5, 8, null, null, 1e-5), {
      shape: [5, 8],
      ...f32Tol(8),
      msg: 'layerNorm strided input',
    });
    const xb = randT([4, 16], 1024, 'bfloat16');
    const wb = randT([16], 1025, 'bfloat16');
    // f32 statistics, one bf16 rounding of the output
    assertClose(t, L.layerNorm(xb, 16, wb), refLayerNorm(f64(xb), 4, 16, f64(wb), null, 1e-5), {
      dtype: 'bfloat16',
      atol: 1e-5,
      rtol: 2 ** -7,
      msg: 'layerNorm bf16',
    });
  });
});

t.test('rmsNorm: with/without weight, strided input', async (t) => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    for (const useW of [true, false]) {
      L.tidy(() => {
        const x = randT([2, 3, 12], 1100, dtype, -2, 2);
        const w = useW ? randT([12], 1101, dtype, 0.5, 1.5) : null;
        const r = refRmsNorm(f64(x), 6, 12, w && f64(w), 1e-6);
        const tol = dtype === 'float64' ? F64_TOL : f32Tol(12);
        assertClose(t, L.rmsNorm(x, w), r, { shape: [2, 3, 12], dtype, ...tol, msg: `rmsNorm ${dtype} weight=${useW}` });
        assertClose(t, L.rmsNorm(x, w, 0.1), refRmsNorm(f64(x), 6, 12, w && f64(w), 0.1), { dtype, ...tol, msg: `rmsNorm ${dtype} eps=0.1` });
      });
    }
  }
  L.tidy(() => {
    const xs = randT([8, 5], 1102, 'float32').T;
    assertClose(t, L.rmsNorm(xs), refRmsNorm(f64(xs), 5, 8, null, 1e-6), { shape: [5, 8], ...f32Tol(8), msg: 'rmsNorm strided input' });
  });
});

// ====================================================================== indexing
t.test('embedding, indexSelect, gather', async (t) => {
  L.tidy(() => {
    const [V, C] = [7, 4];
    const w = randT([V, C], 1200, 'float32');
    const wv = f64(w);
    const ids = [
      [3, 0, 6],
      [3, 3, 1],
    ];
    const e = L.embedding(tensor(ids), w);
    const r = ids.flat().flatMap((i) => Array.from(wv.subarray(i * C, (i + 1) * C)));
    assertClose(t, e, r, { shape: [2, 3, C], dtype: 'float32', atol: 0, rtol: 0, msg: 'embedding rows (repeated ids)' });
    assertClose(t, L.embedding(tensor([2, 5], { dtype: 'int32' }), w), [...wv.subarray(8, 12), ...wv.subarray(20, 24)], {
      shape: [2, C],
      msg: 'embedding int32 ids',
    });

    const x = randT([3, 4, 5], 1201, 'float64');
    const xv = f64(x);
    for (const dim of [0, 1, 2, -1]) {
      const d = dim < 0 ? dim + 3 : dim;
      const idx = [d === 0 ? 2 : 3, 0, 1, 0];
      const shape = [3, 4, 5];
      const os = shape.slice();
      os[d] = idx.length;
      const exp = new Float64Array(numel(os));
      for (let o = 0; o < exp.length; o++) {
        const c = [Math.floor(o / (os[1] * os[2])), Math.floor(o / os[2]) % os[1], o % os[2]];
        c[d] = idx[c[d]];
        exp[o] = xv[(c[0] * 4 + c[1]) * 5 + c[2]];
      }
      assertClose(t, L.indexSelect(x, dim, tensor(idx)), exp, { shape: os, dtype: 'float64', atol: 0, rtol: 0, msg: `indexSelect dim ${dim}` });
    }
    const xt = x.transpose(0, 2); // [5, 4, 3] strided
    const selT = L.indexSelect(xt, 0, tensor([4, 0]));
    const xtv = f64(xt);
    assertClose(t, selT, [...xtv.subarray(48, 60), ...xtv.subarray(0, 12)], { shape: [2, 4, 3], msg: 'indexSelect on a strided view' });

    // gather along each dim
    const g = randT([3, 4], 1202, 'float32');
    const gv = f64(g);
    const gi0 = [
      [2, 0, 1, 1],
      [0, 0, 2, 1],
    ];
    const r0 = gi0.flatMap((row, i) => row.map((k, j) => gv[k * 4 + j]));
    assertClose(t, L.gather(g, 0, tensor(gi0)), r0, { shape: [2, 4], dtype: 'float32', atol: 0, rtol: 0, msg: 'gather dim 0' });
    const gi1 = [
      [3, 3],
      [0, 1],
      [2, 0],
    ];
    const r1 = gi1.flatMap((row, i) => row.map((k) => gv[i * 4 + k]));
    assertClose(t, L.gather(g, 1, tensor(gi1)), r1, { shape: [3, 2], atol: 0, rtol: 0, msg: 'gather dim 1' });
    assertClose(t, L.gather(g.T, 1, tensor([[1], [0], [2], [2]])), [gv[4], gv[1], gv[10], gv[11]], {
      shape: [4, 1],
      atol: 0,
      rtol: 0,
      msg: 'gather from a transposed view',
    });
  });
});

// ====================================================================== rope, dropout, patchEmbed
function ropeTables(T: number, D: number, base = 10000): { cos: Float64Array; sin: Float64Array } {
  const cos = new Float64Array(T * D);
  const sin = new Float64Array(T * D);
  for (let p = 0; p < T; p++)
    for (let i = 0; i < D / 2; i++) {
      const a = p / base ** ((2 * i) / D);
      cos[p * D + i] = cos[p * D + i + D / 2] = Math.cos(a);
      sin[p * D + i] = sin[p * D + i + D / 2] = Math.sin(a);
    }
  return { cos, sin };
}
function refRope(
  x: ArrayLike<number>,
  cos: ArrayLike<number>,
  sin: ArrayLike<number>,
  B: number,
  H: number,
  T: number,
  D: number,
  perBatch: boolean,
): Float64Array {
  const out = new Float64Array(B * H * T * D);
  const h2 = D / 2;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let p = 0; p < T; p++) {
        const o = ((b * H + h) * T + p) * D;
        const c = ((perBatch ? b : 0) * T + p) * D;
        for (let i = 0; i < D; i++) {
          const rot = i < h2 ? -x[o + i + h2] : x[o + i - h2];
          out[o + i] = x[o + i] * cos[c + i] + rot * sin[c + i];
        }
      }
  return out;
}

t.test('rope: rotate-half against the reference, shared and per-batch tables, strided x', async (t) => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    L.tidy(() => {
      const [B, H, T, D] = [2, 3, 5, 8];
      const { cos, sin } = ropeTables(T, D);
      const c = tensor(cos, { shape: [T, D], dtype });
      const s = tensor(sin, { shape: [T, D], dtype });
      const x = randT([B, H, T, D], 1300, dtype);
      const tol = dtype === 'float64' ? F64_TOL : f32Tol(2);
      assertClose(t, L.rope(x, c, s), refRope(f64(x), f64(c), f64(s), B, H, T, D, false), {
        shape: [B, H, T, D],
        dtype,
        ...tol,
        msg: `rope ${dtype}`,
      });
      // per-batch tables (positions differ per sequence), arbitrary values
      const cb = randT([B, T, D], 1301, dtype);
      const sb = randT([B, T, D], 1302, dtype);
      assertClose(t, L.rope(x, cb, sb), refRope(f64(x), f64(cb), f64(sb), B, H, T, D, true), {
        dtype,
        ...tol,
        msg: `rope ${dtype} per-batch tables`,
      });
      // x as a [B, T, H, D] -> [B, H, T, D] transposed view (how attention feeds it)
      const xt = randT([B, T, H, D], 1303, dtype).transpose(1, 2);
      assertClose(t, L.rope(xt, c, s), refRope(f64(xt), f64(c), f64(s), B, H, T, D, false), { dtype, ...tol, msg: `rope ${dtype} strided x` });
    });
  }
});

t.test('dropout: identity when p=0 or not training, inverted scaling, seeded', async (t) => {
  L.tidy(() => {
    const x = L.ones([200, 50]);
    assertClose(t, L.dropout(x, 0), f64(x), { atol: 0, rtol: 0, msg: 'p = 0' });
    assertClose(t, L.dropout(x, 0.5, false), f64(x), { atol: 0, rtol: 0, msg: 'eval mode' });
    assertClose(t, L.dropout(x, 1), new Float64Array(x.numel), { atol: 0, rtol: 0, msg: 'p = 1 zeroes' });
    const y = f64(L.dropout(x, 0.3, true, new L.Generator(5)));
    const kept = y.filter((v) => v !== 0);
    t.ok(
      kept.every((v) => Math.abs(v - 1 / 0.7) < 1e-6),
      'kept values are scaled by 1/(1-p)',
    );
    const frac = 1 - kept.length / y.length;
    // 10000 Bernoulli(0.3) draws: std of the fraction is 0.0046; allow ~6 sigma
    t.ok(Math.abs(frac - 0.3) < 0.03, `dropped fraction ${frac.toFixed(3)} ~ 0.3`);
    const y2 = f64(L.dropout(x, 0.3, true, new L.Generator(5)));
    t.same(Array.from(y2), Array.from(y), 'same generator seed, same mask');
  });
});

t.test('patchEmbed: stride = kernel convolution against a direct loop', async (t) => {
  for (const dtype of ['float32', 'float64'] as DType[]) {
    L.tidy(() => {
      const [B, C, Hh, W, O, p] = [2, 3, 8, 12, 5, 4];
      const x = randT([B, C, Hh, W], 1400, dtype);
      const w = randT([O, C, p, p], 1401, dtype);
      const b = randT([O], 1402, dtype);
      const xv = f64(x);
      const wv = f64(w);
      const bv = f64(b);
      const gh = Hh / p;
      const gw = W / p;
      const r = new Float64Array(B * gh * gw * O);
      for (let n = 0; n < B; n++)
        for (let py = 0; py < gh; py++)
          for (let px = 0; px < gw; px++)
            for (let o = 0; o < O; o++) {
              let s = bv[o];
              for (let c = 0; c < C; c++)
                for (let i = 0; i < p; i++)
                  for (let j = 0; j < p; j++) s += xv[((n * C + c) * Hh + py * p + i) * W + px * p + j] * wv[((o * C + c) * p + i) * p + j];
              r[((n * gh + py) * gw + px) * O + o] = s;
            }
      const tol = dtype === 'float64' ? F64_TOL : f32Tol(C * p * p);
      assertClose(t, L.patchEmbed(x, w, b), r, { shape: [B, gh * gw, O], dtype, ...tol, msg: `patchEmbed ${dtype}` });
    });
  }
});

// ====================================================================== attention
function attnCase(
  t: Test,
  dims: { B: number; H: number; Hkv: number; T: number; S: number; D: number },
  opts: { causal?: boolean; mask?: boolean; dtype: DType; seed: number; scale?: number },
): void {
  L.tidy(() => {
    const { B, H, Hkv, T, S, D } = dims;
    const q = randT([B, H, T, D], opts.seed, opts.dtype, -2, 2);
    const k = randT([B, Hkv, S, D], opts.seed + 1, opts.dtype, -2, 2);
    const v = randT([B, Hkv, S, D], opts.seed + 2, opts.dtype);
    let mask: Tensor | null = null;
    let maskVals: Uint8Array | null = null;
    if (opts.mask) {
      // [B, 1, T, S] broadcast over heads; every row keeps at least one key (the composite gives NaN
      // for fully-masked rows, the fused kernel 0)
      const r = rng(opts.seed + 3);
      const m = new Uint8Array(B * T * S);
      for (let i = 0; i < m.length; i++) m[i] = r() < 0.6 ? 1 : 0;
      for (let row = 0; row < B * T; row++) m[row * S] = 1; // key 0 is visible under causal too
      mask = tensor(m, { shape: [B, 1, T, S], dtype: 'bool' });
      maskVals = new Uint8Array(B * H * T * S);
      for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) maskVals.set(m.subarray(b * T * S, (b + 1) * T * S), (b * H + h) * T * S);
    }
    const r = refAttention(f64(q), f64(k), f64(v), dims, { causal: opts.causal, mask: maskVals, scale: opts.scale });
    const label = `attention ${opts.dtype} B${B} H${H}/${Hkv} T${T} S${S} D${D}${opts.causal ? ' causal' : ''}${opts.mask ? ' mask' : ''}`;
    const o = L.scaledDotProductAttention(q, k, v, { isCausal: opts.causal, mask, scale: opts.scale });
    const tol = opts.dtype === 'float64' ? F64_TOL : f32Tol(Math.max(S, D));
    assertClose(t, o, r, { shape: [B, H, T, D], dtype: opts.dtype, ...tol, msg: label });
    assertClose(t, L.attentionComposite(q, k, v, { isCausal: opts.causal, mask, scale: opts.scale }), r, {
      shape: [B, H, T, D],
      dtype: opts.dtype,
      ...tol,
      msg: `${label} (composite)`,
    });
  });
}

t.test('attention: fused kernel and composite against the float64 reference', async (t) => {
  const D = 12;
  let seed = 1500;
  for (const dtype of ['float32', 'float64'] as DType[]) {
    for (const [T, S] of [
      [1, 9],
      [9, 9],
      [4, 9],
      [7, 7],
    ]) {
      for (const causal of [false, true]) {
        for (const mask of [false, true]) {
          attnCase(t, { B: 2, H: 4, Hkv: 2, T, S, D }, { causal, mask, dtype, seed: (seed += 10) });
        }
      }
    }
    attnCase(t, { B: 1, H: 2, Hkv: 2, T: 5, S: 5, D }, { causal: true, dtype, seed: (seed += 10) });
    attnCase(t, { B: 1, H: 4, Hkv: 1, T: 3, S: 6, D: 8 }, { causal: false, dtype, seed: (seed += 10), scale: 0.3 });
    // A positive scale is folded into the kernel's exp (the row max taken on raw scores); a negative or zero
    // one is applied to the scores first, which for a negative scale turns the row's max into its min.
    attnCase(t, { B: 1, H: 2, Hkv: 2, T: 70, S: 70, D: 8 }, { causal: true, dtype, seed: (seed += 10), scale: -0.7 });
    attnCase(t, { B: 1, H: 2, Hkv: 1, T: 4, S: 9, D: 8 }, { causal: false, dtype, seed: (seed += 10), scale: 0 });
    attnCase(t, { B: 1, H: 3, Hkv: 3, T: 33, S: 70, D: 16 }, { causal: true, dtype, seed: (seed += 10) });
  }
});

t.test('attention: strided q/k/v ([B,T,H,D] transposed views) and fully-masked rows', async (t) => {
  L.tidy(() => {
    const [B, H, Hkv, T, S, D] = [2, 4, 2, 3, 5, 12];
    const q = randT([B, T, H, D], 1700, 'float32').transpose(1, 2);
    const k = randT([B, S, Hkv, D], 1701, 'float32').transpose(1, 2);
    const v = randT([B, S, Hkv, D], 1702, 'float32').transpose(1, 2);
    const r = refAttention(f64(q), f64(k), f64(v), { B, H, Hkv, T, S, D }, { causal: true });
    assertClose(t, L.scaledDotProductAttention(q, k, v, { isCausal: true }), r, {
      shape: [B, H, T, D],
      dtype: 'float32',
      ...f32Tol(S),
      msg: 'attention on transposed views',
    });
    // T > S with causal: the first T - S query rows see no key -> zeros in the fused kernel
    const q2 = randT([1, 1, 4, 8], 1703, 'float32');
    const k2 = randT([1, 1, 2, 8], 1704, 'float32');
    const v2 = randT([1, 1, 2, 8], 1705, 'float32');
    const r2 = refAttention(f64(q2), f64(k2), f64(v2), { B: 1, H: 1, Hkv: 1, T: 4, S: 2, D: 8 }, { causal: true });
    assertClose(t, L.scaledDotProductAttention(q2, k2, v2, { isCausal: true }), r2, { ...f32Tol(2), msg: 'rows with no visible key give 0' });
  });
});

t.test('attention: bf16 error is at most ~2x the bf16 composite error (flash-attention rule)', async (t) => {
  L.tidy(() => {
    const dims = { B: 1, H: 4, Hkv: 2, T: 16, S: 40, D: 32 };
    for (const causal of [false, true]) {
      const q = randT([1, 4, 16, 32], 1800, 'bfloat16', -2, 2);
      const k = randT([1, 2, 40, 32], 1801, 'bfloat16', -2, 2);
      const v = randT([1, 2, 40, 32], 1802, 'bfloat16');
      const r = refAttention(f64(q), f64(k), f64(v), dims, { causal });
      const maxErr = (x: Tensor): number => {
        const a = f64(x);
        let m = 0;
        for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - r[i]));
        return m;
      };
      const fused = L.scaledDotProductAttention(q, k, v, { isCausal: causal });
      t.equal(fused.dtype, 'bfloat16');
      const eFused = maxErr(fused);
      const eComp = maxErr(L.attentionComposite(q, k, v, { isCausal: causal }));
      // 2x the composite's error, plus half a bf16 ulp at |out| <= 1 for the case where the
      // composite happens to be almost exact
      t.ok(eFused <= 2 * eComp + 2 ** -9, `bf16 causal=${causal}: fused max err ${eFused.toExponential(2)} vs composite ${eComp.toExponential(2)}`);
    }
  });
});

// ====================================================================== shape ops
t.test('copies of views whose rows are contiguous (one memcpy per row): permute, slice, cat into a slice', async (t) => {
  L.tidy(() => {
    const shape = [2, 5, 3, 37];
    for (const dtype of ['float32', 'bfloat16', 'int64'] as DType[]) {
      const x = randT(shape, 2200, 'float32').mul(50).to(dtype);
      const xv = f64(x);
      const perm = [0, 2, 1, 3];
      const p = x.permute(...perm).contiguous();
      assertClose(t, p, refPermute(xv, shape, perm), { shape: [2, 3, 5, 37], atol: 0, rtol: 0, msg: `head permute ${dtype}` });
      // A slice along a middle dimension: rows 1, 3 of dimension 1, columns 2..33 of the last.
      const s = x.slice(1, 1, 5, 2).slice(3, 2, 34).contiguous();
      const want: number[] = [];
      for (let a = 0; a < 2; a++)
        for (const b of [1, 3]) for (let c = 0; c < 3; c++) for (let d = 2; d < 34; d++) want.push(xv[((a * 5 + b) * 3 + c) * 37 + d]);
      assertClose(t, s, Float64Array.from(want), { shape: [2, 2, 3, 32], atol: 0, rtol: 0, msg: `middle slice ${dtype}` });
      // cat along the last dimension writes each input into a strided slice of the output.
      const c = L.cat([x, x.slice(3, 0, 20)], 3);
      const wc: number[] = [];
      for (let r = 0; r < 30; r++) {
        for (let d = 0; d < 37; d++) wc.push(xv[r * 37 + d]);
        for (let d = 0; d < 20; d++) wc.push(xv[r * 37 + d]);
      }
      assertClose(t, c, Float64Array.from(wc), { shape: [2, 5, 3, 57], atol: 0, rtol: 0, msg: `cat along the rows ${dtype}` });
    }
  });
});

t.test('views: reshape/view/permute/transpose/slice/narrow/select/expand/squeeze/unsqueeze/flatten share storage', async (t) => {
  L.tidy(() => {
    const x = randT([2, 3, 4], 1900, 'float32');
    const xv = f64(x);
    const rs = x.reshape(6, 4);
    t.equal(rs.storage, x.storage, 'reshape of a contiguous tensor is a view');
    assertClose(t, rs, xv, { shape: [6, 4], atol: 0, rtol: 0 });
    assertMeta(t, x.reshape(-1, 2), [12, 2], 'float32', 'reshape with -1');
    assertMeta(t, x.view([4, -1]), [4, 6], 'float32', 'view');
    const p = x.permute(2, 0, 1);
    t.equal(p.storage, x.storage, 'permute is a view');
    assertClose(t, p, refPermute(xv, [2, 3, 4], [2, 0, 1]), { shape: [4, 2, 3], atol: 0, rtol: 0, msg: 'permute values' });
    assertClose(t, x.transpose(0, 2), refPermute(xv, [2, 3, 4], [2, 1, 0]), { shape: [4, 3, 2], atol: 0, rtol: 0, msg: 'transpose' });
    const pr = p.reshape(4, 6);
    t.not(pr.storage, x.storage, 'reshape of a permuted tensor copies');
    assertClose(t, pr, refPermute(xv, [2, 3, 4], [2, 0, 1]), { shape: [4, 6], atol: 0, rtol: 0 });
    t.throws(() => p.view(24), /\[view\]/, 'view of a non-contiguous tensor throws');
    const sl = x.slice(2, 1, 4, 2);
    t.equal(sl.storage, x.storage, 'slice is a view');
    assertClose(
      t,
      sl,
      refReduce(xv, [2, 3, 4], [], (v) => v[0]).filter((_, i) => i % 4 === 1 || i % 4 === 3),
      { shape: [2, 3, 2], atol: 0, rtol: 0, msg: 'slice with step' },
    );
    assertMeta(t, x.slice(1, -2), [2, 2, 4], 'float32', 'negative start');
    assertMeta(t, x.slice(1, 5, 10), [2, 0, 4], 'float32', 'out-of-range bounds clamp to empty');
    assertClose(
      t,
      x.narrow(1, 1, 2),
      xv.filter((_, i) => Math.floor(i / 4) % 3 !== 0),
      { shape: [2, 2, 4], atol: 0, rtol: 0, msg: 'narrow' },
    );
    assertClose(
      t,
      x.select(1, 2),
      xv.filter((_, i) => Math.floor(i / 4) % 3 === 2),
      { shape: [2, 4], atol: 0, rtol: 0, msg: 'select' },
    );
    assertClose(t, x.select(0, -1), xv.subarray(12), { shape: [3, 4], atol: 0, rtol: 0, msg: 'select negative index' });
    const u = x.unsqueeze(1);
    assertMeta(t, u, [2, 1, 3, 4], 'float32', 'unsqueeze');
    assertMeta(t, u.squeeze(1), [2, 3, 4], 'float32', 'squeeze dim');
    assertMeta(t, L.zeros([1, 3, 1]).squeeze(), [3], 'float32', 'squeeze all');
    assertMeta(t, x.unsqueeze(-1), [2, 3, 4, 1], 'float32', 'unsqueeze -1');
    assertMeta(t, x.flatten(), [24], 'float32');
    assertMeta(t, x.flatten(1), [2, 12], 'float32');
    const col = randT([3, 1], 1901, 'float64');
    const ex = col.expand(2, 3, 4);
    t.equal(ex.storage, col.storage, 'expand is a view');
    assertClose(t, ex, refBroadcast(f64(col), [3, 1], [2, 3, 4]), { shape: [2, 3, 4], atol: 0, rtol: 0, msg: 'expand values' });
    assertMeta(t, col.expand(-1, 5), [3, 5], 'float64', 'expand with -1');
    assertClose(t, x.contiguous(), xv, { atol: 0, rtol: 0, msg: 'contiguous of contiguous' });
    const c = x.clone();
    t.not(c.storage, x.storage, 'clone copies');
  });
});

t.test('cat/stack/split/chunk', async (t) => {
  L.tidy(() => {
    const a = randT([2, 3], 2000, 'float32');
    const b = randT([2, 1], 2001, 'float32');
    const c = randT([2, 2], 2002, 'float32');
    const [av, bv, cv] = [f64(a), f64(b), f64(c)];
    const r1: number[] = [];
    for (let i = 0; i < 2; i++) r1.push(...av.subarray(i * 3, i * 3 + 3), bv[i], ...cv.subarray(i * 2, i * 2 + 2));
    assertClose(t, L.cat([a, b, c], 1), r1, { shape: [2, 6], dtype: 'float32', atol: 0, rtol: 0, msg: 'cat dim 1' });
    assertClose(t, L.cat([a, a], 0), [...av, ...av], { shape: [4, 3], atol: 0, rtol: 0, msg: 'cat dim 0' });
    assertClose(t, L.cat([a, a.T.T], -1), [...av.subarray(0, 3), ...av.subarray(0, 3), ...av.subarray(3), ...av.subarray(3)], {
      shape: [2, 6],
      atol: 0,
      rtol: 0,
      msg: 'cat dim -1',
    });
    assertClose(t, L.cat([a.T, b.T], 0), [...refTranspose(av, 1, 2, 3), ...bv], { shape: [4, 2], atol: 0, rtol: 0, msg: 'cat of strided views' });
    assertClose(t, L.stack([a, a], 0), [...av, ...av], { shape: [2, 2, 3], atol: 0, rtol: 0, msg: 'stack dim 0' });
    const s1 = L.stack([a, a], 2);
    assertClose(
      t,
      s1,
      Array.from(av).flatMap((v) => [v, v]),
      { shape: [2, 3, 2], atol: 0, rtol: 0, msg: 'stack last dim' },
    );
    const x = randT([7, 2], 2003, 'float64');
    const xv = f64(x);
    const parts = x.split(3);
    t.same(
      parts.map((p) => p.shape),
      [
        [3, 2],
        [3, 2],
        [1, 2],
      ],
      'split by size',
    );
    t.ok(
      parts.every((p) => p.storage === x.storage),
      'split pieces are views',
    );
    assertClose(t, parts[2], xv.subarray(12), { atol: 0, rtol: 0, msg: 'last split piece' });
    const secs = x.split([2, 5]);
    t.same(
      secs.map((p) => p.shape),
      [
        [2, 2],
        [5, 2],
      ],
      'split by sections',
    );
    assertClose(t, secs[1], xv.subarray(4), { atol: 0, rtol: 0 });
    const cols = x.split(1, 1);
    t.same(
      cols.map((p) => p.shape),
      [
        [7, 1],
        [7, 1],
      ],
      'split along dim 1',
    );
    assertClose(
      t,
      cols[1],
      xv.filter((_, i) => i % 2 === 1),
      { atol: 0, rtol: 0 },
    );
    t.same(
      x.chunk(3).map((p) => p.shape),
      [
        [3, 2],
        [3, 2],
        [1, 2],
      ],
      'chunk(3) of 7 (torch sizes)',
    );
    t.same(
      x.chunk(2, 1).map((p) => p.shape),
      [
        [7, 1],
        [7, 1],
      ],
      'chunk along dim 1',
    );
    t.same(
      L.zeros([6])
        .chunk(4)
        .map((p) => p.shape),
      [[2], [2], [2]],
      'chunk(4) of 6 gives 3 pieces (as torch)',
    );
  });
});

// ====================================================================== random
t.test('random: seeding reproduces, distributions have the right moments', async (t) => {
  L.tidy(() => {
    L.manualSeed(42);
    const a = L.randn([1000]).toNumbers();
    const a2 = L.randn([5]).toNumbers();
    L.manualSeed(42);
    const b = L.randn([1000]).toNumbers();
    t.same(Array.from(b), Array.from(a), 'same seed -> same numbers');
    t.notSame(Array.from(a2), Array.from(a.slice(0, 5)), 'the stream moves on');
    L.manualSeed(43);
    t.notSame(Array.from(L.randn([1000]).toNumbers()), Array.from(a), 'different seed -> different numbers');
    const g1 = new L.Generator(7);
    const g2 = new L.Generator(7);
    t.same(Array.from(L.rand([64], { generator: g1 }).toNumbers()), Array.from(L.rand([64], { generator: g2 }).toNumbers()), 'explicit generators');
    // A stream split in two draws equals one draw of the total (counter-based generator).
    const g3 = new L.Generator(9);
    const whole = L.randn([10], { generator: g3, dtype: 'float64' }).toNumbers();
    const g4 = new L.Generator(9);
    const p1 = L.randn([4], { generator: g4, dtype: 'float64' }).toNumbers();
    const p2 = L.randn([6], { generator: g4, dtype: 'float64' }).toNumbers();
    t.same([...p1, ...p2], Array.from(whole), 'two draws = one longer draw');
    const st = g4.getState();
    const n1 = L.rand([3], { generator: g4 }).toNumbers();
    g4.setState(st);
    t.same(Array.from(L.rand([3], { generator: g4 }).toNumbers()), Array.from(n1), 'getState/setState replays');

    const n = 200000;
    const z = f64(L.randn([n], { generator: new L.Generator(1) }));
    const mean = z.reduce((s, v) => s + v, 0) / n;
    const sd = Math.sqrt(z.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1));
    // mean's std error is 1/sqrt(n) = 0.0022; sd's is ~1/sqrt(2n) = 0.0016: allow ~6 sigma
    t.ok(Math.abs(mean) < 0.015, `normal mean ${mean.toFixed(4)} ~ 0`);
    t.ok(Math.abs(sd - 1) < 0.01, `normal std ${sd.toFixed(4)} ~ 1`);
    const within1 = z.filter((v) => Math.abs(v) < 1).length / n;
    t.ok(Math.abs(within1 - 0.6827) < 0.01, `P(|z| < 1) = ${within1.toFixed(4)} ~ 0.6827`);
    const u = f64(L.rand([n], { generator: new L.Generator(2) }));
    t.ok(
      u.every((v) => v >= 0 && v < 1),
      'uniform in [0, 1)',
    );
    const um = u.reduce((s, v) => s + v, 0) / n;
    t.ok(Math.abs(um - 0.5) < 0.005, `uniform mean ${um.toFixed(4)} ~ 0.5`);
    const bern = f64(L.bernoulli([n], 0.25, { generator: new L.Generator(3) }));
    t.ok(
      bern.every((v) => v === 0 || v === 1),
      'bernoulli gives 0/1',
    );
    const bm = bern.reduce((s, v) => s + v, 0) / n;
    t.ok(Math.abs(bm - 0.25) < 0.006, `bernoulli mean ${bm.toFixed(4)} ~ 0.25`);
    const rb = L.randn([100], { dtype: 'bfloat16' });
    t.equal(rb.dtype, 'bfloat16', 'random in bf16');
    t.ok(rb.dataSync() instanceof Float32Array);
  });
});

t.test('large shapes take the parallel paths (strided walkers starting mid-tensor, split rows)', async (t) => {
  // Each case is big enough (> 16384 elements, > 4096 rows) for the worker pool to split it, and
  // strided so that every worker's StridedWalker starts at an arbitrary multi-index.
  L.tidy(() => {
    const a = randT([300, 170], 2100, 'float32'); // 51000 elements
    const b = randT([170, 300], 2101, 'float32');
    const at = a.slice(1, 1, 170, 3); // [300, 57], stride 3
    const bt = b.T.slice(1, 5, 170, 5); // [300, 33]: transpose of b, sliced
    const av = f64(at);
    const rows = f64(randT([1, 57], 2102, 'float32'));
    const rowT = tensor(rows, { shape: [1, 57], dtype: 'float32' });
    assertClose(
      t,
      L.mul(at, rowT),
      av.map((v, i) => v * rows[i % 57]),
      { shape: [300, 57], ...f32Tol(), msg: 'strided * broadcast row' },
    );
    const bv = f64(bt);
    assertClose(
      t,
      L.sub(bt, 1.5),
      bv.map((v) => v - 1.5),
      { shape: [300, 33], ...f32Tol(), msg: 'transposed-sliced - scalar' },
    );
    const big = randT([70, 40, 30], 2103, 'float32').permute(2, 0, 1); // [30, 70, 40], 84000 elements
    const gv = f64(big);
    assertClose(t, L.tanh(big), gv.map(Math.tanh), { shape: [30, 70, 40], ...f32Tol(), msg: 'unary on a permuted view' });
    assertClose(t, big.to('float64'), gv, { dtype: 'float64', ...F64_TOL, msg: 'cast of a permuted view' });
    assertClose(t, big.to('bfloat16'), f64(big.contiguous().to('bfloat16')), {
      dtype: 'bfloat16',
      atol: 0,
      rtol: 0,
      msg: 'bf16 cast of a permuted view equals the contiguous cast',
    });
    const shape = [30, 70, 40];
    for (const dims of [[0], [1], [2], [0, 2]]) {
      const K = numel(dims.map((d) => shape[d]));
      assertClose(
        t,
        big.sum(dims),
        refReduce(gv, shape, dims, (v) => v.reduce((x, y) => x + y, 0)),
        { ...f32Tol(K), msg: `sum dims ${dims} of 84000 elements` },
      );
    }
    assertClose(
      t,
      big.argmax(2),
      refReduce(gv, shape, [2], (v) => v.indexOf(Math.max(...v))),
      { dtype: 'int64', atol: 0, rtol: 0, msg: 'argmax over 2100 rows' },
    );
    const logits = randT([5000, 13], 2104, 'float32', -3, 3);
    assertClose(t, L.softmax(logits), refSoftmax(f64(logits), 5000, 13), { ...f32Tol(13), msg: 'softmax over 5000 rows' });
    const tg = Array.from({ length: 5000 }, (_, i) => (i * 7) % 13);
    assertClose(t, L.crossEntropy(logits, tensor(tg), { reduction: 'none' }), refCrossEntropy(f64(logits), tg, 5000, 13, { reduction: 'none' }), {
      ...f32Tol(13),
      msg: 'crossEntropy over 5000 rows',
    });
    const [M, K, N] = [130, 257, 190];
    const ma = randT([K, M], 2105, 'float32').T;
    const mb = randT([K, N], 2106, 'float32');
    assertClose(t, L.matmul(ma, mb), refMatmul(f64(ma), f64(mb), 1, M, K, N), {
      shape: [M, N],
      ...f32Tol(K),
      msg: 'matmul 130x257x190, transposed a',
    });
    const w = randT([300, 64], 2107, 'float32');
    const ids = Array.from({ length: 4000 }, (_, i) => (i * 37) % 300);
    const e = L.embedding(tensor(ids), w);
    const wv = f64(w);
    assertClose(
      t,
      e,
      ids.flatMap((i) => Array.from(wv.subarray(i * 64, i * 64 + 64))),
      { shape: [4000, 64], atol: 0, rtol: 0, msg: 'embedding of 4000 ids' },
    );
    const ln = randT([4100, 48], 2108, 'float32');
    assertClose(t, L.layerNorm(ln, 48), refLayerNorm(f64(ln), 4100, 48, null, null, 1e-5), { ...f32Tol(48), msg: 'layerNorm over 4100 rows' });
  });
  L.tidy(() => {
    // gradients of the big cases: index_add (embedding backward) splits columns across workers
    const w = randT([50, 200], 2110, 'float32').setRequiresGrad();
    const ids = Array.from({ length: 3000 }, (_, i) => (i * 13) % 50);
    L.embedding(tensor(ids), w).sum().backward();
    const counts = new Array(50).fill(0);
    ids.forEach((i) => counts[i]++);
    assertClose(
      t,
      w.grad!,
      counts.flatMap((c) => new Array(200).fill(c)),
      { shape: [50, 200], atol: 0, rtol: 0, msg: 'embedding backward counts every repeated id' },
    );
  });
});

t.test('ops leave no tensors behind', async (t) => {
  const before = L.memory();
  // every test above ran in tidy: nothing outlives them
  t.equal(before.numTensors, 0, 'no live tensors after the suite');
  t.equal(before.cpu.storages, 0, 'no live storages after the suite');
});

t.test('long float32 sums keep their precision', async (tt) => {
  // 1e7 copies of 0.1f: a running float32 sum drifts by ~1e-3 relative; blocks summed in double stay exact to ~1e-7.
  L.tidy(() => {
    const n = 10_000_000;
    const x = L.full([n], 0.1);
    const exact = n * Math.fround(0.1);
    tt.ok(Math.abs(L.sum(x).item() - exact) / exact < 1e-6, 'sum');
    tt.ok(Math.abs(L.mean(x).item() - Math.fround(0.1)) / 0.1 < 1e-6, 'mean');
  });
});
