// ops_reduce_matmul_norm.test.ts — the op table's reductions, matmul and normalisations (the other parts:
// ops_*.test.ts beside it): sum/mean/var/logsumexp over any dims, max/min/argmax/argmin; matmul (1-D to
// batched, transposed operands, bf16/f16) and linear; softmax, logSoftmax, crossEntropy, layerNorm and
// rmsNorm. Each on the CPU against a float64 reference computed in plain JS from the values the kernel
// actually saw (inputs read back after rounding to their dtype); shape and dtype are checked before values.
// Tolerances as in docs/design.md: f32 atol 1e-6 / rtol 1e-5, scaled by sqrt(K) where an op reduces over K
// terms (f32Tol(K)); f64 results must agree to ~1e-12 (F64_TOL, op_refs.ts: the kernels compute f64 in f64);
// bf16 tolerances are derived from bf16 rounding.
import t from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import type { DType } from '../../lib';
import {
  assertClose,
  assertMeta,
  f32Tol,
  f64,
  numel,
  randT,
  refCrossEntropy,
  refLayerNorm,
  refMatmul,
  refRmsNorm,
  refSoftmax,
  refTranspose,
} from '../helpers';
import { F64_TOL, leaveNoTensorsBehind, refBroadcast, refPermute, refReduce, toNum } from './op_refs';

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

t.test('x @ W^T: a row gives the same bits whether multiplied alone or with up to 8 rows beside it', async (t) => {
  // Batched decoding relies on it: the GEMV (one row) and the skinny path (2..8 rows) share one summation
  // order, so a batch of prompts decodes exactly as each prompt alone.
  for (const dtype of ['float32', 'bfloat16'] as DType[]) {
    for (const [M, K] of [
      [2, 7],
      [3, 64],
      [5, 203],
      [8, 1029],
    ]) {
      L.tidy(() => {
        const x = randT([M, K], 710 + M, dtype);
        const w = randT([37, K], 720 + M, dtype);
        const b = randT([37], 730, dtype);
        const all = L.linear(x, w, b).toNumbers();
        let same = true;
        for (let m = 0; m < M; m++) {
          const one = L.linear(L.narrow(x, 0, m, 1), w, b).toNumbers();
          for (let n = 0; n < 37; n++) if (!Object.is(one[n], all[m * 37 + n])) same = false;
        }
        t.ok(same, `${dtype} M ${M} K ${K}: every row equals its one-row product bit for bit`);
      });
    }
  }
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

leaveNoTensorsBehind(t);
