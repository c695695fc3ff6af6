// logprobs.ts — log-probabilities of sampled tokens, for callers that report them (the server's
// `logprobs` / `top_logprobs`). They are the model's own distribution: log-softmax of the raw logits, before
// temperature, top-p and top-k shape the distribution the token was drawn from (as vLLM reports by
// default), so a greedy and a sampled reply of the same text get the same numbers.

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

/** log-softmax of `logits` (computed in float64) at `token`, and its `top` best tokens. */
export function stepLogprobs(logits: ArrayLike<number>, token: number, top: number): StepLogprobs {
  const V = logits.length;
  if (!(Number.isInteger(token) && token >= 0 && token < V)) throw new Error(`[logprobs] token ${token} outside [0, ${V})`);
  if (!(Number.isInteger(top) && top >= 0 && top <= MAX_TOP_LOGPROBS))
    throw new Error(`[logprobs] top must be an integer in [0, ${MAX_TOP_LOGPROBS}] (got ${top})`);
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
