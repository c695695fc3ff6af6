// pipeline.ts — LLaVA's GPT-assisted instruction-data run (docs/reference.md §7, output in the §6.1
// format): for every COCO image not yet done, its context and the type's few-shot chat go to an
// OpenAI-compatible chat-completions endpoint, the reply is parsed into a LLaVA record and appended to the
// generation JSONL as soon as it arrives; or, as a dry run, the requests are only written out.
//
// The steps it strings together, each usable on its own (all exported together as `L.gptData` by index.ts):
//   context.ts     loadCoco / cocoFromJson, buildContext   COCO annotations -> the user turn of one image
//   prompt_set.ts  builtinPromptSet / loadPromptSet / buildMessages   system message + few-shot turns
//   parse.ts       parseQAPairs / parseDetailOutput / parseGptOutput    model reply -> LLaVA record
//   collect.ts     scanGenerationJsonl, collectInstructData            JSONL log -> resume state, LLaVA array
//   util/openai.ts OpenAIChatClient                                   the shared chat-completions client
//
// Decisions:
// - Resume: images whose (type, image id) already has a line are skipped (collect.ts); images whose request
//   failed after the client's retries get no line, so a rerun asks again. 401/403/404 stop the whole run at
//   once (a wrong key, base URL or model would fail every request); lines already written stay.
// - Malformed outputs are never dropped silently: the JSONL line keeps the raw response with record = null
//   and the reason, and the run's summary lists them with their image id.
// - A partial last line left by a crash is kept (collect.ts reports it) and our lines start on a fresh one.
import * as fs from 'fs';
import * as path from 'path';
import { checkOptions, optionKeys } from '../../options';
import type { GptDataType } from './prompts';
import { ApiError, DEFAULT_MODEL, requestBody, type ChatCompleter, type ChatCompletionResult, type ChatMessage } from '../util/openai';
import { Progress, type ProgressMode } from '../util/progress';
import { appendJsonl } from '../util/files';
import { GptDataError } from './common';
import { buildContext, usesBoxes, type CoordStyle, type ImageContextSource } from './context';
import { buildMessages, builtinPromptSet, type PromptSet } from './prompt_set';
import { parseGptOutput, recordIdentity, type ImagePosition } from './parse';
import { completedImageIds, scanGenerationJsonl, type GenerationLine, type ImageIssue } from './collect';
import { forEachConcurrent } from '../util/pool';

// ---------------------------------------------------------------------------------------------------------
// Generation

export interface GenerateOptions {
  type: GptDataType;
  images: readonly ImageContextSource[];
  client: ChatCompleter;
  /** The JSONL file appended to (and read on restart). */
  outJsonl: string;
  /** Default: the built-in prompts of the type. */
  prompts?: PromptSet;
  /** Use only the first k few-shot examples. */
  fewShot?: number;
  /** Requests in flight at once (default 4). */
  concurrency?: number;
  seed?: number;
  imagePosition?: ImagePosition;
  /** Prepended to the file name in each record's `image`. */
  imagePrefix?: string;
  coordStyle?: CoordStyle;
  /** Ask again for images whose earlier output was malformed. */
  retryFailed?: boolean;
  progress?: ProgressMode;
  log?: (m: string) => void;
}
const GENERATE_KEYS = optionKeys<GenerateOptions>({
  type: true,
  images: true,
  client: true,
  outJsonl: true,
  prompts: true,
  fewShot: true,
  concurrency: true,
  seed: true,
  imagePosition: true,
  imagePrefix: true,
  coordStyle: true,
  retryFailed: true,
  progress: true,
  log: true,
});

export interface GenerateSummary {
  type: GptDataType;
  /** Images given. */
  total: number;
  /** Skipped because the JSONL already has them. */
  alreadyDone: number;
  /** Requests that returned (lines written this run). */
  completed: number;
  /** Of those, outputs that did not parse (line written with record = null). */
  parseErrors: ImageIssue[];
  /** Requests that failed after the retries (no line written; a rerun asks again). */
  apiErrors: ImageIssue[];
  outJsonl: string;
}

/**
 * Runs the pipeline for one type: for every image not yet in `outJsonl`, builds the chat, asks the model with
 * at most `concurrency` requests in flight, parses the answer and appends one JSONL line as soon as it
 * arrives. A fatal API error (401/403/404) stops the run and is thrown; lines already written stay.
 */
