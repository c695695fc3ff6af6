// llama.ts — the LLaMA decoder (HF LlamaForCausalLM): RMSNorm, rotate-half RoPE, grouped-query
// causal attention, SwiGLU MLP, untied lm_head, and a preallocated KV cache.
//
// Shapes: x [B, T, C]; q [B, H, T, D]; k, v [B, Hkv, S, D] with S = cached + T. Positions are
// explicit ([B, T] numbers) so right padding, left padding and spliced image rows all work.
// The KV cache holds one [B, Hkv, capacity, D] buffer per layer and per k/v; a step writes its T new
// rows into place and attends over a narrowed view, so decoding costs one position per token.
// Attention masks: causal (bottom-right, so cached keys stay visible) and an optional key-padding
// mask [B, S] (true = real token).
// A packed forward (hiddenPacked) runs several batches at once, each with its own positions, mask and
// cache (a prompt's prefill chunk beside a decode step of other requests): their tokens go through the
// norms, projections and MLP as one [1, N, C] sequence, so every weight is read once for all of them, and
// only attention runs per batch.
import { Tensor } from '../core/tensor';
import { Module, ModuleList } from '../nn/module';
import { Linear, RMSNorm, Embedding, LayerOptions } from '../nn/layers';
import { add, swiglu, copyInto } from '../ops/elementwise';
import { reshape, permute, narrow, cat } from '../ops/view';
import { rope } from '../ops/nn';
import { scaledDotProductAttention } from '../ops/attention';
import { fromValues, zeros } from '../ops/creation';
import { tidy, keep } from '../core/memory';
import { checkpoint } from '../core/recompute';
import { DType, Device } from '../core/dtype';

export interface LlamaConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  rope_parameters?: { rope_theta?: number; rope_type?: string; factor?: number };
  rope_scaling?: { type?: string; rope_type?: string; factor?: number } | null;
  max_position_embeddings?: number;
  attention_bias?: boolean;
  mlp_bias?: boolean;
  tie_word_embeddings?: boolean;
  bos_token_id?: number;
  eos_token_id?: number | number[];
  pad_token_id?: number;
}

export function ropeTheta(cfg: LlamaConfig): number {
  return cfg.rope_parameters?.rope_theta ?? cfg.rope_theta ?? 10000;
}

/** The factor of linear RoPE scaling (HF `rope_scaling: {type: 'linear', factor}`: frequencies divided by
 *  it), 1 without scaling. The other scalings (dynamic NTK, llama3, yarn, ...) are refused, not ignored. */
export function ropeLinearFactor(cfg: LlamaConfig): number {
  const p = cfg.rope_parameters;
  const r = cfg.rope_scaling ?? (p?.rope_type !== undefined && p.rope_type !== 'default' ? p : null);
  if (!r) return 1;
  const type = ('type' in r ? r.type : undefined) ?? r.rope_type;
  if (type === 'default') return 1;
  if (type !== 'linear') throw new Error(`[llama] RoPE scaling '${String(type)}' is not supported (only linear)`);
  const f = r.factor;
  if (typeof f !== 'number' || !Number.isFinite(f) || f < 1) throw new Error(`[llama] linear RoPE scaling needs a factor >= 1, got ${String(f)}`);
  return f;
}

/** cos/sin tables [B, T, D] for explicit positions (computed in float64, stored in `dtype`); `linearFactor`
 *  divides the frequencies as HF's linear RoPE scaling does (in float32, as HF). */
export function ropeTables(
  positions: number[][],
  D: number,
  theta: number,
  dtype: DType,
  device: Device,
  linearFactor = 1,
): { cos: Tensor; sin: Tensor } {
  const B = positions.length;
  const T = positions[0]?.length ?? 0;
  const half = D / 2;
  const invFreq = Array.from({ length: half }, (_, j) => {
    const f = 1 / Math.pow(theta, (2 * j) / D);
    return linearFactor === 1 ? f : Math.fround(f) / linearFactor;
  });
  const c = new Float64Array(B * T * D);
  const s = new Float64Array(B * T * D);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let j = 0; j < half; j++) {
        // HF computes pos * inv_freq in float32; round the product the same way.
        const f = Math.fround(Math.fround(positions[b][t]) * Math.fround(invFreq[j]));
        const base = (b * T + t) * D;
        c[base + j] = c[base + j + half] = Math.cos(f);
        s[base + j] = s[base + j + half] = Math.sin(f);
      }
  return { cos: fromValues(c, [B, T, D], dtype, device), sin: fromValues(s, [B, T, D], dtype, device) };
}

