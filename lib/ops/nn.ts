// nn.ts — neural-network ops with fused kernels: softmax / logSoftmax, crossEntropy, layerNorm,
// rmsNorm, embedding, indexSelect / gather, rope, dropout, and patchEmbed (ViT's stride = kernel
// convolution as patch extraction + one GEMM).
//
// Fused ops keep only what their backward kernel needs: softmax keeps its output, the norms keep
// per-row mean / rstd, cross-entropy keeps per-row logsumexp (never the probabilities). Each op
// runs in its own scope (scopedOp): the reshaped, transposed and contiguous copies it makes for
// the kernels are freed when it returns, and so are those its backward makes.
import { Tensor, Shape, numelOf } from '../core/tensor';
import { scopedOp } from '../core/memory';
import { record } from '../core/autograd';
import { kernel } from '../core/dispatch';
import { checkOptions, optionKeys } from '../options';
import { normDim, checkTensor, checkFloat, checkSameDevice, checkDTypeEq, broadcastView } from './util';
import { contiguous, reshape, transpose, permute, to, narrow, cat } from './view';
import { mul, div, neg, ne } from './elementwise';
import { sum } from './reduce';
import { linear } from './matmul';
import { zeros, bernoulli, Generator } from './creation';

/** Run fn on x with `dim` moved last (contiguous), moving the result back (call inside an op's scope). */
function lastDim(x: Tensor, dim: number, op: string, fn: (c: Tensor) => Tensor): Tensor {
  const d = normDim(dim, x.ndim, op);
  if (d === x.ndim - 1) return fn(x.isContiguous() ? x : contiguous(x));
  const r = fn(contiguous(transpose(x, d, -1)));
  return contiguous(transpose(r, d, -1));
}

const softmaxImpl = scopedOp(function softmaxImpl(x: Tensor, dim: number, log: boolean): Tensor {
  const op = log ? 'log_softmax' : 'softmax';
  checkTensor(x, op);
  checkFloat(x, op);
  if (x.ndim === 0) throw new Error(`[${op}] input must be at least 1-D`);
  return lastDim(x, dim, op, (c) => {
    const y = Tensor.empty(c.shape, c.dtype, c.device);
    kernel('softmax_fwd', [y, c, log]);
    return record(
      op,
      y,
      [c],
      (g, [ys]) => {
        const dx = Tensor.empty(ys.shape, ys.dtype, ys.device);
        kernel('softmax_bwd', [dx, ys, g.isContiguous() ? g : contiguous(g), log]);
        return [dx];
      },
      [y],
    );
  });
});
export const softmax = (x: Tensor, dim = -1): Tensor => softmaxImpl(x, dim, false);
export const logSoftmax = (x: Tensor, dim = -1): Tensor => softmaxImpl(x, dim, true);

export interface CrossEntropyOptions {
  /** Targets equal to this contribute nothing (default -100, as PyTorch). */
  ignoreIndex?: number;
  /** 'mean' over non-ignored targets (default), 'sum', or 'none' (per row, float32). */
  reduction?: 'mean' | 'sum' | 'none';
}
const CROSS_ENTROPY_KEYS = optionKeys<CrossEntropyOptions>({ ignoreIndex: true, reduction: true });

/**
 * Softmax cross-entropy between logits [..., V] and integer targets [...]. Fused: the forward keeps
 * one logsumexp per row, the backward writes (softmax - onehot) * g straight into dlogits.
 * The loss is float32 for half-precision logits (float64 for float64 logits).
 */
