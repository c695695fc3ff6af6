// session.ts — one loaded LLaVA checkpoint together with what turns user input into model input: the part
// transformers' LlavaProcessor plays (tokenizer + CLIP image processor), plus the model, its device and
// dtype, the conversation template and the image aspect mode. `llava chat`, `llava serve`, `llava verify`,
// the benchmark answerer and the demo all open their checkpoint through here.
//
// Decisions:
// - The CLIP tower of an original-layout (`llava_llama`) checkpoint is found in one place
//   (resolveVisionDir, and resolveVision with the processor config): the --vision-tower flag when given, else the config's mm_vision_tower (an existing directory, or one
//   relative to the checkpoint), exactly as the loader finds the tower's weights. The image processor
//   config then comes from the checkpoint's own preprocessor_config.json, else the tower's, else CLIP
//   defaults at the tower's image size (resolveProcessorConfig). Training resolves the same way, so every
//   entry point preprocesses a given image into the same pixels.
// - Template default, first rule that applies: the folder's own record (config.json
//   `conversation_template`, which our trainer writes: training_record.ts); for llava-hf checkpoints the
//   Jinja `chat_template` they ship (chat_template.ts; the pseudo template name `chat_template`), else the
//   hand-written `llava_hf`; original ones by model name as the reference CLI does (templateForModelName of
//   get_model_name_from_path). Callers with their own rule (the eval scripts' vicuna_v1) pass a template.
// - Aspect default: config.json `image_aspect_ratio` when it says 'pad' or 'square' (original checkpoints
//   carry it, process_images, docs/reference.md §2.2; our trainer writes it for llava-hf folders too); else
//   llava-hf checkpoints are preprocessed as HF's processor does (no pad-to-square).
// - The session remembers where each choice came from (templateSource, aspectSource; describe()), so chat and
//   serve can say which template and aspect they use.
// - The processor must produce the size the vision tower takes; load() checks it once on a 1x1 image and
//   preprocess() checks every image (a processor that resizes without cropping keeps the aspect ratio).
// - A session opened with load() owns its model and frees it in dispose(); one wrapped around an already
//   loaded model (fromModel) never frees it.
// - Pure file reading stays in image.ts (resolveProcessorConfig) so training's worker threads never pull
//   the model loader in; this module loads the native engine. Device/dtype checks are util/runtime.ts's.
import * as fs from 'fs';
import * as path from 'path';
import { keep } from '../../core/memory';
import { checkOptions, optionKeys } from '../../options';
import { tensor } from '../../ops/creation';
import type { Tensor } from '../../core/tensor';
import type { DType, Device } from '../../core/dtype';
import { loadLlava, readLlavaConfig } from '../../models/loader';
import { applyPeftAdapter, isAdapterDir } from '../../models/peft';
import { quantizeLanguageModel } from '../../models/quantize';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from './tokenizer';
import {
  CLIPImageProcessor,
  resolveProcessorConfig,
  type AspectMode,
  type ClipProcessorConfig,
  type ImageLimits,
  type PixelValues,
  type RgbImage,
} from './image';
import { buildPrompt, getTemplate, stopString, templateForModelName } from './conversation';
import { CHAT_TEMPLATE, readChatTemplate, renderJinjaPrompt, type JinjaTemplate, type PromptMessage } from './chat_template';
import { ASPECT_KEY, TEMPLATE_KEY, readTrainingRecord, type TrainingRecord } from './training_record';
import { checkRuntime } from '../util/runtime';

export { resolveProcessorConfig };

// ---------------------------------------------------------------------------------------------------------
// Names and defaults

/** The reference's get_model_name_from_path: the last path component, or the last two joined by '_' when
 *  the last one is a `checkpoint-*` directory. */
export function modelNameFromPath(modelPath: string): string {
  const parts = modelPath.replace(/[/\\]+$/, '').split(/[/\\]/);
  const last = parts[parts.length - 1] ?? '';
  return last.startsWith('checkpoint-') && parts.length > 1 ? `${parts[parts.length - 2]}_${last}` : last;
}

/** A choice and where it came from (for the line chat and serve print). */
export interface Choice<T> {
  value: T;
  source: string;
}

/** The Jinja template of a llava-hf checkpoint, or null (original checkpoints' tokenizers carry text-only
 *  templates, if any, which know nothing of images: those keep the reference's name rule). */
function llavaHfChatTemplate(model: LlavaForConditionalGeneration, dir: string): JinjaTemplate | null {
  return model.config.format === 'llava-hf' ? readChatTemplate(dir) : null;
}

