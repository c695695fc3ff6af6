// backend.ts — the TensorFlow.js KernelBackend over the engine's native storage.
//
// A tfjs dataId maps to one Entry: a flat engine Tensor (our refcounted native Storage) plus, for
// the kernels that read elements from JS, `values`, a typed array over those very bytes. On the CPU
// `values` is a view (Storage.hostView, no copy); on CUDA it is a host mirror read once on first use
// (tfjs tensors are immutable, so a mirror never goes stale). The views never leave the backend:
// readSync/read hand out copies, so a user array cannot outlive the storage it points into, and
// disposeData frees the native storage at once.
//
// strings and complex64 are not native: strings stay JS arrays of bytes, complex64 is a pair of
// float32 entries (real, imag), as tfjs-backend-cpu keeps them, so its kernels work on them.
import * as tf from '@tensorflow/tfjs-core';
import { Tensor } from '../core/tensor';
import { Storage } from '../core/memory';
import { ITEMSIZE, DType } from '../core/dtype';
import { writeBytes } from '../core/dispatch';
import type { Device } from '../core/dtype';

type DataId = object;
type BackendValues = tf.backend_util.BackendValues;
/** The tfjs dtypes that live in native storage, and the engine dtype each one uses. */
const NATIVE_DTYPE: Partial<Record<tf.DataType, DType>> = { float32: 'float32', int32: 'int32', bool: 'bool' };

/** One tfjs data bucket. */
export class Entry {
  refCount = 1;
  complexTensorInfos?: { real: tf.TensorInfo; imag: tf.TensorInfo };
  private host?: BackendValues;
  constructor(
    readonly dtype: tf.DataType,
    /** Native storage (numeric dtypes): a flat contiguous tensor of `size` elements. */
    readonly tensor: Tensor | null,
    readonly size: number,
    strings?: BackendValues,
  ) {
    this.host = strings;
  }

  /** The elements as tfjs kernels read them: a view over native memory on the CPU, a mirror on CUDA. */
  get values(): BackendValues {
    if (this.host === undefined && this.tensor) {
      const t = this.tensor;
      if (t.device === 'cpu') this.host = typedView(t.storage.hostView(), this.dtype, this.size);
      else this.host = t.dataSync() as BackendValues;
    }
    return this.host as BackendValues;
  }
  set values(_v: BackendValues) {
    throw new Error('[llava] tfjs data is immutable; kernels write new tensors instead');
  }

  /**
   * CUDA only: copy a host mirror back to the device. tfjs-backend-cpu's kernels fill some outputs in
   * place (they make a zeros tensor, then write into its `values`), which on the CPU writes our storage
   * itself but on CUDA only the mirror; the backend calls this for the entries a kernel created.
   */
  syncToDevice(): void {
    if (this.host !== undefined && this.tensor && this.tensor.device !== 'cpu' && this.size > 0) {
      const h = this.host as Float32Array | Int32Array | Uint8Array;
      writeBytes(this.tensor, new Uint8Array(h.buffer, h.byteOffset, h.byteLength));
    }
  }

  /** Drop the native storage now (and the view over it first). */
  free(): void {
    this.host = undefined;
    this.tensor?.dispose();
  }
}

function typedView(buf: ArrayBuffer, dtype: tf.DataType, n: number): BackendValues {
  if (dtype === 'float32') return new Float32Array(buf, 0, n);
  if (dtype === 'int32') return new Int32Array(buf, 0, n);
  return new Uint8Array(buf, 0, n);
}

/** Values in the typed array tfjs uses for `dtype` (kernels sometimes hand over another kind). */
function asDTypeArray(values: BackendValues, dtype: tf.DataType): ArrayBufferView {
  if (dtype === 'float32') return values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
  if (dtype === 'int32') return values instanceof Int32Array ? values : Int32Array.from(values as ArrayLike<number>);
  if (values instanceof Uint8Array) return values;
  return Uint8Array.from(values as ArrayLike<number>, (v) => (v ? 1 : 0));
}

/**
 * The `llava` (CPU) and `llava-cuda` backends. The surface the kernels use (data, makeTensorInfo,
 * makeOutput, bufferSync, disposeIntermediateTensorInfo) follows tfjs-backend-cpu's, so its kernel
 * implementations run unchanged on our storage where no native kernel exists yet.
 */
