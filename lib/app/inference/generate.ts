// generate.ts — autoregressive generation for LLaVA with the KV cache: prefill the prompt (image rows
// spliced in), then one decode step per new token. Streaming (async generator of text pieces) and
// non-streaming (`generateText`) forms.
//
// Decisions:
// - Sampling runs on the host in float64 from the step's logits: softmax(logits / temperature), then
//   top-k (keep the k most probable), then top-p (keep the smallest set, in descending probability, whose
//   cumulative probability reaches p), renormalise, draw with a seeded PRNG. Ties are broken by the lower
//   token id, so a tiny top_p or temperature <= 0.001 (the model worker's threshold) is exactly greedy.
// - Greedy is a host argmax (first maximum), like torch.argmax.
// - max_new_tokens is capped by max_position_embeddings − (spliced prompt length), as the model worker does;
//   a prompt that already fills the context is an error.
// - EOS: the config's eos_token_id (number or list), else the tokenizer's; the EOS token is part of `ids`
//   (HF generate includes it) but never of the text (special tokens are skipped when decoding).
// - Stop strings: generation ends at the first occurrence of any stop string in the decoded reply; the
//   stop string and anything after it are dropped. Text that could still become a stop string is held
//   back from the stream until it is decided.
// - Streaming decode re-decodes the whole reply (the LLaMA decoder strips the first piece's leading
//   space, which a windowed decode would get wrong) and emits only the new suffix; a trailing U+FFFD
//   (an incomplete UTF-8 sequence from byte-fallback tokens) is held back until its bytes complete, so
//   multi-byte characters come out whole. At the end everything still held is flushed.
// - Each sampled token is yielded exactly once; the last piece carries `finishReason`.
import { Tensor } from '../../core/tensor';
import { checkOptions, optionKeys } from '../../options';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { tokenizerImageToken, expandImageTokens } from '../processing/preprocess';
import { DEFAULT_MAX_NEW_TOKENS, IMAGE_TOKEN_INDEX, IGNORE_INDEX } from '../../constants';
import { mulberry32, mixSeed } from '../util/random';
import { pyStrip } from '../util/pyformat';
import type { StepLogprobs } from './logprobs';

export type FinishReason = 'eos' | 'stop' | 'length';

export interface GeneratedPiece {
  /** The sampled token id. */
  token: number;
  /** Text that became final with this token ('' while held back). */
  text: string;
  /** 0-based index of the token in the reply. */
  index: number;
  /** Set on the last piece. */
  finishReason?: FinishReason;
  /** The token's log-probability and the likeliest alternatives, when the request asked for them
   *  (BatchRequest.logprobs). */
  logprobs?: StepLogprobs;
}

export interface SamplingOptions {
  /** <= 0.001 → greedy (model worker threshold). Default 0 (greedy). */
  temperature?: number;
  /** Nucleus sampling: keep the smallest set with cumulative probability >= topP. Default 1 (off). */
  topP?: number;
  /** Keep only the k most probable tokens. Default off. */
  topK?: number;
}

export interface GenerateOptions extends SamplingOptions {
  /** Prompt ids: llava-hf models take expanded image tokens (or -200 sentinels, expanded here), original
   *  models take one -200 per image. Give this or `prompt`. */
  promptIds?: number[];
  /** Prompt text with `<image>` placeholders, tokenized with `encodePrompt`. */
  prompt?: string;
  /** [N, 3, S, S] images for the prompt's placeholders, in the model's dtype/device. */
  pixelValues?: Tensor | null;
  /** Default 512; capped by max_position_embeddings − prompt length. */
  maxNewTokens?: number;
  /** PRNG seed for sampling (default: random). */
  seed?: number;
  /** Stop strings (checked on the decoded reply, removed from the output). */
  stop?: string | string[] | null;
  /** Override the EOS id(s); null disables EOS stopping. Default: config eos_token_id, else the tokenizer's. */
  eosTokenId?: number | number[] | null;
}
export const GENERATE_KEYS = optionKeys<GenerateOptions>({
  temperature: true,
  topP: true,
  topK: true,
  promptIds: true,
  prompt: true,
  pixelValues: true,
  maxNewTokens: true,
  seed: true,
  stop: true,
  eosTokenId: true,
});

