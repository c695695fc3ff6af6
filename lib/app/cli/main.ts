#!/usr/bin/env node
// cli.ts — the `llava` command: train (both stages), chat and verify (chat.ts / verify.ts), and
// preprocess (show how a training sample is rendered, tokenised and masked).
//
// Decisions:
// - chat and verify are thin: they hand their options to runChat (chat.ts) and runVerify (verify.ts).
// - Heavy modules (the native addon, models, trainer, generation) are imported inside the actions, so
//   `--help` and `preprocess` start fast and work without the addon.
// - Batch sizes: --batch-size is the global batch per optimizer step, --micro-batch-size the samples per
//   forward pass, --grad-accum the micro-batches per step; any two determine the third (one alone: the
//   preset's global batch fills in). Presets hold the spec's lr / batch / epochs / template per stage.
// - Every bad input (missing file, bad number, unknown template) ends in one line on stderr
//   `llava <command>: error: ...` and exit code 1; commander's own usage errors also exit 1.
import * as fs from 'fs';
import * as path from 'path';
import { Command, Option } from 'commander';
import { registerDataCommands } from './datagen';
import { registerEvalCommands } from './eval';
import { registerServeCommand } from './serve';
import { UsageError, floatArg, intArg, mustDir, mustFile, runAction } from './util';
import { IGNORE_INDEX, IMAGE_TOKEN_INDEX } from '../../constants';
import { packageVersion } from '../util/paths';

function mustModelDir(p: string): string {
  mustDir(p, 'model directory');
  mustFile(path.join(p, 'config.json'), 'model config');
  return p;
}

// ---------------------------------------------------------------------------------------------------------
// train

interface TrainCliOptions {
  stage: string;
  model: string;
  data: string;
  imageFolder: string;
  output: string;
  template?: string;
  preset: string;
  lr?: number;
  epochs?: number;
  maxSteps?: number;
  batchSize?: number;
  microBatchSize?: number;
  gradAccum?: number;
  maxLength?: number;
  device: string;
  dtype: string;
  seed: number;
  resume?: string | boolean;
  pretrainMmMlpAdapter?: string;
  visionTower?: string;
  aspect?: string;
  groupByModalityLength?: boolean;
  weightDecay: number;
  maxGradNorm: number;
  warmupRatio: number;
  gradientCheckpointing?: boolean;
  onError: string;
  workers?: number;
  saveSteps: number;
  progress: string;
}

