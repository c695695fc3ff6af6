// view.ts — shape ops. reshape/view, permute/transpose, slice/narrow/select, expand, squeeze and
// unsqueeze return views sharing storage (no copy); contiguous, clone, cat, to() copy through the
// strided `copy` kernel. Each records its vjp: views map the gradient back by the inverse view or
// by writing it into a zero tensor of the input's shape. Every op runs in its own scope
// (scopedOp), which frees the temporary views and copies it makes.
import { Tensor, Shape, contiguousStrides, numelOf, checkShape } from '../core/tensor';
import { Device, DType, ITEMSIZE, checkDType, checkDevice } from '../core/dtype';
import { scopedOp } from '../core/memory';
import { record } from '../core/autograd';
import { kernel, copyBytes } from '../core/dispatch';
import { normDim, checkTensor, broadcastView, sameShape } from './util';

function makeView(x: Tensor, shape: Shape, strides: number[], offset: number, name: string, vjp: (g: Tensor) => Tensor): Tensor {
  const out = x.makeView(shape, strides, offset);
  return record(name, out, [x], (g) => [vjp(g)]);
}

/** A contiguous copy (or a fresh view when already contiguous). */
export const contiguous = scopedOp(function contiguous(x: Tensor): Tensor {
  checkTensor(x, 'contiguous');
  if (x.isContiguous()) return makeView(x, x.shape.slice(), x.strides.slice(), x.offset, 'contiguous', (g) => g);
  const out = Tensor.empty(x.shape, x.dtype, x.device);
  kernel('copy', [out, x]);
  return record('contiguous', out, [x], (g) => [g]);
});

export const clone = scopedOp(function clone(x: Tensor): Tensor {
  checkTensor(x, 'clone');
  const out = Tensor.empty(x.shape, x.dtype, x.device);
  kernel('copy', [out, x]);
  return record('clone', out, [x], (g) => [g]);
});

function resolveShape(shape: number[], numel: number, op: string): Shape {
  let infer = -1;
  let known = 1;
  shape.forEach((d, i) => {
    if (d === -1) {
      if (infer >= 0) throw new Error(`[${op}] only one dimension can be -1`);
      infer = i;
    } else {
      if (!Number.isInteger(d) || d < 0) throw new Error(`[${op}] invalid dimension ${d}`);
      known *= d;
    }
  });
  const out = shape.slice();
  if (infer >= 0) {
    if (known === 0 || numel % known !== 0) throw new Error(`[${op}] cannot infer -1 in [${shape.join(', ')}] for ${numel} elements`);
    out[infer] = numel / known;
  }
  if (numelOf(out) !== numel) throw new Error(`[${op}] shape [${shape.join(', ')}] is invalid for input of size ${numel}`);
  return checkShape(out, op);
}

/** A view with a new shape; the input must be contiguous (use reshape otherwise). */
export const view = scopedOp(function view(x: Tensor, shape: number[]): Tensor {
  checkTensor(x, 'view');
  const s = resolveShape(shape, x.numel, 'view');
  if (!x.isContiguous()) throw new Error('[view] input is not contiguous; use reshape() or contiguous().view()');
  const inShape = x.shape.slice();
  return makeView(x, s, contiguousStrides(s), x.offset, 'view', (g) => reshape(g, inShape));
});

/** view() when possible, else a contiguous copy with the new shape. */
export const reshape = scopedOp(function reshape(x: Tensor, shape: number[]): Tensor {
  checkTensor(x, 'reshape');
  const s = resolveShape(shape, x.numel, 'reshape');
  return view(x.isContiguous() ? x : contiguous(x), s);
});

