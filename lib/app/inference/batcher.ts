// batcher.ts — continuous batching: generation requests join a running batch as they arrive and leave it as
// they finish, so one decode step serves every request in flight. Decoding is bound by reading the weights,
// so a step for B rows costs little more than a step for one (see `npm run bench -- --filter batched_decode`).
//
// How the batch runs (one loop, one iteration per event-loop turn):
// - Admission: while rows are free (maxBatch), the waiting requests are prefilled together, left-padded to
//   their longest prompt (LlavaForConditionalGeneration.startPrefill), and their first tokens are sampled.
//   Their cache then joins the running one (KVCache.gather): every row's filled columns are right-aligned,
//   and the columns left of a row's own keys are padding, masked out of its attention. Requests admitted
//   together with the same prompt ids and the same image tensor (the n choices of one server request)
//   share one prefill; each gets its own copy of the rows. A turn in which rows join does not also step:
//   new requests get their first token as soon as possible.
// - Chunked prefill: while rows are decoding, the new prompts go in prefillChunk columns a turn, each chunk
//   in one forward with a decode step of the running rows (PromptPrefill.nextWithStep: the linear layers
//   read their weights once for both), so those keep streaming while a long prompt is read. If that
//   forward fails, the turn is redone as two forwards, so that a failure stays with its own side. Requests
//   that arrive meanwhile wait for the next admission. With nothing decoding, a prompt goes in whole.
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
import type { LlavaForConditionalGeneration } from '../../models/llava';
import type { DecodeStep, PromptPrefill } from '../../models/prompt_prefill';
import { Tokenizer } from '../processing/tokenizer';
import { PrefixCache, type PrefixHit } from './prefix_cache';
import { advanceJob, jobResult, prepareJob, type BatchRequest, type BatchResult, type Job } from './batch_job';

export type { BatchRequest, BatchResult } from './batch_job';

export interface BatcherOptions {
  /** Most requests decoded together (default 4). */
  maxBatch?: number;
  /** Positions of finished requests' keys and values kept for later prompts that begin the same way
   *  (prefix_cache.ts; default 0: off). Call dispose() to free them. */
  prefixCachePositions?: number;
  /** Prompt columns prefilled per turn while other requests are decoding (chunked prefill; default 512,
   *  0: a whole prompt at once). With nothing decoding, a prompt goes in whole. */
  prefillChunk?: number;
}

/** Requests being prefilled together: their prompts' prefill, and each job's row in its cache. */
interface Admission {
  run: PromptPrefill;
  jobs: Job[];
  rows: number[];
}
type Part = { cache: KVCache; rows: number[] };

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Decodes many generation requests together as they come and go (see the file header). */
export class DecodeBatcher {
  readonly maxBatch: number;
  /** Highest number of requests ever decoding together. */
  maxRunning = 0;
  private pending: Job[] = [];
  private rows: Job[] = [];
  private cache: KVCache | null = null;
  /** Prompts being prefilled a chunk a turn (null: none). */
  private admission: Admission | null = null;
  private loop: Promise<void> | null = null;
  /** Finished requests' keys and values for later prompts (null: off). */
  readonly prefix: PrefixCache | null;
  /** Prompt columns prefilled per turn while rows decode (0: whole prompts). */
  readonly prefillChunk: number;

