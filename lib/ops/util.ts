// util.ts — what every op file shares: calling a kernel with tensors, recording a graph node,
// broadcasting rules, dim normalisation, and reducing a broadcast gradient back to its input shape.
import { native, KernelArg } from '../native';
import { Tensor, Shape, needsGrad } from '../core/tensor';
import { Node, VJP } from '../core/autograd';
import { DType, isFloat } from '../core/dtype';

export type Arg = Tensor | number | boolean | string | number[] | null | undefined;

/** Run a native kernel; tensors are passed as views (throws if any is disposed). */
export function kernel(name: string, args: Arg[]): void {
  const wire: KernelArg[] = args.map((a) => (a instanceof Tensor ? a.v(name) : a));
  native.run(name, wire);
}

/** Attach a graph node to `out` when any input requires grad; `saved` tensors are kept alive for vjp. */
export function record(name: string, out: Tensor, inputs: (Tensor | null | undefined)[], vjp: VJP, saved: Tensor[] = []): Tensor {
  if (!needsGrad(...inputs)) return out;
  const node = new Node(name, inputs.map((t) => t ?? null), saved.map((s) => s.ref()), vjp);
  node.refs++;
  out.gradFn = node;
  out.requiresGrad = true;
  return out;
}

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

export function out(shape: Shape, dtype: DType, like: Tensor): Tensor {
  return Tensor.empty(shape, dtype, like.device);
}