/** The template a checkpoint gets when none is given, and why (see the header for the order). */
export function chooseTemplate(
  model: LlavaForConditionalGeneration,
  modelPath: string,
  rec: TrainingRecord = readTrainingRecord(modelPath),
): Choice<string> {
  if (rec.template) return { value: rec.template, source: `config.json ${TEMPLATE_KEY}` };
  if (model.config.format === 'llava-hf') {
    const jinja = llavaHfChatTemplate(model, modelPath);
    if (jinja) return { value: CHAT_TEMPLATE, source: `the Jinja chat_template of ${path.basename(jinja.file)}` };
    return { value: 'llava_hf', source: 'llava-hf format' };
  }
  const name = modelNameFromPath(path.resolve(modelPath));
  return { value: templateForModelName(name), source: `model name '${name}'` };
}

/** The chat template a loaded model gets by default (chooseTemplate's value). */
export function defaultTemplate(model: LlavaForConditionalGeneration, modelPath: string): string {
  return chooseTemplate(model, modelPath).value;
}

/** The aspect mode a checkpoint gets when none is given, and why. */
export function chooseAspect(model: LlavaForConditionalGeneration, modelPath?: string, rec?: TrainingRecord): Choice<AspectMode> {
  const r = rec ?? (modelPath !== undefined ? readTrainingRecord(modelPath) : undefined);
  if (r?.aspect) return { value: r.aspect, source: `config.json ${ASPECT_KEY}` };
  if (model.config.format === 'llava-hf') return { value: 'square', source: 'llava-hf processor: no padding' };
  return { value: model.config.imageAspectRatio ?? 'square', source: 'default' };
}

/** config.json's image_aspect_ratio when given (`modelPath`), else llava-hf's processor never pads (the
 *  fixture's pixel_values are the unpadded ones) and original checkpoints follow their loaded config. */
export function defaultAspect(model: LlavaForConditionalGeneration, modelPath?: string): AspectMode {
  return chooseAspect(model, modelPath).value;
}

// ---------------------------------------------------------------------------------------------------------
// The vision tower and its image processor

export interface VisionSetup {
  /** The CLIP directory of an original-layout checkpoint; null for llava-hf (the tower is inside). */
  visionDir: string | null;
  /** The tower's input size S (images are [3, S, S]). */
  imageSize: number;
  /** What CLIPImageProcessor is built from (see resolveProcessorConfig). */
  processorConfig: ClipProcessorConfig;
}

/** Where a checkpoint's vision tower is: `visionTower` (the --vision-tower flag) wins, else the config's
 *  mm_vision_tower, found as the loader finds it. Also the tower's input size. */
export function resolveVisionDir(modelDir: string, visionTower?: string): { visionDir: string | null; imageSize: number } {
  const { config, visionDir } = readLlavaConfig(modelDir, visionTower);
  return { visionDir, imageSize: config.vision.image_size };
}

/** Where a checkpoint's vision tower is and how its images are preprocessed: the one resolver every entry
 *  point (chat, serve, eval, train) uses. */
export function resolveVision(modelDir: string, visionTower?: string): VisionSetup {
  const { visionDir, imageSize } = resolveVisionDir(modelDir, visionTower);
  return { visionDir, imageSize, processorConfig: resolveProcessorConfig(modelDir, { visionDir, imageSize }) };
}

// ---------------------------------------------------------------------------------------------------------
// Session

/** Fails on a template name that is neither a hand-written template nor 'chat_template'. */
function checkTemplateName(name: string | undefined): void {
  if (name && name !== CHAT_TEMPLATE) getTemplate(name);
}

export interface SessionOptions {
  /** 'cpu' (default) or 'cuda'. Ignored by fromModel (the model's own). */
  device?: string;
  /** 'float32' (default), 'bfloat16' or 'float16'. Ignored by fromModel. */
  dtype?: string;
  /** Conversation template, or 'chat_template' for the checkpoint's Jinja one (default: chooseTemplate).
   *  Unknown names fail before the model loads. */
  template?: string;
  /** CLIP directory for original llava_llama checkpoints (default: the config's mm_vision_tower). */
  visionTower?: string;
  /** Image preprocessing: 'pad' (expand to square) or 'square' (crop); default defaultAspect. */
  aspect?: AspectMode;
  /** 'optional': a directory without a usable tokenizer still loads (`tokenizerOrNull` is then null). */
  tokenizer?: 'required' | 'optional';
  /** false: do not build and check the image processor at load (it is built on first use). */
  images?: boolean;
  /** `dir` is a LoRA adapter (adapter_config.json): load this base model and merge the adapter into it, as
   *  the reference's load_pretrained_model does for a LoRA model path with --model-base. */
  modelBase?: string;
  /** Store the language model's linear layers as int8 (per channel) / NF4 (per 64-block) after loading. */
  load8bit?: boolean;
  load4bit?: boolean;
}
const SESSION_KEYS = optionKeys<SessionOptions>({
  device: true,
  dtype: true,
  template: true,
  visionTower: true,
  aspect: true,
  tokenizer: true,
  images: true,
  modelBase: true,
  load8bit: true,
  load4bit: true,
});

