// views.ts — how a tfjs kernel call hands tensors to native kernels: shaped, strided views over a
// dataId's flat storage (disposed when the call ends) and outputs adopted by the backend.
import type * as tf from '@tensorflow/tfjs-core';
import { util } from '@tensorflow/tfjs-core';
import { Tensor, contiguousStrides } from '../core/tensor';
import type { DType } from '../core/dtype';
import type { LlavaBackend } from './backend';

/**
 * Whether `t` is float32 both as tfjs sees it and in storage: tfjs-backend-cpu's Cast shares the
 * dataId when it widens (an int32 dataId may back a float32 tensor), and native kernels read storage.
 */
/** Whether `t` is stored natively in its own tfjs dtype (float32, int32 or bool; not a widened Cast). */
export function isNative(t: tf.TensorInfo | undefined | null, backend: object): t is tf.TensorInfo {
  if (!t || !(t.dtype === 'float32' || t.dtype === 'int32' || t.dtype === 'bool')) return false;
  return (backend as LlavaBackend).data.get(t.dataId).dtype === t.dtype;
}

export function isF32(t: tf.TensorInfo | undefined | null, backend: object): t is tf.TensorInfo {
  return !!t && t.dtype === 'float32' && (backend as LlavaBackend).data.get(t.dataId).dtype === 'float32';
}

/** An output being filled: its flat tensor, and `info()` to hand it to tfjs (or `drop()` it). */
export interface Output {
  t: Tensor;
  shape: number[];
  info(): tf.TensorInfo;
  drop(): void;
}

/** The views one kernel call made; dispose() releases them (the storages stay with their dataIds). */
export class ViewSet {
  private views: Tensor[] = [];
  private pending: Tensor[] = [];
  constructor(readonly backend: LlavaBackend) {}

  own(t: Tensor): Tensor {
    this.views.push(t);
    return t;
  }
  /** `info` with its own shape, contiguous. */
  flat(info: tf.TensorInfo): Tensor {
    return this.strided(info, info.shape, contiguousStrides(info.shape));
  }
  /** `info` seen with any shape and strides (elements) over its storage. */
  strided(info: tf.TensorInfo, shape: number[], strides: number[], offset = 0): Tensor {
    return this.own(this.backend.tensorOf(info.dataId).makeView(shape, strides, offset));
  }
  /** `info` broadcast to `shape` (numpy rules, stride 0 on broadcast dims). */
  broadcast(info: tf.TensorInfo, shape: number[]): Tensor {
    const st = contiguousStrides(info.shape);
    const lead = shape.length - info.shape.length;
    const strides = shape.map((_s, d) => (d < lead || info.shape[d - lead] === 1 ? 0 : st[d - lead]));
    return this.strided(info, shape, strides);
  }
  /** A new contiguous output; unless `info()` is called it is freed with the set. */
  output(shape: number[], dtype: DType & tf.DataType): Output {
    const t = this.backend.allocTensor(util.sizeFromShape(shape), dtype);
    this.pending.push(t);
    const backend = this.backend;
    const pending = this.pending;
    const shaped = shape.length === 1 ? t : this.own(t.makeView(shape, contiguousStrides(shape), 0));
    return {
      t: shaped,
      shape,
      info: () => {
        pending.splice(pending.indexOf(t), 1);
        return backend.adopt(t, shape, dtype);
      },
      drop: () => {
        pending.splice(pending.indexOf(t), 1);
        backend.release(t);
      },
    };
  }
  dispose(): void {
    for (const v of this.views) v.dispose();
    for (const t of this.pending) this.backend.release(t);
    this.views.length = 0;
    this.pending.length = 0;
  }
}
