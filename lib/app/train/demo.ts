// demo.ts — `npm start`: train a small LLaVA end to end with nothing downloaded, then ask it about images.
//
// 1. Model: the bundled tiny llava-hf checkpoint (test/fixtures/tiny-llava: 28 px CLIP, 16 image tokens,
//    2-layer LLaMA, vocab 678). Its weights are random, so everything it answers is learned here.
// 2. Data: 12 coloured-shape PNGs generated procedurally into a temp directory, with stage-1 captions and
//    stage-2 conversations ("What is in the image?" -> "A blue circle.", plus text-only samples).
// 3. Stage 1 (projector only, `plain` template) then stage 2 (projector + language model, `v1` template),
//    a few hundred optimizer steps in all, with the progress display, JSONL logs and loss plots.
// 4. Greedy answers for every image (the KV-cache generator of generate.ts, the prompt encoded as chat
//    encodes it), one shown in full and an accuracy count.
// Runs on the GPU when CUDA is available, else on the CPU (about ten seconds to a minute on 2 cores).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import * as cuda from '../../cuda';
import { LlavaSession } from '../processing/session';
import { buildPrompt } from '../processing/conversation';
import { encodePrompt, generateText } from '../inference/generate';
import { LlavaDataset, DatasetSpec } from './dataset';
import { Trainer, TrainResult } from './trainer';
import { makeDemoData, answerFor, DEMO_QUESTION } from './demo_data';
import { packageRoot } from '../util/paths';
import { checkRuntime } from '../util/runtime';

/** The bundled tiny checkpoint (test/fixtures/tiny-llava under the package root). */
export function findTinyModel(): string {
  const dir = path.join(packageRoot(), 'test', 'fixtures', 'tiny-llava');
  if (!fs.existsSync(path.join(dir, 'config.json'))) throw new Error(`[demo] bundled tiny model not found at ${dir}`);
  return dir;
}

/** Answer a question about one image with greedy decoding, the prompt built and encoded as `llava chat`
 *  does it (template `template`, the image in the first user turn). */
export async function answer(session: LlavaSession, imageFile: string, question: string, template = 'v1', maxNew = 24): Promise<string> {
  const promptIds = encodePrompt(session.model, session.tokenizer, buildPrompt(template, question, { image: true }));
  const pixels = session.pixelTensor(imageFile);
  try {
    const r = await generateText(session.model, session.tokenizer, { promptIds, pixelValues: pixels, maxNewTokens: maxNew, temperature: 0, seed: 0 });
    return r.text;
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
  log(
    `LLaVA demo: tiny model from ${path.relative(process.cwd(), modelDir) || modelDir} on ${device === 'cuda' ? `cuda (${cuda.describe()})` : 'cpu'}`,
  );
  log(`data: ${data.items.length} generated images + conversations in ${data.dir}`);

  // The demo data is square-cropped both in training and when answering.
  const session = LlavaSession.load(modelDir, { device, dtype: 'float32', aspect: 'square' });
  const model = session.model;
  try {
    const tok = session.tokenizer;
    const spec = (template: string): DatasetSpec => ({
      imageFolder: data.imageFolder,
      tokenizerDir: modelDir,
      processor: session.processorConfig,
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
    const t1 = new Trainer(model, ds1, {
      ...common,
      stage: 1,
      lr: 5e-3,
      globalBatch: 4,
      microBatch: 4,
      maxSteps: o.stage1Steps ?? 100,
      outputDir: path.join(outDir, 'stage1'),
      label: 'stage 1',
    });
    const r1 = await t1.train();
    t1.dispose();

    log('\n== stage 2: instruction tuning (projector + language model, v1 template) ==');
    const ds2 = LlavaDataset.fromFile(data.finetuneJson, spec('v1'), { tokenizer: tok });
    const t2 = new Trainer(model, ds2, {
      ...common,
      stage: 2,
      lr: 2e-3,
      globalBatch: 4,
      microBatch: 2,
      gradAccum: 2,
      maxSteps: o.stage2Steps ?? 250,
      outputDir: path.join(outDir, 'stage2'),
      label: 'stage 2',
    });
    const r2 = await t2.train();
    t2.dispose();

    log('');
    log(`stage 1 loss: first ${r1.firstLoss.toFixed(3)} -> last ${r1.lastLoss.toFixed(3)} (${r1.steps} steps, ${r1.seconds.toFixed(1)} s)`);
    log(`stage 2 loss: first ${r2.firstLoss.toFixed(3)} -> last ${r2.lastLoss.toFixed(3)} (${r2.steps} steps, ${r2.seconds.toFixed(1)} s)`);

    let correct = 0;
    let sample: DemoResult['sample'] | null = null;
    const show = data.items.findIndex((it) => it.colour === 'blue' && it.shape === 'circle');
    for (let i = 0; i < data.items.length; i++) {
      const it = data.items[i];
      const file = path.join(data.imageFolder, it.file);
      const a = await answer(session, file, DEMO_QUESTION);
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
    session.dispose();
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
      if (opts.device) checkRuntime(opts.device, undefined, { area: 'demo' });
      await runDemo({
        stage1Steps: opts.stage1Steps,
        stage2Steps: opts.stage2Steps,
        outDir: opts.out,
        device: opts.device as 'cpu' | 'cuda' | undefined,
      });
    });
  program.parseAsync(process.argv).catch((e) => {
    process.stderr.write(`demo: error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  });
}
