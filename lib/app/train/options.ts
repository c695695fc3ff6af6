// options.ts — every option of a training run, declared once: TRAIN_OPTIONS below holds, per option, its
// value kind, command-line flag and help text, built-in default, allowed range or choices, whether a
// preset sets it, and what a resumed run does with it. Three readers share the table:
//   - cli/train.ts builds the `llava train` flags from it (help text, number parsers, choices, defaults);
//   - the Trainer fills its options with resolveTrainerOptions (defaults and checks from the table);
//   - the train command resolves a whole run with resolveTrainRun (flags, then the preset, then defaults).
//
// Precedence, per option: an explicit flag (or a value the Trainer API is given) > the preset's value for
// the stage (presets.ts; --batch-size only when --micro-batch-size and --grad-accum do not already fix
// it) > the built-in default. A resumed run (Trainer.resume) then takes from the checkpoint what the
// table marks `onResume: 'checkpoint'` (the data seed), even over a flag, so the data order continues;
// `onResume: 'checkpoint-unless-given'` options (epochs, max steps: together the schedule, so the lr curve
// continues) come from the checkpoint unless the user typed one of them for this run (then this run's
// epochs / max steps set the schedule); `onResume: 'match'` options must equal the checkpoint's. All other
// options are this run's own.
//
// Decisions:
// - Entries are keyed by the Trainer's names (globalBatch, outputDir, ...); the flag keeps its CLI spelling
//   (--batch-size, --output). scope 'trainer' options reach the Trainer; 'command' ones are used by the
//   train command around it (data, device, template, ...). Entries without a flag are Trainer API only.
// - A default may be a function of the options resolved before it (table order) and of run facts
//   (DefaultContext); `--help` shows `defaultText` for those. Commander shows a fixed default itself.
// - Checks throw `[train] ...`; the command line also checks numbers and choices while parsing.
import { TEMPLATE_NAMES } from '../processing/conversation';
import { DEVICES, TRAIN_DTYPES } from '../util/runtime';
import { checkOptions, optionKeys, type OptionKeys } from '../../options';
import type { ProgressMode } from '../util/progress';
import type { DataParallel } from './distributed';

/** Data-parallel strategies (distributed.ts). */
export const STRATEGIES = ['ddp', 'zero1', 'zero2', 'zero3'] as const;
import { PRESETS, PRESET_KEYS, PRESET_NAMES, type PresetName, type StageName } from './presets';

// ---------------------------------------------------------------------------------------------------------
// Option specs

export type Scope = 'trainer' | 'command';
export type Kind = 'int' | 'float' | 'string' | 'optional-string' | 'bool' | 'choice';

/** Run facts some defaults need. */
export interface DefaultContext {
  /** The model's max positions (--max-length default). */
  modelMaxLength?: number;
  /** The schedule length (plain progress line interval). */
  totalSteps?: number;
}
type Earlier = Readonly<Record<string, unknown>>;

export interface OptionSpec<T, W extends Scope = Scope> {
  scope: W;
  kind: Kind;
  /** Commander flags ('--lr <lr>'); none: a Trainer API option only. */
  flag?: string;
  help: string;
  /** How `--help` describes a default that is not one fixed value ('preset', 'min(batch, 4)'). */
  defaultText?: string;
  default?: T | ((earlier: Earlier, ctx: DefaultContext) => T | undefined);
  choices?: readonly T[];
  /** Inclusive range of a number. */
  min?: number;
  max?: number;
  /** The train command requires the flag. */
  required?: boolean;
  /** May stay undefined after resolution. */
  optional?: boolean;
  /** A boolean flag that also has a `--no-` form: that form's help text. */
  negatable?: string;
  /** Custom check / normalisation (instead of the kind's). */
  check?: (v: unknown) => T;
  /** On resume: 'checkpoint' = the checkpoint's value wins; 'checkpoint-unless-given' = the checkpoint's
   *  unless given explicitly for this run; 'match' = must equal the checkpoint's. */
  onResume?: 'checkpoint' | 'checkpoint-unless-given' | 'match';
}

