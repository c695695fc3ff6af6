// elementwise.ts — unary and binary maps with PyTorch broadcasting and type promotion, where,
// maskedFill, and the in-place add used for gradient accumulation.
//
// Broadcasting is decided here: both operands become stride-0 views of the output shape before
// the kernel sees them. Scalars become 0-d tensors of the result dtype. Integer inputs to ops that
// only make sense on floats (exp, div, ...) are promoted to float32 first, as PyTorch does.
// Each op runs in its own scope (scopedOp): casts, scalar tensors and broadcast views it makes are
// freed when it returns.
import { Tensor, TensorOrScalar } from '../core/tensor';
import { DType, isFloat, promoteTypes, promoteWithScalar } from '../core/dtype';
import { scopedOp } from '../core/memory';
import { record } from '../core/autograd';
import { kernel } from '../core/dispatch';
import { broadcastShapes, broadcastView, checkTensor, checkSameDevice, checkWritable } from './util';
import { to, sumToShape } from './view';
import { fromValues } from './creation';

type UnaryName =
  | 'neg'
  | 'exp'
  | 'log'
  | 'sqrt'
  | 'rsqrt'
  | 'abs'
  | 'sin'
  | 'cos'
  | 'tanh'
  | 'sigmoid'
  | 'relu'
  | 'gelu'
  | 'gelu_tanh'
  | 'quick_gelu'
  | 'silu'
  | 'pow'
  | 'square'
  | 'reciprocal'
  | 'sign'
  | 'erf'
  | 'log1p'
  | 'expm1';
const INT_OK = new Set<UnaryName>(['neg', 'abs', 'sign', 'square']);

const unary = scopedOp(function unary(op: UnaryName, x: Tensor, p?: number): Tensor {
  checkTensor(x, op);
  const src = !isFloat(x.dtype) && !INT_OK.has(op) ? to(x, 'float32') : x;
  const out = Tensor.empty(src.shape, src.dtype, src.device);
  kernel('unary', [out, src, op, p ?? null]);
  if (src !== x) return out; // integer inputs are not differentiable
  if (op === 'sign') return out;
  return record(
    op,
    out,
    [x],
    (g, [xs]) => {
      const dx = Tensor.empty(xs.shape, xs.dtype, xs.device);
      kernel('unary_bwd', [dx, xs, g, op, p ?? null]);
      return [dx];
    },
    [x],
  );
});

