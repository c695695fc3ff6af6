// loader.ts — fromPretrained: configs and weights of llava-hf, original llava_llama (+ a separate
// CLIP directory), and plain CLIP / LLaMA checkpoints, in safetensors or PyTorch .bin (single or sharded;
// io/state_dict.ts picks the format).
//
// Every checkpoint name is mapped to this engine's names (the llava-hf on-disk layout); each
// parameter is read tensor by tensor, cast on the CPU to the requested dtype and copied to the
// device, so a shard never sits in memory whole. Missing, unexpected and mis-shaped tensors are
// errors that name them; a few known-unused names (rotary inv_freq, CLIP's text tower) are skipped.
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../core/tensor';
import { DType, Device } from '../core/dtype';
import { noGrad } from '../core/autograd';
import { checkOptions, optionKeys } from '../options';
import { writeBytes, copyBytes } from '../core/dispatch';
import { to } from '../ops/view';
import { rand, Generator } from '../ops/creation';
import { sub, mul, copyInto } from '../ops/elementwise';
import type { TensorSource } from '../io/safetensors';
import { openStateDict } from '../io/state_dict';
import { Module } from '../nn/module';
import { LlavaForConditionalGeneration, LlavaConfig } from './llava';
import { CLIPVisionModel, CLIPVisionConfig } from './clip';
import { LlamaForCausalLM, LlamaConfig, ropeLinearFactor } from './llama';
import { readJson } from '../io/json';

const readConfig = (file: string): Record<string, unknown> => readJson(file, 'config', 'fromPretrained', { object: true });

export interface LoadOptions {
  dtype?: DType;
  device?: Device;
  /** CLIP directory for original llava_llama checkpoints (default: mm_vision_tower if it is a local dir). */
  visionTower?: string;
  /** Called per tensor for progress display. */
  onProgress?: (done: number, total: number) => void;
  /** Seed for initialising a projector the checkpoint lacks (original-style stage-1 start). */
  seed?: number;
  /** Non-fatal notes (e.g. a freshly initialised projector); default prints to stderr. */
  onWarning?: (msg: string) => void;
}
const LOAD_KEYS = optionKeys<LoadOptions>({ dtype: true, device: true, visionTower: true, onProgress: true, seed: true, onWarning: true });

const ST_DTYPE: Record<string, DType> = {
  F32: 'float32',
  F64: 'float64',
  BF16: 'bfloat16',
  F16: 'float16',
  I64: 'int64',
  I32: 'int32',
  U8: 'uint8',
  BOOL: 'bool',
};

/** Map a checkpoint tensor name to this engine's name, or null to skip it. */
export function canonicalName(name: string): string | null {
  if (/rotary_emb\.inv_freq$/.test(name)) return null;
  let m: RegExpExecArray | null;
  // newer transformers in-memory names
  if (name.startsWith('model.language_model.')) return 'language_model.model.' + name.slice('model.language_model.'.length);
  if (name.startsWith('model.multi_modal_projector.')) return name.slice('model.'.length);
  if (name.startsWith('model.vision_tower.vision_model.')) return name.slice('model.'.length);
  // original llava_llama names
  if ((m = /^model\.mm_projector\.(\d+)\.(weight|bias)$/.exec(name))) return `multi_modal_projector.linear_${Number(m[1]) / 2 + 1}.${m[2]}`;
  if ((m = /^model\.mm_projector\.(weight|bias)$/.exec(name))) return `multi_modal_projector.linear_1.${m[1]}`;
  if (name.startsWith('model.vision_tower.vision_tower.vision_model.'))
    return 'vision_tower.vision_model.' + name.slice('model.vision_tower.vision_tower.vision_model.'.length);
  if (name.startsWith('model.')) return 'language_model.' + name;
  if (name === 'lm_head.weight') return 'language_model.lm_head.weight';
  // plain CLIP checkpoints
  if (name.startsWith('vision_model.')) return 'vision_tower.' + name;
  if (name.startsWith('text_model.') || /^(logit_scale|text_projection|visual_projection)/.test(name)) return null;
  return name;
}

