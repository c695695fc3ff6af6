// distributed.ts — data-parallel training over a process group (lib/dist): which micro-batches each rank
// runs, how gradients are reduced, and how optimizer state is sharded (README "Training on several GPUs or
// machines"). The Trainer calls it at a few points of an optimizer step; without it nothing changes.
//
// Data: the epoch plan is the one-process plan of the same global batch (micro × accumulation × world, the
// sampler's worldSize = accumulation × world as the reference computes it). Each optimizer step takes the
// next G = accumulation × world micro-batches, and micro-batch j of the group goes to rank j % world (the
// interleave of accelerate's batch-sampler shards), so the ranks see distinct samples and the
// modality-grouped order is kept. Every micro-batch loss is scaled by 1/G (1/k for a short last group) and
// gradients are SUMMED across ranks: the step's gradient is then exactly the one-process mean.
//
// Strategies (gradient reduction bucket by bucket during backward: dist_grads.ts; the bucket and shard
// layout: dist_layout.ts):
// - ddp: gradients all-reduced in buckets (25 MB by default) started by grad-ready hooks as backward
//   produces them, on the step's last micro-batch. Every rank then runs the same AdamW update.
// - zero1: as ddp for gradients; AdamW moments and f32 master weights exist only for this rank's shard
//   (chunk r of every bucket). Each rank updates its shard, then the weights are all-gathered per bucket.
// - zero2: as zero1, but each bucket is reduce-scattered during backward and the full gradients are freed
//   as they are packed: a rank keeps the summed gradient of its shard only.
// - zero3: as zero2, and the parameters are sharded too: each decoder layer's weights are all-gathered
//   just before its forward and again for its recomputed backward, freed after (dist_zero3.ts).
// Frozen parameters are never reduced or sharded: only the trainable list passes through here.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../../core/tensor';
import { keep, tidy } from '../../core/memory';
import { noGrad } from '../../core/autograd';
import { zeros, fromTypedArray } from '../../ops';
import { copyInto, mul, square } from '../../ops/elementwise';
import { sum } from '../../ops/reduce';
import { AdamW, clipGradNorm, type AdamWOptions, type ParamGroup } from '../../optim/adamw';
import type { ProcessGroup } from '../../dist';
import { FlatLayout, flatView } from './dist_layout';
import { GradReducer } from './dist_grads';
import { Zero3 } from './dist_zero3';
import type { Module } from '../../nn/module';
import { saveOptimizer, OPTIMIZER_FILE } from './train_state';
import { piecesOf, loadOptimizerPieces, PIECES_KEY, type Piece } from './optimizer_shards';
import { writeDirAtomic, writeFileAtomic } from '../util/files';
import { STRATEGIES, RESUME_MUST_MATCH, type TrainerKey } from './options';
import { DIST_FILE, shardFile, readDistRecord } from './dist_record';

export { DIST_FILE, shardFile, readDistRecord } from './dist_record';

export type Strategy = (typeof STRATEGIES)[number];

export class DataParallel {
  readonly rank: number;
  readonly world: number;
  private readonly bucketBytes: number;
  private readonly overlap: boolean;
  private layout: FlatLayout | null = null;
  private reducer: GradReducer | null = null;
  /** zero1/2/3: the optimizer's leaves, one per shard slice (views of the parameters' bytes; zero3: of
   *  its shard weights). */
  private leaves: Tensor[] = [];
  /** zero3's parameter shards. */
  private zero3: Zero3 | null = null;
  /** zero3: forward + backward passes run in the current step. */
  private passes = 0;
  /** The trainable parameters, and the shard slice behind each optimizer leaf (checkpoint pieces). */
  private params: Tensor[] = [];
  private readonly leafSlices = new Map<Tensor, { param: Tensor; inParam: number; len: number }>();

