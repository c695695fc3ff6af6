// prompt_prefill.ts — prompts prefilled a chunk at a time (chunked prefill), alone or in one forward with a
// decode step of another batch; LlavaForConditionalGeneration.startPrefill makes them.
import { Tensor } from '../core/tensor';
import { tidy } from '../core/memory';
import { noGrad } from '../core/autograd';
import { fromValues } from '../ops/creation';
import { reshape, narrow } from '../ops/view';
import type { KVCache, LlamaForCausalLM, PackedBatch } from './llama';

/** Prompts spliced for the language model: embeddings [B, T, C], key mask [B, T], positions, labels. */
export interface Spliced {
  embeds: Tensor;
  keyMask: Tensor;
  positions: number[][];
  labels: number[][] | null;
  lengths: number[];
}

/** One decode step of a batch: each row feeds `tokens[b]` at `positions[b]`; `keyMask` [B][cache length + 1]
 *  marks the real keys (the left padding stays hidden), null: all are. */
export interface DecodeStep {
  tokens: number[];
  positions: number[];
  cache: KVCache;
  keyMask: number[][] | null;
}

/** A decode step as a batch of the language model's forward: the tokens' embeddings [B, 1, C]. */
export function decodeBatch(lm: LlamaForCausalLM, d: DecodeStep): PackedBatch {
  const dev = lm.embed.getParameter('weight')!.device;
  const B = d.tokens.length;
  return {
    embeds: lm.embedTokens(fromValues(d.tokens, [B, 1], 'int64', dev)),
    positions: d.positions.map((p) => [p]),
    keyMask: d.keyMask ? fromValues(d.keyMask.flat(), [B, d.keyMask[0].length], 'bool', dev) : null,
    cache: d.cache,
  };
}

/**
 * A batch of prompts prefilled a few columns at a time (chunked prefill), from
 * LlavaForConditionalGeneration.startPrefill. The prompts are spliced once (the vision tower runs then);
 * each `next` feeds the following columns into the cache, so a server can decode other requests between
 * the chunks, and `nextWithStep` does so in the same forward as a decode step of another batch. Every
 * chunk attends to the cache and to itself causally, so the result equals a single prefill up to the
 * blocking of attention's sums. The caller owns `cache`; `dispose` frees the spliced prompt.
 */
export class PromptPrefill {
  /** Columns fed so far, of `width`. */
  fed = 0;
  /** Column count of the left-padded batch. */
  readonly width: number;
  constructor(
    private readonly lm: LlamaForCausalLM,
    private readonly spliced: Spliced,
    readonly cache: KVCache,
  ) {
    this.width = spliced.embeds.shape[1];
  }
  /** Each prompt's spliced length (image rows included). */
  get lengths(): number[] {
    return this.spliced.lengths;
  }
  /** The key mask [B][width] (1 = a real key, 0 = left padding). */
  keyMaskRows(): number[][] {
    const flat = this.spliced.keyMask.toNumbers();
    const W = this.width;
    return Array.from({ length: flat.length / W }, (_, b) => flat.slice(b * W, (b + 1) * W));
  }
  /** Feeds up to `columns` more columns (at least one); returns the last column's logits [B, V] once the
   *  whole prompt is in, null before. */
  next(columns = Infinity): Tensor | null {
    return this.feed(columns, null).logits;
  }

  /** `next` and a decode step of another batch (its own cache) in one forward: the linear layers read
   *  their weights once for both (LlamaForCausalLM.hiddenPacked). Returns `next`'s result and the step's
   *  logits [B', V]. */
  nextWithStep(columns: number, step: DecodeStep): { logits: Tensor | null; step: Tensor } {
    if (step.cache === this.cache) throw new Error('[llava] nextWithStep: the decode step needs its own cache');
    const r = this.feed(columns, step);
    return { logits: r.logits, step: r.step! };
  }

  private feed(columns: number, step: DecodeStep | null): { logits: Tensor | null; step: Tensor | null } {
    if (this.fed >= this.width) throw new Error('[llava] this prefill is complete');
    if (!(columns >= 1)) throw new Error(`[llava] a prefill chunk needs at least one column (got ${columns})`);
    const start = this.fed;
    const n = Math.min(this.width - start, Math.floor(Math.min(columns, this.width)));
    const last = start + n === this.width;
    // The forward advances the caches' lengths once its layers are done; if what follows fails, they go
    // back, so that the same columns and step can be fed again (the batcher retries a failed joint step).
    const lengths = [this.cache.length, step?.cache.length ?? 0];
    try {
      return this.run(start, n, last, step);
    } catch (e) {
      this.cache.length = lengths[0];
      if (step) step.cache.length = lengths[1];
      throw e;
    }
  }

  private run(start: number, n: number, last: boolean, step: DecodeStep | null): { logits: Tensor | null; step: Tensor | null } {
    const s = this.spliced;
    const out = noGrad(() =>
      tidy(() => {
        const chunk: PackedBatch = {
          embeds: start === 0 && last ? s.embeds : narrow(s.embeds, 1, start, n),
          positions: s.positions.map((p) => p.slice(start, start + n)),
          keyMask: last ? s.keyMask : narrow(s.keyMask, 1, 0, start + n),
          cache: this.cache,
        };
        const [h, hs] = step
          ? this.lm.hiddenPacked([chunk, decodeBatch(this.lm, step)])
          : [this.lm.hidden(chunk.embeds, chunk.positions, chunk.keyMask, chunk.cache)];
        return {
          logits: last ? reshape(this.lm.logits(narrow(h, 1, n - 1, 1)), [h.shape[0], -1]) : null,
          step: hs ? reshape(this.lm.logits(hs), [hs.shape[0], -1]) : null,
        };
      }),
    );
    this.fed = start + n;
    return out;
  }
  dispose(): void {
    this.spliced.embeds.dispose();
    this.spliced.keyMask.dispose();
  }
}
