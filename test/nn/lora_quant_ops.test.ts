// lora_quant_ops.test.ts — the fused LoRA linear (lib/ops/lora.ts) and the weight-only quantization
// kernels (lib/ops/quant.ts, cpp/cpu_quant.cc): values against float64 references, finite-difference
// gradients in float64, the NF4 codebook, format error bounds, bad input and leaks.
import t from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import { kernel } from '../../lib/core/dispatch';
import { gradCheck, randT, f64, assertClose, assertNoLeak, refMatmul, f32Tol } from '../helpers';

const F = 'float64' as const;

/** y = x W^T + b + s (mask*x A^T) B^T in float64 (x [N, I], W [O, I], A [r, I], B [O, r]). */
function refLora(
  x: Float64Array,
  W: ArrayLike<number>,
  b: ArrayLike<number> | null,
  A: ArrayLike<number>,
  Bm: ArrayLike<number>,
  s: number,
  N: number,
  I: number,
  O: number,
  r: number,
): Float64Array {
  const y = new Float64Array(N * O);
  for (let n = 0; n < N; n++) {
    const u = new Float64Array(r);
    for (let j = 0; j < r; j++) for (let i = 0; i < I; i++) u[j] += x[n * I + i] * A[j * I + i];
    for (let o = 0; o < O; o++) {
      let acc = b ? b[o] : 0;
      for (let i = 0; i < I; i++) acc += x[n * I + i] * W[o * I + i];
      for (let j = 0; j < r; j++) acc += s * u[j] * Bm[o * r + j];
      y[n * O + o] = acc;
    }
  }
  return y;
}

t.test('lora_linear forward equals x W^T + b + s (x A^T) B^T (float64 reference), f32 and f64', async (t) => {
  const [N, I, O, r] = [7, 13, 9, 3];
  for (const dt of ['float32', 'float64'] as const) {
    L.tidy(() => {
      const x = randT([N, I], 1, dt);
      const W = randT([O, I], 2, dt);
      const b = randT([O], 3, dt);
      const A = randT([r, I], 4, dt);
      const B = randT([O, r], 5, dt);
      const y = L.loraLinear(x, W, b, A, B, { scale: 2.5 });
      const ref = refLora(f64(x), f64(W), f64(b), f64(A), f64(B), 2.5, N, I, O, r);
      assertClose(t, y, ref, dt === 'float32' ? f32Tol(I) : { atol: 1e-12, rtol: 1e-12, msg: dt });
      // 3-D input keeps its leading dims.
      const y3 = L.loraLinear(L.reshape(x, [1, N, I]), W, null, A, B, { scale: 1 });
      t.same(y3.shape, [1, N, O]);
    });
  }
});

t.test('lora_linear gradients by finite differences (float64): x, bias, A, B; W frozen; with and without dropout', async (t) => {
  const [N, I, O, r] = [4, 6, 5, 2];
  for (const p of [0, 0.3]) {
    const fn = (x: Tensor, W: Tensor, b: Tensor, A: Tensor, B: Tensor): Tensor =>
      L.loraLinear(x, W, b, A, B, { scale: 1.7, dropout: p, training: true, generator: new L.Generator(99) });
    const ins = [randT([2, N / 2, I], 11, F), randT([O, I], 12, F), randT([O], 13, F), randT([r, I], 14, F), randT([O, r], 15, F)];
    gradCheck(t, fn, ins, { skip: [1], msg: `dropout ${p}` });
    ins.forEach((x) => x.dispose());
  }
  // The frozen weight never gets a gradient; a trainable one is refused.
  const W = randT([3, 4], 1, F);
  W.setRequiresGrad(true);
  t.throws(
    () => L.loraLinear(randT([2, 4], 2, F), W, null, randT([1, 4], 3, F), randT([3, 1], 4, F), { scale: 1 }),
    /\[lora_linear\] the base weight must be frozen/,
  );
  W.dispose();
});

