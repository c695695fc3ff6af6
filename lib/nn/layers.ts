// layers.ts — the basic layers: Linear, LayerNorm, RMSNorm, Embedding. Parameters are created
// uninitialised-but-zeroed by default (checkpoints overwrite them) or with PyTorch's default init
// when `init: true` (kaiming-uniform bound 1/sqrt(fan_in), as nn.Linear).
import { Tensor } from '../core/tensor';
import { DType, Device } from '../core/dtype';
import { zeros, ones, rand, Generator } from '../ops/creation';
import { linear } from '../ops/matmul';
import { QuantizedWeight, quantLinear } from '../ops/quant';
import { loraLinear } from '../ops/lora';
import { layerNorm, rmsNorm, embedding } from '../ops/nn';
import { noGrad } from '../core/autograd';
import { checkOptions, optionKeys } from '../options';
import { mul, sub } from '../ops/elementwise';
import { Module } from './module';

export interface LayerOptions {
  dtype?: DType;
  device?: Device;
  /** PyTorch default initialisation instead of zeros (for layers trained from scratch). */
  init?: boolean;
  generator?: Generator;
}
const LAYER_KEYS = optionKeys<LayerOptions>({ dtype: true, device: true, init: true, generator: true });

/** A layer's positional arguments and options, checked before anything is allocated: a JavaScript caller
 *  who leaves out `bias` or `eps` and passes the options in its place gets an error, not a default layer. */
function checkLayer(name: string, sizes: Record<string, unknown>, opts: unknown, extra: { bias?: unknown; eps?: unknown } = {}): void {
  for (const [k, v] of Object.entries(sizes))
    if (!Number.isSafeInteger(v) || (v as number) < 1) throw new Error(`[${name}] ${k} must be a positive integer, got ${String(v)}`);
  if ('bias' in extra && typeof extra.bias !== 'boolean') throw new Error(`[${name}] bias must be a boolean, got ${typeof extra.bias}`);
  if ('eps' in extra && !(typeof extra.eps === 'number' && extra.eps >= 0 && Number.isFinite(extra.eps)))
    throw new Error(`[${name}] eps must be a finite number >= 0, got ${typeof extra.eps === 'number' ? extra.eps : typeof extra.eps}`);
  checkOptions(name, opts, LAYER_KEYS);
}

function uniform(shape: number[], bound: number, opts: LayerOptions): Tensor {
  return noGrad(() => {
    const u = rand(shape, { dtype: opts.dtype ?? 'float32', device: opts.device, generator: opts.generator });
    const c = sub(u, 0.5);
    const r = mul(c, 2 * bound);
    u.dispose();
    c.dispose();
    return r;
  });
}

/** A LoRA adapter on a Linear: its lora_A / lora_B are the submodules' `weight`s (lib/nn/lora.ts). */
export interface LoraState {
  r: number;
  alpha: number;
  rslora: boolean;
  scale: number;
  dropout: number;
  generator?: Generator;
}

export class Linear extends Module {
  /** The frozen weight in int8 / NF4 storage, which replaces the `weight` parameter (lib/nn/lora.ts). */
  quantized: QuantizedWeight | null = null;
  /** Set when a LoRA adapter is attached (lib/nn/lora.ts addLora). */
  lora: LoraState | null = null;
  get weight(): Tensor {
    return this.getParameter('weight')!;
  }
  get bias(): Tensor | null {
    return this.getParameter('bias') ?? null;
  }
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    bias = true,
    opts: LayerOptions = {},
  ) {
    super();
    checkLayer(new.target.name, { inFeatures, outFeatures }, opts, { bias });
    const o = { dtype: opts.dtype ?? 'float32', device: opts.device };
    const bound = 1 / Math.sqrt(inFeatures);
    this.registerParameter('weight', opts.init ? uniform([outFeatures, inFeatures], bound, opts) : zeros([outFeatures, inFeatures], o));
    this.registerParameter('bias', bias ? (opts.init ? uniform([outFeatures], bound, opts) : zeros([outFeatures], o)) : null);
  }
  forward(x: Tensor): Tensor {
    const w = this.quantized ?? this.weight;
    if (this.lora) {
      const A = this.getParameter('lora_A.weight')!;
      const B = this.getParameter('lora_B.weight')!;
      const { scale, dropout, generator } = this.lora;
      return loraLinear(x, w, this.bias, A, B, { scale, dropout, generator, training: this.training });
    }
    return w instanceof QuantizedWeight ? quantLinear(x, w, this.bias) : linear(x, w, this.bias);
  }
  dispose(): void {
    this.quantized?.dispose();
    this.quantized = null;
    super.dispose();
  }
}

export class LayerNorm extends Module {
  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
    opts: LayerOptions = {},
  ) {
    super();
    checkLayer(new.target.name, { dim }, opts, { eps });
    const o = { dtype: opts.dtype ?? 'float32', device: opts.device };
    this.registerParameter('weight', ones([dim], o));
    this.registerParameter('bias', zeros([dim], o));
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, [this.dim], this.getParameter('weight'), this.getParameter('bias'), this.eps);
  }
}

export class RMSNorm extends Module {
  constructor(
    readonly dim: number,
    readonly eps = 1e-6,
    opts: LayerOptions = {},
  ) {
    super();
    checkLayer(new.target.name, { dim }, opts, { eps });
    this.registerParameter('weight', ones([dim], { dtype: opts.dtype ?? 'float32', device: opts.device }));
  }
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.getParameter('weight'), this.eps);
  }
}

export class Embedding extends Module {
  constructor(
    readonly numEmbeddings: number,
    readonly dim: number,
    opts: LayerOptions = {},
  ) {
    super();
    checkLayer(new.target.name, { numEmbeddings, dim }, opts);
    this.registerParameter('weight', zeros([numEmbeddings, dim], { dtype: opts.dtype ?? 'float32', device: opts.device }));
  }
  forward(ids: Tensor): Tensor {
    return embedding(ids, this.getParameter('weight')!);
  }
}