type Fields<T> = Omit<OptionSpec<T>, 'scope' | 'kind' | 'choices'>;
const int = <W extends Scope>(scope: W, s: Fields<number>): OptionSpec<number, W> => ({ ...s, scope, kind: 'int' });
const float = <W extends Scope>(scope: W, s: Fields<number>): OptionSpec<number, W> => ({ ...s, scope, kind: 'float' });
const text = <W extends Scope>(scope: W, s: Fields<string>): OptionSpec<string, W> => ({ ...s, scope, kind: 'string' });
const bool = <W extends Scope>(scope: W, s: Fields<boolean>): OptionSpec<boolean, W> => ({ ...s, scope, kind: 'bool' });
const oneOf = <C extends string, W extends Scope>(scope: W, choices: readonly C[], s: Fields<C>): OptionSpec<C, W> => ({
  ...s,
  scope,
  kind: 'choice',
  choices,
});
const custom = <T, W extends Scope>(scope: W, kind: Kind, s: Fields<T> & { check: (v: unknown) => T }): OptionSpec<T, W> => ({ ...s, scope, kind });
/** The option may be absent after resolution (no default, or one that needs a run fact). */
const maybe = <T, W extends Scope>(s: OptionSpec<T, W>): OptionSpec<T | undefined, W> => ({ ...s, optional: true }) as OptionSpec<T | undefined, W>;

export const PROGRESS_MODES = ['auto', 'bar', 'plain', 'none'] as const satisfies readonly ProgressMode[];

/** Training `--version` names: the templates, plus the reference's 'v0' / 'v0.5' (docs/reference.md §4.1). */
export function isTrainingTemplate(t: string): boolean {
  return TEMPLATE_NAMES.includes(t) || t === 'v0' || t === 'v0.5';
}
/** The template names an error message suggests. */
export const TRAINING_TEMPLATE_LIST = TEMPLATE_NAMES.filter((t) => t !== 'llava_hf').join(', ');

export function stageNumber(s: StageName | 1 | 2 | string): 1 | 2 {
  if (s === 1 || s === 'pretrain' || s === '1') return 1;
  if (s === 2 || s === 'finetune' || s === '2') return 2;
  throw new Error(`[train] unknown stage '${s}' (pretrain or finetune)`);
}

function checkTemplate(v: unknown): string {
  if (typeof v !== 'string' || !isTrainingTemplate(v)) throw new Error(`[train] unknown template '${v}' (${TRAINING_TEMPLATE_LIST})`);
  return v;
}

function checkResume(v: unknown): string | true {
  if (v === true || (typeof v === 'string' && v !== '')) return v;
  throw new Error(`[train] resume must be a checkpoint directory or true (got ${JSON.stringify(v)})`);
}