t.test('lora_linear: dropout only on the adapter input; eval mode and p = 0 are deterministic', async (t) => {
  L.tidy(() => {
    const x = randT([5, 8], 1);
    const W = randT([6, 8], 2);
    const A = randT([2, 8], 3);
    const B = L.zeros([6, 2]);
    // B = 0: the adapter adds nothing whatever the dropout mask.
    assertClose(t, L.loraLinear(x, W, null, A, B, { scale: 4, dropout: 0.5 }), f64(L.linear(x, W)), { atol: 0, rtol: 0 });
    const B2 = randT([6, 2], 4);
    const a = L.loraLinear(x, W, null, A, B2, { scale: 1, dropout: 0.5, training: false });
    assertClose(t, a, refLora(f64(x), f64(W), null, f64(A), f64(B2), 1, 5, 8, 6, 2), f32Tol(8));
  });
});

t.test('lora_linear rejects bad input with [lora_linear] errors', async (t) => {
  L.tidy(() => {
    const x = randT([2, 4], 1);
    const W = randT([3, 4], 2);
    t.throws(() => L.loraLinear(x, W, null, randT([2, 5], 3), randT([3, 2], 4), { scale: 1 }), /\[lora_linear\] lora_A must be \[r, 4\]/);
    t.throws(() => L.loraLinear(x, W, null, randT([2, 4], 3), randT([3, 1], 4), { scale: 1 }), /\[lora_linear\] lora_B must be \[3, 2\]/);
    t.throws(() => L.loraLinear(x, W, null, randT([2, 4], 3, F), randT([3, 2], 4), { scale: 1 }), /\[lora_linear\]/);
    t.throws(() => L.loraLinear(x, W, null, randT([2, 4], 3), randT([3, 2], 4), { scale: 1, dropout: 1 }), /dropout must be in \[0, 1\)/);
  });
});

// ------------------------------------------------------------------ quantization

/** Dequantized weight in float64 from the codes and scales read back (the format as documented). */
function refDequant(q: L.QuantizedWeight): Float64Array {
  const codes = q.codes.dataSync() as Uint8Array;
  const sc = q.scales.dataSync() as Float32Array;
  const [N, K] = q.shape;
  const out = new Float64Array(N * K);
  for (let e = 0; e < N * K; e++) {
    if (q.format === 'int8') out[e] = ((codes[e] << 24) >> 24) * sc[Math.floor(e / K)];
    else out[e] = L.NF4_LEVELS[e & 1 ? codes[e >> 1] & 15 : codes[e >> 1] >> 4] * sc[Math.floor(e / q.block)];
  }
  return out;
}

t.test('NF4 codebook: the 16 levels come back exactly (float32 values of bitsandbytes)', async (t) => {
  // One block holding every level (absmax 1): quantize maps each to itself, dequantize returns it bit for bit.
  const levels = L.NF4_LEVELS.map((v) => Math.fround(v));
  const row = Array.from({ length: 64 }, (_, i) => levels[i % 16]);
  const w = tensor(row, { shape: [1, 64] });
  const q = L.QuantizedWeight.quantize(w, 'nf4');
  const codes = q.codes.dataSync() as Uint8Array;
  t.same([...codes.slice(0, 8)], [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef], 'codes 0..15 packed high nibble first');
  const d = q.dequantize();
  t.same([...(d.dataSync() as Float32Array)], row, 'levels exact');
  t.equal(L.NF4_LEVELS.length, 16);
  t.equal(L.NF4_LEVELS[7], 0);
  [w, d].forEach((x) => x.dispose());
  q.dispose();
});

t.test('quantize: int8 within half a step per row, NF4 within half the widest codebook gap per block', async (t) => {
  const [N, K] = [9, 67]; // odd numel: the last NF4 byte is half used; blocks straddle rows
  const w = randT([N, K], 21);
  const wv = f64(w);
  for (const fmt of ['int8', 'nf4'] as const) {
    const q = L.QuantizedWeight.quantize(w, fmt);
    const ref = refDequant(q);
    const d = q.dequantize();
    assertClose(t, d, ref, { atol: 1e-7, rtol: 1e-6, msg: `${fmt} dequantize kernel == documented format` });
    const sc = q.scales.dataSync() as Float32Array;
    let worst = 0;
    for (let e = 0; e < N * K; e++) {
      const s = fmt === 'int8' ? sc[Math.floor(e / K)] / 2 : sc[Math.floor(e / 64)] * ((1 - 0.6961928009986877) / 2);
      worst = Math.max(worst, Math.abs(ref[e] - wv[e]) / s);
    }
    t.ok(worst <= 1 + 1e-5, `${fmt}: error / bound = ${worst.toFixed(4)}`);
    t.equal(q.nbytes, fmt === 'int8' ? N * K + 4 * N : Math.ceil((N * K) / 2) + 4 * Math.ceil((N * K) / 64));
    d.dispose();
    q.dispose();
  }
  w.dispose();
});