  constructor(
    readonly pg: ProcessGroup,
    readonly strategy: Strategy,
    o: { bucketMB?: number; overlap?: boolean } = {},
  ) {
    if (!STRATEGIES.includes(strategy)) throw new Error(`[train] unknown --distributed '${String(strategy)}' (${STRATEGIES.join(', ')})`);
    this.rank = pg.rank;
    this.world = pg.worldSize;
    const mb = o.bucketMB ?? 25;
    if (!(mb > 0)) throw new Error(`[train] the bucket size must be a positive number of MB (got ${mb})`);
    this.bucketBytes = mb * 1024 * 1024;
    this.overlap = o.overlap ?? true;
  }

  get sharded(): boolean {
    return this.strategy !== 'ddp';
  }

  /** zero3's statistics (gathers, most decoder blocks gathered at once), or null. */
  get zero3Stats(): Zero3['stats'] | null {
    return this.zero3 ? { ...this.zero3.stats } : null;
  }

  /** Micro-batches per optimizer step across the job. */
  groupSize(gradAccum: number): number {
    return gradAccum * this.world;
  }

  /** This rank's copy of an epoch plan: the micro-batches of the other ranks become empty (skipped). */
  rankPlan(plan: number[][], gradAccum: number): number[][] {
    const g = this.groupSize(gradAccum);
    return plan.map((mb, i) => ((i % g) % this.world === this.rank ? mb : []));
  }

  /** Throws on every rank when ranks disagree on `value` (model config, options), naming `what`. */
  checkSame(what: string, value: unknown): void {
    const digest = createHash('sha256').update(JSON.stringify(value)).digest();
    const mine = noGrad(() => fromTypedArray(new Uint8Array(digest), [32], { dtype: 'uint8' }));
    const all = zeros([32 * this.world], { dtype: 'uint8' });
    try {
      this.pg.allGather(all, mine).wait();
      const bytes = all.dataSync() as Uint8Array;
      const bad: number[] = [];
      for (let r = 0; r < this.world; r++) if (Buffer.compare(Buffer.from(bytes.subarray(32 * r, 32 * r + 32)), digest) !== 0) bad.push(r);
      if (bad.length) throw new Error(`[train] ranks disagree on the ${what}: rank ${this.rank} differs from rank(s) ${bad.join(', ')}`);
    } finally {
      mine.dispose();
      all.dispose();
    }
  }

  /** Set by requestStop() on this rank; the step's statistics carry it to every rank (stepStats). */
  private stopVote = false;
  /** Called on every rank, after the same step, once any rank asked to stop (the Trainer's requestStop). */
  onStop: (() => void) | null = null;

  /** A stop request (a signal on this rank): every rank stops after the same optimizer step. */
  requestStop(): void {
    this.stopVote = true;
  }

  /** The step's figures summed over the ranks, with the stop votes: ranks that stopped on their own
   *  signal at different steps would wait on each other's collectives. */
  stepStats(xs: number[]): number[] {
    const all = this.sumStats([...xs, this.stopVote ? 1 : 0]);
    if (all[xs.length] > 0) this.onStop?.();
    return all.slice(0, xs.length);
  }

  /** Element-wise sums of `xs` over the ranks (float64). */
  sumStats(xs: number[]): number[] {
    if (this.world === 1) return xs.slice();
    const t = noGrad(() => fromTypedArray(Float64Array.from(xs), [xs.length], { dtype: 'float64' }));
    try {
      this.pg.allReduce(t, 'sum').wait();
      return Array.from(t.dataSync() as Float64Array);
    } finally {
      t.dispose();
    }
  }

