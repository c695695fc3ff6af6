// train_state.ts — saving and restoring training state: weights, the stage-1 projector file, optimizer
// moments and the trainer's position in the data.
//
// Layout of a checkpoint directory (all files written atomically: temp name + fsync + rename; the whole
// directory is built under a temp name and renamed into place, so a crash leaves either the old
// checkpoint or the new one, never half of one):
//   mm_projector.safetensors   stage 1: the projector alone, in the reference's naming
//                              (model.mm_projector.0.weight, .0.bias, .2.weight, .2.bias)
//   model.safetensors          stage 2: the whole model (llava-hf names for llava-hf checkpoints,
//                              original `model.*` names for llava_llama ones) so loadLlava reads it back
//   config.json, tokenizer*.json, preprocessor_config.json, chat_template.*   copied from the base model
//                              (stage 2), so the directory loads on its own; config.json gets the training
//                              record (template, aspect, image token scheme: processing/training_record.ts)
//                              and a base's Jinja chat_template is replaced by the training template's
//   optimizer.safetensors      AdamW exp_avg / exp_avg_sq / master (by parameter index), float32
//   trainer_state.json         step, epoch, position in the epoch's data order, seed, schedule length, ...
//
// Decisions:
// - Weights are written as F32 whatever the training dtype: bf16 values are exactly representable, so a
//   bf16 run round-trips bit for bit, and the files load into any dtype.
// - Names are the inverse of models/loader.ts's canonicalName, so the loader maps every saved name back.
// - Old checkpoints are pruned through a temp name (util/files.ts removeDirAtomic): a kill mid-delete never
//   leaves a half checkpoint-N that findCheckpoint would pick. readTrainLog drops a torn last line of
//   train_log.jsonl (a kill mid-append) with a warning; every error here names its file.
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../../core/tensor';
import { noGrad } from '../../core/autograd';
import { fromTypedArray } from '../../ops';
import { writeSafetensors, SafetensorsFile, TensorToWrite } from '../../io/safetensors';
import { canonicalName, loadWeights } from '../../models/loader';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import type { AdamW } from '../../optim/adamw';
import { removeDirAtomic, writeFileAtomic } from '../util/files';
import { readJson } from '../../io/json';
import { openStateDict } from '../../io/state_dict';

export const PROJECTOR_FILE = 'mm_projector.safetensors';
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'trainer_state.json';
export const MODEL_SIDE_FILES = [
  'config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'preprocessor_config.json',
  'generation_config.json',
  'chat_template.json',
  'chat_template.jinja',
];

/** How the copied model files of a saved model are changed. */
export interface ModelFilesPatch {
  /** Edits config.json (the training record, an absolute mm_vision_tower path, ...). */
  config?: (cfg: Record<string, unknown>) => void;
  /** Replaces a Jinja chat template the base ships (tokenizer_config.json `chat_template`,
   *  chat_template.json, chat_template.jinja); null removes it; undefined copies it as is. */
  chatTemplate?: string | null;
}

const readJsonFile = (file: string): Record<string, unknown> => readJson(file, 'file', 'checkpoint', { object: true });

const writeJson = (file: string, v: unknown): void => writeFileAtomic(file, JSON.stringify(v, null, 2) + '\n');

/** One side file into `dir`, patched as `patch` says. */
function copySideFile(f: string, src: string, dir: string, patch: ModelFilesPatch): void {
  const dst = path.join(dir, f);
  const jt = patch.chatTemplate;
  if (f === 'config.json' && patch.config) {
    const cfg = readJsonFile(src);
    patch.config(cfg);
    writeJson(dst, cfg);
  } else if (jt !== undefined && f === 'tokenizer_config.json') {
    const tc = readJsonFile(src);
    if (tc.chat_template === undefined) return fs.copyFileSync(src, dst);
    if (jt === null) delete tc.chat_template;
    else tc.chat_template = jt;
    writeJson(dst, tc);
  } else if (jt !== undefined && f === 'chat_template.json') {
    if (jt !== null) writeJson(dst, { ...readJsonFile(src), chat_template: jt });
  } else if (jt !== undefined && f === 'chat_template.jinja') {
    if (jt !== null) writeFileAtomic(dst, jt);
  } else fs.copyFileSync(src, dst);
}

