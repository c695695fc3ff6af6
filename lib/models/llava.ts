// llava.ts — LLaVA: CLIP vision tower → projector → LLaMA, with both image schemes.
//
// llava-hf scheme: the prompt holds one image token per feature row and those embedding rows are
// overwritten in place. Original scheme: one -200 sentinel per image is replaced by its P rows
// (the sequence grows), labels there are -100, sequences are truncated to maxLength and right-padded.
// Both become one gather: every output row names a source row in [text embeddings; image features;
// a zero row], and indexSelect over that table builds the input embeddings (its backward routes
// gradients to the projector and to the embedding table).
//
// The loss is HF's causal-LM loss (shift by one, mean over labels != -100), computed from the
// rows that predict a supervised label only: the lm_head and cross-entropy never see the rest.
import { Tensor } from '../core/tensor';
import { Module } from '../nn/module';
import { LayerOptions } from '../nn/layers';
import { CLIPVisionModel, CLIPVisionConfig } from './clip';
import { LlamaForCausalLM, LlamaConfig, KVCache } from './llama';
import { PromptPrefill, decodeBatch, type Spliced } from './prompt_prefill';
import { Projector } from './projector';
import { keep, tidy } from '../core/memory';
import { noGrad } from '../core/autograd';
import { fromValues, zeros } from '../ops/creation';
import { reshape, cat, slice, narrow } from '../ops/view';
import { indexSelect, crossEntropy } from '../ops/nn';
import { argmax } from '../ops/reduce';
import { IGNORE_INDEX, IMAGE_TOKEN_INDEX } from '../constants';
import { checkOptions, optionKeys } from '../options';

export type { Spliced } from './prompt_prefill';

export interface LlavaConfig {
  vision: CLIPVisionConfig;
  text: LlamaConfig;
  projectorType: string;
  projectorBias: boolean;
  /** Token id of the image placeholder in llava-hf prompts (expanded: one per feature row). */
  imageTokenIndex: number;
  /** Vision hidden state to use (-2 = penultimate layer). */
  visionFeatureLayer: number;
  /** 'default'/'patch' drop CLS, 'full'/'cls_patch' keep it. */
  visionFeatureSelectStrategy: string;
  /** Spliced sequences are truncated to this (original scheme). */
  maxLength: number;
  imageAspectRatio?: 'square' | 'pad';
  /** Where the config came from: 'llava-hf' or 'llava_llama'. */
  format: 'llava-hf' | 'llava_llama';
}

export interface LlavaBatch {
  /** Token ids per sample: image tokens (llava-hf) or -200 sentinels (original). */
  inputIds: number[][];
  /** 1 for real tokens, 0 for padding; derived from lengths when absent. */
  attentionMask?: number[][];
  /** Labels aligned with inputIds (-100 = not supervised). */
  labels?: number[][];
  /** [N, 3, S, S] images, consumed in order by the image placeholders of the batch. */
  pixelValues?: Tensor | null;
}

export class LlavaForConditionalGeneration extends Module {
  readonly vision: CLIPVisionModel;
  readonly projector: Projector;
  readonly lm: LlamaForCausalLM;
  /** Train the vision tower too (off by default: LLaVA keeps it frozen in both stages). */
  trainVision = false;

  constructor(
    readonly config: LlavaConfig,
    o: LayerOptions = {},
  ) {
    super();
    this.vision = this.registerModule('vision_tower', new Module()).registerModule('vision_model', new CLIPVisionModel(config.vision, o));
    this.projector = this.registerModule(
      'multi_modal_projector',
      new Projector(config.projectorType, this.featureDim(), config.text.hidden_size, config.projectorBias, o),
    );
    this.lm = this.registerModule('language_model', new LlamaForCausalLM(config.text, o));
    this.vision.requiresGrad(false);
  }

  private featureDim(): number {
    return this.config.vision.hidden_size;
  }
  get numImageTokens(): number {
    const P = (this.config.vision.image_size / this.config.vision.patch_size) ** 2;
    return this.keepsCls() ? P + 1 : P;
  }
  private keepsCls(): boolean {
    const s = this.config.visionFeatureSelectStrategy;
    if (s === 'default' || s === 'patch') return false;
    if (s === 'full' || s === 'cls_patch') return true;
    throw new Error(`[llava] unknown vision feature select strategy '${s}'`);
  }

  /** Selected CLIP features [N, P, Cv] (no grad unless the tower is being trained). */
  visionFeatures(pixels: Tensor): Tensor {
    const run = (): Tensor =>
      tidy(() => {
        const h = this.vision.forward(pixels, this.config.visionFeatureLayer);
        return this.keepsCls() ? h : slice(h, 1, 1);
      });
    return this.trainVision ? run() : noGrad(run);
  }

