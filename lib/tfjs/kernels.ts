// kernels.ts — tfjs kernels that run on the engine's native kernels (cpp/, cuda/).
//
// Each entry takes tfjs's kernel arguments plus `fallback`, tfjs-backend-cpu's implementation of the
// same kernel, and calls it for the cases the native kernel does not cover (other dtypes, broadcasts
// our kernels do not express): the result is always the tfjs answer, only the speed differs. Inputs
// reach the native kernels as strided views of the flat storage (transposes and broadcasts are
// strides, never copies); outputs are allocated here and adopted by the backend without a copy.
import type * as tf from '@tensorflow/tfjs-core';
import { backend_util, util } from '@tensorflow/tfjs-core';
import { Tensor, contiguousStrides } from '../core/tensor';
import { kernel } from '../core/dispatch';
import type { LlavaBackend } from './backend';
import { CONV_KERNELS } from './kernels_conv';
import { LAYOUT_KERNELS } from './kernels_layout';
import { ViewSet, isF32 } from './views';

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: object; attrs?: tf.NamedAttrMap };
export type NativeKernel = (args: KernelArgs, fallback: tf.KernelFunc) => tf.TensorInfo | tf.TensorInfo[];

const BINARY: Record<string, string> = {
  Add: 'add',
  Sub: 'sub',
  Multiply: 'mul',
  RealDiv: 'div',
  Maximum: 'maximum',
  Minimum: 'minimum',
  Equal: 'eq',
  NotEqual: 'ne',
  Less: 'lt',
  LessEqual: 'le',
  Greater: 'gt',
  GreaterEqual: 'ge',
};
const COMPARISON = new Set(['eq', 'ne', 'lt', 'le', 'gt', 'ge']);

const UNARY: Record<string, string> = {
  Exp: 'exp',
  Log: 'log',
  Sqrt: 'sqrt',
  Rsqrt: 'rsqrt',
  Abs: 'abs',
  Sin: 'sin',
  Cos: 'cos',
  Tanh: 'tanh',
  Sigmoid: 'sigmoid',
  Relu: 'relu',
  Neg: 'neg',
  Square: 'square',
  Reciprocal: 'reciprocal',
  Erf: 'erf',
  Log1p: 'log1p',
  Expm1: 'expm1',
};

function binaryKernel(op: string): NativeKernel {
  return (args, fallback) => {
    const { a, b } = args.inputs;
    if (!isF32(a, args.backend) || !isF32(b, args.backend)) return fallback(args);
    const backend = args.backend as unknown as LlavaBackend;
    const shape = backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const vs = new ViewSet(backend);
    try {
      const out = vs.output(shape, COMPARISON.has(op) ? 'bool' : 'float32');
      kernel('binary', [out.t, vs.broadcast(a, shape), vs.broadcast(b, shape), op]);
      return out.info();
    } finally {
      vs.dispose();
    }
  };
}

function unaryKernel(op: string): NativeKernel {
  return (args, fallback) => {
    const { x } = args.inputs;
    if (!isF32(x, args.backend)) return fallback(args);
    const vs = new ViewSet(args.backend as unknown as LlavaBackend);
    try {
      const out = vs.output(x.shape, 'float32');
      kernel('unary', [out.t, vs.flat(x), op]);
      return out.info();
    } finally {
      vs.dispose();
    }
  };
}

/**
 * a @ b over batches: [..., M, K] x [..., K, N] with transposes as strides. Batch dims must match or
 * one side must have a single batch (stride 0); other broadcasts go to the fallback.
 */
function matmulInto(
  vs: ViewSet,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
  bias: Tensor | null,
): { out: ReturnType<ViewSet['output']> } | null {
  const ra = a.shape.length,
    rb = b.shape.length;
  const M = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const K = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const K2 = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (K !== K2) return null; // tfjs-core already refuses this; let its message stand
  const batchA = util.sizeFromShape(a.shape.slice(0, -2)),
    batchB = util.sizeFromShape(b.shape.slice(0, -2));
  const outBatch = backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const Bt = util.sizeFromShape(outBatch);
  if (!(batchA === batchB || batchA === 1 || batchB === 1)) return null;
  const av = vs.strided(a, [Bt, M, K], [batchA === 1 ? 0 : M * K, transposeA ? 1 : K, transposeA ? M : 1]);
  const bv = vs.strided(b, [Bt, K, N], [batchB === 1 ? 0 : K * N, transposeB ? 1 : N, transposeB ? K : 1]);
  const out = vs.output([...outBatch, M, N], 'float32');
  const o3 = vs.own(out.t.makeView([Bt, M, N], contiguousStrides([Bt, M, N]), 0));
  kernel('matmul', [o3, av, bv, bias]);
  return { out };
}

