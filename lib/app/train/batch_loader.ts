// batch_loader.ts — the prefetching loader: encodes micro-batches ahead of the consumer, either inline (one
// item per setImmediate turn, so the event loop stays responsive while the device works) or in a pool
// of worker_threads (true parallelism: decoding never starves a GPU). Both give identical batches in
// the same order. Items are encoded by dataset.ts's SampleEncoder, which is pure JS and so runs
// unchanged inside a worker (this file is also the worker's entry point).
import { Worker, isMainThread, parentPort, workerData } from 'worker_threads';
import { SampleEncoder, DatasetSpec, EncodedItem, LlavaDataset, CollatedBatch, collate } from './dataset';
import { DataError, Sample, RecordIssue } from '../processing/data';
import { loadImageDecoder } from '../processing/image';

// ---------------------------------------------------------------------------------------------------------
// Prefetching loader

export interface LoaderOptions {
  /** Micro-batches encoded ahead of the consumer (default 2). */
  prefetch?: number;
  /** Worker threads (0 = encode inline between event-loop turns); ignored when `pool` is given. */
  workers?: number;
  /** A shared worker pool (kept across epochs by the trainer; the loader does not close it). */
  pool?: EncoderPool;
  /** Called for each sample dropped by onError 'skip'. */
  onSkip?: (issue: RecordIssue) => void;
}

type Pending = { items: (EncodedItem | null)[]; left: number; error: Error | null; done: Promise<void>; resolve: () => void };

interface WorkerReply {
  job: number;
  item?: EncodedItem;
  error?: { message: string; data: boolean; issues: RecordIssue[] };
}

const WORKER_TAG = 'llava-dataset-worker';

function spawnWorker(spec: DatasetSpec): Worker {
  const data = { tag: WORKER_TAG, spec };
  if (__filename.endsWith('.ts')) {
    // Source run (tsx / tap): a worker cannot load .ts by itself; register tsx's CommonJS hook first.
    const tsx = require.resolve('tsx/cjs');
    return new Worker(`require(${JSON.stringify(tsx)}); require(${JSON.stringify(__filename)});`, { eval: true, workerData: data });
  }
  return new Worker(__filename, { workerData: data });
}

/** Worker threads that encode items (each holds its own tokenizer and image processor). */
export class EncoderPool {
  private readonly workers: Worker[] = [];
  private readonly jobs = new Map<number, { resolve: (it: EncodedItem) => void; reject: (e: Error) => void }>();
  private seq = 0;
  private rr = 0;
  private closed = false;

