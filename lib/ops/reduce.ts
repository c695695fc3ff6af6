// reduce.ts — sum, mean, max, min, argmax, argmin, var, logsumexp over any set of dims.
//
// The kernel reduces the middle extent of a contiguous [outer, R, inner] view. When the reduced
// dims form one contiguous run of a contiguous tensor that is used directly; otherwise the reduced
// dims are permuted to the end and made contiguous first (one copy).
import { Tensor, Shape, numelOf } from '../core/tensor';
import { isFloat } from '../core/dtype';
import { kernel, record, normDim, checkTensor } from './util';
import { contiguous, permute, reshape, expand, to } from './view';
import { mul, div, sub, exp, eq, where } from './elementwise';

type ROp = 'sum' | 'mean' | 'max' | 'min' | 'argmax' | 'argmin' | 'var' | 'logsumexp';

function normDims(x: Tensor, dim: number | number[] | undefined, op: string): number[] {
  // An empty list reduces every dim, as torch.sum(x, dim=[]) does.
  if (dim === undefined || dim === null || (Array.isArray(dim) && dim.length === 0)) return x.shape.map((_, i) => i);
  const ds = (Array.isArray(dim) ? dim : [dim]).map((d) => normDim(d, x.ndim, op));
  if (new Set(ds).size !== ds.length) throw new Error(`[${op}] repeated dim`);
  return ds.sort((a, b) => a - b);
}

function keptShape(shape: Shape, dims: number[], keepdim: boolean): Shape {
  const out: Shape = [];
  shape.forEach((d, i) => {
    if (dims.includes(i)) {
      if (keepdim) out.push(1);
    } else out.push(d);
  });
  return out;
}

function rawReduce(op: ROp, x: Tensor, dims: number[], keepdim: boolean, correction = 1): Tensor {
  const outShape = keptShape(x.shape, dims, keepdim);
  const outDtype = op === 'argmax' || op === 'argmin' ? 'int64' : x.dtype;
  const out = Tensor.empty(outShape, outDtype, x.device);
  if (x.ndim === 0) {
    // A 0-d tensor reduces to itself.
    const flat = reshape(x, [1, 1, 1]);
    kernel('reduce', [out, flat, op, 1, correction, 1]);
    flat.dispose();
    return out;
  }
  const isRun = dims.every((d, i) => i === 0 || d === dims[i - 1] + 1);
  let src: Tensor;
  let inner: number;
  const R = numelOf(dims.map((d) => x.shape[d]));
  if (isRun) {
    src = x.isContiguous() ? x : contiguous(x);
    inner = numelOf(x.shape.slice(dims[dims.length - 1] + 1));
  } else {
    const rest = x.shape.map((_, i) => i).filter((i) => !dims.includes(i));
    const p = permute(x, [...rest, ...dims]);
    src = contiguous(p);
    p.dispose();
    inner = 1;
  }
  try {
    if (R === 0 && op !== 'sum') throw new Error(`[${op}] cannot reduce over an empty dimension`);
    kernel('reduce', [out, src, op, R, correction, inner]);
  } finally {
    if (src !== x) src.dispose();
  }
  return out;
}

/** Broadcast a reduced gradient back over the reduced dims (contiguous result). */
function expandBack(g: Tensor, inShape: Shape, dims: number[], keepdim: boolean): Tensor {
  const kshape = inShape.map((d, i) => (dims.includes(i) ? 1 : d));
  const gk = keepdim ? g : reshape(g, kshape);
  const e = expand(gk, inShape);
  const c = contiguous(e);
  e.dispose();
  if (gk !== g) gk.dispose();
  return c;
}

export function sum(x: Tensor, dim?: number | number[], keepdim = false): Tensor {
  checkTensor(x, 'sum');
  const dims = normDims(x, dim, 'sum');
  // Integer and bool sums accumulate in int64, as PyTorch does.
  const src = isFloat(x.dtype) || x.dtype === 'int64' ? x : to(x, 'int64');
  const out = rawReduce('sum', src, dims, keepdim);
  if (src !== x) src.dispose();
  const inShape = x.shape.slice();
  return record('sum', out, [x], (g) => [expandBack(g, inShape, dims, keepdim)]);
}