export const flatten = scopedOp(function flatten(x: Tensor, startDim: number = 0, endDim: number = -1): Tensor {
  checkTensor(x, 'flatten');
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normDim(startDim, x.ndim, 'flatten');
  const e = normDim(endDim, x.ndim, 'flatten');
  if (e < s) throw new Error('[flatten] endDim must not precede startDim');
  const shape = [...x.shape.slice(0, s), numelOf(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
  return reshape(x, shape);
});

export const permute = scopedOp(function permute(x: Tensor, dims: number[]): Tensor {
  checkTensor(x, 'permute');
  if (dims.length !== x.ndim) throw new Error(`[permute] expected ${x.ndim} dims, got ${dims.length}`);
  const d = dims.map((v) => normDim(v, x.ndim, 'permute'));
  if (new Set(d).size !== d.length) throw new Error('[permute] repeated dim');
  const inv = new Array<number>(d.length);
  d.forEach((v, i) => (inv[v] = i));
  return makeView(
    x,
    d.map((i) => x.shape[i]),
    d.map((i) => x.strides[i]),
    x.offset,
    'permute',
    (g) => permute(g, inv),
  );
});

export const transpose = scopedOp(function transpose(x: Tensor, d0: number, d1: number): Tensor {
  checkTensor(x, 'transpose');
  const dims = x.shape.map((_, i) => i);
  const a = normDim(d0, x.ndim, 'transpose');
  const b = normDim(d1, x.ndim, 'transpose');
  [dims[a], dims[b]] = [dims[b], dims[a]];
  return permute(x, dims);
});

/** Write g into a zero tensor of `shape` through the view `place` (the backward of slicing). */
function scatterInto(g: Tensor, shape: Shape, place: (z: Tensor) => Tensor): Tensor {
  const z = Tensor.empty(shape, g.dtype, g.device);
  kernel('fill', [z, 0]);
  kernel('copy', [place(z), g]);
  return z;
}

/** x[start:end:step] along dim (Python slice semantics for negative and clamped bounds). */
export const slice = scopedOp(function slice(x: Tensor, dim: number, start?: number, end?: number, step: number = 1): Tensor {
  checkTensor(x, 'slice');
  const d = normDim(dim, x.ndim, 'slice');
  if (!Number.isInteger(step) || step <= 0) throw new Error('[slice] step must be a positive integer');
  const n = x.shape[d];
  const clamp = (v: number | undefined, dflt: number): number => {
    if (v === undefined || v === null) return dflt;
    if (!Number.isInteger(v)) throw new Error('[slice] bounds must be integers');
    const w = v < 0 ? v + n : v;
    return Math.min(Math.max(w, 0), n);
  };
  const s = clamp(start, 0);
  const e = Math.max(clamp(end, n), s);
  const len = Math.ceil((e - s) / step);
  const shape = x.shape.slice();
  shape[d] = len;
  const strides = x.strides.slice();
  strides[d] *= step;
  const inShape = x.shape.slice();
  // Backward: the same slice of a zero tensor of the input's shape receives the gradient.
  const sliceOf = (z: Tensor): Tensor =>
    z.makeView(
      shape,
      z.strides.map((st, i) => (i === d ? st * step : st)),
      s * z.strides[d],
    );
  return makeView(x, shape, strides, x.offset + s * x.strides[d], 'slice', (g) => scatterInto(g, inShape, sliceOf));
});

export const narrow = scopedOp(function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  checkTensor(x, 'narrow');
  const d = normDim(dim, x.ndim, 'narrow');
  const st = start < 0 ? start + x.shape[d] : start;
  if (!Number.isInteger(st) || !Number.isInteger(length) || st < 0 || length < 0 || st + length > x.shape[d])
    throw new Error(`[narrow] range [${start}, ${start}+${length}) out of bounds for dim of size ${x.shape[d]}`);
  return slice(x, d, st, st + length);
});

/** x[index] along dim, removing the dim. */
export const select = scopedOp(function select(x: Tensor, dim: number, index: number): Tensor {
  checkTensor(x, 'select');
  const d = normDim(dim, x.ndim, 'select');
  const n = x.shape[d];
  const i = index < 0 ? index + n : index;
  if (!Number.isInteger(i) || i < 0 || i >= n) throw new Error(`[select] index ${index} out of range for dim of size ${n}`);
  const shape = x.shape.filter((_, k) => k !== d);
  const strides = x.strides.filter((_, k) => k !== d);
  const inShape = x.shape.slice();
  return makeView(x, shape, strides, x.offset + i * x.strides[d], 'select', (g) =>
    scatterInto(g, inShape, (z) =>
      z.makeView(
        shape,
        z.strides.filter((_, k) => k !== d),
        i * z.strides[d],
      ),
    ),
  );
});

/** Sum g over broadcast dims so it has `shape` again (g itself when it has that shape already). */
export const sumToShape = scopedOp(function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.ndim - shape.length;
  const dims: number[] = [];
  for (let i = 0; i < g.ndim; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) dims.push(i);
  // The Tensor method reaches reduce.ts's sum (installed by ops/index.ts), which imports this file.
  return reshape(g.sum(dims, true), shape);
});

