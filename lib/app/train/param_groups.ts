// param_groups.ts — the trainable parameters split into AdamW parameter groups for weight decay, by the
// reference's rule (HF's get_parameter_names): biases and norm weights never decay.
import type { Tensor } from '../../core/tensor';
import type { ParamGroup } from '../../optim/adamw';

/** Trainable parameters split for weight decay: biases and norm weights never decay. */
export function paramGroups(named: [string, Tensor][], weightDecay: number): ParamGroup[] {
  if (!(weightDecay > 0)) return [{ params: named.map(([, p]) => p), weightDecay: 0 }];
  const noDecay = (n: string): boolean => n.endsWith('bias') || /norm/i.test(n);
  const decay = named.filter(([n]) => !noDecay(n)).map(([, p]) => p);
  const rest = named.filter(([n]) => noDecay(n)).map(([, p]) => p);
  return [
    { params: decay, weightDecay },
    { params: rest, weightDecay: 0 },
  ].filter((g) => g.params.length > 0);
}
