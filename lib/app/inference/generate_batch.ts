// generate_batch.ts — several prompts generated together: one prefill of the left-padded batch, then one
// decode step per token for every row at once, so the weights are read once per step for the whole batch
// instead of once per prompt (decoding is bound by reading the weights, so B rows cost little more than one).
//
// Each row is generated exactly as `generate` would generate it alone: its own positions (the left padding
// is masked out of every key and takes no position), its own seeded sampler, EOS, stop strings and token
// cap (the context left after its own prompt). A row that has finished keeps its slot until the batch
// ends; its further tokens are computed and thrown away. The batch ends when every row has finished.
// Results match `generateText` per prompt up to rounding: the linear layers give a row the same bits as
// alone (the CPU's skinny x @ W^T keeps the one-row GEMV's order), but attention over a left-padded row
// meets its keys in other blocks and rounds differently (~1e-16 relative in float64), so a near-tie could
// pick another token in float32; the tests see identical replies in float64 and on the fixture in float32.
import { Tensor } from '../../core/tensor';
import { cat } from '../../ops/view';
import { tidy } from '../../core/memory';
import { checkOptions, optionKeys } from '../../options';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { IMAGE_TOKEN_INDEX } from '../../constants';
import { pyStrip } from '../util/pyformat';
import {
  StreamDecoder,
  decodingSettings,
  resolvePrompt,
  sampleToken,
  seededRandom,
  type FinishReason,
  type GenerateResult,
  type SamplingOptions,
} from './generate';

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

interface Row {
  ids: number[];
  length: number;
  maxNew: number;
  rng: () => number;
  dec: StreamDecoder;
  out: number[];
  finish: FinishReason | null;
}

/** Generates a reply for every prompt (texts stripped as Python strips, as `generateText`), in the prompts' order. */
export async function generateBatch(
  model: LlavaForConditionalGeneration,
  tokenizer: Tokenizer,
  prompts: readonly BatchPrompt[],
  opts: GenerateBatchOptions = {},
): Promise<GenerateResult[]> {
  checkOptions('generateBatch', opts, BATCH_KEYS);
  if (!Array.isArray(prompts) || prompts.length === 0) throw new Error('[generateBatch] give a non-empty array of prompts');
  const { sampling, requested, eos } = decodingSettings(model, tokenizer, opts, 'generateBatch');
  const rows: Row[] = prompts.map((p, b) => {
    checkOptions(`generateBatch prompt ${b}`, p, PROMPT_KEYS);
    const { ids, length, room } = resolvePrompt(model, tokenizer, p, 'generateBatch', `prompt ${b}`);
    if (p.pixelValues && p.pixelValues.shape.length !== 4)
      throw new Error(`[generateBatch] prompt ${b}: pixelValues must be [N, 3, S, S], got [${p.pixelValues.shape}]`);
    const images = p.pixelValues ? p.pixelValues.shape[0] : 0;
    const placeholders = imagePlaceholders(model, ids);
    if (placeholders !== images)
      throw new Error(`[generateBatch] prompt ${b} has ${placeholders} image placeholder(s) but ${images} image(s) in its pixelValues`);
    const maxNew = Math.min(requested, room);
    const rng = seededRandom(p.seed ?? Math.floor(Math.random() * 2 ** 32));
    return { ids, length, maxNew, rng, dec: new StreamDecoder(tokenizer, opts.stop), out: [], finish: maxNew === 0 ? 'length' : null };
  });
  const steps = Math.max(...rows.map((r) => r.maxNew));
  if (steps > 0) await decodeRows(model, prompts, rows, steps, sampling, eos);
  return rows.map((r) => ({ text: pyStrip(r.dec.fullText), ids: r.out, finishReason: r.finish ?? 'length', promptLength: r.length }));
}

/** Images a prompt's ids call for: -200 sentinels, or runs of the model's image token (llava-hf). */
function imagePlaceholders(model: LlavaForConditionalGeneration, ids: number[]): number {
  const sentinels = ids.filter((id) => id === IMAGE_TOKEN_INDEX).length;
  const tokens = ids.filter((id) => id === model.config.imageTokenIndex).length;
  return sentinels + Math.ceil(tokens / model.numImageTokens);
}

/** Samples one token for a row, updating its decoder and finish state. */
function advance(r: Row, logits: ArrayLike<number>, sampling: SamplingOptions, eos: number[]): void {
  const tok = sampleToken(logits, sampling, r.rng);
  r.out.push(tok);
  if (eos.includes(tok)) r.finish = 'eos';
  else {
    r.dec.push(tok);
    if (r.dec.stopped) r.finish = 'stop';
    else if (r.out.length === r.maxNew) r.finish = 'length';
  }
}

async function decodeRows(
  model: LlavaForConditionalGeneration,
  prompts: readonly BatchPrompt[],
  rows: Row[],
  steps: number,
  sampling: SamplingOptions,
  eos: number[],
): Promise<void> {
  const images = prompts.map((p) => p.pixelValues).filter((x): x is Tensor => !!x);
  const pixels = images.length === 0 ? null : images.length === 1 ? images[0] : tidy(() => cat(images, 0));
  let pre;
  try {
    const width = Math.max(...rows.map((r) => r.length));
    pre = model.prefillBatch(
      rows.map((r) => r.ids),
      pixels,
      width + steps,
    );
  } finally {
    if (pixels && images.length > 1) pixels.dispose();
  }
  const { cache, lengths, keyMask } = pre;
  let lg: Tensor | null = pre.logits;
  try {
    for (let i = 0; ; i++) {
      const host = lg!.dataSync() as Float32Array | Float64Array; // float64 models give float64 logits
      const V = lg!.shape[1];
      lg!.dispose();
      lg = null;
      rows.forEach((r, b) => {
        if (!r.finish) advance(r, host.subarray(b * V, (b + 1) * V), sampling, eos);
      });
      if (rows.every((r) => r.finish) || i + 1 >= steps) break;
      // Finished rows feed their last token again; their outputs are not read.
      const tokens = rows.map((r) => r.out[r.out.length - 1] ?? 0);
      for (const m of keyMask) m.push(1);
      lg = model.decodeStepBatch(
        tokens,
        lengths.map((l) => l + i),
        cache,
        keyMask,
      );
      await new Promise<void>((res) => setImmediate(res)); // let I/O run between tokens
    }
  } finally {
    lg?.dispose();
    cache.dispose();
  }
}
