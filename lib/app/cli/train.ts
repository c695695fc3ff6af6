// train.ts — the training commands of `llava`: `train` (either stage) and `preprocess` (one training
// sample as the trainer sees it: rendered prompt, tokens, which of them are supervised).
//
// Decisions:
// - `llava train`'s flags are generated from the option table (train/options.ts): flag, help text,
//   number parser with the table's range, choices, and the default commander shows. Only values typed
//   on the command line count as explicit (commander's value source 'cli'); resolveTrainRun then puts the
//   preset's values for the stage under them and the built-in defaults under both.
// - Batch sizes: --batch-size is the global batch per optimizer step, --micro-batch-size the samples per
//   forward pass, --grad-accum the micro-batches per step; any two determine the third (one alone: the
//   preset's global batch fills in).
// - Checks run in the order a user fixes them: stage, then the paths, then the option values, then the
//   device, then the output directory (train/output_dir.ts: a non-empty one needs --resume or
//   --overwrite-output); only then does the model load (models, trainer and dataset are imported inside the
//   action, so `--help` and `preprocess` start fast).
// - The start line comes once the data set is read, so it can say when the data set is smaller than the
//   global batch.
// - Ctrl-C (SIGINT) or SIGTERM: the run stops after the optimizer step under way, saves a checkpoint, prints
//   the command that resumes it and exits 130 (SIGTERM: 143, 128 + the signal number as shells report it);
//   a second signal exits at once. A resume keeps the checkpoint's schedule unless --epochs / --max-steps
//   is typed again; the other options it recorded (lr, template, aspect, batch sizes, ...) fill in under
//   the typed flags (withCheckpointOptions). A run with no step left to do fails without writing a model.
import * as fs from 'fs';
import * as path from 'path';
import { Command, Option } from 'commander';
import { UsageError, floatArg, intArg, mustDir, mustFile, mustModelDir, runAction } from './util';
import { IGNORE_INDEX, IMAGE_TOKEN_INDEX } from '../../constants';
import { TRAIN_DTYPES, checkRuntime } from '../util/runtime';
import {
  TRAIN_KEYS,
  TRAIN_OPTIONS,
  TRAINING_TEMPLATE_LIST,
  helpText,
  isTrainingTemplate,
  resolveOne,
  resolveTrainRun,
  shownDefault,
  stageNumber,
  trainerPart,
  type Layer,
  type OptionSpec,
  type TrainKey,
} from '../train/options';

// ---------------------------------------------------------------------------------------------------------
// train

/** Adds one commander option per table entry that has a flag (a boolean with `negatable` gets its --no- form). */
export function addTrainOptions(cmd: Command): Command {
  for (const key of TRAIN_KEYS) {
    const s = TRAIN_OPTIONS[key] as OptionSpec<unknown>;
    if (!s.flag) continue;
    const o = new Option(s.flag, helpText(key));
    if (s.choices) o.choices(s.choices as string[]);
    else if (s.kind === 'int') o.argParser(intArg(s.min ?? 0));
    else if (s.kind === 'float') o.argParser(floatArg(s.min ?? -Infinity, s.max));
    const d = shownDefault(key);
    if (d !== undefined) o.default(d);
    if (s.required) o.makeOptionMandatory();
    cmd.addOption(o);
    if (s.negatable) cmd.addOption(new Option(s.flag.replace(/^--/, '--no-'), s.negatable));
  }
  return cmd;
}

/** The values typed on the command line, by table name (defaults commander filled in are left out). */
export function explicitTrainFlags(cmd: Command): Layer {
  const out: Layer = {};
  for (const key of TRAIN_KEYS) {
    const flag = (TRAIN_OPTIONS[key] as OptionSpec<unknown>).flag;
    if (!flag) continue;
    const attr = new Option(flag).attributeName();
    if (cmd.getOptionValueSource(attr) === 'cli') out[key] = cmd.getOptionValue(attr);
  }
  return out;
}