export async function generateInstructData(o: GenerateOptions): Promise<GenerateSummary> {
  checkOptions('gen-data', o, GENERATE_KEYS);
  const log = o.log ?? ((m: string) => console.log(m));
  const prompts = o.prompts ?? builtinPromptSet(o.type);
  if (prompts.type !== o.type) throw new GptDataError(`prompt set is for '${prompts.type}', not '${o.type}'`);
  const concurrency = o.concurrency ?? 4;
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new GptDataError(`concurrency must be an integer >= 1 (got ${concurrency})`);
  if (usesBoxes(o.type) && o.images.length > 0 && o.images.every((im) => im.objects.length === 0))
    log(`[gen-data] warning: no image has object boxes; ${o.type} prompts expect them (was an instances file given?)`);

  const seen: Array<Pick<GenerationLine, 'type' | 'image_id'> & { record: true | null }> = [];
  const bad = scanGenerationJsonl(o.outJsonl, (l) => seen.push({ type: l.type, image_id: l.image_id, record: l.record === null ? null : true }));
  for (const b of bad) log(`[gen-data] warning: ${b.file}:${b.line} ignored: ${b.reason}`);
  const done = completedImageIds(seen, o.type, o.retryFailed);
  const todo = o.images.filter((im) => !done.has(im.imageId));
  const summary: GenerateSummary = {
    type: o.type,
    total: o.images.length,
    alreadyDone: o.images.length - todo.length,
    completed: 0,
    parseErrors: [],
    apiErrors: [],
    outJsonl: o.outJsonl,
  };
  fs.mkdirSync(path.dirname(path.resolve(o.outJsonl)), { recursive: true });
  // A crash mid-write can leave a partial last line: start ours on a fresh line.
  if (fs.existsSync(o.outJsonl)) {
    const size = fs.statSync(o.outJsonl).size;
    if (size > 0) {
      const fd = fs.openSync(o.outJsonl, 'r');
      const last = Buffer.alloc(1);
      fs.readSync(fd, last, 0, 1, size - 1);
      fs.closeSync(fd);
      if (last[0] !== 0x0a) fs.appendFileSync(o.outJsonl, '\n');
    }
  }

  const progress = new Progress({ mode: o.progress, label: `[gen-data] ${o.type}`, total: todo.length, log });
  let failedCount = 0;
  const tick = (failed: boolean): void => progress.tick(1, [`failed ${(failedCount += failed ? 1 : 0)}`]);
  let stopped: Error | null = null;
  try {
    await forEachConcurrent(todo, concurrency, async (img) => {
      const { id, image } = recordIdentity(img, o.imagePrefix);
      const messages = buildMessages(prompts, buildContext(img, o.type, { coordStyle: o.coordStyle }), o.fewShot);
      let r: ChatCompletionResult;
      try {
        r = await o.client.complete(messages);
      } catch (e) {
        if (e instanceof ApiError && !e.fatal) {
          summary.apiErrors.push({ type: o.type, imageId: img.imageId, reason: e.message });
          tick(true);
          return;
        }
        throw e;
      }
      const content = r.content ?? ''; // a null content (filtered reply) fails to parse and is reported
      const parsed = parseGptOutput(o.type, content, { id, image, imageId: img.imageId, seed: o.seed, imagePosition: o.imagePosition });
      const line: GenerationLine = {
        type: o.type,
        index: img.index,
        image_id: img.imageId,
        id,
        image,
        model: r.model ?? o.client.model,
        response: content,
        finish_reason: r.finishReason,
        usage: r.usage,
        record: parsed.ok ? parsed.value : null,
        error: parsed.ok ? null : parsed.reason,
        created: new Date().toISOString(),
      };
      appendJsonl(o.outJsonl, line);
      summary.completed++;
      if (!parsed.ok) summary.parseErrors.push({ type: o.type, imageId: img.imageId, reason: parsed.reason });
      tick(!parsed.ok);
    });
  } catch (e) {
    stopped = e as Error;
  } finally {
    progress.stop();
  }
  if (stopped !== null) {
    const e = stopped;
    e.message = `${e.message} (stopped; ${summary.completed} response(s) of this run saved in ${o.outJsonl}, rerun to continue)`;
    throw e;
  }
  return summary;
}

// ---------------------------------------------------------------------------------------------------------
// Dry run

export interface DryRunOptions {
  type: GptDataType;
  images: readonly ImageContextSource[];
  /** JSONL written: one OpenAI Batch-API request line per image. */
  outFile: string;
  prompts?: PromptSet;
  fewShot?: number;
  model?: string;
  temperature?: number;
  maxTokens?: number;
  coordStyle?: CoordStyle;
}
const DRY_RUN_KEYS = optionKeys<DryRunOptions>({
  type: true,
  images: true,
  outFile: true,
  prompts: true,
  fewShot: true,
  model: true,
  temperature: true,
  maxTokens: true,
  coordStyle: true,
});

/** One line of a dry run (the OpenAI Batch API input format, so the file can also be submitted as a batch). */
export interface DryRunLine {
  custom_id: string;
  method: 'POST';
  url: '/v1/chat/completions';
  body: { model: string; messages: ChatMessage[]; temperature?: number; max_tokens?: number };
}

/** Writes the request of every image without calling any API; returns the first chat for display. */
export function writeDryRun(o: DryRunOptions): { outFile: string; count: number; first: ChatMessage[] | null } {
  checkOptions('gen-data', o, DRY_RUN_KEYS);
  const prompts = o.prompts ?? builtinPromptSet(o.type);
  fs.mkdirSync(path.dirname(path.resolve(o.outFile)), { recursive: true });
  const fd = fs.openSync(o.outFile, 'w');
  let first: ChatMessage[] | null = null;
  try {
    for (const img of o.images) {
      const messages = buildMessages(prompts, buildContext(img, o.type, { coordStyle: o.coordStyle }), o.fewShot);
      first ??= messages;
      const line: DryRunLine = {
        custom_id: `${o.type}-${img.imageId}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: requestBody(o.model ?? DEFAULT_MODEL, messages, o) as DryRunLine['body'],
      };
      fs.writeSync(fd, JSON.stringify(line) + '\n');
    }
  } finally {
    fs.closeSync(fd);
  }
  return { outFile: o.outFile, count: o.images.length, first };
}
