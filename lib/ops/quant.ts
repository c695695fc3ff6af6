// quant.ts — weight-only quantized storage of a frozen linear weight and the linear op over it
// (bitsandbytes' formats as the reference's `--bits 8|4` / `--load-8bit|4bit` use them, QLoRA).
//
// Formats (kernels and codebook: cpp/quant_checks.h):
//   int8  one int8 code per weight, one f32 scale per output row (absmax / 127): per-output-channel.
//   nf4   two 4-bit codes per byte into the 16 NF4 levels, one f32 absmax per block of 64 consecutive
//         weights (bitsandbytes' default blocksize for 4-bit, no double quantization).
// The weight is quantized once at load (`QuantizedWeight.quantize`) and never changes: it has no gradient.
//
// quantLinear: y = x @ dequant(W)^T + b. Few rows (decode, M <= QUANT_GEMV_ROWS) run the fused
// dequantizing GEMV kernel `quant_matmul`, which reads each code once; more rows (prefill, training)
// expand W into a temporary in x's dtype and run the blocked GEMM — that product is compute bound, and
// the expansion costs one pass over W against M passes of multiply-adds. The backward gives dx (and db)
// only: dx = g @ dequant(W), through the same temporary.
import { Tensor } from '../core/tensor';
import { DType, isFloat } from '../core/dtype';
import { scopedOp, keep } from '../core/memory';
import { record, noGrad } from '../core/autograd';
import { kernel } from '../core/dispatch';
import { checkTensor, checkSameDevice, checkDTypeEq } from './util';
import { reshape, contiguous } from './view';
import { sum } from './reduce';

export type QuantFormat = 'int8' | 'nf4';
export const QUANT_FORMATS: readonly QuantFormat[] = ['int8', 'nf4'];
/** NF4 block size (bitsandbytes' 4-bit default). */
export const NF4_BLOCK = 64;
/** Rows of x up to which quantLinear runs the fused GEMV instead of dequantize + GEMM. */
export const QUANT_GEMV_ROWS = 8;
/** The 16 NF4 levels (QLoRA), as bitsandbytes stores them (float32 values). */
export const NF4_LEVELS: readonly number[] = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
  1.0,
];

/** A frozen weight [N, K] in int8 or NF4 storage (codes uint8, scales float32, on the weight's device). */
export class QuantizedWeight {
  private constructor(
    readonly format: QuantFormat,
    readonly shape: [number, number],
    readonly codes: Tensor,
    readonly scales: Tensor,
    readonly block: number,
    /** The dtype of the weight it replaced (what dequantize() returns by default). */
    readonly dtype: DType,
  ) {}

  /** Quantize a float weight [N, K] (the source is left alone). */
  static quantize(w: Tensor, format: QuantFormat, block = NF4_BLOCK): QuantizedWeight {
    checkTensor(w, 'quantize', 'weight');
    if (!QUANT_FORMATS.includes(format)) throw new Error(`[quantize] unknown format '${format}' (int8 or nf4)`);
    if (!isFloat(w.dtype)) throw new Error(`[quantize] weight must be floating, got ${w.dtype}`);
    if (w.ndim !== 2) throw new Error(`[quantize] weight must be 2-D [out, in], got [${w.shape.join(', ')}]`);
    if (!Number.isInteger(block) || block < 2 || block > 4096 || block % 2) throw new Error(`[quantize] block must be an even integer in [2, 4096]`);
    const [N, K] = w.shape;
    const n = N * K;
    return noGrad(() => {
      const codes = keep(Tensor.empty([format === 'int8' ? n : Math.ceil(n / 2)], 'uint8', w.device));
      const scales = keep(Tensor.empty([format === 'int8' ? N : Math.ceil(n / block)], 'float32', w.device));
      const src = w.isContiguous() ? w : contiguous(w);
      kernel('quantize', [codes, scales, src, format, N, K, block]);
      if (src !== w) src.dispose();
      return new QuantizedWeight(format, [N, K], codes, scales, block, w.dtype);
    });
  }

  get device(): Tensor['device'] {
    return this.codes.device;
  }
  /** Bytes held (codes + scales). */
  get nbytes(): number {
    return this.codes.numel + 4 * this.scales.numel;
  }

  /** The float weight [N, K] these codes stand for. */
  dequantize(dtype: DType = this.dtype): Tensor {
    if (!isFloat(dtype)) throw new Error(`[dequantize] dtype must be floating, got ${dtype}`);
    const out = Tensor.empty(this.shape, dtype, this.device);
    kernel('dequantize', [out, this.codes, this.scales, this.format, this.shape[0], this.shape[1], this.block]);
    return out;
  }

