// ops_index_attention.test.ts — the op table's indexing, position and attention ops (the other parts:
// ops_*.test.ts beside it): embedding, indexSelect and gather; rope, dropout and patchEmbed; attention, the
// fused kernel and the composite, strided and fully masked, and bf16 by the flash-attention rule. Each on
// the CPU against a float64 reference computed in plain JS from the values the kernel actually saw (inputs
// read back after rounding to their dtype); shape and dtype are checked before values.
// Tolerances as in docs/design.md: f32 atol 1e-6 / rtol 1e-5, scaled by sqrt(K) where an op reduces over K
// terms (f32Tol(K)); f64 results must agree to ~1e-12 (F64_TOL, op_refs.ts: the kernels compute f64 in f64);
// bf16 tolerances are derived from bf16 rounding.
import t from 'tap';
import type { Test } from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import type { DType } from '../../lib';
import { assertClose, f32Tol, f64, numel, randT, refAttention, rng } from '../helpers';
import { F64_TOL, leaveNoTensorsBehind } from './op_refs';

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
    const r0 = gi0.flatMap((row) => row.map((k, j) => gv[k * 4 + j]));
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

leaveNoTensorsBehind(t);
