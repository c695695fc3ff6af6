// options.ts — checks an options bag against the keys its type declares, so that a JavaScript caller's
// misspelt or foreign option (`{ causal: true }` for `isCausal`, PyTorch's `keepdim` where the op has
// none) is an error instead of a silently ignored key: PyTorch raises on an unexpected keyword the same way.
//
// The known keys are given as an object with every key of the options type (OptionKeys<T>), so the
// compiler rejects a list that misses an option or names one the type does not have: the runtime list
// cannot drift from the type.

/** Every key of T (optional ones included), each mapped to true. */
export type OptionKeys<T> = { readonly [K in keyof Required<T>]: true };

/** The known keys of an options type, written once beside it; `keys` must name every key of T and no other. */
export function optionKeys<T>(keys: OptionKeys<T>): OptionKeys<T> {
  return keys;
}

/** Edit distance counting an insertion, deletion, substitution or swap of neighbours as one edit
 *  (optimal string alignment), for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.length][b.length];
}

/** The known key a misspelt one most likely meant: same letters up to case, one containing the other
 *  (causal / isCausal), or within a third of its length in edits. */
function closest(key: string, known: string[]): string | undefined {
  const k = key.toLowerCase();
  const contains = k.length >= 3 ? known.find((c) => c.toLowerCase().includes(k) || k.includes(c.toLowerCase())) : undefined;
  if (contains) return contains;
  let best: string | undefined;
  let bestD = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const c of known) {
    const d = distance(k, c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best;
}

/**
 * Throws `[where] unknown option 'x' (did you mean 'y'?) …` when `opts` has a key that `keys` does not list,
 * and `[where] options must be an object …` when it is neither an object nor undefined/null.
 */
export function checkOptions<T>(where: string, opts: unknown, keys: OptionKeys<T>): void {
  if (opts === undefined || opts === null) return;
  if (typeof opts !== 'object' || Array.isArray(opts)) {
    const got = Array.isArray(opts) ? 'an array' : typeof opts;
    throw new Error(`[${where}] options must be an object, got ${got}`);
  }
  const known = Object.keys(keys);
  for (const key of Object.keys(opts)) {
    if (Object.prototype.hasOwnProperty.call(keys, key)) continue;
    const guess = closest(key, known);
    const hint = guess ? ` (did you mean '${guess}'?)` : '';
    throw new Error(`[${where}] unknown option '${key}'${hint}; the options are ${known.join(', ')}`);
  }
}