export const neg = (x: Tensor): Tensor => unary('neg', x);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unary('rsqrt', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);
export const sin = (x: Tensor): Tensor => unary('sin', x);
export const cos = (x: Tensor): Tensor => unary('cos', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
/** GELU, exact erf form by default, or the tanh approximation. */
export const gelu = (x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor => unary(approximate === 'tanh' ? 'gelu_tanh' : 'gelu', x);
/** CLIP's x * sigmoid(1.702 x). */
export const quickGelu = (x: Tensor): Tensor => unary('quick_gelu', x);
export const silu = (x: Tensor): Tensor => unary('silu', x);
export const square = (x: Tensor): Tensor => unary('square', x);
export const reciprocal = (x: Tensor): Tensor => unary('reciprocal', x);
export const sign = (x: Tensor): Tensor => unary('sign', x);
export const erf = (x: Tensor): Tensor => unary('erf', x);

/**
 * SwiGLU, the gate of LLaMA's MLP: silu(gate) * up in one pass (bf16 in and out, f32 maths), with a
 * one-pass backward that reads gate, up and dy once and writes both gradients. gate and up must have
 * one shape and one float dtype (no broadcasting); either may be a strided view.
 */
export const swiglu = scopedOp(function swiglu(gate: Tensor, up: Tensor): Tensor {
  checkTensor(gate, 'swiglu', 'gate');
  checkTensor(up, 'swiglu', 'up');
  checkSameDevice('swiglu', gate, up);
  if (!isFloat(gate.dtype)) throw new Error(`[swiglu] gate must be a float tensor, got ${gate.dtype}`);
  if (up.dtype !== gate.dtype) throw new Error(`[swiglu] gate and up dtypes differ (${gate.dtype} vs ${up.dtype})`);
  if (gate.shape.length !== up.shape.length || gate.shape.some((d, i) => d !== up.shape[i]))
    throw new Error(`[swiglu] gate and up shapes differ ([${gate.shape}] vs [${up.shape}])`);
  const out = Tensor.empty(gate.shape, gate.dtype, gate.device);
  if (out.numel > 0) kernel('swiglu', [out, gate, up]);
  return record(
    'swiglu',
    out,
    [gate, up],
    (g, [gs, us]) => {
      const dgate = Tensor.empty(gs.shape, gs.dtype, gs.device);
      const dup = Tensor.empty(us.shape, us.dtype, us.device);
      if (dgate.numel > 0) kernel('swiglu_bwd', [dgate, dup, gs, us, g.dtype === gs.dtype ? g : to(g, gs.dtype)]);
      return [dgate, dup];
    },
    [gate, up],
  );
});

type BinaryName = 'add' | 'sub' | 'mul' | 'div' | 'maximum' | 'minimum' | 'pow';
type CompareName = 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge' | 'logical_and' | 'logical_or';

function scalarTensor(v: number | boolean, dtype: DType, like: Tensor): Tensor {
  return fromValues([v], [], dtype, like.device);
}

/** Resolve operands to tensors of one dtype (promoted); the casts it makes belong to the caller's scope. */
function prepare(op: string, a: TensorOrScalar, b: TensorOrScalar, floatOnly: boolean): { x: Tensor; y: Tensor; dtype: DType } {
  if (!(a instanceof Tensor) && !(b instanceof Tensor)) throw new Error(`[${op}] at least one operand must be a Tensor`);
  for (const v of [a, b])
    if (!(v instanceof Tensor) && typeof v !== 'number' && typeof v !== 'boolean')
      throw new Error(`[${op}] operands must be Tensors or numbers, got ${v === null ? 'null' : typeof v}`);
  if (a instanceof Tensor) checkTensor(a, op);
  if (b instanceof Tensor) checkTensor(b, op);
  if (a instanceof Tensor && b instanceof Tensor) checkSameDevice(op, a, b);
  let dtype: DType =
    a instanceof Tensor && b instanceof Tensor
      ? a.ndim === 0 && b.ndim > 0 && isFloat(b.dtype) === isFloat(a.dtype)
        ? b.dtype
        : b.ndim === 0 && a.ndim > 0 && isFloat(a.dtype) === isFloat(b.dtype)
          ? a.dtype
          : promoteTypes(a.dtype, b.dtype)
      : a instanceof Tensor
        ? promoteWithScalar(a.dtype, b as number)
        : promoteWithScalar((b as Tensor).dtype, a as number);
  if (floatOnly && !isFloat(dtype)) dtype = 'float32';
  const like = (a instanceof Tensor ? a : b) as Tensor;
  const conv = (v: TensorOrScalar): Tensor => {
    if (!(v instanceof Tensor)) return scalarTensor(v, dtype, like);
    return v.dtype === dtype ? v : to(v, dtype);
  };
  return { x: conv(a), y: conv(b), dtype };
}

const binary = scopedOp(function binary(op: BinaryName, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const { x, y, dtype } = prepare(op, a, b, op === 'div' || op === 'pow');
  const shape = broadcastShapes(x.shape, y.shape, op);
  const out = Tensor.empty(shape, dtype, x.device);
  kernel('binary', [out, broadcastView(x, shape, op), broadcastView(y, shape, op), op]);
  // Gradients flow to the converted operands, whose own graphs (the cast) lead to a and b.
  const xs = x.shape.slice();
  const ys = y.shape.slice();
  return record(
    op,
    out,
    [x, y],
    (g, saved) => binaryVjp(op, g, saved, xs, ys),
    op === 'add' || op === 'sub' ? [] : [x, y, ...(op === 'pow' ? [out] : [])],
  );
});

function binaryVjp(op: BinaryName, g: Tensor, saved: Tensor[], xs: number[], ys: number[]): (Tensor | null)[] {
  const [x, y] = saved;
  switch (op) {
    case 'add':
      return [sumToShape(g, xs), sumToShape(g, ys)];
    case 'sub':
      return [sumToShape(g, xs), sumToShape(neg(g), ys)];
    case 'mul':
      return [sumToShape(mul(g, y), xs), sumToShape(mul(g, x), ys)];
    case 'div': {
      const gx = div(g, y);
      return [sumToShape(gx, xs), sumToShape(neg(div(mul(gx, x), y)), ys)];
    }
    case 'maximum':
    case 'minimum': {
      // The gradient goes to the selected operand; ties split it evenly (as PyTorch).
      const pick = op === 'maximum' ? gt(x, y) : lt(x, y);
      const gTie = where(eq(x, y), mul(g, 0.5), scalarTensor(0, g.dtype, g));
      const gx0 = where(pick, g, gTie);
      const pickY = op === 'maximum' ? lt(x, y) : gt(x, y);
      const gy0 = where(pickY, g, gTie);
      return [sumToShape(gx0, xs), sumToShape(gy0, ys)];
    }
    case 'pow': {
      const out = saved[2];
      // d/dx x^y = y x^(y-1); d/dy x^y = x^y log x
      const gx = mul(g, mul(pow(x, sub(y, 1)), y));
      const gy = mul(g, mul(out, log(x)));
      return [sumToShape(gx, xs), sumToShape(gy, ys)];
    }
  }
}

export const add = scopedOp(function add(a: TensorOrScalar, b: TensorOrScalar, alpha?: number): Tensor {
  return binary('add', a, alpha !== undefined && alpha !== 1 ? mul(b, alpha) : b);
});
export const sub = scopedOp(function sub(a: TensorOrScalar, b: TensorOrScalar, alpha?: number): Tensor {
  return binary('sub', a, alpha !== undefined && alpha !== 1 ? mul(b, alpha) : b);
});
export const mul = (a: TensorOrScalar, b: TensorOrScalar): Tensor => binary('mul', a, b);
export const div = (a: TensorOrScalar, b: TensorOrScalar): Tensor => binary('div', a, b);
export const maximum = (a: TensorOrScalar, b: TensorOrScalar): Tensor => binary('maximum', a, b);
export const minimum = (a: TensorOrScalar, b: TensorOrScalar): Tensor => binary('minimum', a, b);
/** x ** e; a number exponent uses the unary kernel (exact for small integers). */
export function pow(x: TensorOrScalar, e: TensorOrScalar): Tensor {
  if (x instanceof Tensor && typeof e === 'number') {
    if (e === 2) return square(x);
    return unary('pow', x, e);
  }
  return binary('pow', x, e);
}

const compare = scopedOp(function compare(op: CompareName, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const { x, y } = prepare(op, a, b, false);
  const shape = broadcastShapes(x.shape, y.shape, op);
  const out = Tensor.empty(shape, 'bool', x.device);
  kernel('binary', [out, broadcastView(x, shape, op), broadcastView(y, shape, op), op]);
  return out;
});
export const eq = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('eq', a, b);
export const ne = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('ne', a, b);
export const lt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('lt', a, b);
export const le = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('le', a, b);
export const gt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('gt', a, b);
export const ge = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('ge', a, b);
export const logicalAnd = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('logical_and', a, b);
export const logicalOr = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('logical_or', a, b);

/** cond ? a : b with broadcasting; cond must be bool. */
export const where = scopedOp(function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  checkTensor(cond, 'where', 'condition');
  if (cond.dtype !== 'bool') throw new Error(`[where] condition must be bool, got ${cond.dtype}`);
  if (!(a instanceof Tensor) && !(b instanceof Tensor) && ['number', 'boolean'].includes(typeof a) && ['number', 'boolean'].includes(typeof b)) {
    // where(cond, 1, 0) as torch: two scalars give int64 (integers), bool (booleans) or float32.
    const dt: DType = typeof a === 'boolean' && typeof b === 'boolean' ? 'bool' : Number.isInteger(a) && Number.isInteger(b) ? 'int64' : 'float32';
    return where(cond, scalarTensor(a, dt, cond), b);
  }
  const { x, y, dtype } = prepare('where', a, b, false);
  checkSameDevice('where', cond, x);
  const shape = broadcastShapes(broadcastShapes(x.shape, y.shape, 'where'), cond.shape, 'where');
  const out = Tensor.empty(shape, dtype, x.device);
  kernel('where', [out, broadcastView(cond, shape, 'where'), broadcastView(x, shape, 'where'), broadcastView(y, shape, 'where')]);
  const xs = x.shape.slice();
  const ys = y.shape.slice();
  return record(
    'where',
    out,
    [x, y],
    (g, [c]) => {
      const zero = scalarTensor(0, g.dtype, g);
      return [sumToShape(where(c, g, zero), xs), sumToShape(where(c, zero, g), ys)];
    },
    [cond],
  );
});

/** x with `value` where mask is true (mask broadcasts to x). */
export const maskedFill = scopedOp(function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  checkTensor(x, 'maskedFill');
  checkTensor(mask, 'maskedFill', 'mask');
  if (mask.dtype !== 'bool') throw new Error(`[maskedFill] mask must be bool, got ${mask.dtype}`);
  return where(mask, scalarTensor(value, x.dtype, x), x);
});

