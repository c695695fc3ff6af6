// demo.ts — `npm start`: train a small LLaVA end to end with nothing downloaded, then ask it about images.
//
// 1. Model: the bundled tiny llava-hf checkpoint (test/fixtures/tiny-llava: 28 px CLIP, 16 image tokens,
//    2-layer LLaMA, vocab 678). Its weights are random, so everything it answers is learned here.
// 2. Data: 12 coloured-shape PNGs generated procedurally, with stage-1 captions and stage-2 conversations
//    ("What is in the image?" -> "A blue circle.", plus text-only samples), written to ./llava-demo/data
//    (--out DIR to choose; relative to where `npm start` was typed, which npm passes in INIT_CWD); the
//    training outputs go beside it (stage1/, stage2/).
// 3. Stage 1 (projector only, `plain` template) then stage 2 (projector + language model, `v1` template),
//    a few hundred optimizer steps in all, with the progress display, JSONL logs and loss plots.
// 4. Greedy answers for every image (the KV-cache generator of inference/generate.ts, the prompt encoded as chat
//    encodes it), one shown in full and an accuracy count.
// 5. The two `llava train` command lines that train the same stages on the same data with the CLI (into
//    cli-stage1/ and cli-stage2/); they give the same losses, stage 2 starting from stage 1's projector file.
// Runs on the GPU when CUDA is available, else on the CPU (about ten seconds to a minute on 2 cores);
// --device cuda on a machine without a usable GPU fails at once, before any data is written.
import * as fs from 'fs';
import * as path from 'path';
import { Command, InvalidArgumentError } from 'commander';
import * as cuda from '../../cuda';
import { LlavaSession } from '../processing/session';
import { buildPrompt } from '../processing/conversation';
import { encodePrompt, generateText } from '../inference/generate';
import { LlavaDataset, DatasetSpec, modelSpecFields } from './dataset';
import { Trainer, TrainResult } from './trainer';
import { makeDemoData, answerFor, DEMO_QUESTION } from './demo_data';
import { packageRoot } from '../util/paths';
import { checkRuntime } from '../util/runtime';
import { commandErrorLine } from '../util/messages';
import { shellQuote } from './output_dir';

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

/** Where `npm start` writes its data and outputs when --out is not given (relative to the current directory). */
export const DEFAULT_DEMO_DIR = 'llava-demo';

/** The demo's hyperparameters per stage; the CLI command lines repeat them. */
const STAGES = {
  1: { lr: 5e-3, globalBatch: 4, microBatch: 4, gradAccum: 1, template: 'plain' },
  2: { lr: 2e-3, globalBatch: 4, microBatch: 2, gradAccum: 2, template: 'v1' },
} as const;
const DEMO_SEED = 0;

export interface DemoOptions {
  stage1Steps?: number;
  stage2Steps?: number;
  /** Data and outputs (default ./llava-demo). */
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
  /** `llava train` arguments (after `train`) that repeat stage 1 and stage 2 with the CLI. */
  commands: { stage1: string[]; stage2: string[] };
}

/** A path as the user should type it: relative to the user's directory when inside it (npm runs `npm start`
 *  in the package root and says where the user was in INIT_CWD). */
function shownPath(p: string): string {
  const rel = path.relative(process.env.INIT_CWD || process.cwd(), path.resolve(p));
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : path.resolve(p);
}

/** `llava train` arguments (after `train`) that train the demo's stages on its data with the CLI:
 *  the same hyperparameters, seed and schedule, outputs in <out>/cli-stage1 and <out>/cli-stage2. */
export function demoTrainCommands(o: {
  modelDir: string;
  dataDir: string;
  outDir: string;
  device: 'cpu' | 'cuda';
  stage1Steps: number;
  stage2Steps: number;
}): { stage1: string[]; stage2: string[] } {
  const p = shownPath;
  const stage1Out = path.join(o.outDir, 'cli-stage1');
  const common = (stage: 1 | 2, steps: number): string[] => {
    const s = STAGES[stage];
    return [
      '--model',
      p(o.modelDir),
      '--data',
      p(path.join(o.dataDir, stage === 1 ? 'pretrain.json' : 'finetune.json')),
      '--image-folder',
      p(path.join(o.dataDir, 'images')),
      '--output',
      p(path.join(o.outDir, `cli-stage${stage}`)),
      '--template',
      s.template,
      '--lr',
      String(s.lr),
      '--batch-size',
      String(s.globalBatch),
      '--micro-batch-size',
      String(s.microBatch),
      '--max-steps',
      String(steps),
      '--aspect',
      'square',
      '--seed',
      String(DEMO_SEED),
      '--device',
      o.device,
      // a rerun (after another `npm start`) replaces the previous CLI run's outputs
      '--overwrite-output',
    ];
  };
  return {
    stage1: ['--stage', 'pretrain', ...common(1, o.stage1Steps)],
    stage2: [
      '--stage',
      'finetune',
      ...common(2, o.stage2Steps),
      '--no-group-by-modality-length',
      '--pretrain-mm-mlp-adapter',
      p(path.join(stage1Out, 'mm_projector.safetensors')),
    ],
  };
}

