// sampler.ts — the order in which training visits samples each epoch: a seeded shuffle, or the
// reference's length-grouped and modality-grouped samplers (docs/reference.md §4.8), deterministic in
// (seed, epoch) so a resumed run continues the same order.
//
// - Randomness: mulberry32 seeded through a splitmix32 mix of (seed, epoch); permutations are Fisher–Yates
//   (util/random.ts). The reference draws from torch's global RNG: we keep its algorithm and determinism,
//   not torch's random stream.
// - In the modality-grouped sampler the *last* megabatch of each modality is always set aside and appended
//   (merged and index-sorted) at the end, even when it happens to be full: the reference does this, though
//   docs/reference.md §4.8 calls them "the trailing partial megabatches".
import { DataError, modalityLengthOf, type Sample } from '../processing/data';
import { mulberry32, mixSeed, randomPermutation, shuffleIndices } from '../util/random';

/** Split sorted indices into numChunks chunks of equal count, greedily balancing total length. */
export function splitToEvenChunks(indices: number[], lengths: number[], numChunks: number): number[][] {
  if (indices.length % numChunks !== 0) {
    // Not divisible: strided split, as the reference does.
    return Array.from({ length: numChunks }, (_, c) => indices.filter((_, k) => k % numChunks === c));
  }
  const per = indices.length / numChunks;
  const chunks: number[][] = Array.from({ length: numChunks }, () => []);
  const totals = new Array<number>(numChunks).fill(0);
  for (const idx of indices) {
    let best = 0;
    for (let c = 1; c < numChunks; c++) if (totals[c] < totals[best]) best = c; // first minimum wins
    chunks[best].push(idx);
    totals[best] += lengths[idx];
    if (chunks[best].length === per) totals[best] = Infinity;
  }
  return chunks;
}

/** `get_length_grouped_indices`: random permutation, megabatches of worldSize*batchSize sorted by length
 *  (descending, stable), each split into worldSize balanced chunks. */
export function lengthGroupedIndices(lengths: number[], batchSize: number, worldSize: number, rng: () => number): number[] {
  const perm = randomPermutation(lengths.length, rng);
  const mb = worldSize * batchSize;
  const out: number[] = [];
  for (let i = 0; i < perm.length; i += mb) {
    const megabatch = perm.slice(i, i + mb).sort((a, b) => lengths[b] - lengths[a]);
    for (const chunk of splitToEvenChunks(megabatch, lengths, worldSize)) out.push(...chunk);
  }
  return out;
}

/** `get_modality_length_grouped_indices` (group_by_modality_length). `lengths` are modality lengths
 *  (positive = image sample, negative = text-only); `worldSize` is world_size × grad_accum as the trainer
 *  passes it. Every megabatch holds one modality except the final, merged one. */
export function modalityLengthGroupedIndices(lengths: number[], batchSize: number, worldSize: number, rng: () => number): number[] {
  const zero = lengths.findIndex((l) => l === 0);
  if (zero >= 0) throw new DataError(`[data] sampler: sample ${zero} has zero length (reference asserts non-zero)`);
  if (lengths.every((l) => l > 0) || lengths.every((l) => l < 0)) {
    // Single modality: the reference passes the signed lengths through unchanged, so an all-text-only set
    // sorts its megabatches by -words, i.e. shortest first. Kept as is.
    return lengthGroupedIndices(lengths, batchSize, worldSize, rng);
  }
  const mmIdx: number[] = [];
  const mmLen: number[] = [];
  const langIdx: number[] = [];
  const langLen: number[] = [];
  lengths.forEach((l, i) => {
    if (l > 0) {
      mmIdx.push(i);
      mmLen.push(l);
    } else {
      langIdx.push(i);
      langLen.push(-l);
    }
  });
  // Draw order as in the reference: image permutation, text permutation, then the megabatch permutation.
  const mmShuffle = lengthGroupedIndices(mmLen, batchSize, worldSize, rng).map((i) => mmIdx[i]);
  const langShuffle = lengthGroupedIndices(langLen, batchSize, worldSize, rng).map((i) => langIdx[i]);
  const mb = worldSize * batchSize;
  const cut = (xs: number[]) => {
    const r: number[][] = [];
    for (let i = 0; i < xs.length; i += mb) r.push(xs.slice(i, i + mb));
    return r;
  };
  const mmMb = cut(mmShuffle);
  const langMb = cut(langShuffle);
  const additional = [...mmMb[mmMb.length - 1], ...langMb[langMb.length - 1]];
  const full = [...mmMb.slice(0, -1), ...langMb.slice(0, -1)];
  const order = randomPermutation(full.length, rng);
  const megabatches = order.map((k) => full[k]);
  if (additional.length > 0) megabatches.push(additional.sort((a, b) => a - b));
  return megabatches.flat();
}

export interface EpochOrderOptions {
  seed: number;
  epoch?: number;
  /** per-device batch size */
  batchSize?: number;
  /** world_size × gradient_accumulation_steps */
  worldSize?: number;
  groupByModalityLength?: boolean;
}

/** Sample order for one epoch: modality-length grouped (v1.5 finetune) or a plain seeded shuffle. */
export function epochOrder(samples: Sample[], opts: EpochOrderOptions): number[] {
  if (!opts.groupByModalityLength) return shuffleIndices(samples.length, opts.seed, opts.epoch ?? 0);
  const rng = mulberry32(mixSeed(opts.seed, opts.epoch ?? 0));
  return modalityLengthGroupedIndices(samples.map(modalityLengthOf), opts.batchSize ?? 1, opts.worldSize ?? 1, rng);
}
