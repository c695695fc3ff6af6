// serve_cases.ts — continuous batching as `llava serve` runs it (lib/app/inference/batcher.ts): eight greedy
// requests with different prompt lengths and token caps, all arriving at once, through a DecodeBatcher of
// 4 rows, so rows leave as their requests end and waiting requests join the running batch. The baseline is
// the same requests one at a time (maxBatch 1: one prefill and one decode loop per request) in the same run.
// Work is the tokens generated; ratio > 1: batching serves them faster.
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
import { type BenchOptions, type CaseRecord, report, selected, timeItAsync } from './harness';

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
  };
  tiny.dispose();
  const m = new LlavaForConditionalGeneration(config);
  randomInit(m.lm);
  m.requiresGrad(false);
  return m;
}

export async function runServeCases(o: BenchOptions): Promise<void> {
  const layers = o.quick ? 1 : 2;
  const caps = o.quick ? [2, 12, 4, 8, 12, 2, 6, 10] : [4, 24, 8, 16, 24, 4, 12, 20];
  const rec = (b: number): CaseRecord => ({
    op: 'serve_continuous_batching',
    scenario: `${caps.length} greedy requests arriving together (caps ${Math.min(...caps)}-${Math.max(...caps)} tokens), LLaMA-7B half width, ${layers} layer(s)`,
    dtype: 'float32',
    device: dev,
    shape: `prompts 8-40 tokens, ${b === 1 ? 'one at a time' : `maxBatch ${b}`}`,
  });
  if (!selected(o, rec(4))) return;
  const model = buildLlava(layers);
  const tok = Tokenizer.fromDir(fixtureDir());
  try {
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const textIds = Math.min(tok.vocabSize, 4096);
    const prompts = caps.map((_, i) =>
      Array.from({ length: 8 + ((i * 11) % 33) }, () => 3 + Math.floor(rnd() * (textIds - 3))).filter((id) => id !== model.config.imageTokenIndex),
    );
    const reqs: BatchRequest[] = prompts.map((promptIds, i) => ({ promptIds, maxNewTokens: caps[i], eosTokenId: null }));
    const tokens = caps.reduce((a, b) => a + b, 0);
    const serveAll = (maxBatch: number): Promise<unknown> => new DecodeBatcher(model, tok, { maxBatch }).submitAll(reqs);
    const reps = o.quick ? 3 : 5;
    const one = await timeItAsync(() => serveAll(1), { device: dev, reps, maxMs: 20_000 });
    report(rec(1), one, 'tokens', tokens, null);
    const four = await timeItAsync(() => serveAll(4), { device: dev, reps, maxMs: 20_000 });
    report(rec(4), four, 'tokens', tokens, { name: 'the same requests one at a time (maxBatch 1, same run)', ms: one.median_ms });
  } finally {
    model.dispose();
  }
}
