// lora.ts — the LoRA linear as one op (Hu et al. 2021, as PEFT's lora.Linear computes it):
//
//   y = x W^T + b + s * (drop(x) A^T) B^T        W [O, I] frozen (dense or quantized), A [r, I], B [O, r], s = alpha / r
//
// Forward: the base GEMM writes y (bias in its epilogue); u = drop(x) A^T is a thin [N, r] GEMM; s is
// applied to u (N x r values, not N x O); then the second GEMM accumulates u B^T straight into y
// (beta = 1), so the adapter adds no pass over the [N, O] output and no temporary of its size.
// Backward: only what is asked for, and never the frozen weight's gradient (PEFT relies on autograd
// skipping it; here it is simply not in the op's inputs):
//   gu = s * g B      [N, r]
//   dB = g^T (s u)    [O, r]
//   dA = gu^T drop(x) [r, I]
//   dx = g W + mask * (gu A)   (with no dropout the adapter term is accumulated into the same output)
// Saved: x (a reference, not a copy) and s*u [N, r]. With dropout the keep mask is not kept either: its
// Philox counter range is recorded and backward draws the same mask again (one pass of the counter-based
// generator instead of two [N, I] tensors per adapted layer held from forward to backward).
import { Tensor } from '../core/tensor';
import { isFloat } from '../core/dtype';
import { checkOptions, optionKeys } from '../options';
import { scopedOp } from '../core/memory';
import { record } from '../core/autograd';
import { checkTensor, checkSameDevice, checkDTypeEq } from './util';
import { reshape, contiguous, transpose } from './view';
import { mul, addInPlace } from './elementwise';
import { sum } from './reduce';
import { bernoulli, Generator, defaultGenerator } from './creation';
import { QuantizedWeight, baseProduct, baseInputGrad, gemm2d } from './quant';

export interface LoraOptions {
  /** alpha / r. */
  scale: number;
  /** Dropout probability on the adapter's input (PEFT lora_dropout); only while training. */
  dropout?: number;
  training?: boolean;
  generator?: Generator;
}
const LORA_KEYS = optionKeys<LoraOptions>({ scale: true, dropout: true, training: true, generator: true });

const T2 = (t: Tensor): Tensor => transpose(t, 0, 1);

