// creation.ts — making tensors: from JS data, constant fills, ranges, and seeded random numbers.
//
// Random numbers come from a counter-based generator (Philox-4x32-10 in the kernels): a Generator is
// a seed plus a running offset, so the same seed gives the same numbers on every device and a stream
// can be replayed by restoring (seed, offset).
import { Tensor, Shape, NestedArray, checkShape, checkSize, numelOf } from '../core/tensor';
import { Device, DType, checkDevice, checkDType } from '../core/dtype';
import { scopedOp } from '../core/memory';
import { checkOptions, optionKeys, OptionKeys } from '../options';
import { kernel, writeBytes } from '../core/dispatch';
import { isAvailable } from '../cuda';
import { f32ToBf16, f32ToF16 } from '../io/half';

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}
export interface FromDataOptions extends TensorOptions {
  /** Reshape flat data to this shape. */
  shape?: Shape;
}
const TENSOR_KEYS = optionKeys<TensorOptions>({ dtype: true, device: true, requiresGrad: true });
const FROM_DATA_KEYS = optionKeys<FromDataOptions>({ ...TENSOR_KEYS, shape: true });

function finish(t: Tensor, opts: TensorOptions): Tensor {
  if (opts.requiresGrad) t.setRequiresGrad(true);
  return t;
}

const MAX_DIMS = 8;

/** Lengths along the first element at each level; stops one level past MAX_DIMS (the caller refuses that). */
function inferShape(data: NestedArray): Shape {
  const shape: Shape = [];
  let cur: NestedArray = data;
  while (Array.isArray(cur) && shape.length <= MAX_DIMS) {
    shape.push(cur.length);
    cur = cur[0];
    if (cur === undefined) break;
  }
  return shape;
}

function flatten(data: NestedArray, shape: Shape, op: string): (number | boolean)[] {
  const out: (number | boolean)[] = [];
  const walk = (x: NestedArray, d: number): void => {
    if (d === shape.length) {
      if (Array.isArray(x)) throw new Error(`[${op}] ragged nested array (too deep at dim ${d})`);
      if (typeof x !== 'number' && typeof x !== 'boolean') throw new Error(`[${op}] elements must be numbers or booleans, got ${typeof x}`);
      out.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[d]) throw new Error(`[${op}] ragged nested array at dim ${d} (expected length ${shape[d]})`);
    for (const e of x) walk(e, d + 1);
  };
  walk(data, 0);
  return out;
}

type AnyTyped = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array | Int8Array | Int16Array | Uint32Array;

/** Whether every value is a JS number (a typed array other than the BigInt ones, or an array of numbers). */
function allNumbers(values: ArrayLike<number | boolean | bigint>): values is ArrayLike<number> {
  if (ArrayBuffer.isView(values)) return !(values instanceof BigInt64Array || values instanceof BigUint64Array);
  return Array.isArray(values) && values.every((v) => typeof v === 'number');
}

function encode(values: ArrayLike<number | boolean | bigint>, dtype: DType): ArrayBufferView {
  const n = values.length;
  const num = (i: number): number => Number(values[i]);
  // Numbers go through the typed-array constructors (one native loop; the same rounding as Number()
  // stored element by element); booleans and bigints through Number() one at a time.
  const f32 = (): Float32Array => (allNumbers(values) ? new Float32Array(values) : Float32Array.from({ length: n }, (_, i) => num(i)));
  const f64 = (): Float64Array => (allNumbers(values) ? new Float64Array(values) : Float64Array.from({ length: n }, (_, i) => num(i)));
  switch (dtype) {
    case 'float32':
      return f32();
    case 'float64':
      return f64();
    case 'bfloat16':
      return f32ToBf16(f32());
    case 'float16':
      return f32ToF16(f32());
    case 'int32':
      return Int32Array.from({ length: n }, (_, i) => Math.trunc(num(i)));
    case 'int64':
      return BigInt64Array.from({ length: n }, (_, i) => {
        const v = values[i];
        return typeof v === 'bigint' ? v : BigInt(Math.trunc(Number(v)));
      });
    case 'uint8':
      return Uint8Array.from({ length: n }, (_, i) => num(i) & 255);
    case 'bool':
      return Uint8Array.from({ length: n }, (_, i) => (num(i) ? 1 : 0));
  }
}

let defaultDevice: Device = 'cpu';

