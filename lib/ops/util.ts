// util.ts — the shape, broadcasting and argument-check helpers every op file shares. Running a
// kernel (`kernel`), recording a graph node (`record`) and the per-op scope (`scopedOp`) live in
// lib/core (dispatch.ts, autograd.ts, memory.ts).
import { Tensor, Shape } from '../core/tensor';
import { isFloat } from '../core/dtype';

export function normDim(dim: number, ndim: number, op: string): number {
  if (!Number.isInteger(dim)) throw new Error(`[${op}] dim must be an integer, got ${dim}`);
  const d = dim < 0 ? dim + ndim : dim;
  if (d < 0 || d >= Math.max(ndim, 1)) throw new Error(`[${op}] dim ${dim} out of range for a ${ndim}-d tensor`);
  return d;
}

export function broadcastShapes(a: Shape, b: Shape, op: string): Shape {
  const n = Math.max(a.length, b.length);
  const out: Shape = new Array(n);
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1)
      throw new Error(`[${op}] shapes [${a.join(', ')}] and [${b.join(', ')}] cannot be broadcast (dim ${i}: ${x} vs ${y})`);
    out[i] = x === 1 ? y : x;
  }
  return out;
}

/** A stride-0 view of t with shape `shape` (t's shape must broadcast to it). No autograd. */
export function broadcastView(t: Tensor, shape: Shape, op: string): Tensor {
  const n = shape.length;
  if (t.ndim > n) throw new Error(`[${op}] cannot broadcast [${t.shape}] to [${shape}]`);
  const st: number[] = new Array(n).fill(0);
  for (let i = 0; i < t.ndim; i++) {
    const j = n - t.ndim + i;
    if (t.shape[i] === shape[j]) st[j] = t.strides[i];
    else if (t.shape[i] === 1) st[j] = 0;
    else throw new Error(`[${op}] cannot broadcast [${t.shape}] to [${shape}]`);
  }
  return t.makeView(shape.slice(), st, t.offset);
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function checkFloat(t: Tensor, op: string, what = 'input'): void {
  if (!isFloat(t.dtype)) throw new Error(`[${op}] ${what} must be a floating tensor, got ${t.dtype}`);
}

export function checkTensor(t: unknown, op: string, what = 'input'): Tensor {
  if (!(t instanceof Tensor)) throw new Error(`[${op}] ${what} must be a Tensor, got ${t === null ? 'null' : typeof t}`);
  return t.assertAlive(op);
}

export function checkSameDevice(op: string, ...ts: (Tensor | null | undefined)[]): void {
  let dev: string | undefined;
  for (const t of ts) {
    if (!t) continue;
    if (dev && t.device !== dev) throw new Error(`[${op}] tensors are on different devices (${dev} and ${t.device})`);
    dev = t.device;
  }
}

export function checkDTypeEq(op: string, a: Tensor, b: Tensor, what = 'inputs'): void {
  if (a.dtype !== b.dtype) throw new Error(`[${op}] ${what} have different dtypes (${a.dtype} vs ${b.dtype})`);
}

/**
 * Refuse to write into `t` when two of its elements share a memory location (a stride-0 dim of size
 * > 1 from expand/broadcast, or strides that overlap), as PyTorch does: the result would depend on
 * the order of the writes, and a stride-0 view of 2^40 elements would have the kernel loop for hours
 * over a few bytes. Cheap: dims sorted by stride, each stride must reach past the extent of the dims
 * below it. An empty tensor is never written, so it passes.
 */
export function checkWritable(t: Tensor, op: string): void {
  const dims: [number, number][] = [];
  for (let i = 0; i < t.ndim; i++) {
    const n = t.shape[i];
    if (n === 0) return;
    if (n === 1) continue;
    dims.push([Math.abs(t.strides[i]), n]);
  }
  dims.sort((a, b) => a[0] - b[0]);
  let extent = 1;
  for (const [s, n] of dims) {
    if (s < extent)
      throw new Error(
        `[${op}] unsupported operation: more than one element of the written-to tensor refers to a single memory location ` +
          `(shape [${t.shape.join(', ')}], strides [${t.strides.join(', ')}]); clone() the tensor before writing to it`,
      );
    extent += s * (n - 1);
  }
}
