// kernels_conv.ts — convolution and pooling for the tfjs backend, on the native kernels of
// cpp/cpu_conv.cc (cuda/conv.cu) and the matmul kernel.
//
// Conv2D is im2col + GEMM: cols[B*OH*OW, KH*KW*C] @ filter[KH*KW*C, Cout] (tfjs's filter layout
// needs no repacking; a 1x1 stride-1 unpadded convolution skips im2col, x already is cols). When
// cols would pass BAND_BYTES, the forward pass runs in bands of output rows: each band's im2col goes
// into one reused buffer that stays in cache and its GEMM writes its rows of the output, so the 9x
// (3x3) column matrix never goes through memory whole. FusedConv2D adds the bias in the GEMM and runs
// relu / sigmoid in place on the output. The backprops are the same GEMM transposed:
// dx = col2im(dy @ filterᵀ), dfilter = colsᵀ @ dy. NHWC float32 only; NCHW, other dtypes and
// dilated pooling go to tfjs-backend-cpu's implementation.
import type * as tf from '@tensorflow/tfjs-core';
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { Tensor } from '../core/tensor';
import { kernel } from '../core/dispatch';
import type { LlavaBackend } from './backend';
import { ViewSet, isF32 } from './views';
import type { NativeKernel } from './kernels';

type Conv2DInfo = backend_util.Conv2DInfo;
type Shape4 = [number, number, number, number];

type ConvAttrs = {
  strides: [number, number] | number;
  pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: [number, number] | number;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  activation?: string;
};

/** tfjs's geometry of convolving an NHWC `xShape` with `filterShape` under a kernel's attrs (the
 * backprop kernels carry no dilations: 1). */
function convInfo(xShape: number[], filterShape: number[], a: ConvAttrs, depthwise = false): Conv2DInfo {
  return backend_util.computeConv2DInfo(
    xShape as Shape4,
    filterShape as Shape4,
    a.strides,
    a.dilations ?? 1,
    a.pad,
    a.dimRoundingMode,
    depthwise,
    'channelsLast',
  );
}

const empty = (shapes: number[][]): boolean => shapes.some((s) => util.sizeFromShape(s) === 0);

/** Whether the native kernels take a call: float32 tensors, NHWC, no empty tensor or shape. */
function nativeConv(backend: object, a: ConvAttrs, tensors: tf.TensorInfo[], shapes: number[][] = []): boolean {
  return tensors.every((t) => isF32(t, backend)) && a.dataFormat !== 'NCHW' && !empty([...tensors.map((t) => t.shape), ...shapes]);
}

/** The geometry list the native kernels take (see cpp/conv_math.h). */
function geom(ci: Conv2DInfo): number[] {
  return [
    ci.filterHeight,
    ci.filterWidth,
    ci.strideHeight,
    ci.strideWidth,
    ci.padInfo.top,
    ci.padInfo.left,
    ci.dilationHeight,
    ci.dilationWidth,
    ci.outHeight,
    ci.outWidth,
  ];
}

const isPointwise = (ci: Conv2DInfo): boolean =>
  ci.filterHeight === 1 &&
  ci.filterWidth === 1 &&
  ci.strideHeight === 1 &&
  ci.strideWidth === 1 &&
  ci.padInfo.top === 0 &&
  ci.padInfo.left === 0 &&
  ci.outHeight === ci.inHeight &&
  ci.outWidth === ci.inWidth;

/** N = B*OH*OW output pixels, K = KH*KW*C: the GEMM's rows and depth. */
const gemmSize = (ci: Conv2DInfo) => ({
  N: ci.batchSize * ci.outHeight * ci.outWidth,
  K: ci.filterHeight * ci.filterWidth * ci.inChannels,
  Co: ci.outChannels,
});

/** cols[N, K] for x under `ci` (x itself when the convolution is pointwise). */
function columns(vs: ViewSet, x: tf.TensorInfo, ci: Conv2DInfo): Tensor {
  const { N, K } = gemmSize(ci);
  if (isPointwise(ci)) return vs.strided(x, [N, K], [K, 1]);
  const cols = vs.output([N, K], 'float32');
  kernel('im2col', [cols.t, vs.flat(x), geom(ci)]);
  return cols.t;
}