const batchMatMul: NativeKernel = (args, fallback) => {
  const { a, b } = args.inputs;
  const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
  if (!isF32(a, args.backend) || !isF32(b, args.backend)) return fallback(args);
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const r = matmulInto(vs, a, b, transposeA, transposeB, null);
    return r ? r.out.info() : fallback(args);
  } finally {
    vs.dispose();
  }
};

/** _FusedMatMul: bias of N (any leading 1s) fused in the GEMM; linear, relu and sigmoid after it. */
const fusedMatMul: NativeKernel = (args, fallback) => {
  const { a, b, bias } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo; bias?: tf.TensorInfo };
  const { transposeA, transposeB, activation } = args.attrs as {
    transposeA: boolean;
    transposeB: boolean;
    activation: string;
  };
  const N = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  const act = activation === 'linear' ? null : activation === 'relu' || activation === 'sigmoid' ? activation : undefined;
  const biasOk = !bias || (isF32(bias, args.backend) && util.sizeFromShape(bias.shape) === N && bias.shape[bias.shape.length - 1] === N);
  if (!isF32(a, args.backend) || !isF32(b, args.backend) || act === undefined || !biasOk) return fallback(args);
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const r = matmulInto(vs, a, b, transposeA, transposeB, bias ? vs.strided(bias, [N], [1]) : null);
    if (!r) return fallback(args);
    if (act) kernel('unary', [r.out.t, r.out.t, act]); // in place: nobody else holds the output yet
    return r.out.info();
  } finally {
    vs.dispose();
  }
};

const softmax: NativeKernel = (args, fallback) => {
  const logits = args.inputs.logits as tf.TensorInfo;
  const dim = (args.attrs as { dim: number }).dim;
  const r = logits.shape.length;
  if (!isF32(logits, args.backend) || r === 0 || (dim !== -1 && dim !== r - 1)) return fallback(args);
  const C = logits.shape[r - 1];
  const N = util.sizeFromShape(logits.shape) / Math.max(C, 1);
  if (C === 0 || N === 0) return fallback(args);
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const out = vs.output(logits.shape, 'float32');
    kernel('softmax_fwd', [vs.own(out.t.makeView([N, C], [C, 1], 0)), vs.strided(logits, [N, C], [C, 1]), false]);
    return out.info();
  } finally {
    vs.dispose();
  }
};

/** Sum / Mean / Max / Min / Prod over a contiguous block of axes (the usual case); others fall back. */
function reduceKernel(op: string): NativeKernel {
  return (args, fallback) => {
    const { x } = args.inputs;
    const attrs = args.attrs as { axis?: number | number[]; reductionIndices?: number | number[]; keepDims: boolean };
    const axis = (attrs.axis ?? attrs.reductionIndices) as number | number[];
    const keepDims = attrs.keepDims;
    if (!isF32(x, args.backend) || x.shape.length === 0) return fallback(args);
    const axes = util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
    for (let i = 1; i < axes.length; i++) if (axes[i] !== axes[i - 1] + 1) return fallback(args);
    if (axes.length === 0) return fallback(args);
    const outer = util.sizeFromShape(x.shape.slice(0, axes[0]));
    const R = util.sizeFromShape(axes.map((d) => x.shape[d]));
    const inner = util.sizeFromShape(x.shape.slice(axes[axes.length - 1] + 1));
    if (R === 0) return fallback(args); // tfjs defines empty reductions (0 for sum, -inf for max...)
    const outShape = keepDims ? x.shape.map((s, d) => (axes.includes(d) ? 1 : s)) : x.shape.filter((_, d) => !axes.includes(d));
    const vs = new ViewSet(args.backend as unknown as LlavaBackend);
    try {
      const out = vs.output(outShape, 'float32');
      kernel('reduce', [vs.own(out.t.makeView([outer, inner], [inner, 1], 0)), vs.flat(x), op, R, null, inner]);
      return out.info();
    } finally {
      vs.dispose();
    }
  };
}

export const NATIVE_KERNELS: Record<string, NativeKernel> = {
  BatchMatMul: batchMatMul,
  _FusedMatMul: fusedMatMul,
  Softmax: softmax,
  Sum: reduceKernel('sum'),
  Mean: reduceKernel('mean'),
  Max: reduceKernel('max'),
  Min: reduceKernel('min'),
  Prod: reduceKernel('prod'),
  ...Object.fromEntries(Object.entries(BINARY).map(([k, op]) => [k, binaryKernel(op)])),
  ...Object.fromEntries(Object.entries(UNARY).map(([k, op]) => [k, unaryKernel(op)])),
  ...CONV_KERNELS,
  ...LAYOUT_KERNELS,
};
