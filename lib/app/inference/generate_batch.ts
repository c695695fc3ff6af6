// generate_batch.ts — several prompts generated together: one prefill of the left-padded batch, then one
// decode step per token for every row at once, so the weights are read once per step for the whole batch
// instead of once per prompt (decoding is bound by reading the weights, so B rows cost little more than one).
// It is one submission of every prompt to a DecodeBatcher (batcher.ts) with a row for each.
//
// Each row is generated exactly as `generate` would generate it alone: its own positions (the left padding
// is masked out of every key and takes no position), its own seeded sampler, EOS, stop strings and token
// cap (the context left after its own prompt). A row that has finished leaves the batch; the batch ends
// when every row has finished.
// Results match `generateText` per prompt up to rounding: the linear layers give a row the same bits as
// alone (the CPU's skinny x @ W^T keeps the one-row GEMV's order), but attention over a left-padded row
// meets its keys in other blocks and rounds differently (~1e-16 relative in float64), so a near-tie could
// pick another token in float32; the tests see identical replies in float64 and on the fixture in float32.
import type { Tensor } from '../../core/tensor';
import { checkOptions, optionKeys } from '../../options';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import type { Tokenizer } from '../processing/tokenizer';
import { pyStrip } from '../util/pyformat';
import { DecodeBatcher } from './batcher';
import type { FinishReason, GenerateResult, SamplingOptions } from './generate';

/** One prompt of a batch. */
export interface BatchPrompt {
  /** Prompt ids (as GenerateOptions.promptIds), or `prompt` text. */
  promptIds?: number[];
  prompt?: string;
  /** [N, 3, S, S] images for this prompt's placeholders (model dtype and device), or none. */
  pixelValues?: Tensor | null;
  /** This row's sampling seed (default: random). */
  seed?: number;
}
const PROMPT_KEYS = optionKeys<BatchPrompt>({ promptIds: true, prompt: true, pixelValues: true, seed: true });

export interface GenerateBatchOptions extends SamplingOptions {
  /** Per row, capped by the context left after its prompt (default 512). */
  maxNewTokens?: number;
  stop?: string | string[] | null;
  eosTokenId?: number | number[] | null;
}
const BATCH_KEYS = optionKeys<GenerateBatchOptions>({ temperature: true, topP: true, topK: true, maxNewTokens: true, stop: true, eosTokenId: true });

/** Generates a reply for every prompt (texts stripped as Python strips, as `generateText`), in the prompts' order. */
export async function generateBatch(
  model: LlavaForConditionalGeneration,
  tokenizer: Tokenizer,
  prompts: readonly BatchPrompt[],
  opts: GenerateBatchOptions = {},
): Promise<GenerateResult[]> {
  checkOptions('generateBatch', opts, BATCH_KEYS);
  if (!Array.isArray(prompts) || prompts.length === 0) throw new Error('[generateBatch] give a non-empty array of prompts');
  prompts.forEach((p, b) => checkOptions(`generateBatch prompt ${b}`, p, PROMPT_KEYS));
  const batcher = new DecodeBatcher(model, tokenizer, { maxBatch: prompts.length });
  const results = await batcher.submitAll(
    prompts.map((p) => ({ ...opts, ...p })),
    'generateBatch',
    prompts.map((_, b) => `prompt ${b}`),
  );
  return results.map((r) => ({ text: pyStrip(r.text), ids: r.ids, finishReason: r.finishReason as FinishReason, promptLength: r.promptLength }));
}
