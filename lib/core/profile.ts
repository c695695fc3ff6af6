// profile.ts — which kernels a piece of work spends its time in (cpp/profiler.h does the timing).
//
//   const p = L.profile(() => trainStep());          // or await L.profileAsync(async () => ...)
//   console.log(L.formatProfile(p));
//
// Every kernel call inside `fn` is timed and summed per key: the kernel's name, dtype and argument
// shapes, so the GEMMs of different layers are told apart. CUDA kernels are timed with events on the
// stream, so the recording itself synchronises nothing and the numbers are device time; the profile
// waits for the device once at the end. CPU kernels are timed with the host clock around the call.
import { native } from '../native';
import type { Device } from './dtype';

export interface KernelTime {
  /** Kernel name, dtype and argument shapes, e.g. "matmul bfloat16 [8192,11008] [8192,4096] [4096,11008]". */
  key: string;
  device: Device;
  calls: number;
  totalMs: number;
  meanMs: number;
  maxMs: number;
  /** This key's fraction of the summed kernel time. */
  share: number;
}

export interface Profile<T> {
  result: T;
  /** One entry per key, largest total first. */
  kernels: KernelTime[];
  /** Sum of all kernel times. */
  kernelMs: number;
  /** Wall time of fn, including the wait for the device at the end. */
  wallMs: number;
  /** Calls past the recorder's cap (2^20 per profile), counted but not timed. */
  dropped: number;
}

/**
 * Runs `fn` (synchronous) and times every kernel it launches. Profiles do not nest; an error thrown by
 * `fn` ends the recording and is rethrown.
 */
export function profile<T>(fn: () => T): Profile<T> {
  if (typeof fn !== 'function') throw new TypeError(`profile: expected a function, got ${typeof fn}`);
  const t0 = process.hrtime.bigint();
  native.profile(true);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    native.profile(false);
    throw e;
  }
  const done = finish(result, t0);
  if (result instanceof Promise) throw new Error('profile: fn must be synchronous (it returned a Promise); use profileAsync');
  return done;
}

/**
 * profile() for an async function (a training run, a generation loop): the recording covers everything
 * the process launches until the promise settles, other async work that runs meanwhile included.
 */
export async function profileAsync<T>(fn: () => Promise<T>): Promise<Profile<T>> {
  if (typeof fn !== 'function') throw new TypeError(`profileAsync: expected a function, got ${typeof fn}`);
  const t0 = process.hrtime.bigint();
  native.profile(true);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    native.profile(false);
    throw e;
  }
  return finish(result, t0);
}

/** Stops the recording and shapes its entries. */
function finish<T>(result: T, t0: bigint): Profile<T> {
  const raw = native.profile(false);
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const kernelMs = raw.kernels.reduce((a, k) => a + k.totalMs, 0);
  const kernels = raw.kernels.map((k) => ({
    key: k.key,
    device: k.device as Device,
    calls: k.calls,
    totalMs: k.totalMs,
    meanMs: k.totalMs / k.calls,
    maxMs: k.maxMs,
    share: kernelMs > 0 ? k.totalMs / kernelMs : 0,
  }));
  return { result, kernels, kernelMs, wallMs, dropped: raw.dropped };
}

/** The entries summed per kernel name and device (all shapes together), largest total first. */
export function byKernel(kernels: KernelTime[]): KernelTime[] {
  const m = new Map<string, KernelTime>();
  for (const k of kernels) {
    const name = `${k.key.split(' ')[0]} ${k.device}`;
    const e = m.get(name);
    if (!e) m.set(name, { ...k, key: k.key.split(' ')[0] });
    else {
      e.calls += k.calls;
      e.totalMs += k.totalMs;
      e.maxMs = Math.max(e.maxMs, k.maxMs);
      e.share += k.share;
      e.meanMs = e.totalMs / e.calls;
    }
  }
  return [...m.values()].sort((a, b) => b.totalMs - a.totalMs);
}

/** A plain-text table: the kernels by name, then the `top` keys. */
export function formatProfile(p: Pick<Profile<unknown>, 'kernels' | 'kernelMs' | 'wallMs'>, top = 15): string {
  const row = (k: KernelTime): string =>
    `${k.totalMs.toFixed(3).padStart(10)} ms ${(100 * k.share).toFixed(1).padStart(5)}% ${String(k.calls).padStart(6)} calls  ${k.device.padEnd(4)} ${k.key}`;
  return [
    `kernels ${p.kernelMs.toFixed(3)} ms of ${p.wallMs.toFixed(3)} ms wall`,
    'by kernel:',
    ...byKernel(p.kernels).map(row),
    `top ${Math.min(top, p.kernels.length)} of ${p.kernels.length} shapes:`,
    ...p.kernels.slice(0, top).map(row),
  ].join('\n');
}
