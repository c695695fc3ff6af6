// recompute.ts — activation checkpointing: run a block without keeping its activations and
// recompute them during backward (torch.utils.checkpoint).
//
// The forward runs under noGrad and records a single graph node that saves only the block's
// inputs. Its vjp re-runs the block with gradients on from detached copies of those inputs and
// backpropagates the incoming gradient through the recomputed graph: parameters inside the block
// (listed in `params`, since a closure hides them) accumulate their .grad there directly, and the
// inputs' gradients flow on through the outer graph. Random draws inside the block are replayed: every
// generator registered with preserveRandomState has its state saved before the first run, set back to
// it for the recomputation and then returned to where it was (torch's preserve_rng_state), so a dropout
// mask is the same in both runs; anything else in the block must be deterministic.
import { Tensor } from './tensor';
import { noGrad, enableGrad, isGradEnabled, record } from './autograd';
import { tidy } from './memory';

/** A random generator's state, as Generator (lib/ops/creation.ts) exposes it. */
export interface RandomState<S = unknown> {
  getState(): S;
  setState(s: S): void;
}
const tracked = new Set<WeakRef<RandomState>>();

/** Replay `g`'s draws when a checkpointed block is recomputed (held weakly: no need to unregister). */
export function preserveRandomState(g: RandomState): void {
  for (const r of tracked) if (r.deref() === g) return;
  tracked.add(new WeakRef(g));
}

function snapshot(): [RandomState, unknown][] {
  const out: [RandomState, unknown][] = [];
  for (const r of tracked) {
    const g = r.deref();
    if (g) out.push([g, g.getState()]);
    else tracked.delete(r);
  }
  return out;
}

function checkArgs(fn: unknown, inputs: unknown, params: unknown): void {
  if (typeof fn !== 'function') throw new Error(`[checkpoint] fn must be a function, got ${fn === null ? 'null' : typeof fn}`);
  if (!Array.isArray(inputs)) throw new Error('[checkpoint] inputs must be an array of tensors (or nulls)');
  inputs.forEach((t, i) => {
    if (t !== null && !(t instanceof Tensor)) throw new Error(`[checkpoint] inputs[${i}] must be a Tensor or null`);
    if (t) t.assertAlive('checkpoint');
  });
  if (!Array.isArray(params)) throw new Error('[checkpoint] params must be an array of tensors');
  params.forEach((p, i) => {
    if (!(p instanceof Tensor)) throw new Error(`[checkpoint] params[${i}] must be a Tensor`);
  });
}

/** Runs `fn` with a block's parameters present (ZeRO-3 gathers them before and frees them after). */
export type ParamScope = <T>(fn: () => T) => T;
const direct: ParamScope = (fn) => fn();

/**
 * Runs fn(...inputs) keeping only the inputs for backward, which recomputes it. `params` are the trainable
 * tensors fn's closure uses; `scope`, when given, wraps the first run and the recomputation (and a plain run
 * when no gradient is needed).
 */
export function checkpoint<A extends (Tensor | null)[]>(
  fn: (...xs: A) => Tensor,
  inputs: [...A],
  params: Tensor[],
  scope: ParamScope = direct,
): Tensor {
  checkArgs(fn, inputs, params);
  const present = inputs.filter((t): t is Tensor => !!t);
  const wanted = present.map((t) => t.requiresGrad);
  const trainable = wanted.some(Boolean) || params.some((p) => p.requiresGrad);
  if (!isGradEnabled() || !trainable) return scope(() => fn(...inputs));
  if (!present.length) throw new Error('[checkpoint] the block needs at least one tensor input');
  const before = snapshot();
  const out = scope(() => noGrad(() => fn(...inputs)));
  // record() attaches a node only when an input requires grad. When only the parameters do, the
  // first input stands in as the node's edge for the duration of the call; its gradient is dropped.
  const forced = !wanted.some(Boolean);
  if (forced) present[0].requiresGrad = true;
  try {
    const res = record(
      'checkpoint',
      out,
      present,
      (g, saved) => {
        const ins = saved.map((s, i) => {
          const d = s.detach();
          if (wanted[i]) d.setRequiresGrad(true);
          return d;
        });
        const now = snapshot();
        for (const [r, st] of before) r.setState(st);
        let grads: (Tensor | null)[];
        try {
          grads = scope(() =>
            enableGrad(() =>
              tidy(() => {
                let k = 0;
                fn(...(inputs.map((t) => (t ? ins[k++] : null)) as A)).backward(g);
                return ins.map((d) => {
                  const gr = d.grad;
                  d.grad = null;
                  return gr;
                });
              }),
            ),
          );
        } finally {
          for (const [r, st] of now) r.setState(st);
        }
        ins.forEach((d) => d.dispose());
        return grads;
      },
      present,
    );
    // The parameters get their gradients inside the vjp's own backward: the outer pass must know, for its
    // grad-ready hooks (autograd.ts).
    if (res.gradFn) res.gradFn.innerLeaves = params.filter((p) => p.requiresGrad);
    return res;
  } finally {
    if (forced) present[0].requiresGrad = false;
  }
}
