// memory.ts — lifetime of native memory: refcounted storages, tidy scopes, and memory() counts.
//
// Tensors own native memory the garbage collector cannot see, so lifetimes are explicit, as in
// tfjs: every tensor created inside `tidy(fn)` is disposed when fn returns, except the tensors fn
// returns and those passed to `keep()`. Views share a Storage, which is freed when its last tensor
// goes. The addon's handle finalizer frees storages whose tensors were dropped without dispose: a
// safety net, not the plan (the GC does not feel native memory pressure).
import { native, StorageHandle } from '../native';
import { Device, DEVICE_CODE } from './dtype';

export class Storage {
  refs = 0;
  freed = false;
  constructor(
    readonly handle: StorageHandle,
    readonly nbytes: number,
    readonly device: Device,
  ) {}

  static alloc(nbytes: number, device: Device): Storage {
    return new Storage(native.alloc(DEVICE_CODE[device], nbytes), nbytes, device);
  }
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs <= 0 && !this.freed) {
      this.freed = true;
      native.free(this.handle);
    }
  }
}

/** Anything a scope can dispose. */
export interface Disposable {
  dispose(): void;
  readonly isDisposed: boolean;
}

let liveTensors = 0;
const scopes: Set<Disposable>[] = [];

/** Called by every Tensor constructor: count it and hand it to the innermost tidy scope. */
export function trackTensor(t: Disposable, tracked = true): void {
  liveTensors++;
  if (tracked && scopes.length) scopes[scopes.length - 1].add(t);
}
export function untrackTensor(): void {
  liveTensors--;
}

/** Remove `t` from every open scope so no tidy disposes it. Returns t. */
export function keep<T extends Disposable>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(x: unknown, out: Set<Disposable>, depth = 0): void {
  if (x == null || depth > 8) return;
  if (typeof x === 'object' && 'dispose' in (x as object) && 'isDisposed' in (x as object)) {
    out.add(x as Disposable);
    return;
  }
  if (Array.isArray(x)) for (const e of x) collect(e, out, depth + 1);
  else if (x instanceof Map) for (const e of x.values()) collect(e, out, depth + 1);
  else if (typeof x === 'object' && Object.getPrototypeOf(x) === Object.prototype)
    for (const e of Object.values(x as object)) collect(e, out, depth + 1);
}

/**
 * Run fn and dispose every tensor it created except those it returns (also inside arrays, Maps or
 * plain objects) and those kept. Returned tensors move to the enclosing scope. Async functions are
 * refused: a scope cannot tell which awaits belong to it.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result && typeof (result as { then?: unknown }).then === 'function') {
    for (const t of scope) t.dispose();
    throw new Error('[tidy] fn must be synchronous (it returned a Promise)');
  }
  const ret = new Set<Disposable>();
  collect(result, ret);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (ret.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

export interface DeviceMemory {
  /** Native storages alive (views share one). */
  storages: number;
  /** Bytes held by live storages. */
  bytes: number;
  /** CUDA only: allocator figures. */
  bytesInUse?: number;
  bytesCached?: number;
  deviceMallocs?: number;
  peakBytes?: number;
}
export interface MemoryInfo {
  /** Live (undisposed) tensor objects, views and autograd-saved tensors included. */
  numTensors: number;
  cpu: DeviceMemory;
  cuda?: DeviceMemory;
}

export function memory(): MemoryInfo {
  const dev = (d: Device): DeviceMemory => {
    const s = native.memoryStats(DEVICE_CODE[d]);
    const { liveStorages, ...rest } = s;
    return { storages: liveStorages, ...rest };
  };
  const info: MemoryInfo = { numTensors: liveTensors, cpu: dev('cpu') };
  if (native.deviceInfo(1).available) info.cuda = dev('cuda');
  return info;
}

/** Free the CUDA allocator's cached blocks (no-op without CUDA). */
export function emptyCache(): void {
  if (native.deviceInfo(1).available) native.emptyCache(1);
}