/** Where training stands; enough to continue with the same data order and schedule. */
export interface TrainerState {
  version: 1;
  stage: 1 | 2;
  /** Optimizer steps completed. */
  step: number;
  /** Schedule length (cosine horizon). */
  totalSteps: number;
  /** Current epoch (0-based) and the next micro-batch of its order. */
  epoch: number;
  batchInEpoch: number;
  /** Data order seed (each epoch's order is derived from (seed, epoch)). */
  seed: number;
  numSamples: number;
  samplesSeen: number;
  tokensSeen: number;
  /** Options the run was started with (lr, batch sizes, ...), for reference and consistency checks. */
  options: Record<string, unknown>;
}

/** An error that names `file` (prefixed when its message does not already). */
function withFile(e: unknown, file: string): Error {
  const m = (e as Error)?.message ?? String(e);
  return m.includes(file) ? (e as Error) : new Error(`[checkpoint] ${file}: ${m}`);
}

/** Engine name → original LLaVA (`llava_llama`) checkpoint name; inverse of loader's canonicalName. */
export function originalName(name: string): string {
  let m: RegExpExecArray | null;
  if ((m = /^multi_modal_projector\.linear_(\d+)\.(weight|bias)$/.exec(name))) return `model.mm_projector.${(Number(m[1]) - 1) * 2}.${m[2]}`;
  if (name.startsWith('language_model.model.')) return name.slice('language_model.'.length);
  if (name === 'language_model.lm_head.weight') return 'lm_head.weight';
  if (name.startsWith('vision_tower.vision_model.')) return 'model.vision_tower.vision_tower.' + name.slice('vision_tower.'.length);
  throw new Error(`[checkpoint] no original name for '${name}'`);
}

/** A tensor as F32 (F64 for float64) bytes for the safetensors writer. */
export function toWritable(t: Tensor): TensorToWrite {
  const d = t.dataSync();
  if (d instanceof Float64Array) return { dtype: 'F64', shape: t.shape.slice(), data: d };
  if (d instanceof Float32Array) return { dtype: 'F32', shape: t.shape.slice(), data: d };
  throw new Error(`[checkpoint] cannot save a ${t.dtype} tensor as weights`);
}

/** The projector alone, in the reference's `mm_projector.bin` naming. */
export function projectorTensors(model: LlavaForConditionalGeneration): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  for (const [n, p] of model.projector.namedParameters('multi_modal_projector.')) out.set(originalName(n), toWritable(p));
  return out;
}

/** Every parameter, named for the checkpoint format. */
export function modelTensors(model: LlavaForConditionalGeneration): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  const orig = model.config.format === 'llava_llama';
  for (const [n, p] of model.namedParameters()) out.set(orig ? originalName(n) : n, toWritable(p));
  return out;
}

/** Copy weights from a safetensors or PyTorch (.bin) file, in any naming the loader knows (the reference's
 *  mm_projector.bin included), into the model; others untouched. */
export function loadPartialWeights(model: LlavaForConditionalGeneration, file: string, opts: { only?: 'projector' } = {}): string[] {
  if (!fs.existsSync(file)) throw new Error(`[checkpoint] ${file} not found`);
  const src = openStateDict(file);
  try {
    const loaded: string[] = [];
    const rename = (n: string): string | null => {
      const c = canonicalName(n);
      if (c === null) return null;
      if (opts.only === 'projector' && !c.startsWith('multi_modal_projector.')) {
        throw new Error(`[checkpoint] ${file}: '${n}' is not a projector tensor (expected model.mm_projector.* names)`);
      }
      loaded.push(c);
      return c;
    };
    try {
      loadWeights(model, [{ src, rename }], { allowMissing: () => true });
    } catch (e) {
      throw withFile(e, file);
    }
    if (opts.only === 'projector') {
      const want = model.projector.namedParameters('multi_modal_projector.').map(([n]) => n);
      const missing = want.filter((n) => !loaded.includes(n));
      if (missing.length) throw new Error(`[checkpoint] ${file}: projector tensors missing: ${missing.map(originalName).join(', ')}`);
    }
    return loaded;
  } finally {
    src.close();
  }
}