export const expand = scopedOp(function expand(x: Tensor, shape: number[]): Tensor {
  checkTensor(x, 'expand');
  const target = shape.map((d, i) => (d === -1 ? x.shape[x.ndim - shape.length + i] : d));
  checkShape(target, 'expand');
  const v = broadcastView(x, target, 'expand');
  const inShape = x.shape.slice();
  return record('expand', v, [x], (g) => [sumToShape(g, inShape)]);
});
export const broadcastTo = expand;

export const squeeze = scopedOp(function squeeze(x: Tensor, dim?: number): Tensor {
  checkTensor(x, 'squeeze');
  let keepIdx: number[];
  if (dim === undefined) keepIdx = x.shape.map((_, i) => i).filter((i) => x.shape[i] !== 1);
  else {
    const d = normDim(dim, x.ndim, 'squeeze');
    keepIdx = x.shape.map((_, i) => i).filter((i) => i !== d || x.shape[i] !== 1);
  }
  const inShape = x.shape.slice();
  return makeView(
    x,
    keepIdx.map((i) => x.shape[i]),
    keepIdx.map((i) => x.strides[i]),
    x.offset,
    'squeeze',
    (g) => reshape(g, inShape),
  );
});

export const unsqueeze = scopedOp(function unsqueeze(x: Tensor, dim: number): Tensor {
  checkTensor(x, 'unsqueeze');
  const d = normDim(dim, x.ndim + 1, 'unsqueeze');
  const shape = x.shape.slice();
  const strides = x.strides.slice();
  shape.splice(d, 0, 1);
  strides.splice(d, 0, d < x.ndim ? x.strides[d] * x.shape[d] : 1);
  const inShape = x.shape.slice();
  return makeView(x, shape, strides, x.offset, 'unsqueeze', (g) => reshape(g, inShape));
});

/** Cast to a dtype or move to a device (a copy; the same dtype/device gives a fresh view). */
export const to = scopedOp(function to(x: Tensor, target: DType | Device | string): Tensor {
  checkTensor(x, 'to');
  if (target === 'cpu' || target === 'cuda' || target === 'cuda:0') return toDevice(x, checkDevice(target, 'to'));
  if (typeof target !== 'string' || !(target in ITEMSIZE))
    throw new Error(`[to] unknown target ${JSON.stringify(target)} (expected a dtype, 'cpu' or 'cuda')`);
  const dtype = checkDType(target, 'to');
  if (dtype === x.dtype) return contiguous(x);
  const out = Tensor.empty(x.shape, dtype, x.device);
  kernel('copy', [out, x]);
  const src = x.dtype;
  return record('to', out, [x], (g) => [to(g, src)]);
});

export const toDevice = scopedOp(function toDevice(x: Tensor, device: Device): Tensor {
  if (device === x.device) return contiguous(x);
  const c = x.isContiguous() ? x : contiguous(x);
  const out = Tensor.empty(x.shape, x.dtype, device);
  copyBytes(out, c);
  const src = x.device;
  return record('to_device', out, [x], (g) => [toDevice(g, src)]);
});