  /**
   * The optimizer: plain AdamW for ddp, AdamW over this rank's shard for zero1/2/3. Sets up the buckets;
   * zero3 shards `params` at once, one unit per block of `blocks` (the decoder layers) plus one for the rest.
   */
  makeOptimizer(params: Tensor[], groups: ParamGroup[], o: AdamWOptions, blocks: Module[] = []): AdamW {
    if (this.sharded) {
      const dtypes = new Set(params.map((p) => p.dtype));
      if (dtypes.size > 1) throw new Error(`[train] --distributed ${this.strategy} needs one parameter dtype, got ${[...dtypes].join(', ')}`);
    }
    if (this.strategy === 'zero3') {
      this.zero3 = new Zero3(this.pg, params, blocks);
      this.layout = this.zero3.layout;
      this.leaves = this.zero3.makeLeaves();
    } else {
      this.layout = new FlatLayout(params, this.world, this.rank, { bucketBytes: this.bucketBytes });
      if (this.sharded)
        this.leaves = this.layout.slices.map((sl) => {
          const leaf = keep(flatView(sl.param, sl.inParam, sl.len));
          leaf.requiresGrad = true;
          return leaf;
        });
    }
    this.params = params.slice();
    this.leaves.forEach((leaf, i) => this.leafSlices.set(leaf, this.layout!.slices[i]));
    this.reducer = new GradReducer(
      this.pg,
      this.layout,
      this.strategy === 'zero1' || this.strategy === 'ddp' ? 'all-reduce' : 'reduce-scatter',
      this.overlap,
    );
    if (!this.sharded) return new AdamW(groups, o);
    const byParam = new Map<Tensor, Tensor[]>();
    this.layout.slices.forEach((sl, i) => byParam.set(sl.param, [...(byParam.get(sl.param) ?? []), this.leaves[i]]));
    const shardGroups = groups.map((g) => ({ ...g, params: g.params.flatMap((p) => byParam.get(p) ?? []) }));
    return new AdamW(shardGroups, o);
  }

  /** Which piece of the trainable parameters each leaf of `opt` covers (optimizer_shards.ts). */
  pieces(opt: AdamW): Piece[] {
    return piecesOf(opt, this.params, this.leafSlices);
  }

  /** Runs one micro-batch's forward + backward (zero3: with the non-block parameters gathered). */
  pass<T>(fn: () => T): T {
    return this.zero3 ? this.zero3.stepScope(fn) : fn();
  }

  /** Runs fn with the model's trainable weights whole (zero3 gathers them; `writeBack` takes them as the new
   *  shards afterwards, after a load). Every rank must call it. */
  withWeights<T>(fn: () => T, writeBack = false): T {
    return this.zero3 ? this.zero3.withWeights(fn, writeBack) : fn();
  }

  /** Gradient buckets started so far: by the hooks during backward, and in all. */
  get bucketCounts(): { duringBackward: number; total: number } {
    return { ...this.grads.counts };
  }

  private get grads(): GradReducer {
    if (!this.reducer) throw new Error('[train] DataParallel.makeOptimizer must run first');
    return this.reducer;
  }

  /** Before a micro-batch's forward: i-th of the k micro-batches of the step (all ranks counted). On this
   *  rank's last one the gradient hooks start the reduction during backward. */
  beforeMicroBatch(i: number, k: number): void {
    if (this.zero3) {
      // Arm on the same pass on every rank: the all-gathers of the passes must pair up across ranks.
      if (++this.passes === Math.ceil(k / this.world)) this.grads.arm();
      return;
    }
    const last = this.rank + this.world * Math.floor((k - 1 - this.rank) / this.world);
    if (i === last) this.grads.arm();
  }

  /**
   * After this rank's micro-batches of the step, before any other collective: zero3 repeats `zeroPass` (a
   * pass whose loss is scaled by 0) until this rank ran as many passes as the others (ceil(k / world)),
   * then the gradient buckets not started yet are.
   */
  flushGrads(k: number, zeroPass: (() => void) | null): void {
    if (this.zero3)
      while (this.passes < Math.ceil(k / this.world)) {
        if (!zeroPass)
          throw new Error(`[train] zero3: rank ${this.rank} has had no micro-batch yet to pad its passes with (fewer micro-batches than processes?)`);
        this.beforeMicroBatch(-1, k);
        zeroPass();
      }
    this.passes = 0;
    this.grads.flush();
  }