/** Copy checkpoint tensors into a module's parameters, checking names and shapes. */
export function loadWeights(
  module: Module,
  sources: { src: TensorSource; rename: (n: string) => string | null }[],
  opts: { onProgress?: (d: number, t: number) => void; allowMissing?: (name: string) => boolean } = {},
): string[] {
  const params = new Map(module.namedParameters());
  const missing = new Set(params.keys());
  const unexpected: string[] = [];
  const todo: [TensorSource, string, string][] = [];
  for (const { src, rename } of sources)
    for (const n of src.names()) {
      const c = rename(n);
      if (c === null) continue;
      if (!params.has(c)) unexpected.push(n);
      else todo.push([src, n, c]);
    }
  if (unexpected.length)
    throw new Error(
      `[fromPretrained] unexpected tensors in checkpoint: ${unexpected.slice(0, 8).join(', ')}${unexpected.length > 8 ? ` (+${unexpected.length - 8} more)` : ''}`,
    );
  let done = 0;
  for (const [src, n, c] of todo) {
    const p = params.get(c)!;
    const info = src.info(n);
    if (info.shape.join() !== p.shape.join())
      throw new Error(`[fromPretrained] tensor '${n}' has shape [${info.shape.join(', ')}], model expects [${p.shape.join(', ')}]`);
    const dt = ST_DTYPE[info.dtype];
    if (!dt) throw new Error(`[fromPretrained] tensor '${n}' has unsupported dtype ${info.dtype}`);
    const raw = src.read(n);
    const host = Tensor.empty(info.shape, dt, 'cpu');
    try {
      writeBytes(host, raw.data);
      const cast = dt === p.dtype ? host : noGrad(() => to(host, p.dtype));
      copyBytes(p, cast);
      if (cast !== host) cast.dispose();
    } finally {
      host.dispose();
    }
    missing.delete(c);
    opts.onProgress?.(++done, todo.length);
  }
  const stillMissing = [...missing].filter((n) => !opts.allowMissing?.(n));
  if (stillMissing.length)
    throw new Error(
      `[fromPretrained] missing tensors: ${stillMissing.slice(0, 8).join(', ')}${stillMissing.length > 8 ? ` (+${stillMissing.length - 8} more)` : ''}`,
    );
  return [...missing];
}

/** PyTorch's nn.Linear default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. */
function initProjector(model: LlavaForConditionalGeneration, seed: number): void {
  const g = new Generator(seed);
  noGrad(() => {
    for (const lin of model.projector.linears) {
      const bound = 1 / Math.sqrt(lin.inFeatures);
      for (const p of [lin.weight, lin.bias]) {
        if (!p) continue;
        const u = rand(p.shape, { dtype: 'float32', device: p.device, generator: g });
        const c = sub(u, 0.5);
        const r = mul(c, 2 * bound);
        copyInto(p, r);
        [u, c, r].forEach((t) => t.dispose());
      }
    }
  });
}

