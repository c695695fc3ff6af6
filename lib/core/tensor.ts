// tensor.ts — the Tensor: a strided view (shape, strides, offset in elements) of a refcounted
// native Storage, with a dtype, a device, and autograd state.
//
// Methods are thin forwards to the op functions in lib/ops (installed at load time to avoid an
// import cycle), so `a.add(b)` and `add(a, b)` are one code path. Readback (dataSync, arraySync,
// item) copies through a contiguous float32/int view when needed; bf16/f16 read back as Float32Array,
// int64 as BigInt64Array.
import { native, NativeView } from '../native';
import { Device, DType, DTYPE_CODE, ITEMSIZE, TypedArray, isFloat } from './dtype';
import { Storage, trackTensor, untrackTensor, keep } from './memory';
import { Node, runBackward, BackwardOptions, BACKWARD_KEYS } from './autograd';
import { checkOptions } from '../options';
import { bf16ToF32, f16ToF32 } from '../io/half';
import type * as OpsModule from '../ops';

type Ops = typeof OpsModule;
let O: Ops;
/** Called once by lib/ops/index.ts. */
export function installOps(ops: Ops): void {
  O = ops;
}

export type Shape = number[];
export type Scalar = number | boolean;
export type TensorOrScalar = Tensor | number | boolean;
export type NestedArray = number | boolean | NestedArray[];

export function contiguousStrides(shape: Shape): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}
export function numelOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
export function checkShape(shape: unknown, op: string): Shape {
  if (!Array.isArray(shape)) throw new Error(`[${op}] shape must be an array of integers`);
  for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new Error(`[${op}] invalid dimension ${String(d)} in shape [${shape.join(', ')}]`);
  if (shape.length > 8) throw new Error(`[${op}] at most 8 dims are supported, got ${shape.length}`);
  return shape as Shape;
}

/** The most bytes one storage may hold (the addon's limit, lib/native alloc). */
export const MAX_TENSOR_BYTES = 1e15;
/** Refuse a shape whose size the addon cannot allocate, naming the shape and the limit. */
export function checkSize(shape: Shape, dtype: DType, op: string): void {
  const n = numelOf(shape);
  const bytes = n * ITEMSIZE[dtype];
  if (n > Number.MAX_SAFE_INTEGER || bytes > MAX_TENSOR_BYTES)
    throw new Error(
      `[${op}] shape [${shape.join(', ')}] holds ${n} elements (${bytes} bytes of ${dtype}); a tensor may hold at most ${MAX_TENSOR_BYTES} bytes`,
    );
}

export class Tensor {
  requiresGrad = false;
  grad: Tensor | null = null;
  gradFn: Node | null = null;
  /** Optional label used in error messages and checkpoints. */
  name?: string;
  private disposed = false;

  constructor(
    readonly storage: Storage,
    readonly shape: Shape,
    readonly strides: number[],
    readonly offset: number,
    readonly dtype: DType,
    tracked = true,
  ) {
    storage.retain();
    trackTensor(this, tracked);
  }

  /** A new uninitialised contiguous tensor. */
  static empty(shape: Shape, dtype: DType, device: Device): Tensor {
    checkSize(shape, dtype, 'empty');
    const n = numelOf(shape);
    const st = Storage.alloc(n * ITEMSIZE[dtype], device);
    return new Tensor(st, shape.slice(), contiguousStrides(shape), 0, dtype);
  }

  get device(): Device {
    return this.storage.device;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get numel(): number {
    return numelOf(this.shape);
  }
  get isDisposed(): boolean {
    return this.disposed;
  }
  size(dim?: number): number {
    if (dim === undefined) return this.numel;
    const d = dim < 0 ? dim + this.ndim : dim;
    if (d < 0 || d >= this.ndim) throw new Error(`[size] dim ${dim} out of range for ${this.ndim}-d tensor`);
    return this.shape[d];
  }
  isContiguous(): boolean {
    let expect = 1;
    for (let i = this.ndim - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== expect) return false;
      expect *= this.shape[i];
    }
    return true;
  }