async function trainAction(_opts: unknown, cmd: Command): Promise<void> {
  const flags = explicitTrainFlags(cmd);
  stageNumber(flags.stage as string);
  // Paths have no preset or default: check them as given, before any option value.
  const given = flags as {
    baseModelDir: string;
    data: string;
    imageFolder: string;
    outputDir: string;
    pretrainMmMlpAdapter?: string;
    visionTower?: string;
  };
  mustModelDir(given.baseModelDir);
  mustFile(given.data, 'data file');
  mustDir(given.imageFolder, 'image folder');
  if (given.pretrainMmMlpAdapter) mustFile(given.pretrainMmMlpAdapter, 'projector file');
  if (given.visionTower) mustDir(given.visionTower, 'vision tower directory');
  if (fs.existsSync(given.outputDir) && !fs.statSync(given.outputDir).isDirectory())
    throw new UsageError(`output ${given.outputDir} exists and is not a directory`);
  if (flags.resume !== undefined && flags.overwriteOutput) throw new UsageError('--resume and --overwrite-output contradict each other: choose one');
  const fromCheckpoint = await withCheckpointOptions(flags);
  const s = resolveTrainRun(fromCheckpoint.layer);

  // Several processes: --nproc-per-node starts them (launch.ts); each then joins the job (distributed.ts).
  const launch = await import('../train/launch');
  if (s.nprocPerNode > 1) {
    if (process.env.OMPI_COMM_WORLD_SIZE || process.env.WORLD_SIZE)
      throw new UsageError('--nproc-per-node starts the processes itself: leave it out under mpirun or torchrun');
    process.exitCode = await launch.relaunch(s.nprocPerNode, (m) => console.log(m));
    return;
  }
  // Each rank on the GPU of its local rank: CUDA_VISIBLE_DEVICES before the addon first touches CUDA.
  if (s.device === 'cuda') (await import('../../dist/env')).pinLocalGpu();
  // Runtime and model (the native addon loads here).
  const { device, dtype } = checkRuntime(s.device, s.dtype, { dtypes: TRAIN_DTYPES, area: 'train' });
  const { joinJob } = await import('../train/distributed');
  const parallel = await joinJob({ strategy: s.distributed, timeoutS: s.distTimeout, bucketMB: s.distBucketMb, device });
  try {
    await trainOn(s, flags, fromCheckpoint.taken, device, dtype, parallel);
  } catch (e) {
    // One rank failing would leave the others waiting in a collective: end the whole job now.
    if (parallel) parallel.pg.abort(`[train] ${(e as Error).message}`);
    throw e;
  }
  parallel?.pg.destroy();
}

