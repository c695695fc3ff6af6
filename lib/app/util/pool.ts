// pool.ts — running async jobs a few at a time (GPT judge reviews, GPT-data requests, answers): at
// most `concurrency` in flight, started in order. After the first failure no new job starts; the
// jobs in flight finish (their results are kept by the caller), then that first error is thrown.

export async function forEachConcurrent<T>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new RangeError(`[pool] concurrency must be an integer >= 1 (got ${concurrency})`);
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const i = next++;
      try {
        await fn(items[i], i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  if (failure !== null) throw (failure as { error: unknown }).error;
}