  /** Projected image features [N, P, C]. */
  imageFeatures(pixels: Tensor): Tensor {
    return tidy(() => this.projector.forward(this.visionFeatures(pixels)));
  }

  /** Build input embeddings, key mask, positions and shifted-ready labels for a batch. Rows are padded on
   *  the right, or on the left with `padLeft` (generation: every row's last column is its last token;
   *  unpadded rows only). */
  splice(batch: LlavaBatch, padLeft = false): Spliced {
    const { inputIds } = batch;
    if (!Array.isArray(inputIds) || inputIds.length === 0) throw new Error('[llava] inputIds must be a non-empty array of id arrays');
    if (padLeft && (batch.attentionMask || batch.labels)) throw new Error('[llava] left padding is for unpadded, unlabelled prompts');
    const B = inputIds.length;
    const V = this.config.text.vocab_size;
    const imgTok = this.config.imageTokenIndex;
    const P = this.numImageTokens;
    const emb = this.lm.embed.getParameter('weight')!;
    const C = this.config.text.hidden_size;
    const masks = batch.attentionMask ?? inputIds.map((r) => r.map(() => 1));
    const N = batch.pixelValues ? batch.pixelValues.shape[0] : 0;
    // Count placeholders to choose the scheme and check the images match.
    let sentinels = 0;
    let imageTokens = 0;
    inputIds.forEach((row, b) => {
      if (!Array.isArray(row) || masks[b]?.length !== row.length) throw new Error(`[llava] sample ${b}: inputIds and attentionMask lengths differ`);
      for (const id of row) {
        if (!Number.isInteger(id)) throw new Error(`[llava] sample ${b}: ids must be integers`);
        if (id === IMAGE_TOKEN_INDEX) sentinels++;
        else if (id === imgTok) imageTokens++;
        else if (id < 0 || id >= V) throw new Error(`[llava] sample ${b}: token id ${id} out of range [0, ${V})`);
      }
    });
    if (sentinels && imageTokens) throw new Error('[llava] a batch mixes -200 sentinels and expanded image tokens');
    if (sentinels > N) throw new Error(`[llava] ${sentinels} image placeholders but ${N} images`);
    if (imageTokens && imageTokens !== N * P) throw new Error(`[llava] ${imageTokens} image tokens but ${N} images x ${P} features = ${N * P}`);
    // Row sources: text rows b*T0 + t, then image rows from B*T0, then one zero row. Images of a
    // text-only batch (the reference's dummy images) are encoded and their rows never picked.
    const T0 = Math.max(...inputIds.map((r) => r.length));
    const imgBase = B * T0;
    const zeroRow = imgBase + N * P;
    const rows: number[][] = [];
    const labelsOut: number[][] | null = batch.labels ? [] : null;
    const lengths: number[] = [];
    let img = 0;
    for (let b = 0; b < B; b++) {
      const src: number[] = [];
      const lab: number[] = [];
      const ids = inputIds[b];
      const labs = batch.labels?.[b];
      if (labs && labs.length !== ids.length) throw new Error(`[llava] sample ${b}: labels and inputIds lengths differ`);
      let real = 0;
      for (let t = 0; t < ids.length; t++) {
        if (!masks[b][t] && !imageTokens) continue; // original scheme: drop padding, re-pad below
        if (ids[t] === IMAGE_TOKEN_INDEX) {
          for (let p = 0; p < P; p++) {
            src.push(imgBase + img * P + p);
            lab.push(IGNORE_INDEX);
          }
          img++;
        } else if (imageTokens && ids[t] === imgTok) {
          src.push(imgBase + img * P + (real % P));
          lab.push(labs ? labs[t] : IGNORE_INDEX);
          real++;
          if (real % P === 0) img++;
        } else {
          src.push(b * T0 + t);
          lab.push(labs ? labs[t] : IGNORE_INDEX);
        }
      }
      if (!imageTokens && src.length > this.config.maxLength) {
        src.length = this.config.maxLength;
        lab.length = this.config.maxLength;
      }
      rows.push(src);
      labelsOut?.push(lab);
      lengths.push(imageTokens ? masks[b].reduce((a, m) => a + (m ? 1 : 0), 0) : src.length);
    }
    const T = Math.max(...rows.map((r) => r.length));
    const idx: number[] = [];
    const keyMask: number[] = [];
    const positions: number[][] = [];
    for (let b = 0; b < B; b++) {
      const r = rows[b];
      const off = padLeft ? T - r.length : 0; // row column t holds spliced position t - off
      for (let t = 0; t < T; t++) {
        const u = t - off;
        const real = u >= 0 && u < r.length;
        idx.push(real ? r[u] : zeroRow);
        keyMask.push(real && (!imageTokens || masks[b][u]) ? 1 : 0);
      }
      positions.push(Array.from({ length: T }, (_, t) => Math.max(0, t - off)));
      if (labelsOut) while (labelsOut[b].length < T) labelsOut[b].push(IGNORE_INDEX);
    }
    const embeds = tidy(() => {
      const idsFlat = inputIds.flatMap((r) => [
        ...r.map((id) => (id === IMAGE_TOKEN_INDEX || id === imgTok ? 0 : id)),
        ...new Array(T0 - r.length).fill(0),
      ]);
      const idT = fromValues(idsFlat, [B * T0], 'int64', emb.device);
      const parts = [this.lm.embedTokens(idT)];
      if (N > 0 && batch.pixelValues) parts.push(reshape(this.imageFeatures(batch.pixelValues), [N * P, C]));
      parts.push(zeros([1, C], { dtype: emb.dtype, device: emb.device }));
      const table = cat(parts, 0);
      const gathered = indexSelect(table, 0, fromValues(idx, [B * T], 'int64', emb.device));
      return reshape(gathered, [B, T, C]);
    });
    return { embeds, keyMask: fromValues(keyMask, [B, T], 'bool', emb.device), positions, labels: labelsOut, lengths };
  }