/** Every training option, in `llava train --help` order. */
export const TRAIN_OPTIONS = {
  stage: custom('trainer', 'string', {
    flag: '--stage <stage>',
    required: true,
    help: 'pretrain (stage 1) or finetune (stage 2)',
    check: (v) => stageNumber(v as string),
  }),
  baseModelDir: maybe(
    text('trainer', { flag: '--model <dir>', required: true, help: 'base model directory (config.json, *.safetensors, tokenizer.json)' }),
  ),
  data: text('command', { flag: '--data <file>', required: true, help: 'LLaVA JSON: an array of {id, image?, conversations}' }),
  imageFolder: text('command', { flag: '--image-folder <dir>', required: true, help: 'folder that image paths in the data are relative to' }),
  outputDir: maybe(
    text('trainer', { flag: '--output <dir>', required: true, help: 'output directory (checkpoints, final weights, train_log.jsonl, loss.png)' }),
  ),
  preset: oneOf('command', PRESET_NAMES, { flag: '--preset <name>', help: 'hyperparameter preset', default: 'v1.5' }),
  template: custom('command', 'string', {
    flag: '--template <name>',
    help: 'training template / --version',
    defaultText: "the preset's: plain for pretrain, v1 for finetune",
    check: checkTemplate,
  }),
  lr: float('trainer', { flag: '--lr <lr>', help: 'peak learning rate', defaultText: 'preset', min: 0 }),
  epochs: float('trainer', {
    flag: '--epochs <n>',
    help: "epochs (on --resume: the checkpoint's schedule unless given)",
    defaultText: 'preset',
    min: 1e-9,
    default: 1,
    onResume: 'checkpoint-unless-given',
  }),
  maxSteps: maybe(
    int('trainer', {
      flag: '--max-steps <n>',
      help: "schedule length in optimizer steps (overrides epochs; on --resume: the checkpoint's unless given)",
      min: 1,
      onResume: 'checkpoint-unless-given',
    }),
  ),
  globalBatch: maybe(int('trainer', { flag: '--batch-size <n>', help: 'global batch per optimizer step', defaultText: 'preset', min: 1 })),
  microBatch: maybe(
    int('trainer', { flag: '--micro-batch-size <n>', help: 'samples per forward pass', defaultText: 'min(batch, 4)', min: 1, onResume: 'match' }),
  ),
  gradAccum: maybe(int('trainer', { flag: '--grad-accum <n>', help: 'micro-batches per optimizer step', min: 1, onResume: 'match' })),
  maxLength: maybe(
    int('command', {
      flag: '--max-length <n>',
      help: 'max sequence length',
      defaultText: 'min(2048, model max positions)',
      min: 8,
      default: (_, c) => (c.modelMaxLength === undefined ? undefined : Math.min(2048, c.modelMaxLength)),
    }),
  ),
  device: oneOf('command', DEVICES, { flag: '--device <device>', help: 'compute device', default: 'cpu' }),
  dtype: oneOf('command', TRAIN_DTYPES, {
    flag: '--dtype <dtype>',
    help: 'parameter dtype (bfloat16 keeps float32 master weights)',
    default: 'float32',
  }),
  seed: int('trainer', { flag: '--seed <n>', help: 'data order seed', min: 0, default: 42, onResume: 'checkpoint' }),
  resume: maybe(
    custom('command', 'optional-string', {
      flag: '--resume [dir]',
      help: 'resume from a checkpoint directory; what it recorded (schedule, lr, template, aspect, batch sizes, ...) applies unless typed again',
      defaultText: 'the newest checkpoint-N in --output',
      check: checkResume,
    }),
  ),
  overwriteOutput: bool('command', {
    flag: '--overwrite-output',
    help: "start over in a non-empty --output: first delete the old run's checkpoint-N folders, log, plot and model files",
    default: false,
  }),
  pretrainMmMlpAdapter: maybe(
    text('command', {
      flag: '--pretrain-mm-mlp-adapter <file>',
      help: "stage-1 projector to start stage 2 from (this trainer's mm_projector.safetensors or the reference's mm_projector.bin)",
    }),
  ),
  visionTower: maybe(text('command', { flag: '--vision-tower <dir>', help: 'CLIP directory for original llava_llama checkpoints' })),
  aspect: oneOf('command', ['square', 'pad'] as const, { flag: '--aspect <mode>', help: 'image aspect handling', defaultText: 'preset' }),
  groupByModalityLength: bool('trainer', {
    flag: '--group-by-modality-length',
    help: 'modality-grouped length sampler (v1.5 finetune preset default)',
    negatable: 'plain seeded shuffle',
    default: false,
  }),
  weightDecay: float('trainer', { flag: '--weight-decay <w>', help: 'AdamW weight decay (biases and norms excluded)', min: 0, default: 0 }),
  maxGradNorm: float('trainer', { flag: '--max-grad-norm <n>', help: 'clip the gradient norm (0 = off)', min: 0, default: 0 }),
  warmupRatio: float('trainer', { flag: '--warmup-ratio <r>', help: 'linear warmup fraction of the schedule', min: 0, max: 1, default: 0.03 }),
  gradientCheckpointing: bool('trainer', {
    flag: '--gradient-checkpointing',
    help: 'recompute each decoder layer in backward instead of keeping its activations',
    default: false,
  }),
  onError: oneOf('command', ['skip', 'fatal'] as const, {
    flag: '--on-error <mode>',
    help: 'malformed records: skip (reported) or fatal',
    default: 'fatal',
  }),
  // The Trainer API has no device option: there the default is 0.
  workers: int('trainer', {
    flag: '--workers <n>',
    help: 'data-loading worker threads',
    defaultText: '2 on cuda, 0 on cpu',
    min: 0,
    default: (s) => (s.device === 'cuda' ? 2 : 0),
  }),
  saveSteps: int('trainer', { flag: '--save-steps <n>', help: 'checkpoint every N steps (0 = at the end only)', min: 0, default: 0 }),
  // 1 as the reference's scripts (--save_total_limit 1): a 7B stage-2 checkpoint with its optimizer state is
  // about 100 GB. The newest is written completely before older ones go.
  saveTotalLimit: int('trainer', {
    flag: '--save-total-limit <n>',
    help: 'checkpoint-N folders kept, newest first (0 = keep all; 1 as the reference scripts)',
    min: 0,
    default: 1,
  }),
  // LoRA / QLoRA (lora.ts; docs/reference.md §5: train.py's lora_* defaults, the v1.5-lora preset sets the script's).
  loraR: int('trainer', { flag: '--lora-r <n>', help: 'LoRA rank (0 = off: full fine-tuning)', defaultText: '0, or the preset', min: 0, default: 0 }),
  loraAlpha: float('trainer', {
    flag: '--lora-alpha <a>',
    help: 'LoRA alpha (scale alpha / r)',
    defaultText: '16, or the preset',
    min: 1e-9,
    default: 16,
  }),
  loraDropout: float('trainer', {
    flag: '--lora-dropout <p>',
    help: 'dropout on the LoRA input',
    defaultText: '0.05, or the preset',
    min: 0,
    max: 0.999,
    default: 0.05,
  }),
  loraTarget: maybe(
    text('trainer', {
      flag: '--lora-target <names>',
      help: 'comma-separated leaf names of the linear layers to adapt',
      defaultText: 'every linear layer of the language model but lm_head',
    }),
  ),
  mmProjectorLr: maybe(
    float('trainer', {
      flag: '--mm-projector-lr <lr>',
      help: 'learning rate of the projector',
      defaultText: '--lr, or the preset',
      min: 0,
    }),
  ),
  bits: custom('trainer', 'int', {
    flag: '--bits <n>',
    help: 'storage of the frozen language-model linears under LoRA: 16 (as loaded), 8 (int8 per channel) or 4 (NF4)',
    default: 16,
    min: 4,
    max: 16,
    check: (v) => {
      if (v !== 16 && v !== 8 && v !== 4) throw new Error(`[train] bits must be 16, 8 or 4 (got ${JSON.stringify(v)})`);
      return v;
    },
  }),
  progress: oneOf('trainer', PROGRESS_MODES, { flag: '--progress <mode>', help: 'progress display', default: 'auto' }),
  // Trainer API only.
  logEvery: maybe(
    int('trainer', {
      help: 'plain progress: a line every N steps',
      defaultText: 'about 20 lines per run',
      min: 1,
      default: (_, c) => (c.totalSteps === undefined ? undefined : Math.max(1, Math.round(c.totalSteps / 20))),
    }),
  ),
  prefetch: int('trainer', { help: 'micro-batches encoded ahead of the one in use', min: 0, default: 2 }),
  label: text('trainer', { help: 'label shown in the progress display', default: (s) => `stage ${String(s.stage)}` }),
  plot: bool('trainer', { help: 'write loss.png at the end (when there is an output directory)', default: true }),
  trainVision: bool('trainer', { help: 'also train the vision tower (LLaVA keeps it frozen in both stages)', default: false }),
  // Several processes (distributed.ts, launch.ts; README "Training on several GPUs or machines").
  distributed: maybe(
    oneOf('command', STRATEGIES, {
      flag: '--distributed <strategy>',
      help: 'data parallel across processes: ddp, zero1 (optimizer state sharded), zero2 (and gradients), zero3 (and weights)',
      defaultText: 'ddp when several processes run',
    }),
  ),
  distBucketMb: maybe(
    float('command', {
      flag: '--dist-bucket-mb <mb>',
      help: 'gradient bucket size: each bucket starts its reduction during backward as soon as it is complete',
      defaultText: '25',
      min: 0.001,
    }),
  ),
  nprocPerNode: int('command', { flag: '--nproc-per-node <n>', help: 'start N processes on this machine (through mpirun)', min: 1, default: 1 }),
  distTimeout: maybe(
    float('command', {
      flag: '--dist-timeout <s>',
      help: 'seconds a collective waits for the other ranks before the job ends with an error',
      defaultText: 'LLAVA_DIST_TIMEOUT or 300',
      min: 1,
    }),
  ),
};

