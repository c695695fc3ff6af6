// answer.ts — the answer-generation step of the benchmarks (docs/reference.md §8.1, §8.2, §9): what the reference's
// `model_vqa.py` (LLaVA-Bench) and `model_vqa_science.py` (ScienceQA) do, one question at a time, writing
// `{question_id, prompt, text, answer_id, model_id, metadata}` lines.
//
// Decisions:
// - One user turn per question, image (if any) as "<image>\n" before the question, a pending assistant turn,
//   rendered by the chosen template. Default template: the one the folder was trained with (config.json
//   conversation_template, processing/training_record.ts); else for llava-hf checkpoints their Jinja
//   chat_template when they ship one, else `llava_hf`; `vicuna_v1` (the v1.5 benchmark scripts'
//   --conv-mode) for original ones.
// - Decoding as the v1.5 scripts run it: temperature 0 (greedy), max_new_tokens 1024, KV cache; sampling
//   when temperature > 0.001 with a per-question seed (seed + question index), so reruns are reproducible.
//   HEAD stops only on EOS; `stopAtSeparator` also stops on the template's stop string (the model worker's
//   behaviour, useful with `###` templates). The reply is decoded without special tokens and stripped.
// - Up to `batchSize` questions are generated together, continuously (inference/batcher.ts): a question
//   joins the running batch as soon as another one ends. Each gets the answer it gets alone (same seed,
//   stops and caps); answers are still written in question order, each as soon as the earlier ones are.
// - Images go through the CLIP processor with the model's aspect handling (original: config
//   image_aspect_ratio, `pad` for v1.5; llava-hf: no padding), as process_images does.
// - `prompt` in the output is the question text as the reference records it: the raw question for
//   LLaVA-Bench, "<image>\n" + question (+ the single-prediction suffix) for ScienceQA.
// - `answer_id` is a random 22-character id in shortuuid's alphabet; `model_id` is the model directory's
//   name (get_model_name_from_path).
// - Resumable: question ids already in the answers file are skipped and every answer is appended (and
//   flushed) as soon as it exists. --num-chunks / --chunk-idx split the questions as the reference does.
// - The v0-era ScienceQA "answer prompter" second pass is available (answerPrompter): the reply plus
//   " ###\nANSWER:" is fed back for up to 64 more tokens and the text becomes reply + "\n The answer is " +
//   second reply.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { keep } from '../../core/memory';
import { checkOptions, optionKeys } from '../../options';
import { tensor } from '../../ops/creation';
import type { Tensor } from '../../core/tensor';
import type { DType, Device } from '../../core/dtype';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { CLIPImageProcessor, type AspectMode } from '../processing/image';
import { appendMessage, getTemplate, render, stopString } from '../processing/conversation';
import { LlavaSession, defaultAspect, modelLoadOptions, type ModelLoadOptions } from '../processing/session';
import { CHAT_TEMPLATE, readChatTemplate, renderJinjaPrompt, type JinjaTemplate } from '../processing/chat_template';
import { readTrainingRecord } from '../processing/training_record';
import { encodePrompt } from '../inference/generate';
import { DecodeBatcher } from '../inference/batcher';
import { pyStrip } from '../util/pyformat';
import { imagePath } from '../processing/data';
import { EvalError, type AnswerRecord } from './common';
import { sqaPrompt, type SqaQuestion } from './scienceqa';
import type { BenchQuestion } from './llava_bench';
import { Progress, type ProgressMode } from '../util/progress';
import { appendJsonl, prepareJsonlOutput } from '../util/files';

// ---------------------------------------------------------------------------------------------------------
// Model loading

/** A loaded model with what answering needs. Call dispose() when done. */
export interface EvalModel {
  model: LlavaForConditionalGeneration;
  tokenizer: Tokenizer;
  imageProcessor: CLIPImageProcessor;
  /** get_model_name_from_path of the model directory. */
  modelId: string;
  /** Template the eval scripts would use for this checkpoint (see defaultEvalTemplate). */
  template: string;
  /** The checkpoint's Jinja chat template (template 'chat_template'), else null. */
  chatTemplate: JinjaTemplate | null;
  aspect: AspectMode;
  dtype: DType;
  device: Device;
  dispose(): void;
}

