// peft.ts — PEFT LoRA adapters on disk (the files the reference's LoRA runs write: adapter_config.json,
// adapter_model.{safetensors,bin}, non_lora_trainables.{safetensors,bin}) and applying one to a loaded
// LLaVA the way the reference's load_pretrained_model does for a LoRA model path with --model-base:
// the non-LoRA trainables (the projector) are loaded over the base, then every adapter is merged into
// its weight (PeftModel.from_pretrained + merge_and_unload): W += scale * B @ A, scale = lora_alpha / r
// (lora_alpha / sqrt(r) with use_rslora).
//
// Tensor names. PEFT prefixes the wrapped model's parameter names with `base_model.model.` and puts
// `lora_A` / `lora_B` before the `.weight` of each adapted Linear. The reference wraps LlavaLlamaForCausalLM,
// so its files say `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` and, for the
// projector, `base_model.model.model.mm_projector.0.weight` (docs/reference.md §1 names). We write those
// names; on reading, anything after the `base_model.model.` prefix goes through the loader's
// canonicalName, so adapters made on llava-hf layouts (`language_model.model.layers...`) load too.
//
// One reader for every weight file of an adapter (readTensorFile): safetensors, or the PyTorch .bin the
// reference's releases ship (adapter_model.bin, non_lora_trainables.bin), through openStateDict.
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../core/tensor';
import { noGrad } from '../core/autograd';
import { fromTypedArray } from '../ops/creation';
import type { TensorSource } from '../io/safetensors';
import { openStateDict } from '../io/state_dict';
import { readJson } from '../io/json';
import { Linear } from '../nn/layers';
import { mergeIntoWeight, linearLayers } from '../nn/lora';
import { canonicalName, loadWeights } from './loader';
import type { LlavaForConditionalGeneration } from './llava';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_STEM = 'adapter_model';
export const NON_LORA_STEM = 'non_lora_trainables';
const PEFT_PREFIX = 'base_model.model.';

/** The adapter_config.json fields this engine reads and writes (PEFT LoraConfig). */
export interface PeftLoraConfig {
  peft_type: 'LORA';
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[];
  base_model_name_or_path: string | null;
  task_type: string;
  bias: string;
  use_rslora?: boolean;
  fan_in_fan_out?: boolean;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  [k: string]: unknown;
}

/** Open one weight file of a checkpoint or adapter, safetensors or a PyTorch pickle, read lazily. */
export function readTensorFile(file: string): TensorSource {
  return openStateDict(file);
}

/** `dir/stem.safetensors`, else `dir/stem.bin`, else null. */
export function findWeightFile(dir: string, stem: string): string | null {
  for (const ext of ['.safetensors', '.bin']) {
    const f = path.join(dir, stem + ext);
    if (fs.existsSync(f)) return f;
  }
  return null;
}

/** Whether `dir` holds a PEFT adapter (adapter_config.json). */
export function isAdapterDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE));
}

export function readAdapterConfig(dir: string): PeftLoraConfig {
  const c = readJson<PeftLoraConfig>(path.join(dir, ADAPTER_CONFIG_FILE), 'adapter config', 'peft', { object: true });
  const where = path.join(dir, ADAPTER_CONFIG_FILE);
  if (c.peft_type !== 'LORA') throw new Error(`[peft] ${where}: peft_type ${JSON.stringify(c.peft_type)} is not supported (LORA only)`);
  if (!(typeof c.lora_alpha === 'number' && c.lora_alpha > 0)) throw new Error(`[peft] ${where}: lora_alpha must be a positive number`);
  if (c.fan_in_fan_out) throw new Error(`[peft] ${where}: fan_in_fan_out adapters (Conv1D bases) are not supported`);
  if (c.bias && c.bias !== 'none') throw new Error(`[peft] ${where}: bias '${c.bias}' is not supported (none)`);
  for (const k of ['rank_pattern', 'alpha_pattern'] as const)
    if (c[k] && Object.keys(c[k]!).length) throw new Error(`[peft] ${where}: per-module ${k} is not supported yet`);
  return c;
}

/** PEFT's name for an engine Linear path (`language_model.model.layers.0.self_attn.q_proj`) + lora_A/B. */
export function peftLoraName(linearPath: string, which: 'A' | 'B'): string {
  if (!linearPath.startsWith('language_model.model.')) throw new Error(`[peft] no reference name for '${linearPath}' (language model layers only)`);
  return `${PEFT_PREFIX}${linearPath.slice('language_model.'.length)}.lora_${which}.weight`;
}

