// dtype.ts — dtype and device names, codes shared with the addon, sizes, and PyTorch's type
// promotion (bool < integers < floating; f16 with bf16 meets at f32).
import { native } from '../native';

export type DType = 'float32' | 'float64' | 'bfloat16' | 'float16' | 'int32' | 'int64' | 'uint8' | 'bool';
export type Device = 'cpu' | 'cuda';

export const DTYPE_CODE: Record<DType, number> = {
  float32: 0,
  float64: 1,
  bfloat16: 2,
  float16: 3,
  int32: 4,
  int64: 5,
  uint8: 6,
  bool: 7,
};
export const DEVICE_CODE: Record<Device, number> = { cpu: 0, cuda: 1 };

export const ITEMSIZE: Record<DType, number> = {
  float32: 4,
  float64: 8,
  bfloat16: 2,
  float16: 2,
  int32: 4,
  int64: 8,
  uint8: 1,
  bool: 1,
};

export function isFloat(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'bfloat16' || d === 'float16';
}
export function isInt(d: DType): boolean {
  return d === 'int32' || d === 'int64' || d === 'uint8';
}

export function checkDType(d: unknown, op = 'tensor'): DType {
  if (typeof d === 'string' && d in DTYPE_CODE) return d as DType;
  throw new Error(`[${op}] unknown dtype ${JSON.stringify(d)} (expected one of ${Object.keys(DTYPE_CODE).join(', ')})`);
}
export function checkDevice(d: unknown, op = 'tensor'): Device {
  if (d === 'cpu') return d;
  if (d === 'cuda' || d === 'cuda:0') {
    // Say so under the caller's op name rather than letting the allocator fail later.
    const info = native.deviceInfo(DEVICE_CODE.cuda);
    if (!info.available) throw new Error(`[${op}] device 'cuda' is not available: ${info.description}`);
    return 'cuda';
  }
  throw new Error(`[${op}] unknown device ${JSON.stringify(d)} (expected 'cpu' or 'cuda')`);
}

const RANK: Record<DType, number> = { bool: 0, uint8: 1, int32: 2, int64: 3, float16: 4, bfloat16: 4, float32: 5, float64: 6 };

/** Result dtype of a binary op on two tensors (torch.result_type for same-category rules). */
export function promoteTypes(a: DType, b: DType): DType {
  if (a === b) return a;
  if ((a === 'float16' && b === 'bfloat16') || (a === 'bfloat16' && b === 'float16')) return 'float32';
  return RANK[a] >= RANK[b] ? a : b;
}

/** Dtype of `tensor op scalar`: a float scalar lifts a non-float tensor to float32, else the tensor wins. */
export function promoteWithScalar(t: DType, scalar: number | boolean): DType {
  if (typeof scalar === 'number' && !Number.isInteger(scalar) && !isFloat(t)) return 'float32';
  return t;
}

/** The typed array a dtype reads back as (bf16/f16 read back as Float32Array). */
export type TypedArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