export interface GenerateResult {
  text: string;
  ids: number[];
  finishReason: FinishReason;
  /** Positions the prompt occupies after splicing (image rows included). */
  promptLength: number;
}

/** The model-worker rule: sampling iff temperature > 0.001. */
export function isGreedy(o: SamplingOptions): boolean {
  return !((o.temperature ?? 0) > 0.001);
}

/** A seeded uniform [0, 1) generator with 53-bit resolution (two mulberry32 draws). */
export function seededRandom(seed: number): () => number {
  const r = mulberry32(mixSeed(seed >>> 0, Math.floor(seed / 4294967296) >>> 0));
  return () => {
    const hi = Math.floor(r() * 2 ** 26);
    const lo = Math.floor(r() * 2 ** 27);
    return (hi * 2 ** 27 + lo) / 2 ** 53;
  };
}

function argmaxHost(x: ArrayLike<number>): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

function checkFinite(logits: ArrayLike<number>): void {
  for (let i = 0; i < logits.length; i++) if (Number.isNaN(logits[i])) throw new Error(`[generate] logits contain NaN (token ${i})`);
}

/**
 * The sampling distribution after temperature, top-k and top-p: kept token ids in descending probability
 * (ties: lower id first) and their renormalised probabilities (float64).
 */
export function samplingDistribution(logits: ArrayLike<number>, o: SamplingOptions): { ids: number[]; probs: Float64Array } {
  const V = logits.length;
  if (V === 0) throw new Error('[generate] empty logits');
  checkFinite(logits);
  const T = o.temperature ?? 1;
  if (!(T > 0)) throw new Error(`[generate] samplingDistribution needs temperature > 0 (got ${T})`);
  const topP = o.topP ?? 1;
  const topK = o.topK ?? 0;
  if (!(topP > 0 && topP <= 1)) throw new Error(`[generate] topP must be in (0, 1] (got ${topP})`);
  if (!(Number.isInteger(topK) && topK >= 0)) throw new Error(`[generate] topK must be a non-negative integer (got ${topK})`);
  let m = -Infinity;
  for (let i = 0; i < V; i++) m = Math.max(m, logits[i] / T);
  if (m === -Infinity) throw new Error('[generate] every logit is -inf');
  const p = new Float64Array(V);
  for (let i = 0; i < V; i++) p[i] = Math.exp(logits[i] / T - m);
  let order = Array.from({ length: V }, (_, i) => i);
  const needSort = topP < 1 || (topK > 0 && topK < V);
  if (needSort) order.sort((a, b) => p[b] - p[a] || a - b);
  if (topK > 0 && topK < V) order = order.slice(0, topK);
  let total = 0;
  for (const i of order) total += p[i];
  if (topP < 1) {
    let cum = 0;
    let n = 0;
    while (n < order.length) {
      cum += p[order[n]] / total;
      n++;
      if (cum >= topP) break;
    }
    order = order.slice(0, n);
    total = 0;
    for (const i of order) total += p[i];
  }
  const probs = new Float64Array(order.length);
  order.forEach((id, k) => (probs[k] = p[id] / total));
  return { ids: order, probs };
}

/** One token from step logits: greedy argmax, or a draw from `samplingDistribution`. */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, rng: () => number): number {
  if (isGreedy(o)) {
    checkFinite(logits);
    return argmaxHost(logits);
  }
  const { ids, probs } = samplingDistribution(logits, o);
  const u = rng();
  let cum = 0;
  for (let k = 0; k < ids.length; k++) {
    cum += probs[k];
    if (u < cum) return ids[k];
  }
  return ids[ids.length - 1]; // rounding: u landed past the last cumulative sum
}

