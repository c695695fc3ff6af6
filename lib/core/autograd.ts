// autograd.ts — the define-by-run tape: grad mode, graph nodes, and backward().
//
// Each differentiable op that sees an input requiring grad records a Node holding its inputs, the
// tensors its backward needs (saved as extra references, so tidy() disposing the originals does not
// break backward), and a vjp closure. Inputs that do not require grad get no gradient and cost no
// work. backward() walks the nodes in reverse topological order, accumulates into leaf `.grad`, and
// frees the saved tensors (the graph is single-use, like PyTorch without retain_graph).
//
// Node lifetime is refcounted: a node lives while an output tensor or a downstream node refers to
// it, so disposing a loss that was never backpropagated frees its whole graph.
//
// Ops attach nodes with `record`. A vjp runs later, inside backward, in a scope of its own (as the
// forward op did), so the temporaries it creates are freed and only the gradients it returns live on.
//
// Grad-ready hooks (onGradReady): a leaf's callback runs once per backward pass, as soon as nothing more
// can flow into its .grad — after the last node that has an edge to it, or that declares it among its
// innerLeaves (a checkpointed block whose vjp runs a backward of its own into parameters the outer graph
// cannot see). Data-parallel training starts a gradient's reduction there, while backward goes on
// (torch's post-accumulate-grad hook). Leaves reached only by a nested backward without being declared fire
// at the end of the outermost pass; a gradient arriving after its leaf fired is an error, never a silent
// miss. Nested backward passes (recompute) fire nothing themselves.
import type { Tensor } from './tensor';
import { scoped } from './memory';
import { optionKeys } from '../options';

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run fn with gradient recording off (inference, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Run fn with gradient recording on (e.g. activation recomputation inside noGrad). */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export type VJP = (grad: Tensor, saved: Tensor[]) => (Tensor | null | undefined)[];

const NO_LEAVES: readonly Tensor[] = [];

export class Node {
  refs = 0;
  released = false;
  /** parents[i] is the node or leaf tensor behind input i; null where no gradient is needed. */
  readonly edges: (Node | Tensor | null)[];
  /** Leaves this node's vjp accumulates into through a backward of its own (recompute.ts). */
  innerLeaves: readonly Tensor[] = NO_LEAVES;

  constructor(
    readonly name: string,
    inputs: (Tensor | null)[],
    public saved: Tensor[],
    readonly vjp: VJP,
  ) {
    this.edges = inputs.map((t) => {
      if (!t || !t.requiresGrad) return null;
      if (t.gradFn) {
        t.gradFn.refs++;
        return t.gradFn;
      }
      return t; // a leaf
    });
  }

  /** Drop saved tensors and the references to upstream nodes (recursively when they hit zero). */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const s of this.saved) s.dispose();
    this.saved = [];
    for (const e of this.edges) if (e instanceof Node && --e.refs <= 0) e.release();
  }
}

/** Whether an op on these inputs must record a graph node. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t && t.requiresGrad) return true;
  return false;
}

/**
 * Attach a graph node to `out` when any input requires grad, and return `out`. `saved` are the
 * tensors the vjp needs: the node holds its own reference to each (`ref()`, which no scope tracks),
 * so the op's scope or the caller may dispose the originals.
 */
export function record(name: string, out: Tensor, inputs: (Tensor | null | undefined)[], vjp: VJP, saved: Tensor[] = []): Tensor {
  if (!needsGrad(...inputs)) return out;
  const node = new Node(
    name,
    inputs.map((t) => t ?? null),
    saved.map((s) => s.ref()),
    vjp,
  );
  node.refs++;
  out.gradFn = node;
  out.requiresGrad = true;
  return out;
}

type GradHook = (leaf: Tensor) => void;
const gradHooks = new Map<Tensor, GradHook[]>();

/** Calls `fn(leaf)` once per backward pass when `leaf`'s gradient is final (see the header); returns a
 *  function that removes the hook. `leaf.grad` may be null then (no path carried a gradient). */
export function onGradReady(leaf: Tensor, fn: GradHook): () => void {
  if (typeof fn !== 'function') throw new Error('[onGradReady] fn must be a function');
  if (leaf.gradFn) throw new Error('[onGradReady] the tensor is not a leaf');
  gradHooks.set(leaf, [...(gradHooks.get(leaf) ?? []), fn]);
  return () => {
    const rest = (gradHooks.get(leaf) ?? []).filter((f) => f !== fn);
    if (rest.length) gradHooks.set(leaf, rest);
    else gradHooks.delete(leaf);
  };
}

/** The outermost backward pass's bookkeeping for hooked leaves (null when no pass runs or none is hooked). */
interface HookPass {
  pending: Map<Tensor, number>;
  touched: Set<Tensor>;
  fired: Set<Tensor>;
}
let depth = 0;
let hookPass: HookPass | null = null;

function hookedLeaves(n: Node): Tensor[] {
  const out: Tensor[] = [];
  for (const e of n.edges) if (e && !(e instanceof Node) && gradHooks.has(e)) out.push(e);
  for (const l of n.innerLeaves) if (gradHooks.has(l)) out.push(l);
  return out;
}

function fire(p: HookPass, leaf: Tensor): void {
  if (p.fired.has(leaf)) return;
  p.fired.add(leaf);
  for (const f of gradHooks.get(leaf) ?? []) f(leaf);
}