  /** Full logits [B, T, V] (and the spliced labels) for a batch. */
  forward(batch: LlavaBatch): { logits: Tensor; labels: number[][] | null } {
    const s = this.splice(batch);
    const logits = tidy(() => this.lm.logits(this.lm.hidden(s.embeds, s.positions, s.keyMask)));
    s.embeds.dispose();
    s.keyMask.dispose();
    return { logits, labels: s.labels };
  }

  /**
   * Causal-LM loss: mean cross-entropy over positions t whose label[t+1] != -100, predicting it.
   * Only those rows go through lm_head. Returns a scalar float32 tensor and the token count.
   */
  loss(batch: LlavaBatch): { loss: Tensor; tokens: number } {
    if (!batch.labels) throw new Error('[llava] loss needs labels');
    const s = this.splice(batch);
    try {
      const labels = s.labels!;
      const T = labels[0].length;
      const rowsSel: number[] = [];
      const targets: number[] = [];
      labels.forEach((lab, b) => {
        for (let t = 0; t + 1 < T; t++)
          if (lab[t + 1] !== IGNORE_INDEX) {
            rowsSel.push(b * T + t);
            targets.push(lab[t + 1]);
          }
      });
      const loss = tidy(() => {
        const h = this.lm.hidden(s.embeds, s.positions, s.keyMask);
        const C = h.shape[2];
        const dev = h.device;
        if (!rowsSel.length) {
          // Nothing supervised: NaN, as PyTorch's mean over zero targets.
          return crossEntropy(
            zeros([1, this.config.text.vocab_size], { device: dev, dtype: h.dtype }),
            fromValues([IGNORE_INDEX], [1], 'int64', dev),
          );
        }
        const sel = indexSelect(reshape(h, [-1, C]), 0, fromValues(rowsSel, [rowsSel.length], 'int64', dev));
        const logits = this.lm.logits(sel);
        return crossEntropy(logits, fromValues(targets, [targets.length], 'int64', dev));
      });
      return { loss, tokens: rowsSel.length };
    } finally {
      s.embeds.dispose();
      s.keyMask.dispose();
    }
  }

  /** Freeze for a training stage: 1 = projector only, 2 = projector + language model. */
  setStage(stage: 1 | 2, opts: { trainVision?: boolean } = {}): void {
    checkOptions('setStage', opts, optionKeys<{ trainVision?: boolean }>({ trainVision: true }));
    if (stage !== 1 && stage !== 2) throw new Error(`[setStage] stage must be 1 or 2, got ${String(stage)}`);
    this.requiresGrad(false);
    this.projector.requiresGrad(true);
    if (stage === 2) this.lm.requiresGrad(true);
    this.trainVision = !!opts.trainVision;
    if (this.trainVision) this.vision.requiresGrad(true);
  }

  /** Prefill a prompt (one sample) into a fresh KV cache; returns the last position's logits [V]. */
  prefill(inputIds: number[], pixelValues: Tensor | null, capacity: number): { cache: KVCache; logits: Tensor; length: number } {
    return noGrad(() => {
      const s = this.splice({ inputIds: [inputIds], pixelValues });
      const L = s.embeds.shape[1];
      const cache = this.lm.newCache(1, Math.max(capacity, L + 1));
      const logits = tidy(() => {
        const h = this.lm.hidden(s.embeds, s.positions, null, cache);
        return reshape(this.lm.logits(narrow(h, 1, L - 1, 1)), [-1]);
      });
      s.embeds.dispose();
      s.keyMask.dispose();
      return { cache, logits, length: L };
    });
  }

