// memory.ts — lifetime of native memory: refcounted storages, scopes (tidy, and one per op call),
// and memory() counts.
//
// Tensors own native memory the garbage collector cannot see, so lifetimes are explicit, as in
// tfjs: every tensor created inside `tidy(fn)` is disposed when fn returns, except the tensors fn
// returns and those passed to `keep()`. Every op runs in such a scope too (`scopedOp()` below, like
// tfjs's startScope/endScope around each op), so the ops never free their temporaries by hand.
// Views share a Storage, which is freed when its last tensor goes: at once, inside dispose(), so a
// synchronous loop that never yields to the event loop still runs in flat memory. A
// FinalizationRegistry frees storages whose tensors were dropped without dispose: a safety net, not
// the plan (the GC does not feel native memory pressure). Disposed storages are unregistered, so
// they leave nothing behind for the GC either.
import { native, StorageHandle } from '../native';
import { Device, DEVICE_CODE } from './dtype';

/** Frees the native memory of storages the GC found unreachable before they were released. */
const orphans = new FinalizationRegistry<StorageHandle>((handle) => native.free(handle));

export class Storage {
  refs = 0;
  freed = false;
  constructor(
    readonly handle: StorageHandle,
    readonly nbytes: number,
    readonly device: Device,
  ) {
    orphans.register(this, handle, this);
  }

  static alloc(nbytes: number, device: Device): Storage {
    return new Storage(native.alloc(DEVICE_CODE[device], nbytes), nbytes, device);
  }
  retain(): void {
    this.refs++;
  }
  /**
   * The bytes of a live CPU storage as an ArrayBuffer over the same memory (no copy). The buffer does
   * not keep the storage alive: whoever holds it must drop it before the storage is released (the
   * tfjs backend keeps such views private to its data map and hands copies to users).
   */
  hostView(): ArrayBuffer {
    if (this.freed) throw new Error('[hostView] storage was already freed');
    return native.hostView(this.handle);
  }
  release(): void {
    if (--this.refs <= 0 && !this.freed) {
      this.freed = true;
      orphans.unregister(this);
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
/** Open scopes, innermost last; each holds the tensors created while it is innermost. */
const scopes: Set<Disposable>[] = [];
/** Emptied sets of closed scopes, reused so that a scope per op allocates nothing. */
const spare: Set<Disposable>[] = [];

/** Called by every Tensor constructor: count it and hand it to the innermost scope. */
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

function isDisposable(x: unknown): x is Disposable {
  return typeof x === 'object' && x !== null && 'dispose' in x && 'isDisposed' in x;
}

function collect(x: unknown, out: Set<Disposable>, depth = 0): void {
  if (x == null || depth > 8) return;
  if (isDisposable(x)) {
    out.add(x);
    return;
  }
  if (Array.isArray(x)) for (const e of x) collect(e, out, depth + 1);
  else if (x instanceof Map) for (const e of x.values()) collect(e, out, depth + 1);
  else if (typeof x === 'object' && Object.getPrototypeOf(x) === Object.prototype)
    for (const e of Object.values(x as object)) collect(e, out, depth + 1);
}

function openScope(): Set<Disposable> {
  const scope = spare.pop() ?? new Set<Disposable>();
  scopes.push(scope);
  return scope;
}

/**
 * Close the innermost scope. Tensors it tracked that appear in `result` (itself, or inside arrays,
 * Maps and plain objects) move to the enclosing scope; every other one is disposed. With
 * `failed`, all of them are disposed. Tensors that existed before the scope opened are never in
 * it, so an op that hands back one of its inputs leaves that input alone.
 */
function closeScope(scope: Set<Disposable>, result: unknown, failed: boolean): void {
  scopes.pop();
  if (scope.size) {
    const parent = scopes.length ? scopes[scopes.length - 1] : undefined;
    if (failed) {
      for (const t of scope) t.dispose();
    } else if (isDisposable(result)) {
      // The common case of an op returning one tensor: no walk over the result needed.
      for (const t of scope) {
        if (t === result) parent?.add(t);
        else t.dispose();
      }
    } else {
      const ret = new Set<Disposable>();
      collect(result, ret);
      for (const t of scope) {
        if (ret.has(t)) parent?.add(t);
        else t.dispose();
      }
    }
    scope.clear();
  }
  if (spare.length < 64) spare.push(scope);
}

/**
 * Wrap an op so that it runs in its own scope: the tensors its body creates and does not return
 * (temporaries, casts, views passed to kernels) are disposed when it returns or throws; the
 * returned tensor(s) move to the caller's scope. This is what `tidy` does, minus the Promise
 * check, for every op call. Tensors a graph node keeps for backward are separate references
 * (`record` saves `t.ref()`, which no scope tracks), so they outlive the scope.
 */
export function scopedOp<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => scoped(() => fn(...args));
}

/** Run fn in a scope (as `scopedOp` does, without wrapping); used for backward functions. */
export function scoped<R>(fn: () => R): R {
  const scope = openScope();
  let result: R;
  try {
    result = fn();
  } catch (e) {
    closeScope(scope, undefined, true);
    throw e;
  }
  closeScope(scope, result, false);
  return result;
}

/**
 * Run fn and dispose every tensor it created except those it returns (also inside arrays, Maps or
 * plain objects) and those kept. Returned tensors move to the enclosing scope. Async functions are
 * refused: a scope cannot tell which awaits belong to it.
 */
export function tidy<T>(fn: () => T): T {
  const scope = openScope();
  let result: T;
  try {
    result = fn();
  } catch (e) {
    closeScope(scope, undefined, true);
    throw e;
  }
  if (result && typeof (result as { then?: unknown }).then === 'function') {
    closeScope(scope, undefined, true);
    throw new Error('[tidy] fn must be synchronous (it returned a Promise)');
  }
  closeScope(scope, result, false);
  return result;
}

export interface DeviceMemory {
  /** Native storages alive (views share one). */
  storages: number;
  /** Bytes held by live storages. */
  bytes: number;
  /** Allocator figures (CPU: the host-memory cache of cpp/cpu_backend.cc; CUDA: the caching allocator). */
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

/** Free the allocators' cached blocks: the CPU's host-memory cache, and CUDA's when it is available. */
export function emptyCache(): void {
  native.emptyCache(0);
  if (native.deviceInfo(1).available) native.emptyCache(1);
}