export class KVCache {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  /** Positions filled so far. */
  length = 0;
  constructor(
    readonly layers: number,
    readonly B: number,
    readonly Hkv: number,
    readonly capacity: number,
    readonly D: number,
    dtype: DType,
    device: Device,
  ) {
    for (let i = 0; i < layers; i++) {
      this.k.push(keep(zeros([B, Hkv, capacity, D], { dtype, device })));
      this.v.push(keep(zeros([B, Hkv, capacity, D], { dtype, device })));
    }
  }
  /** Write T new rows for layer i at the current length; returns views [B, Hkv, length + T, D]. */
  append(i: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const T = k.shape[2];
    if (this.length + T > this.capacity) throw new Error(`[kv_cache] capacity ${this.capacity} exceeded (${this.length} + ${T})`);
    const dk = narrow(this.k[i], 2, this.length, T);
    const dv = narrow(this.v[i], 2, this.length, T);
    copyInto(dk, k);
    copyInto(dv, v);
    dk.dispose();
    dv.dispose();
    return { k: narrow(this.k[i], 2, 0, this.length + T), v: narrow(this.v[i], 2, 0, this.length + T) };
  }
  dispose(): void {
    [...this.k, ...this.v].forEach((t) => t.dispose());
  }

  /**
   * A new cache of `capacity` columns, filled to `length`, holding `rows` of each part's cache in order
   * (continuous batching: rows join and leave a running batch). Each source's filled columns are
   * right-aligned to end at column `length`: a shorter source leaves zero columns on the left (the caller
   * masks them as padding); a longer one loses its first columns, which must be padding for every row kept.
   * A part's `filled` (default: its cache's length) reads only its first `filled` columns: a prefix.
   */
  static gather(parts: readonly { cache: KVCache; rows: readonly number[]; filled?: number }[], length: number, capacity: number): KVCache {
    const first = parts[0]?.cache;
    if (!first) throw new Error('[kv_cache] gather needs at least one part');
    if (!(Number.isInteger(length) && length >= 0 && length <= capacity))
      throw new Error(`[kv_cache] gather: length ${length} must be an integer in [0, capacity ${capacity}]`);
    for (const { cache, rows, filled } of parts) {
      if (filled !== undefined && !(Number.isInteger(filled) && filled >= 0 && filled <= cache.length))
        throw new Error(`[kv_cache] gather: filled ${filled} must be an integer in [0, ${cache.length}]`);
      if (cache.layers !== first.layers || cache.Hkv !== first.Hkv || cache.D !== first.D)
        throw new Error('[kv_cache] gather: parts differ in layers, heads or head size');
      for (const r of rows)
        if (!(Number.isInteger(r) && r >= 0 && r < cache.B)) throw new Error(`[kv_cache] gather: row ${r} not in [0, ${cache.B})`);
    }
    const B = parts.reduce((n, p) => n + p.rows.length, 0);
    const t0 = first.k[0];
    const out = new KVCache(first.layers, B, first.Hkv, capacity, first.D, t0.dtype, t0.device);
    out.length = length;
    let b = 0; // the first output row of the current run
    for (const { cache, rows, filled = cache.length } of parts) {
      const take = Math.min(filled, length);
      for (const [r, n] of runs(rows)) {
        // rows r..r+n-1 of the source, its last `take` filled columns → rows b..b+n-1, ending at `length`
        if (take > 0)
          tidy(() => {
            for (let i = 0; i < first.layers; i++)
              for (const [src, dst] of [
                [cache.k[i], out.k[i]],
                [cache.v[i], out.v[i]],
              ])
                copyInto(narrow(narrow(dst, 0, b, n), 2, length - take, take), narrow(narrow(src, 0, r, n), 2, filled - take, take));
          });
        b += n;
      }
    }
    return out;
  }
}

/** Consecutive runs of row indices: [start, count] pairs, so gather copies a run of rows at once. */
function runs(rows: readonly number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === r) last[1]++;
    else out.push([r, 1]);
  }
  return out;
}

export interface LlamaStep {
  /** cos/sin [B, T, D] for the positions of this step. */
  cos: Tensor;
  sin: Tensor;
  /** Key padding mask [B, S] over all keys (cached + new); true = real. */
  keyMask?: Tensor | null;
  cache?: KVCache | null;
}
/** One batch of a packed step: B rows of T tokens, B·T consecutive tokens of the packed sequence. */
type Segment = LlamaStep & { B: number; T: number };
/** What a layer gets: one batch [B, T, C], or the segments of a packed [1, N, C] sequence. */
type LayerStep = LlamaStep | { segments: Segment[] };