/**
 * Incremental detokenizer: push ids, get the text that is final so far. Text that may still turn into a
 * stop string, and a trailing incomplete UTF-8 sequence, are held back until decided.
 */
export class StreamDecoder {
  readonly ids: number[] = [];
  /** Decoded reply (up to a stop string once one is found). */
  private text = '';
  private emitted = 0;
  stopped = false;
  private readonly stops: string[];
  /** Ids the reply continues, decoded in front of it and cut off (see the constructor). */
  private readonly context: number[] = [];
  private readonly contextChars: number = 0;

  /** `context`: ids the reply follows (the prompt's last), decoded with it so that the reply's text is
   *  what it adds to them: a tokenizer that drops the leading space at the start of a text (SentencePiece)
   *  keeps a continuation's " Paris" whole. Unused if they do not decode to whole characters. */
  constructor(
    private readonly tokenizer: Pick<Tokenizer, 'decode' | 'vocabSize'>,
    stop: string | string[] | null | undefined = null,
    context: readonly number[] = [],
  ) {
    this.stops = (stop === null || stop === undefined ? [] : Array.isArray(stop) ? stop : [stop]).filter((s) => s.length > 0);
    const ctx = context.filter((t) => t < tokenizer.vocabSize);
    const text = ctx.length ? tokenizer.decode(ctx) : '';
    if (ctx.length && !text.includes('\ufffd')) [this.context, this.contextChars] = [ctx, text.length];
  }

  /** Adds a token; returns newly final text. After a stop string is found, `stopped` is true. */
  push(id: number): string {
    if (this.stopped) throw new Error('[generate] StreamDecoder: push after a stop string');
    this.ids.push(id);
    // Ids past the tokenizer's vocabulary (embedding rows padded to a multiple of 64) decode to nothing.
    const ids = this.ids.filter((t) => t < this.tokenizer.vocabSize);
    const full = this.context.length ? this.tokenizer.decode([...this.context, ...ids]).slice(this.contextChars) : this.tokenizer.decode(ids);
    // Earliest stop string at or after the part that was still undecided.
    const maxStop = Math.max(0, ...this.stops.map((s) => s.length));
    const from = Math.max(0, this.emitted - maxStop);
    let cut = -1;
    for (const s of this.stops) {
      const at = full.indexOf(s, from);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.text = full.slice(0, Math.max(cut, 0));
      return this.flush();
    }
    this.text = full;
    let end = full.length;
    // Hold back an incomplete multi-byte character (decoded as U+FFFD until its bytes arrive).
    while (end > this.emitted && full.charCodeAt(end - 1) === 0xfffd) end--;
    // Hold back the longest tail that is a proper prefix of a stop string.
    let hold = 0;
    for (const s of this.stops)
      for (let k = Math.min(s.length - 1, end - this.emitted); k > hold; k--)
        if (full.slice(end - k, end) === s.slice(0, k)) {
          hold = k;
          break;
        }
    return this.take(end - hold);
  }

  /** Everything not yet emitted (call when generation ends for a reason other than a stop string). */
  flush(): string {
    return this.take(this.text.length);
  }

  /** The whole reply text (stop string removed). */
  get fullText(): string {
    return this.text;
  }

  private take(end: number): string {
    if (end <= this.emitted) return '';
    // The decoded prefix can change only in held-back text; emitted text is never revised.
    const piece = this.text.slice(this.emitted, end);
    this.emitted = end;
    return piece;
  }
}

/** The piece the `index`-th sampled token of a reply makes: the text that became final, and why the reply
 *  ends if it does (an EOS id, a stop string, or the cap of `maxNew` tokens reached). */
