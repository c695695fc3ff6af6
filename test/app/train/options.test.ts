// The training option table (lib/app/train/options.ts) without a model: what --help shows per option,
// the order of precedence of a `llava train` run (flag > preset > default, the preset's batch only when
// micro-batch and accumulation leave it open), the Trainer API's defaults and checks, and the shared
// --device / --dtype check (lib/app/util/runtime.ts).
import t from 'tap';
import {
  TRAIN_OPTIONS,
  TRAIN_KEYS,
  TRAINER_KEYS,
  RESUME_MUST_MATCH,
  helpText,
  presetLayer,
  resolveOne,
  resolveTrainRun,
  resolveTrainerOptions,
  shownDefault,
  type OptionSpec,
} from '../../../lib/app/train/options';
import { PRESETS, PRESET_KEYS } from '../../../lib/app/train/presets';
import { TRAIN_DTYPES, checkRuntime } from '../../../lib/app/util/runtime';
import * as cuda from '../../../lib/cuda';

const paths = { baseModelDir: 'm', data: 'd.json', imageFolder: 'img', outputDir: 'out' };

t.test('the table: flags, help, what --help shows as default', async (t) => {
  for (const k of TRAIN_KEYS) {
    const s = TRAIN_OPTIONS[k] as OptionSpec<unknown>;
    t.ok(s.help.length > 0, `${k} has help`);
    if (s.kind === 'int' || s.kind === 'float') t.type(s.min, 'number', `${k} has a lower bound`);
  }
  for (const k of PRESET_KEYS) t.ok(TRAIN_KEYS.includes(k), `preset field ${k} is a table option`);
  t.ok(TRAINER_KEYS.includes('lr') && TRAINER_KEYS.includes('stage') && TRAINER_KEYS.includes('outputDir'));
  t.notOk((TRAINER_KEYS as string[]).includes('data') || (TRAINER_KEYS as string[]).includes('device'), 'command options stay out of the Trainer');
  t.same(RESUME_MUST_MATCH, ['microBatch', 'gradAccum']);
  t.equal(shownDefault('seed'), 42);
  t.equal(shownDefault('warmupRatio'), 0.03);
  t.equal(shownDefault('progress'), 'auto');
  t.equal(shownDefault('lr'), undefined, 'preset-backed: no fixed default');
  t.equal(shownDefault('epochs'), undefined, 'preset-backed even with a Trainer default');
  t.equal(shownDefault('workers'), undefined, 'depends on the device');
  t.equal(shownDefault('gradientCheckpointing'), undefined, 'boolean flags show none');
  t.equal(helpText('lr'), 'peak learning rate (default: preset)');
  t.equal(helpText('seed'), 'data order seed');
});

