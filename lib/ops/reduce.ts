// reduce.ts — sum, mean, max, min, argmax, argmin, var, logsumexp over any set of dims.
//
// The kernel reduces the middle extent of a contiguous [outer, R, inner] view. When the reduced
// dims form one contiguous run of a contiguous tensor that is used directly; otherwise the reduced
// dims are permuted to the end and made contiguous first (one copy). Each op runs in its own
// scope (scopedOp), which frees those copies.
import { Tensor, Shape, numelOf } from '../core/tensor';
import { isFloat } from '../core/dtype';
import { scopedOp } from '../core/memory';
import { record } from '../core/autograd';
import { kernel } from '../core/dispatch';
import { checkOptions, optionKeys } from '../options';
import { normDim, checkTensor } from './util';
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

const rawReduce = scopedOp(function rawReduce(op: ROp, x: Tensor, dims: number[], keepdim: boolean, correction: number = 1): Tensor {
  const outShape = keptShape(x.shape, dims, keepdim);
  const outDtype = op === 'argmax' || op === 'argmin' ? 'int64' : x.dtype;
  const out = Tensor.empty(outShape, outDtype, x.device);
  if (x.ndim === 0) {
    // A 0-d tensor reduces to itself.
    kernel('reduce', [out, reshape(x, [1, 1, 1]), op, 1, correction, 1]);
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
    src = contiguous(permute(x, [...rest, ...dims]));
    inner = 1;
  }
  if (R === 0 && op !== 'sum') throw new Error(`[${op}] cannot reduce over an empty dimension`);
  kernel('reduce', [out, src, op, R, correction, inner]);
  return out;
});

/** Broadcast a reduced gradient back over the reduced dims (contiguous result). */
function expandBack(g: Tensor, inShape: Shape, dims: number[], keepdim: boolean): Tensor {
  const kshape = inShape.map((d, i) => (dims.includes(i) ? 1 : d));
  return contiguous(expand(keepdim ? g : reshape(g, kshape), inShape));
}

export const sum = scopedOp(function sum(x: Tensor, dim?: number | number[], keepdim: boolean = false): Tensor {
  checkTensor(x, 'sum');
  const dims = normDims(x, dim, 'sum');
  // Integer and bool sums accumulate in int64, as PyTorch does.
  const src = isFloat(x.dtype) || x.dtype === 'int64' ? x : to(x, 'int64');
  const out = rawReduce('sum', src, dims, keepdim);
  const inShape = x.shape.slice();
  return record('sum', out, [x], (g) => [expandBack(g, inShape, dims, keepdim)]);
});

export const mean = scopedOp(function mean(x: Tensor, dim?: number | number[], keepdim: boolean = false): Tensor {
  checkTensor(x, 'mean');
  if (!isFloat(x.dtype)) throw new Error(`[mean] input must be floating, got ${x.dtype} (cast with to('float32'))`);
  const dims = normDims(x, dim, 'mean');
  const out = rawReduce('mean', x, dims, keepdim);
  const inShape = x.shape.slice();
  const n = numelOf(dims.map((d) => inShape[d]));
  return record('mean', out, [x], (g) => [div(expandBack(g, inShape, dims, keepdim), n)]);
});

const extremum = scopedOp(function extremum(op: 'max' | 'min', x: Tensor, dim: number | undefined, keepdim: boolean): Tensor {
  checkTensor(x, op);
  const dims = normDims(x, dim, op);
  const out = rawReduce(op, x, dims, keepdim);
  if (!isFloat(x.dtype)) return out;
  const inShape = x.shape.slice();
  // The gradient is shared evenly by the positions that attain the extremum.
  return record(
    op,
    out,
    [x],
    (g, [xs, m]) => {
      const hf = to(eq(xs, expandBack(m, inShape, dims, keepdim)), g.dtype);
      const share = div(hf, sum(hf, dims, true));
      return [mul(expandBack(g, inShape, dims, keepdim), share)];
    },
    [x, out],
  );
});
export const max = (x: Tensor, dim?: number, keepdim = false): Tensor => extremum('max', x, dim, keepdim);
export const min = (x: Tensor, dim?: number, keepdim = false): Tensor => extremum('min', x, dim, keepdim);

export const argmax = scopedOp(function argmax(x: Tensor, dim?: number, keepdim: boolean = false): Tensor {
  checkTensor(x, 'argmax');
  if (dim === undefined) return rawReduce('argmax', reshape(x, [-1]), [0], false);
  return rawReduce('argmax', x, normDims(x, dim, 'argmax'), keepdim);
});
export const argmin = scopedOp(function argmin(x: Tensor, dim?: number, keepdim: boolean = false): Tensor {
  checkTensor(x, 'argmin');
  if (dim === undefined) return rawReduce('argmin', reshape(x, [-1]), [0], false);
  return rawReduce('argmin', x, normDims(x, dim, 'argmin'), keepdim);
});

export interface VarOptions {
  /** Subtracted from the count in the divisor: 1 (default) is Bessel's correction, 0 the population variance. */
  correction?: number;
  keepdim?: boolean;
}
const VAR_KEYS = optionKeys<VarOptions>({ correction: true, keepdim: true });

/** Variance with Bessel's correction by default (correction = 1), as torch.var. */
export const variance = scopedOp(function variance(x: Tensor, dim?: number | number[], opts: VarOptions = {}): Tensor {
  checkOptions('var', opts, VAR_KEYS);
  checkTensor(x, 'var');
  if (!isFloat(x.dtype)) throw new Error(`[var] input must be floating, got ${x.dtype}`);
  const dims = normDims(x, dim, 'var');
  const correction = opts.correction ?? 1;
  const keepdim = opts.keepdim ?? false;
  const out = rawReduce('var', x, dims, keepdim, correction);
  const inShape = x.shape.slice();
  const n = numelOf(dims.map((d) => inShape[d]));
  return record(
    'var',
    out,
    [x],
    (g, [xs]) => {
      const c = sub(xs, rawReduce('mean', xs, dims, true));
      return [mul(mul(c, expandBack(g, inShape, dims, keepdim)), 2 / (n - correction))];
    },
    [x],
  );
});

export const logsumexp = scopedOp(function logsumexp(x: Tensor, dim: number | number[], keepdim: boolean = false): Tensor {
  checkTensor(x, 'logsumexp');
  if (!isFloat(x.dtype)) throw new Error(`[logsumexp] input must be floating, got ${x.dtype}`);
  const dims = normDims(x, dim, 'logsumexp');
  const out = rawReduce('logsumexp', x, dims, keepdim);
  const inShape = x.shape.slice();
  return record(
    'logsumexp',
    out,
    [x],
    (g, [xs, l]) => {
      const p = exp(sub(xs, expandBack(l, inShape, dims, keepdim)));
      // rows that are all -inf give NaN in exp(-inf - -inf); their gradient is 0 (eq(p, p) is false for NaN)
      const pz = where(eq(p, p), p, 0);
      return [mul(expandBack(g, inShape, dims, keepdim), pz)];
    },
    [x, out],
  );
});