  /** The wire form for native kernels; throws if disposed. */
  v(op = 'op'): NativeView {
    if (this.disposed) throw new Error(`[${op}] tensor was disposed`);
    return { s: this.storage.handle, d: DTYPE_CODE[this.dtype], sh: this.shape, st: this.strides, o: this.offset };
  }
  assertAlive(op = 'op'): this {
    if (this.disposed) throw new Error(`[${op}] tensor was disposed`);
    return this;
  }

  /** A view with new geometry over the same storage (no autograd; ops/view.ts wraps this). */
  makeView(shape: Shape, strides: number[], offset: number): Tensor {
    this.assertAlive('view');
    return new Tensor(this.storage, shape, strides, offset, this.dtype);
  }

  /**
   * Points this contiguous tensor at `storage` from element `offset` (same device; the shape must fit, or the
   * storage be empty: a tensor on an empty storage is 'released' and any kernel on it fails its size check)
   * and drops its hold on the old memory. ZeRO-3 moves a parameter between its gathered copy and nothing
   * (lib/app/train/dist_zero3.ts). Views taken earlier keep the old memory.
   */
  rebind(storage: Storage, offset = 0): void {
    this.assertAlive('rebind');
    if (storage.device !== this.device) throw new Error(`[rebind] storage is on ${storage.device}, the tensor on ${this.device}`);
    if (!this.isContiguous()) throw new Error('[rebind] the tensor must be contiguous');
    const need = (offset + this.numel) * ITEMSIZE[this.dtype];
    if (!Number.isInteger(offset) || offset < 0 || (storage.nbytes > 0 && need > storage.nbytes))
      throw new Error(`[rebind] ${this.numel} elements from ${offset} do not fit a storage of ${storage.nbytes} bytes`);
    storage.retain();
    const old = this.storage;
    const self = this as unknown as { storage: Storage; offset: number };
    self.storage = storage;
    self.offset = storage.nbytes > 0 ? offset : 0;
    old.release();
  }

  /** Whether the tensor sits on an empty storage (rebind) while it has elements. */
  get isReleased(): boolean {
    return this.storage.nbytes === 0 && this.numel > 0;
  }