  constructor(
    readonly model: LlavaForConditionalGeneration,
    readonly tokenizer: Tokenizer,
    opts: BatcherOptions = {},
  ) {
    checkOptions('DecodeBatcher', opts, optionKeys<BatcherOptions>({ maxBatch: true, prefixCachePositions: true, prefillChunk: true }));
    const n = opts.maxBatch ?? 4;
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`[DecodeBatcher] maxBatch must be a positive integer (got ${n})`);
    this.maxBatch = n;
    const keep = opts.prefixCachePositions ?? 0;
    if (!(Number.isInteger(keep) && keep >= 0)) throw new Error(`[DecodeBatcher] prefixCachePositions must be a non-negative integer (got ${keep})`);
    this.prefix = keep > 0 ? new PrefixCache(model, keep) : null;
    const chunk = opts.prefillChunk ?? 512;
    if (!(Number.isInteger(chunk) && chunk >= 0)) throw new Error(`[DecodeBatcher] prefillChunk must be a non-negative integer (got ${chunk})`);
    this.prefillChunk = chunk;
  }

  /** Requests decoding now. */
  get running(): number {
    return this.rows.length;
  }
  /** Requests waiting for a free row. */
  get waiting(): number {
    return this.pending.length;
  }
  /** Requests whose prompts are being prefilled a chunk at a time. */
  get prefilling(): number {
    return this.admission?.jobs.length ?? 0;
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
      jobs = reqs.map((r, i) => prepareJob(this.model, this.tokenizer, r, where, names?.[i] ?? `request ${i}`));
    } catch (e) {
      return Promise.reject(e);
    }
    for (const { job } of jobs) {
      if (job.maxNew === 0) job.settle.resolve(jobResult(job, 'length'));
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

  private async run(): Promise<void> {
    try {
      await nextTurn(); // requests queued in this turn join the first batch
      while (this.rows.length > 0 || this.pending.length > 0 || this.admission) {
        this.pending = this.pending.filter((j) => {
          if (!j.req.signal?.aborted) return true;
          j.settle.resolve(jobResult(j, 'aborted'));
          return false;
        });
        try {
          const free = this.maxBatch - this.rows.length;
          let joined = false;
          if (!this.admission && free > 0 && this.pending.length > 0) joined = this.admit(this.pending.splice(0, free));
          if (this.admission) joined = this.feed() || joined;
          else if (!joined && this.rows.length > 0) this.step();
          this.leave();
        } catch (e) {
          // Not expected (each stage settles its own failures); never leave a request hanging.
          for (const j of [...this.rows, ...(this.admission?.jobs ?? [])]) j.settle.reject(e as Error);
          this.rows = [];
          this.cache?.dispose();
          this.cache = null;
          this.endAdmission(true);
        }
        await nextTurn();
      }
    } finally {
      this.loop = null;
    }
  }

  /** Admits `jobs`: those with a cached prefix join at once; the others start one prefill (fed from this
   *  turn on, see the file header). Returns whether rows joined. */
  private admit(jobs: Job[]): boolean {
    for (const j of jobs) {
      j.started = true;
      try {
        j.req.onStart?.();
      } catch (e) {
        j.error = e as Error;
      }
    }
    const parts: Part[] = [];
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
    const grew = this.join(parts, joined);
    if (misses.length > 0) this.admission = this.startPrefill(misses);
    return grew;
  }

  /**
   * Starts one prefill of `jobs`, left-padded to the longest. Jobs with the same prompt and the same image
   * tensor (a request's n choices) are prefilled once and each row gets a copy. Null (every job rejected)
   * if splicing the prompts failed.
   */
  private startPrefill(jobs: Job[]): Admission | null {
    const unique: Job[] = [];
    const rows = jobs.map((j) => {
      const k = unique.findIndex(
        (u) => u.req.pixelValues === j.req.pixelValues && u.ids.length === j.ids.length && u.ids.every((id, i) => id === j.ids[i]),
      );
      return k >= 0 ? k : unique.push(j) - 1;
    });
    const images = unique.map((j) => j.req.pixelValues).filter((x): x is Tensor => !!x);
    try {
      const pixels = images.length === 0 ? null : images.length === 1 ? images[0] : tidy(() => cat(images, 0));
      try {
        const capacity = Math.max(...unique.map((j) => j.length)) + Math.max(...jobs.map((j) => j.maxNew));
        const run = this.model.startPrefill(
          unique.map((j) => j.ids),
          pixels,
          capacity,
        );
        return { run, jobs, rows };
      } finally {
        if (pixels && images.length > 1) pixels.dispose();
      }
    } catch (e) {
      for (const j of jobs) j.settle.reject(e as Error);
      return null;
    }
  }

  /**
   * Feeds the admission's next columns: with rows decoding, prefillChunk of them (all if 0) in one forward
   * with their decode step; else all of them. Once the prompts are all in, samples the first tokens and the
   * jobs join the batch; a failure of the prefill rejects them; if all of them were aborted meanwhile, the
   * prefill stops (the rows still step). Returns whether rows joined.
   */
  private feed(): boolean {
    const a = this.admission!;
    if (a.jobs.every((j) => j.req.signal?.aborted)) {
      this.endAdmission(true);
      for (const j of a.jobs) j.settle.resolve(jobResult(j, 'aborted'));
      if (this.rows.length > 0) this.step();
      return false;
    }
    const columns = this.rows.length > 0 && this.prefillChunk > 0 ? this.prefillChunk : Infinity;
    let logits: Tensor | null = null;
    let fed = false;
    if (this.rows.length > 0) {
      let both: { logits: Tensor | null; step: Tensor } | null = null;
      try {
        both = a.run.nextWithStep(columns, this.stepInputs());
      } catch {
        // redone below as two forwards, which charge a failure to its own side
      }
      if (both) {
        this.stepped(both.step);
        ({ logits } = both);
        fed = true;
      }
    }
    if (!fed) {
      try {
        logits = a.run.next(columns);
      } catch (e) {
        this.endAdmission(true);
        for (const j of a.jobs) j.settle.reject(e as Error);
      }
      if (this.rows.length > 0) this.step();
    }
    if (!logits) return false;
    this.endAdmission(false);
    try {
      const host = logits.dataSync() as Float32Array | Float64Array;
      const V = logits.shape[1];
      a.jobs.forEach((j, b) => {
        j.keys = j.length;
        if (!j.error) advanceJob(j, host.subarray(a.rows[b] * V, (a.rows[b] + 1) * V));
      });
    } catch (e) {
      a.run.cache.dispose();
      for (const j of a.jobs) j.settle.reject(e as Error);
      return false;
    } finally {
      logits.dispose();
    }
    return this.join([{ cache: a.run.cache, rows: a.rows }], a.jobs);
  }

  /** Frees the admission's spliced prompts, and its cache too when `dropCache`. */
  private endAdmission(dropCache: boolean): void {
    if (!this.admission) return;
    this.admission.run.dispose();
    if (dropCache) this.admission.run.cache.dispose();
    this.admission = null;
  }

  /** Adds `joined` (their rows in `parts`' caches) to the running batch; frees the parts' caches. Returns
   *  whether rows joined. */
  private join(parts: Part[], joined: Job[]): boolean {
    if (parts.length === 0) return false;
    const rows = [...this.rows, ...joined];
    if (!this.cache && parts.length === 1 && parts[0].rows.every((r, i) => r === i) && parts[0].rows.length === parts[0].cache.B)
      this.cache = parts[0].cache;
    else {
      let cache: KVCache;
      try {
        cache = this.regroup([...(this.cache ? [{ cache: this.cache, rows: this.rows.map((_, i) => i) }] : []), ...parts], rows);
      } catch (e) {
        for (const j of joined) j.settle.reject(e as Error); // the running rows keep their cache
        return false;
      } finally {
        for (const p of parts) p.cache.dispose();
      }
      this.cache?.dispose();
      this.cache = cache;
    }
    this.rows = rows;
    this.maxRunning = Math.max(this.maxRunning, this.rows.length);
    return true;
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
        if (!j.error) advanceJob(j, lg.dataSync() as Float32Array | Float64Array);
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
  private regroup(parts: Part[], rows: Job[]): KVCache {
    const length = Math.max(...rows.map((j) => j.keys));
    const steps = Math.max(...rows.map((j) => j.maxNew - j.out.length));
    return KVCache.gather(parts, length, length + steps);
  }

  /** The running rows' next decode step: each row's last token at its own position; the key mask hides
   *  each row's padding. */
  private stepInputs(): DecodeStep {
    const cache = this.cache!;
    const S = cache.length + 1;
    const padded = this.rows.some((j) => j.keys !== cache.length);
    return {
      tokens: this.rows.map((j) => j.out[j.out.length - 1]),
      positions: this.rows.map((j) => j.length + j.out.length - 1),
      cache,
      keyMask: padded ? this.rows.map((j) => Array.from({ length: S }, (_, c) => (c >= S - j.keys - 1 ? 1 : 0))) : null,
    };
  }

  /** One decode step for every row. */
  private step(): void {
    let lg: Tensor;
    try {
      const d = this.stepInputs();
      lg = this.model.decodeStepBatch(d.tokens, d.positions, d.cache, d.keyMask);
    } catch (e) {
      for (const j of this.rows) j.error = e as Error;
      return;
    }
    this.stepped(lg);
  }

  /** Samples every row's next token from a decode step's logits [B, V] (freed here). */
  private stepped(lg: Tensor): void {
    try {
      const host = lg.dataSync() as Float32Array | Float64Array;
      const V = host.length / this.rows.length;
      this.rows.forEach((j, b) => {
        j.keys++;
        advanceJob(j, host.subarray(b * V, (b + 1) * V));
      });
    } catch (e) {
      for (const j of this.rows) j.error = e as Error;
    } finally {
      lg.dispose();
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
      else if (j.finish) j.settle.resolve(jobResult(j, j.finish));
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