/** The engine Linear path and side of a PEFT lora tensor name, or null for other names. */
export function parsePeftLoraName(name: string): { path: string; which: 'A' | 'B' } | null {
  const m = /^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(name);
  if (!m) return null;
  const c = canonicalName(m[1] + '.weight');
  return c ? { path: c.slice(0, -'.weight'.length), which: m[2] as 'A' | 'B' } : null;
}

/** Engine parameter name of a non-LoRA trainable as the reference saves it (`base_model.model.model.mm_projector.0.weight`). */
export function nonLoraName(name: string): string | null {
  return canonicalName(name.startsWith(PEFT_PREFIX) ? name.slice(PEFT_PREFIX.length) : name);
}

function readF32(src: TensorSource, name: string): Tensor {
  return fromTypedArray(src.readAsFloat32(name), src.info(name).shape);
}

/** The adapter's A/B pairs by engine Linear path (float32 host tensors; the caller disposes them). */
export function readAdapterPairs(dir: string): Map<string, { A: Tensor; B: Tensor }> {
  const file = findWeightFile(dir, ADAPTER_WEIGHTS_STEM);
  if (!file) throw new Error(`[peft] ${dir}: no ${ADAPTER_WEIGHTS_STEM}.safetensors (or .bin)`);
  const src = readTensorFile(file);
  const half = new Map<string, { A?: Tensor; B?: Tensor }>();
  try {
    for (const n of src.names()) {
      const p = parsePeftLoraName(n);
      if (!p) throw new Error(`[peft] ${file}: '${n}' is not a LoRA tensor name (…lora_A.weight / …lora_B.weight)`);
      const e = half.get(p.path) ?? {};
      e[p.which] = readF32(src, n);
      half.set(p.path, e);
    }
  } catch (e) {
    for (const v of half.values()) [v.A, v.B].forEach((t) => t?.dispose());
    throw e;
  } finally {
    src.close();
  }
  const out = new Map<string, { A: Tensor; B: Tensor }>();
  for (const [p, v] of half) {
    if (!v.A || !v.B) {
      for (const w of half.values()) [w.A, w.B].forEach((t) => t?.dispose());
      throw new Error(`[peft] ${file}: '${p}' has lora_${v.A ? 'A' : 'B'} without lora_${v.A ? 'B' : 'A'}`);
    }
    out.set(p, { A: v.A, B: v.B });
  }
  return out;
}

/** Load `non_lora_trainables` of an adapter directory into the model (no-op when absent); returns the names. */
export function loadNonLoraTrainables(model: LlavaForConditionalGeneration, dir: string): string[] {
  const file = findWeightFile(dir, NON_LORA_STEM);
  if (!file) return [];
  const src = readTensorFile(file);
  try {
    const loaded: string[] = [];
    loadWeights(
      model,
      [
        {
          src,
          rename: (n) => {
            const c = nonLoraName(n);
            if (c) loaded.push(c);
            return c;
          },
        },
      ],
      { allowMissing: () => true },
    );
    return loaded;
  } catch (e) {
    throw new Error(`[peft] ${file}: ${(e as Error).message}`);
  } finally {
    src.close();
  }
}

/**
 * Apply a PEFT LoRA directory to a loaded base model as the reference's loader does: non-LoRA trainables
 * first, then every adapter merged into its (dense) weight. Returns what was done, for messages.
 */
export function applyPeftAdapter(model: LlavaForConditionalGeneration, dir: string): { merged: number; nonLora: number; config: PeftLoraConfig } {
  const config = readAdapterConfig(dir);
  const layers = new Map<string, Linear>(linearLayers(model));
  const pairs = readAdapterPairs(dir);
  try {
    for (const p of pairs.keys())
      if (!layers.has(p)) throw new Error(`[peft] ${dir}: the adapter targets '${p}', which is not a Linear layer of this model`);
    const nonLora = loadNonLoraTrainables(model, dir);
    for (const [p, { A, B }] of pairs) {
      const r = A.shape[0];
      const scale = config.use_rslora ? config.lora_alpha / Math.sqrt(r) : config.lora_alpha / r;
      noGrad(() => mergeIntoWeight(layers.get(p)!, A, B, scale));
    }
    return { merged: pairs.size, nonLora: nonLora.length, config };
  } finally {
    for (const v of pairs.values()) [v.A, v.B].forEach((t) => t.dispose());
  }
}
