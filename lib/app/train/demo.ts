// demo.ts — `npm start`: train a small LLaVA end to end with nothing downloaded, then ask it about images.
//
// 1. Model: the bundled tiny llava-hf checkpoint (test/fixtures/tiny-llava: 28 px CLIP, 16 image tokens,
//    2-layer LLaMA, vocab 678). Its weights are random, so everything it answers is learned here.
// 2. Data: 12 coloured-shape PNGs generated procedurally into a temp directory, with stage-1 captions and
//    stage-2 conversations ("What is in the image?" -> "A blue circle.", plus text-only samples).
// 3. Stage 1 (projector only, `plain` template) then stage 2 (projector + language model, `v1` template),
//    a few hundred optimizer steps in all, with the progress display, JSONL logs and loss plots.
// 4. Greedy answers for every image (the KV-cache generator of generate.ts when present, else the model's
//    prefill/decodeStep loop), one shown in full and an accuracy count.
// Runs on the GPU when CUDA is available, else on the CPU (about ten seconds to a minute on 2 cores).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import { Tensor } from '../../core/tensor';
import { fromTypedArray, argmax } from '../../ops';
import * as cuda from '../../cuda';
import { loadLlava } from '../../models/loader';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { CLIPImageProcessor } from '../processing/image';
import { buildPrompt } from '../processing/conversation';
import { tokenizerImageToken, expandImageTokens } from '../processing/preprocess';
import { LlavaDataset, resolveProcessorConfig, DatasetSpec } from './dataset';
import { Trainer, TrainResult } from './trainer';
import { makeDemoData, answerFor, DEMO_QUESTION } from './demo_data';
import { IMAGE_TOKEN_INDEX } from '../../constants';
import { packageRoot } from '../util/paths';

/** The bundled tiny checkpoint (test/fixtures/tiny-llava under the package root). */
export function findTinyModel(): string {
  const dir = path.join(packageRoot(), 'test', 'fixtures', 'tiny-llava');
  if (!fs.existsSync(path.join(dir, 'config.json'))) throw new Error(`[demo] bundled tiny model not found at ${dir}`);
  return dir;
}

/** Greedy reply with the KV cache: prefill, then argmax + decodeStep until EOS or maxNew tokens. */
export function greedyReply(model: LlavaForConditionalGeneration, ids: number[], pixels: Tensor | null, eos: number[], maxNew: number): number[] {
  const { cache, logits, length } = model.prefill(ids, pixels, ids.length + maxNew + 1);
  const out: number[] = [];
  let lg: Tensor | null = logits;
  try {
    for (let i = 0; i < maxNew; i++) {
      const a = argmax(lg);
      const next = a.item();
      a.dispose();
      lg.dispose();
      lg = null;
      out.push(next);
      if (eos.includes(next)) break;
      lg = model.decodeStep(next, length + i, cache);
    }
    return out;
  } finally {
    lg?.dispose();
    cache.dispose();
  }
}

type GenerateModule = {
  generateText?: (m: LlavaForConditionalGeneration, t: Tokenizer, o: Record<string, unknown>) => Promise<{ text: string; ids: number[] }>;
};

/** Answer a question about one image with greedy decoding (generate.ts when it is there). */
export async function answer(
  model: LlavaForConditionalGeneration,
  tok: Tokenizer,
  processor: CLIPImageProcessor,
  imageFile: string,
  question: string,
  template = 'v1',
  maxNew = 24,
): Promise<string> {
  const prompt = buildPrompt(template, question, { image: true });
  let ids = tokenizerImageToken(prompt, tok, IMAGE_TOKEN_INDEX);
  if (model.config.format === 'llava-hf') ids = expandImageTokens(ids, ids.map(() => -100), model.numImageTokens, model.config.imageTokenIndex).inputIds;
  const pv = processor.preprocess(imageFile, { aspect: 'square' });
  const w = model.lm.embed.getParameter('weight')!;
  const pixels = fromTypedArray(pv.pixelValues, [1, ...pv.shape], { dtype: w.dtype, device: w.device });
  try {
    let gen: GenerateModule | null = null;
    try {
      gen = (await import('../inference/generate')) as unknown as GenerateModule;
    } catch {
      gen = null;
    }
    if (gen && typeof gen.generateText === 'function') {
      const r = await gen.generateText(model, tok, { promptIds: ids, pixelValues: pixels, maxNewTokens: maxNew, temperature: 0, seed: 0 });
      return r.text.trim();
    }
    const eos = tok.eosId !== undefined ? [tok.eosId] : [];
    return tok.decode(greedyReply(model, ids, pixels, eos, maxNew)).trim();
  } finally {
    pixels.dispose();
  }
}

export interface DemoOptions {
  stage1Steps?: number;
  stage2Steps?: number;
  outDir?: string;
  device?: 'cpu' | 'cuda';
  progress?: 'auto' | 'bar' | 'plain' | 'none';
  log?: (m: string) => void;
}

export interface DemoResult {
  stage1: TrainResult;
  stage2: TrainResult;
  correct: number;
  total: number;
  sample: { image: string; question: string; answer: string; expected: string };
  seconds: number;
  outDir: string;
}

