// batcher.ts — continuous batching: generation requests join a running batch as they arrive and leave it as
// they finish, so one decode step serves every request in flight. Decoding is bound by reading the weights,
// so a step for B rows costs little more than a step for one (see `npm run bench -- --filter batched_decode`).
//
// How the batch runs (one loop, one iteration per event-loop turn):
// - Admission: while rows are free (maxBatch), the waiting requests are prefilled together, left-padded to
//   their longest prompt (LlavaForConditionalGeneration.prefillBatch), and their first tokens are sampled.
//   Their cache then joins the running one (KVCache.gather): every row's filled columns are right-aligned,
//   and the columns left of a row's own keys are padding, masked out of its attention. Requests admitted
//   together with the same prompt ids and the same image tensor (the n choices of one server request)
//   share one prefill; each gets its own copy of the rows. A turn that admits does not also step: new
//   requests get their first token as soon as possible.
// - Otherwise one decode step for every row (decodeStepBatch): each row feeds its last token at its own
//   position; the key mask hides each row's padding.
// - Rows that finished (EOS, stop string, token cap), were aborted or failed leave at once: the cache is
//   rebuilt without them and without the leading columns that are now padding for every row left.
// - Prefix cache (prefixCachePositions > 0, prefix_cache.ts): a request that leaves keeps its keys and values
//   (prompt and reply) for later prompts; a new request whose prompt begins as a kept one did, with the same
//   images (prefixKey), copies that prefix into its own row and feeds only the rest (extendPrompt).
// Each row is generated as `generate` generates it alone (same sampler, seed, stops and caps; the batch
// changes only how attention's sums are blocked, a rounding-level difference; docs in generate_batch.ts).
// A failed prefill fails only the requests it was admitting; a failed step fails the rows in the batch.
import { Tensor } from '../../core/tensor';
import { cat } from '../../ops/view';
import { tidy } from '../../core/memory';
import { checkOptions, optionKeys } from '../../options';
import { KVCache } from '../../models/llama';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { PrefixCache, type PrefixHit } from './prefix_cache';
import { IMAGE_TOKEN_INDEX } from '../../constants';
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
}
const REQUEST_KEYS = optionKeys<BatchRequest>({ ...GENERATE_KEYS, signal: true, onStart: true, onPiece: true, prefixKey: true });

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

export interface BatcherOptions {
  /** Most requests decoded together (default 4). */
  maxBatch?: number;
  /** Positions of finished requests' keys and values kept for later prompts that begin the same way
   *  (prefix_cache.ts; default 0: off). Call dispose() to free them. */
  prefixCachePositions?: number;
}

interface Job {
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

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Decodes many generation requests together as they come and go (see the file header). */
export class DecodeBatcher {
  readonly maxBatch: number;
  /** Highest number of requests ever decoding together. */
  maxRunning = 0;
  private pending: Job[] = [];
  private rows: Job[] = [];
  private cache: KVCache | null = null;
  private loop: Promise<void> | null = null;
  /** Finished requests' keys and values for later prompts (null: off). */
  readonly prefix: PrefixCache | null;

  constructor(
    readonly model: LlavaForConditionalGeneration,
    readonly tokenizer: Tokenizer,
    opts: BatcherOptions = {},
  ) {
    checkOptions('DecodeBatcher', opts, optionKeys<BatcherOptions>({ maxBatch: true, prefixCachePositions: true }));
    const n = opts.maxBatch ?? 4;
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`[DecodeBatcher] maxBatch must be a positive integer (got ${n})`);
    this.maxBatch = n;
    const keep = opts.prefixCachePositions ?? 0;
    if (!(Number.isInteger(keep) && keep >= 0)) throw new Error(`[DecodeBatcher] prefixCachePositions must be a non-negative integer (got ${keep})`);
    this.prefix = keep > 0 ? new PrefixCache(model, keep) : null;
  }

  /** Requests decoding now. */
  get running(): number {
    return this.rows.length;
  }
  /** Requests waiting for a free row. */
  get waiting(): number {
    return this.pending.length;
  }

  /** Queues one request; the promise settles when it ends. Bad options reject at once. */
  submit(req: BatchRequest): Promise<BatchResult> {
    return this.submitAll([req], 'DecodeBatcher').then((r) => r[0]);
  }

  /**
   * Queues several requests together (they are prefilled in one batch if rows are free). Every request is
   * checked before any is queued; `where` names the caller in errors and each request is "request i"
   * (or `names[i]`).
   */
  submitAll(reqs: readonly BatchRequest[], where = 'DecodeBatcher', names?: readonly string[]): Promise<BatchResult[]> {
    let jobs: { job: Job; done: Promise<BatchResult> }[];
    try {
      jobs = reqs.map((r, i) => this.prepare(r, where, names?.[i] ?? `request ${i}`));
    } catch (e) {
      return Promise.reject(e);
    }
    for (const { job } of jobs) {
      if (job.maxNew === 0) job.settle.resolve(this.result(job, 'length'));
      else this.pending.push(job);
    }
    this.loop ??= this.run();
    return Promise.all(jobs.map((j) => j.done));
  }