function checkSizeKey(v: unknown, k: string, which: string): void {
  if (typeof v !== 'number') throw new Error(`[fromPretrained] ${which} config lacks '${k}'`);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`[fromPretrained] ${which} config key '${k}' must be a non-negative integer, got ${v}`);
}
function visionConfigFrom(cfg: Record<string, unknown>): CLIPVisionConfig {
  const v = (cfg.vision_config ?? cfg) as CLIPVisionConfig;
  for (const k of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'image_size', 'patch_size'] as const)
    checkSizeKey(v[k], k, 'vision');
  const type = String((v as unknown as Record<string, unknown>).model_type ?? 'clip_vision_model');
  if (!['clip_vision_model', 'clip'].includes(type))
    throw new Error(`[fromPretrained] the vision tower has model_type '${type}'; this tower is CLIP's ViT (clip_vision_model)`);
  if (v.hidden_act !== undefined && v.hidden_act !== 'quick_gelu' && v.hidden_act !== 'gelu')
    throw new Error(`[fromPretrained] the vision tower has hidden_act '${v.hidden_act}'; CLIP's ViT uses quick_gelu or gelu`);
  return v;
}
function textConfigFrom(cfg: Record<string, unknown>): LlamaConfig {
  const t = cfg as unknown as LlamaConfig;
  for (const k of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'] as const)
    checkSizeKey(t[k], k, 'text');
  checkTextArchitecture(cfg);
  return t;
}

/** Refuses a language model this LLaMA decoder would run wrongly: another architecture, another activation,
 *  a RoPE scaling other than linear, or Mistral's sliding window where it would cut the context. */
function checkTextArchitecture(cfg: Record<string, unknown>): void {
  const type = String(cfg.model_type ?? 'llama');
  const fail = (what: string): never => {
    throw new Error(`[fromPretrained] the language model has ${what}; this decoder is LLaMA's (Vicuna, LLaMA-2, Mistral without a sliding window)`);
  };
  if (!['llama', 'llava_llama', 'mistral', 'llava_mistral'].includes(type)) fail(`model_type '${type}'`);
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu') fail(`hidden_act '${String(act)}'`);
  const window = cfg.sliding_window;
  const maxPos = Number(cfg.max_position_embeddings ?? 0);
  if (typeof window === 'number' && window < maxPos) fail(`a sliding attention window of ${window} (max_position_embeddings ${maxPos})`);
  try {
    ropeLinearFactor(cfg as unknown as LlamaConfig);
  } catch (e) {
    throw new Error(`[fromPretrained] ${(e as Error).message.replace('[llama] ', '')}`);
  }
}

type Sources = { src: TensorSource; rename: (n: string) => string | null }[];
const TEXT = 'language_model.model.';
const VISION = 'vision_tower.vision_model.';

/**
 * Check a config's sizes against the checkpoint's tensor list (names and shapes from the headers)
 * before any parameter is allocated: a config with num_hidden_layers 1e7 would otherwise build a
 * 20 GB model before the first missing tensor is noticed. Errors name the config key.
 */
export function checkConfigAgainstCheckpoint(sources: Sources, text: LlamaConfig | null, vision: CLIPVisionConfig | null): void {
  const shapes = new Map<string, number[]>();
  for (const { src, rename } of sources)
    for (const n of src.names()) {
      const c = rename(n);
      if (c !== null) shapes.set(c, src.info(n).shape);
    }
  const layers = (re: RegExp): number => {
    let n = 0;
    for (const k of shapes.keys()) {
      const m = re.exec(k);
      if (m) n = Math.max(n, Number(m[1]) + 1);
    }
    return n;
  };
  const expect = (which: string, key: string, value: number, actual: number | undefined, what: string): void => {
    if (actual !== undefined && value !== actual)
      throw new Error(`[fromPretrained] ${which} config key '${key}' is ${value}, but the checkpoint ${what} ${actual}`);
  };
  if (text) {
    expect('text', 'num_hidden_layers', text.num_hidden_layers, layers(/^language_model\.model\.layers\.(\d+)\./), 'holds layers numbering');
    const emb = shapes.get(TEXT + 'embed_tokens.weight');
    expect('text', 'vocab_size', text.vocab_size, emb?.[0], 'embed_tokens.weight has rows:');
    expect('text', 'hidden_size', text.hidden_size, emb?.[1], 'embed_tokens.weight has columns:');
    const gate = shapes.get(TEXT + 'layers.0.mlp.gate_proj.weight');
    expect('text', 'intermediate_size', text.intermediate_size, gate?.[0], 'layers.0.mlp.gate_proj.weight has rows:');
  }
  if (vision) {
    expect(
      'vision',
      'num_hidden_layers',
      vision.num_hidden_layers,
      layers(/^vision_tower\.vision_model\.encoder\.layers\.(\d+)\./),
      'holds layers numbering',
    );
    const patch = shapes.get(VISION + 'embeddings.patch_embedding.weight');
    expect('vision', 'hidden_size', vision.hidden_size, patch?.[0], 'patch_embedding.weight has channels:');
    expect('vision', 'patch_size', vision.patch_size, patch?.[2], 'patch_embedding.weight has a kernel of');
    const fc1 = shapes.get(VISION + 'encoder.layers.0.mlp.fc1.weight');
    expect('vision', 'intermediate_size', vision.intermediate_size, fc1?.[0], 'layers.0.mlp.fc1.weight has rows:');
  }
}

/** Open the checkpoint(s), run `check` on them, then `build`; the files are closed if either fails. */
function openChecked<M>(sources: () => Sources, check: (s: Sources) => void, build: () => M): { sources: Sources; model: M } {
  const opened: Sources = [];
  try {
    for (const s of sources()) opened.push(s);
    check(opened);
    return { sources: opened, model: build() };
  } catch (e) {
    for (const { src } of opened) src.close();
    throw e;
  }
}

/** What marks a config as LLaVA-1.6 and later (tiled "anyres" images with newline tokens), or null. Loaded
 *  as LLaVA-1.5, such a checkpoint would see every image as one square tile: wrong answers, no error. */
function llavaNextSign(cfg: Record<string, unknown>): string | null {
  const type = String(cfg.model_type ?? '');
  if (/^llava_(next|onevision)/.test(type)) return `model_type ${type}`;
  const aspect = String(cfg.image_aspect_ratio ?? '');
  if (aspect.startsWith('anyres')) return `image_aspect_ratio ${aspect}`;
  const merge = String(cfg.mm_patch_merge_type ?? 'flat');
  if (merge !== 'flat') return `mm_patch_merge_type ${merge}`;
  return null;
}

/** Read a LLaVA config (llava-hf or original llava_llama) into LlavaConfig. */
export function readLlavaConfig(dir: string, visionTower?: string): { config: LlavaConfig; visionDir: string | null } {
  const cfg = readConfig(path.join(dir, 'config.json'));
  const next = llavaNextSign(cfg);
  if (next)
    throw new Error(
      `[fromPretrained] ${dir} is a LLaVA-1.6 / LLaVA-NeXT checkpoint (${next}): its "anyres" image tiling and ` +
        'image_newline tokens are not implemented; LLaVA-1.5 and earlier checkpoints load',
    );
  if (cfg.model_type === 'llava' || cfg.text_config) {
    const text = textConfigFrom(cfg.text_config as Record<string, unknown>);
    const fl = cfg.vision_feature_layer;
    if (Array.isArray(fl)) throw new Error('[fromPretrained] a list of vision_feature_layer values is not supported');
    return {
      config: {
        vision: visionConfigFrom(cfg),
        text,
        projectorType: 'mlp2x_gelu',
        projectorBias: cfg.multimodal_projector_bias !== false,
        imageTokenIndex: Number(cfg.image_token_index ?? cfg.image_token_id ?? 32000),
        visionFeatureLayer: Number(fl ?? -2),
        visionFeatureSelectStrategy: String(cfg.vision_feature_select_strategy ?? 'default'),
        maxLength: Number(text.max_position_embeddings ?? 2048),
        // The HF processor center-crops (no pad-to-square), as the fixture's pixel values show.
        imageAspectRatio: 'square',
        format: 'llava-hf',
      },
      visionDir: null,
    };
  }
  if (cfg.model_type === 'llava_llama' || cfg.mm_vision_tower) {
    const vt = visionTower ?? String(cfg.mm_vision_tower ?? '');
    const vdir =
      vt && fs.existsSync(path.join(vt, 'config.json')) ? vt : fs.existsSync(path.join(dir, vt, 'config.json')) ? path.join(dir, vt) : null;
    if (!vdir)
      throw new Error(`[fromPretrained] original LLaVA checkpoint needs its CLIP vision tower directory: pass visionTower (config names '${vt}')`);
    return {
      config: {
        vision: visionConfigFrom(readConfig(path.join(vdir, 'config.json'))),
        text: textConfigFrom(cfg),
        projectorType: String(cfg.mm_projector_type ?? 'linear'),
        projectorBias: true,
        imageTokenIndex: -200,
        visionFeatureLayer: Number(cfg.mm_vision_select_layer ?? -2),
        visionFeatureSelectStrategy: String(cfg.mm_vision_select_feature ?? 'patch'),
        maxLength: Number(cfg.tokenizer_model_max_length ?? 2048),
        imageAspectRatio: cfg.image_aspect_ratio === 'pad' ? 'pad' : 'square',
        format: 'llava_llama',
      },
      visionDir: vdir,
    };
  }
  throw new Error(`[fromPretrained] ${dir}/config.json is not a LLaVA config (model_type ${String(cfg.model_type)})`);
}

/** Load a LLaVA checkpoint directory (llava-hf or original). */
export function loadLlava(dir: string, opts: LoadOptions = {}): LlavaForConditionalGeneration {
  checkOptions('fromPretrained', opts, LOAD_KEYS);
  const { config, visionDir } = readLlavaConfig(dir, opts.visionTower);
  const { sources, model } = openChecked(
    () => {
      const out: Sources = [{ src: openStateDict(dir), rename: canonicalName }];
      if (visionDir) out.push({ src: openStateDict(visionDir), rename: (n) => (n.startsWith('vision_model.') ? canonicalName(n) : null) });
      return out;
    },
    (s) => checkConfigAgainstCheckpoint(s, config.text, config.vision),
    () => new LlavaForConditionalGeneration(config, { dtype: opts.dtype ?? 'float32', device: opts.device }),
  );
  try {
    // post_layernorm is unused by LLaVA and absent from some exports. An original-style directory
    // assembled for stage 1 (Vicuna + mm_* config keys) has no projector yet: it starts from
    // PyTorch's default initialisation, as initialize_vision_modules does.
    const isProj = (n: string): boolean => n.startsWith('multi_modal_projector.');
    const allowProj = config.format === 'llava_llama';
    const missing = loadWeights(model, sources, {
      onProgress: opts.onProgress,
      allowMissing: (n) => n.includes('post_layernorm') || (allowProj && isProj(n)),
    });
    const projMissing = missing.filter(isProj);
    const projTotal = model.projector.parameters().length;
    if (projMissing.length && projMissing.length !== projTotal)
      throw new Error(`[fromPretrained] missing tensors: ${projMissing.join(', ')} (the checkpoint has only part of the projector)`);
    if (projMissing.length) {
      initProjector(model, opts.seed ?? 0);
      (opts.onWarning ?? ((m: string) => process.stderr.write(m + '\n')))(
        `[fromPretrained] ${dir} has no projector weights: initialised ${model.config.projectorType} with PyTorch's default init (seed ${opts.seed ?? 0})`,
      );
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/**
 * A checkpoint of one sub-model (a plain CLIP or LLaMA repo): `attach` registers the model under the
 * names its checkpoint uses on an empty holder module, so the canonical renaming applies as for LLaVA.
 */
function loadSubmodel<M>(dir: string, opts: LoadOptions, check: (s: Sources) => void, attach: (holder: Module) => M): M {
  const { sources, model: holder } = openChecked(
    () => [{ src: openStateDict(dir), rename: canonicalName }],
    check,
    () => new Module(),
  );
  try {
    const m = attach(holder);
    loadWeights(holder, sources, { onProgress: opts.onProgress });
    return m;
  } catch (e) {
    holder.dispose();
    throw e;
  }
}

/** Load a plain CLIP vision checkpoint (CLIPModel or CLIPVisionModel). */
export function loadClipVision(dir: string, opts: LoadOptions = {}): CLIPVisionModel {
  checkOptions('loadClipVision', opts, LOAD_KEYS);
  const cfg = visionConfigFrom(readConfig(path.join(dir, 'config.json')));
  return loadSubmodel(
    dir,
    opts,
    (s) => checkConfigAgainstCheckpoint(s, null, cfg),
    (holder) =>
      holder
        .registerModule('vision_tower', new Module())
        .registerModule('vision_model', new CLIPVisionModel(cfg, { dtype: opts.dtype, device: opts.device })),
  );
}

/** Load a plain LLaMA checkpoint (LlamaForCausalLM). */
export function loadLlama(dir: string, opts: LoadOptions = {}): LlamaForCausalLM {
  checkOptions('loadLlama', opts, LOAD_KEYS);
  const cfg = textConfigFrom(readConfig(path.join(dir, 'config.json')));
  return loadSubmodel(
    dir,
    opts,
    (s) => checkConfigAgainstCheckpoint(s, cfg, null),
    (holder) => holder.registerModule('language_model', new LlamaForCausalLM(cfg, { dtype: opts.dtype, device: opts.device })),
  );
}

export const fromPretrained = loadLlava;
