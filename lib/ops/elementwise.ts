// elementwise.ts — unary and binary maps with PyTorch broadcasting and type promotion, where,
// maskedFill, and the in-place add used for gradient accumulation.
//
// Broadcasting is decided here: both operands become stride-0 views of the output shape before
// the kernel sees them. Scalars become 0-d tensors of the result dtype. Integer inputs to ops that
// only make sense on floats (exp, div, ...) are promoted to float32 first, as PyTorch does.
import { Tensor, TensorOrScalar } from '../core/tensor';
import { DType, isFloat, promoteTypes, promoteWithScalar } from '../core/dtype';
import { kernel, record, broadcastShapes, broadcastView, checkTensor, checkSameDevice } from './util';
import { to, sumToShape } from './view';
import { fromValues } from './creation';

type UnaryName =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'abs' | 'sin' | 'cos' | 'tanh' | 'sigmoid' | 'relu'
  | 'gelu' | 'gelu_tanh' | 'quick_gelu' | 'silu' | 'pow' | 'square' | 'reciprocal' | 'sign' | 'erf' | 'log1p' | 'expm1';
const INT_OK = new Set<UnaryName>(['neg', 'abs', 'sign', 'square']);

function unary(op: UnaryName, x: Tensor, p?: number): Tensor {
  checkTensor(x, op);
  let src = x;
  if (!isFloat(x.dtype) && !INT_OK.has(op)) src = to(x, 'float32');
  const out = Tensor.empty(src.shape, src.dtype, src.device);
  kernel('unary', [out, src, op, p ?? null]);
  if (src !== x) {
    src.dispose();
    return out; // integer inputs are not differentiable
  }
  if (op === 'sign') return out;
  return record(op, out, [x], (g, [xs]) => {
    const dx = Tensor.empty(xs.shape, xs.dtype, xs.device);
    kernel('unary_bwd', [dx, xs, g, op, p ?? null]);
    return [dx];
  }, [x]);
}

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

type BinaryName = 'add' | 'sub' | 'mul' | 'div' | 'maximum' | 'minimum' | 'pow';
type CompareName = 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge' | 'logical_and' | 'logical_or';

function scalarTensor(v: number | boolean, dtype: DType, like: Tensor): Tensor {
  return fromValues([v], [], dtype, like.device);
}

/** Resolve operands to tensors of one dtype (promoted) and the broadcast shape. */
function prepare(op: string, a: TensorOrScalar, b: TensorOrScalar, floatOnly: boolean): { x: Tensor; y: Tensor; temps: Tensor[]; dtype: DType } {
  if (!(a instanceof Tensor) && !(b instanceof Tensor)) throw new Error(`[${op}] at least one operand must be a Tensor`);
  for (const v of [a, b])
    if (!(v instanceof Tensor) && typeof v !== 'number' && typeof v !== 'boolean') throw new Error(`[${op}] operands must be Tensors or numbers, got ${v === null ? 'null' : typeof v}`);
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
  const temps: Tensor[] = [];
  const conv = (v: TensorOrScalar): Tensor => {
    if (!(v instanceof Tensor)) {
      const t = scalarTensor(v, dtype, like);
      temps.push(t);
      return t;
    }
    if (v.dtype === dtype) return v;
    const t = to(v, dtype);
    temps.push(t);
    return t;
  };
  return { x: conv(a), y: conv(b), temps, dtype };
}

function binary(op: BinaryName, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const { x, y, temps, dtype } = prepare(op, a, b, op === 'div' || op === 'pow');
  try {
    const shape = broadcastShapes(x.shape, y.shape, op);
    const out = Tensor.empty(shape, dtype, x.device);
    const xv = broadcastView(x, shape, op);
    const yv = broadcastView(y, shape, op);
    try {
      kernel('binary', [out, xv, yv, op]);
    } finally {
      xv.dispose();
      yv.dispose();
    }
    // Gradients flow to the converted operands, whose own graphs (the cast) lead to a and b.
    return record(op, out, [x, y], (g, saved) => binaryVjp(op, g, saved, x.shape, y.shape), op === 'add' || op === 'sub' ? [] : [x, y, ...(op === 'pow' ? [out] : [])]);
  } finally {
    temps.forEach((t) => t.dispose());
  }
}

function binaryVjp(op: BinaryName, g: Tensor, saved: Tensor[], xs: number[], ys: number[]): (Tensor | null)[] {
  const [x, y] = saved;
  const red = (t: Tensor, shape: number[]): Tensor => {
    const r = sumToShape(t, shape);
    if (r !== t) t.dispose();
    return r;
  };
  switch (op) {
    case 'add':
      return [red(g.ref(), xs), red(g.ref(), ys)];
    case 'sub':
      return [red(g.ref(), xs), red(neg(g), ys)];
    case 'mul':
      return [red(mul(g, y), xs), red(mul(g, x), ys)];
    case 'div': {
      const gx = div(g, y);
      const t = mul(gx, x);
      const gy = div(t, y);
      t.dispose();
      const ngy = neg(gy);
      gy.dispose();
      return [red(gx, xs), red(ngy, ys)];
    }
    case 'maximum':
    case 'minimum': {
      // The gradient goes to the selected operand; ties split it evenly (as PyTorch).
      const pick = op === 'maximum' ? gt(x, y) : lt(x, y);
      const tie = eq(x, y);
      const half = mul(g, 0.5);
      const zero = scalarTensor(0, g.dtype, g);
      const gTie = where(tie, half, zero);
      const gx0 = where(pick, g, gTie);
      const pickY = op === 'maximum' ? lt(x, y) : gt(x, y);
      const gy0 = where(pickY, g, gTie);
      [pick, tie, half, zero, gTie, pickY].forEach((t) => t.dispose());
      return [red(gx0, xs), red(gy0, ys)];
    }
    case 'pow': {
      const out = saved[2];
      // d/dx x^y = y x^(y-1); d/dy x^y = x^y log x
      const ym1 = sub(y, 1);
      const xp = pow(x, ym1);
      const t = mul(xp, y);
      const gx = mul(g, t);
      const lx = log(x);
      const t2 = mul(out, lx);
      const gy = mul(g, t2);
      [ym1, xp, t, lx, t2].forEach((v) => v.dispose());
      return [red(gx, xs), red(gy, ys)];
    }
  }
}

