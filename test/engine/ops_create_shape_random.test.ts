// ops_create_shape_random.test.ts — the op table's creation, shape and random ops (the other parts:
// ops_*.test.ts beside it): creation and readback, casts; views and copies (reshape, permute, slice,
// expand, ..., cat/stack/split/chunk); seeded random numbers and their moments; then large shapes that take
// the parallel paths and long float32 sums. Each on the CPU against a float64 reference computed in plain JS
// from the values the kernel actually saw (inputs read back after rounding to their dtype); shape and dtype
// are checked before values.
// Tolerances as in docs/design.md: f32 atol 1e-6 / rtol 1e-5, scaled by sqrt(K) where an op reduces over K
// terms (f32Tol(K)); f64 results must agree to ~1e-12 (F64_TOL, op_refs.ts: the kernels compute f64 in f64);
// bf16 tolerances are derived from bf16 rounding.
import t from 'tap';
import * as L from '../../lib';
import { tensor } from '../../lib';
import type { DType } from '../../lib';
import { assertClose, assertMeta, f32Tol, f64, numel, randT, refCrossEntropy, refLayerNorm, refMatmul, refSoftmax, refTranspose } from '../helpers';
import { F64_TOL, leaveNoTensorsBehind, refBroadcast, refPermute, refReduce } from './op_refs';

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

// ====================================================================== large shapes, long sums
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

leaveNoTensorsBehind(t);
