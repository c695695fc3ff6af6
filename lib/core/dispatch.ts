// dispatch.ts — how tensors reach the addon: running a named kernel on tensor views, and moving
// raw bytes into or between storages (uploads from host buffers, copies across devices).
//
// Together with memory.ts (alloc/free) and tensor.ts (readback) this is the engine's whole use of
// lib/native.ts; the op layer (lib/ops), optimisers and model loaders call these functions instead.
import { native, KernelArg } from '../native';
import { Tensor } from './tensor';
import { ITEMSIZE } from './dtype';
import type { KernelName } from './kernels';

/** A kernel argument as the ops write it: tensors, numbers, flags, strings, int lists, or absent. */
export type Arg = Tensor | number | boolean | string | number[] | null | undefined;

/** Run a native kernel; tensors are passed as views (throws if any is disposed). */
export function kernel(name: KernelName, args: Arg[]): void {
  const wire: KernelArg[] = new Array(args.length);
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    wire[i] = a instanceof Tensor ? a.v(name) : a;
  }
  native.run(name, wire);
}

function checkDense(t: Tensor, op: string, what: string): void {
  t.assertAlive(op);
  if (!t.isContiguous()) throw new Error(`[${op}] ${what} must be contiguous`);
}

/**
 * Fill contiguous `t` from host bytes already encoded in t's dtype (e.g. a safetensors payload, or
 * values encoded by fromValues). `data` may hold fewer bytes than t (the rest is left as is).
 */
export function writeBytes(t: Tensor, data: ArrayBufferView): void {
  checkDense(t, 'writeBytes', 'tensor');
  const nbytes = t.numel * ITEMSIZE[t.dtype];
  if (data.byteLength > nbytes) throw new Error(`[writeBytes] ${data.byteLength} bytes do not fit a tensor of ${nbytes} bytes`);
  if (data.byteLength) native.write(t.storage.handle, t.offset * ITEMSIZE[t.dtype], data);
}

/** Copy the bytes of contiguous `src` into contiguous `dst` (same dtype and size; any devices). */
export function copyBytes(dst: Tensor, src: Tensor): void {
  checkDense(dst, 'copyBytes', 'destination');
  checkDense(src, 'copyBytes', 'source');
  if (dst.dtype !== src.dtype || dst.numel !== src.numel)
    throw new Error(`[copyBytes] ${src.dtype} [${src.shape}] cannot be copied into ${dst.dtype} [${dst.shape}] byte for byte`);
  const item = ITEMSIZE[dst.dtype];
  native.copyBytes(dst.storage.handle, dst.offset * item, src.storage.handle, src.offset * item, dst.numel * item);
}