export function tokenPiece(dec: StreamDecoder, token: number, index: number, maxNew: number, eos: readonly number[]): GeneratedPiece {
  if (eos.includes(token)) return { token, text: dec.flush(), index, finishReason: 'eos' };
  const text = dec.push(token);
  if (dec.stopped) return { token, text, index, finishReason: 'stop' };
  if (index === maxNew - 1) return { token, text: text + dec.flush(), index, finishReason: 'length' };
  return { token, text, index };
}

/** EOS ids from the model config (text config eos_token_id, number or list), else the tokenizer's. */
export function eosIds(model: LlavaForConditionalGeneration, tokenizer?: Pick<Tokenizer, 'eosId'>): number[] {
  const e = model.config.text.eos_token_id;
  if (Array.isArray(e)) return e.slice();
  if (typeof e === 'number') return [e];
  return tokenizer?.eosId !== undefined ? [tokenizer.eosId] : [];
}

/** Prompt text with `<image>` → ids the model expects (llava-hf: expanded image tokens; original: -200). */
export function encodePrompt(model: LlavaForConditionalGeneration, tokenizer: Tokenizer, prompt: string): number[] {
  const ids = tokenizerImageToken(prompt, tokenizer, IMAGE_TOKEN_INDEX);
  return prepareIds(model, ids);
}

/** For llava-hf models, expand -200 sentinels to numImageTokens copies of the image token id. */
export function prepareIds(model: LlavaForConditionalGeneration, ids: number[]): number[] {
  if (model.config.format !== 'llava-hf' || !ids.includes(IMAGE_TOKEN_INDEX)) return ids.slice();
  return expandImageTokens(
    ids,
    ids.map(() => IGNORE_INDEX),
    model.numImageTokens,
    model.config.imageTokenIndex,
  ).inputIds;
}

/** Positions a prompt occupies once image rows are spliced in. */
export function splicedLength(model: LlavaForConditionalGeneration, ids: number[]): number {
  const sentinels = ids.filter((id) => id === IMAGE_TOKEN_INDEX).length;
  return ids.length + sentinels * (model.numImageTokens - 1);
}

/** The context length: text max_position_embeddings (original checkpoints: also the training max length). */
export function contextLength(model: LlavaForConditionalGeneration): number {
  return model.config.text.max_position_embeddings ?? model.config.maxLength;
}

/** The checked decoding settings of a generation call (`where` names it in errors): sampling, the requested
 *  token cap and the EOS ids. */
export function decodingSettings(
  model: LlavaForConditionalGeneration,
  tokenizer: Tokenizer,
  o: SamplingOptions & Pick<GenerateOptions, 'maxNewTokens' | 'eosTokenId'>,
  where: string,
): { sampling: SamplingOptions; requested: number; eos: number[] } {
  const requested = o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  if (!(Number.isInteger(requested) && requested >= 0)) throw new Error(`[${where}] maxNewTokens must be a non-negative integer (got ${requested})`);
  const temperature = o.temperature ?? 0;
  if (!(temperature >= 0)) throw new Error(`[${where}] temperature must be >= 0 (got ${temperature})`);
  const sampling: SamplingOptions = { temperature, topP: o.topP, topK: o.topK };
  if (!isGreedy(sampling)) samplingDistribution([0], sampling); // validates topP/topK up front
  const eos = o.eosTokenId === null ? [] : o.eosTokenId === undefined ? eosIds(model, tokenizer) : ([] as number[]).concat(o.eosTokenId);
  return { sampling, requested, eos };
}

/** A prompt as the model takes it: its ids (promptIds prepared, or the prompt text encoded), the positions
 *  they take once spliced, and the new tokens the context leaves. `name` names it in errors (a batch's
 *  "prompt 2"). */