/** Concatenate along dim (all other dims equal; one dtype and device). */
export const cat = scopedOp(function cat(tensors: Tensor[], dim: number = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw new Error('[cat] expected a non-empty array of tensors');
  tensors.forEach((t, i) => checkTensor(t, 'cat', `tensor ${i}`));
  const first = tensors[0];
  const d = normDim(dim, first.ndim, 'cat');
  for (const t of tensors) {
    if (t.ndim !== first.ndim) throw new Error('[cat] tensors must have the same rank');
    if (t.dtype !== first.dtype) throw new Error(`[cat] dtypes differ (${first.dtype} vs ${t.dtype})`);
    if (t.device !== first.device) throw new Error('[cat] tensors are on different devices');
    for (let k = 0; k < t.ndim; k++)
      if (k !== d && t.shape[k] !== first.shape[k]) throw new Error(`[cat] sizes differ in dim ${k} ([${first.shape}] vs [${t.shape}])`);
  }
  const shape = first.shape.slice();
  shape[d] = tensors.reduce((a, t) => a + t.shape[d], 0);
  const out = Tensor.empty(shape, first.dtype, first.device);
  const sizes: number[] = [];
  let pos = 0;
  for (const t of tensors) {
    kernel('copy', [out.makeView(t.shape.slice(), out.strides.slice(), pos * out.strides[d]), t]);
    sizes.push(t.shape[d]);
    pos += t.shape[d];
  }
  return record('cat', out, tensors, (g) => {
    let p = 0;
    return sizes.map((n) => {
      const piece = contiguous(narrow(g, d, p, n));
      p += n;
      return piece;
    });
  });
});

export const stack = scopedOp(function stack(tensors: Tensor[], dim: number = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw new Error('[stack] expected a non-empty array of tensors');
  tensors.forEach((t, i) => checkTensor(t, 'stack', `tensor ${i}`));
  for (const t of tensors)
    if (!sameShape(t.shape, tensors[0].shape)) throw new Error(`[stack] all tensors must have one shape ([${tensors[0].shape}] vs [${t.shape}])`);
  const d = normDim(dim, tensors[0].ndim + 1, 'stack');
  return cat(
    tensors.map((t) => unsqueeze(t, d)),
    d,
  );
});

/** Views of consecutive pieces: equal pieces of `size`, or the listed section sizes. */
export const split = scopedOp(function split(x: Tensor, sizeOrSections: number | number[], dim: number = 0): Tensor[] {
  checkTensor(x, 'split');
  const d = normDim(dim, x.ndim, 'split');
  const n = x.shape[d];
  let sizes: number[];
  if (Array.isArray(sizeOrSections)) {
    sizes = sizeOrSections;
    if (sizes.reduce((a, b) => a + b, 0) !== n) throw new Error(`[split] sections [${sizes}] do not sum to ${n}`);
  } else {
    if (!Number.isInteger(sizeOrSections) || sizeOrSections <= 0) throw new Error('[split] size must be a positive integer');
    sizes = [];
    for (let p = 0; p < n; p += sizeOrSections) sizes.push(Math.min(sizeOrSections, n - p));
  }
  let p = 0;
  return sizes.map((s) => {
    const v = narrow(x, d, p, s);
    p += s;
    return v;
  });
});

export const chunk = scopedOp(function chunk(x: Tensor, chunks: number, dim: number = 0): Tensor[] {
  checkTensor(x, 'chunk');
  if (!Number.isInteger(chunks) || chunks <= 0) throw new Error('[chunk] chunks must be a positive integer');
  const d = normDim(dim, x.ndim, 'chunk');
  return split(x, Math.max(1, Math.ceil(x.shape[d] / chunks)), d);
});