export class LlavaBackend extends tf.KernelBackend {
  readonly data: tf.DataStorage<Entry>;
  /** Bytes of native storage held by live entries. */
  private nativeBytes = 0;
  /** Kernels running (nested calls count), and entries disposed meanwhile (see runKernel). */
  private depth = 0;
  private deferred: Entry[] = [];
  /** Entries created while a kernel runs (on CUDA their mirrors go back to the device when it ends). */
  private created: Entry[] = [];
  private static nextId = 0;
  /** Kept for tfjs-backend-cpu's BatchMatMul, which reads its block size from the backend. */
  readonly blockSize = 48;

  constructor(readonly device: Device = 'cpu') {
    super();
    this.data = new tf.DataStorage(this, tf.engine());
  }

  /** A new entry holding `values` (copied once into native storage; strings stay in JS). */
  private makeEntry(values: BackendValues | null, shape: number[], dtype: tf.DataType): Entry {
    const size = tf.util.sizeFromShape(shape);
    const nd = NATIVE_DTYPE[dtype];
    if (!nd) {
      if (dtype === 'string') return new Entry(dtype, null, size, (values ?? []) as BackendValues);
      return new Entry(dtype, null, size); // complex64: parts attached by the Complex kernel
    }
    const t = this.allocTensor(size, nd);
    if (values != null && size > 0) {
      const src = asDTypeArray(values, dtype);
      if (src.byteLength < size * ITEMSIZE[nd])
        throw new Error(`[llava] write: ${size} ${dtype} elements expected, got ${src.byteLength / ITEMSIZE[nd]}`);
      const bytes = new Uint8Array(src.buffer, src.byteOffset, size * ITEMSIZE[nd]);
      if (t.device === 'cpu') new Uint8Array(t.storage.hostView()).set(bytes);
      else writeBytes(t, bytes); // one host-to-device copy
    }
    return new Entry(dtype, t, size);
  }

  /** A flat uninitialised native tensor of `size` elements on this backend's device. */
  allocTensor(size: number, dtype: DType): Tensor {
    const st = Storage.alloc(size * ITEMSIZE[dtype], this.device);
    this.nativeBytes += st.nbytes;
    return new Tensor(st, [size], [1], 0, dtype, false);
  }

  /** Free a tensor from allocTensor that was never adopted (a kernel's temporary). */
  release(t: Tensor): void {
    this.nativeBytes -= t.storage.nbytes;
    t.dispose();
  }

  /** Register an output tensor that a native kernel filled (no copy). */
  adopt(t: Tensor, shape: number[], dtype: tf.DataType): tf.TensorInfo {
    const dataId = { id: LlavaBackend.nextId++ };
    this.data.set(dataId, this.track(new Entry(dtype, t, tf.util.sizeFromShape(shape))));
    return { dataId, shape, dtype };
  }

  override write(values: BackendValues | null, shape: number[], dtype: tf.DataType): DataId {
    const dataId = { id: LlavaBackend.nextId++ };
    this.data.set(dataId, this.track(this.makeEntry(values, shape, dtype)));
    return dataId;
  }

