// clip.ts — the CLIP vision transformer (HF CLIPVisionModel) as LLaVA uses it.
//
// [B, 3, S, S] pixels → patch embedding (stride = kernel conv, no bias) → prepend the class
// embedding → add position embeddings → pre_layrnorm → pre-LN encoder layers (bidirectional MHA,
// quick_gelu MLP). hidden_states[0] is the pre_layrnorm output and hidden_states[k] the output of
// layer k, so feature layer -2 needs only L-1 layers: the rest are never run. post_layernorm is
// loaded (it is in every checkpoint) but unused, as in LLaVA.
import { Tensor } from '../core/tensor';
import { Module, ModuleList } from '../nn/module';
import { Linear, LayerNorm, LayerOptions } from '../nn/layers';
import { zeros } from '../ops/creation';
import { add, quickGelu, gelu } from '../ops/elementwise';
import { reshape, permute, cat, expand, unsqueeze } from '../ops/view';
import { patchEmbed } from '../ops/nn';
import { scaledDotProductAttention } from '../ops/attention';
import { tidy } from '../core/memory';

export interface CLIPVisionConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_channels?: number;
  image_size: number;
  patch_size: number;
  hidden_act?: string;
  layer_norm_eps?: number;
}

class CLIPAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(
    readonly C: number,
    readonly H: number,
    o: LayerOptions,
  ) {
    super();
    this.q_proj = this.registerModule('q_proj', new Linear(C, C, true, o));
    this.k_proj = this.registerModule('k_proj', new Linear(C, C, true, o));
    this.v_proj = this.registerModule('v_proj', new Linear(C, C, true, o));
    this.out_proj = this.registerModule('out_proj', new Linear(C, C, true, o));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [B, T] = x.shape;
      const D = this.C / this.H;
      const heads = (t: Tensor): Tensor => permute(reshape(t, [B, T, this.H, D]), [0, 2, 1, 3]);
      const o = scaledDotProductAttention(heads(this.q_proj.forward(x)), heads(this.k_proj.forward(x)), heads(this.v_proj.forward(x)));
      return this.out_proj.forward(reshape(permute(o, [0, 2, 1, 3]), [B, T, this.C]));
    });
  }
}

class CLIPEncoderLayer extends Module {
  readonly self_attn: CLIPAttention;
  readonly layer_norm1: LayerNorm;
  readonly layer_norm2: LayerNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(
    readonly cfg: CLIPVisionConfig,
    o: LayerOptions,
  ) {
    super();
    const C = cfg.hidden_size;
    const eps = cfg.layer_norm_eps ?? 1e-5;
    this.self_attn = this.registerModule('self_attn', new CLIPAttention(C, cfg.num_attention_heads, o));
    this.layer_norm1 = this.registerModule('layer_norm1', new LayerNorm(C, eps, o));
    const mlp = this.registerModule('mlp', new Module());
    this.fc1 = mlp.registerModule('fc1', new Linear(C, cfg.intermediate_size, true, o));
    this.fc2 = mlp.registerModule('fc2', new Linear(cfg.intermediate_size, C, true, o));
    this.layer_norm2 = this.registerModule('layer_norm2', new LayerNorm(C, eps, o));
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = add(x, this.self_attn.forward(this.layer_norm1.forward(x)));
      const act =
        this.cfg.hidden_act === 'gelu'
          ? gelu(this.fc1.forward(this.layer_norm2.forward(h)))
          : quickGelu(this.fc1.forward(this.layer_norm2.forward(h)));
      return add(h, this.fc2.forward(act));
    });
  }
}

export class CLIPVisionModel extends Module {
  readonly layers: ModuleList<CLIPEncoderLayer>;
  readonly preLayerNorm: LayerNorm;
  constructor(
    readonly config: CLIPVisionConfig,
    o: LayerOptions = {},
  ) {
    super();
    const C = config.hidden_size;
    const p = config.patch_size;
    const P = (config.image_size / p) ** 2;
    const dt = { dtype: o.dtype ?? 'float32', device: o.device } as const;
    const emb = this.registerModule('embeddings', new Module());
    emb.registerParameter('class_embedding', zeros([C], dt));
    emb.registerModule('patch_embedding', new Module()).registerParameter('weight', zeros([C, config.num_channels ?? 3, p, p], dt));
    emb.registerModule('position_embedding', new Module()).registerParameter('weight', zeros([P + 1, C], dt));
    this.preLayerNorm = this.registerModule('pre_layrnorm', new LayerNorm(C, config.layer_norm_eps ?? 1e-5, o));
    const enc = this.registerModule('encoder', new Module());
    this.layers = enc.registerModule(
      'layers',
      new ModuleList(Array.from({ length: config.num_hidden_layers }, () => new CLIPEncoderLayer(config, o))),
    );
    this.registerModule('post_layernorm', new LayerNorm(C, config.layer_norm_eps ?? 1e-5, o));
  }

  /** Number of encoder layers to run so that hidden_states[featureLayer] is the last output. */
  layersFor(featureLayer: number): number {
    const L = this.config.num_hidden_layers;
    const idx = featureLayer < 0 ? L + 1 + featureLayer : featureLayer;
    if (idx < 0 || idx > L) throw new Error(`[clip] feature layer ${featureLayer} out of range for ${L} layers`);
    return idx;
  }

  /** hidden_states[featureLayer] for pixels [B, 3, S, S]: [B, 1 + P, C]. */
  forward(pixels: Tensor, featureLayer = -1): Tensor {
    const S = this.config.image_size;
    if (pixels.ndim !== 4 || pixels.shape[2] !== S || pixels.shape[3] !== S)
      throw new Error(`[clip] pixel_values must be [B, ${this.config.num_channels ?? 3}, ${S}, ${S}], got [${pixels.shape.join(', ')}]`);
    const n = this.layersFor(featureLayer);
    return tidy(() => {
      const B = pixels.shape[0];
      const C = this.config.hidden_size;
      const w = this.getParameter('embeddings.patch_embedding.weight')!;
      const x0 = pixels.dtype === w.dtype ? pixels : pixels.to(w.dtype);
      const patches = patchEmbed(x0, w);
      const cls = expand(reshape(this.getParameter('embeddings.class_embedding')!, [1, 1, C]), [B, 1, C]);
      const tokens = cat([cls, patches], 1);
      let h = this.preLayerNorm.forward(add(tokens, unsqueeze(this.getParameter('embeddings.position_embedding.weight')!, 0)));
      for (let i = 0; i < n; i++) h = this.layers.items[i].forward(h);
      return h;
    });
  }
}