  /** Waits for the step's reductions; `scale` multiplies the summed gradients (micro-batches dropped). */
  syncGrads(scale = 1): void {
    this.grads.finish(scale);
    if (!this.sharded) return;
    const shardGrad = this.grads.shardGrad;
    this.layout!.slices.forEach((s, i) => {
      this.leaves[i].zeroGrad();
      this.leaves[i].grad = keep(shardGrad ? flatView(shardGrad, s.shardAt, s.len) : flatView(s.param.grad!, s.inParam, s.len));
    });
  }

  /** Gradient clipping after syncGrads (the norm of the whole summed gradient); returns the norm. */
  clipGradNorm(params: Tensor[], maxNorm: number): number {
    if (this.strategy === 'ddp' || this.strategy === 'zero1') return clipGradNorm(params, maxNorm);
    return tidy(() =>
      noGrad(() => {
        let local = 0;
        for (const leaf of this.leaves) {
          const sq = square(leaf.grad!);
          const t = sum(sq);
          local += t.item();
          sq.dispose();
          t.dispose();
        }
        const norm = Math.sqrt(this.sumStats([local])[0]);
        const coef = maxNorm / (norm + 1e-6);
        if (coef < 1)
          for (const leaf of this.leaves) {
            const g = mul(leaf.grad!, coef);
            copyInto(leaf.grad!, g);
            g.dispose();
          }
        return norm;
      }),
    );
  }

  /** After the optimizer step: zero1/zero2 all-gather the updated shards into every rank's weights. */
  afterStep(params: Tensor[]): void {
    for (const leaf of this.leaves) leaf.zeroGrad();
    for (const p of params) p.zeroGrad();
    this.grads.clear();
    if (!this.sharded || this.zero3 || this.world === 1) return; // zero3 gathers at the next use
    // One all-gather per bucket; the next is packed while the previous one is in flight.
    noGrad(() => {
      let prev: (() => void) | null = null;
      for (const b of this.layout!.buckets) {
        const p0 = b.members[0].param;
        const buf = keep(zeros([b.size], { dtype: p0.dtype, device: p0.device }));
        const mine = flatView(buf, this.rank * b.chunk, b.chunk);
        const lo = this.rank * b.chunk;
        for (const s of this.layout!.slices) {
          if (s.bucket !== b) continue;
          const [dst, src] = [flatView(buf, lo + s.shardAt - b.shardAt, s.len), flatView(s.param, s.inParam, s.len)];
          copyInto(dst, src);
          dst.dispose();
          src.dispose();
        }
        const work = this.pg.allGather(buf, mine);
        mine.dispose();
        prev?.();
        prev = () => {
          work.wait();
          for (const { param, at } of b.members) {
            const [dst, src] = [flatView(param, 0, param.numel), flatView(buf, at, param.numel)];
            copyInto(dst, src);
            dst.dispose();
            src.dispose();
          }
          buf.dispose();
        };
      }
      prev?.();
    });
  }

  /** Waits until every rank got here. */
  barrier(): void {
    this.pg.barrier().wait();
  }

  /**
   * Writes a checkpoint folder: rank 0 fills it through `lead` (weights, state, and the whole optimizer
   * when not sharded) and publishes it atomically (writeDirAtomic); then, sharded, every other rank adds
   * its optimizer shard atomically (temp file + rename). A folder missing a shard (a rank died in between)
   * is refused by resume.
   */
  saveCheckpoint(target: string, opt: AdamW, lead: (tmp: string) => void): void {
    this.withWeights(() => {
      if (this.rank === 0)
        writeDirAtomic(target, (tmp) => {
          lead(tmp);
          if (this.sharded) saveOptimizer(opt, path.join(tmp, shardFile(0, this.world)), { [PIECES_KEY]: JSON.stringify(this.pieces(opt)) });
          writeFileAtomic(path.join(tmp, DIST_FILE), JSON.stringify({ strategy: this.strategy, worldSize: this.world }) + '\n');
        });
    });
    this.barrier();
    if (this.sharded && this.rank > 0) {
      const f = path.join(target, shardFile(this.rank, this.world));
      const tmp = `${f}.tmp-${process.pid}`;
      saveOptimizer(opt, tmp, { [PIECES_KEY]: JSON.stringify(this.pieces(opt)) });
      fs.renameSync(tmp, f);
    }
    this.barrier();
  }