  /** Resolves when no request is running or waiting. */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  /** Frees the prefix cache once no request is running or waiting (the batcher stays usable, emptier). */
  async dispose(): Promise<void> {
    await this.idle();
    this.prefix?.dispose();
  }

  private prepare(req: BatchRequest, where: string, name: string): { job: Job; done: Promise<BatchResult> } {
    checkOptions(`${where} ${name}`, req, REQUEST_KEYS);
    const { ids, length, room } = resolvePrompt(this.model, this.tokenizer, req, where, name);
    const { sampling, requested, eos } = decodingSettings(this.model, this.tokenizer, req, where);
    const pix = req.pixelValues;
    const S = this.model.config.vision.image_size;
    if (pix && (pix.shape.length !== 4 || pix.shape[1] !== 3 || pix.shape[2] !== S || pix.shape[3] !== S))
      throw new Error(`[${where}] ${name}: pixelValues must be [N, 3, ${S}, ${S}], got [${pix.shape}]`);
    const images = pix ? pix.shape[0] : 0;
    const placeholders = imagePlaceholders(this.model, ids);
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
      dec: new StreamDecoder(this.tokenizer, req.stop),
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

  private result(j: Job, finish: FinishReason | 'aborted'): BatchResult {
    return { text: j.dec.fullText, ids: j.out, finishReason: finish, promptLength: j.length, started: j.started, cachedTokens: j.cached };
  }

  private async run(): Promise<void> {
    try {
      await nextTurn(); // requests queued in this turn join the first batch
      while (this.rows.length > 0 || this.pending.length > 0) {
        this.pending = this.pending.filter((j) => {
          if (!j.req.signal?.aborted) return true;
          j.settle.resolve(this.result(j, 'aborted'));
          return false;
        });
        try {
          const free = this.maxBatch - this.rows.length;
          if (free > 0 && this.pending.length > 0) this.admit(this.pending.splice(0, free));
          else if (this.rows.length > 0) this.step();
          this.leave();
        } catch (e) {
          // Not expected (each stage settles its own failures); never leave a request hanging.
          for (const j of this.rows) j.settle.reject(e as Error);
          this.rows = [];
          this.cache?.dispose();
          this.cache = null;
        }
        await nextTurn();
      }
    } finally {
      this.loop = null;
    }
  }

  /** Samples a row's next token from its logits and reports the piece. */
  private advance(j: Job, logits: ArrayLike<number>): void {
    try {
      const piece = tokenPiece(j.dec, sampleToken(logits, j.sampling, j.rng), j.out.length, j.maxNew, j.eos);
      j.out.push(piece.token);
      if (piece.finishReason) j.finish = piece.finishReason;
      j.req.onPiece?.(piece);
    } catch (e) {
      j.error = e as Error;
    }
  }

  /** Prefills `jobs` (reusing cached prefixes where it can), samples their first tokens and adds them to
   *  the running batch. */
  private admit(jobs: Job[]): void {
    for (const j of jobs) {
      j.started = true;
      try {
        j.req.onStart?.();
      } catch (e) {
        j.error = e as Error;
      }
    }
    const parts: { cache: KVCache; rows: number[] }[] = [];
    const joined: Job[] = [];
    const misses: Job[] = [];
    for (const j of jobs) {
      const hit = this.prefix && j.prefixKey !== null ? this.prefix.lookup(j.ids, j.prefixKey) : null;
      if (!hit) misses.push(j);
      else {
        const cache = this.extend(j, hit);
        if (cache) (parts.push({ cache, rows: [0] }), joined.push(j));
      }
    }
    if (misses.length > 0) {
      const part = this.prefill(misses);
      if (part) (parts.unshift(part), joined.unshift(...misses));
    }
    if (parts.length === 0) return;
    const rows = [...this.rows, ...joined];
    if (!this.cache && parts.length === 1 && parts[0].rows.every((r, i) => r === i) && parts[0].rows.length === parts[0].cache.B)
      this.cache = parts[0].cache;
    else {
      let cache: KVCache;
      try {
        cache = this.regroup([...(this.cache ? [{ cache: this.cache, rows: this.rows.map((_, i) => i) }] : []), ...parts], rows);
      } catch (e) {
        for (const j of joined) j.settle.reject(e as Error); // the running rows keep their cache
        return;
      } finally {
        for (const p of parts) p.cache.dispose();
      }
      this.cache?.dispose();
      this.cache = cache;
    }
    this.rows = rows;
    this.maxRunning = Math.max(this.maxRunning, this.rows.length);
  }

  /**
   * One prefill of `jobs`, left-padded to the longest; samples their first tokens. Jobs with the same prompt
   * and the same image tensor (a request's n choices) are prefilled once and each row gets a copy. Returns
   * the new cache and, for each job, its row in it; null (every job rejected) if the prefill failed.
   */
  private prefill(jobs: Job[]): { cache: KVCache; rows: number[] } | null {
    const unique: Job[] = [];
    const src = jobs.map((j) => {
      const k = unique.findIndex(
        (u) => u.req.pixelValues === j.req.pixelValues && u.ids.length === j.ids.length && u.ids.every((id, i) => id === j.ids[i]),
      );
      return k >= 0 ? k : unique.push(j) - 1;
    });
    const images = unique.map((j) => j.req.pixelValues).filter((x): x is Tensor => !!x);
    try {
      const pixels = images.length === 0 ? null : images.length === 1 ? images[0] : tidy(() => cat(images, 0));
      let pre;
      try {
        pre = this.model.prefillBatch(
          unique.map((j) => j.ids),
          pixels,
          Math.max(...unique.map((j) => j.length)) + Math.max(...jobs.map((j) => j.maxNew)),
        );
      } finally {
        if (pixels && images.length > 1) pixels.dispose();
      }
      try {
        const host = pre.logits.dataSync() as Float32Array | Float64Array;
        const V = pre.logits.shape[1];
        jobs.forEach((j, b) => {
          j.keys = j.length;
          if (!j.error) this.advance(j, host.subarray(src[b] * V, (src[b] + 1) * V));
        });
      } catch (e) {
        pre.cache.dispose();
        throw e;
      } finally {
        pre.logits.dispose();
      }
      return { cache: pre.cache, rows: src };
    } catch (e) {
      for (const j of jobs) j.settle.reject(e as Error);
      return null;
    }
  }

  /** A one-row cache for `j` from a cached prefix: copied, then the rest of the prompt fed as text;
   *  samples its first token. Null (the job rejected) on failure. */
  private extend(j: Job, hit: PrefixHit): KVCache | null {
    let cache: KVCache | null = null;
    try {
      cache = KVCache.gather([{ cache: hit.cache, rows: [0], filled: hit.positions }], hit.positions, j.length + j.maxNew);
      const lg = this.model.extendPrompt(j.ids.slice(hit.tokens), hit.positions, cache);
      try {
        j.keys = j.length;
        j.cached = hit.positions;
        if (!j.error) this.advance(j, lg.dataSync() as Float32Array | Float64Array);
      } finally {
        lg.dispose();
      }
      return cache;
    } catch (e) {
      cache?.dispose();
      j.settle.reject(e as Error);
      return null;
    }
  }

  /** A cache holding `parts`' rows (the jobs `rows`, in order), as short as their keys and as wide as
   *  their remaining tokens need. */
  private regroup(parts: { cache: KVCache; rows: number[] }[], rows: Job[]): KVCache {
    const length = Math.max(...rows.map((j) => j.keys));
    const steps = Math.max(...rows.map((j) => j.maxNew - j.out.length));
    return KVCache.gather(parts, length, length + steps);
  }

  /** One decode step for every row. */
  private step(): void {
    const cache = this.cache!;
    const S = cache.length + 1;
    const padded = this.rows.some((j) => j.keys !== cache.length);
    const mask = padded ? this.rows.map((j) => Array.from({ length: S }, (_, c) => (c >= S - j.keys - 1 ? 1 : 0))) : null;
    try {
      const lg = this.model.decodeStepBatch(
        this.rows.map((j) => j.out[j.out.length - 1]),
        this.rows.map((j) => j.length + j.out.length - 1),
        cache,
        mask,
      );
      let host: Float32Array | Float64Array;
      try {
        host = lg.dataSync() as Float32Array | Float64Array;
      } finally {
        lg.dispose();
      }
      const V = host.length / this.rows.length;
      this.rows.forEach((j, b) => {
        j.keys++;
        this.advance(j, host.subarray(b * V, (b + 1) * V));
      });
    } catch (e) {
      for (const j of this.rows) j.error = e as Error;
    }
  }

  /** Keeps a leaving row's keys and values (its prompt and the reply tokens fed back) for later prompts. */
  private remember(j: Job, cache: KVCache): void {
    if (j.finish === null || !this.prefix!.keeps(j.keys)) return;
    const ids = [...j.ids, ...j.out.slice(0, j.keys - j.length)];
    try {
      this.prefix!.store(ids, j.prefixKey!, KVCache.gather([{ cache, rows: [this.rows.indexOf(j)] }], j.keys, j.keys));
    } catch {
      // out of memory for the copy: not kept; the request itself is done
    }
  }

  /** Settles the rows that finished, failed or were aborted, and rebuilds the cache without them. */
  private leave(): void {
    for (const j of this.rows) if (!j.finish && !j.error && j.req.signal?.aborted) j.finish = 'aborted';
    const keep = this.rows.filter((j) => !j.finish && !j.error);
    if (keep.length === this.rows.length) return;
    for (const j of this.rows) {
      if (j.error) j.settle.reject(j.error);
      else if (j.finish) j.settle.resolve(this.result(j, j.finish));
    }
    const old = this.cache!;
    this.cache = null;
    if (this.prefix) for (const j of this.rows) if (!j.error && j.prefixKey !== null) this.remember(j, old);
    try {
      if (keep.length > 0) this.cache = this.regroup([{ cache: old, rows: keep.map((j) => this.rows.indexOf(j)) }], keep);
    } catch (e) {
      for (const j of keep) j.settle.reject(e as Error);
      this.rows = [];
      return;
    } finally {
      old.dispose();
    }
    this.rows = keep;
  }
}