/** The loading options of a session (what chat, serve, eval and verify pass through). */
export type WeightOptions = Pick<SessionOptions, 'modelBase' | 'load8bit' | 'load4bit'>;

/** What a command's options say about where and how the model loads (device, dtype, vision tower, weights). */
export type ModelLoadOptions = Pick<SessionOptions, 'device' | 'dtype' | 'visionTower'> & WeightOptions;

/** The ModelLoadOptions part of a command's options, nothing else. */
export function modelLoadOptions(o: ModelLoadOptions): ModelLoadOptions {
  const { device, dtype, visionTower, modelBase, load8bit, load4bit } = o;
  return { device, dtype, visionTower, modelBase, load8bit, load4bit };
}

/** Checks --model-base / --load-8bit / --load-4bit against `dir`; returns whether `dir` is an adapter. */
function checkWeightOptions(dir: string, o: SessionOptions): boolean {
  if (o.load8bit && o.load4bit) throw new Error('[session] --load-8bit and --load-4bit exclude each other');
  const adapter = isAdapterDir(dir);
  if (adapter && !o.modelBase)
    throw new Error(`[session] ${dir} holds a LoRA adapter (adapter_config.json): pass --model-base with the base model it was trained from`);
  if (!adapter && o.modelBase) throw new Error(`[session] --model-base was given but ${dir} has no adapter_config.json (not a LoRA adapter)`);
  if (o.modelBase && !fs.existsSync(path.join(o.modelBase, 'config.json')))
    throw new Error(`[session] --model-base ${o.modelBase} is not a model directory (no config.json)`);
  return adapter;
}