t.test('quant_matmul (GEMV) and dequantize + GEMM paths equal x @ dequant(W)^T in float64', async (t) => {
  const [N, K] = [11, 70];
  const w = randT([N, K], 31);
  for (const fmt of ['int8', 'nf4'] as const) {
    const q = L.QuantizedWeight.quantize(w, fmt);
    const wd = refDequant(q);
    const wT = new Float64Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wT[k * N + n] = wd[n * K + k];
    for (const M of [1, 3, L.QUANT_GEMV_ROWS + 12]) {
      for (const dt of ['float32', 'float64', 'bfloat16'] as const) {
        L.tidy(() => {
          const x = randT([M, K], 32 + M, dt);
          const b = randT([N], 40, dt);
          const y = L.quantLinear(x, q, b);
          const ref = refMatmul(f64(x), wT, 1, M, K, N).map((v, i) => v + f64(b)[i % N]);
          const tol = dt === 'float64' ? { atol: 1e-12, rtol: 1e-12 } : dt === 'float32' ? f32Tol(K) : { atol: 2e-2, rtol: 1e-2 };
          assertClose(t, y, ref, { ...tol, msg: `${fmt} M=${M} ${dt}` });
        });
      }
    }
    q.dispose();
  }
  w.dispose();
});

t.test('quantLinear and lora_linear over a quantized weight: gradients by finite differences (float64)', async (t) => {
  const w = randT([5, 12], 51, F);
  for (const fmt of ['int8', 'nf4'] as const) {
    const q = L.QuantizedWeight.quantize(w, fmt, 4);
    for (const rows of [2, 12]) {
      gradCheck(t, (x: Tensor, b: Tensor) => L.quantLinear(x, q, b), [randT([rows, 12], 52, F), randT([5], 53, F)], {
        msg: `${fmt} quantLinear rows ${rows}`,
      });
      gradCheck(
        t,
        (x: Tensor, A: Tensor, B: Tensor) => L.loraLinear(x, q, null, A, B, { scale: 0.5 }),
        [randT([rows, 12], 54, F), randT([3, 12], 55, F), randT([5, 3], 56, F)],
        {
          msg: `${fmt} lora over quantized rows ${rows}`,
        },
      );
    }
    q.dispose();
  }
  w.dispose();
});

t.test('quantization rejects bad input; no leaks across forward + backward', async (t) => {
  const w = randT([4, 8], 1);
  t.throws(() => L.QuantizedWeight.quantize(w, 'int4' as never), /\[quantize\] unknown format 'int4'/);
  t.throws(() => L.QuantizedWeight.quantize(L.reshape(w, [32]), 'int8'), /\[quantize\] weight must be 2-D/);
  t.throws(() => L.QuantizedWeight.quantize(w, 'nf4', 3), /\[quantize\] block must be an even integer/);
  const q = L.QuantizedWeight.quantize(w, 'nf4');
  t.throws(() => L.quantLinear(randT([2, 7], 2), q), /\[quant_linear\] input has 7 features, weight expects 8/);
  t.throws(() => kernel('quant_matmul', [L.zeros([1, 4]), L.zeros([1, 8]), q.codes, q.scales, 'nf4', 4, 9, 64]), /\[quant_matmul\] nf4 codes/);
  assertNoLeak(
    t,
    () => {
      const x = randT([3, 8], 3);
      x.setRequiresGrad(true);
      const A = randT([2, 8], 4);
      A.setRequiresGrad(true);
      const B = randT([4, 2], 5);
      B.setRequiresGrad(true);
      L.tidy(() => L.sum(L.loraLinear(x, q, null, A, B, { scale: 1, dropout: 0.1 })).backward());
      [x, A, B].forEach((v) => v.dispose());
    },
    'lora over nf4: forward + backward leave nothing behind',
  );
  q.dispose();
  w.dispose();
});