/** The default --conv-mode: with the model directory, the template it was trained with, else (llava-hf)
 *  its Jinja chat_template; then llava_hf for llava-hf checkpoints, vicuna_v1 (v1.5 eval scripts) otherwise. */
export function defaultEvalTemplate(model: LlavaForConditionalGeneration, dir?: string): string {
  if (dir !== undefined) {
    const rec = readTrainingRecord(dir);
    if (rec.template) return rec.template;
    if (model.config.format === 'llava-hf' && readChatTemplate(dir)) return CHAT_TEMPLATE;
  }
  return model.config.format === 'llava-hf' ? 'llava_hf' : 'vicuna_v1';
}

/** Device, dtype, vision tower (original llava_llama checkpoints), LoRA base and int8 / NF4 (session.ts). */
export type LoadEvalModelOptions = ModelLoadOptions;

/** Loads model, tokenizer and image processor from a model directory (an LlavaSession: the vision tower
 *  and its preprocessor config are found as chat, serve and train find them). */
export function loadEvalModel(dir: string, o: LoadEvalModelOptions = {}): EvalModel {
  if (!fs.existsSync(path.join(dir, 'config.json'))) throw new EvalError(`${dir} is not a model directory (no config.json)`);
  const s = LlavaSession.load(dir, modelLoadOptions(o));
  return {
    model: s.model,
    tokenizer: s.tokenizer,
    imageProcessor: s.processor,
    modelId: s.name,
    template: defaultEvalTemplate(s.model, dir),
    chatTemplate: s.chatTemplate,
    aspect: s.aspect,
    dtype: s.dtype,
    device: s.device,
    dispose: () => s.dispose(),
  };
}

/** The reference's get_chunk: ceil(n / numChunks) questions per chunk, chunk k of them. */
export function getChunk<T>(items: readonly T[], numChunks: number, chunkIdx: number): T[] {
  if (!(Number.isInteger(numChunks) && numChunks >= 1)) throw new EvalError(`numChunks must be a positive integer (got ${numChunks})`);
  if (!(Number.isInteger(chunkIdx) && chunkIdx >= 0 && chunkIdx < numChunks))
    throw new EvalError(`chunkIdx must be in [0, ${numChunks}) (got ${chunkIdx})`);
  const size = Math.ceil(items.length / numChunks);
  return items.slice(chunkIdx * size, (chunkIdx + 1) * size);
}

const SHORTUUID_ALPHABET = '23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