t.test('a train run: flag > preset > default', async (t) => {
  const s = resolveTrainRun({ stage: 'finetune', ...paths });
  t.same(
    [s.stage, s.preset, s.lr, s.epochs, s.globalBatch, s.microBatch, s.gradAccum, s.template, s.aspect, s.groupByModalityLength],
    [2, 'v1.5', 2e-5, 1, 128, 4, 32, 'v1', 'pad', true],
    'v1.5 finetune preset',
  );
  t.same(
    [s.seed, s.warmupRatio, s.weightDecay, s.maxGradNorm, s.device, s.dtype, s.workers, s.onError, s.progress, s.saveSteps],
    [42, 0.03, 0, 0, 'cpu', 'float32', 0, 'fatal', 'auto', 0],
    'built-in defaults',
  );
  t.equal(s.maxSteps, undefined);
  t.equal(s.maxLength, undefined, 'max length waits for the model');
  t.equal(s.resume, undefined);
  const paper = resolveTrainRun({ stage: 'pretrain', preset: 'paper', ...paths });
  t.same([paper.lr, paper.globalBatch, paper.template, paper.aspect], [2e-3, 128, 'llava_v0', 'square']);

  const f = resolveTrainRun({
    stage: 'finetune',
    ...paths,
    lr: 1e-4,
    epochs: 2,
    template: 'plain',
    aspect: 'square',
    groupByModalityLength: false,
    seed: 3,
  });
  t.same(
    [f.lr, f.epochs, f.template, f.aspect, f.groupByModalityLength, f.seed],
    [1e-4, 2, 'plain', 'square', false, 3],
    'flags win, false included',
  );

  const batch = (flags: object): number[] => {
    const r = resolveTrainRun({ stage: 'finetune', ...paths, ...flags });
    return [r.globalBatch!, r.microBatch!, r.gradAccum!];
  };
  t.same(batch({ microBatch: 3, gradAccum: 2 }), [6, 3, 2], 'micro x accum: the preset batch stays out');
  t.same(batch({ microBatch: 8 }), [128, 8, 16], 'micro alone: the preset batch fills in');
  t.same(batch({ gradAccum: 4 }), [128, 32, 4]);
  t.same(batch({ globalBatch: 8 }), [8, 4, 2]);
  t.throws(() => batch({ microBatch: 3 }), /\[train\] batch size 128 is not divisible by micro-batch size 3/);
  t.same(presetLayer('v1.5', 2, { microBatch: 3, gradAccum: 2 }).globalBatch, undefined);
  t.equal(presetLayer('v1.5', 2, { microBatch: 3 }).globalBatch, PRESETS['v1.5'].finetune.globalBatch);

  t.equal(resolveTrainRun({ stage: '2', ...paths, device: 'cuda' }).workers, 2, 'workers: 2 on cuda');
  t.equal(resolveTrainRun({ stage: '2', ...paths, device: 'cuda', workers: 1 }).workers, 1);
  t.equal(resolveOne('maxLength', undefined, { modelMaxLength: 4096 }), 2048);
  t.equal(resolveOne('maxLength', undefined, { modelMaxLength: 512 }), 512);
  t.equal(resolveOne('maxLength', 100, { modelMaxLength: 512 }), 100);
  t.equal(resolveTrainRun({ stage: 'finetune', ...paths, template: 'v0' }).template, 'v0', "the reference's v0 version");
  t.throws(() => resolveTrainRun({ stage: 'stage3', ...paths }), /\[train\] unknown stage 'stage3'/);
  t.throws(() => resolveTrainRun({ stage: 'finetune', ...paths, template: 'nonsense' }), /\[train\] unknown template 'nonsense' \(.*vicuna_v1/);
});

t.test('Trainer API: defaults and checks from the same table', async (t) => {
  const o = resolveTrainerOptions({ stage: 2, lr: 1e-3 });
  t.same(
    [o.stage, o.epochs, o.globalBatch, o.microBatch, o.gradAccum, o.seed, o.warmupRatio, o.weightDecay, o.maxGradNorm, o.workers, o.prefetch],
    [2, 1, 4, 4, 1, 42, 0.03, 0, 0, 0, 2],
  );
  t.same(
    [o.saveSteps, o.saveTotalLimit, o.plot, o.trainVision, o.gradientCheckpointing, o.groupByModalityLength, o.label, o.progress],
    [0, 1, true, false, false, false, 'stage 2', 'auto'],
  );
  t.equal(o.configPatch, undefined, 'no caller config patch (the trainer still records template and aspect)');
  t.equal(o.maxSteps, undefined);
  t.equal(o.logEvery, undefined);
  t.type(o.log, 'function');
  t.equal(resolveTrainerOptions({ stage: 'pretrain' as unknown as 1, lr: 0 }).stage, 1);
  t.equal(resolveTrainerOptions({ stage: 1, lr: 0, label: 'x' }).label, 'x');
  // plain progress: a line every round(total / 20) steps
  t.equal(resolveOne('logEvery', undefined, { totalSteps: 100 }), 5);
  t.equal(resolveOne('logEvery', undefined, { totalSteps: 25 }), 1);
  t.equal(resolveOne('logEvery', 7, { totalSteps: 100 }), 7);
  const bad: [object, RegExp][] = [
    [{ lr: -1 }, /\[train\] lr must be a number >= 0 \(got -1\)/],
    [{ lr: undefined }, /\[train\] option lr is required/],
    [{ epochs: 0 }, /\[train\] epochs must be a number >= 1e-9/],
    [{ maxSteps: 0 }, /\[train\] maxSteps must be an integer >= 1/],
    [{ maxSteps: 2.5 }, /maxSteps must be an integer/],
    [{ warmupRatio: 2 }, /\[train\] warmupRatio must be a number between 0 and 1/],
    [{ progress: 'fancy' }, /\[train\] progress must be one of auto, bar, plain, none/],
    [{ globalBatch: 10, microBatch: 4 }, /not divisible/],
    [{ stage: 3 }, /\[train\] unknown stage '3'/],
  ];
  for (const [o2, re] of bad) t.throws(() => resolveTrainerOptions({ stage: 2, lr: 1e-3, ...o2 } as never), re, JSON.stringify(o2));
});

t.test('--device / --dtype check (util/runtime.ts)', async (t) => {
  t.same(checkRuntime(undefined, undefined), { device: 'cpu', dtype: 'float32' });
  t.same(checkRuntime('cpu', 'float16'), { device: 'cpu', dtype: 'float16' }, 'inference dtypes by default');
  t.same(checkRuntime('cpu', 'bfloat16', { dtypes: TRAIN_DTYPES, area: 'train' }), { device: 'cpu', dtype: 'bfloat16' });
  t.throws(
    () => checkRuntime('cpu', 'float16', { dtypes: TRAIN_DTYPES, area: 'train' }),
    /^\[train\] unsupported dtype 'float16' \(float32, bfloat16\)$/,
  );
  t.throws(() => checkRuntime('tpu', 'float32', { area: 'train' }), /^\[train\] unknown device 'tpu' \(cpu or cuda\)$/);
  t.throws(() => checkRuntime('cpu', 'int8'), /^\[runtime\] unsupported dtype 'int8'/);
  if (!cuda.isAvailable()) t.throws(() => checkRuntime('cuda', 'float32', { area: 'train' }), /^\[train\] --device cuda: CUDA is not available/);
  else t.same(checkRuntime('cuda', 'bfloat16'), { device: 'cuda', dtype: 'bfloat16' });
});