  dispose(): void {
    for (const leaf of this.leaves) {
      leaf.zeroGrad();
      leaf.dispose();
    }
    this.leaves = [];
    this.reducer?.dispose();
    this.reducer = null;
    this.zero3?.dispose(); // the parameters become whole again
    this.zero3 = null;
  }
}

/**
 * The command line's entry to a job: joins it when the launcher started several processes (lib/dist
 * init: MPI under mpirun, NCCL too on CUDA) and returns the DataParallel for the chosen strategy, or null
 * for a single process. Rank 0 alone should print; every rank must call this before touching the output.
 */
export async function joinJob(o: {
  strategy?: Strategy;
  timeoutS?: number;
  bucketMB?: number;
  device: 'cpu' | 'cuda';
}): Promise<DataParallel | null> {
  const { readDistEnv, init } = await import('../../dist');
  const env = readDistEnv();
  if (env.worldSize === 1) {
    if (o.strategy && o.strategy !== 'ddp')
      throw new Error(`[train] --distributed ${o.strategy} needs several processes (--nproc-per-node N or mpirun -np N)`);
    return null;
  }
  const pg = await init({ timeoutS: o.timeoutS, device: o.device });
  return new DataParallel(pg, o.strategy ?? 'ddp', { bucketMB: o.bucketMB });
}

/**
 * Loads checkpoint `dir`'s optimizer state into this run's optimizer, whatever world size and strategy
 * wrote it (optimizer_shards.ts cuts it again for this run's leaves); false when the checkpoint has none.
 */
export function loadCheckpointOptimizer(dir: string, opt: AdamW, trainable: Tensor[], parallel: DataParallel | null, step: number): boolean {
  const rec = readDistRecord(dir);
  const sharded = rec.strategy !== undefined && rec.strategy !== 'ddp';
  const files = sharded ? Array.from({ length: rec.worldSize }, (_, r) => shardFile(r, rec.worldSize)) : [OPTIMIZER_FILE];
  if (!sharded && !fs.existsSync(path.join(dir, OPTIMIZER_FILE))) return false;
  for (const f of files) if (!fs.existsSync(path.join(dir, f))) throw new Error(`[train] checkpoint ${dir} lacks ${f} (a rank died while saving?)`);
  loadOptimizerPieces(
    opt,
    files.map((f) => path.join(dir, f)),
    optimizerPieces(opt, trainable, parallel),
    step,
  );
  return true;
}

/** Which piece of the trainable parameters each leaf of `opt` covers (optimizer_shards.ts). */
export function optimizerPieces(opt: AdamW, trainable: Tensor[], parallel: DataParallel | null): Piece[] {
  return parallel ? parallel.pieces(opt) : piecesOf(opt, trainable);
}

/**
 * Refuses a resume whose data order would differ from the checkpoint's (`rec`: its recorded options). Another
 * number of processes may resume (the optimizer state is cut again): the global batch, not the per-process
 * accumulation, must then match.
 */
export function checkSameDataOrder(dir: string, rec: Record<string, unknown>, now: Record<string, unknown>, world: number): void {
  const otherWorld = readDistRecord(dir).worldSize !== world;
  for (const k of RESUME_MUST_MATCH as TrainerKey[])
    if (rec[k] !== undefined && rec[k] !== now[k] && !(otherWorld && k === 'gradAccum'))
      throw new Error(`[train] checkpoint ${dir} used ${k} ${String(rec[k])}, this run ${String(now[k])}: the data order would differ`);
  if (otherWorld && rec.globalBatch !== undefined && rec.globalBatch !== now.globalBatch)
    throw new Error(
      `[train] checkpoint ${dir} used a global batch of ${String(rec.globalBatch)}, this run ${String(now.globalBatch)} (micro-batch x accumulation x processes): the data order would differ`,
    );
}
