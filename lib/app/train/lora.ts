// lora.ts — LoRA (and QLoRA-style quantized-base) training for stage 2, as the reference's train.py does
// with --lora_enable (docs/reference.md §5): every Linear of the language model except lm_head gets an
// adapter (find_all_linear_names; --lora-target narrows it to leaf names such as q_proj,v_proj), the rest of
// the language model is frozen, the projector trains fully, optionally at its own learning rate
// (--mm-projector-lr: its own AdamW groups, as the reference's optimizer does), and --bits 8|4 stores the
// frozen targets as int8 / NF4 (lib/ops/quant.ts) before the adapters go on.
//
// Saving follows the reference's LoRA output: adapter_config.json (PEFT LoraConfig), the adapters in
// PEFT's names in adapter_model.safetensors, the other trainable weights (the projector) in
// non_lora_trainables.safetensors (the reference writes non_lora_trainables.bin with the same names), and
// the base's config / tokenizer files. `saveWeights` and `loadPartialWeights` here take the trainer's
// calls: with adapters on the model they write / read that layout (a resumed LoRA run reloads its
// adapters), without they are train_state.ts's.
import * as fs from 'fs';
import * as path from 'path';
import type { Tensor } from '../../core/tensor';
import { noGrad } from '../../core/autograd';
import { tidy } from '../../core/memory';
import { preserveRandomState } from '../../core/recompute';
import { copyInto, to } from '../../ops';
import { Generator } from '../../ops/creation';
import type { ParamGroup } from '../../optim/adamw';
import { Linear } from '../../nn/layers';
import { addLora, linearLayers, loraTensors } from '../../nn/lora';
import { languageLinears, quantizeLanguageModel } from '../../models/quantize';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import { loadLlava } from '../../models/loader';
import {
  applyPeftAdapter,
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_STEM,
  NON_LORA_STEM,
  peftLoraName,
  readAdapterPairs,
  loadNonLoraTrainables,
  type PeftLoraConfig,
} from '../../models/peft';
import { writeSafetensors, type TensorToWrite } from '../../io/safetensors';
import { writeFileAtomic } from '../util/files';
import { paramGroups as plainParamGroups } from './param_groups';
import * as full from './train_state';

/** The options of a LoRA run (options.ts names). */
export interface LoraRunOptions {
  stage: 1 | 2;
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  loraTarget?: string;
  bits: number;
  seed: number;
}

/** The reference's find_all_linear_names: the distinct leaf names of those layers. */
export function allLinearNames(model: LlavaForConditionalGeneration): string[] {
  return [...new Set(languageLinears(model).map(([p]) => p.slice(p.lastIndexOf('.') + 1)))].sort();
}

/** Layers carrying an adapter, with their paths. */
export function loraLayers(model: LlavaForConditionalGeneration): [string, Linear][] {
  return linearLayers(model).filter(([, l]) => l.lora);
}

/**
 * Quantize (--bits) and attach adapters for a LoRA run; call after model.setStage. Returns the target
 * leaf names, or null when LoRA is off (--lora-r 0).
 */
export function setupLora(model: LlavaForConditionalGeneration, o: LoraRunOptions, log: (m: string) => void): string[] | null {
  if (o.loraR === 0) {
    if (o.bits !== 16) throw new Error(`[train] --bits ${o.bits} needs LoRA (--lora-r > 0): a quantized base cannot be trained itself`);
    return null;
  }
  if (o.stage !== 2) throw new Error('[train] LoRA is for stage 2 (finetune); stage 1 trains the projector alone');
  const all = allLinearNames(model);
  const targets = o.loraTarget
    ? [
        ...new Set(
          o.loraTarget
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean),
        ),
      ].sort()
    : all;
  const unknown = targets.filter((t) => !all.includes(t));
  if (unknown.length) throw new Error(`[train] --lora-target ${unknown.join(', ')}: not a linear layer of the language model (${all.join(', ')})`);
  if (!targets.length) throw new Error('[train] --lora-target names no layer');
  model.lm.requiresGrad(false);
  const layers = languageLinears(model).filter(([p]) => targets.includes(p.slice(p.lastIndexOf('.') + 1)));
  const gen = new Generator(o.seed);
  preserveRandomState(gen); // a recomputed layer (--gradient-checkpointing) draws the same dropout masks
  const { before, after } = o.bits !== 16 ? quantizeLanguageModel(model, o.bits === 8 ? 'int8' : 'nf4', layers) : { before: 0, after: 0 };
  for (const [, l] of layers) addLora(l, { r: o.loraR, alpha: o.loraAlpha, dropout: o.loraDropout }, gen);
  model.train(); // dropout on, whatever mode the model was left in
  const n = layers.reduce((a, [, l]) => a + (loraTensors(l)!.A.numel + loraTensors(l)!.B.numel), 0);
  log(
    `[train] LoRA r ${o.loraR}, alpha ${o.loraAlpha}, dropout ${o.loraDropout} on ${layers.length} layers (${targets.join(', ')}): ${n} adapter parameters`,
  );
  if (o.bits !== 16)
    log(
      `[train] frozen targets stored as ${o.bits === 8 ? 'int8' : 'NF4'}: ${(before / 2 ** 20).toFixed(1)} MiB -> ${(after / 2 ** 20).toFixed(1)} MiB`,
    );
  return targets;
}