/** One batch of LlamaForCausalLM.hiddenPacked: embeddings [B, T, C] at `positions`, its mask and cache. */
export interface PackedBatch {
  embeds: Tensor;
  positions: number[][];
  keyMask?: Tensor | null;
  cache?: KVCache | null;
}

class LlamaAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;
  constructor(
    readonly C: number,
    readonly H: number,
    readonly Hkv: number,
    readonly D: number,
    bias: boolean,
    o: LayerOptions,
  ) {
    super();
    this.q_proj = this.registerModule('q_proj', new Linear(C, H * D, bias, o));
    this.k_proj = this.registerModule('k_proj', new Linear(C, Hkv * D, bias, o));
    this.v_proj = this.registerModule('v_proj', new Linear(C, Hkv * D, bias, o));
    this.o_proj = this.registerModule('o_proj', new Linear(H * D, C, bias, o));
  }
  forward(x: Tensor, step: LayerStep, layer: number): Tensor {
    return tidy(() => {
      const packed = 'segments' in step;
      const segments = packed ? step.segments : [{ ...step, B: x.shape[0], T: x.shape[1] }];
      const [q, k, v] = [this.q_proj, this.k_proj, this.v_proj].map((p) => p.forward(x));
      const outs: Tensor[] = [];
      let at = 0;
      for (const s of segments) {
        // this segment's tokens as [B, heads, T, D]
        const heads = (t: Tensor, h: number): Tensor =>
          permute(reshape(packed ? narrow(t, 1, at, s.B * s.T) : t, [s.B, s.T, h, this.D]), [0, 2, 1, 3]);
        let ks = rope(heads(k, this.Hkv), s.cos, s.sin);
        let vs = heads(v, this.Hkv);
        if (s.cache) ({ k: ks, v: vs } = s.cache.append(layer, ks, vs));
        const mask = s.keyMask ? reshape(s.keyMask, [s.B, 1, 1, ks.shape[2]]) : null;
        const o = scaledDotProductAttention(rope(heads(q, this.H), s.cos, s.sin), ks, vs, { isCausal: true, mask });
        outs.push(reshape(permute(o, [0, 2, 1, 3]), packed ? [1, s.B * s.T, this.H * this.D] : [s.B, s.T, this.H * this.D]));
        at += s.B * s.T;
      }
      return this.o_proj.forward(outs.length === 1 ? outs[0] : cat(outs, 1));
    });
  }
}

class LlamaMLP extends Module {
  readonly gate_proj: Linear;
  readonly up_proj: Linear;
  readonly down_proj: Linear;
  constructor(C: number, I: number, bias: boolean, o: LayerOptions) {
    super();
    this.gate_proj = this.registerModule('gate_proj', new Linear(C, I, bias, o));
    this.up_proj = this.registerModule('up_proj', new Linear(C, I, bias, o));
    this.down_proj = this.registerModule('down_proj', new Linear(I, C, bias, o));
  }
  forward(x: Tensor): Tensor {
    // silu(gate) * up as one fused op (one pass forward, one pass for both gradients).
    return tidy(() => this.down_proj.forward(swiglu(this.gate_proj.forward(x), this.up_proj.forward(x))));
  }
}

class LlamaDecoderLayer extends Module {
  readonly self_attn: LlamaAttention;
  readonly mlp: LlamaMLP;
  readonly input_layernorm: RMSNorm;
  readonly post_attention_layernorm: RMSNorm;
  constructor(cfg: LlamaConfig, o: LayerOptions) {
    super();
    const C = cfg.hidden_size;
    const H = cfg.num_attention_heads;
    const D = cfg.head_dim ?? C / H;
    const eps = cfg.rms_norm_eps ?? 1e-6;
    this.self_attn = this.registerModule('self_attn', new LlamaAttention(C, H, cfg.num_key_value_heads ?? H, D, !!cfg.attention_bias, o));
    this.mlp = this.registerModule('mlp', new LlamaMLP(C, cfg.intermediate_size, !!cfg.mlp_bias, o));
    this.input_layernorm = this.registerModule('input_layernorm', new RMSNorm(C, eps, o));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new RMSNorm(C, eps, o));
  }
  forward(x: Tensor, step: LayerStep, layer: number): Tensor {
    return tidy(() => {
      const h = add(x, this.self_attn.forward(this.input_layernorm.forward(x), step, layer));
      return add(h, this.mlp.forward(this.post_attention_layernorm.forward(h)));
    });
  }
}