export const clamp = scopedOp(function clamp(x: Tensor, min?: number, max?: number): Tensor {
  let r = x;
  if (min !== undefined) r = maximum(r, min);
  if (max !== undefined) r = minimum(r, max);
  return r === x ? x.clone() : r;
});

/** dst += src in place, no autograd (gradient accumulation, optimizer state). */
export const addInPlace = scopedOp(function addInPlace(dst: Tensor, src: Tensor): void {
  checkTensor(dst, 'addInPlace');
  checkTensor(src, 'addInPlace');
  if (dst.dtype !== src.dtype) throw new Error(`[addInPlace] dtypes differ (${dst.dtype} vs ${src.dtype})`);
  checkSameDevice('addInPlace', dst, src);
  checkWritable(dst, 'addInPlace');
  const s = broadcastView(src, dst.shape, 'addInPlace');
  if (dst.numel === 0) return;
  kernel('binary', [dst, dst, s, 'add']);
});

/** dst = src in place (shapes broadcast, dtype cast), no autograd. */
export const copyInto = scopedOp(function copyInto(dst: Tensor, src: Tensor): void {
  checkTensor(dst, 'copyInto', 'destination');
  checkTensor(src, 'copyInto', 'source');
  checkWritable(dst, 'copyInto');
  const s = broadcastView(src, dst.shape, 'copyInto');
  if (dst.numel === 0) return;
  kernel('copy', [dst, s]);
});