async function trainOn(
  s: ReturnType<typeof resolveTrainRun>,
  flags: Layer,
  taken: string[],
  device: ReturnType<typeof checkRuntime>['device'],
  dtype: ReturnType<typeof checkRuntime>['dtype'],
  parallel: import('../train/distributed').DataParallel | null,
): Promise<void> {
  const stage = stageNumber(flags.stage as string);
  const stageName = stage === 1 ? 'pretrain' : 'finetune';
  const modelDir = s.baseModelDir!;
  const outputDir = s.outputDir!;
  const world = parallel?.world ?? 1;
  const log = (m: string): void => void (parallel && parallel.rank > 0 ? 0 : console.log(m));
  const { prepareOutputDir, resumeCommand } = await import('../train/output_dir');
  if (!parallel || parallel.rank === 0) prepareOutputDir(outputDir, { resume: s.resume !== undefined, overwrite: s.overwriteOutput, log });
  parallel?.barrier();
  const { perRankBatching } = await import('../train/launch');
  const batch = perRankBatching(
    { globalBatch: s.globalBatch!, microBatch: s.microBatch!, gradAccum: s.gradAccum! },
    world,
    // --grad-accum, or a resume taking the checkpoint's: per process (launch.ts)
    flags.gradAccum !== undefined || taken.some((k) => k.startsWith('gradAccum ')),
  );
  const { loadLlava } = await import('../../models/loader');
  const { resolveVision } = await import('../processing/session');
  const { visionDir, processorConfig } = resolveVision(modelDir, s.visionTower);
  const { LlavaDataset, modelSpecFields } = await import('../train/dataset');
  const { findCheckpoint, loadPartialWeights } = await import('../train/train_state');
  const { Trainer } = await import('../train/trainer');
  if (taken.length) log(`[train] --resume: as the checkpoint was trained (flags override): ${taken.join(', ')}`);
  log(`[train] loading ${modelDir} (${device}/${dtype})`);
  const model = loadLlava(modelDir, { dtype, device, visionTower: s.visionTower });
  try {
    const maxLength = resolveOne('maxLength', s.maxLength, { modelMaxLength: model.config.maxLength })!;
    model.config.maxLength = maxLength;
    if (s.pretrainMmMlpAdapter) {
      loadPartialWeights(model, s.pretrainMmMlpAdapter, { only: 'projector' });
      log(`[train] projector loaded from ${s.pretrainMmMlpAdapter}`);
    }
    const spec = {
      imageFolder: s.imageFolder,
      tokenizerDir: modelDir,
      processor: processorConfig,
      template: s.template,
      aspect: s.aspect,
      ...modelSpecFields(model),
    };
    const dataset = LlavaDataset.fromFile(s.data, spec, { onError: s.onError, logger: (m) => console.warn(m) });
    log(`[train] ${dataset.length} samples from ${s.data}${dataset.skipped.length ? ` (${dataset.skipped.length} skipped)` : ''}`);
    log(
      `[train] stage ${stage} (${stageName}), preset ${s.preset}, template ${s.template}, aspect ${s.aspect}, lr ${s.lr}, ` +
        `${batchText(batch.globalBatch, batch.microBatch, batch.gradAccum * world, dataset.length)}, ${device}/${dtype}` +
        (parallel ? `, ${world} processes (${parallel.strategy})` : ''),
    );
    parallel?.checkSame('model and options', { config: model.config, s, samples: dataset.length });
    const trainer = new Trainer(model, dataset, {
      ...trainerPart(s),
      ...batch,
      globalBatch: batch.microBatch * batch.gradAccum,
      parallel: parallel ?? undefined,
      // Original checkpoints name their CLIP tower in the config: make it absolute so the output loads anywhere.
      configPatch: visionDir && model.config.format === 'llava_llama' ? (cfg) => void (cfg.mm_vision_tower = path.resolve(visionDir)) : undefined,
      log,
    });
    // Several processes: a signal on any rank stops every rank after the same step (distributed.ts stepStats).
    const signals = stopOnSignals(parallel ?? trainer);
    if (parallel) parallel.onStop = () => trainer.requestStop();
    try {
      if (s.resume) {
        const where = s.resume === true ? outputDir : s.resume;
        const ck = findCheckpoint(where);
        if (!ck) throw new UsageError(`--resume: no checkpoint found in ${where}`);
        // The schedule stays the checkpoint's unless --epochs / --max-steps was typed (options.ts).
        trainer.resume(ck, { given: Object.keys(flags) });
        log(`[train] resumed from ${ck} at step ${trainer.state.step}/${trainer.totalSteps}`);
      }
      const r = await trainer.train();
      if (r.interrupted) {
        log(
          `[train] stopped by ${signals.received()} at step ${trainer.state.step}/${trainer.totalSteps}; checkpoint ${r.checkpoint ?? '(none: no output directory)'}`,
        );
        log(`[train] to resume: ${resumeCommand(flags)}`);
        process.exitCode = signals.received() === 'SIGTERM' ? 143 : 130;
        return;
      }
      log(
        `[train] done: ${trainer.state.step}/${trainer.totalSteps} steps, loss ${r.firstLoss.toFixed(4)} -> ${r.lastLoss.toFixed(4)}, ` +
          `${r.seconds.toFixed(1)} s; outputs in ${outputDir} (${stage === 1 ? 'mm_projector.safetensors' : s.loraR > 0 ? 'adapter_config.json, adapter_model.safetensors, non_lora_trainables.safetensors' : 'model.safetensors'}, train_log.jsonl, loss.png)`,
      );
    } finally {
      signals.remove();
      trainer.dispose();
    }
  } finally {
    model.dispose();
  }
}

/** Options a checkpoint records (trainer_state.json `options`) that a resume takes over when not typed. */
const RECORDED: readonly TrainKey[] = [
  'lr',
  'epochs',
  'maxSteps',
  'warmupRatio',
  'weightDecay',
  'maxGradNorm',
  'groupByModalityLength',
  'template',
  'aspect',
  'dtype',
];
const BATCH_KEYS: readonly TrainKey[] = ['globalBatch', 'microBatch', 'gradAccum'];

/** On --resume, the options the checkpoint was trained with go under the typed flags (above the preset), so
 *  a resume continues the run as it was started unless a flag says otherwise; the batch sizes only when no
 *  batch flag is typed (a resume must match them anyway). Returns the layer and the names taken over. */
async function withCheckpointOptions(flags: Layer): Promise<{ layer: Layer; taken: string[] }> {
  if (flags.resume === undefined) return { layer: flags, taken: [] };
  const { findCheckpoint, readTrainerState } = await import('../train/train_state');
  const ck = findCheckpoint(flags.resume === true ? String(flags.outputDir) : String(flags.resume));
  if (!ck) return { layer: flags, taken: [] }; // reported later, with the other resume errors
  const rec = readTrainerState(ck).options ?? {};
  // Another number of processes than wrote it: the global batch carries over, the per-process accumulation
  // follows from it (launch.ts perRankBatching).
  const { readDistRecord } = await import('../train/dist_record');
  const { readDistEnv } = await import('../../dist/env');
  const perProcess: TrainKey = readDistRecord(ck).worldSize === readDistEnv().worldSize ? 'gradAccum' : 'globalBatch';
  const keys = [...RECORDED, ...(BATCH_KEYS.some((k) => flags[k] !== undefined) ? [] : (['microBatch', perProcess] as TrainKey[]))];
  const layer: Layer = { ...flags };
  const taken: string[] = [];
  for (const k of keys)
    if (flags[k] === undefined && rec[k] !== undefined && rec[k] !== null) {
      layer[k] = rec[k];
      taken.push(`${k} ${String(rec[k])}`);
    }
  return { layer, taken };
}

