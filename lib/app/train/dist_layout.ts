// dist_layout.ts — where each trainable parameter sits in the communication buckets and in this rank's
// shard, for every data-parallel strategy (distributed.ts).
//
// Buckets take the parameters in reverse order (the order backward finishes them: lm_head first, the
// embeddings last), up to `bucketBytes` each, never mixing dtypes or devices (torch DDP's
// bucketing); ZeRO-3 passes its gather units instead (one bucket per decoder layer, ...). A bucket is padded
// to a multiple of the world size and cut into `world` equal chunks: rank r owns chunk r of every bucket, so
// one reduce-scatter per bucket leaves each rank the summed gradient of exactly its shard, and one
// all-gather per bucket rebuilds the weights (DeepSpeed's partitioning, bucket by bucket). This rank's
// shard is the concatenation of its chunks (`shardAt` is a chunk's place in it); a ShardSlice is the piece
// of one parameter that falls in it.
import type { Tensor } from '../../core/tensor';
import { contiguousStrides } from '../../core/tensor';
import { ITEMSIZE } from '../../core/dtype';

export interface Member {
  param: Tensor;
  /** Element offset of the parameter inside its bucket. */
  at: number;
}

export interface Bucket {
  index: number;
  members: Member[];
  /** Elements, padded to a multiple of the world size. */
  size: number;
  /** size / world: the elements each rank owns. */
  chunk: number;
  /** Where this rank's chunk starts in its shard. */
  shardAt: number;
}

export interface ShardSlice {
  param: Tensor;
  bucket: Bucket;
  /** Where the piece starts inside the parameter (flattened) and inside this rank's shard. */
  inParam: number;
  shardAt: number;
  len: number;
}

/** A contiguous 1-D view of `len` elements of contiguous `t`, from element `start`. */
export function flatView(t: Tensor, start: number, len: number): Tensor {
  return t.makeView([len], [1], t.offset + start);
}

/** A view of `buf` from element `at`, shaped like `p`. */
export function viewLike(buf: Tensor, at: number, p: Tensor): Tensor {
  return buf.makeView(p.shape.slice(), contiguousStrides(p.shape), buf.offset + at);
}

export class FlatLayout {
  readonly buckets: Bucket[] = [];
  readonly bucketOf = new Map<Tensor, Bucket>();
  /** This rank's pieces, bucket by bucket. */
  readonly slices: ShardSlice[] = [];
  /** Elements of this rank's shard. */
  readonly shardSize: number;

  constructor(
    params: Tensor[],
    readonly world: number,
    readonly rank: number,
    o: { bucketBytes?: number; units?: Tensor[][] },
  ) {
    for (const p of params) if (!p.isContiguous()) throw new Error('[train] data-parallel buckets need contiguous parameters');
    const groups = o.units ?? this.cut(params, o.bucketBytes ?? Infinity);
    let shardAt = 0;
    for (const ps of groups) {
      if (!ps.length) continue;
      let n = 0;
      const members = ps.map((param) => {
        const m = { param, at: n };
        n += param.numel;
        return m;
      });
      const size = Math.ceil(n / world) * world;
      const b: Bucket = { index: this.buckets.length, members, size, chunk: size / world, shardAt };
      shardAt += b.chunk;
      this.buckets.push(b);
      for (const m of members) this.bucketOf.set(m.param, b);
      const lo = rank * b.chunk;
      for (const m of members) {
        const s = Math.max(m.at, lo);
        const e = Math.min(m.at + m.param.numel, lo + b.chunk);
        if (e > s) this.slices.push({ param: m.param, bucket: b, inParam: s - m.at, shardAt: b.shardAt + s - lo, len: e - s });
      }
    }
    this.shardSize = shardAt;
  }

  /** Reverse parameter order, at most `limit` bytes a bucket (a larger parameter gets one of its own). */
  private cut(params: Tensor[], limit: number): Tensor[][] {
    const out: Tensor[][] = [];
    let cur: Tensor[] = [];
    let n = 0;
    for (const p of params.slice().reverse()) {
      const last = cur[cur.length - 1];
      const bytes = p.numel * ITEMSIZE[p.dtype];
      if (cur.length && (n + bytes > limit || p.dtype !== last.dtype || p.device !== last.device)) {
        out.push(cur);
        cur = [];
        n = 0;
      }
      cur.push(p);
      n += bytes;
    }
    if (cur.length) out.push(cur);
    return out;
  }
}