/** AdamW groups: the plain decay split, with the projector in groups of its own at mmProjectorLr. */
export function paramGroups(named: [string, Tensor][], weightDecay: number, o: { lr?: number; mmProjectorLr?: number } = {}): ParamGroup[] {
  if (o.mmProjectorLr === undefined) return plainParamGroups(named, weightDecay);
  if (!(o.lr! > 0)) throw new Error('[train] --mm-projector-lr needs a positive --lr');
  const isProj = ([n]: [string, Tensor]): boolean => n.startsWith('multi_modal_projector.');
  const proj = plainParamGroups(named.filter(isProj), weightDecay).map((g) => ({ ...g, lrScale: o.mmProjectorLr! / o.lr! }));
  return [
    ...plainParamGroups(
      named.filter((e) => !isProj(e)),
      weightDecay,
    ),
    ...proj,
  ].filter((g) => g.params.length > 0);
}

function adapterConfig(model: LlavaForConditionalGeneration, baseDir: string | undefined): PeftLoraConfig {
  const layers = loraLayers(model);
  const s = layers[0][1].lora!;
  const targets = [...new Set(layers.map(([p]) => p.slice(p.lastIndexOf('.') + 1)))].sort();
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r: s.r,
    lora_alpha: s.alpha,
    lora_dropout: s.dropout,
    target_modules: targets,
    base_model_name_or_path: baseDir ?? null,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    use_rslora: s.rslora,
    modules_to_save: null,
    layers_to_transform: null,
    rank_pattern: {},
    alpha_pattern: {},
  };
}

/** The adapters in PEFT's names, and the other trainable weights in the reference's non_lora_trainables names. */
export function peftTensors(model: LlavaForConditionalGeneration): { adapters: Map<string, TensorToWrite>; nonLora: Map<string, TensorToWrite> } {
  const adapters = new Map<string, TensorToWrite>();
  for (const [p, l] of loraLayers(model)) {
    const t = loraTensors(l)!;
    adapters.set(peftLoraName(p, 'A'), full.toWritable(t.A));
    adapters.set(peftLoraName(p, 'B'), full.toWritable(t.B));
  }
  const nonLora = new Map<string, TensorToWrite>();
  for (const [n, p] of model.namedParameters())
    if (p.requiresGrad && !/\.lora_[AB]\.weight$/.test(n)) nonLora.set('base_model.model.' + full.originalName(n), full.toWritable(p));
  return { adapters, nonLora };
}

/** Stage-2 weights: the PEFT layout when the model carries adapters, else train_state.ts's saveWeights. */
export function saveWeights(
  model: LlavaForConditionalGeneration,
  dir: string,
  stage: 1 | 2,
  baseDir?: string,
  patch: full.ModelFilesPatch | full.ModelFilesPatch['config'] = {},
): void {
  if (!loraLayers(model).length) return full.saveWeights(model, dir, stage, baseDir, patch);
  fs.mkdirSync(dir, { recursive: true });
  if (baseDir) full.copyModelFiles(baseDir, dir, patch);
  const { adapters, nonLora } = peftTensors(model);
  writeSafetensors(path.join(dir, ADAPTER_WEIGHTS_STEM + '.safetensors'), adapters, { format: 'pt' });
  writeSafetensors(path.join(dir, NON_LORA_STEM + '.safetensors'), nonLora, { format: 'pt' });
  writeFileAtomic(path.join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(adapterConfig(model, baseDir), null, 2) + '\n');
}

/** Resume: a LoRA model reloads its adapters and non-LoRA trainables from the checkpoint folder of `file`. */
export function loadPartialWeights(model: LlavaForConditionalGeneration, file: string, opts: { only?: 'projector' } = {}): string[] {
  const layers = new Map(loraLayers(model));
  if (!layers.size) return full.loadPartialWeights(model, file, opts);
  const dir = path.dirname(file);
  const pairs = readAdapterPairs(dir);
  try {
    for (const [p, l] of layers) {
      const src = pairs.get(p);
      if (!src) throw new Error(`[checkpoint] ${dir}: no adapter for '${p}'`);
      const dst = loraTensors(l)!;
      // Host float32 copies onto the adapters' device and dtype.
      noGrad(() =>
        tidy(() => {
          copyInto(dst.A, to(src.A, dst.A.device));
          copyInto(dst.B, to(src.B, dst.B.device));
        }),
      );
    }
  } finally {
    for (const v of pairs.values()) [v.A, v.B].forEach((t) => t.dispose());
  }
  return [...layers.keys(), ...loadNonLoraTrainables(model, dir)];
}

/**
 * The reference's scripts/merge_lora_weights.py: load `baseDir`, merge the adapter of `adapterDir` into it,
 * write a complete model folder to `outDir` (weights in the base's naming; config / tokenizer files from the
 * adapter folder when it has them, else the base's). Returns the merged layer count.
 */
export function mergeLoraFolder(adapterDir: string, baseDir: string, outDir: string, log: (m: string) => void = () => {}): number {
  if (path.resolve(outDir) === path.resolve(baseDir) || path.resolve(outDir) === path.resolve(adapterDir))
    throw new Error('[merge-lora] --save-model-path must be a new folder (not the base or the adapter)');
  const model = loadLlava(baseDir, { dtype: 'float32', device: 'cpu' });
  try {
    const r = applyPeftAdapter(model, adapterDir);
    log(`[merge-lora] merged ${r.merged} adapters (r ${r.config.r}, alpha ${r.config.lora_alpha}) and ${r.nonLora} non-LoRA tensors into ${baseDir}`);
    const side = fs.existsSync(path.join(adapterDir, 'config.json')) ? adapterDir : baseDir;
    full.saveWeights(model, outDir, 2, side);
    log(`[merge-lora] wrote ${outDir}`);
    return r.merged;
  } finally {
    model.dispose();
  }
}