export function resolvePrompt(
  model: LlavaForConditionalGeneration,
  tokenizer: Tokenizer,
  p: Pick<GenerateOptions, 'promptIds' | 'prompt'>,
  where: string,
  name?: string,
): { ids: number[]; length: number; room: number } {
  if (!p.promptIds && p.prompt === undefined) throw new Error(`[${where}] ${name ? `${name}: ` : ''}give promptIds or prompt`);
  const ids = p.promptIds ? prepareIds(model, p.promptIds) : encodePrompt(model, tokenizer, p.prompt!);
  if (ids.length === 0) throw new Error(`[${where}] ${name ? `${name} is empty` : 'empty prompt'}`);
  const length = splicedLength(model, ids);
  const tooLong = promptLengthError(model, ids, length);
  if (tooLong) throw new Error(`[${where}] ${name ?? 'the prompt'} ${tooLong}`);
  return { ids, length, room: contextLength(model) - length };
}

/**
 * Why a prompt of `ids`, `length` positions once spliced, cannot be generated from (null: it can): it fills
 * the context, or the splice would cut it. The splice cuts text-only and -200 sentinel sequences at
 * maxLength (the reference's tokenizer_model_max_length, 2048 for LLaVA-1.5, below its 4096 positions), as
 * the reference does when it generates too: the prompt's end, with the question and the assistant's cue,
 * would be lost, and the reply would answer something else. Refused instead. The message starts with
 * "takes N positions" (callers name the prompt).
 */
export function promptLengthError(model: LlavaForConditionalGeneration, ids: readonly number[], length: number): string | null {
  const ctx = contextLength(model);
  if (length >= ctx) return `takes ${length} positions; the context holds ${ctx}: nothing left to generate`;
  const cut = model.config.maxLength;
  if (length > cut && !ids.includes(model.config.imageTokenIndex))
    return `takes ${length} positions; the model cuts its input at ${cut} (tokenizer_model_max_length), which would drop the prompt's end`;
  return null;
}

/** Streams a reply: one piece per sampled token (text may be '' while held back). */
export async function* generate(
  model: LlavaForConditionalGeneration,
  tokenizer: Tokenizer,
  opts: GenerateOptions,
): AsyncGenerator<GeneratedPiece, GenerateResult, undefined> {
  checkOptions('generate', opts, GENERATE_KEYS);
  const { ids, length: L, room } = resolvePrompt(model, tokenizer, opts, 'generate');
  const { sampling, requested, eos } = decodingSettings(model, tokenizer, opts, 'generate');
  const maxNew = Math.min(requested, room);
  const rng = seededRandom(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
  const dec = new StreamDecoder(tokenizer, opts.stop);
  const out: number[] = [];
  let finish: FinishReason = 'length';
  if (maxNew === 0) return { text: '', ids: out, finishReason: finish, promptLength: L };

  const { cache, logits, length } = model.prefill(ids, opts.pixelValues ?? null, L + maxNew);
  let lg: Tensor | null = logits;
  try {
    for (let i = 0; i < maxNew; i++) {
      const host = lg!.dataSync() as Float32Array;
      lg!.dispose();
      lg = null;
      const piece = tokenPiece(dec, sampleToken(host, sampling, rng), i, maxNew, eos);
      out.push(piece.token);
      if (piece.finishReason) finish = piece.finishReason;
      yield piece;
      if (piece.finishReason) break;
      lg = model.decodeStep(piece.token, length + i, cache);
      await new Promise<void>((r) => setImmediate(r)); // let I/O (stdout, signals) run between tokens
    }
  } finally {
    lg?.dispose();
    cache.dispose();
  }
  return { text: dec.fullText, ids: out, finishReason: finish, promptLength: L };
}

/** Non-streaming generation: the whole reply (stripped as Python's str.strip, as the reference's decode(...).strip()) and its ids. */
export async function generateText(model: LlavaForConditionalGeneration, tokenizer: Tokenizer, opts: GenerateOptions): Promise<GenerateResult> {
  const it = generate(model, tokenizer, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return { ...r.value, text: pyStrip(r.value.text) };
  }
}