export const crossEntropy = scopedOp(function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const op = 'cross_entropy';
  checkOptions(op, opts, CROSS_ENTROPY_KEYS);
  checkTensor(logits, op, 'logits');
  checkTensor(target, op, 'target');
  checkFloat(logits, op, 'logits');
  checkSameDevice(op, logits, target);
  if (target.dtype !== 'int64' && target.dtype !== 'int32') throw new Error(`[${op}] target must be int64 or int32, got ${target.dtype}`);
  const ignore = opts.ignoreIndex ?? -100;
  const reduction = opts.reduction ?? 'mean';
  if (!['mean', 'sum', 'none'].includes(reduction)) throw new Error(`[${op}] unknown reduction '${reduction}'`);
  if (logits.ndim < 1) throw new Error(`[${op}] logits must be at least 1-D`);
  const V = logits.shape[logits.ndim - 1];
  const N = numelOf(logits.shape) / Math.max(V, 1);
  if (target.numel !== N || target.shape.join() !== logits.shape.slice(0, -1).join())
    throw new Error(
      `[${op}] target shape [${target.shape.join(', ')}] must be logits shape without the last dim [${logits.shape.slice(0, -1).join(', ')}]`,
    );
  const l2 = reshape(logits, [N, V]);
  const t1 = reshape(target, [N]);
  const sdt = logits.dtype === 'float64' ? 'float64' : 'float32';
  const rows = Tensor.empty([N], sdt, logits.device);
  const lse = Tensor.empty([N], sdt, logits.device);
  kernel('cross_entropy_fwd', [rows, lse, l2, t1, ignore]);
  // Per-row weights of the reduction: 1 for sum, 1/count for mean (count of non-ignored rows).
  const validF = to(ne(t1, ignore), sdt);
  let loss: Tensor;
  let count: Tensor | null = null;
  if (reduction === 'none') loss = reshape(rows, target.shape);
  else {
    loss = sum(rows);
    if (reduction === 'mean') {
      count = sum(validF);
      loss = div(loss, count);
    }
  }
  return record(
    op,
    loss,
    [l2],
    (g, [ls, ts, lsev, vf, cnt]) => {
      // Upstream gradient per row.
      const gf = g.dtype === sdt ? g : to(g, sdt);
      const dl = reduction === 'none' ? mul(reshape(gf, [N]), vf) : mul(broadcastView(cnt ? div(gf, cnt) : gf, [N], op), vf);
      const dx = Tensor.empty([N, V], ls.dtype, ls.device);
      kernel('cross_entropy_bwd', [dx, ls, ts, lsev, dl.isContiguous() ? dl : contiguous(dl), ignore]);
      return [dx];
    },
    count ? [l2, t1, lse, validF, count] : [l2, t1, lse, validF],
  );
});

function normPrep(op: string, x: Tensor, C: number, weight?: Tensor | null, bias?: Tensor | null): { x2: Tensor; N: number } {
  checkTensor(x, op);
  checkFloat(x, op);
  for (const [t, what] of [
    [weight, 'weight'],
    [bias, 'bias'],
  ] as const) {
    if (!t) continue;
    checkTensor(t, op, what);
    checkDTypeEq(op, x, t, `input and ${what}`);
    checkSameDevice(op, x, t);
    if (t.numel !== C) throw new Error(`[${op}] ${what} must have ${C} elements, got [${t.shape.join(', ')}]`);
  }
  const N = C ? x.numel / C : 0;
  return { x2: reshape(x.isContiguous() ? x : contiguous(x), [N, C]), N };
}

function flatParam(t?: Tensor | null): Tensor | null {
  if (!t) return null;
  return t.isContiguous() && t.ndim === 1 ? t : reshape(t, [-1]);
}

/** Layer normalisation over the trailing `normalizedShape` dims. */
export const layerNorm = scopedOp(function layerNorm(
  x: Tensor,
  normalizedShape: number | Shape,
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps: number = 1e-5,
): Tensor {
  const op = 'layer_norm';
  checkTensor(x, op);
  const ns = typeof normalizedShape === 'number' ? [normalizedShape] : normalizedShape;
  if (x.ndim < ns.length || x.shape.slice(x.ndim - ns.length).join() !== ns.join())
    throw new Error(`[${op}] normalizedShape [${ns.join(', ')}] does not match the input's trailing dims [${x.shape.join(', ')}]`);
  const C = numelOf(ns);
  const { x2, N } = normPrep(op, x, C, weight, bias);
  const w = flatParam(weight);
  const b = flatParam(bias);
  const sdt = x.dtype === 'float64' ? 'float64' : 'float32';
  const y = Tensor.empty([N, C], x.dtype, x.device);
  const meanT = Tensor.empty([N], sdt, x.device);
  const rstd = Tensor.empty([N], sdt, x.device);
  kernel('layer_norm_fwd', [y, meanT, rstd, x2, w, b, eps]);
  const saved = w ? [x2, w, meanT, rstd] : [x2, meanT, rstd];
  return record(
    op,
    reshape(y, x.shape),
    [x, weight, bias],
    (g, sv) => {
      const [xs, ws, ms, rs] = w ? sv : [sv[0], null, sv[1], sv[2]];
      const g2 = reshape(contiguous(g), [N, C]);
      const dx = Tensor.empty([N, C], xs.dtype, xs.device);
      const dw = weight && weight.requiresGrad ? Tensor.empty([C], sdt, xs.device) : null;
      const db = bias && bias.requiresGrad ? Tensor.empty([C], sdt, xs.device) : null;
      kernel('layer_norm_bwd', [dx, dw, db, g2, xs, ws, ms, rs]);
      return [reshape(dx, x.shape), castParamGrad(dw, weight), castParamGrad(db, bias)];
    },
    saved,
  );
});