export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const t0 = Date.now();
  const log = o.log ?? ((m: string) => console.log(m));
  const device = o.device ?? (cuda.isAvailable() ? 'cuda' : 'cpu');
  const modelDir = findTinyModel();
  const outDir = o.outDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'llava-demo-'));
  fs.mkdirSync(outDir, { recursive: true });
  const data = makeDemoData(path.join(outDir, 'data'));
  log(`LLaVA demo: tiny model from ${path.relative(process.cwd(), modelDir) || modelDir} on ${device === 'cuda' ? `cuda (${cuda.describe()})` : 'cpu'}`);
  log(`data: ${data.items.length} generated images + conversations in ${data.dir}`);

  const model = loadLlava(modelDir, { device, dtype: 'float32' });
  try {
    const tok = Tokenizer.fromDir(modelDir);
    const processorCfg = resolveProcessorConfig(modelDir, { imageSize: model.config.vision.image_size });
    const spec = (template: string): DatasetSpec => ({
      imageFolder: data.imageFolder,
      tokenizerDir: modelDir,
      processor: processorCfg,
      template,
      aspect: 'square',
      modelMaxLength: model.config.maxLength,
      format: model.config.format,
      numImageTokens: model.numImageTokens,
      imageTokenIndex: model.config.imageTokenIndex,
      maxLength: model.config.maxLength,
    });
    const common = { progress: o.progress ?? ('auto' as const), log, baseModelDir: modelDir, warmupRatio: 0.03, seed: 0 };

    log('\n== stage 1: feature alignment (projector only, plain captions) ==');
    const ds1 = LlavaDataset.fromFile(data.pretrainJson, spec('plain'), { tokenizer: tok });
    const t1 = new Trainer(model, ds1, { ...common, stage: 1, lr: 5e-3, globalBatch: 4, microBatch: 4, maxSteps: o.stage1Steps ?? 100, outputDir: path.join(outDir, 'stage1'), label: 'stage 1' });
    const r1 = await t1.train();
    t1.dispose();

    log('\n== stage 2: instruction tuning (projector + language model, v1 template) ==');
    const ds2 = LlavaDataset.fromFile(data.finetuneJson, spec('v1'), { tokenizer: tok });
    const t2 = new Trainer(model, ds2, { ...common, stage: 2, lr: 2e-3, globalBatch: 4, microBatch: 2, gradAccum: 2, maxSteps: o.stage2Steps ?? 250, outputDir: path.join(outDir, 'stage2'), label: 'stage 2' });
    const r2 = await t2.train();
    t2.dispose();

    log('');
    log(`stage 1 loss: first ${r1.firstLoss.toFixed(3)} -> last ${r1.lastLoss.toFixed(3)} (${r1.steps} steps, ${r1.seconds.toFixed(1)} s)`);
    log(`stage 2 loss: first ${r2.firstLoss.toFixed(3)} -> last ${r2.lastLoss.toFixed(3)} (${r2.steps} steps, ${r2.seconds.toFixed(1)} s)`);

    const processor = new CLIPImageProcessor(processorCfg);
    let correct = 0;
    let sample: DemoResult['sample'] | null = null;
    const show = data.items.findIndex((it) => it.colour === 'blue' && it.shape === 'circle');
    for (let i = 0; i < data.items.length; i++) {
      const it = data.items[i];
      const file = path.join(data.imageFolder, it.file);
      const a = await answer(model, tok, processor, file, DEMO_QUESTION);
      const expected = answerFor(it);
      if (a === expected) correct++;
      if (i === show) sample = { image: file, question: DEMO_QUESTION, answer: a, expected };
    }
    log(`\nUSER: <${path.basename(sample!.image)}> ${sample!.question}`);
    log(`ASSISTANT: ${sample!.answer}`);
    log(`(greedy decoding; expected "${sample!.expected}")`);
    log(`answered ${correct}/${data.items.length} images exactly right`);
    const seconds = (Date.now() - t0) / 1000;
    log(`outputs (logs, loss plots, weights): ${outDir}; total ${seconds.toFixed(1)} s`);
    return { stage1: r1, stage2: r2, correct, total: data.items.length, sample: sample!, seconds, outDir };
  } finally {
    model.dispose();
  }
}

if (require.main === module) {
  const int = (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer.');
    return n;
  };
  const program = new Command('llava-demo')
    .description('train a tiny LLaVA on generated coloured shapes (stage 1 + stage 2), then ask it about them')
    .option('--stage1-steps <n>', 'stage-1 optimizer steps', int, 100)
    .option('--stage2-steps <n>', 'stage-2 optimizer steps', int, 250)
    .option('--out <dir>', 'where data, logs and weights go (default: a temp dir)')
    .option('--device <d>', 'cpu or cuda (default: cuda when available)')
    .action(async (opts: { stage1Steps: number; stage2Steps: number; out?: string; device?: string }) => {
      if (opts.device && opts.device !== 'cpu' && opts.device !== 'cuda') throw new Error(`unknown device '${opts.device}'`);
      await runDemo({ stage1Steps: opts.stage1Steps, stage2Steps: opts.stage2Steps, outDir: opts.out, device: opts.device as 'cpu' | 'cuda' | undefined });
    });
  program.parseAsync(process.argv).catch((e) => {
    process.stderr.write(`demo: error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  });
}
