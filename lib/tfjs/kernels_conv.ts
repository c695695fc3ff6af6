// kernels_conv.ts — convolution and pooling for the tfjs backend, on the native kernels of
// cpp/cpu_conv.cc (cuda/conv.cu) and the matmul kernel.
//
// Conv2D is im2col + one GEMM: cols[B*OH*OW, KH*KW*C] @ filter[KH*KW*C, Cout] (tfjs's filter layout
// needs no repacking; a 1x1 stride-1 unpadded convolution skips im2col, x already is cols). Its
// backprops are the same GEMM transposed: dx = col2im(dy @ filterᵀ), dfilter = colsᵀ @ dy. NHWC
// float32 only; NCHW, other dtypes and dilated pooling go to tfjs-backend-cpu's implementation.
import type * as tf from '@tensorflow/tfjs-core';
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { Tensor } from '../core/tensor';
import { kernel } from '../core/dispatch';
import type { LlavaBackend } from './backend';
import { ViewSet, isF32 } from './views';
import type { NativeKernel } from './kernels';

type Conv2DInfo = backend_util.Conv2DInfo;

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

const empty = (...shapes: number[][]): boolean => shapes.some((s) => util.sizeFromShape(s) === 0);

/** cols[N, K] for x under `ci` (x itself when the convolution is pointwise). */
function columns(vs: ViewSet, x: tf.TensorInfo, ci: Conv2DInfo): Tensor {
  const N = ci.batchSize * ci.outHeight * ci.outWidth;
  const K = ci.filterHeight * ci.filterWidth * ci.inChannels;
  if (isPointwise(ci)) return vs.strided(x, [N, K], [K, 1]);
  const cols = vs.output([N, K], 'float32');
  kernel('im2col', [cols.t, vs.flat(x), geom(ci)]);
  return cols.t;
}

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
    const N = ci.batchSize * ci.outHeight * ci.outWidth;
    const K = ci.filterHeight * ci.filterWidth * ci.inChannels;
    const Co = ci.outChannels;
    const cols = columns(vs, x, ci);
    const out = vs.output(ci.outShape, 'float32');
    const c3 = vs.own(cols.makeView([1, N, K], [0, K, 1], cols.offset));
    const o3 = vs.own(out.t.makeView([1, N, Co], [0, Co, 1], 0));
    kernel('matmul', [o3, c3, vs.strided(filter, [1, K, Co], [0, Co, 1]), bias ? vs.strided(bias, [Co], [1]) : null]);
    if (!act) return out.info();
    const y = vs.output(ci.outShape, 'float32');
    kernel('unary', [y.t, out.t, act]);
    return y.info();
  } finally {
    vs.dispose();
  }
}

type ConvAttrs = {
  strides: [number, number] | number;
  pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW';
  dilations: [number, number] | number;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  activation?: string;
};

const conv2d: NativeKernel = (args, fallback) => {
  const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs;
  if (!isF32(x, args.backend) || !isF32(filter, args.backend) || a.dataFormat === 'NCHW' || empty(x.shape, filter.shape)) return fallback(args);
  const ci = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    a.strides,
    a.dilations ?? 1,
    a.pad,
    a.dimRoundingMode,
    false,
    'channelsLast',
  );
  return convForward(args.backend as unknown as LlavaBackend, x, filter, ci, null, null);
};

const fusedConv2d: NativeKernel = (args, fallback) => {
  const { x, filter, bias } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo; bias?: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs;
  const act = a.activation === 'linear' ? null : a.activation === 'relu' || a.activation === 'sigmoid' ? a.activation : undefined;
  const Co = filter.shape[3];
  const biasOk = !bias || (isF32(bias, args.backend) && util.sizeFromShape(bias.shape) === Co && bias.shape[bias.shape.length - 1] === Co);
  if (
    !isF32(x, args.backend) ||
    !isF32(filter, args.backend) ||
    a.dataFormat === 'NCHW' ||
    act === undefined ||
    !biasOk ||
    empty(x.shape, filter.shape)
  )
    return fallback(args);
  const ci = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    a.strides,
    a.dilations ?? 1,
    a.pad,
    a.dimRoundingMode,
    false,
    'channelsLast',
  );
  return convForward(args.backend as unknown as LlavaBackend, x, filter, ci, bias ?? null, act);
};

/** dx = col2im(dy @ filterᵀ). */
const conv2dBackpropInput: NativeKernel = (args, fallback) => {
  const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
  const a = args.attrs as unknown as ConvAttrs & { inputShape: [number, number, number, number] };
  if (!isF32(dy, args.backend) || !isF32(filter, args.backend) || a.dataFormat === 'NCHW' || empty(dy.shape, filter.shape, a.inputShape))
    return fallback(args);
  const ci = backend_util.computeConv2DInfo(
    a.inputShape,
    filter.shape as [number, number, number, number],
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
    false,
    'channelsLast',
  );
  if (!util.arraysEqual(dy.shape, ci.outShape)) return fallback(args); // tfjs reads such a dy with its own strides
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const N = ci.batchSize * ci.outHeight * ci.outWidth;
    const K = ci.filterHeight * ci.filterWidth * ci.inChannels;
    const Co = ci.outChannels;
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
  const a = args.attrs as unknown as ConvAttrs & { filterShape: [number, number, number, number] };
  if (!isF32(x, args.backend) || !isF32(dy, args.backend) || a.dataFormat === 'NCHW' || empty(x.shape, dy.shape, a.filterShape))
    return fallback(args);
  const ci = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    a.filterShape,
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
    false,
    'channelsLast',
  );
  if (!util.arraysEqual(dy.shape, ci.outShape)) return fallback(args);
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const N = ci.batchSize * ci.outHeight * ci.outWidth;
    const K = ci.filterHeight * ci.filterWidth * ci.inChannels;
    const Co = ci.outChannels;
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
  if (!isF32(x, args.backend) || !isF32(filter, args.backend) || empty(x.shape, filter.shape)) return fallback(args);
  const ci = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    a.strides,
    a.dilations ?? 1,
    a.pad,
    a.dimRoundingMode,
    true,
  );
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
    if (!isF32(x, args.backend) || x.shape.length !== 4 || empty(x.shape)) return fallback(args);
    const ci = backend_util.computePool2DInfo(x.shape as [number, number, number, number], a.filterSize, a.strides, 1, a.pad, a.dimRoundingMode);
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
