// module.ts — Module: a tree of named parameters and submodules, as torch.nn.Module.
//
// Parameters are long-lived tensors held outside tidy scopes (kept on registration). Names are the
// dotted paths of checkpoints (`layers.0.self_attn.q_proj.weight`), so loading and saving map one to
// one onto safetensors names. Freezing is requiresGrad on the parameters: a frozen parameter gets no
// gradient and its backward work is skipped by the autograd engine.
import { Tensor } from '../core/tensor';
import { keep } from '../core/memory';
import { DType, Device } from '../core/dtype';
import { noGrad } from '../core/autograd';
import { checkOptions, optionKeys } from '../options';
import type { ParamScope } from '../core/recompute';
import { to } from '../ops/view';
import { copyInto } from '../ops/elementwise';

/** Options of `Module.loadStateDict`. */
export interface LoadStateDictOptions {
  /** Throw when a parameter is missing from the state or the state has a name the module lacks (default true). */
  strict?: boolean;
}
const STATE_DICT_KEYS = optionKeys<LoadStateDictOptions>({ strict: true });

export class Module {
  training = true;
  /**
   * Set by ZeRO-3 (lib/app/train/dist_zero3.ts) on the blocks whose parameters it shards: runs a function
   * with this module's parameters present. A model runs such a block through it (LLaMA's decoder layers:
   * recomputed in backward, the scope wrapping both runs, as gradient checkpointing).
   */
  paramScope: ParamScope | null = null;
  private readonly params = new Map<string, Tensor | null>();
  private readonly children = new Map<string, Module>();

  /** Register (or replace) a parameter; null registers an absent optional parameter (e.g. no bias). */
  registerParameter(name: string, t: Tensor | null, requiresGrad = true): Tensor | null {
    if (t) {
      keep(t);
      if (requiresGrad && !t.requiresGrad) t.setRequiresGrad(true);
    }
    const old = this.params.get(name);
    if (old && old !== t) old.dispose();
    this.params.set(name, t);
    return t;
  }
  registerModule<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** [name, tensor] for every parameter, depth first, with dotted names. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this.params) if (t) out.push([prefix + n, t]);
    for (const [n, m] of this.children) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }
  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, m] of this.children) out.push(...m.namedModules(`${prefix}${n}.`));
    return out;
  }
  /** Look up a parameter by dotted name. */
  getParameter(name: string): Tensor | undefined {
    const dot = name.indexOf('.');
    if (this.params.has(name)) return this.params.get(name) ?? undefined;
    if (dot < 0) return undefined;
    // Child names may themselves contain dots (numbered lists are registered as "layers.0").
    for (const [cn, child] of this.children) {
      if (name.startsWith(cn + '.')) {
        const r = child.getParameter(name.slice(cn.length + 1));
        if (r) return r;
      }
    }
    return undefined;
  }
  /** Replace a parameter's tensor by dotted name (used by loaders and dtype/device moves). */
  setParameter(name: string, t: Tensor): void {
    if (this.params.has(name)) {
      const requires = this.params.get(name)?.requiresGrad ?? true;
      this.registerParameter(name, t, requires);
      return;
    }
    for (const [cn, child] of this.children) {
      if (name.startsWith(cn + '.') && child.hasParameter(name.slice(cn.length + 1))) {
        child.setParameter(name.slice(cn.length + 1), t);
        return;
      }
    }
    throw new Error(`[Module] no parameter named '${name}'`);
  }
  hasParameter(name: string): boolean {
    return this.getParameter(name) !== undefined;
  }

  train(flag = true): this {
    this.training = flag;
    for (const m of this.children.values()) m.train(flag);
    return this;
  }
  eval(): this {
    return this.train(false);
  }
  /** Freeze (false) or unfreeze (true) every parameter of this subtree. */
  requiresGrad(flag: boolean): this {
    for (const p of this.parameters()) {
      p.requiresGrad = flag;
      if (!flag) p.zeroGrad();
    }
    return this;
  }
  zeroGrad(): void {
    for (const p of this.parameters()) p.zeroGrad();
  }
  numParameters(onlyTrainable = false): number {
    return this.parameters().reduce((a, p) => a + (!onlyTrainable || p.requiresGrad ? p.numel : 0), 0);
  }

  /** Cast / move every parameter (a copy per parameter; the old tensors are freed). */
  to(target: DType | Device): this {
    for (const [name, p] of this.namedParameters()) {
      const t = noGrad(() => to(p, target));
      this.setParameter(name, t);
    }
    return this;
  }

  /** Copy values into existing parameters (shapes must match exactly). */
  loadStateDict(state: Map<string, Tensor> | Record<string, Tensor>, opts: LoadStateDictOptions = {}): void {
    checkOptions('loadStateDict', opts, STATE_DICT_KEYS);
    const entries = state instanceof Map ? [...state.entries()] : Object.entries(state);
    const mine = new Map(this.namedParameters());
    const missing = new Set(mine.keys());
    const unexpected: string[] = [];
    for (const [n, t] of entries) {
      const p = mine.get(n);
      if (!p) {
        unexpected.push(n);
        continue;
      }
      if (p.shape.join() !== t.shape.join()) throw new Error(`[loadStateDict] '${n}': shape [${t.shape}] does not match parameter [${p.shape}]`);
      noGrad(() => copyInto(p, t));
      missing.delete(n);
    }
    if (opts.strict !== false && (missing.size || unexpected.length))
      throw new Error(
        `[loadStateDict] ${missing.size ? `missing: ${[...missing].slice(0, 10).join(', ')}${missing.size > 10 ? ` (+${missing.size - 10} more)` : ''}` : ''}` +
          `${unexpected.length ? ` unexpected: ${unexpected.slice(0, 10).join(', ')}` : ''}`,
      );
  }

  /** Free every parameter (and gradient), through each submodule's own dispose(). */
  dispose(): void {
    for (const p of this.params.values()) p?.dispose();
    for (const m of this.children.values()) m.dispose();
  }
  /** Detach a submodule (its parameters stay alive: the caller owns them). */
  removeModule(name: string): void {
    this.children.delete(name);
  }
}

/** A numbered list of modules registered as "0", "1", ... */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[];
  constructor(items: M[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.registerModule(String(i), m));
  }
  get length(): number {
    return this.items.length;
  }
}