/**
 * The device that factories (tensor, zeros, full, arange, rand, ...) use when their options name none,
 * like torch.set_default_device; 'cpu' unless changed. Returns the previous default. Ops on existing
 * tensors always stay on their operands' device.
 */
export function setDefaultDevice(d: Device | 'cuda:0'): Device {
  const prev = defaultDevice;
  defaultDevice = checkDevice(d, 'setDefaultDevice');
  return prev;
}
export function getDefaultDevice(): Device {
  return defaultDevice;
}

/** Upload host values into a new tensor of the given shape/dtype/device. */
export const fromValues = scopedOp(function fromValues(
  values: ArrayLike<number | boolean | bigint>,
  shape: Shape,
  dtype: DType,
  device: Device,
): Tensor {
  const t = Tensor.empty(shape, dtype, device);
  if (values.length) writeBytes(t, encode(values, dtype));
  return t;
});

function typedDType(a: AnyTyped): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Uint8Array) return 'uint8';
  return 'float32';
}

/**
 * A tensor from nested arrays, a flat typed array, or a number. Dtype is inferred as PyTorch does
 * (floats → float32, integers → int64, booleans → bool; typed arrays keep their type) unless given.
 */
export const tensor = scopedOp(function tensor(data: NestedArray | AnyTyped, opts: FromDataOptions = {}): Tensor {
  const op = 'tensor';
  checkOptions(op, opts, FROM_DATA_KEYS);
  const device = checkDevice(opts.device ?? defaultDevice, op);
  let values: ArrayLike<number | boolean | bigint>;
  let shape: Shape;
  let inferred: DType;
  if (ArrayBuffer.isView(data)) {
    values = data as AnyTyped;
    shape = [values.length];
    inferred = typedDType(data as AnyTyped);
  } else if (typeof data === 'number' || typeof data === 'boolean') {
    values = [data];
    shape = [];
    inferred = typeof data === 'boolean' ? 'bool' : Number.isInteger(data) ? 'int64' : 'float32';
  } else if (Array.isArray(data)) {
    shape = inferShape(data);
    // Checked before flattening, which recurses once per level (10,000-deep arrays would overflow the stack).
    if (shape.length > MAX_DIMS)
      throw new Error(`[${op}] nested arrays are more than ${MAX_DIMS} levels deep; at most ${MAX_DIMS} dims are supported`);
    const flat = flatten(data, shape, op);
    values = flat;
    inferred =
      flat.length && flat.every((x) => typeof x === 'boolean')
        ? 'bool'
        : flat.length && flat.every((x) => typeof x === 'number' && Number.isInteger(x))
          ? 'int64'
          : 'float32';
  } else {
    throw new Error(`[${op}] data must be a number, a nested array or a typed array`);
  }
  if (opts.shape) {
    const s = checkShape(opts.shape, op);
    if (numelOf(s) !== values.length) throw new Error(`[${op}] shape [${s.join(', ')}] needs ${numelOf(s)} elements, data has ${values.length}`);
    shape = s.slice();
  }
  const dtype = opts.dtype ? checkDType(opts.dtype, op) : inferred;
  return finish(fromValues(values, shape, dtype, device), opts);
});

/** A tensor over a typed array's values with an explicit shape. */
export function fromTypedArray(data: AnyTyped, shape: Shape, opts: TensorOptions = {}): Tensor {
  if (!ArrayBuffer.isView(data)) throw new Error('[fromTypedArray] data must be a typed array');
  return tensor(data, { ...opts, shape });
}

function resolve(
  shape: Shape,
  opts: TensorOptions,
  op: string,
  keys: OptionKeys<TensorOptions> = TENSOR_KEYS,
): { shape: Shape; dtype: DType; device: Device } {
  checkOptions(op, opts, keys);
  const r = {
    shape: checkShape(shape, op).slice(),
    dtype: checkDType(opts.dtype ?? 'float32', op),
    device: checkDevice(opts.device ?? defaultDevice, op),
  };
  checkSize(r.shape, r.dtype, op);
  return r;
}

export const empty = scopedOp(function empty(shape: Shape, opts: TensorOptions = {}): Tensor {
  const r = resolve(shape, opts, 'empty');
  return finish(Tensor.empty(r.shape, r.dtype, r.device), opts);
});