  override move(dataId: DataId, values: BackendValues | null, shape: number[], dtype: tf.DataType, refCount: number): void {
    const e = this.makeEntry(values, shape, dtype);
    e.refCount = refCount;
    this.data.set(dataId, e);
  }

  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: BackendValues | string[]): tf.TensorInfo {
    let v = values as BackendValues | undefined;
    if (dtype === 'string' && values != null && values.length > 0 && typeof values[0] === 'string')
      v = (values as string[]).map((s) => tf.util.encodeString(s));
    return { dataId: this.write(v ?? null, shape, dtype), shape, dtype };
  }

  makeOutput<T extends tf.Tensor>(values: BackendValues, shape: number[], dtype: tf.DataType): T {
    return tf.engine().makeTensorFromTensorInfo(this.makeTensorInfo(shape, dtype, values), this) as T;
  }

  /** The engine tensor behind a dataId (numeric dtypes only), for native kernels. */
  tensorOf(dataId: DataId): Tensor {
    const e = this.data.get(dataId);
    if (!e.tensor) throw new Error(`[llava] ${e.dtype} data has no native storage`);
    return e.tensor;
  }

  override refCount(dataId: DataId): number {
    return this.data.has(dataId) ? this.data.get(dataId).refCount : 0;
  }
  override incRef(dataId: DataId): void {
    this.data.get(dataId).refCount++;
  }
  decRef(dataId: DataId): void {
    if (this.data.has(dataId)) this.data.get(dataId).refCount--;
  }
  override numDataIds(): number {
    return this.data.numDataIds();
  }

  override async read(dataId: DataId): Promise<BackendValues> {
    return this.readSync(dataId);
  }
  /** A copy of the elements (never the internal view: it dies with the storage). */
  override readSync(dataId: DataId): BackendValues {
    const e = this.data.get(dataId);
    if (e.dtype === 'complex64') {
      const re = this.readSync(e.complexTensorInfos!.real.dataId) as Float32Array;
      const im = this.readSync(e.complexTensorInfos!.imag.dataId) as Float32Array;
      return tf.backend_util.mergeRealAndImagArrays(re, im);
    }
    if (!e.tensor) return (e.values as Uint8Array[]).slice();
    if (e.tensor.device !== 'cpu') return e.values; // already a private host copy
    return (e.values as Float32Array | Int32Array | Uint8Array).slice();
  }

  bufferSync<R extends tf.Rank, D extends tf.DataType>(t: tf.TensorInfo): tf.TensorBuffer<R, D> {
    const data = this.readSync(t.dataId);
    if (t.dtype === 'string') {
      try {
        const strings = (data as Uint8Array[]).map((d) => tf.util.decodeString(d));
        return tf.buffer(t.shape as tf.ShapeMap[R], t.dtype as D, strings as never) as tf.TensorBuffer<R, D>;
      } catch {
        throw new Error('[llava] failed to decode string bytes as utf-8');
      }
    }
    return tf.buffer(t.shape as tf.ShapeMap[R], t.dtype as D, data as tf.DataTypeMap[D]) as tf.TensorBuffer<R, D>;
  }

  override disposeData(dataId: DataId, force = false): boolean {
    if (!this.data.has(dataId)) return true;
    const e = this.data.get(dataId);
    e.refCount--;
    if (!force && e.refCount > 0) return false;
    if (e.complexTensorInfos) {
      this.disposeData(e.complexTensorInfos.real.dataId, true);
      this.disposeData(e.complexTensorInfos.imag.dataId, true);
    }
    this.data.delete(dataId);
    if (this.depth > 0) this.deferred.push(e);
    else this.freeEntry(e);
    return true;
  }

  private track(e: Entry): Entry {
    if (this.depth > 0 && this.device !== 'cpu') this.created.push(e);
    return e;
  }

  private freeEntry(e: Entry): void {
    if (e.tensor) this.nativeBytes -= e.tensor.storage.nbytes;
    e.free();
  }

  /**
   * Run one kernel. Storage disposed while it runs is freed when it returns: tfjs-backend-cpu's
   * kernels may still read an intermediate's `values` after disposing it (FFT does), which is safe
   * for a GC'd array but not for a view over freed native memory. Outside kernels, dispose frees at once.
   */
  runKernel<R>(fn: () => R): R {
    this.depth++;
    try {
      return fn();
    } finally {
      if (--this.depth === 0) {
        if (this.deferred.length) {
          for (const e of this.deferred) this.freeEntry(e);
          this.deferred.length = 0;
        }
        // after the frees, so intermediates the kernel disposed are not uploaded
        if (this.created.length) {
          for (const e of this.created) if (!e.tensor?.isDisposed) e.syncToDevice();
          this.created.length = 0;
        }
      }
    }
  }
  disposeIntermediateTensorInfo(info: tf.TensorInfo): void {
    this.disposeData(info.dataId);
  }

  override async time(f: () => void): Promise<tf.BackendTimingInfo> {
    const start = tf.util.now();
    f();
    return { kernelMs: tf.util.now() - start };
  }

  /** Exact figures: bytes of native storage this backend holds (per device). */
  override memory(): { unreliable: boolean; numBytesInLlava: number; device: Device } {
    return { unreliable: false, numBytesInLlava: this.nativeBytes, device: this.device };
  }

  where(condition: tf.Tensor): tf.Tensor2D {
    const vals = this.readSync(condition.dataId) as tf.TypedArray;
    return tf.kernel_impls.whereImpl(condition.shape, vals);
  }

  override floatPrecision(): 16 | 32 {
    return 32;
  }
  override epsilon(): number {
    return super.epsilon();
  }
  override dispose(): void {
    // tfjs disposes every tensor before it drops a backend; nothing is left to free here.
  }
}
