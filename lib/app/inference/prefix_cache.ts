// prefix_cache.ts — keys and values of finished requests kept for reuse (prefix caching): a new request
// whose prompt begins as a cached one did, with the same images, prefills only the rest. A chat client
// resends the whole conversation every turn; with a hit the vision tower and the earlier turns are not
// computed again, only the new text.
//
// - An entry is one row of keys and values: a request's prompt ids (as the model takes them) followed by
//   the reply tokens that were fed back, and `key`, naming its images ('' when it has none).
// - A lookup picks the entry sharing the longest prefix of ids with the new prompt, among those whose
//   key matches when that prefix holds an image. What follows the prefix must be text (it is fed as
//   tokens), at least one prompt token must be left to feed (its logits give the first new token), and the
//   prefix must cover at least MIN_REUSE positions (below that a copy saves little).
// - The cache keeps at most `maxPositions` positions in all: the least recently used entries go first; an
//   entry that another one extends (same key, its ids a prefix) is dropped when the longer one comes.
import { KVCache } from '../../models/llama';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import { IMAGE_TOKEN_INDEX } from '../../constants';
import { splicedLength } from './generate';

/** Shortest prefix, in positions, worth reusing. */
export const MIN_REUSE = 16;

interface Entry {
  ids: number[];
  key: string;
  cache: KVCache;
}

/** A reusable prefix: the first `positions` positions of `cache` hold the prompt's first `tokens` ids. */
export interface PrefixHit {
  cache: KVCache;
  tokens: number;
  positions: number;
}

export class PrefixCache {
  /** Least recently used first. */
  private entries: Entry[] = [];
  /** Positions held. */
  positions = 0;
  hits = 0;
  lookups = 0;

  constructor(
    private readonly model: LlavaForConditionalGeneration,
    readonly maxPositions: number,
  ) {
    if (!(Number.isInteger(maxPositions) && maxPositions >= 0))
      throw new Error(`[prefix_cache] maxPositions must be a non-negative integer (got ${maxPositions})`);
  }

  private isImage(id: number): boolean {
    return id === IMAGE_TOKEN_INDEX || id === this.model.config.imageTokenIndex;
  }

  /** The longest reusable prefix for a prompt with images named `key`, or null. */
  lookup(ids: readonly number[], key: string): PrefixHit | null {
    this.lookups++;
    let best: { e: Entry; p: number } | null = null;
    for (const e of this.entries) {
      let p = 0;
      const most = Math.min(e.ids.length, ids.length - 1);
      while (p < most && e.ids[p] === ids[p]) p++;
      if (p === 0 || (best && p <= best.p)) continue;
      let imageInPrefix = false;
      for (let i = 0; i < p; i++) if (this.isImage(ids[i])) imageInPrefix = true;
      if (imageInPrefix && e.key !== key) continue;
      let imageAfter = false;
      for (let i = p; i < ids.length; i++) if (this.isImage(ids[i])) imageAfter = true;
      if (!imageAfter) best = { e, p };
    }
    if (!best) return null;
    const positions = splicedLength(this.model, ids.slice(0, best.p));
    if (positions < MIN_REUSE) return null;
    this.entries.splice(this.entries.indexOf(best.e), 1);
    this.entries.push(best.e); // most recently used
    this.hits++;
    return { cache: best.e.cache, tokens: best.p, positions };
  }

  /** Whether an entry of this many positions would be kept (callers skip copying one that would not). */
  keeps(positions: number): boolean {
    return positions >= MIN_REUSE && positions <= this.maxPositions;
  }

  /** Keeps `cache` (one row, filled with exactly the positions of `ids`) for later prompts; the cache is
   *  the prefix cache's from now on (freed when evicted or when it does not fit). */
  store(ids: number[], key: string, cache: KVCache): void {
    if (cache.B !== 1 || cache.length !== splicedLength(this.model, ids)) {
      cache.dispose();
      throw new Error('[prefix_cache] store needs a one-row cache filled with exactly the positions of its ids');
    }
    if (!this.keeps(cache.length)) {
      cache.dispose();
      return;
    }
    const extended = this.entries.filter((e) => e.key === key && e.ids.length <= ids.length && e.ids.every((id, i) => id === ids[i]));
    for (const e of extended) this.drop(e);
    this.entries.push({ ids, key, cache });
    this.positions += cache.length;
    while (this.positions > this.maxPositions) this.drop(this.entries[0]);
  }

  private drop(e: Entry): void {
    this.entries.splice(this.entries.indexOf(e), 1);
    this.positions -= e.cache.length;
    e.cache.dispose();
  }

  /** Entries held. */
  get size(): number {
    return this.entries.length;
  }

  dispose(): void {
    for (const e of this.entries) e.cache.dispose();
    this.entries = [];
    this.positions = 0;
  }
}