  /** Another handle to the same data and graph position; disposing one leaves the other valid. */
  ref(): Tensor {
    const t = new Tensor(this.storage, this.shape, this.strides, this.offset, this.dtype, false);
    t.requiresGrad = this.requiresGrad;
    return t;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    untrackTensor();
    this.storage.release();
    if (this.gradFn && --this.gradFn.refs <= 0) this.gradFn.release();
    this.gradFn = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  // ------------------------------------------------------------------ readback
  /** A flat copy of the elements in row-major order. bf16/f16 come back as Float32Array. */
  dataSync(): TypedArray {
    this.assertAlive('dataSync');
    const src = this.isContiguous() ? this : O.contiguous(this);
    try {
      const nbytes = this.numel * ITEMSIZE[this.dtype];
      const buf = native.read(src.storage.handle, src.offset * ITEMSIZE[this.dtype], nbytes);
      switch (this.dtype) {
        case 'float32':
          return new Float32Array(buf);
        case 'float64':
          return new Float64Array(buf);
        case 'bfloat16':
          return bf16ToF32(new Uint16Array(buf));
        case 'float16':
          return f16ToF32(new Uint16Array(buf));
        case 'int32':
          return new Int32Array(buf);
        case 'int64':
          return new BigInt64Array(buf);
        case 'uint8':
        case 'bool':
          return new Uint8Array(buf);
      }
      throw new Error(`[dataSync] unknown dtype ${this.dtype}`);
    } finally {
      if (src !== this) src.dispose();
    }
  }
  /** The elements as plain numbers (int64 converted with Number()). */
  toNumbers(): number[] {
    const d = this.dataSync();
    return d instanceof BigInt64Array ? Array.from(d, (x) => Number(x)) : Array.from(d as ArrayLike<number>);
  }
  async data(): Promise<TypedArray> {
    return this.dataSync();
  }
  /** Nested arrays of numbers (booleans for bool tensors). */
  arraySync(): NestedArray {
    const flat = this.toNumbers();
    const isBool = this.dtype === 'bool';
    const build = (dim: number, off: number): NestedArray => {
      if (dim === this.ndim) return isBool ? flat[off] !== 0 : flat[off];
      const step = numelOf(this.shape.slice(dim + 1));
      const out: NestedArray[] = [];
      for (let i = 0; i < this.shape[dim]; i++) out.push(build(dim + 1, off + i * step));
      return out;
    };
    return build(0, 0);
  }
  item(): number {
    this.assertAlive('item');
    if (this.numel !== 1) throw new Error(`[item] tensor has ${this.numel} elements, expected 1`);
    return this.toNumbers()[0];
  }
  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  // ------------------------------------------------------------------ autograd
  /** Mark as a leaf that collects gradients. */
  setRequiresGrad(flag = true): this {
    if (flag && !isFloat(this.dtype)) throw new Error(`[requiresGrad] only floating tensors can require grad, got ${this.dtype}`);
    if (this.gradFn && !flag) throw new Error('[requiresGrad] cannot turn off on a non-leaf; use detach()');
    this.requiresGrad = flag;
    return this;
  }
  get isLeaf(): boolean {
    return this.gradFn === null;
  }
  /** Backpropagate. Scalars default to a gradient of one; other shapes need `grad`. */
  backward(grad?: Tensor, opts: BackwardOptions = {}): void {
    this.assertAlive('backward');
    checkOptions('backward', opts, BACKWARD_KEYS);
    if (!this.requiresGrad) throw new Error('[backward] tensor does not require grad (no parameter in its graph requires grad)');
    let g = grad;
    if (!g) {
      if (this.numel !== 1) throw new Error(`[backward] grad can be implicit only for scalars; got shape [${this.shape.join(', ')}]`);
      g = O.onesLike(this);
    } else {
      if (g.shape.join() !== this.shape.join()) throw new Error(`[backward] grad shape [${g.shape}] differs from tensor shape [${this.shape}]`);
    }
    try {
      runBackward(this, g, opts, {
        accumulate: (leaf, gi) => {
          // A fresh, unshared, contiguous gradient becomes .grad as is (no copy); anything that
          // shares storage (e.g. the same upstream gradient handed to two inputs) is copied, so a
          // later in-place accumulation cannot leak into another tensor.
          if (
            !leaf.grad &&
            gi.dtype === leaf.dtype &&
            gi.storage.refs === 1 &&
            gi.isContiguous() &&
            gi.offset === 0 &&
            gi.numel * ITEMSIZE[gi.dtype] === gi.storage.nbytes
          ) {
            leaf.grad = keep(gi);
            return true;
          }
          const gc = gi.dtype === leaf.dtype ? gi : O.to(gi, leaf.dtype);
          if (!leaf.grad) leaf.grad = keep(O.clone(gc));
          else O.addInPlace(leaf.grad, gc);
          if (gc !== gi) gc.dispose();
          return false;
        },
        addInto: (a, b) => {
          const s = O.add(a, b);
          a.dispose();
          b.dispose();
          return s;
        },
      });
    } finally {
      if (!grad) g.dispose();
    }
  }
  /** A tensor sharing data, cut from the graph. */
  detach(): Tensor {
    this.assertAlive('detach');
    return new Tensor(this.storage, this.shape.slice(), this.strides.slice(), this.offset, this.dtype);
  }
  /** Drop the accumulated gradient. */
  zeroGrad(): void {
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  // ------------------------------------------------------------------ op forwards
  to(target: DType | Device): Tensor {
    return O.to(this, target);
  }
  contiguous(): Tensor {
    return O.contiguous(this);
  }
  clone(): Tensor {
    return O.clone(this);
  }
  reshape(...shape: (number | number[])[]): Tensor {
    return O.reshape(this, shape.flat());
  }
  view(...shape: (number | number[])[]): Tensor {
    return O.view(this, shape.flat());
  }
  flatten(startDim = 0, endDim = -1): Tensor {
    return O.flatten(this, startDim, endDim);
  }
  permute(...dims: (number | number[])[]): Tensor {
    return O.permute(this, dims.flat());
  }
  transpose(d0: number, d1: number): Tensor {
    return O.transpose(this, d0, d1);
  }
  get T(): Tensor {
    return O.transpose(this, -2, -1);
  }
  slice(dim: number, start?: number, end?: number, step = 1): Tensor {
    return O.slice(this, dim, start, end, step);
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return O.narrow(this, dim, start, length);
  }
  select(dim: number, index: number): Tensor {
    return O.select(this, dim, index);
  }
  expand(...shape: (number | number[])[]): Tensor {
    return O.expand(this, shape.flat());
  }
  squeeze(dim?: number): Tensor {
    return O.squeeze(this, dim);
  }
  unsqueeze(dim: number): Tensor {
    return O.unsqueeze(this, dim);
  }
  split(sizeOrSections: number | number[], dim = 0): Tensor[] {
    return O.split(this, sizeOrSections, dim);
  }
  chunk(chunks: number, dim = 0): Tensor[] {
    return O.chunk(this, chunks, dim);
  }
  add(b: TensorOrScalar, alpha?: number): Tensor {
    return O.add(this, b, alpha);
  }
  sub(b: TensorOrScalar, alpha?: number): Tensor {
    return O.sub(this, b, alpha);
  }
  mul(b: TensorOrScalar): Tensor {
    return O.mul(this, b);
  }
  div(b: TensorOrScalar): Tensor {
    return O.div(this, b);
  }
  pow(e: TensorOrScalar): Tensor {
    return O.pow(this, e);
  }
  maximum(b: TensorOrScalar): Tensor {
    return O.maximum(this, b);
  }
  minimum(b: TensorOrScalar): Tensor {
    return O.minimum(this, b);
  }
  eq(b: TensorOrScalar): Tensor {
    return O.eq(this, b);
  }
  ne(b: TensorOrScalar): Tensor {
    return O.ne(this, b);
  }
  lt(b: TensorOrScalar): Tensor {
    return O.lt(this, b);
  }
  le(b: TensorOrScalar): Tensor {
    return O.le(this, b);
  }
  gt(b: TensorOrScalar): Tensor {
    return O.gt(this, b);
  }
  ge(b: TensorOrScalar): Tensor {
    return O.ge(this, b);
  }
  neg(): Tensor {
    return O.neg(this);
  }
  exp(): Tensor {
    return O.exp(this);
  }
  log(): Tensor {
    return O.log(this);
  }
  sqrt(): Tensor {
    return O.sqrt(this);
  }
  rsqrt(): Tensor {
    return O.rsqrt(this);
  }
  abs(): Tensor {
    return O.abs(this);
  }
  sin(): Tensor {
    return O.sin(this);
  }
  cos(): Tensor {
    return O.cos(this);
  }
  tanh(): Tensor {
    return O.tanh(this);
  }
  sigmoid(): Tensor {
    return O.sigmoid(this);
  }
  relu(): Tensor {
    return O.relu(this);
  }
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor {
    return O.gelu(this, approximate);
  }
  quickGelu(): Tensor {
    return O.quickGelu(this);
  }
  silu(): Tensor {
    return O.silu(this);
  }
  square(): Tensor {
    return O.square(this);
  }
  maskedFill(mask: Tensor, value: number): Tensor {
    return O.maskedFill(this, mask, value);
  }
  sum(dim?: number | number[], keepdim = false): Tensor {
    return O.sum(this, dim, keepdim);
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    return O.mean(this, dim, keepdim);
  }
  max(dim?: number, keepdim = false): Tensor {
    return O.max(this, dim, keepdim);
  }
  min(dim?: number, keepdim = false): Tensor {
    return O.min(this, dim, keepdim);
  }
  argmax(dim?: number, keepdim = false): Tensor {
    return O.argmax(this, dim, keepdim);
  }
  argmin(dim?: number, keepdim = false): Tensor {
    return O.argmin(this, dim, keepdim);
  }
  var(dim?: number | number[], opts?: OpsModule.VarOptions): Tensor {
    return O.variance(this, dim, opts);
  }
  logsumexp(dim: number | number[], keepdim = false): Tensor {
    return O.logsumexp(this, dim, keepdim);
  }
  matmul(b: Tensor): Tensor {
    return O.matmul(this, b);
  }
  softmax(dim = -1): Tensor {
    return O.softmax(this, dim);
  }
  logSoftmax(dim = -1): Tensor {
    return O.logSoftmax(this, dim);
  }
  indexSelect(dim: number, index: Tensor): Tensor {
    return O.indexSelect(this, dim, index);
  }
  gather(dim: number, index: Tensor): Tensor {
    return O.gather(this, dim, index);
  }
}