/** LlamaForCausalLM with parameters named as on disk (`model.layers.0...`, `lm_head.weight`). */
export class LlamaForCausalLM extends Module {
  readonly embed: Embedding;
  readonly layers: ModuleList<LlamaDecoderLayer>;
  readonly norm: RMSNorm;
  readonly lmHead: Linear;
  readonly headDim: number;
  /** Recompute each decoder layer in backward instead of keeping its activations (training only). */
  gradientCheckpointing = false;
  constructor(
    readonly config: LlamaConfig,
    o: LayerOptions = {},
  ) {
    super();
    const C = config.hidden_size;
    this.headDim = config.head_dim ?? C / config.num_attention_heads;
    const model = this.registerModule('model', new Module());
    this.embed = model.registerModule('embed_tokens', new Embedding(config.vocab_size, C, o));
    this.layers = model.registerModule(
      'layers',
      new ModuleList(Array.from({ length: config.num_hidden_layers }, () => new LlamaDecoderLayer(config, o))),
    );
    this.norm = model.registerModule('norm', new RMSNorm(C, config.rms_norm_eps ?? 1e-6, o));
    this.lmHead = this.registerModule('lm_head', new Linear(C, config.vocab_size, false, o));
  }

  newCache(B: number, capacity: number): KVCache {
    const w = this.embed.getParameter('weight')!;
    const cfg = this.config;
    return new KVCache(cfg.num_hidden_layers, B, cfg.num_key_value_heads ?? cfg.num_attention_heads, capacity, this.headDim, w.dtype, w.device);
  }

  /**
   * Decoder hidden states after the final norm for input embeddings [B, T, C] at `positions`.
   * `keyMask` [B, S] marks real keys (S = cache length + T); the cache, if given, is advanced.
   */
  hidden(embeds: Tensor, positions: number[][], keyMask?: Tensor | null, cache?: KVCache | null): Tensor {
    const out = tidy(() => {
      const { cos, sin } = ropeTables(positions, this.headDim, ropeTheta(this.config), embeds.dtype, embeds.device, ropeLinearFactor(this.config));
      const step: LlamaStep = { cos, sin, keyMask, cache };
      let h = embeds;
      this.layers.items.forEach((layer, i) => {
        const scope = layer.paramScope;
        if ((this.gradientCheckpointing || scope) && !cache) {
          // Keep only each layer's input; recompute the layer in backward (inside its parameter scope: ZeRO-3).
          const run = (x: Tensor | null, c: Tensor | null, s: Tensor | null, m: Tensor | null): Tensor =>
            layer.forward(x!, { cos: c!, sin: s!, keyMask: m }, i);
          h = checkpoint(run, [h, cos, sin, keyMask ?? null], layer.parameters(), scope ?? undefined);
        } else h = scope ? scope(() => layer.forward(h, step, i)) : layer.forward(h, step, i);
      });
      return this.norm.forward(h);
    });
    if (cache) cache.length += embeds.shape[1];
    return out;
  }

  /**
   * `hidden` for several batches in one forward (inference): each batch keeps its own positions, mask and
   * cache, the linear layers see all their tokens at once. Returns each batch's hidden states [B, T, C];
   * every cache is advanced. The batches must not share a cache.
   */
  hiddenPacked(batches: PackedBatch[]): Tensor[] {
    const caches = batches.map((b) => b.cache).filter((c): c is KVCache => !!c);
    if (new Set(caches).size !== caches.length) throw new Error('[llama] hiddenPacked: two batches share a KV cache');
    const out = tidy(() => {
      const C = this.config.hidden_size;
      const segments: Segment[] = batches.map((b) => {
        const [B, T] = b.embeds.shape;
        const rt = ropeTables(b.positions, this.headDim, ropeTheta(this.config), b.embeds.dtype, b.embeds.device, ropeLinearFactor(this.config));
        return { ...rt, keyMask: b.keyMask, cache: b.cache, B, T };
      });
      let h = cat(
        batches.map((b, i) => reshape(b.embeds, [1, segments[i].B * segments[i].T, C])),
        1,
      );
      this.layers.items.forEach((layer, i) => {
        const scope = layer.paramScope;
        h = scope ? scope(() => layer.forward(h, { segments }, i)) : layer.forward(h, { segments }, i);
      });
      h = this.norm.forward(h);
      let at = 0;
      return segments.map((s) => {
        const part = reshape(narrow(h, 1, at, s.B * s.T), [s.B, s.T, C]);
        at += s.B * s.T;
        return part;
      });
    });
    for (const b of batches) if (b.cache) b.cache.length += b.embeds.shape[1];
    return out;
  }

  logits(hidden: Tensor): Tensor {
    return this.lmHead.forward(hidden);
  }

  embedTokens(ids: Tensor): Tensor {
    return this.embed.forward(ids);
  }
}
