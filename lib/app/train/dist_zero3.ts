// dist_zero3.ts — ZeRO-3: the trainable parameters themselves are sharded (distributed.ts).
//
// Units: each block the caller names (LLaMA's decoder layers) is one unit; every other trainable parameter
// (embeddings, final norm, lm_head, projector) forms one more, the "rest". A unit is one bucket of the
// FlatLayout (dist_layout.ts): rank r keeps chunk r of it in `shardW`, the float weights its optimizer
// updates (the AdamW leaves are views of shardW, so moments and master weights are sharded as in zero1/2).
// Between uses a trainable parameter sits on an empty storage (Tensor.rebind): it holds no memory, and a
// kernel that touched it would fail its size check.
//
// A unit is gathered (one all-gather into a bucket-sized buffer; the parameters are rebound to views of it)
// just before it runs and freed right after: a block's Module.paramScope does it around its forward, and the
// model recomputes the block in backward inside the scope again (lib/core/recompute.ts), so the weights are
// gathered a second time for backward, as DeepSpeed does, and activations are not kept (the cost: one extra
// forward per block). The rest unit stays gathered for a whole forward + backward pass (stepScope): its
// parameters are used at both ends of the model. Gradients leave through the zero2 path: each unit's
// gradient is reduce-scattered as soon as its recomputed backward is done (dist_grads.ts), then freed.
// Prefetch: once a block is gathered, the next block's all-gather starts (prefetchAfter), so it travels
// while the current block computes; at most two blocks exist at once.
//
// Every rank must run the same number of passes per optimizer step, since each pass gathers with the
// others: distributed.ts pads a rank that ran fewer with zero-weighted repeats.
import type { Tensor } from '../../core/tensor';
import { Storage, keep } from '../../core/memory';
import { noGrad } from '../../core/autograd';
import { zeros } from '../../ops';
import { copyInto } from '../../ops/elementwise';
import type { Module } from '../../nn/module';
import type { ProcessGroup, Work } from '../../dist';
import { FlatLayout, flatView, type Bucket } from './dist_layout';

interface InFlight {
  unit: Unit;
  buf: Tensor;
  work: Work;
}

interface Unit {
  bucket: Bucket;
  /** The block whose paramScope gathers it; null for the rest. */
  block: Module | null;
  buf: Tensor | null;
  uses: number;
}

export class Zero3 {
  readonly layout: FlatLayout;
  /** This rank's chunk of every unit: the weights its optimizer updates. */
  readonly shardW: Tensor;
  private readonly units: Unit[];
  private readonly empty: Storage;
  /** The block units in model order, and the index of the last one gathered (prefetch direction). */
  private readonly blocks: Unit[];
  private lastBlock = -1;
  private pending: InFlight | null = null;
  /** For tests: gathers done, prefetches (and those dropped unused), and the most decoder blocks whose
   *  weights existed at once (prefetched included). */
  readonly stats = { gathers: 0, prefetches: 0, dropped: 0, blocksNow: 0, peakBlocks: 0 };

  constructor(
    private readonly pg: ProcessGroup,
    params: Tensor[],
    blocks: Module[],
    /** Start the next block's all-gather while the current one runs. */
    private readonly prefetch = true,
  ) {
    const trainable = new Set(params);
    const inBlock = new Set<Tensor>();
    const groups: Tensor[][] = [];
    const owners: (Module | null)[] = [];
    for (const m of blocks.slice().reverse()) {
      const ps = m.parameters().filter((p) => trainable.has(p) && !inBlock.has(p));
      ps.forEach((p) => inBlock.add(p));
      if (ps.length) {
        groups.push(ps);
        owners.push(m);
      }
    }
    const rest = params.filter((p) => !inBlock.has(p));
    if (rest.length) {
      groups.push(rest);
      owners.push(null);
    }
    this.layout = new FlatLayout(params, pg.worldSize, pg.rank, { units: groups });
    this.units = this.layout.buckets.map((bucket, i) => ({ bucket, block: owners[i], buf: null, uses: 0 }));
    this.blocks = blocks.map((m) => this.units.find((u) => u.block === m)).filter((u): u is Unit => !!u);
    const p0 = params[0];
    this.empty = Storage.alloc(0, p0.device);
    this.empty.retain();
    this.shardW = keep(zeros([this.layout.shardSize], { dtype: p0.dtype, device: p0.device }));
    // Every rank loaded the full weights: keep this rank's chunks, then let the parameters go.
    noGrad(() => {
      for (const s of this.layout.slices) this.copy(flatView(this.shardW, s.shardAt, s.len), flatView(s.param, s.inParam, s.len));
    });
    for (const u of this.units) this.free(u);
    for (const u of this.units) if (u.block) u.block.paramScope = (fn) => this.within([u], fn);
  }