  constructor(spec: DatasetSpec, n: number) {
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`[dataset] worker count must be a positive integer (got ${n})`);
    loadImageDecoder(); // sharp must be loaded on the main thread before workers that use it start
    for (let i = 0; i < n; i++) {
      const wk = spawnWorker(spec);
      wk.on('message', (r: WorkerReply) => this.onReply(r));
      wk.on('error', (e) => this.failAll(e));
      wk.unref(); // idle workers never keep the process alive
      this.workers.push(wk);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  encode(sample: Sample, pos: number, index: number): Promise<EncodedItem> {
    if (this.closed) return Promise.reject(new Error('[dataset] encoder pool closed'));
    const job = this.seq++;
    return new Promise<EncodedItem>((resolve, reject) => {
      this.jobs.set(job, { resolve, reject });
      for (const w of this.workers) w.ref();
      this.workers[this.rr++ % this.workers.length].postMessage({ job, pos, index, sample });
    });
  }

  private onReply(r: WorkerReply): void {
    const j = this.jobs.get(r.job);
    if (!j) return;
    this.jobs.delete(r.job);
    if (this.jobs.size === 0) for (const w of this.workers) w.unref();
    if (r.error) j.reject(r.error.data ? new DataError(r.error.message, r.error.issues) : new Error(r.error.message));
    else j.resolve(r.item!);
  }

  private failAll(e: Error): void {
    for (const j of this.jobs.values()) j.reject(e);
    this.jobs.clear();
  }

  /** Terminate the workers; pending encodes reject. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new Error('[dataset] encoder pool closed'));
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }
}

/**
 * Yields collated micro-batches for a fixed plan (lists of sample positions), encoding up to `prefetch`
 * batches ahead. Samples that fail to encode are dropped (onError 'skip', reported through onSkip) or make
 * next() reject (onError 'fatal'); a batch whose samples were all dropped is skipped by next() and returned
 * as null by nextEntry().
 */
export class PrefetchLoader {
  private next_ = 0; // next plan index to hand out
  private started = 0; // next plan index to start encoding
  private readonly pending = new Map<number, Pending>();
  private readonly pool: EncoderPool | null;
  private readonly ownPool: boolean;
  private closed = false;
  private inlineBusy = false;
  private readonly inlineQueue: { batch: number; slot: number }[] = [];
  private readonly prefetch: number;

  constructor(
    readonly dataset: LlavaDataset,
    readonly plan: number[][],
    readonly opts: LoaderOptions = {},
  ) {
    this.prefetch = Math.max(1, opts.prefetch ?? 2);
    const w = Math.max(0, Math.floor(opts.workers ?? 0));
    this.pool = opts.pool ?? (w > 0 ? new EncoderPool(dataset.spec, w) : null);
    this.ownPool = !opts.pool && !!this.pool;
    this.fill();
  }

  /** Plan entries still to be handed out. */
  get remaining(): number {
    return this.plan.length - this.next_;
  }

  private fill(): void {
    while (!this.closed && this.started < this.plan.length && this.started < this.next_ + this.prefetch) this.start(this.started++);
  }

  private start(b: number): void {
    const positions = this.plan[b];
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const p: Pending = { items: new Array(positions.length).fill(null), left: positions.length, error: null, done, resolve };
    this.pending.set(b, p);
    if (positions.length === 0) return resolve();
    positions.forEach((pos, slot) => {
      if (this.pool) {
        this.pool.encode(this.dataset.samples[pos], pos, this.dataset.indices[pos]).then(
          (item) => this.settle(b, slot, item, null),
          (e: Error) => this.settle(b, slot, null, e),
        );
      } else this.inlineQueue.push({ batch: b, slot });
    });
    if (!this.pool) this.pumpInline();
  }

  private pumpInline(): void {
    if (this.inlineBusy || this.closed) return;
    this.inlineBusy = true;
    const step = (): void => {
      const job = this.inlineQueue.shift();
      if (!job || this.closed) {
        this.inlineBusy = false;
        return;
      }
      const pos = this.plan[job.batch][job.slot];
      try {
        this.settle(job.batch, job.slot, this.dataset.item(pos), null);
      } catch (e) {
        this.settle(job.batch, job.slot, null, e as Error);
      }
      setImmediate(step);
    };
    setImmediate(step);
  }

  private settle(b: number, slot: number, item: EncodedItem | null, err: Error | null): void {
    const p = this.pending.get(b);
    if (!p) return;
    if (err) {
      if (err instanceof DataError && this.dataset.onError === 'skip') {
        for (const issue of err.issues.length ? err.issues : [{ index: -1, id: null, message: err.message }]) {
          this.dataset.skipped.push(issue);
          if (this.opts.onSkip) this.opts.onSkip(issue);
          else this.dataset.logger(`[dataset] skipped record ${issue.index} (id ${issue.id ?? '?'}): ${issue.message}`);
        }
      } else if (!p.error) p.error = err;
    } else p.items[slot] = item;
    if (--p.left === 0) p.resolve();
  }

  /** The next plan entry: its index and collated batch (null when every sample of it was dropped), or
   *  null at the end of the plan. */
  async nextEntry(): Promise<{ planIndex: number; batch: CollatedBatch | null } | null> {
    if (this.closed) throw new Error('[dataset] loader closed');
    if (this.next_ >= this.plan.length) return null;
    const b = this.next_;
    if (!this.pending.has(b)) this.fill();
    const p = this.pending.get(b)!;
    await p.done;
    this.pending.delete(b);
    this.next_++;
    this.fill();
    if (p.error) {
      this.close();
      throw p.error;
    }
    const items = p.items.filter((x): x is EncodedItem => x !== null);
    if (items.length === 0) return { planIndex: b, batch: null };
    const { spec } = this.dataset;
    const batch = collate(items, {
      padId: this.dataset.padId,
      format: spec.format,
      imageSize: this.dataset.imageSize,
      numImageTokens: spec.numImageTokens,
    });
    return { planIndex: b, batch };
  }

  /** The next non-empty collated micro-batch, or null at the end of the plan. */
  async next(): Promise<CollatedBatch | null> {
    for (;;) {
      const e = await this.nextEntry();
      if (!e) return null;
      if (e.batch) return e.batch;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<CollatedBatch> {
    for (;;) {
      const b = await this.next();
      if (!b) return;
      yield b;
    }
  }

  /** Stop workers; pending work is dropped. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.inlineQueue.length = 0;
    if (this.ownPool) this.pool!.close();
  }
}

/** Cut an epoch order into micro-batches of `size` (the last may be smaller: drop_last False). */
export function microBatches(order: number[], size: number): number[][] {
  if (!(Number.isInteger(size) && size > 0)) throw new Error(`[dataset] micro-batch size must be a positive integer (got ${size})`);
  const out: number[][] = [];
  for (let i = 0; i < order.length; i += size) out.push(order.slice(i, i + size));
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Worker thread entry

if (!isMainThread && workerData && (workerData as { tag?: string }).tag === WORKER_TAG) {
  const enc = new SampleEncoder((workerData as { spec: DatasetSpec }).spec);
  enc.onWarning = (m) => console.warn(m);
  parentPort!.on('message', (m: { job: number; pos: number; index: number; sample: Sample }) => {
    try {
      const item = enc.encode(m.sample, m.pos, m.index);
      const transfer = item.pixels ? [item.pixels.buffer as ArrayBuffer] : [];
      parentPort!.postMessage({ job: m.job, item } satisfies WorkerReply, transfer);
    } catch (e) {
      const data = e instanceof DataError;
      parentPort!.postMessage({
        job: m.job,
        error: { message: (e as Error).message, data, issues: data ? (e as DataError).issues : [] },
      } satisfies WorkerReply);
    }
  });
}
