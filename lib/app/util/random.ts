// random.ts — seeded randomness for data order, sampling and test inputs: a small PRNG, a seed mixer
// for independent streams, and permutations. Deterministic for a given seed on every machine.

/** mulberry32: tiny 32-bit PRNG, uniform floats in [0, 1). Deterministic for a given seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** splitmix32-style mix of (seed, stream), to derive independent per-epoch seeds. */
export function mixSeed(seed: number, stream = 0): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b9) + Math.imul(stream >>> 0, 0x85ebca6b) + 0x7f4a7c15) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Fisher–Yates permutation of 0..n-1 (the role torch.randperm plays in the reference). */
export function randomPermutation(n: number, rng: () => number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** Plain random-sampler order for an epoch: deterministic in (seed, epoch). */
export function shuffleIndices(n: number, seed: number, epoch = 0): number[] {
  return randomPermutation(n, mulberry32(mixSeed(seed, epoch)));
}