/** Budget of one im2col band in bytes: a few MiB stay in the last-level cache between its two passes. */
const BAND_BYTES = 4 << 20;

/** y = act(cols @ filter + bias) as [B, OH, OW, Cout]; act is linear, relu or sigmoid. */
function convForward(
  backend: LlavaBackend,
  x: tf.TensorInfo,
  filter: tf.TensorInfo,
  ci: Conv2DInfo,
  bias: tf.TensorInfo | null,
  act: string | null,
): tf.TensorInfo {
  const vs = new ViewSet(backend);
  try {
    const { batchSize: B, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = ci;
    const { N, K, Co } = gemmSize(ci);
    const out = vs.output(ci.outShape, 'float32');
    const w3 = vs.strided(filter, [1, K, Co], [0, Co, 1]);
    const b1 = bias ? vs.strided(bias, [Co], [1]) : null;
    // output pixels [row0, row0 + rows) = cols @ filter (+ bias)
    const gemm = (cols: Tensor, row0: number, rows: number) =>
      kernel('matmul', [
        vs.own(out.t.makeView([1, rows, Co], [0, Co, 1], row0 * Co)),
        vs.own(cols.makeView([1, rows, K], [0, K, 1], cols.offset)),
        w3,
        b1,
      ]);
    const band = Math.max(1, Math.floor(BAND_BYTES / (4 * OW * K))); // output rows per band
    // a band whose first tap row lies below the image reads only padding: such geometry takes the whole-matrix path
    const lastBandTop = Math.floor((OH - 1) / band) * band * ci.strideHeight - ci.padInfo.top;
    if (isPointwise(ci) || band >= B * OH || lastBandTop >= H) gemm(columns(vs, x, ci), 0, N);
    else {
      const buf = vs.output([band * OW, K], 'float32').t;
      const g = geom(ci);
      for (let b = 0; b < B; b++)
        for (let oy0 = 0; oy0 < OH; oy0 += band) {
          const rows = Math.min(band, OH - oy0);
          // The band's taps start at input row iy0; x is seen from row `top` = max(iy0, 0) on, and the
          // rows above it (top - iy0 of them) are the band's top padding.
          const iy0 = oy0 * ci.strideHeight - ci.padInfo.top;
          const top = Math.max(0, iy0);
          const xb = vs.strided(x, [1, H - top, W, C], [(H - top) * W * C, W * C, C, 1], (b * H + top) * W * C);
          const cols = rows === band ? buf : vs.own(buf.makeView([rows * OW, K], [K, 1], 0));
          g[4] = top - iy0;
          g[8] = rows;
          kernel('im2col', [cols, xb, g]);
          gemm(cols, (b * OH + oy0) * OW, rows * OW);
        }
    }
    if (act) kernel('unary', [out.t, out.t, act]); // in place: nobody else holds the output yet
    return out.info();
  } finally {
    vs.dispose();
  }
}

const conv2d: NativeKernel = (args, fallback) => {
  const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs;
  if (!nativeConv(args.backend, a, [x, filter])) return fallback(args);
  return convForward(args.backend as unknown as LlavaBackend, x, filter, convInfo(x.shape, filter.shape, a), null, null);
};

const fusedConv2d: NativeKernel = (args, fallback) => {
  const { x, filter, bias } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo; bias?: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs;
  const act = a.activation === 'linear' ? null : a.activation === 'relu' || a.activation === 'sigmoid' ? a.activation : undefined;
  const Co = filter.shape[3];
  const biasOk = !bias || (isF32(bias, args.backend) && util.sizeFromShape(bias.shape) === Co && bias.shape[bias.shape.length - 1] === Co);
  if (!nativeConv(args.backend, a, [x, filter]) || act === undefined || !biasOk) return fallback(args);
  return convForward(args.backend as unknown as LlavaBackend, x, filter, convInfo(x.shape, filter.shape, a), bias ?? null, act);
};

/** dx = col2im(dy @ filterᵀ). */
const conv2dBackpropInput: NativeKernel = (args, fallback) => {
  const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs & { inputShape: Shape4 };
  if (!nativeConv(args.backend, a, [dy, filter], [a.inputShape])) return fallback(args);
  const ci = convInfo(a.inputShape, filter.shape, a);
  if (!util.arraysEqual(dy.shape, ci.outShape)) return fallback(args); // tfjs reads such a dy with its own strides
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const { N, K, Co } = gemmSize(ci);
    const dx = vs.output(a.inputShape, 'float32');
    const target = isPointwise(ci) ? dx : vs.output([N, K], 'float32');
    const t3 = vs.own(target.t.makeView([1, N, K], [0, K, 1], 0));
    kernel('matmul', [t3, vs.strided(dy, [1, N, Co], [0, Co, 1]), vs.strided(filter, [1, Co, K], [0, 1, Co]), null]);
    if (target !== dx) kernel('col2im', [dx.t, target.t, geom(ci)]);
    return dx.info();
  } finally {
    vs.dispose();
  }
};