/** How to start the CLI from here: `node <dist/lib/app/cli/main.js>` in a checkout, `llava` when installed. */
function cliPrefix(): string {
  const main = path.join(packageRoot(), 'dist', 'lib', 'app', 'cli', 'main.js');
  if (!fs.existsSync(main)) return 'llava';
  const installed = main.split(path.sep).includes('node_modules');
  return installed ? 'npx llava' : `node ${shellQuote(shownPath(main))}`;
}

export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const t0 = Date.now();
  const log = o.log ?? ((m: string) => console.log(m));
  // A cuda request without a usable GPU fails here, before any data is written.
  const device = o.device ? checkRuntime(o.device, undefined, { area: 'demo' }).device : cuda.isAvailable() ? 'cuda' : 'cpu';
  const modelDir = findTinyModel();
  const outDir = path.resolve(o.outDir ?? DEFAULT_DEMO_DIR);
  if (fs.existsSync(outDir) && !fs.statSync(outDir).isDirectory()) throw new Error(`[demo] output ${outDir} exists and is not a directory`);
  fs.mkdirSync(outDir, { recursive: true });
  const data = makeDemoData(path.join(outDir, 'data'));
  const stage1Steps = o.stage1Steps ?? 100;
  const stage2Steps = o.stage2Steps ?? 250;
  const commands = demoTrainCommands({ modelDir, dataDir: data.dir, outDir, device, stage1Steps, stage2Steps });
  log(`LLaVA demo: tiny model from ${shownPath(modelDir)} on ${device === 'cuda' ? `cuda (${cuda.describe()})` : 'cpu'}`);
  log(`data: ${data.items.length} generated images + conversations in ${shownPath(data.dir)}/ (outputs in ${shownPath(outDir)}/)`);

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
      ...modelSpecFields(model),
    });
    const common = { progress: o.progress ?? ('auto' as const), log, baseModelDir: modelDir, warmupRatio: 0.03, seed: DEMO_SEED };

    const runStage = async (stage: 1 | 2, json: string, maxSteps: number) => {
      const s = STAGES[stage];
      const ds = LlavaDataset.fromFile(json, spec(s.template), { tokenizer: tok });
      const { lr, globalBatch, microBatch, gradAccum } = s;
      const tr = new Trainer(model, ds, {
        ...common,
        ...{ stage, lr, globalBatch, microBatch, gradAccum, maxSteps },
        outputDir: path.join(outDir, `stage${stage}`),
        label: `stage ${stage}`,
      });
      try {
        return await tr.train();
      } finally {
        tr.dispose();
      }
    };
    log('\n== stage 1: feature alignment (projector only, plain captions) ==');
    const r1 = await runStage(1, data.pretrainJson, stage1Steps);
    log('\n== stage 2: instruction tuning (projector + language model, v1 template) ==');
    const r2 = await runStage(2, data.finetuneJson, stage2Steps);

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
    log(`\noutputs (logs, loss plots, weights): ${shownPath(outDir)}/stage1, ${shownPath(outDir)}/stage2; total ${seconds.toFixed(1)} s`);
    const cli = cliPrefix();
    log('the same two stages with the command line (outputs in cli-stage1/, cli-stage2/):');
    log(`  ${cli} train ${commands.stage1.map(shellQuote).join(' ')}`);
    log(`  ${cli} train ${commands.stage2.map(shellQuote).join(' ')}`);
    return { stage1: r1, stage2: r2, correct, total: data.items.length, sample: sample!, seconds, outDir, commands };
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
    .option('--out <dir>', 'where data, logs and weights go (relative to the directory npm start was typed in)', DEFAULT_DEMO_DIR)
    .option('--device <d>', 'cpu or cuda (default: cuda when available)')
    .action(async (opts: { stage1Steps: number; stage2Steps: number; out?: string; device?: string }) => {
      await runDemo({
        stage1Steps: opts.stage1Steps,
        stage2Steps: opts.stage2Steps,
        outDir: path.resolve(process.env.INIT_CWD || process.cwd(), opts.out ?? DEFAULT_DEMO_DIR),
        device: opts.device as 'cpu' | 'cuda' | undefined,
      });
    });
  program.parseAsync(process.argv).catch((e) => {
    process.stderr.write(`${commandErrorLine('', 'demo', (e as Error)?.message ?? String(e))}\n`);
    if (process.env.LLAVA_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = 1;
  });
}