/** A float32 parameter gradient from a norm kernel, in the parameter's dtype and shape. */
function castParamGrad(g: Tensor | null, param?: Tensor | null): Tensor | null {
  if (!g || !param) return null;
  return reshape(to(g, param.dtype), param.shape);
}

/** RMS normalisation over the last dim, as HF LlamaRMSNorm (statistics in float32). */
export const rmsNorm = scopedOp(function rmsNorm(x: Tensor, weight?: Tensor | null, eps: number = 1e-6): Tensor {
  const op = 'rms_norm';
  checkTensor(x, op);
  if (x.ndim < 1) throw new Error(`[${op}] input must be at least 1-D`);
  const C = x.shape[x.ndim - 1];
  const { x2, N } = normPrep(op, x, C, weight, null);
  const w = flatParam(weight);
  const sdt = x.dtype === 'float64' ? 'float64' : 'float32';
  const y = Tensor.empty([N, C], x.dtype, x.device);
  const rstd = Tensor.empty([N], sdt, x.device);
  kernel('rms_norm_fwd', [y, rstd, x2, w, eps]);
  const saved = w ? [x2, w, rstd] : [x2, rstd];
  return record(
    op,
    reshape(y, x.shape),
    [x, weight],
    (g, sv) => {
      const [xs, ws, rs] = w ? sv : [sv[0], null, sv[1]];
      const g2 = reshape(contiguous(g), [N, C]);
      const dx = Tensor.empty([N, C], xs.dtype, xs.device);
      const dw = weight && weight.requiresGrad ? Tensor.empty([C], sdt, xs.device) : null;
      kernel('rms_norm_bwd', [dx, dw, g2, xs, ws, rs]);
      return [reshape(dx, x.shape), castParamGrad(dw, weight)];
    },
    saved,
  );
});

function checkIndex(op: string, idx: Tensor): void {
  checkTensor(idx, op, 'index');
  if (idx.dtype !== 'int64' && idx.dtype !== 'int32') throw new Error(`[${op}] index must be int64 or int32, got ${idx.dtype}`);
}

/** Rows of x along dim picked by a 1-D index. */
export const indexSelect = scopedOp(function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  const op = 'index_select';
  checkTensor(x, op);
  checkIndex(op, index);
  checkSameDevice(op, x, index);
  if (index.ndim !== 1) throw new Error(`[${op}] index must be 1-D, got [${index.shape.join(', ')}]`);
  const d = normDim(dim, x.ndim, op);
  const xc = x.isContiguous() ? x : contiguous(x);
  const idx = index.isContiguous() ? index : contiguous(index);
  const shape = x.shape.slice();
  shape[d] = index.numel;
  const out = Tensor.empty(shape, x.dtype, x.device);
  // Empty work returns at once (x [2^40, 3, 0] would otherwise visit 2^40 empty rows); with indices
  // left to range-check the kernel still runs, and returns after checking them.
  if (out.numel || index.numel) kernel('index_select', [out, xc, idx, d]);
  const inShape = x.shape.slice();
  return record(
    op,
    out,
    [x],
    (g, [is]) => {
      const gx = zeros(inShape, { dtype: g.dtype, device: g.device });
      if (g.numel) kernel('index_add', [gx, is, g.isContiguous() ? g : contiguous(g), d]);
      return [gx];
    },
    [idx],
  );
});

/** Embedding lookup: weight [V, C] rows for integer ids of any shape → [...ids, C]. */
export const embedding = scopedOp(function embedding(ids: Tensor, weight: Tensor): Tensor {
  checkTensor(ids, 'embedding', 'ids');
  checkTensor(weight, 'embedding', 'weight');
  if (weight.ndim !== 2) throw new Error(`[embedding] weight must be [V, C], got [${weight.shape.join(', ')}]`);
  if (ids.dtype !== 'int64' && ids.dtype !== 'int32') throw new Error(`[embedding] ids must be int64 or int32, got ${ids.dtype}`);
  let rows: Tensor;
  try {
    rows = indexSelect(weight, 0, reshape(ids, [-1]));
  } catch (e) {
    // The lookup is index_select underneath; report it under the op the caller used.
    throw new Error(`[embedding] ${(e as Error).message.replace(/^\[index_select\] /, '')}`);
  }
  return reshape(rows, [...ids.shape, weight.shape[1]]);
});

