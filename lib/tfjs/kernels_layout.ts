// kernels_layout.ts — the tfjs kernels that only move elements: Slice, Transpose, Tile (each one
// call to the native `copy` kernel from a strided view of the input (Slice: the input's strides at an
// offset; Transpose: permuted strides; Tile: the input seen as [r0, d0, r1, d1, ...] with stride 0 on
// the repeat axes) into a contiguous output), and GatherV2 on index_select. Any native dtype
// (float32, int32, bool).
import type * as tf from '@tensorflow/tfjs-core';
import { slice_util, util } from '@tensorflow/tfjs-core';
import { contiguousStrides } from '../core/tensor';
import { kernel } from '../core/dispatch';
import type { LlavaBackend } from './backend';
import { ViewSet, isNative } from './views';
import type { NativeKernel } from './kernels';

function copyFrom(
  args: { backend: object },
  x: tf.TensorInfo,
  shape: number[],
  strides: number[],
  offset: number,
  outShape: number[],
): tf.TensorInfo {
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const out = vs.output(outShape, x.dtype as 'float32');
    const o = vs.own(out.t.makeView(shape, contiguousStrides(shape), 0));
    kernel('copy', [o, vs.strided(x, shape, strides, offset)]);
    return out.info();
  } finally {
    vs.dispose();
  }
}

const slice: NativeKernel = (args, fallback) => {
  const x = args.inputs.x as tf.TensorInfo;
  if (!isNative(x, args.backend) || x.shape.length === 0) return fallback(args);
  const { begin, size } = args.attrs as { begin: number | number[]; size: number | number[] };
  if (x.shape.length > 8) return fallback(args);
  const [b, s] = slice_util.parseSliceParams(x as tf.TensorInfo as tf.Tensor, begin, size);
  slice_util.assertParamsValid(x as tf.TensorInfo as tf.Tensor, b, s);
  if (util.sizeFromShape(s) === 0) return fallback(args);
  const st = contiguousStrides(x.shape);
  const offset = b.reduce((acc, v, d) => acc + v * (st[d] ?? 1), 0);
  return copyFrom(args, x, s, st, offset, s);
};

const transpose: NativeKernel = (args, fallback) => {
  const x = args.inputs.x as tf.TensorInfo;
  const { perm } = args.attrs as { perm: number[] };
  if (!isNative(x, args.backend) || x.shape.length === 0 || x.shape.length > 8 || util.sizeFromShape(x.shape) === 0) return fallback(args);
  const st = contiguousStrides(x.shape);
  const shape = perm.map((p) => x.shape[p]);
  return copyFrom(
    args,
    x,
    shape,
    perm.map((p) => st[p]),
    0,
    shape,
  );
};

const tile: NativeKernel = (args, fallback) => {
  const x = args.inputs.x as tf.TensorInfo;
  const { reps } = args.attrs as { reps: number[] };
  if (!isNative(x, args.backend) || x.shape.length === 0 || reps.length !== x.shape.length) return fallback(args);
  const outShape = x.shape.map((d, i) => d * reps[i]);
  if (util.sizeFromShape(outShape) === 0) return fallback(args);
  const st = contiguousStrides(x.shape);
  // a repeat axis only where reps > 1, so that most tiles stay within the kernels' 8 dims
  const shape = x.shape.flatMap((d, i) => (reps[i] > 1 ? [reps[i], d] : [d]));
  const strides = x.shape.flatMap((_d, i) => (reps[i] > 1 ? [0, st[i]] : [st[i]]));
  if (shape.length > 8) return fallback(args);
  return copyFrom(args, x, shape, strides, 0, outShape);
};

/**
 * GatherV2 with batchDims 0 (embedding lookups): the native index_select over x seen as
 * [outer, n, inner]. Indices out of range go to the fallback, which throws tfjs's own message.
 */
const gatherV2: NativeKernel = (args, fallback) => {
  const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
  const { axis, batchDims } = args.attrs as { axis: number; batchDims: number };
  if (!isNative(x, args.backend) || !isNative(indices, args.backend) || indices.dtype !== 'int32' || batchDims) return fallback(args);
  if (x.shape.length === 0 || x.shape.length > 8) return fallback(args);
  const ax = util.parseAxisParam(axis, x.shape)[0];
  const n = x.shape[ax];
  const idx = (args.backend as unknown as LlavaBackend).data.get(indices.dataId).values as Int32Array;
  const m = util.sizeFromShape(indices.shape);
  for (let i = 0; i < m; i++) if (idx[i] < 0 || idx[i] >= n) return fallback(args);
  const outShape = [...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)];
  const outer = util.sizeFromShape(x.shape.slice(0, ax));
  const inner = util.sizeFromShape(x.shape.slice(ax + 1));
  if (m === 0 || outer * inner === 0) return fallback(args);
  const vs = new ViewSet(args.backend as unknown as LlavaBackend);
  try {
    const out = vs.output(outShape, x.dtype as 'float32');
    const o3 = vs.own(out.t.makeView([outer, m, inner], [m * inner, inner, 1], 0));
    kernel('index_select', [o3, vs.strided(x, [outer, n, inner], [n * inner, inner, 1]), vs.strided(indices, [m], [1]), 1]);
    return out.info();
  } finally {
    vs.dispose();
  }
};

export const LAYOUT_KERNELS: Record<string, NativeKernel> = { Slice: slice, Transpose: transpose, Tile: tile, GatherV2: gatherV2 };
