// conv.test.ts — the convolution and pooling kernels behind the tfjs backend (cpp/cpu_conv.cc):
// conv2d, its two gradients, depthwise conv and pooling on `llava` against tfjs-backend-cpu over
// strides, dilations and paddings (error |a - r| / (1e-3 + |r|) below 1e-4: relative, with an absolute floor
// of 1e-7 for results near 0, where summation order alone moves the last bits); depthwise_conv2d and
// conv2d against float64 references at odd sizes (channel counts across the depthwise kernel's
// 64-channel blocks; images large enough that conv2d runs in several row bands); and the native
// kernels refusing bad arguments with a JS error.
import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import '../../lib/tfjs';
import { Tensor } from '../../lib/core/tensor';
import { kernel } from '../../lib/core/dispatch';
import { assertClose, f32Tol, f64, randArray, randT } from '../helpers';

type Case = { x: number[]; f: number[]; s: number; d: number; pad: 'same' | 'valid' | number };
const CASES: Case[] = [
  { x: [2, 7, 6, 3], f: [3, 3, 3, 4], s: 1, d: 1, pad: 'same' },
  { x: [1, 9, 8, 2], f: [3, 2, 2, 5], s: 2, d: 1, pad: 'valid' },
  { x: [1, 8, 8, 3], f: [3, 3, 3, 2], s: 1, d: 2, pad: 'same' },
  { x: [2, 6, 7, 4], f: [1, 1, 4, 3], s: 1, d: 1, pad: 'valid' },
  { x: [1, 7, 7, 2], f: [2, 3, 2, 3], s: 2, d: 1, pad: 1 },
];

/** conv2d, dx, dw, depthwise, max and avg pool of one case on the current backend. */
function run(c: Case): number[][] {
  return tf.tidy(() => {
    const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
    const x = tf.tensor4d(Float32Array.from(randArray(n(c.x), 1)), c.x as [number, number, number, number]);
    const w = tf.tensor4d(Float32Array.from(randArray(n(c.f), 2)), c.f as [number, number, number, number]);
    const conv = (a: tf.Tensor4D, b: tf.Tensor4D) => tf.conv2d(a, b, c.s, c.pad, 'NHWC', c.d);
    const y = conv(x, w);
    // tfjs has no gradient for dilated convolutions: those cases check the forward pass twice
    const [dx, dw] = c.d > 1 ? [y, y] : tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(conv(a as tf.Tensor4D, b as tf.Tensor4D))))([x, w]);
    const dwf = tf.tensor4d(Float32Array.from(randArray(c.f[0] * c.f[1] * c.x[3] * 2, 3)), [c.f[0], c.f[1], c.x[3], 2]);
    const dep = tf.depthwiseConv2d(x, dwf, c.d > 1 ? 1 : c.s, c.pad, 'NHWC', c.d);
    const pad = typeof c.pad === 'number' ? 'same' : c.pad;
    const mp = tf.maxPool(x, [c.f[0], c.f[1]], c.s, pad);
    const ap = tf.avgPool(x, [c.f[0], c.f[1]], c.s, pad);
    return [y, dx, dw, dep, mp, ap].map((z) => Array.from(z.dataSync()));
  });
}

t.test('conv2d, its gradients, depthwise conv and pooling match tfjs-backend-cpu', async (t) => {
  for (const c of CASES) {
    await tf.setBackend('cpu');
    const ref = run(c);
    await tf.setBackend('llava');
    const got = run(c);
    const names = ['conv2d', 'dx', 'dw', 'depthwise', 'maxPool', 'avgPool'];
    for (let k = 0; k < names.length; k++) {
      let worst = 0;
      for (let i = 0; i < ref[k].length; i++) worst = Math.max(worst, Math.abs(got[k][i] - ref[k][i]) / (1e-3 + Math.abs(ref[k][i])));
      t.ok(ref[k].length === got[k].length && worst < 1e-4, `${names[k]} ${JSON.stringify(c)}: worst relative error ${worst.toExponential(1)}`);
    }
  }
});

t.test('the native kernels refuse bad arguments with an error naming them', async (t) => {
  const f = (shape: number[], dtype: 'float32' | 'int32' = 'float32') => Tensor.empty(shape, dtype, 'cpu');
  const x = f([1, 4, 4, 2]);
  const geom = [3, 3, 1, 1, 1, 1, 1, 1, 4, 4];
  t.throws(() => kernel('im2col', [f([16, 17]), x, geom]), /\[im2col\] cols/);
  t.throws(() => kernel('im2col', [f([16, 18]), x, [3, 3, 0, 1, 1, 1, 1, 1, 4, 4]]), /\[im2col\] filter size, strides/);
  t.throws(() => kernel('col2im', [f([1, 4, 4, 2], 'int32'), f([16, 18]), geom]), /\[col2im\] dx/);
  t.throws(() => kernel('pool2d', [f([1, 4, 4, 2]), x, 'min', geom]), /\[pool2d\] op must be/);
  t.throws(() => kernel('depthwise_conv2d', [f([1, 4, 4, 2]), x, f([3, 3, 3, 1]), geom]), /\[depthwise_conv2d\] w must be/);
  t.throws(() => kernel('im2col', [f([16, 18]), f([4, 4, 2]), geom]), /\[im2col\] input must be 4-d/);
});

/** Geometry: [KH KW sH sW padTop padLeft dH dW OH OW]. The float64 output of a depthwise (M) or
 * dense (filter [KH, KW, C, Co]) convolution of NHWC `xv`. */
