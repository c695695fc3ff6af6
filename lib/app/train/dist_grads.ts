// dist_grads.ts — gradient reduction bucket by bucket, started during backward (distributed.ts).
//
// Every trainable parameter carries a grad-ready hook (lib/core/autograd.ts onGradReady). On the step's
// last micro-batch of this rank the hooks are armed: when the last parameter of bucket i is final and
// buckets 0..i-1 have been launched, bucket i is packed and its asynchronous collective starts, while
// backward goes on with the layers below (torch DDP's overlap). Buckets always start in index order, on
// every rank, whatever finished first, so the collectives match across ranks. flush() starts whatever is
// left (a rank whose last micro-batch was dropped, a parameter that got no gradient, overlap off) before
// any other collective of the step; finish() waits for them all. The sums are the same element by element
// with or without overlap: only the time the collectives start differs.
//
// Modes:
// - 'all-reduce' (ddp, zero1): the bucket is all-reduced; each parameter's .grad then becomes a view of
//   the bucket (torch's gradient_as_bucket_view: no copy back, the old gradient is freed at packing).
// - 'reduce-scatter' (zero2, zero3): each rank receives the sum of its chunk of the bucket into its shard
//   gradient; the full gradients are freed as their bucket is packed, and at most two packed buckets are
//   in flight, so the full gradient never exists at once on the last micro-batch (DeepSpeed's ZeRO-2).
import type { Tensor } from '../../core/tensor';
import { keep, tidy } from '../../core/memory';
import { noGrad, onGradReady } from '../../core/autograd';
import { zeros } from '../../ops';
import { copyInto, mul } from '../../ops/elementwise';
import type { ProcessGroup, Work } from '../../dist';
import { flatView, viewLike, type Bucket, type FlatLayout } from './dist_layout';

export type ReduceMode = 'all-reduce' | 'reduce-scatter';

interface InFlight {
  bucket: Bucket;
  buf: Tensor | null;
  work: Work;
}

export class GradReducer {
  private armed = false;
  private next = 0;
  private pending: number[] = [];
  private inFlight: InFlight[] = [];
  private readonly removers: (() => void)[] = [];
  /** Buckets started by the hooks during backward, and all buckets started (for tests and benches). */
  readonly counts = { duringBackward: 0, total: 0 };
  /** reduce-scatter: this rank's summed gradient of its shard, until the step's end. */
  shardGrad: Tensor | null = null;

  constructor(
    private readonly pg: ProcessGroup,
    readonly layout: FlatLayout,
    readonly mode: ReduceMode,
    /** false: every bucket starts after backward (flush), for comparison. */
    readonly overlap = true,
  ) {
    this.reset();
    if (overlap) for (const b of layout.buckets) for (const m of b.members) this.removers.push(onGradReady(m.param, () => this.ready(b)));
  }

  private reset(): void {
    this.next = 0;
    this.pending = this.layout.buckets.map((b) => b.members.length);
  }

  /** The next backward is this rank's last of the step: its final gradients start their reduction. */
  arm(): void {
    this.armed = this.overlap;
  }

  private ready(b: Bucket): void {
    if (!this.armed) return;
    this.pending[b.index]--;
    while (this.next < this.layout.buckets.length && this.pending[this.next] <= 0) {
      this.counts.duringBackward++;
      this.launch(this.layout.buckets[this.next++]);
    }
  }

  /** Starts every bucket not started yet, in order. Call on every rank after its micro-batches. */
  flush(): void {
    this.armed = false;
    while (this.next < this.layout.buckets.length) this.launch(this.layout.buckets[this.next++]);
  }

  private launch(b: Bucket): void {
    this.counts.total++;
    noGrad(() => {
      const p0 = b.members[0].param;
      const buf = keep(zeros([b.size], { dtype: p0.dtype, device: p0.device }));
      for (const { param, at } of b.members) {
        if (!param.grad) continue;
        const [dst, src] = [flatView(buf, at, param.numel), flatView(param.grad, 0, param.numel)];
        copyInto(dst, src);
        dst.dispose();
        src.dispose();
        param.zeroGrad(); // packed: all-reduce hands back a view of the bucket, reduce-scatter keeps only the shard
      }
      if (this.mode === 'all-reduce') {
        this.inFlight.push({ bucket: b, buf, work: this.pg.allReduce(buf, 'sum') });
        return;
      }
      if (!this.shardGrad) this.shardGrad = keep(zeros([this.layout.shardSize], { dtype: p0.dtype, device: p0.device }));
      const out = flatView(this.shardGrad, b.shardAt, b.chunk);
      const work = this.pg.reduceScatter(out, buf, 'sum');
      out.dispose();
      buf.dispose(); // the Work holds the storage until wait()
      this.inFlight.push({ bucket: b, buf: null, work });
      if (this.inFlight.length > 2) this.complete(this.inFlight.shift()!);
    });
  }

  private complete(f: InFlight): void {
    f.work.wait();
    if (!f.buf) return;
    for (const { param, at } of f.bucket.members) param.grad = keep(viewLike(f.buf, at, param));
    f.buf.dispose(); // the views hold the storage
  }

  /**
   * Waits for every bucket (flush() first); then the summed gradients are in each parameter's .grad
   * (all-reduce) or in shardGrad (reduce-scatter), multiplied by `scale` when it is not 1.
   */
  finish(scale = 1): void {
    this.flush();
    for (const f of this.inFlight) this.complete(f);
    this.inFlight = [];
    this.reset();
    if (scale === 1) return;
    tidy(() =>
      noGrad(() => {
        const targets = this.mode === 'all-reduce' ? this.layout.buckets.flatMap((b) => b.members.map((m) => m.param.grad!)) : [this.shardGrad!];
        for (const g of targets) copyInto(g, mul(g, scale));
      }),
    );
  }

  /** After the optimizer step. */
  clear(): void {
    this.shardGrad?.dispose();
    this.shardGrad = null;
  }

  dispose(): void {
    for (const f of this.inFlight) this.complete(f);
    this.inFlight = [];
    this.removers.forEach((r) => r());
    this.removers.length = 0;
    this.clear();
  }
}
