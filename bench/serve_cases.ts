// serve_cases.ts — generation as `llava serve` runs it (lib/app/inference/batcher.ts), each case against
// its baseline in the same run (ratio > 1: faster than the baseline):
// - serve_continuous_batching: eight greedy requests with different prompt lengths and token caps, all
//   arriving at once, through a DecodeBatcher of 4 rows (rows leave as their requests end and waiting
//   requests join the running batch), against the same requests one at a time (maxBatch 1). Work is the
//   tokens generated.
// - serve_prefix_cache: a follow-up prompt whose first 600 positions an earlier request left in the prefix
//   cache, against the same prompt prefilled in full.
// - serve_chunked_prefill: a request decoding while a 1024-position prompt joins; its longest wait between
//   two tokens with the joining prompt prefilled 128 positions a step (chunked prefill) against the whole
//   prompt at once (prefillChunk 0). The time for both requests and the joiner's first token are beside it.
//
// Model: decode_cases.ts's LLaMA-7B proportions at half width (C 2048, I 5504, 16 heads, vocab 4096, 2
// layers; 1 with --quick) as the language model of a LLaVA with the tiny fixture's vision tower, random
// weights. Prompts are random text ids; EOS is off so every request runs to its cap.
import { loadLlava } from '../lib/models/loader';
import { LlavaForConditionalGeneration } from '../lib/models/llava';
import { Tokenizer } from '../lib/app/processing/tokenizer';
import { DecodeBatcher, type BatchRequest } from '../lib/app/inference/batcher';
import { fixtureDir } from '../test/gpu/fixture';
import { randomInit } from './decode_cases';
import { type BenchOptions, type CaseRecord, report, round, selected, summarize, timeItAsync } from './harness';

const dev = 'cpu' as const;

function buildLlava(layers: number): LlavaForConditionalGeneration {
  const tiny = loadLlava(fixtureDir());
  const config = {
    ...tiny.config,
    text: {
      ...tiny.config.text,
      vocab_size: 4096,
      hidden_size: 2048,
      intermediate_size: 5504,
      num_hidden_layers: layers,
      num_attention_heads: 16,
      num_key_value_heads: 16,
      head_dim: 128,
      max_position_embeddings: 2048,
    },
    maxLength: 2048,
  };
  tiny.dispose();
  const m = new LlavaForConditionalGeneration(config);
  randomInit(m.lm);
  m.requiresGrad(false);
  return m;
}

/** Random text ids (never the image token) from a seeded generator. */
function textIds(model: LlavaForConditionalGeneration, tok: Tokenizer, n: number, next: () => number): number[] {
  const top = Math.min(tok.vocabSize, 4096);
  const ids: number[] = [];
  while (ids.length < n) {
    const id = 3 + Math.floor(next() * (top - 3));
    if (id !== model.config.imageTokenIndex) ids.push(id);
  }
  return ids;
}