/** The base + adapter + quantization part of load(): the model, and a line saying what was done. */
function loadWeightsFor(dir: string, o: SessionOptions, dtype: DType, device: Device): { model: LlavaForConditionalGeneration; notes: string[] } {
  const adapter = checkWeightOptions(dir, o);
  const notes: string[] = [];
  const model = loadLlava(o.modelBase ?? dir, { dtype, device, visionTower: o.visionTower });
  try {
    if (adapter) {
      const r = applyPeftAdapter(model, dir);
      notes.push(`merged the LoRA adapter of ${dir} (${r.merged} layers, r ${r.config.r}, alpha ${r.config.lora_alpha}) into ${o.modelBase}`);
    }
    if (o.load8bit || o.load4bit) {
      const { before, after } = quantizeLanguageModel(model, o.load8bit ? 'int8' : 'nf4');
      notes.push(
        `language model linears stored as ${o.load8bit ? 'int8' : 'NF4'}: ${(before / 2 ** 20).toFixed(1)} MiB -> ${(after / 2 ** 20).toFixed(1)} MiB`,
      );
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, notes };
}

interface SessionParts {
  dir: string;
  model: LlavaForConditionalGeneration;
  tokenizer: Tokenizer | null;
  owned: boolean;
  device: Device;
  dtype: DType;
  template: Choice<string>;
  aspect: Choice<AspectMode>;
  record: TrainingRecord;
  chatTemplate: JinjaTemplate | null;
  vision: { visionDir: string | null; imageSize: number };
}

/** A loaded checkpoint: model, tokenizer, image processor, template and aspect mode. */
export class LlavaSession {
  readonly dir: string;
  readonly model: LlavaForConditionalGeneration;
  readonly device: Device;
  readonly dtype: DType;
  /** The conversation template name ('chat_template': the checkpoint's Jinja template, chatTemplate). */
  readonly template: string;
  readonly aspect: AspectMode;
  /** Where template and aspect came from ('--template', 'config.json conversation_template', ...). */
  readonly templateSource: string;
  readonly aspectSource: string;
  /** The checkpoint's Jinja chat template (llava-hf checkpoints that ship one), else null. */
  readonly chatTemplate: JinjaTemplate | null;
  /** config.json mm_use_im_start_end: the image token is wrapped as <im_start><image><im_end>. */
  readonly mmUseImStartEnd: boolean;
  /** get_model_name_from_path of the directory (the reference's model id). */
  readonly name: string;
  /** The resolved CLIP directory (original layout), or null. */
  readonly visionDir: string | null;
  /** Whether dispose() frees the model. */
  readonly owned: boolean;
  private readonly tok: Tokenizer | null;
  private proc: CLIPImageProcessor | null = null;
  private procConfig: ClipProcessorConfig | null = null;
  private disposed = false;

  private constructor(p: SessionParts) {
    this.dir = p.dir;
    this.model = p.model;
    this.tok = p.tokenizer;
    this.owned = p.owned;
    this.device = p.device;
    this.dtype = p.dtype;
    this.template = p.template.value;
    this.templateSource = p.template.source;
    this.aspect = p.aspect.value;
    this.aspectSource = p.aspect.source;
    this.chatTemplate = p.chatTemplate;
    this.mmUseImStartEnd = p.record.mmUseImStartEnd;
    this.visionDir = p.vision.visionDir;
    this.name = modelNameFromPath(path.resolve(p.dir));
  }

  /** Loads the checkpoint in `dir` (llava-hf or original layout). Setup problems throw an Error. */
  static load(dir: string, o: SessionOptions = {}): LlavaSession {
    checkOptions('session', o, SESSION_KEYS);
    if (!fs.existsSync(path.join(dir, 'config.json'))) throw new Error(`[session] ${dir} is not a model directory (no config.json)`);
    const { device, dtype } = checkRuntime(o.device, o.dtype, { area: 'session' });
    checkTemplateName(o.template); // unknown names fail before the weights load
    checkWeightOptions(dir, o);
    readTrainingRecord(dir); // so does a config.json naming an unknown template
    const { visionDir, imageSize } = resolveVisionDir(o.modelBase ?? dir, o.visionTower);
    let tokenizer: Tokenizer | null = null;
    // A LoRA folder without its own tokenizer uses the base's (the reference loads it from model_base).
    const tokDir = o.modelBase && !fs.existsSync(path.join(dir, 'tokenizer.json')) ? o.modelBase : dir;
    if (o.tokenizer === 'optional') {
      try {
        tokenizer = Tokenizer.fromDir(tokDir);
      } catch {
        tokenizer = null;
      }
    } else tokenizer = Tokenizer.fromDir(tokDir);
    const { model, notes } = loadWeightsFor(dir, o, dtype, device);
    for (const n of notes) process.stderr.write(`[session] ${n}\n`);
    return LlavaSession.assemble({ dir, model, tokenizer, owned: true, device, dtype, vision: { visionDir, imageSize } }, o);
  }

  /** Wraps a model that is already loaded (from `dir`); the session never frees it. */
  static fromModel(
    model: LlavaForConditionalGeneration,
    tokenizer: Tokenizer | null,
    dir: string,
    o: Omit<SessionOptions, 'device' | 'dtype'> = {},
  ): LlavaSession {
    checkOptions('session', o, SESSION_KEYS);
    checkTemplateName(o.template);
    const w = model.parameters()[0];
    const device = (w?.device ?? 'cpu') as Device;
    const dtype = (w?.dtype ?? 'float32') as DType;
    const visionDir = model.config.format === 'llava-hf' ? null : resolveVisionDir(dir, o.visionTower).visionDir;
    const vision = { visionDir, imageSize: model.config.vision.image_size };
    return LlavaSession.assemble({ dir, model, tokenizer, owned: false, device, dtype, vision }, o);
  }

  /** Picks template and aspect, checks the image processor; frees an owned model when anything fails. */
  private static assemble(p: Omit<SessionParts, 'template' | 'aspect' | 'record' | 'chatTemplate'>, o: SessionOptions): LlavaSession {
    try {
      const record = readTrainingRecord(p.dir);
      const template = o.template ? { value: o.template, source: '--template' } : chooseTemplate(p.model, p.dir, record);
      const chatTemplate = llavaHfChatTemplate(p.model, p.dir);
      if (template.value === CHAT_TEMPLATE && !chatTemplate)
        throw new Error(
          `[session] ${p.dir} ships no Jinja chat_template (tokenizer_config.json, chat_template.json) for llava-hf; choose a template with --template`,
        );
      try {
        if (template.value !== CHAT_TEMPLATE) getTemplate(template.value);
      } catch (e) {
        throw new Error(`[session] ${(e as Error).message}; choose one with --template`);
      }
      const aspect = o.aspect ? { value: o.aspect, source: '--aspect' } : chooseAspect(p.model, p.dir, record);
      const s = new LlavaSession({ ...p, template, aspect, record, chatTemplate });
      if (o.images !== false) s.checkImageSize();
      return s;
    } catch (e) {
      if (p.owned) p.model.dispose();
      throw e;
    }
  }

  /** One line for the user: which template and aspect this session uses, and why. */
  describe(): string {
    return `template ${this.template} (${this.templateSource}), aspect ${this.aspect} (${this.aspectSource})`;
  }

  /** The prompt for `question` after the earlier [question, answer] rounds, with the reply pending, rendered
   *  by the session's template (the Jinja chat_template, or the hand-written one as buildPrompt does); the
   *  image goes into the first question. */
  prompt(question: string, o: { image?: boolean; history?: Array<[string, string]> } = {}): string {
    const history = o.history ?? [];
    if (this.template !== CHAT_TEMPLATE)
      return buildPrompt(this.template, question, { image: o.image, history, mmUseImStartEnd: this.mmUseImStartEnd });
    const messages: PromptMessage[] = [];
    for (const [q, a] of [...history, [question, null] as const]) {
      messages.push({ role: 'user', text: q, image: messages.length === 0 && o.image === true });
      if (a !== null) messages.push({ role: 'assistant', text: a });
    }
    return renderJinjaPrompt(this.chatTemplate!, messages);
  }

  /** The user and assistant role names shown in an interactive chat. */
  get roles(): [string, string] {
    return this.template === CHAT_TEMPLATE ? ['USER', 'ASSISTANT'] : getTemplate(this.template).roles;
  }

  get format(): 'llava-hf' | 'llava_llama' {
    return this.model.config.format;
  }

  /** The vision tower's input size S. */
  get imageSize(): number {
    return this.model.config.vision.image_size;
  }

  /** The tokenizer; throws when the directory had none (only possible with tokenizer: 'optional'). */
  get tokenizer(): Tokenizer {
    if (!this.tok) throw new Error(`[session] ${this.dir} has no usable tokenizer (tokenizer.json)`);
    return this.tok;
  }

  get tokenizerOrNull(): Tokenizer | null {
    return this.tok;
  }

  /** The template's stop string (`###` for SINGLE, `</s>` for TWO), or null (Jinja templates: EOS only). */
  get stop(): string | null {
    return this.template === CHAT_TEMPLATE ? null : stopString(getTemplate(this.template));
  }

  /** The image processor config (checkpoint's, else the tower's, else CLIP defaults). */
  get processorConfig(): ClipProcessorConfig {
    return (this.procConfig ??= resolveProcessorConfig(this.dir, { visionDir: this.visionDir, imageSize: this.imageSize }));
  }

  get processor(): CLIPImageProcessor {
    return (this.proc ??= new CLIPImageProcessor(this.processorConfig));
  }

  /** Throws when the processor does not produce the tower's input size (checked on a 1x1 image). */
  checkImageSize(): void {
    const probe = this.processor.preprocess({ width: 1, height: 1, data: new Uint8Array(3) }, { aspect: this.aspect });
    this.checkShape(probe);
  }

  private checkShape(pv: PixelValues): void {
    const S = this.imageSize;
    if (pv.shape[1] !== S || pv.shape[2] !== S)
      throw new Error(`[session] the image processor makes ${pv.shape[1]}x${pv.shape[2]} images; the vision tower takes ${S}x${S}`);
  }

  /** Host pixel values [3, S, S] of one image (file path, encoded bytes or decoded RGB). Decoding errors
   *  are thrown as they come (ImageLimitError over the pixel caps); callers say which image it was. */
  preprocess(image: string | Uint8Array | RgbImage, aspect: AspectMode = this.aspect, limits?: Partial<ImageLimits>): PixelValues {
    const pv = this.processor.preprocess(image, { aspect, limits });
    this.checkShape(pv);
    return pv;
  }

  /** preprocess with the JPEG decode off this thread, so a server's event loop keeps answering. */
  async preprocessAsync(
    image: string | Uint8Array | RgbImage,
    aspect: AspectMode = this.aspect,
    limits?: Partial<ImageLimits>,
  ): Promise<PixelValues> {
    const pv = await this.processor.preprocessAsync(image, { aspect, limits });
    this.checkShape(pv);
    return pv;
  }

  /** Pixel values as a kept [1, 3, S, S] tensor on the model's device and dtype; the caller disposes it. */
  toTensor(pv: PixelValues): Tensor {
    return keep(tensor(pv.pixelValues, { shape: [1, ...pv.shape], dtype: this.dtype, device: this.device }));
  }

  /** preprocess + toTensor. */
  pixelTensor(image: string | Uint8Array | RgbImage): Tensor {
    return this.toTensor(this.preprocess(image));
  }

  /** Frees the model if this session loaded it (idempotent). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.owned) this.model.dispose();
  }
}