/** Copy config/tokenizer/preprocessor/chat-template files of the base model (those present) into `dir`.
 *  `patch` may be a config.json editor alone (the older form). */
export function copyModelFiles(baseDir: string, dir: string, patch: ModelFilesPatch | ModelFilesPatch['config'] = {}): void {
  const p: ModelFilesPatch = typeof patch === 'function' ? { config: patch } : patch;
  for (const f of MODEL_SIDE_FILES) {
    const src = path.join(baseDir, f);
    if (fs.existsSync(src)) copySideFile(f, src, dir, p);
  }
}

/** Save the weights a stage produces: stage 1 the projector file (+ config), stage 2 the whole model. */
export function saveWeights(
  model: LlavaForConditionalGeneration,
  dir: string,
  stage: 1 | 2,
  baseDir?: string,
  patch: ModelFilesPatch | ModelFilesPatch['config'] = {},
): void {
  const p: ModelFilesPatch = typeof patch === 'function' ? { config: patch } : patch;
  fs.mkdirSync(dir, { recursive: true });
  if (stage === 1) writeSafetensors(path.join(dir, PROJECTOR_FILE), projectorTensors(model), { format: 'pt' });
  else writeSafetensors(path.join(dir, MODEL_FILE), modelTensors(model), { format: 'pt' });
  if (baseDir) {
    if (stage === 1) {
      const src = path.join(baseDir, 'config.json');
      if (fs.existsSync(src)) {
        const cfg = readJsonFile(src);
        p.config?.(cfg);
        writeJson(path.join(dir, 'config.json'), cfg);
      }
    } else copyModelFiles(baseDir, dir, p);
  }
}

/** Optimizer moments (and master weights) as F32 tensors named by parameter index. */
export function saveOptimizer(opt: AdamW, file: string, meta: Record<string, string> = {}): void {
  const out = new Map<string, TensorToWrite>();
  for (const [n, t] of opt.stateTensors()) out.set(n, toWritable(t));
  writeSafetensors(file, out, { ...meta, step: String(opt.step) });
}

/** Restore saved optimizer state into a freshly built AdamW over the same parameter list. */
export function loadOptimizer(opt: AdamW, file: string, step: number): void {
  const src = SafetensorsFile.open(file);
  const ts = new Map<string, Tensor>();
  try {
    const params = opt.groups.flatMap((g) => g.params);
    for (const n of src.names()) {
      const i = Number(n.split('.')[0]);
      const p = params[i];
      if (!p)
        throw new Error(
          `[checkpoint] ${file}: optimizer state for parameter ${i}, but the optimizer has ${params.length} (different stage or model?)`,
        );
      const info = src.info(n);
      if (info.shape.join() !== p.shape.join())
        throw new Error(`[checkpoint] ${file}: '${n}' has shape [${info.shape}], parameter ${i} has [${p.shape}]`);
      const dtype = info.dtype === 'F64' ? 'float64' : 'float32';
      const data = info.dtype === 'F64' ? new Float64Array(src.read(n).data.buffer) : src.readAsFloat32(n);
      ts.set(
        n,
        noGrad(() => fromTypedArray(data, info.shape, { dtype, device: p.device })),
      );
    }
    try {
      opt.loadStateTensors(ts, step);
    } catch (e) {
      throw withFile(e, file);
    }
  } finally {
    for (const t of ts.values()) t.dispose();
    src.close();
  }
}