/** y = x W^T + b + scale * (dropout(x) A^T) B^T, with W frozen; see the file header. */
export const loraLinear = scopedOp(function loraLinear(
  x: Tensor,
  weight: Tensor | QuantizedWeight,
  bias: Tensor | null,
  A: Tensor,
  B: Tensor,
  o: LoraOptions,
): Tensor {
  const op = 'lora_linear';
  checkOptions(op, o, LORA_KEYS);
  checkTensor(x, op);
  checkTensor(A, op, 'lora_A');
  checkTensor(B, op, 'lora_B');
  if (!isFloat(x.dtype)) throw new Error(`[${op}] input must be floating, got ${x.dtype}`);
  const dense = weight instanceof Tensor;
  if (dense) {
    checkTensor(weight, op, 'weight');
    checkDTypeEq(op, x, weight, 'input and weight');
    checkSameDevice(op, x, weight);
    if (weight.ndim !== 2) throw new Error(`[${op}] weight must be 2-D [out, in], got [${weight.shape.join(', ')}]`);
    if (weight.requiresGrad) throw new Error(`[${op}] the base weight must be frozen (requiresGrad false): LoRA trains only the adapters`);
  } else if (!(weight instanceof QuantizedWeight)) throw new Error(`[${op}] weight must be a Tensor or a QuantizedWeight`);
  else if (weight.device !== x.device) throw new Error(`[${op}] input is on ${x.device}, weight on ${weight.device}`);
  const [O, I] = weight.shape;
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== I) throw new Error(`[${op}] input has ${x.shape[x.ndim - 1]} features, weight expects ${I}`);
  for (const [t, name] of [
    [A, 'lora_A'],
    [B, 'lora_B'],
  ] as const) {
    checkDTypeEq(op, x, t, `input and ${name}`);
    checkSameDevice(op, x, t);
  }
  const r = A.shape[0];
  if (A.ndim !== 2 || A.shape[1] !== I || r < 1) throw new Error(`[${op}] lora_A must be [r, ${I}], got [${A.shape.join(', ')}]`);
  if (B.ndim !== 2 || B.shape[0] !== O || B.shape[1] !== r) throw new Error(`[${op}] lora_B must be [${O}, ${r}], got [${B.shape.join(', ')}]`);
  if (bias) {
    checkTensor(bias, op, 'bias');
    checkDTypeEq(op, x, bias, 'input and bias');
    checkSameDevice(op, x, bias);
    if (bias.ndim !== 1 || bias.shape[0] !== O) throw new Error(`[${op}] bias must be [${O}], got [${bias.shape.join(', ')}]`);
  }
  const s = o.scale;
  const p = o.dropout ?? 0;
  if (!Number.isFinite(s)) throw new Error(`[${op}] scale must be a finite number`);
  if (!(p >= 0 && p < 1)) throw new Error(`[${op}] dropout must be in [0, 1)`);

  const lead = x.shape.slice(0, -1);
  const N = lead.reduce((a, d) => a * d, 1);
  const x2 = reshape(x, [N, I]);
  const b = bias && !bias.isContiguous() ? contiguous(bias) : (bias ?? null);
  const y2 = baseProduct(x2, weight, b);
  const drop = p > 0 && o.training !== false;
  const gen = o.generator ?? defaultGenerator;
  const at = drop ? gen.getState() : null;
  /** The scaled keep mask of this call (drawn again in backward from the recorded counters). */
  const maskOf = (s0: { seed: number; offset: number }): Tensor =>
    mul(bernoulli([N, I], 1 - p, { dtype: x.dtype, device: x.device, generator: new Generator(s0.seed, s0.offset) }), 1 / (1 - p));
  if (at) gen.take(N * I);
  const xd = at ? mul(x2, maskOf(at)) : x2;
  const u = Tensor.empty([N, r], x.dtype, x.device);
  gemm2d(u, xd, T2(A));
  const us = mul(u, s);
  gemm2d(y2, us, T2(B), null, 1);
  const y = reshape(y2, [...lead, O]);
  return record(
    op,
    y,
    [x, bias, A, B],
    (g, saved) => {
      const [xs, uss] = saved;
      const ms = at ? maskOf(at) : null;
      const xds = ms ? mul(reshape(xs, [N, I]), ms) : reshape(xs, [N, I]);
      const g2 = contiguous(reshape(g, [N, O]));
      const gu = Tensor.empty([N, r], g.dtype, g.device);
      gemm2d(gu, g2, B);
      const gus = mul(gu, s);
      let gA: Tensor | null = null;
      let gB: Tensor | null = null;
      if (A.requiresGrad) {
        gA = Tensor.empty([r, I], g.dtype, g.device);
        gemm2d(gA, T2(gus), xds);
      }
      if (B.requiresGrad) {
        gB = Tensor.empty([O, r], g.dtype, g.device);
        gemm2d(gB, T2(g2), uss);
      }
      let gx: Tensor | null = null;
      if (x.requiresGrad) {
        const dx = baseInputGrad(g2, weight);
        if (ms) {
          const t = Tensor.empty([N, I], g.dtype, g.device);
          gemm2d(t, gus, A);
          const tm = mul(t, ms);
          addInPlace(dx, tm);
        } else gemm2d(dx, gus, A, null, 1);
        gx = reshape(dx, x.shape);
      }
      const gb = bias && bias.requiresGrad ? sum(g2, 0) : null;
      return [gx, gb, gA, gB];
    },
    [x2, us],
  );
});
