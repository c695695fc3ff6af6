// logprobs.ts — log-probabilities of sampled tokens, for callers that report them (the server's
// `logprobs` / `top_logprobs`). They are the model's own distribution: log-softmax of the raw logits, before
// temperature, top-p and top-k shape the distribution the token was drawn from (as vLLM reports by
// default), so a greedy and a sampled reply of the same text get the same numbers.

import type { LlavaForConditionalGeneration } from '../../models/llava';
import { noGrad } from '../../core/autograd';
import { tidy } from '../../core/memory';
import { narrow } from '../../ops/view';
import { IMAGE_TOKEN_INDEX } from '../../constants';

/** A token and its log-probability. */
export interface TokenLogprob {
  token: number;
  logprob: number;
}

/** The sampled token's log-probability and the `top` most likely tokens (most likely first; ties by id). */
export interface StepLogprobs extends TokenLogprob {
  top: TokenLogprob[];
}

/** Most alternatives a caller may ask for (OpenAI's cap on top_logprobs). */
export const MAX_TOP_LOGPROBS = 20;

/** Whether `top` is a count of alternatives a caller may ask for (an integer in [0, MAX_TOP_LOGPROBS]). */
export const isTopCount = (top: number): boolean => Number.isInteger(top) && top >= 0 && top <= MAX_TOP_LOGPROBS;

/** log-softmax of `logits` (computed in float64) at `token`, and its `top` best tokens. */
export function stepLogprobs(logits: ArrayLike<number>, token: number, top: number): StepLogprobs {
  const V = logits.length;
  if (!(Number.isInteger(token) && token >= 0 && token < V)) throw new Error(`[logprobs] token ${token} outside [0, ${V})`);
  if (!isTopCount(top)) throw new Error(`[logprobs] top must be an integer in [0, ${MAX_TOP_LOGPROBS}] (got ${top})`);
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[i] - max);
  const norm = max + Math.log(sum);
  // The best `top` ids by insertion into a short sorted list (top is at most 20).
  const best: number[] = [];
  for (let i = 0; i < V && top > 0; i++) {
    const x = logits[i];
    if (best.length === top && !(x > logits[best[top - 1]])) continue;
    let at = best.length;
    while (at > 0 && x > logits[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > top) best.pop();
  }
  return {
    token,
    logprob: logits[token] - norm,
    top: best.map((id) => ({ token: id, logprob: logits[id] - norm })),
  };
}

/** Prompt positions fed per forward when scoring a prompt (the event loop runs between them). */
const SCORE_ROWS = 256;

/**
 * Every token of a text prompt (no image) scored by the model: entry t is token t's log-probability given
 * the tokens before it, with the `top` likeliest alternatives; entry 0 is null (nothing precedes it). The
 * prompt goes through the model SCORE_ROWS positions at a time with a KV cache, yielding to the event loop
 * between them, and lm_head runs on those positions only, so neither the thread nor memory is held by a long
 * prompt's whole [T, V] logits.
 */
export async function promptLogprobs(model: LlavaForConditionalGeneration, ids: number[], top: number): Promise<(StepLogprobs | null)[]> {
  if (ids.some((id) => id === IMAGE_TOKEN_INDEX || id === model.config.imageTokenIndex))
    throw new Error('[logprobs] promptLogprobs scores text prompts only (no image placeholders)');
  const out: (StepLogprobs | null)[] = [null];
  const s = noGrad(() => model.splice({ inputIds: [ids], pixelValues: null }));
  const T = s.embeds.shape[1];
  const cache = model.lm.newCache(1, T);
  try {
    for (let at = 0; at < T - 1; at += SCORE_ROWS) {
      const n = Math.min(SCORE_ROWS, T - 1 - at);
      const host = noGrad(() =>
        tidy(() => {
          const h = model.lm.hidden(narrow(s.embeds, 1, at, n), [s.positions[0].slice(at, at + n)], null, cache);
          return model.lm.logits(h).dataSync() as Float32Array | Float64Array;
        }),
      );
      const V = host.length / n;
      for (let r = 0; r < n; r++) out.push(stepLogprobs(host.subarray(r * V, (r + 1) * V), ids[at + r + 1], top));
      await new Promise<void>((r) => setImmediate(r));
    }
  } finally {
    cache.dispose();
    s.embeds.dispose();
    s.keyMask.dispose();
  }
  return out;
}
