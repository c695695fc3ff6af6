// batch_job.ts — one request's state inside the DecodeBatcher (batcher.ts): its options checked and resolved
// as `generate` resolves them, its sampler and stream decoder, and what it has generated so far.
import { checkOptions, optionKeys } from '../../options';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { IMAGE_TOKEN_INDEX } from '../../constants';
import { MAX_TOP_LOGPROBS, isTopCount, stepLogprobs } from './logprobs';
import {
  GENERATE_KEYS,
  StreamDecoder,
  decodingSettings,
  resolvePrompt,
  sampleToken,
  seededRandom,
  tokenPiece,
  type FinishReason,
  type GenerateOptions,
  type GeneratedPiece,
  type SamplingOptions,
} from './generate';

/** One request: a `generate` call's options, plus how the caller follows and stops it. */
export interface BatchRequest extends GenerateOptions {
  /** Aborting it ends the request at the next step ('aborted'); one still waiting never runs. */
  signal?: AbortSignal;
  /** Called when the request joins the batch (before its prefill). */
  onStart?: () => void;
  /** Each sampled token as `generate` yields it (text held back until final, finishReason on the last). */
  onPiece?: (piece: GeneratedPiece) => void;
  /** With a prefix cache (BatcherOptions.prefixCachePositions): what this request's images are (e.g. a hash
   *  of their bytes); prefixes holding an image are shared only between equal keys. A request with images
   *  and no key neither uses nor fills the cache; one without images needs none. */
  prefixKey?: string;
  /** Report each token's log-probability and this many likeliest alternatives (0 to 20) on its piece
   *  (GeneratedPiece.logprobs; logprobs.ts says which distribution). */
  logprobs?: number;
  /** Decode the reply as the continuation of these ids (the prompt's last): its text is what it adds to
   *  them (StreamDecoder's context), for callers that append it to the prompt's text. */
  continues?: number[];
}
const REQUEST_KEYS = optionKeys<BatchRequest>({
  ...GENERATE_KEYS,
  signal: true,
  onStart: true,
  onPiece: true,
  prefixKey: true,
  logprobs: true,
  continues: true,
});

export interface BatchResult {
  /** The whole reply, stop string removed, not stripped (as `generate`'s return value). */
  text: string;
  ids: number[];
  finishReason: FinishReason | 'aborted';
  /** Positions the prompt occupies after splicing (image rows included). */
  promptLength: number;
  /** False when the request was aborted before it joined the batch. */
  started: boolean;
  /** Prompt positions taken from the prefix cache instead of computed (0 without a hit). */
  cachedTokens: number;
}

export interface Job {
  req: BatchRequest;
  ids: number[];
  length: number;
  sampling: SamplingOptions;
  eos: number[];
  maxNew: number;
  rng: () => number;
  dec: StreamDecoder;
  out: number[];
  /** Real key columns this row has in the cache. */
  keys: number;
  /** Of those, taken from the prefix cache. */
  cached: number;
  /** Its images' key for the prefix cache ('' without images), null: not cached. */
  prefixKey: string | null;
  finish: FinishReason | 'aborted' | null;
  error: Error | null;
  started: boolean;
  settle: { resolve: (r: BatchResult) => void; reject: (e: Error) => void };
}

/** Images a prompt's ids call for: -200 sentinels, or runs of the model's image token (llava-hf). */
function imagePlaceholders(model: LlavaForConditionalGeneration, ids: number[]): number {
  const sentinels = ids.filter((id) => id === IMAGE_TOKEN_INDEX).length;
  const tokens = ids.filter((id) => id === model.config.imageTokenIndex).length;
  return sentinels + Math.ceil(tokens / model.numImageTokens);
}

/** Checks a request and resolves its prompt and decoding settings; `where` and `name` label errors. */
export function prepareJob(
  model: LlavaForConditionalGeneration,
  tokenizer: Tokenizer,
  req: BatchRequest,
  where: string,
  name: string,
): { job: Job; done: Promise<BatchResult> } {
  checkOptions(`${where} ${name}`, req, REQUEST_KEYS);
  const { ids, length, room } = resolvePrompt(model, tokenizer, req, where, name);
  const { sampling, requested, eos } = decodingSettings(model, tokenizer, req, where);
  if (req.logprobs !== undefined && !isTopCount(req.logprobs))
    throw new Error(`[${where}] ${name}: logprobs must be an integer in [0, ${MAX_TOP_LOGPROBS}] (got ${req.logprobs})`);
  const pix = req.pixelValues;
  const S = model.config.vision.image_size;
  if (pix && (pix.shape.length !== 4 || pix.shape[1] !== 3 || pix.shape[2] !== S || pix.shape[3] !== S))
    throw new Error(`[${where}] ${name}: pixelValues must be [N, 3, ${S}, ${S}], got [${pix.shape}]`);
  const images = pix ? pix.shape[0] : 0;
  const placeholders = imagePlaceholders(model, ids);
  if (placeholders !== images)
    throw new Error(`[${where}] ${name} has ${placeholders} image placeholder(s) but ${images} image(s) in its pixelValues`);
  let settle!: Job['settle'];
  const done = new Promise<BatchResult>((resolve, reject) => (settle = { resolve, reject }));
  const job: Job = {
    req,
    ids,
    length,
    sampling,
    eos,
    maxNew: Math.min(requested, room),
    rng: seededRandom(req.seed ?? Math.floor(Math.random() * 2 ** 32)),
    dec: new StreamDecoder(tokenizer, req.stop, req.continues),
    out: [],
    keys: 0,
    cached: 0,
    prefixKey: req.prefixKey ?? (images === 0 ? '' : null),
    finish: null,
    error: null,
    started: false,
    settle,
  };
  return { job, done };
}

export function jobResult(j: Job, finish: FinishReason | 'aborted'): BatchResult {
  return { text: j.dec.fullText, ids: j.out, finishReason: finish, promptLength: j.length, started: j.started, cachedTokens: j.cached };
}

/** Samples a job's next token from its logits and reports the piece; a failure is kept on the job. */
export function advanceJob(j: Job, logits: ArrayLike<number>): void {
  try {
    const piece = tokenPiece(j.dec, sampleToken(logits, j.sampling, j.rng), j.out.length, j.maxNew, j.eos);
    if (j.req.logprobs !== undefined) piece.logprobs = stepLogprobs(logits, piece.token, j.req.logprobs);
    j.out.push(piece.token);
    if (piece.finishReason) j.finish = piece.finishReason;
    j.req.onPiece?.(piece);
  } catch (e) {
    j.error = e as Error;
  }
}