function lcg(seed: number): () => number {
  return () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

/** Continuous batching: 8 requests through 4 rows against one at a time. */
async function batchingCase(o: BenchOptions, model: LlavaForConditionalGeneration, tok: Tokenizer, layers: number): Promise<void> {
  const caps = o.quick ? [2, 12, 4, 8, 12, 2, 6, 10] : [4, 24, 8, 16, 24, 4, 12, 20];
  const rec = (b: number): CaseRecord => ({
    op: 'serve_continuous_batching',
    scenario: `${caps.length} greedy requests arriving together (caps ${Math.min(...caps)}-${Math.max(...caps)} tokens), LLaMA-7B half width, ${layers} layer(s)`,
    dtype: 'float32',
    device: dev,
    shape: `prompts 8-40 tokens, ${b === 1 ? 'one at a time' : `maxBatch ${b}`}`,
  });
  if (!selected(o, rec(4))) return;
  const rnd = lcg(7);
  const reqs: BatchRequest[] = caps.map((cap, i) => ({
    promptIds: textIds(model, tok, 8 + ((i * 11) % 33), rnd),
    maxNewTokens: cap,
    eosTokenId: null,
  }));
  const tokens = caps.reduce((a, b) => a + b, 0);
  const serveAll = (maxBatch: number): Promise<unknown> => new DecodeBatcher(model, tok, { maxBatch }).submitAll(reqs);
  const reps = o.quick ? 3 : 5;
  const one = await timeItAsync(() => serveAll(1), { device: dev, reps, maxMs: 20_000 });
  report(rec(1), one, 'tokens', tokens, null);
  const four = await timeItAsync(() => serveAll(4), { device: dev, reps, maxMs: 20_000 });
  report(rec(4), four, 'tokens', tokens, { name: 'the same requests one at a time (maxBatch 1, same run)', ms: one.median_ms });
}

/** Prefix caching: a follow-up whose first `shared` positions a finished request left in the cache, against
 *  the same follow-up prefilled in full. Each call's new text is fresh, so the reuse is the shared part. */
async function prefixCase(o: BenchOptions, model: LlavaForConditionalGeneration, tok: Tokenizer, layers: number): Promise<void> {
  const shared = o.quick ? 256 : 600;
  const rec = (hit: boolean): CaseRecord => ({
    op: 'serve_prefix_cache',
    scenario: `follow-up of ${shared} shared + 24 new positions, 4 tokens generated, LLaMA-7B half width, ${layers} layer(s)`,
    dtype: 'float32',
    device: dev,
    shape: hit ? `${shared} positions reused` : 'full prefill',
  });
  if (!selected(o, rec(true))) return;
  const rnd = lcg(11);
  const head = textIds(model, tok, shared, rnd);
  const ask = (): BatchRequest => ({ promptIds: [...head, ...textIds(model, tok, 24, rnd)], maxNewTokens: 4, eosTokenId: null });
  const reps = o.quick ? 3 : 5;
  const plain = new DecodeBatcher(model, tok);
  const full = await timeItAsync(() => plain.submit(ask()), { device: dev, reps, maxMs: 20_000 });
  report(rec(false), full, 'none', 0, null);
  const cached = new DecodeBatcher(model, tok, { prefixCachePositions: 4 * (shared + 32) });
  try {
    await cached.submit(ask()); // the earlier turn that leaves the prefix behind
    let reused = 0;
    const hit = await timeItAsync(async () => (reused = (await cached.submit(ask())).cachedTokens), { device: dev, reps, maxMs: 20_000 });
    if (reused !== shared) throw new Error(`serve_prefix_cache: reused ${reused} positions, expected ${shared}`);
    report(rec(true), hit, 'none', 0, { name: 'the same follow-up prefilled in full (same run)', ms: full.median_ms });
  } finally {
    await cached.dispose();
  }
}

/** Chunked prefill: the longest gap between a running request's tokens while a long prompt joins, prefilled
 *  in chunks against at once. Each sample is one run of both requests. */
async function chunkedCase(o: BenchOptions, model: LlavaForConditionalGeneration, tok: Tokenizer, layers: number): Promise<void> {
  const long = o.quick ? 512 : 1024;
  const chunk = 128;
  const rec = (c: number): CaseRecord => ({
    op: 'serve_chunked_prefill',
    scenario: `longest gap between a running request's tokens while a ${long}-position prompt joins, LLaMA-7B half width, ${layers} layer(s)`,
    dtype: 'float32',
    device: dev,
    shape: c ? `prefill in chunks of ${c}` : 'whole prompt at once',
  });
  if (!selected(o, rec(chunk))) return;
  const rnd = lcg(13);
  const running = textIds(model, tok, 16, rnd);
  const joining = textIds(model, tok, long, rnd);
  const once = async (prefillChunk: number): Promise<{ gap: number; total: number; firstToken: number }> => {
    const b = new DecodeBatcher(model, tok, { prefillChunk });
    const t0 = performance.now();
    let last = t0;
    let gap = 0;
    let joinedAt = 0;
    let firstToken = 0;
    const joiner = (): Promise<unknown> =>
      b.submit({
        promptIds: joining,
        maxNewTokens: 2,
        eosTokenId: null,
        onPiece: (p) => (p.index === 0 ? (firstToken = performance.now() - joinedAt) : 0),
      });
    let joined: Promise<unknown> | null = null;
    await b.submit({
      promptIds: running,
      maxNewTokens: o.quick ? 24 : 40,
      eosTokenId: null,
      onPiece: (p) => {
        const t = performance.now();
        if (p.index > 0) gap = Math.max(gap, t - last);
        last = t;
        if (p.index === 3) ((joinedAt = t), (joined = joiner()));
      },
    });
    await joined;
    return { gap, total: performance.now() - t0, firstToken };
  };
  const reps = o.quick ? 2 : 3;
  const measure = async (c: number) => {
    await once(c); // warm-up
    const runs: { gap: number; total: number; firstToken: number }[] = [];
    for (let i = 0; i < reps; i++) runs.push(await once(c));
    const med = (k: 'total' | 'firstToken'): number => round(summarize(runs.map((r) => r[k])).median_ms);
    return { gaps: summarize(runs.map((r) => r.gap)), extra: { total_ms: med('total'), join_first_token_ms: med('firstToken') } };
  };
  const whole = await measure(0);
  report(rec(0), whole.gaps, 'none', 0, null, whole.extra);
  const chunked = await measure(chunk);
  report(
    rec(chunk),
    chunked.gaps,
    'none',
    0,
    { name: 'the whole prompt at once (prefillChunk 0, same run)', ms: whole.gaps.median_ms },
    chunked.extra,
  );
}

export async function runServeCases(o: BenchOptions): Promise<void> {
  const layers = o.quick ? 1 : 2;
  const ops = ['serve_continuous_batching', 'serve_prefix_cache', 'serve_chunked_prefill'];
  if (!ops.some((op) => selected(o, { op, scenario: '', dtype: 'float32', device: dev, shape: '' }))) return;
  const model = buildLlava(layers);
  const tok = Tokenizer.fromDir(fixtureDir());
  try {
    await batchingCase(o, model, tok, layers);
    await prefixCase(o, model, tok, layers);
    await chunkedCase(o, model, tok, layers);
  } finally {
    model.dispose();
  }
}