type G = { B: number; H: number; W: number; C: number; KH: number; KW: number; s: number; p: number; d: number; OH: number; OW: number };
function refConv(xv: Float64Array, wv: Float64Array, g: G, depthwise: boolean, M: number): Float64Array {
  const Co = depthwise ? g.C * M : M;
  const out = new Float64Array(g.B * g.OH * g.OW * Co);
  for (let b = 0; b < g.B; b++)
    for (let oy = 0; oy < g.OH; oy++)
      for (let ox = 0; ox < g.OW; ox++)
        for (let kh = 0; kh < g.KH; kh++)
          for (let kw = 0; kw < g.KW; kw++) {
            const iy = oy * g.s - g.p + kh * g.d,
              ix = ox * g.s - g.p + kw * g.d;
            if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
            const xo = ((b * g.H + iy) * g.W + ix) * g.C,
              oo = ((b * g.OH + oy) * g.OW + ox) * Co;
            for (let c = 0; c < g.C; c++)
              for (let m = 0; m < M; m++)
                if (depthwise) out[oo + c * M + m] += xv[xo + c] * wv[((kh * g.KW + kw) * g.C + c) * M + m];
                else out[oo + m] += xv[xo + c] * wv[((kh * g.KW + kw) * g.C + c) * M + m];
          }
  return out;
}
/** The geometry of a square-filter case with symmetric pads. */
type Sq = { B: number; H: number; W: number; C: number; K: number; s: number; p: number; d: number };
const outSize = (n: number, c: Sq) => Math.floor((n + 2 * c.p - c.d * (c.K - 1) - 1) / c.s) + 1;
const geomOf = (c: Sq): G => ({ ...c, KH: c.K, KW: c.K, OH: outSize(c.H, c), OW: outSize(c.W, c) });

t.test('depthwise_conv2d against a float64 reference (channel blocks, tails, M > 1)', async (t) => {
  const cases = [
    { B: 2, H: 9, W: 7, C: 3, K: 3, s: 1, p: 1, d: 1, M: 1 },
    { B: 1, H: 8, W: 11, C: 64, K: 3, s: 2, p: 1, d: 1, M: 1 },
    { B: 1, H: 7, W: 6, C: 70, K: 3, s: 1, p: 0, d: 2, M: 1 },
    { B: 2, H: 6, W: 5, C: 131, K: 5, s: 2, p: 2, d: 1, M: 1 },
    { B: 1, H: 7, W: 5, C: 5, K: 2, s: 1, p: 1, d: 1, M: 3 },
  ];
  for (const [i, c] of cases.entries()) {
    const g = geomOf(c);
    const x = randT([c.B, c.H, c.W, c.C], 10 + i),
      w = randT([c.K, c.K, c.C, c.M], 20 + i);
    const y = Tensor.empty([c.B, g.OH, g.OW, c.C * c.M], 'float32', 'cpu');
    kernel('depthwise_conv2d', [y, x, w, [c.K, c.K, c.s, c.s, c.p, c.p, c.d, c.d, g.OH, g.OW]]);
    assertClose(t, y, refConv(f64(x), f64(w), g, true, c.M), { ...f32Tol(c.K * c.K), msg: `depthwise ${JSON.stringify(c)}` });
    for (const z of [x, w, y]) z.dispose();
  }
});

t.test('conv2d in row bands (large images) and fused bias + relu against a float64 reference', async (t) => {
  await tf.setBackend('llava');
  // 4 * OW * K bytes per output row against the 4 MiB band: [2, 40, 300, 64] 3x3 gives 6-row bands.
  const cases = [
    { B: 2, H: 40, W: 300, C: 64, K: 3, s: 1, p: 1, d: 1, Co: 3 },
    { B: 1, H: 41, W: 301, C: 64, K: 3, s: 2, p: 1, d: 1, Co: 5 },
    { B: 1, H: 23, W: 257, C: 131, K: 3, s: 1, p: 0, d: 2, Co: 2 },
    { B: 1, H: 30, W: 211, C: 97, K: 5, s: 3, p: 4, d: 1, Co: 3 },
  ];
  for (const [i, c] of cases.entries()) {
    const g = geomOf(c);
    const xv = Float32Array.from(randArray(c.B * c.H * c.W * c.C, 30 + i));
    const wv = Float32Array.from(randArray(c.K * c.K * c.C * c.Co, 40 + i));
    const bv = Float32Array.from(randArray(c.Co, 50 + i));
    const ref = refConv(Float64Array.from(xv), Float64Array.from(wv), g, false, c.Co);
    const [y, yf] = tf.tidy(() => {
      const x = tf.tensor4d(xv, [c.B, c.H, c.W, c.C]),
        w = tf.tensor4d(wv, [c.K, c.K, c.C, c.Co]);
      const pad = [
        [0, 0],
        [c.p, c.p],
        [c.p, c.p],
        [0, 0],
      ] as tf.backend_util.ExplicitPadding;
      return [
        tf.conv2d(x, w, c.s, pad, 'NHWC', c.d).dataSync(),
        tf.fused.conv2d({ x, filter: w, strides: c.s, pad, dilations: c.d, bias: tf.tensor1d(bv), activation: 'relu' }).dataSync(),
      ];
    });
    const tol = f32Tol(c.K * c.K * c.C);
    assertClose(t, y, ref, { ...tol, msg: `conv2d ${JSON.stringify(c)}` });
    assertClose(
      t,
      yf,
      Array.from(ref, (v, k) => Math.max(0, v + bv[k % c.Co])),
      { ...tol, msg: `fused conv2d + bias + relu ${JSON.stringify(c)}` },
    );
  }
});
