// adamw.ts — AdamW (decoupled weight decay, as torch.optim.AdamW) over the fused `adamw` kernel,
// gradient-norm clipping, and the schedules LLaVA trains with.
//
// State per parameter: exp_avg and exp_avg_sq in float32 (float64 for float64 parameters), plus a
// float32 master copy for bf16/f16 parameters, so low-precision weights never accumulate rounding
// error across steps. Parameter groups carry their own lr multiplier and weight decay (LLaVA
// excludes biases and norm weights from decay when decay is on).
import { Tensor } from '../core/tensor';
import { keep } from '../core/memory';
import { noGrad } from '../core/autograd';
import { checkOptions, optionKeys } from '../options';
import { zeros } from '../ops/creation';
import { to } from '../ops/view';
import { kernel } from '../core/dispatch';
import { square, mul, copyInto } from '../ops/elementwise';
import { sum } from '../ops/reduce';

export interface ParamGroup {
  params: Tensor[];
  weightDecay?: number;
  /** Multiplies the scheduled learning rate. */
  lrScale?: number;
}

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}
const ADAMW_KEYS = optionKeys<AdamWOptions>({ lr: true, betas: true, eps: true, weightDecay: true });
const GROUP_KEYS = optionKeys<ParamGroup>({ params: true, weightDecay: true, lrScale: true });

interface SlotState {
  m: Tensor;
  v: Tensor;
  master: Tensor | null;
}

export class AdamW {
  lr: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly groups: Required<ParamGroup>[];
  step = 0;
  private readonly state = new Map<Tensor, SlotState>();

  constructor(params: Tensor[] | ParamGroup[], opts: AdamWOptions = {}) {
    checkOptions('AdamW', opts, ADAMW_KEYS);
    this.lr = opts.lr ?? 1e-3;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    const wd = opts.weightDecay ?? 0.01;
    if (!(this.lr >= 0) || !(this.eps > 0) || !(wd >= 0) || this.betas.some((b) => !(b >= 0 && b < 1)))
      throw new Error('[AdamW] invalid hyperparameters (lr >= 0, 0 <= betas < 1, eps > 0, weightDecay >= 0)');
    const groups: ParamGroup[] = params.length && params[0] instanceof Tensor ? [{ params: params as Tensor[] }] : (params as ParamGroup[]);
    groups.forEach((g, i) => checkOptions(`AdamW param group ${i}`, g, GROUP_KEYS));
    this.groups = groups.map((g) => ({ params: g.params, weightDecay: g.weightDecay ?? wd, lrScale: g.lrScale ?? 1 }));
    for (const g of this.groups)
      for (const p of g.params)
        if (!p.requiresGrad) throw new Error('[AdamW] every parameter must require grad (frozen parameters do not belong in the optimizer)');
  }

  private slot(p: Tensor): SlotState {
    let s = this.state.get(p);
    if (!s) {
      const sdt = p.dtype === 'float64' ? 'float64' : 'float32';
      const lowp = p.dtype === 'bfloat16' || p.dtype === 'float16';
      s = {
        m: keep(zeros(p.shape, { dtype: sdt, device: p.device })),
        v: keep(zeros(p.shape, { dtype: sdt, device: p.device })),
        master: lowp ? keep(noGrad(() => to(p, 'float32'))) : null,
      };
      this.state.set(p, s);
    }
    return s;
  }

  /** Apply one update with the current `.grad`s (parameters without a gradient are skipped). */
  stepUpdate(lr = this.lr): void {
    this.step++;
    for (const g of this.groups)
      for (const p of g.params) {
        if (!p.grad) continue;
        const s = this.slot(p);
        if (!p.isContiguous() || !p.grad.isContiguous()) throw new Error('[AdamW] parameters and gradients must be contiguous');
        kernel('adamw', [p, p.grad, s.m, s.v, s.master, lr * g.lrScale, this.betas[0], this.betas[1], this.eps, g.weightDecay, this.step]);
      }
  }

  zeroGrad(): void {
    for (const g of this.groups) for (const p of g.params) p.zeroGrad();
  }

  /** Moments and master weights by parameter index (for checkpoints). */
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    let i = 0;
    for (const g of this.groups)
      for (const p of g.params) {
        const s = this.state.get(p);
        if (s) {
          out.set(`${i}.exp_avg`, s.m);
          out.set(`${i}.exp_avg_sq`, s.v);
          if (s.master) out.set(`${i}.master`, s.master);
        }
        i++;
      }
    return out;
  }
  /** Restore what stateTensors() saved (copies values into fresh state). */
  loadStateTensors(t: Map<string, Tensor>, step: number): void {
    this.step = step;
    let i = 0;
    for (const g of this.groups)
      for (const p of g.params) {
        const m = t.get(`${i}.exp_avg`);
        if (m) {
          const s = this.slot(p);
          noGrad(() => {
            copyInto(s.m, m);
            copyInto(s.v, t.get(`${i}.exp_avg_sq`)!);
            const ms = t.get(`${i}.master`);
            if (s.master && ms) copyInto(s.master, ms);
          });
        }
        i++;
      }
  }

  dispose(): void {
    for (const s of this.state.values()) [s.m, s.v, s.master].forEach((t) => t?.dispose());
    this.state.clear();
  }
}

/** Scale gradients so their global L2 norm is at most maxNorm; returns the norm before clipping. */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  if (!(maxNorm > 0)) throw new Error('[clipGradNorm] maxNorm must be positive');
  return noGrad(() => {
    let total = 0;
    for (const p of params) {
      if (!p.grad) continue;
      const g32 = p.grad.dtype === 'float32' || p.grad.dtype === 'float64' ? p.grad : to(p.grad, 'float32');
      const sq = square(g32);
      const s = sum(sq);
      total += s.item();
      [sq, s].forEach((t) => t.dispose());
      if (g32 !== p.grad) g32.dispose();
    }
    const norm = Math.sqrt(total);
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1)
      for (const p of params) {
        if (!p.grad) continue;
        const scaled = mul(p.grad, coef);
        copyInto(p.grad, scaled);
        scaled.dispose();
      }
    return norm;
  });
}

/** Linear warmup from 0 over ceil(warmupRatio * total) steps, then cosine decay to 0 (HF's schedule). */
export function cosineWithWarmup(step: number, totalSteps: number, baseLr: number, warmupRatio = 0.03): number {
  const warm = Math.ceil(warmupRatio * totalSteps);
  if (step < warm) return (baseLr * step) / Math.max(1, warm);
  const progress = (step - warm) / Math.max(1, totalSteps - warm);
  return baseLr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