/** torch.gather: out[i][j] = x[i][index[i][j]] along dim (all same rank). */
export const gather = scopedOp(function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const op = 'gather';
  checkTensor(x, op);
  checkIndex(op, index);
  checkSameDevice(op, x, index);
  const d = normDim(dim, x.ndim, op);
  const xc = contiguous(x);
  const idx = contiguous(index);
  const out = Tensor.empty(index.shape, x.dtype, x.device);
  kernel('gather', [out, xc, idx, d]);
  const inShape = x.shape.slice();
  return record(
    op,
    out,
    [x],
    (g, [is]) => {
      const gx = zeros(inShape, { dtype: g.dtype, device: g.device });
      kernel('scatter_add', [gx, is, contiguous(g), d]);
      return [gx];
    },
    [idx],
  );
});

/** Rotary position embedding, rotate-half convention: x [B,H,T,D], cos/sin [T,D] or [B,T,D]. */
export const rope = scopedOp(function rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const op = 'rope';
  checkTensor(x, op);
  checkFloat(x, op);
  if (x.ndim !== 4) throw new Error(`[${op}] x must be [B, H, T, D], got [${x.shape.join(', ')}]`);
  checkTensor(cos, op, 'cos');
  checkTensor(sin, op, 'sin');
  const c3 = cos.ndim === 2 ? reshape(cos, [1, ...cos.shape]) : contiguous(cos);
  const s3 = sin.ndim === 2 ? reshape(sin, [1, ...sin.shape]) : contiguous(sin);
  const xin = x.strides[3] === 1 ? x : contiguous(x);
  const out = Tensor.empty(x.shape, x.dtype, x.device);
  kernel('rope', [out, xin, c3, s3]); // validates cos/sin; returns at once when out is empty
  return record(
    op,
    out,
    [x],
    (g, [cs, sn]) => {
      // d/dx of out = x*cos + rotate_half(x)*sin is rope(g, cos, s') with s' = -swap_halves(sin)
      // (s'[i] = -sin[i + D/2], s'[i + D/2] = -sin[i]); for the usual tables, whose halves are equal,
      // that is just -sin, but per-position tables built any other way must stay correct.
      const half = sn.shape[2] / 2;
      const ns = neg(cat([narrow(sn, -1, half, half), narrow(sn, -1, 0, half)], -1));
      const dx = Tensor.empty(g.shape, g.dtype, g.device);
      if (dx.numel) kernel('rope', [dx, g.strides[3] === 1 ? g : contiguous(g), cs, ns]);
      return [dx];
    },
    [c3, s3],
  );
});

/** Inverted dropout: zero with probability p and scale the rest by 1/(1-p) when training. */
export const dropout = scopedOp(function dropout(x: Tensor, p: number = 0.5, training: boolean = true, generator?: Generator): Tensor {
  checkTensor(x, 'dropout');
  if (!(p >= 0 && p <= 1)) throw new Error('[dropout] p must be in [0, 1]');
  if (!training || p === 0) return x.clone();
  if (p === 1) return mul(x, 0);
  const keepMask = bernoulli(x.shape, 1 - p, { dtype: x.dtype, device: x.device, generator });
  return mul(x, mul(keepMask, 1 / (1 - p)));
});

/**
 * ViT patch embedding: a convolution whose stride equals its kernel, done as patch extraction
 * (a reshape/permute copy) and one GEMM. x [B, C, H, W], weight [O, C, p, p] → [B, P, O] with
 * P = (H/p)(W/p) in row-major patch order (what CLIP flattens to).
 */
export const patchEmbed = scopedOp(function patchEmbed(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  const op = 'patch_embed';
  checkTensor(x, op);
  checkTensor(weight, op, 'weight');
  if (x.ndim !== 4) throw new Error(`[${op}] x must be [B, C, H, W], got [${x.shape.join(', ')}]`);
  if (weight.ndim !== 4 || weight.shape[2] !== weight.shape[3])
    throw new Error(`[${op}] weight must be [O, C, p, p], got [${weight.shape.join(', ')}]`);
  const [B, C, H, W] = x.shape;
  const [O, Cw, p] = weight.shape;
  if (Cw !== C) throw new Error(`[${op}] input has ${C} channels, weight expects ${Cw}`);
  if (H % p || W % p) throw new Error(`[${op}] image ${H}x${W} is not a multiple of the patch size ${p}`);
  const gh = H / p;
  const gw = W / p;
  const patches = reshape(permute(reshape(x, [B, C, gh, p, gw, p]), [0, 2, 4, 1, 3, 5]), [B, gh * gw, C * p * p]);
  return linear(patches, reshape(weight, [O, C * p * p]), bias);
});