/** A node is done: its hooked leaves that expect nothing more fire. */
function settle(p: HookPass | null, n: Node): void {
  if (!p) return;
  for (const l of hookedLeaves(n)) {
    const left = (p.pending.get(l) ?? 1) - 1;
    p.pending.set(l, left);
    if (left <= 0) fire(p, l);
  }
}

export interface BackwardOptions {
  /** Keep the graph (saved tensors) for a second backward. */
  retainGraph?: boolean;
}
export const BACKWARD_KEYS = optionKeys<BackwardOptions>({ retainGraph: true });

/**
 * Backpropagate from `root` with upstream gradient `grad`. Called by Tensor.backward, which
 * supplies ones for scalars.
 */
export function runBackward(root: Tensor, grad: Tensor, opts: BackwardOptions, ops: GradOps): void {
  const outer = depth === 0;
  depth++;
  try {
    backwardPass(root, grad, opts, ops, outer);
  } finally {
    depth--;
    if (outer) hookPass = null;
  }
}

function backwardPass(root: Tensor, grad: Tensor, opts: BackwardOptions, rawOps: GradOps, outer: boolean): void {
  // Leaf accumulation, watched for the hooks.
  const ops: GradOps = {
    ...rawOps,
    accumulate: (leaf, g) => {
      const p = hookPass;
      if (p && gradHooks.has(leaf)) {
        if (p.fired.has(leaf))
          throw new Error(
            '[backward] a gradient reached a leaf after its grad-ready hook ran (a checkpointed block did not list it among its params?)',
          );
        p.touched.add(leaf);
      }
      return rawOps.accumulate(leaf, g);
    },
  };
  if (outer && gradHooks.size) hookPass = { pending: new Map(), touched: new Set(), fired: new Set() };
  const start = root.gradFn;
  if (!start) {
    if (root.requiresGrad) {
      // The caller owns `grad`: hand over a second reference, which accumulate may not adopt.
      const r = grad.ref();
      if (!ops.accumulate(root, r)) r.dispose();
      if (hookPass && gradHooks.has(root)) fire(hookPass, root);
    }
    return;
  }
  if (start.released) throw new Error('[backward] the graph was already freed (call backward once, or pass {retainGraph: true})');
  // Reverse topological order by DFS post-order over nodes.
  const order: Node[] = [];
  const seen = new Set<Node>();
  const stack: [Node, number][] = [[start, 0]];
  seen.add(start);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [n, i] = top;
    if (i < n.edges.length) {
      top[1]++;
      const e = n.edges[i];
      if (e instanceof Node && !seen.has(e)) {
        if (e.released) throw new Error('[backward] part of the graph was already freed');
        seen.add(e);
        stack.push([e, 0]);
      }
    } else {
      order.push(n);
      stack.pop();
    }
  }
  const pass = outer ? hookPass : null;
  if (pass) for (const n of order) for (const l of hookedLeaves(n)) pass.pending.set(l, (pass.pending.get(l) ?? 0) + 1);
  const grads = new Map<Node, Tensor>();
  grads.set(start, grad.ref());
  // The gradient being propagated; held here so that a vjp that throws does not leak it.
  let current: Tensor | null = null;
  let next = order.length - 1; // the node being processed; after a throw, it and those below are unprocessed
  let ok = false;
  try {
    noGrad(() => {
      for (let k = order.length - 1; k >= 0; k--) {
        next = k;
        const n = order[k];
        const g = grads.get(n);
        grads.delete(n);
        current = g ?? null;
        if (!g) {
          if (!opts.retainGraph) freeSaved(n);
          settle(pass, n);
          continue;
        }
        // A vjp may hand back g itself (add, reshape...): give each use its own reference.
        const inGrads = scoped(() => n.vjp(g, n.saved)).map((gi) => (gi === g ? g.ref() : gi));
        g.dispose();
        current = null;
        n.edges.forEach((e, i) => {
          const gi = inGrads[i];
          if (!e || !gi) {
            gi?.dispose();
            return;
          }
          if (e instanceof Node) {
            const prev = grads.get(e);
            if (prev) {
              grads.set(e, ops.addInto(prev, gi));
            } else grads.set(e, gi);
          } else {
            if (!ops.accumulate(e, gi)) gi.dispose();
          }
        });
        if (!opts.retainGraph) freeSaved(n);
        settle(pass, n);
      }
      // Leaves fed only by nested passes without being declared: final now.
      if (pass) for (const l of pass.touched) fire(pass, l);
    });
    ok = true;
  } finally {
    // On success only leftovers (gradients of nodes never reached); after a throw, everything pending,
    // and the graph is consumed as a successful backward would have consumed it.
    (current as Tensor | null)?.dispose();
    for (const g of grads.values()) g.dispose();
    if (!ok && !opts.retainGraph) for (let k = next; k >= 0; k--) freeSaved(order[k]);
  }
}

function freeSaved(n: Node): void {
  for (const s of n.saved) s.dispose();
  n.saved = [];
  n.released = true;
}

/** What backward needs from the op layer (injected to keep this file free of op imports). */
export interface GradOps {
  /** leaf.grad += g (creating it from g when absent); true when g itself became leaf.grad. */
  accumulate(leaf: Tensor, g: Tensor): boolean;
  /** Returns a + b, disposing both inputs (or adding in place into a). */
  addInto(a: Tensor, b: Tensor): Tensor;
}
