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
// Strategies:
// - ddp: gradients all-reduced in buckets (25 MB by default, packed per dtype). The engine's autograd has
//   no per-parameter hook, so the reduction starts after the backward of the step's last micro-batch; the
//   buckets themselves are pipelined (bucket i is in flight while bucket i+1 is packed). Every rank then
//   runs the same AdamW update.
// - zero1: as ddp for gradients; AdamW moments and f32 master weights exist only for this rank's shard of
//   the flat parameter space (1/world of it). Each rank updates its shard, then the weights are all-gathered.
// - zero2: as zero1, but gradients are reduce-scattered: each rank keeps the summed gradient of its shard
//   only (each full gradient is freed as it is packed for the reduction, after backward; DeepSpeed
//   reduces and frees them bucket by bucket during backward, which needs the hook this engine lacks, so
//   the peak here is zero1's).
// - zero3 (parameters sharded and gathered per layer) is not implemented: refused with that message.
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
import type { ProcessGroup, Work } from '../../dist';
import { saveOptimizer, loadOptimizer } from './train_state';
import { writeDirAtomic, writeFileAtomic } from '../util/files';
import { STRATEGIES } from './options';

/** In a checkpoint of a sharded run: how it was sharded, and each rank's optimizer shard. */
export const DIST_FILE = 'distributed.json';
export const shardFile = (rank: number, world: number): string => `optimizer.rank-${rank}-of-${world}.safetensors`;

export type Strategy = (typeof STRATEGIES)[number];

/** A contiguous 1-D view of `len` elements of contiguous `t`, from element `start`. */
function flat(t: Tensor, start: number, len: number): Tensor {
  return t.makeView([len], [1], t.offset + start);
}

/** A piece of one parameter that falls in this rank's shard of the flat parameter space. */
interface ShardSlice {
  param: Tensor;
  /** Where the piece starts inside the parameter, and inside the flat space. */
  inParam: number;
  inFlat: number;
  len: number;
  /** The leaf the shard optimizer updates: a view of the parameter's bytes. */
  leaf: Tensor;
}

export class DataParallel {
  readonly rank: number;
  readonly world: number;
  private readonly bucketElems: number;
  /** zero1/zero2: the flat layout. */
  private offsets = new Map<Tensor, number>();
  private shardSize = 0;
  private slices: ShardSlice[] = [];
  private shardGrad: Tensor | null = null;

  constructor(
    readonly pg: ProcessGroup,
    readonly strategy: Strategy,
    o: { bucketMB?: number } = {},
  ) {
    if (!STRATEGIES.includes(strategy)) throw new Error(`[train] unknown --distributed '${String(strategy)}' (${STRATEGIES.join(', ')})`);
    if (strategy === 'zero3')
      throw new Error('[train] --distributed zero3 (parameters sharded and gathered per layer) is not supported yet: use zero2 or zero1');
    this.rank = pg.rank;
    this.world = pg.worldSize;
    this.bucketElems = Math.max(1, Math.floor(((o.bucketMB ?? 25) * 1024 * 1024) / 4));
  }