export function readTrainerState(dir: string): TrainerState {
  const f = path.join(dir, STATE_FILE);
  if (!fs.existsSync(f)) throw new Error(`[checkpoint] ${dir} is not a checkpoint (no ${STATE_FILE})`);
  let s: TrainerState;
  try {
    s = JSON.parse(fs.readFileSync(f, 'utf8')) as TrainerState;
  } catch (e) {
    throw new Error(`[checkpoint] ${f}: invalid JSON (${(e as Error).message})`);
  }
  for (const k of ['step', 'totalSteps', 'epoch', 'batchInEpoch', 'seed', 'numSamples'] as const)
    if (!Number.isInteger(s[k])) throw new Error(`[checkpoint] ${f}: '${k}' is missing or not an integer`);
  if (s.stage !== 1 && s.stage !== 2) throw new Error(`[checkpoint] ${f}: stage must be 1 or 2`);
  return s;
}

/** The newest `checkpoint-N` directory under `dir`; else `dir` itself if it is a checkpoint; else null. (An
 *  output directory also holds a final trainer_state.json, but its checkpoints carry the optimizer too.) */
export function findCheckpoint(dir: string): string | null {
  if (!fs.existsSync(dir)) return null;
  const found = fs
    .readdirSync(dir)
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => !!m && fs.existsSync(path.join(dir, m[0], STATE_FILE)))
    .sort((a, b) => Number(b[1]) - Number(a[1]));
  if (found.length) return path.join(dir, found[0][0]);
  return fs.existsSync(path.join(dir, STATE_FILE)) ? dir : null;
}

/** The checkpoint-N directory names under `dir`, newest first. */
export function listCheckpoints(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => !!m)
    .sort((a, b) => Number(b[1]) - Number(a[1]))
    .map((m) => m[0]);
}

/** Remove all but the newest `keep` checkpoint-N directories (keep 0: remove none). Each goes atomically
 *  (renamed to a temp name, then deleted), so a kill never leaves half a checkpoint under its real name. */
export function pruneCheckpoints(dir: string, keep: number): string[] {
  if (!(keep > 0)) return [];
  const gone = listCheckpoints(dir).slice(keep);
  for (const n of gone) removeDirAtomic(path.join(dir, n));
  return gone;
}

/**
 * The records of a train_log.jsonl. A last line that does not parse (the process was killed while writing
 * it) is dropped with a warning and cut off the file; any other bad line is an error naming the file and the
 * line. A missing file has no records.
 */
export function readTrainLog<T extends { step: number }>(file: string, warn: (m: string) => void): T[] {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  const out: T[] = [];
  let keepChars = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const last = lines.slice(i + 1).every((l) => l.trim() === '');
    if (line.trim() !== '') {
      let rec: T | null = null;
      try {
        rec = JSON.parse(line) as T;
      } catch {
        rec = null;
      }
      if (!rec || typeof rec !== 'object' || !Number.isInteger(rec.step)) {
        if (!last) throw new Error(`[train] ${file}: line ${i + 1} is not a step record: ${line.slice(0, 80)}`);
        warn(`[train] ${file}: dropped a torn last line (the run was killed while writing it): ${line.slice(0, 80)}`);
        fs.truncateSync(file, Buffer.byteLength(text.slice(0, keepChars), 'utf8'));
        break;
      }
      out.push(rec);
    }
    keepChars += line.length + 1;
  }
  return out;
}

/** Why a train() call up to step `until` has nothing to do, or null (Trainer.train). */
export function nothingToDo(s: TrainerState, until: number, maxEpochs: number, resumedFrom: string | null): string | null {
  if (s.step < until && s.epoch < maxEpochs) return null;
  const where = resumedFrom ? ` (resumed from ${resumedFrom})` : '';
  const what =
    s.step >= s.totalSteps || s.epoch >= maxEpochs
      ? `the run is already at step ${s.step} of its ${s.totalSteps}-step schedule${s.epoch >= maxEpochs && s.step < s.totalSteps ? ` (epoch ${s.epoch} of ${maxEpochs})` : ''}${where}; give a longer schedule (--max-steps or --epochs) to train further`
      : `untilStep ${until} is not past the current step ${s.step}${where}`;
  return `[train] nothing to train: ${what}`;
}