async function trainAction(o: TrainCliOptions): Promise<void> {
  const { PRESETS, stageNumber, resolveBatching, checkRuntimeOptions, Trainer } = await import('../train/trainer');
  const stage = stageNumber(o.stage);
  const stageName = stage === 1 ? 'pretrain' : 'finetune';
  const preset = PRESETS[o.preset as keyof typeof PRESETS];
  if (!preset) throw new UsageError(`unknown preset '${o.preset}' (${Object.keys(PRESETS).join(', ')})`);
  const p = preset[stageName];
  mustModelDir(o.model);
  mustFile(o.data, 'data file');
  mustDir(o.imageFolder, 'image folder');
  if (o.pretrainMmMlpAdapter) mustFile(o.pretrainMmMlpAdapter, 'projector file');
  if (o.visionTower) mustDir(o.visionTower, 'vision tower directory');
  if (fs.existsSync(o.output) && !fs.statSync(o.output).isDirectory()) throw new UsageError(`output ${o.output} exists and is not a directory`);
  const template = o.template ?? p.template;
  const aspect = (o.aspect ?? p.aspect) as 'square' | 'pad';
  if (aspect !== 'square' && aspect !== 'pad') throw new UsageError(`unknown aspect '${aspect}' (square or pad)`);
  const { TEMPLATE_NAMES } = await import('../processing/conversation');
  if (!TEMPLATE_NAMES.includes(template) && template !== 'v0' && template !== 'v0.5')
    throw new UsageError(`unknown template '${template}' (${TEMPLATE_NAMES.filter((t) => t !== 'llava_hf').join(', ')})`);
  if (o.onError !== 'skip' && o.onError !== 'fatal') throw new UsageError(`--on-error must be skip or fatal (got '${o.onError}')`);
  const batching = resolveBatching({ globalBatch: o.batchSize ?? (o.microBatchSize !== undefined && o.gradAccum !== undefined ? undefined : p.globalBatch), microBatch: o.microBatchSize, gradAccum: o.gradAccum });

  // Runtime and model (the native addon loads here).
  const { device, dtype } = checkRuntimeOptions(o.device, o.dtype);
  const { loadLlava, readLlavaConfig } = await import('../../models/loader');
  const { visionDir } = readLlavaConfig(o.model, o.visionTower);
  const { LlavaDataset, resolveProcessorConfig } = await import('../train/dataset');
  const { findCheckpoint, loadPartialWeights } = await import('../train/train_state');
  const log = (m: string): void => console.log(m);
  log(`[train] stage ${stage} (${stageName}), preset ${o.preset}, template ${template}, lr ${o.lr ?? p.lr}, global batch ${batching.globalBatch} = ${batching.microBatch} x ${batching.gradAccum}, ${device}/${dtype}`);
  const model = loadLlava(o.model, { dtype, device, visionTower: o.visionTower });
  try {
    const maxLength = o.maxLength ?? Math.min(2048, model.config.maxLength);
    model.config.maxLength = maxLength;
    if (o.pretrainMmMlpAdapter) {
      loadPartialWeights(model, o.pretrainMmMlpAdapter, { only: 'projector' });
      log(`[train] projector loaded from ${o.pretrainMmMlpAdapter}`);
    }
    const spec = {
      imageFolder: o.imageFolder,
      tokenizerDir: o.model,
      processor: resolveProcessorConfig(o.model, { visionDir, imageSize: model.config.vision.image_size }),
      template,
      aspect,
      modelMaxLength: maxLength,
      format: model.config.format,
      numImageTokens: model.numImageTokens,
      imageTokenIndex: model.config.imageTokenIndex,
      maxLength,
    };
    const dataset = LlavaDataset.fromFile(o.data, spec, { onError: o.onError as 'skip' | 'fatal', logger: (m) => console.warn(m) });
    log(`[train] ${dataset.length} samples from ${o.data}${dataset.skipped.length ? ` (${dataset.skipped.length} skipped)` : ''}`);
    fs.mkdirSync(o.output, { recursive: true });
    const trainer = new Trainer(model, dataset, {
      stage,
      lr: o.lr ?? p.lr,
      epochs: o.epochs ?? p.epochs,
      ...batching,
      maxSteps: o.maxSteps,
      warmupRatio: o.warmupRatio,
      weightDecay: o.weightDecay,
      maxGradNorm: o.maxGradNorm,
      seed: o.seed,
      groupByModalityLength: o.groupByModalityLength ?? p.groupByModalityLength,
      gradientCheckpointing: o.gradientCheckpointing,
      outputDir: o.output,
      baseModelDir: o.model,
      // Original checkpoints name their CLIP tower in the config: make it absolute so the output loads anywhere.
      configPatch: visionDir && model.config.format === 'llava_llama' ? (cfg) => void (cfg.mm_vision_tower = path.resolve(visionDir)) : undefined,
      saveSteps: o.saveSteps,
      progress: o.progress as 'auto' | 'bar' | 'plain' | 'none',
      workers: o.workers ?? (device === 'cuda' ? 2 : 0),
      log,
    });
    try {
      if (o.resume) {
        const where = o.resume === true ? o.output : o.resume;
        const ck = findCheckpoint(where);
        if (!ck) throw new UsageError(`--resume: no checkpoint found in ${where}`);
        trainer.resume(ck);
        log(`[train] resumed from ${ck} at step ${trainer.state.step}/${trainer.totalSteps}`);
      }
      const r = await trainer.train();
      log(
        `[train] done: ${trainer.state.step}/${trainer.totalSteps} steps, loss ${r.firstLoss.toFixed(4)} -> ${r.lastLoss.toFixed(4)}, ` +
          `${r.seconds.toFixed(1)} s; outputs in ${o.output} (${stage === 1 ? 'mm_projector.safetensors' : 'model.safetensors'}, train_log.jsonl, loss.png)`,
      );
    } finally {
      trainer.dispose();
    }
  } finally {
    model.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------
// preprocess

interface PreprocessCliOptions {
  template: string;
  model: string;
  data: string;
  index: number;
  json?: boolean;
  maxLength?: number;
}

async function preprocessAction(o: PreprocessCliOptions): Promise<void> {
  mustFile(o.data, 'data file');
  mustDir(o.model, 'model directory');
  const { loadDataset } = await import('../processing/data');
  const { Tokenizer } = await import('../processing/tokenizer');
  const { preprocessSample, resolveTrainingTemplate } = await import('../processing/preprocess');
  const { renderTrainingPrompt } = await import('../train/dataset');
  const { TEMPLATE_NAMES } = await import('../processing/conversation');
  if (!TEMPLATE_NAMES.includes(o.template) && o.template !== 'v0' && o.template !== 'v0.5')
    throw new UsageError(`unknown template '${o.template}' (${TEMPLATE_NAMES.filter((t) => t !== 'llava_hf').join(', ')})`);
  const tpl = resolveTrainingTemplate(o.template);
  const parsed = loadDataset(o.data, { onError: 'skip', logger: () => {} });
  const total = parsed.report.total;
  if (o.index >= total) throw new UsageError(`--index ${o.index} out of range: ${o.data} has ${total} records`);
  const k = parsed.indices.indexOf(o.index);
  if (k < 0) {
    const errs = parsed.report.errors.filter((e) => e.index === o.index);
    throw new UsageError(`record ${o.index} (id ${errs[0]?.id ?? '?'}) is malformed: ${errs.map((e) => e.message).join('; ')}`);
  }
  const sample = parsed.samples[k];
  const tok = Tokenizer.fromDir(o.model);
  const maxLength = o.maxLength ?? Math.min(2048, tok.modelMaxLength);
  const r = preprocessSample(sample, { template: o.template, tokenizer: tok, modelMaxLength: maxLength, onWarning: (m) => process.stderr.write(m + '\n') });
  if (o.json) {
    process.stdout.write(JSON.stringify({ input_ids: r.inputIds, labels: r.labels }) + '\n');
    return;
  }
  const out: string[] = [];
  out.push(`record ${o.index} (id ${sample.id})${sample.image !== undefined ? `, image ${sample.image}` : ', text-only'}`);
  out.push(`template ${tpl.name} (${tpl.path} path${tpl.name !== o.template ? `, from --template ${o.template}` : ''}), ${r.inputIds.length} tokens, ` +
    `${r.labels.filter((l) => l !== IGNORE_INDEX).length} supervised${r.mismatch ? ', TOKENIZATION MISMATCH: every label masked' : ''}`);
  out.push('--- prompt ---');
  out.push(renderTrainingPrompt(sample, o.template));
  out.push('--- tokens (* = supervised) ---');
  r.inputIds.forEach((id, i) => {
    const piece = id === IMAGE_TOKEN_INDEX ? '<image>' : tok.idToToken(id);
    const sup = r.labels[i] !== IGNORE_INDEX;
    out.push(`${String(i).padStart(5)} ${sup ? '*' : ' '} ${String(id).padStart(6)}  ${JSON.stringify(piece)}`);
  });
  out.push('--- supervised text ---');
  out.push(tok.decode(r.labels.filter((l) => l !== IGNORE_INDEX), { skipSpecialTokens: false }));
  process.stdout.write(out.join('\n') + '\n');
}

// ---------------------------------------------------------------------------------------------------------
// chat / verify (runChat in chat.ts, runVerify in verify.ts; generate.ts is also looked at)

async function generateEntry(name: 'runChat' | 'runVerify', opts: Record<string, unknown>): Promise<void> {
  const candidates = name === 'runChat' ? ['./chat', './generate'] : ['./verify', './generate'];
  const problems: string[] = [];
  for (const m of candidates) {
    let mod: Record<string, unknown>;
    try {
      mod = (await import(m)) as Record<string, unknown>;
    } catch (e) {
      problems.push(`${m}: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    const fn = mod[name];
    if (typeof fn !== 'function') continue;
    // Drop unset options so the command's own defaults apply.
    const clean = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
    const code = await (fn as (o: Record<string, unknown>) => Promise<unknown>)(clean);
    if (typeof code === 'number' && code !== 0) process.exitCode = code;
    return;
  }
  throw new Error(`${name}() is not available (${problems.length ? problems.join('; ') : `no module exports it: ${candidates.join(', ')}`})`);
}

// ---------------------------------------------------------------------------------------------------------
// Program

export function buildProgram(): Command {
  const program = new Command('llava');
  program
    .description('LLaVA on a from-scratch tensor engine: train, chat, verify, inspect preprocessing')
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  program.version(packageVersion());

  program
    .command('train')
    .description('train a LLaVA stage: pretrain (projector only) or finetune (projector + language model)')
    .requiredOption('--stage <stage>', 'pretrain (stage 1) or finetune (stage 2)')
    .requiredOption('--model <dir>', 'base model directory (config.json, *.safetensors, tokenizer.json)')
    .requiredOption('--data <file>', 'LLaVA JSON: an array of {id, image?, conversations}')
    .requiredOption('--image-folder <dir>', 'folder that image paths in the data are relative to')
    .requiredOption('--output <dir>', 'output directory (checkpoints, final weights, train_log.jsonl, loss.png)')
    .addOption(new Option('--preset <name>', 'hyperparameter preset').choices(['paper', 'v1', 'v1.5']).default('v1.5'))
    .option('--template <name>', 'training template / --version (default: the preset\'s: plain for pretrain, v1 for finetune)')
    .option('--lr <lr>', 'peak learning rate (default: preset)', floatArg(0))
    .option('--epochs <n>', 'epochs (default: preset)', floatArg(1e-9))
    .option('--max-steps <n>', 'schedule length in optimizer steps (overrides epochs)', intArg(1))
    .option('--batch-size <n>', 'global batch per optimizer step (default: preset)', intArg(1))
    .option('--micro-batch-size <n>', 'samples per forward pass (default: min(batch, 4))', intArg(1))
    .option('--grad-accum <n>', 'micro-batches per optimizer step', intArg(1))
    .option('--max-length <n>', 'max sequence length (default: min(2048, model max positions))', intArg(8))
    .addOption(new Option('--device <device>', 'compute device').choices(['cpu', 'cuda']).default('cpu'))
    .addOption(new Option('--dtype <dtype>', 'parameter dtype (bfloat16 keeps float32 master weights)').choices(['float32', 'bfloat16']).default('float32'))
    .option('--seed <n>', 'data order seed', intArg(0), 42)
    .option('--resume [dir]', 'resume from a checkpoint directory (default: the newest checkpoint-N in --output)')
    .option('--pretrain-mm-mlp-adapter <file>', 'stage-1 projector (mm_projector.safetensors) to start stage 2 from')
    .option('--vision-tower <dir>', 'CLIP directory for original llava_llama checkpoints')
    .addOption(new Option('--aspect <mode>', 'image aspect handling (default: preset)').choices(['square', 'pad']))
    .option('--group-by-modality-length', 'modality-grouped length sampler (v1.5 finetune preset default)')
    .option('--no-group-by-modality-length', 'plain seeded shuffle')
    .option('--weight-decay <w>', 'AdamW weight decay (biases and norms excluded)', floatArg(0), 0)
    .option('--max-grad-norm <n>', 'clip the gradient norm (0 = off)', floatArg(0), 0)
    .option('--warmup-ratio <r>', 'linear warmup fraction of the schedule', floatArg(0, 1), 0.03)
    .option('--gradient-checkpointing', 'recompute each decoder layer in backward instead of keeping its activations')
    .addOption(new Option('--on-error <mode>', 'malformed records: skip (reported) or fatal').choices(['skip', 'fatal']).default('fatal'))
    .option('--workers <n>', 'data-loading worker threads (default: 2 on cuda, 0 on cpu)', intArg(0))
    .option('--save-steps <n>', 'checkpoint every N steps (0 = at the end only)', intArg(0), 0)
    .addOption(new Option('--progress <mode>', 'progress display').choices(['auto', 'bar', 'plain', 'none']).default('auto'))
    .action(runAction('train', trainAction));

  program
    .command('chat')
    .description('ask about an image, streaming the answer; without --prompt, an interactive session')
    .requiredOption('--model <dir>', 'model directory')
    .requiredOption('--image <file>', 'image file (PNG or JPEG)')
    .option('--prompt <text>', 'a single question (omit for an interactive session)')
    .option('--template <name>', 'conversation template (default: from the model format / name)')
    .option('--temperature <t>', 'sampling temperature, 0 = greedy (default 0.2)', floatArg(0))
    .option('--top-p <p>', 'nucleus sampling probability', floatArg(0, 1))
    .option('--top-k <k>', 'keep the k most probable tokens', intArg(1))
    .option('--max-new-tokens <n>', 'generation limit (default 512)', intArg(0))
    .option('--seed <n>', 'sampling seed', intArg(0))
    .addOption(new Option('--aspect <mode>', 'image preprocessing (default: from the model)').choices(['square', 'pad']))
    .addOption(new Option('--device <device>', 'compute device').choices(['cpu', 'cuda']).default('cpu'))
    .addOption(new Option('--dtype <dtype>', 'parameter dtype').choices(['float32', 'bfloat16', 'float16']).default('float32'))
    .option('--vision-tower <dir>', 'CLIP directory for original llava_llama checkpoints')
    .action(runAction('chat', (o: Record<string, unknown>) => generateEntry('runChat', o)));

  program
    .command('verify')
    .description('recompute a reference file (features, logits, losses, gradients, greedy ids) and compare')
    .requiredOption('--model <dir>', 'model directory')
    .requiredOption('--reference <file>', 'reference safetensors (layout of test/fixtures/tiny-llava/reference.safetensors)')
    .option('--atol <a>', 'absolute tolerance (default by dtype)', floatArg(0))
    .option('--rtol <r>', 'relative tolerance (default by dtype)', floatArg(0))
    .option('--out <file>', 'also write the results as JSON')
    .addOption(new Option('--device <device>', 'compute device').choices(['cpu', 'cuda']).default('cpu'))
    .addOption(new Option('--dtype <dtype>', 'parameter dtype').choices(['float32', 'bfloat16', 'float16']).default('float32'))
    .option('--vision-tower <dir>', 'CLIP directory for original llava_llama checkpoints')
    .action(runAction('verify', (o: Record<string, unknown>) => generateEntry('runVerify', o)));

  program
    .command('preprocess')
    .description("show one training sample as the trainer sees it: rendered prompt, tokens and which are supervised")
    .requiredOption('--model <dir>', 'model directory (its tokenizer.json is used)')
    .requiredOption('--data <file>', 'LLaVA JSON file')
    .requiredOption('--index <i>', 'record index in the JSON array', intArg(0))
    .option('--template <name>', 'training template / --version', 'v1')
    .option('--max-length <n>', 'model max length (default: min(2048, tokenizer model_max_length))', intArg(1))
    .option('--json', 'print {"input_ids": [...], "labels": [...]} (image placeholder = -200)')
    .action(runAction('preprocess', preprocessAction));

  registerDataCommands(program);
  registerEvalCommands(program);
  registerServeCommand(program);
  return program;
}

export async function main(argv: string[] = process.argv): Promise<void> {
  await buildProgram().parseAsync(argv);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`llava: error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  });
}