type Table = typeof TRAIN_OPTIONS;
export type TrainKey = keyof Table;
type ValueOf<S> = S extends OptionSpec<infer T, Scope> ? T : never;
/** A fully resolved training run (optional entries may be undefined). */
export type TrainSettings = { [K in TrainKey]: ValueOf<Table[K]> };
type KeysIn<W extends Scope> = { [K in TrainKey]: Table[K] extends OptionSpec<unknown, W> ? K : never }[TrainKey];
export type TrainerKey = KeysIn<'trainer'>;
export type TrainerSettings = Pick<TrainSettings, TrainerKey>;

/** Callbacks of the Trainer API (not options of the table). */
export interface TrainerHooks {
  /** Messages (default console.log). */
  log?: (msg: string) => void;
  /** Edits the copied config.json of saved models (e.g. an absolute mm_vision_tower path), after the
   *  trainer's own record of template, aspect and image token scheme. */
  configPatch?: (cfg: Record<string, unknown>) => void;
  /** Data-parallel training over a process group (distributed.ts); gradAccum is then per rank. */
  parallel?: DataParallel;
}
/** What `new Trainer(...)` takes: stage and lr are required, the rest default from the table. */
export type TrainerOptions = Partial<TrainerSettings> & Pick<TrainerSettings, 'stage' | 'lr'> & TrainerHooks;
export type ResolvedTrainerOptions = TrainerSettings & { globalBatch: number; microBatch: number; gradAccum: number } & TrainerHooks &
  Required<Pick<TrainerHooks, 'log'>>;

