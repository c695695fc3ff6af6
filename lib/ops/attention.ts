// attention.ts — scaledDotProductAttention over the fused attention kernels (FlashAttention-2
// style tiling on both devices: the T x S score matrix is never stored), with grouped-query heads,
// causal masking and boolean masks; plus the composite (materialised) version used as the test
// oracle and benchmark baseline.
//
// Causal masking is bottom-right aligned (key j is visible to query i iff j <= i + S - T), so a
// decode step with T new queries against S cached keys needs no extra mask; for T == S this is
// PyTorch's is_causal. Both ops run in their own scope (scopedOp), which frees the copies and
// intermediate score tensors they make.
import { Tensor } from '../core/tensor';
import { scopedOp } from '../core/memory';
import { record } from '../core/autograd';
import { kernel } from '../core/dispatch';
import { checkOptions, optionKeys } from '../options';
import { checkTensor, checkFloat, checkSameDevice, checkDTypeEq, broadcastView } from './util';
import { contiguous, reshape, expand, unsqueeze, transpose } from './view';
import { matmul } from './matmul';
import { softmax } from './nn';
import { mul, where, logicalAnd } from './elementwise';
import { fromValues } from './creation';

export interface AttentionOptions {
  /** Causal (bottom-right aligned) masking. */
  isCausal?: boolean;
  /** Boolean mask broadcastable to [B, H, T, S]; true = may attend (as PyTorch's bool attn_mask). */
  mask?: Tensor | null;
  /** Score scale; default 1/sqrt(D). */
  scale?: number;
}
const ATTENTION_KEYS = optionKeys<AttentionOptions>({ isCausal: true, mask: true, scale: true });

function validate(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null | undefined, op: string): void {
  checkTensor(q, op, 'q');
  checkTensor(k, op, 'k');
  checkTensor(v, op, 'v');
  checkFloat(q, op, 'q');
  checkDTypeEq(op, q, k, 'q and k');
  checkDTypeEq(op, q, v, 'q and v');
  checkSameDevice(op, q, k, v, mask);
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4)
    throw new Error(`[${op}] q, k, v must be [B, H, T, D]; got [${q.shape}], [${k.shape}], [${v.shape}]`);
  const [B, H, , D] = q.shape;
  const [Bk, Hkv, S, Dk] = k.shape;
  if (Bk !== B || v.shape[0] !== B) throw new Error(`[${op}] batch sizes differ`);
  if (Dk !== D || v.shape[3] !== D) throw new Error(`[${op}] head dims differ (q ${D}, k ${Dk}, v ${v.shape[3]})`);
  if (v.shape[1] !== Hkv || v.shape[2] !== S) throw new Error(`[${op}] k and v shapes differ ([${k.shape}] vs [${v.shape}])`);
  if (H % Hkv !== 0) throw new Error(`[${op}] query heads (${H}) must be a multiple of key/value heads (${Hkv})`);
  if (mask) {
    checkTensor(mask, op, 'mask');
    if (mask.dtype !== 'bool') throw new Error(`[${op}] mask must be bool (true = attend), got ${mask.dtype}`);
  }
}

const lastUnit = (t: Tensor): Tensor => (t.strides[t.ndim - 1] === 1 ? t : contiguous(t));

/** softmax(q k^T * scale + mask) v with q [B,H,T,D], k/v [B,Hkv,S,D]. Returns [B,H,T,D]. */
export const scaledDotProductAttention = scopedOp(function scaledDotProductAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: AttentionOptions = {},
): Tensor {
  const op = 'attention';
  checkOptions(op, opts, ATTENTION_KEYS);
  validate(q, k, v, opts.mask, op);
  const [B, H, T, D] = q.shape;
  const S = k.shape[2];
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const causal = !!opts.isCausal;
  const mv = opts.mask ? broadcastView(opts.mask, [B, H, T, S], op) : null;
  const out = Tensor.empty([B, H, T, D], q.dtype, q.device);
  // Row statistics in f32, or f64 for f64 inputs: an f32 lse would cap the f64 backward (which
  // recomputes P = exp(s - lse)) at ~1e-7 relative accuracy and blur the gradient checks.
  const lse = Tensor.empty([B, H, T], q.dtype === 'float64' ? 'float64' : 'float32', q.device);
  kernel('attention_fwd', [out, lse, lastUnit(q), lastUnit(k), lastUnit(v), mv, causal, scale]);
  const saved = [q, k, v, out, lse, ...(mv ? [mv] : [])];
  return record(
    op,
    out,
    [q, k, v],
    (g, [qs, ks, vs, os, ls, ms]) => {
      const gc = contiguous(g);
      const dq = Tensor.empty(qs.shape, qs.dtype, qs.device);
      const dk = Tensor.empty(ks.shape, ks.dtype, ks.device);
      const dv = Tensor.empty(vs.shape, vs.dtype, vs.device);
      kernel('attention_bwd', [dq, dk, dv, lastUnit(qs), lastUnit(ks), lastUnit(vs), os, gc, ls, ms ?? null, causal, scale]);
      return [dq, dk, dv];
    },
    saved,
  );
});

/**
 * The same attention computed with materialised scores (matmul, mask, softmax, matmul): the
 * oracle for tests and the baseline for benchmarks. Fully-masked rows give NaN here (as PyTorch).
 */
export const attentionComposite = scopedOp(function attentionComposite(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  checkOptions('attention_composite', opts, ATTENTION_KEYS);
  validate(q, k, v, opts.mask, 'attention_composite');
  const [B, H, T, D] = q.shape;
  const [, Hkv, S] = k.shape;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const rep = H / Hkv;
  const grow = (t: Tensor): Tensor => (rep === 1 ? t : reshape(expand(unsqueeze(t, 2), [B, Hkv, rep, S, D]), [B, H, S, D]));
  const s = mul(matmul(q, transpose(grow(k), -1, -2)), scale);
  let allowed: Tensor | null = null;
  if (opts.isCausal) {
    const vals = new Uint8Array(T * S);
    for (let i = 0; i < T; i++) for (let j = 0; j < S; j++) vals[i * S + j] = j <= i + S - T ? 1 : 0;
    allowed = fromValues(vals, [T, S], 'bool', q.device);
  }
  if (opts.mask) allowed = allowed ? logicalAnd(allowed, opts.mask) : opts.mask;
  return matmul(softmax(allowed ? where(allowed, s, -Infinity) : s, -1), grow(v));
});