  private copy(dst: Tensor, src: Tensor): void {
    copyInto(dst, src);
    dst.dispose();
    src.dispose();
  }

  /** The AdamW leaves: one view of shardW per slice (layout.slices order). */
  makeLeaves(): Tensor[] {
    return this.layout.slices.map((s) => {
      const leaf = keep(flatView(this.shardW, s.shardAt, s.len));
      leaf.requiresGrad = true;
      return leaf;
    });
  }

  /** Starts the all-gather of unit u into a new buffer (this rank's chunk copied in first). */
  private startGather(u: Unit): InFlight {
    const b = u.bucket;
    const p0 = b.members[0].param;
    if (u.block) this.stats.peakBlocks = Math.max(this.stats.peakBlocks, ++this.stats.blocksNow);
    return noGrad(() => {
      const buf = keep(zeros([b.size], { dtype: p0.dtype, device: p0.device }));
      const mine = flatView(buf, this.pg.rank * b.chunk, b.chunk);
      const src = flatView(this.shardW, b.shardAt, b.chunk);
      copyInto(mine, src);
      src.dispose();
      const work = this.pg.allGather(buf, mine);
      mine.dispose();
      return { unit: u, buf, work };
    });
  }

  private gather(u: Unit): void {
    if (u.uses++ > 0) return;
    let g = this.pending;
    if (g?.unit === u) this.pending = null;
    else {
      this.dropPending();
      g = this.startGather(u);
    }
    g.work.wait();
    for (const { param, at } of u.bucket.members) param.rebind(g.buf.storage, g.buf.offset + at);
    u.buf = g.buf;
    this.stats.gathers++;
    if (u.block) this.prefetchAfter(u);
  }

  /**
   * Prefetch: after block i is gathered, the all-gather of the block the pass needs next starts at once
   * and runs (on MPI's thread, or NCCL's stream) while block i computes. The direction is read from the
   * order of the gathers: i after i-1 is a forward (next i+1), anything else a backward (next i-1). The
   * decisions depend only on that order, the same on every rank, so the collectives stay paired.
   */
  private prefetchAfter(u: Unit): void {
    const i = this.blocks.indexOf(u);
    const next = this.blocks[i === this.lastBlock + 1 ? i + 1 : i - 1];
    this.lastBlock = i;
    if (!this.prefetch || !next || next.uses > 0 || this.pending) return;
    this.pending = this.startGather(next);
    this.stats.prefetches++;
  }

  /** A prefetched unit the pass did not ask for next: completed (the ranks issued it) and dropped. */
  private dropPending(): void {
    const g = this.pending;
    if (!g) return;
    this.pending = null;
    this.stats.dropped++;
    g.work.wait();
    g.buf.dispose();
    if (g.unit.block) this.stats.blocksNow--;
  }

  private free(u: Unit): void {
    for (const { param } of u.bucket.members) param.rebind(this.empty);
    u.buf?.dispose();
    u.buf = null;
  }

  private release(u: Unit): void {
    if (--u.uses > 0) return;
    this.free(u);
    if (u.block) this.stats.blocksNow--;
  }

  /** Runs fn with the units gathered (collective: every rank must call it alike). */
  private within<T>(units: Unit[], fn: () => T): T {
    for (const u of units) this.gather(u);
    try {
      return fn();
    } finally {
      for (const u of units) this.release(u);
    }
  }

  /** One forward + backward pass: the rest unit stays gathered throughout. */
  stepScope<T>(fn: () => T): T {
    this.lastBlock = -1; // a pass starts with a forward
    return this.within(
      this.units.filter((u) => !u.block),
      fn,
    );
  }

  /** Runs fn with every trainable parameter whole (saving, loading); `writeBack` then takes the parameters'
   *  values as the new shards (after a load). Collective. */
  withWeights<T>(fn: () => T, writeBack = false): T {
    return this.within(this.units, () => {
      const r = fn();
      if (writeBack)
        noGrad(() => {
          for (const s of this.layout.slices) this.copy(flatView(this.shardW, s.shardAt, s.len), flatView(s.param, s.inParam, s.len));
        });
      return r;
    });
  }

  /** Leaves every parameter whole again (the model works alone afterwards) and frees the shards. Collective. */
  dispose(): void {
    this.dropPending();
    for (const u of this.units) {
      if (u.block) u.block.paramScope = null;
      this.gather(u);
      u.buf?.dispose(); // the parameters keep its storage
      u.buf = null;
      u.uses = 0;
    }
    this.dropPending();
    this.stats.blocksNow = 0;
    this.shardW.dispose();
    this.empty.release();
  }
}
