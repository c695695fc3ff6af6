// projector.ts — the multimodal projector: `linear`, `mlp2x_gelu` and the general `mlpNx_gelu`
// (Linear(Cv→C), then N-1 times [GELU(erf), Linear(C→C)]), or `identity`. Layers are named
// linear_1..linear_N as in llava-hf checkpoints; the loader maps the original `mm_projector.{0,2,..}`.
import { Tensor } from '../core/tensor';
import { Module } from '../nn/module';
import { Linear, LayerOptions } from '../nn/layers';
import { gelu } from '../ops/elementwise';
import { tidy } from '../core/memory';

export function projectorDepth(type: string): number {
  if (type === 'linear') return 1;
  if (type === 'identity') return 0;
  const m = /^mlp(\d+)x_gelu$/.exec(type);
  if (!m || Number(m[1]) < 1) throw new Error(`[projector] unknown projector type '${type}' (linear, mlpNx_gelu, identity)`);
  return Number(m[1]);
}

export class Projector extends Module {
  readonly linears: Linear[] = [];
  constructor(
    readonly type: string,
    visionDim: number,
    textDim: number,
    bias = true,
    o: LayerOptions = {},
  ) {
    super();
    const n = projectorDepth(type);
    if (n === 0 && visionDim !== textDim) throw new Error(`[projector] identity needs equal widths (${visionDim} vs ${textDim})`);
    for (let i = 0; i < n; i++)
      this.linears.push(this.registerModule(`linear_${i + 1}`, new Linear(i === 0 ? visionDim : textDim, textDim, bias, o)));
  }
  forward(x: Tensor): Tensor {
    if (!this.linears.length) return x.clone();
    return tidy(() => {
      let h = this.linears[0].forward(x);
      for (let i = 1; i < this.linears.length; i++) h = this.linears[i].forward(gelu(h));
      return h;
    });
  }
}