export function mean(x: Tensor, dim?: number | number[], keepdim = false): Tensor {
  checkTensor(x, 'mean');
  if (!isFloat(x.dtype)) throw new Error(`[mean] input must be floating, got ${x.dtype} (cast with to('float32'))`);
  const dims = normDims(x, dim, 'mean');
  const out = rawReduce('mean', x, dims, keepdim);
  const inShape = x.shape.slice();
  const n = numelOf(dims.map((d) => inShape[d]));
  return record('mean', out, [x], (g) => {
    const e = expandBack(g, inShape, dims, keepdim);
    const r = div(e, n);
    e.dispose();
    return [r];
  });
}

function extremum(op: 'max' | 'min', x: Tensor, dim: number | undefined, keepdim: boolean): Tensor {
  checkTensor(x, op);
  const dims = normDims(x, dim, op);
  const out = rawReduce(op, x, dims, keepdim);
  if (!isFloat(x.dtype)) return out;
  const inShape = x.shape.slice();
  // The gradient is shared evenly by the positions that attain the extremum.
  return record(op, out, [x], (g, [xs, m]) => {
    const mk = expandBack(m, inShape, dims, keepdim);
    const hit = eq(xs, mk);
    const hf = to(hit, g.dtype);
    const cnt = sum(hf, dims, true);
    const ge = expandBack(g, inShape, dims, keepdim);
    const share = div(hf, cnt);
    const r = mul(ge, share);
    [mk, hit, hf, cnt, ge, share].forEach((t) => t.dispose());
    return [r];
  }, [x, out]);
}
export const max = (x: Tensor, dim?: number, keepdim = false): Tensor => extremum('max', x, dim, keepdim);
export const min = (x: Tensor, dim?: number, keepdim = false): Tensor => extremum('min', x, dim, keepdim);

export function argmax(x: Tensor, dim?: number, keepdim = false): Tensor {
  checkTensor(x, 'argmax');
  if (dim === undefined) {
    const f = reshape(x, [-1]);
    try {
      return rawReduce('argmax', f, [0], false);
    } finally {
      f.dispose();
    }
  }
  return rawReduce('argmax', x, normDims(x, dim, 'argmax'), keepdim);
}
export function argmin(x: Tensor, dim?: number, keepdim = false): Tensor {
  checkTensor(x, 'argmin');
  if (dim === undefined) {
    const f = reshape(x, [-1]);
    try {
      return rawReduce('argmin', f, [0], false);
    } finally {
      f.dispose();
    }
  }
  return rawReduce('argmin', x, normDims(x, dim, 'argmin'), keepdim);
}

/** Variance with Bessel's correction by default (correction = 1), as torch.var. */
export function variance(x: Tensor, dim?: number | number[], opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
  checkTensor(x, 'var');
  if (!isFloat(x.dtype)) throw new Error(`[var] input must be floating, got ${x.dtype}`);
  const dims = normDims(x, dim, 'var');
  const correction = opts.correction ?? 1;
  const keepdim = opts.keepdim ?? false;
  const out = rawReduce('var', x, dims, keepdim, correction);
  const inShape = x.shape.slice();
  const n = numelOf(dims.map((d) => inShape[d]));
  return record('var', out, [x], (g, [xs]) => {
    const mu = rawReduce('mean', xs, dims, true);
    const c = sub(xs, mu);
    const ge = expandBack(g, inShape, dims, keepdim);
    const t = mul(c, ge);
    const r = mul(t, 2 / (n - correction));
    [mu, c, ge, t].forEach((v) => v.dispose());
    return [r];
  }, [x]);
}

export function logsumexp(x: Tensor, dim: number | number[], keepdim = false): Tensor {
  checkTensor(x, 'logsumexp');
  if (!isFloat(x.dtype)) throw new Error(`[logsumexp] input must be floating, got ${x.dtype}`);
  const dims = normDims(x, dim, 'logsumexp');
  const out = rawReduce('logsumexp', x, dims, keepdim);
  const inShape = x.shape.slice();
  return record('logsumexp', out, [x], (g, [xs, l]) => {
    const lk = expandBack(l, inShape, dims, keepdim);
    const d = sub(xs, lk);
    const p = exp(d);
    // rows that are all -inf give NaN in exp(-inf - -inf); their gradient is 0
    const nan = eq(p, p);
    const pz = where(nan, p, 0);
    const ge = expandBack(g, inShape, dims, keepdim);
    const r = mul(ge, pz);
    [lk, d, p, nan, pz, ge].forEach((t) => t.dispose());
    return [r];
  }, [x, out]);
}