/** dfilter = colsᵀ @ dy. */
const conv2dBackpropFilter: NativeKernel = (args, fallback) => {
  const { x, dy } = args.inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs & { filterShape: Shape4 };
  if (!nativeConv(args.backend, a, [x, dy], [a.filterShape])) return fallback(args);
  const ci = convInfo(x.shape, a.filterShape, a);
  if (!util.arraysEqual(dy.shape, ci.outShape)) return fallback(args);
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const { N, K, Co } = gemmSize(ci);
    const cols = columns(vs, x, ci);
    const dw = vs.output(a.filterShape, 'float32');
    const d3 = vs.own(dw.t.makeView([1, K, Co], [0, Co, 1], 0));
    kernel('matmul', [d3, vs.own(cols.makeView([1, K, N], [0, 1, K], cols.offset)), vs.strided(dy, [1, N, Co], [0, Co, 1]), null]);
    return dw.info();
  } finally {
    vs.dispose();
  }
};

const depthwiseConv2d: NativeKernel = (args, fallback) => {
  const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs;
  if (!nativeConv(args.backend, { ...a, dataFormat: 'NHWC' }, [x, filter])) return fallback(args);
  const ci = convInfo(x.shape, filter.shape, a, true);
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const out = vs.output(ci.outShape, 'float32');
    kernel('depthwise_conv2d', [out.t, vs.flat(x), vs.flat(filter), geom(ci)]);
    return out.info();
  } finally {
    vs.dispose();
  }
};

function pool(op: 'max' | 'avg'): NativeKernel {
  return (args, fallback) => {
    const { x } = args.inputs as { x: tf.TensorInfo };
    const a = args.attrs as unknown as {
      filterSize: [number, number] | number;
      strides: [number, number] | number;
      pad: 'valid' | 'same' | number;
      dimRoundingMode?: 'floor' | 'round' | 'ceil';
    };
    if (!isF32(x, args.backend) || x.shape.length !== 4 || empty([x.shape])) return fallback(args);
    const ci = backend_util.computePool2DInfo(x.shape as Shape4, a.filterSize, a.strides, 1, a.pad, a.dimRoundingMode);
    // tfjs returns x itself for a 1x1 window that keeps the shape, whatever the pads and strides say
    if (ci.filterHeight === 1 && ci.filterWidth === 1 && util.arraysEqual(ci.inShape, ci.outShape)) return fallback(args);
    const vs = new ViewSet(args.backend as unknown as LlavaBackend);
    try {
      const out = vs.output(ci.outShape, 'float32');
      kernel('pool2d', [out.t, vs.flat(x), op, geom(ci)]);
      return out.info();
    } finally {
      vs.dispose();
    }
  };
}

export const CONV_KERNELS: Record<string, NativeKernel> = {
  Conv2D: conv2d,
  FusedConv2D: fusedConv2d,
  Conv2DBackpropInput: conv2dBackpropInput,
  Conv2DBackpropFilter: conv2dBackpropFilter,
  DepthwiseConv2dNative: depthwiseConv2d,
  MaxPool: pool('max'),
  AvgPool: pool('avg'),
};