  /**
   * Prefill B prompts at once, left-padded to a common width W, into a fresh KV cache of `capacity` columns.
   * Returns the last column's logits [B, V], each row's spliced length, and the key mask [B][W] (1 = a real
   * key) that the decode steps extend.
   */
  prefillBatch(
    inputIds: number[][],
    pixelValues: Tensor | null,
    capacity: number,
  ): { cache: KVCache; logits: Tensor; lengths: number[]; keyMask: number[][] } {
    const run = this.startPrefill(inputIds, pixelValues, capacity);
    try {
      const logits = run.next()!;
      return { cache: run.cache, logits, lengths: run.lengths, keyMask: run.keyMaskRows() };
    } catch (e) {
      run.cache.dispose();
      throw e;
    } finally {
      run.dispose();
    }
  }

  /** prefillBatch a chunk at a time: splices the prompts (left-padded) and makes their cache; the caller
   *  feeds the columns with `next` (see PromptPrefill). */
  startPrefill(inputIds: number[][], pixelValues: Tensor | null, capacity: number): PromptPrefill {
    const s = noGrad(() => this.splice({ inputIds, pixelValues }, true));
    keep(s.embeds);
    keep(s.keyMask);
    try {
      const [B, W] = s.embeds.shape;
      return new PromptPrefill(this.lm, s, this.lm.newCache(B, Math.max(capacity, W + 1)));
    } catch (e) {
      s.embeds.dispose();
      s.keyMask.dispose();
      throw e;
    }
  }

  /** One decode step of a batch: logits [B, V] for `tokens[b]` at `positions[b]`, advancing the cache;
   *  `keyMask` [B][cache length + 1] marks the real keys (the left padding stays hidden), null: all are. */
  decodeStepBatch(tokens: number[], positions: number[], cache: KVCache, keyMask: number[][] | null): Tensor {
    return noGrad(() =>
      tidy(() => {
        const b = decodeBatch(this.lm, { tokens, positions, cache, keyMask });
        return reshape(this.lm.logits(this.lm.hidden(b.embeds, b.positions, b.keyMask, b.cache)), [tokens.length, -1]);
      }),
    );
  }

  /** Text tokens (no image placeholders) fed to a one-row cache at positions start, start + 1, ...: the
   *  rest of a prompt whose beginning the cache already holds (a reused prefix). Returns the last
   *  position's logits [1, V] and advances the cache. */
  extendPrompt(ids: number[], start: number, cache: KVCache): Tensor {
    if (ids.length === 0) throw new Error('[llava] extendPrompt needs at least one token');
    if (ids.some((id) => id === IMAGE_TOKEN_INDEX || id === this.config.imageTokenIndex))
      throw new Error('[llava] extendPrompt takes text tokens only (an image placeholder needs the full prefill)');
    if (cache.B !== 1 || cache.length !== start) throw new Error(`[llava] extendPrompt: a one-row cache filled to ${start} is needed`);
    return noGrad(() =>
      tidy(() => {
        const dev = this.lm.embed.getParameter('weight')!.device;
        const T = ids.length;
        const e = this.lm.embedTokens(fromValues(ids, [1, T], 'int64', dev));
        const h = this.lm.hidden(e, [Array.from({ length: T }, (_, i) => start + i)], null, cache);
        return reshape(this.lm.logits(narrow(h, 1, T - 1, 1)), [1, -1]);
      }),
    );
  }

  /** One decode step: logits [V] for `token` at position `pos`, advancing the cache. */
  decodeStep(token: number, pos: number, cache: KVCache): Tensor {
    return tidy(() => reshape(this.decodeStepBatch([token], [pos], cache, null), [-1]));
  }

  /** Greedy ids without a cache (recomputes the whole prefix every step): the reference path. */
  greedyNoCache(inputIds: number[], pixelValues: Tensor | null, maxNewTokens: number): number[] {
    const ids = inputIds.slice();
    const out: number[] = [];
    for (let i = 0; i < maxNewTokens; i++) {
      const next = noGrad(() =>
        tidy(() => {
          const { logits } = this.forward({ inputIds: [ids], pixelValues });
          const last = narrow(logits, 1, logits.shape[1] - 1, 1);
          const r = argmax(reshape(last, [-1])).item();
          logits.dispose();
          return r;
        }),
      );
      out.push(next);
      ids.push(next);
    }
    return out;
  }
}
