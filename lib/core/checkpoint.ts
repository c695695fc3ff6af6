// checkpoint.ts — activation checkpointing: run a block without keeping its activations and
// recompute them during backward (torch.utils.checkpoint).
//
// The forward runs under noGrad and records a single graph node that saves only the block's
// inputs. Its vjp re-runs the block with gradients on from detached copies of those inputs and
// backpropagates the incoming gradient through the recomputed graph: parameters inside the block
// (listed in `params`, since a closure hides them) accumulate their .grad there directly, and the
// inputs' gradients flow on through the outer graph. The block must be deterministic (no dropout).
import { Tensor } from './tensor';
import { noGrad, enableGrad, isGradEnabled } from './autograd';
import { tidy } from './memory';
import { record } from '../ops/util';

export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: (Tensor | null)[], params: Tensor[]): Tensor {
  const needed = isGradEnabled() && (inputs.some((t) => t?.requiresGrad) || params.some((p) => p.requiresGrad));
  if (!needed) return fn(...(inputs as Tensor[]));
  const out = noGrad(() => fn(...(inputs as Tensor[])));
  // record() attaches a node only when an input requires grad; parameters make the block
  // trainable even when its inputs are not, so mark the output first.
  const present = inputs.filter((t): t is Tensor => !!t);
  const res = record('checkpoint', out, present, (g, saved) => {
    const ins = saved.map((s, i) => {
      const d = s.detach();
      if (present[i].requiresGrad) d.setRequiresGrad(true);
      return d;
    });
    const grads = enableGrad(() =>
      tidy(() => {
        const args: (Tensor | null)[] = [];
        let k = 0;
        for (const t of inputs) args.push(t ? ins[k++] : null);
        const y = fn(...(args as Tensor[]));
        y.backward(g);
        return ins.map((d) => {
          const gr = d.grad;
          d.grad = null;
          return gr;
        });
      }),
    );
    ins.forEach((d) => d.dispose());
    return grads;
  }, present);
  if (!res.gradFn) {
    // No input requires grad, only parameters: still needs a node to reach them.
    return recordParamsOnly(res, fn, inputs);
  }
  return res;
}

function recordParamsOnly(out: Tensor, fn: (...xs: Tensor[]) => Tensor, inputs: (Tensor | null)[]): Tensor {
  // A node whose only job is to recompute and backpropagate into the block's parameters.
  const present = inputs.filter((t): t is Tensor => !!t);
  const anchor = present[0];
  const wasReq = anchor.requiresGrad;
  // Temporarily treat the first input as differentiable so record() attaches the node; its
  // gradient is dropped (returned as null).
  anchor.requiresGrad = true;
  try {
    return record('checkpoint', out, [anchor], (g, saved) => {
      enableGrad(() =>
        tidy(() => {
          let k = 0;
          const args = inputs.map((t) => (t ? saved[k++].detach() : null));
          fn(...(args as Tensor[])).backward(g);
        }),
      );
      return [null];
    }, present);
  } finally {
    anchor.requiresGrad = wasReq;
  }
}