type AnySpec = OptionSpec<unknown>;
const spec = (k: TrainKey): AnySpec => TRAIN_OPTIONS[k] as AnySpec;
export const TRAIN_KEYS = Object.keys(TRAIN_OPTIONS) as TrainKey[];
export const TRAINER_KEYS = TRAIN_KEYS.filter((k) => spec(k).scope === 'trainer') as TrainerKey[];
const HOOK_KEYS = optionKeys<TrainerHooks>({ log: true, configPatch: true, parallel: true });
/** Every key `new Trainer(...)` accepts: the table's trainer options and the hooks. */
const TRAINER_OPTION_KEYS = { ...Object.fromEntries(TRAINER_KEYS.map((k) => [k, true])), ...HOOK_KEYS } as OptionKeys<TrainerOptions>;
/** Options that must equal the checkpoint's on resume (else the data order would differ). */
export const RESUME_MUST_MATCH = TRAIN_KEYS.filter((k) => spec(k).onResume === 'match');
/** Options that set the schedule: a resume keeps the checkpoint's unless one of them is given. */
export const RESUME_UNLESS_GIVEN = TRAIN_KEYS.filter((k) => spec(k).onResume === 'checkpoint-unless-given');

// ---------------------------------------------------------------------------------------------------------
// Resolution

/** Values by option name; the first layer that defines an option wins. */
export type Layer = Partial<Record<TrainKey, unknown>>;

function describeRange(s: AnySpec): string {
  const lo = s.min ?? -Infinity;
  const hi = s.max ?? Infinity;
  if (s.kind === 'int') return `an integer >= ${lo}`;
  return hi === Infinity ? `a number >= ${lo}` : `a number between ${lo} and ${hi}`;
}

function validate(key: TrainKey, v: unknown): unknown {
  const s = spec(key);
  if (v === undefined) {
    if (s.optional) return undefined;
    throw new Error(`[train] option ${key} is required`);
  }
  if (s.check) return s.check(v);
  const bad = (want: string): never => {
    throw new Error(`[train] ${key} must be ${want} (got ${JSON.stringify(v)})`);
  };
  switch (s.kind) {
    case 'int':
    case 'float': {
      const n = v as number;
      const ok =
        typeof v === 'number' &&
        (s.kind === 'int' ? Number.isSafeInteger(n) : Number.isFinite(n)) &&
        n >= (s.min ?? -Infinity) &&
        n <= (s.max ?? Infinity);
      return ok ? v : bad(describeRange(s));
    }
    case 'bool':
      return typeof v === 'boolean' ? v : bad('true or false');
    case 'choice':
      return s.choices!.includes(v) ? v : bad(`one of ${s.choices!.join(', ')}`);
    default:
      return typeof v === 'string' ? v : bad('a string');
  }
}

function defaultOf(key: TrainKey, earlier: Earlier, ctx: DefaultContext): unknown {
  const d = spec(key).default;
  return typeof d === 'function' ? (d as (e: Earlier, c: DefaultContext) => unknown)(earlier, ctx) : d;
}

/** One option: the given value, else its default (checked either way). */
export function resolveOne<K extends TrainKey>(
  key: K,
  value: TrainSettings[K] | undefined,
  ctx: DefaultContext = {},
  earlier: Earlier = {},
): TrainSettings[K] {
  return validate(key, value !== undefined ? value : defaultOf(key, earlier, ctx)) as TrainSettings[K];
}