/** A random 22-character id in shortuuid's 57-letter alphabet (the reference's answer_id). */
export function shortUuid(): string {
  const n = SHORTUUID_ALPHABET.length;
  const limit = 256 - (256 % n); // rejection sampling keeps the letters uniform
  let s = '';
  while (s.length < 22) for (const b of crypto.randomBytes(32)) if (b < limit && s.length < 22) s += SHORTUUID_ALPHABET[b % n];
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Answering

export type QuestionSet = { kind: 'bench'; questions: readonly BenchQuestion[] } | { kind: 'sqa'; questions: readonly SqaQuestion[] };

export interface GenerateAnswersOptions {
  model: LlavaForConditionalGeneration;
  tokenizer: Tokenizer;
  imageProcessor: CLIPImageProcessor;
  /** 'bench' (model_vqa.py: every question has an image) or 'sqa' (model_vqa_science.py). */
  set: QuestionSet;
  /** Folder the questions' image paths are relative to. */
  imageFolder: string;
  /** Output JSONL (appended; question ids already present are skipped). */
  answersFile: string;
  /** model_id written with each answer. */
  modelId: string;
  /** --conv-mode (default defaultEvalTemplate(model)); 'chat_template' renders with `chatTemplate`. */
  template?: string;
  /** The checkpoint's Jinja chat template (EvalModel.chatTemplate). */
  chatTemplate?: JinjaTemplate | null;
  /** Default: the model's own (defaultAspect). */
  aspect?: AspectMode;
  /** Default 0 (greedy, the v1.5 scripts). */
  temperature?: number;
  topP?: number;
  /** Default 1024. */
  maxNewTokens?: number;
  /** Sampling seed; question i uses seed + i (default 0). */
  seed?: number;
  /** ScienceQA v1.5: the "Answer with the option's letter ..." suffix. */
  singlePredPrompt?: boolean;
  /** ScienceQA v0-era second pass (see the file header). */
  answerPrompter?: boolean;
  /** Also stop on the template's separator (default false: EOS only, as HEAD). */
  stopAtSeparator?: boolean;
  numChunks?: number;
  chunkIdx?: number;
  /** Questions decoded together (continuous batching; default 1). Each gets the answer it would get alone. */
  batchSize?: number;
  progress?: ProgressMode;
  log?: (m: string) => void;
}
/** The options' keys, and the rest of an EvalModel's, so that `{ ...loadEvalModel(dir), set, ... }` is accepted. */
const ANSWER_KEYS = optionKeys<GenerateAnswersOptions & Partial<Pick<EvalModel, 'dtype' | 'device' | 'dispose'>>>({
  model: true,
  tokenizer: true,
  imageProcessor: true,
  set: true,
  imageFolder: true,
  answersFile: true,
  modelId: true,
  template: true,
  chatTemplate: true,
  aspect: true,
  temperature: true,
  topP: true,
  maxNewTokens: true,
  seed: true,
  singlePredPrompt: true,
  answerPrompter: true,
  stopAtSeparator: true,
  numChunks: true,
  chunkIdx: true,
  batchSize: true,
  progress: true,
  log: true,
  dtype: true,
  device: true,
  dispose: true,
});

export interface GenerateAnswersResult {
  /** Questions in this chunk. */
  total: number;
  /** Already answered in the file. */
  skipped: number;
  /** Answered by this run. */
  written: number;
}

interface Item {
  id: string | number;
  /** The user message put into the conversation. */
  question: string;
  /** What the output's `prompt` field records. */
  prompt: string;
  image: string | null;
}

function itemsOf(set: QuestionSet, o: GenerateAnswersOptions): Item[] {
  if (set.kind === 'bench') {
    return set.questions.map((q) => ({ id: q.question_id, question: '<image>\n' + q.text, prompt: q.text, image: q.image }));
  }
  return set.questions.map((q) => {
    const p = sqaPrompt(q, { singlePredPrompt: o.singlePredPrompt });
    if (p.hasImage && typeof q.image !== 'string') throw new EvalError(`question ${q.id}: "image" must be a file path`);
    return { id: q.id, question: p.question, prompt: p.prompt, image: p.hasImage ? (q.image as string) : null };
  });
}

/** Answers every question of the (chunk of the) set that the answers file does not hold yet. */
export async function generateAnswers(o: GenerateAnswersOptions): Promise<GenerateAnswersResult> {
  checkOptions('eval', o, ANSWER_KEYS);
  const batchSize = o.batchSize ?? 1;
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new EvalError(`batchSize must be a positive integer (got ${batchSize})`);
  const log = o.log ?? ((m: string) => console.log(m));
  const model = o.model;
  const template = o.template ?? defaultEvalTemplate(model);
  const jinja = template === CHAT_TEMPLATE ? o.chatTemplate : null;
  if (template === CHAT_TEMPLATE && !jinja) throw new EvalError("template 'chat_template' needs the checkpoint's Jinja template (chatTemplate)");
  const conv0 = jinja ? null : getTemplate(template); // unknown names fail before any work
  const stop = o.stopAtSeparator && conv0 ? stopString(conv0) : null;
  const aspect = o.aspect ?? defaultAspect(model);
  const temperature = o.temperature ?? 0;
  const maxNewTokens = o.maxNewTokens ?? 1024;
  const seed = o.seed ?? 0;
  const S = model.config.vision.image_size;
  const param = model.vision.parameters()[0];

  const all = itemsOf(o.set, o);
  const items = getChunk(all, o.numChunks ?? 1, o.chunkIdx ?? 0);
  const seenIds = new Set<string>();
  for (const it of items) {
    const k = String(it.id);
    if (seenIds.has(k)) throw new EvalError(`question id ${k} appears twice in the questions`);
    seenIds.add(k);
  }
  const done = new Set(prepareJsonlOutput<AnswerRecord>(o.answersFile).map((a) => String(a.question_id)));
  const todo = items.map((it, i) => ({ it, i })).filter(({ it }) => !done.has(String(it.id)));
  const result: GenerateAnswersResult = { total: items.length, skipped: items.length - todo.length, written: 0 };
  if (result.skipped > 0) log(`[answer] ${result.skipped} of ${items.length} questions already answered in ${o.answersFile}`);
  if (todo.length === 0) return result;

  const prompt = (question: string): string => {
    if (jinja) return renderJinjaPrompt(jinja, [{ role: 'user', text: question }]);
    const conv = getTemplate(template);
    appendMessage(conv, conv.roles[0], question);
    appendMessage(conv, conv.roles[1], null);
    return render(conv);
  };
  const pixelsOf = async (it: Item): Promise<Tensor | null> => {
    if (it.image === null) return null;
    const file = imagePath(o.imageFolder, it.image);
    if (!fs.existsSync(file)) throw new EvalError(`question ${it.id}: image file ${file} not found`);
    let pv;
    try {
      pv = await o.imageProcessor.preprocessAsync(file, { aspect }); // the JPEG decodes off this thread
    } catch (e) {
      throw new EvalError(`question ${it.id}: cannot read image ${file}: ${(e as Error).message}`);
    }
    if (pv.shape[1] !== S || pv.shape[2] !== S)
      throw new EvalError(`the image processor makes ${pv.shape[1]}x${pv.shape[2]} images; the vision tower takes ${S}x${S}`);
    return keep(tensor(pv.pixelValues, { shape: [1, ...pv.shape], dtype: param.dtype, device: param.device }));
  };
  const sampling = { temperature, topP: o.topP, stop };

  const progress = new Progress({ mode: o.progress, label: '[answer]', total: items.length, done: result.skipped, log });
  // Up to batchSize questions decode together, a new one joining as soon as one ends (continuous batching);
  // answers are written in question order as soon as every earlier one is. After a failure no question
  // starts, the ones under way finish, and the file holds exactly the answers before the failing question.
  const batcher = new DecodeBatcher(model, o.tokenizer, { maxBatch: batchSize });
  const finished = new Map<number, string>();
  const failures: { error: Error; id: string | number }[] = [];
  const record = (k: number, text: string): void => {
    finished.set(k, text);
    // result.written: the answers written so far, so also the index of the next one to write
    while (finished.has(result.written)) {
      const { it } = todo[result.written];
      const rec: AnswerRecord = {
        question_id: it.id,
        prompt: it.prompt,
        text: finished.get(result.written)!,
        answer_id: shortUuid(),
        model_id: o.modelId,
        metadata: {},
      };
      finished.delete(result.written);
      appendJsonl(o.answersFile, rec);
      result.written++;
      progress.tick();
    }
  };
  const answer = async (k: number): Promise<void> => {
    const { it, i } = todo[k];
    let pixels: Tensor | null = null;
    try {
      pixels = await pixelsOf(it);
      const ask = async (text: string, cap: number): Promise<string> => {
        const r = await batcher.submit({
          ...sampling,
          promptIds: encodePrompt(model, o.tokenizer, text),
          pixelValues: pixels,
          seed: seed + i,
          maxNewTokens: cap,
        });
        return pyStrip(r.text);
      };
      const first = prompt(it.question);
      let text = await ask(first, maxNewTokens);
      if (o.answerPrompter) text = text + '\n The answer is ' + (await ask(first + text + ' ###\nANSWER:', 64));
      record(k, text);
    } catch (e) {
      failures.push({ error: e as Error, id: it.id });
    } finally {
      pixels?.dispose();
    }
  };
  let cursor = 0;
  const worker = async (): Promise<void> => {
    while (cursor < todo.length && failures.length === 0) await answer(cursor++);
  };
  try {
    await Promise.all(Array.from({ length: Math.min(batchSize, todo.length) }, worker));
  } finally {
    progress.stop();
  }
  if (failures.length > 0) {
    const { error, id } = failures[0];
    if (error instanceof EvalError) throw error;
    throw new EvalError(`question ${id}: ${error.message} (${result.written} new answers were written to ${o.answersFile}; run again to resume)`);
  }
  return result;
}