export function add(a: TensorOrScalar, b: TensorOrScalar, alpha?: number): Tensor {
  if (alpha !== undefined && alpha !== 1) {
    const s = mul(b, alpha);
    try {
      return binary('add', a, s);
    } finally {
      s.dispose();
    }
  }
  return binary('add', a, b);
}
export function sub(a: TensorOrScalar, b: TensorOrScalar, alpha?: number): Tensor {
  if (alpha !== undefined && alpha !== 1) {
    const s = mul(b, alpha);
    try {
      return binary('sub', a, s);
    } finally {
      s.dispose();
    }
  }
  return binary('sub', a, b);
}
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

function compare(op: CompareName, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const { x, y, temps } = prepare(op, a, b, false);
  try {
    const shape = broadcastShapes(x.shape, y.shape, op);
    const out = Tensor.empty(shape, 'bool', x.device);
    const xv = broadcastView(x, shape, op);
    const yv = broadcastView(y, shape, op);
    try {
      kernel('binary', [out, xv, yv, op]);
    } finally {
      xv.dispose();
      yv.dispose();
    }
    return out;
  } finally {
    temps.forEach((t) => t.dispose());
  }
}
export const eq = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('eq', a, b);
export const ne = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('ne', a, b);
export const lt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('lt', a, b);
export const le = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('le', a, b);
export const gt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('gt', a, b);
export const ge = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('ge', a, b);
export const logicalAnd = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('logical_and', a, b);
export const logicalOr = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('logical_or', a, b);

/** cond ? a : b with broadcasting; cond must be bool. */
export function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  checkTensor(cond, 'where', 'condition');
  if (cond.dtype !== 'bool') throw new Error(`[where] condition must be bool, got ${cond.dtype}`);
  if (!(a instanceof Tensor) && !(b instanceof Tensor) && ['number', 'boolean'].includes(typeof a) && ['number', 'boolean'].includes(typeof b)) {
    // where(cond, 1, 0) as torch: two scalars give int64 (integers), bool (booleans) or float32.
    const dt: DType = typeof a === 'boolean' && typeof b === 'boolean' ? 'bool' : Number.isInteger(a) && Number.isInteger(b) ? 'int64' : 'float32';
    const ta = scalarTensor(a, dt, cond);
    try {
      return where(cond, ta, b);
    } finally {
      ta.dispose();
    }
  }
  const { x, y, temps, dtype } = prepare('where', a, b, false);
  try {
    checkSameDevice('where', cond, x);
    const shape = broadcastShapes(broadcastShapes(x.shape, y.shape, 'where'), cond.shape, 'where');
    const out = Tensor.empty(shape, dtype, x.device);
    const views = [broadcastView(cond, shape, 'where'), broadcastView(x, shape, 'where'), broadcastView(y, shape, 'where')];
    try {
      kernel('where', [out, ...views]);
    } finally {
      views.forEach((v) => v.dispose());
    }
    const xs = x.shape.slice();
    const ys = y.shape.slice();
    return record('where', out, [x, y], (g, [c]) => {
      const zero = scalarTensor(0, g.dtype, g);
      const gx = where(c, g, zero);
      const gy = where(c, zero, g);
      zero.dispose();
      const rx = sumToShape(gx, xs);
      const ry = sumToShape(gy, ys);
      if (rx !== gx) gx.dispose();
      if (ry !== gy) gy.dispose();
      return [rx, ry];
    }, [cond]);
  } finally {
    temps.forEach((t) => t.dispose());
  }
}

/** x with `value` where mask is true (mask broadcasts to x). */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  checkTensor(x, 'maskedFill');
  checkTensor(mask, 'maskedFill', 'mask');
  if (mask.dtype !== 'bool') throw new Error(`[maskedFill] mask must be bool, got ${mask.dtype}`);
  const v = scalarTensor(value, x.dtype, x);
  try {
    return where(mask, v, x);
  } finally {
    v.dispose();
  }
}

export function clamp(x: Tensor, min?: number, max?: number): Tensor {
  let r = x;
  if (min !== undefined) r = maximum(r, min);
  if (max !== undefined) {
    const r2 = minimum(r, max);
    if (r !== x) r.dispose();
    r = r2;
  }
  return r === x ? x.clone() : r;
}

/** dst += src in place, no autograd (gradient accumulation, optimizer state). */
export function addInPlace(dst: Tensor, src: Tensor): void {
  checkTensor(dst, 'addInPlace');
  checkTensor(src, 'addInPlace');
  if (dst.dtype !== src.dtype) throw new Error(`[addInPlace] dtypes differ (${dst.dtype} vs ${src.dtype})`);
  const sv = broadcastView(src, dst.shape, 'addInPlace');
  try {
    kernel('binary', [dst, dst, sv, 'add']);
  } finally {
    sv.dispose();
  }
}

/** dst = src in place (shapes broadcast, dtype cast), no autograd. */
export function copyInto(dst: Tensor, src: Tensor): void {
  const sv = broadcastView(src, dst.shape, 'copyInto');
  try {
    kernel('copy', [dst, sv]);
  } finally {
    sv.dispose();
  }
}