/** The batch part of the start line; a data set smaller than the global batch makes every step one pass
 *  over all of it (the trainer's last group of an epoch is short), which the line says instead. */
export function batchText(globalBatch: number, micro: number, accum: number, samples: number): string {
  const text = `global batch ${globalBatch} = ${micro} x ${accum}`;
  if (samples >= globalBatch) return text;
  const micros = Math.ceil(samples / micro);
  return `${text}, but the data set has only ${samples} samples: each step takes all ${samples} (${micros} micro-batch${micros === 1 ? '' : 'es'} of up to ${micro})`;
}

/** SIGINT / SIGTERM during training: the first asks the trainer to stop after the current optimizer step
 *  (it then saves a checkpoint), a second one exits at once. */
function stopOnSignals(trainer: { requestStop(): void }): { received(): NodeJS.Signals | null; remove(): void } {
  let got: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (got) {
      process.stderr.write(`[train] ${sig} again: exiting now (the last saved checkpoint stays)\n`);
      process.exit(sig === 'SIGTERM' ? 143 : 130);
    }
    got = sig;
    process.stderr.write(`[train] ${sig}: finishing the current optimizer step, then saving a checkpoint (again to exit at once)\n`);
    trainer.requestStop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    received: () => got,
    remove: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Adds `train` to a commander program. */
export function registerTrainCommand(program: Command): Command {
  const cmd = program.command('train').description('train a LLaVA stage: pretrain (projector only) or finetune (projector + language model)');
  addTrainOptions(cmd).action(runAction('train', trainAction));
  return program;
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
  if (!isTrainingTemplate(o.template)) throw new UsageError(`unknown template '${o.template}' (${TRAINING_TEMPLATE_LIST})`);
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
  const r = preprocessSample(sample, {
    template: o.template,
    tokenizer: tok,
    modelMaxLength: maxLength,
    onWarning: (m) => process.stderr.write(m + '\n'),
  });
  if (o.json) {
    process.stdout.write(JSON.stringify({ input_ids: r.inputIds, labels: r.labels }) + '\n');
    return;
  }
  const out: string[] = [];
  out.push(`record ${o.index} (id ${sample.id})${sample.image !== undefined ? `, image ${sample.image}` : ', text-only'}`);
  out.push(
    `template ${tpl.name} (${tpl.path} path${tpl.name !== o.template ? `, from --template ${o.template}` : ''}), ${r.inputIds.length} tokens, ` +
      `${r.labels.filter((l) => l !== IGNORE_INDEX).length} supervised${r.mismatch ? ', TOKENIZATION MISMATCH: every label masked' : ''}`,
  );
  out.push('--- prompt ---');
  out.push(renderTrainingPrompt(sample, o.template));
  out.push('--- tokens (* = supervised) ---');
  r.inputIds.forEach((id, i) => {
    const piece = id === IMAGE_TOKEN_INDEX ? '<image>' : tok.idToToken(id);
    const sup = r.labels[i] !== IGNORE_INDEX;
    out.push(`${String(i).padStart(5)} ${sup ? '*' : ' '} ${String(id).padStart(6)}  ${JSON.stringify(piece)}`);
  });
  out.push('--- supervised text ---');
  out.push(
    tok.decode(
      r.labels.filter((l) => l !== IGNORE_INDEX),
      { skipSpecialTokens: false },
    ),
  );
  process.stdout.write(out.join('\n') + '\n');
}

/** Adds `preprocess` to a commander program. */
export function registerPreprocessCommand(program: Command): Command {
  program
    .command('preprocess')
    .description('show one training sample as the trainer sees it: rendered prompt, tokens and which are supervised')
    .requiredOption('--model <dir>', 'model directory (its tokenizer.json is used)')
    .requiredOption('--data <file>', 'LLaVA JSON file')
    .requiredOption('--index <i>', 'record index in the JSON array', intArg(0))
    .option('--template <name>', 'training template / --version', 'v1')
    .option('--max-length <n>', 'model max length (default: min(2048, tokenizer model_max_length))', intArg(1))
    .option('--json', 'print {"input_ids": [...], "labels": [...]} (image placeholder = -200)')
    .action(runAction('preprocess', preprocessAction));
  return program;
}