  dispose(): void {
    this.codes.dispose();
    this.scales.dispose();
  }
}

/** out[M, N] = a[M, K] @ b[K, N] (+ bias) (+ beta * out) through the GEMM kernel; 2-D views of any strides. */
export function gemm2d(out: Tensor, a: Tensor, b: Tensor, bias: Tensor | null = null, beta = 0): void {
  const v = (t: Tensor): Tensor => t.makeView([1, t.shape[0], t.shape[1]], [0, t.strides[0], t.strides[1]], t.offset);
  kernel('matmul', [v(out), v(a), v(b), bias, beta]);
}

/** x2 [M, K] @ W^T (+ bias) for a dense or quantized W [N, K]: no autograd (ops build on it). */
export function baseProduct(x2: Tensor, w: Tensor | QuantizedWeight, bias: Tensor | null): Tensor {
  const N = w.shape[0];
  const M = x2.shape[0];
  const y = Tensor.empty([M, N], x2.dtype, x2.device);
  if (w instanceof Tensor) {
    gemm2d(y, x2, w.makeView([w.shape[1], N], [w.strides[1], w.strides[0]], w.offset), bias);
    return y;
  }
  if (M <= QUANT_GEMV_ROWS) {
    const xr = x2.shape[1] > 1 && x2.strides[1] !== 1 ? contiguous(x2) : x2;
    kernel('quant_matmul', [y, xr, w.codes, w.scales, w.format, w.shape[0], w.shape[1], w.block]);
    if (xr !== x2) xr.dispose();
    if (bias) {
      const yb = Tensor.empty([M, N], x2.dtype, x2.device);
      kernel('binary', [yb, y, bias.makeView([M, N], [0, bias.strides[0]], bias.offset), 'add']);
      y.dispose();
      return yb;
    }
    return y;
  }
  const wd = w.dequantize(x2.dtype);
  gemm2d(y, x2, wd.makeView([w.shape[1], N], [1, w.shape[1]], 0), bias);
  wd.dispose();
  return y;
}

/** g2 [M, N] @ W [N, K] (+ beta * into): the input gradient of a linear with a dense or quantized weight. */
export function baseInputGrad(g2: Tensor, w: Tensor | QuantizedWeight): Tensor {
  const out = Tensor.empty([g2.shape[0], w.shape[1]], g2.dtype, g2.device);
  const wd = w instanceof Tensor ? w : w.dequantize(g2.dtype);
  gemm2d(out, g2, wd);
  if (wd !== w) wd.dispose();
  return out;
}

/** y = x @ dequant(W)^T + bias, W quantized [out, in]; differentiable in x and bias (W is frozen). */
export const quantLinear = scopedOp(function quantLinear(x: Tensor, w: QuantizedWeight, bias?: Tensor | null): Tensor {
  checkTensor(x, 'quant_linear');
  if (!(w instanceof QuantizedWeight)) throw new Error('[quant_linear] weight must be a QuantizedWeight');
  if (!isFloat(x.dtype)) throw new Error(`[quant_linear] input must be floating, got ${x.dtype}`);
  if (x.device !== w.device) throw new Error(`[quant_linear] input is on ${x.device}, weight on ${w.device}`);
  const [O, I] = w.shape;
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== I) throw new Error(`[quant_linear] input has ${x.shape[x.ndim - 1]} features, weight expects ${I}`);
  if (bias) {
    checkTensor(bias, 'quant_linear', 'bias');
    checkDTypeEq('quant_linear', x, bias, 'input and bias');
    checkSameDevice('quant_linear', x, bias);
    if (bias.ndim !== 1 || bias.shape[0] !== O) throw new Error(`[quant_linear] bias must be [${O}], got [${bias.shape.join(', ')}]`);
  }
  const lead = x.shape.slice(0, -1);
  const rows = lead.reduce((p, d) => p * d, 1);
  const x2 = reshape(x, [rows, I]);
  const b = bias && !bias.isContiguous() ? contiguous(bias) : (bias ?? null);
  const y = reshape(baseProduct(x2, w, b), [...lead, O]);
  return record(
    'quant_linear',
    y,
    [x, bias],
    (g) => {
      const g2 = reshape(g, [rows, O]);
      const gx = x.requiresGrad ? reshape(baseInputGrad(g2.isContiguous() ? g2 : contiguous(g2), w), x.shape) : null;
      const gb = bias && bias.requiresGrad ? sum(g2, 0) : null;
      return [gx, gb];
    },
    [],
  );
});