  get sharded(): boolean {
    return this.strategy === 'zero1' || this.strategy === 'zero2';
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

  /** The optimizer: plain AdamW for ddp, AdamW over this rank's shard for zero1/zero2. */
  makeOptimizer(params: Tensor[], groups: ParamGroup[], o: AdamWOptions): AdamW {
    if (!this.sharded) return new AdamW(groups, o);
    const dtypes = new Set(params.map((p) => p.dtype));
    if (dtypes.size > 1) throw new Error(`[train] --distributed ${this.strategy} needs one parameter dtype, got ${[...dtypes].join(', ')}`);
    let at = 0;
    for (const p of params) {
      if (!p.isContiguous()) throw new Error('[train] sharding needs contiguous parameters');
      this.offsets.set(p, at);
      at += p.numel;
    }
    this.shardSize = Math.ceil(at / this.world);
    const lo = this.rank * this.shardSize;
    const hi = Math.min(at, lo + this.shardSize);
    const byParam = new Map<Tensor, ShardSlice>();
    for (const p of params) {
      const a = this.offsets.get(p)!;
      const s = Math.max(a, lo);
      const e = Math.min(a + p.numel, hi);
      if (e <= s) continue;
      const leaf = keep(flat(p, s - a, e - s));
      leaf.requiresGrad = true;
      const sl: ShardSlice = { param: p, inParam: s - a, inFlat: s, len: e - s, leaf };
      this.slices.push(sl);
      byParam.set(p, sl);
    }
    const shardGroups = groups.map((g) => ({ ...g, params: g.params.filter((p) => byParam.has(p)).map((p) => byParam.get(p)!.leaf) }));
    return new AdamW(shardGroups, o);
  }

  /** After the step's backward: reduce gradients (see the header). Missing gradients count as zeros. */
  syncGrads(params: Tensor[]): void {
    tidy(() =>
      noGrad(() => {
        for (const p of params) if (!p.grad) p.grad = keep(zeros(p.shape, { dtype: p.dtype, device: p.device }));
        if (this.world > 1) {
          if (this.strategy === 'zero2') this.reduceScatterGrads(params);
          else this.allReduceGrads(params);
        }
        if (this.strategy === 'zero1') for (const s of this.slices) s.leaf.grad = keep(flat(s.param.grad!, s.inParam, s.len));
      }),
    );
  }

  private allReduceGrads(params: Tensor[]): void {
    const byType = new Map<string, Tensor[]>();
    for (const p of params) byType.set(`${p.dtype}/${p.device}`, [...(byType.get(`${p.dtype}/${p.device}`) ?? []), p]);
    const inFlight: { bucket: Tensor; members: Tensor[]; work: Work }[] = [];
    const finish = (f: (typeof inFlight)[number]): void => {
      f.work.wait();
      let at = 0;
      for (const p of f.members) {
        const src = flat(f.bucket, at, p.numel);
        copyInto(flat(p.grad!, 0, p.numel), src);
        at += p.numel;
      }
      f.bucket.dispose();
    };
    for (const list of byType.values()) {
      let i = 0;
      while (i < list.length) {
        const members: Tensor[] = [];
        let n = 0;
        while (i < list.length && (members.length === 0 || n + list[i].numel <= this.bucketElems)) {
          members.push(list[i]);
          n += list[i].numel;
          i++;
        }
        const bucket = keep(zeros([n], { dtype: members[0].dtype, device: members[0].device }));
        let at = 0;
        for (const p of members) {
          copyInto(flat(bucket, at, p.numel), flat(p.grad!, 0, p.numel));
          at += p.numel;
        }
        inFlight.push({ bucket, members, work: this.pg.allReduce(bucket, 'sum') });
        // Two buckets in flight at most: the next one is packed while the previous is reduced.
        if (inFlight.length > 1) finish(inFlight.shift()!);
      }
    }
    for (const f of inFlight) finish(f);
  }

  private reduceScatterGrads(params: Tensor[]): void {
    const p0 = params[0];
    const full = zeros([this.shardSize * this.world], { dtype: p0.dtype, device: p0.device });
    try {
      // Each gradient is freed as soon as it is packed: the full gradient exists once, not twice.
      for (const p of params) {
        const [dst, src] = [flat(full, this.offsets.get(p)!, p.numel), flat(p.grad!, 0, p.numel)];
        copyInto(dst, src);
        [dst, src].forEach((v) => v.dispose()); // views hold their storage: drop them with the gradient
        p.zeroGrad();
      }
      this.shardGrad?.dispose();
      this.shardGrad = keep(zeros([this.shardSize], { dtype: p0.dtype, device: p0.device }));
      this.pg.reduceScatter(this.shardGrad, full, 'sum').wait();
    } finally {
      full.dispose();
    }
    const lo = this.rank * this.shardSize;
    for (const s of this.slices) s.leaf.grad = keep(flat(this.shardGrad, s.inFlat - lo, s.len));
  }

  /** Gradient clipping after syncGrads (the norm of the whole summed gradient); returns the norm. */
  clipGradNorm(params: Tensor[], maxNorm: number): number {
    if (this.strategy !== 'zero2') return clipGradNorm(params, maxNorm);
    return tidy(() =>
      noGrad(() => {
        let local = 0;
        for (const s of this.slices) {
          const sq = square(s.leaf.grad!);
          const t = sum(sq);
          local += t.item();
          sq.dispose();
          t.dispose();
        }
        const norm = Math.sqrt(this.sumStats([local])[0]);
        const coef = maxNorm / (norm + 1e-6);
        if (coef < 1)
          for (const s of this.slices) {
            const g = mul(s.leaf.grad!, coef);
            copyInto(s.leaf.grad!, g);
            g.dispose();
          }
        return norm;
      }),
    );
  }

  /** After the optimizer step: zero1/zero2 all-gather the updated shards into every rank's weights. */
  afterStep(params: Tensor[]): void {
    if (!this.sharded) return;
    // The optimizer's parameters are the shard leaves: the full gradients are cleared here.
    for (const s of this.slices) s.leaf.zeroGrad();
    for (const p of params) p.zeroGrad();
    if (this.strategy === 'zero2') {
      this.shardGrad?.dispose();
      this.shardGrad = null;
    }
    if (this.world === 1) return;
    tidy(() =>
      noGrad(() => {
        const p0 = params[0];
        const buf = zeros([this.shardSize * this.world], { dtype: p0.dtype, device: p0.device });
        try {
          for (const s of this.slices) copyInto(flat(buf, s.inFlat, s.len), s.leaf);
          this.pg.allGather(buf, flat(buf, this.rank * this.shardSize, this.shardSize)).wait();
          for (const p of params) copyInto(flat(p, 0, p.numel), flat(buf, this.offsets.get(p)!, p.numel));
        } finally {
          buf.dispose();
        }
      }),
    );
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
    if (this.rank === 0)
      writeDirAtomic(target, (tmp) => {
        lead(tmp);
        if (this.sharded) saveOptimizer(opt, path.join(tmp, shardFile(0, this.world)));
        writeFileAtomic(path.join(tmp, DIST_FILE), JSON.stringify({ strategy: this.strategy, worldSize: this.world }) + '\n');
      });
    this.barrier();
    if (this.sharded && this.rank > 0) {
      const f = path.join(target, shardFile(this.rank, this.world));
      const tmp = `${f}.tmp-${process.pid}`;
      saveOptimizer(opt, tmp);
      fs.renameSync(tmp, f);
    }
    this.barrier();
  }

  /** Loads this rank's optimizer shard (checkProcesses has matched the world size and the strategy). */
  loadOptimizerShard(dir: string, opt: AdamW, step: number): void {
    const shard = path.join(dir, shardFile(this.rank, this.world));
    if (!fs.existsSync(shard)) throw new Error(`[train] checkpoint ${dir} lacks ${shardFile(this.rank, this.world)} (a rank died while saving?)`);
    loadOptimizer(opt, shard, step);
  }

  dispose(): void {
    for (const s of this.slices) {
      s.leaf.zeroGrad();
      s.leaf.dispose();
    }
    this.slices = [];
    this.shardGrad?.dispose();
    this.shardGrad = null;
  }
}

/**
 * The command line's entry to a job: joins it when the launcher started several processes (lib/dist
 * init: MPI under mpirun, NCCL too on CUDA) and returns the DataParallel for the chosen strategy, or null
 * for a single process. Rank 0 alone should print; every rank must call this before touching the output.
 */
export async function joinJob(o: { strategy?: Strategy; timeoutS?: number; device: 'cpu' | 'cuda' }): Promise<DataParallel | null> {
  if (o.strategy === 'zero3')
    throw new Error('[train] --distributed zero3 (parameters sharded and gathered per layer) is not supported yet: use zero2 or zero1');
  const { readDistEnv, init } = await import('../../dist');
  const env = readDistEnv();
  if (env.worldSize === 1) {
    if (o.strategy && o.strategy !== 'ddp')
      throw new Error(`[train] --distributed ${o.strategy} needs several processes (--nproc-per-node N or mpirun -np N)`);
    return null;
  }
  const pg = await init({ timeoutS: o.timeoutS, device: o.device });
  return new DataParallel(pg, o.strategy ?? 'ddp');
}

/**
 * A checkpoint resumes with as many processes as wrote it (the per-process accumulation, and so the data
 * order, depends on it) and, when its optimizer state is sharded, with a sharded strategy (the shards are
 * cut by the world size). A one-process checkpoint has no distributed.json.
 */
export function checkProcesses(dir: string, parallel: DataParallel | null): void {
  const f = path.join(dir, DIST_FILE);
  const rec = fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as { strategy?: string; worldSize?: number }) : { worldSize: 1 };
  const world = parallel?.world ?? 1;
  const wasSharded = rec.strategy === 'zero1' || rec.strategy === 'zero2';
  const what = `${rec.worldSize} process${rec.worldSize === 1 ? '' : 'es'}${rec.strategy ? ` (${rec.strategy})` : ''}`;
  if (rec.worldSize !== world || wasSharded !== !!parallel?.sharded)
    throw new Error(
      `[train] checkpoint ${dir} was written by ${what}; this run has ${world}${parallel ? ` (${parallel.strategy})` : ''}: resume with the same number of processes${wasSharded ? ' and a sharded strategy (zero1 or zero2)' : ''}`,
    );
}