/** Resolves `keys` in table order from the layers, then the batch sizes (resolveBatching). */
function resolveLayers<K extends TrainKey>(keys: readonly K[], layers: Layer[], ctx: DefaultContext): Pick<TrainSettings, K> {
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = resolveOne(k, layers.map((l) => l[k]).find((v) => v !== undefined) as TrainSettings[K], ctx, out);
  if ('microBatch' in out) Object.assign(out, resolveBatching(out as { globalBatch?: number; microBatch?: number; gradAccum?: number }));
  return out as Pick<TrainSettings, K>;
}

/** The Trainer's options with every default filled in and every value checked. */
export function resolveTrainerOptions(opts: TrainerOptions): ResolvedTrainerOptions {
  checkOptions('Trainer', opts, TRAINER_OPTION_KEYS);
  return {
    ...(resolveLayers(TRAINER_KEYS, [opts], {}) as ResolvedTrainerOptions),
    log: opts.log ?? ((m) => console.log(m)),
    // Runs after the training record (Trainer.modelFilesPatch) is written into config.json.
    configPatch: opts.configPatch,
    parallel: opts.parallel,
  };
}

/** The preset's values for a stage, as a layer. Its global batch only fills in when the micro-batch size and
 *  the accumulation do not already determine the batch. */
export function presetLayer(name: PresetName, stage: 1 | 2, given: Layer): Layer {
  const p: Layer = { ...PRESETS[name][stage === 1 ? 'pretrain' : 'finetune'] };
  if (given.microBatch !== undefined && given.gradAccum !== undefined) delete p.globalBatch;
  return p;
}

/** A whole `llava train` run from its explicit flags: flag > preset > default. */
export function resolveTrainRun(flags: Layer, ctx: DefaultContext = {}): TrainSettings {
  const stage = resolveOne('stage', flags.stage as 1 | 2);
  const preset = resolveOne('preset', flags.preset as PresetName | undefined);
  return resolveLayers(TRAIN_KEYS, [flags, presetLayer(preset, stage, flags)], ctx);
}

/** Only the options the Trainer takes. */
export function trainerPart(s: TrainSettings): TrainerSettings {
  return Object.fromEntries(TRAINER_KEYS.map((k) => [k, s[k]])) as TrainerSettings;
}

/** The default `--help` can show as a value: fixed, not set by a preset, not a boolean flag. */
export function shownDefault(key: TrainKey): unknown {
  const s = spec(key);
  if (typeof s.default === 'function' || s.kind === 'bool' || (PRESET_KEYS as string[]).includes(key)) return undefined;
  return s.default;
}

/** The help text with `defaultText` appended as `(default: ...)`. */
export function helpText(key: TrainKey): string {
  const s = spec(key);
  return s.defaultText ? `${s.help} (default: ${s.defaultText})` : s.help;
}

/** Resolve global batch / micro-batch / accumulation from whichever two (or one) are given. */
export function resolveBatching(o: { globalBatch?: number; microBatch?: number; gradAccum?: number }): {
  globalBatch: number;
  microBatch: number;
  gradAccum: number;
} {
  const pos = (v: number | undefined, name: string): void => {
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new Error(`[train] ${name} must be a positive integer (got ${v})`);
  };
  pos(o.globalBatch, 'batch size');
  pos(o.microBatch, 'micro-batch size');
  pos(o.gradAccum, 'gradient accumulation');
  let { globalBatch: g, microBatch: m, gradAccum: a } = o;
  if (g !== undefined && m !== undefined && a !== undefined && g !== m * a)
    throw new Error(`[train] batch size ${g} != micro-batch ${m} x accumulation ${a}`);
  if (m !== undefined && a !== undefined) g = m * a;
  else if (g !== undefined && a !== undefined) {
    if (g % a) throw new Error(`[train] batch size ${g} is not divisible by gradient accumulation ${a}`);
    m = g / a;
  } else if (g !== undefined) {
    m = m ?? Math.min(g, 4);
    if (g % m) throw new Error(`[train] batch size ${g} is not divisible by micro-batch size ${m}`);
    a = g / m;
  } else {
    m = m ?? 4;
    a = a ?? 1;
    g = m * a;
  }
  return { globalBatch: g!, microBatch: m!, gradAccum: a! };
}