export const full = scopedOp(function full(shape: Shape, value: number | boolean, opts: TensorOptions = {}): Tensor {
  const r = resolve(shape, opts, 'full');
  if (typeof value !== 'number' && typeof value !== 'boolean') throw new Error('[full] value must be a number or boolean');
  const t = Tensor.empty(r.shape, r.dtype, r.device);
  kernel('fill', [t, Number(value)]);
  return finish(t, opts);
});
export const zeros = (shape: Shape, opts: TensorOptions = {}): Tensor => full(shape, 0, opts);
export const ones = (shape: Shape, opts: TensorOptions = {}): Tensor => full(shape, 1, opts);
export const zerosLike = (t: Tensor, opts: TensorOptions = {}): Tensor => full(t.shape, 0, { dtype: t.dtype, device: t.device, ...opts });
export const onesLike = (t: Tensor, opts: TensorOptions = {}): Tensor => full(t.shape, 1, { dtype: t.dtype, device: t.device, ...opts });
export const fullLike = (t: Tensor, v: number, opts: TensorOptions = {}): Tensor => full(t.shape, v, { dtype: t.dtype, device: t.device, ...opts });

/** arange(end) or arange(start, end, step); integer arguments give int64 as in PyTorch. */
export const arange = scopedOp(function arange(start: number, end?: number, step: number = 1, opts: TensorOptions = {}): Tensor {
  checkOptions('arange', opts, TENSOR_KEYS);
  if (end === undefined) {
    end = start;
    start = 0;
  }
  for (const v of [start, end, step])
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error('[arange] start, end and step must be finite numbers');
  if (step === 0) throw new Error('[arange] step must be non-zero');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const allInt = Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step);
  const r = resolve([n], { dtype: opts.dtype ?? (allInt ? 'int64' : 'float32'), device: opts.device }, 'arange');
  const t = Tensor.empty(r.shape, r.dtype, r.device);
  kernel('arange', [t, start, step]);
  return finish(t, opts);
});

/** A seeded stream of random numbers: (seed, offset) fully determines what comes next. */
export class Generator {
  constructor(
    public seed = 0,
    public offset = 0,
  ) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error('[Generator] seed must be a non-negative integer');
  }
  /** Reserve n counters and return the first. */
  take(n: number): number {
    const o = this.offset;
    this.offset += n;
    return o;
  }
  getState(): { seed: number; offset: number } {
    return { seed: this.seed, offset: this.offset };
  }
  setState(s: { seed: number; offset: number }): void {
    this.seed = s.seed;
    this.offset = s.offset;
  }
}
export const defaultGenerator = new Generator(0x5eed);
export function manualSeed(seed: number): void {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
    throw new Error(`[manualSeed] seed must be an integer in [0, 2^53 - 1], got ${String(seed)}`);
  defaultGenerator.setState({ seed, offset: 0 });
}

export interface RandomOptions extends TensorOptions {
  generator?: Generator;
}
const RANDOM_KEYS = optionKeys<RandomOptions>({ ...TENSOR_KEYS, generator: true });
const random = scopedOp(function random(kind: string, shape: Shape, opts: RandomOptions, name: string, p?: number): Tensor {
  const r = resolve(shape, opts, name, RANDOM_KEYS);
  if (kind !== 'bernoulli' && !['float32', 'float64', 'bfloat16', 'float16'].includes(r.dtype))
    throw new Error(`[${name}] dtype must be floating, got ${r.dtype}`);
  const g = opts.generator ?? defaultGenerator;
  const t = Tensor.empty(r.shape, r.dtype, r.device);
  kernel('random', [t, kind, g.seed, g.take(t.numel), p ?? null]);
  return finish(t, opts);
});
/** Uniform on [0, 1). */
export const rand = (shape: Shape, opts: RandomOptions = {}): Tensor => random('uniform', shape, opts, 'rand');
/** Standard normal. */
export const randn = (shape: Shape, opts: RandomOptions = {}): Tensor => random('normal', shape, opts, 'randn');
/** 1 with probability p, else 0. */
export function bernoulli(shape: Shape, p: number, opts: RandomOptions = {}): Tensor {
  if (!(p >= 0 && p <= 1)) throw new Error('[bernoulli] p must be in [0, 1]');
  return random('bernoulli', shape, opts, 'bernoulli', p);
}

export function cudaAvailable(): boolean {
  return isAvailable();
}
