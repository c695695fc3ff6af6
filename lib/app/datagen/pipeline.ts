// gpt_data.ts — LLaVA's GPT-assisted instruction-data pipeline (spec §7, output in the §6.1 format):
// COCO annotations -> per-image context -> chat prompt with few-shot examples -> an OpenAI-compatible
// chat-completions endpoint -> parsed LLaVA instruction records (conversation / detail / complex_reasoning).
//
// Pieces (each usable on its own):
//   loadCoco / cocoFromJson      captions_*.json (+ instances_*.json) -> one ImageContextSource per image
//   buildContext                 the user turn for one image (captions, then normalised boxes)
//   builtinPromptSet / loadPromptSet / writePromptsDir / buildMessages   system message + few-shot turns
//   parseQAPairs / parseDetailOutput / parseGptOutput                    model output -> LLaVA record
//   OpenAIChatClient             the shared chat-completions client (openai.ts, re-exported here)
//   generateInstructData         the resumable, concurrent run writing one JSONL line per image
//   collectInstructData          JSONL file(s) -> the LLaVA JSON array (llava_instruct_*.json style)
//   writeDryRun                  the prompts only, as OpenAI Batch-API request lines, no key needed
//
// Decisions:
// - Box numbers: each coordinate is printed with exactly three decimals, trailing zeros kept ("0.500",
//   "1.000"), i.e. Python's '%.3f' — including its round-half-to-even on exact binary ties (0.0625 -> "0.062";
//   JS toFixed would give "0.063"). The spec states "3 decimals" and its one example has three significant
//   decimals, and a fixed width keeps every box line uniform. The other plausible reading, Python
//   repr(round(v, 3)) ("0.5", "1.0"), is available as coordStyle 'round'. x2 = (x + w) / width and
//   y2 = (y + h) / height, since COCO boxes are [x, y, w, h] in pixels. Boxes are not clamped to [0, 1].
// - Captions: every caption of the image in annotation-file order (COCO has 5, a few images have 6 or 7),
//   stripped, with internal newlines folded into spaces so that each caption stays on its own line. Objects:
//   every instance annotation of the image in file order (crowd regions included), named by category.
//   An image with no objects gets the captions only (no dangling blank line).
// - Few-shot examples are TypeScript constants (gpt_prompts.ts) so nothing has to be copied next to the
//   compiled JS; `--prompts-dir` reads the reference layout <dir>/<folder>/{system_message.txt, NNN_caps.txt,
//   NNN_conv.txt} (folders conversation, detail_description, complex_reasoning) when the originals are at
//   hand, and writePromptsDir() writes the built-ins out in that layout. File contents are stripped.
// - `<image>` goes first in the first human turn ("<image>\n" + question) by default: LLaVA >= 1.0 moves it
//   there during training anyway (spec §10.2), so the reference's random side carries no information. The
//   reference-like random side is available as imagePosition 'random' (seeded per image).
// - Randomness (the detail question, the random image side) is drawn from mulberry32 seeded by
//   (seed, type, image id), not from one stream, so results do not depend on the order in which concurrent
//   requests finish, and a resumed run draws the same as an uninterrupted one.
// - Output parsing is lenient about layout and strict about structure: `Question:` / `Answer:` label lines
//   open a turn (text may follow the colon on the same line), `===` lines are separators, and anything else
//   belongs to the open turn. Text before the first label, two questions or two answers in a row, an empty
//   turn, a question without an answer, or (complex reasoning) more than one pair is an error. Malformed
//   outputs are never dropped silently: the JSONL line keeps the raw response with record = null and the
//   reason, and the run's summary lists them with their image id.
// - Resume: an image whose (type, image id) already has a line in the JSONL file is skipped — including one
//   whose output was malformed, so a restart never pays twice; `retryFailed` re-asks only those. Images whose
//   request failed (after the retries) get no line, so a rerun asks again. 401/403/404 stop the whole run at
//   once (a wrong key, base URL or model would fail every request).
// - The record id is the image file name without its extension ("000000033471"), image the file name with an
//   optional prefix (e.g. "coco/train2017/" for the mix665k layout), as in the released LLaVA files.
import * as fs from 'fs';
import * as path from 'path';
import { validateRecord } from '../processing/data';
import type { Turn } from '../processing/data';
import {
  BRIEF_DESCRIPTION_QUESTIONS,
  BUILTIN_FEW_SHOT,
  DETAIL_DESCRIPTION_QUESTIONS,
  GPT_DATA_TYPES,
  PROMPT_FOLDERS,
  SYSTEM_MESSAGES,
} from './prompts';
import type { FewShotExample, GptDataType } from './prompts';
import { pyFixed } from '../util/pyformat';
import {
  ApiError,
  requestBody,
  type ChatCompleter,
  type ChatCompletionResult,
  type ChatMessage,
} from '../util/openai';
import { mixSeed, mulberry32 } from '../util/random';
import { pyStrip } from '../util/pyformat';
import { Progress, type ProgressMode } from '../util/progress';
import { readJson } from '../../io/json';
export type { ProgressMode };

export * from './prompts';
export * from '../util/openai';

/** Errors in the caller's input (files, options); the CLI prints them as one line. */
export class GptDataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GptDataError';
  }
}

/** Accepts the type names and the reference folder names ('detail_description'). */
export function parseDataType(s: string): GptDataType {
  const t = s.trim().toLowerCase().replace(/-/g, '_');
  if (t === 'detail_description') return 'detail';
  if ((GPT_DATA_TYPES as readonly string[]).includes(t)) return t as GptDataType;
  throw new GptDataError(`unknown data type '${s}' (${GPT_DATA_TYPES.join(', ')})`);
}

// ---------------------------------------------------------------------------------------------------------
// Numbers

/** 'fixed': Python '%.3f' ("0.500"); 'round': Python repr(round(v, 3)) ("0.5"). */
export type CoordStyle = 'fixed' | 'round';

/** One box coordinate in the chosen style. */
export function formatCoord(v: number, style: CoordStyle = 'fixed'): string {
  if (!Number.isFinite(v)) throw new GptDataError(`cannot format ${v} as a coordinate`);
  const fixed = pyFixed(v, 3);
  if (style === 'fixed') return fixed;
  // round(v, 3) is the double nearest to the correctly rounded decimal; repr prints its shortest form.
  const r = Number(fixed);
  if (r === 0) return fixed.startsWith('-') ? '-0.0' : '0.0';
  const s = String(r);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

// ---------------------------------------------------------------------------------------------------------
// COCO annotations -> per-image sources

/** A COCO instance: category name and the pixel box [x, y, w, h]. */
export interface ObjectBox {
  category: string;
  bbox: [number, number, number, number];
}

/** Everything the context of one image is built from. */
export interface ImageContextSource {
  /** COCO image id, as a string. */
  imageId: string;
  fileName: string;
  width: number;
  height: number;
  captions: string[];
  objects: ObjectBox[];
  /** Position in the source images list (orders the collected output). */
  index: number;
}

export interface CocoLoadResult {
  images: ImageContextSource[];
  /** Non-fatal findings (images without captions are left out, annotations of unknown images...). */
  warnings: string[];
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new GptDataError(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}
function asArray(o: Record<string, unknown>, key: string, what: string): unknown[] {
  const v = o[key];
  if (!Array.isArray(v)) throw new GptDataError(`${what} has no '${key}' array`);
  return v;
}
function idKey(v: unknown): string | null {
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'string' && v.length > 0) return v;
  return null;
}

/** Caption cleanup: strip, and fold internal line breaks so one caption stays one line. */
export function cleanCaption(c: string): string {
  return pyStrip(c).replace(/[ \t]*\r?\n\s*/g, ' ');
}

/**
 * Joins parsed COCO JSON: the images and captions of a captions_*.json, and (optionally) the boxes and
 * categories of an instances_*.json. Images keep the order of the captions file's `images` list.
 */
export function cocoFromJson(captions: unknown, instances?: unknown, source = 'captions'): CocoLoadResult {
  const warnings: string[] = [];
  const cap = asObject(captions, source);
  const imgs = asArray(cap, 'images', source);
  const anns = asArray(cap, 'annotations', source);
  const byId = new Map<string, ImageContextSource>();
  const order: ImageContextSource[] = [];
  imgs.forEach((raw, i) => {
    const im = asObject(raw, `${source}: images[${i}]`);
    const id = idKey(im.id);
    if (id === null) throw new GptDataError(`${source}: images[${i}] has no usable id`);
    if (typeof im.file_name !== 'string' || !im.file_name) throw new GptDataError(`${source}: image ${id} has no file_name`);
    const width = Number(im.width);
    const height = Number(im.height);
    if (byId.has(id)) throw new GptDataError(`${source}: image id ${id} appears twice`);
    const src: ImageContextSource = { imageId: id, fileName: im.file_name, width, height, captions: [], objects: [], index: order.length };
    byId.set(id, src);
    order.push(src);
  });
  let orphanCaptions = 0;
  anns.forEach((raw, i) => {
    const a = asObject(raw, `${source}: annotations[${i}]`);
    const img = byId.get(idKey(a.image_id) ?? '');
    if (!img) return void orphanCaptions++;
    if (typeof a.caption !== 'string') throw new GptDataError(`${source}: annotations[${i}] (image ${a.image_id}) has no caption string`);
    const c = cleanCaption(a.caption);
    if (c) img.captions.push(c);
  });
  if (orphanCaptions) warnings.push(`${orphanCaptions} caption(s) refer to images not in the images list (ignored)`);

  if (instances !== undefined) {
    const what = 'instances';
    const ins = asObject(instances, what);
    const cats = new Map<string, string>();
    asArray(ins, 'categories', what).forEach((raw, i) => {
      const c = asObject(raw, `${what}: categories[${i}]`);
      const id = idKey(c.id);
      if (id === null || typeof c.name !== 'string') throw new GptDataError(`${what}: categories[${i}] needs an id and a name`);
      cats.set(id, c.name);
    });
    let orphanBoxes = 0;
    asArray(ins, 'annotations', what).forEach((raw, i) => {
      const a = asObject(raw, `${what}: annotations[${i}]`);
      const img = byId.get(idKey(a.image_id) ?? '');
      if (!img) return void orphanBoxes++;
      const name = cats.get(idKey(a.category_id) ?? '');
      if (name === undefined) throw new GptDataError(`${what}: annotations[${i}] (image ${img.imageId}) has unknown category_id ${a.category_id}`);
      const b = a.bbox;
      if (!Array.isArray(b) || b.length !== 4 || !b.every((x) => typeof x === 'number' && Number.isFinite(x)))
        throw new GptDataError(`${what}: annotations[${i}] (image ${img.imageId}) has no [x, y, w, h] bbox`);
      img.objects.push({ category: name, bbox: [b[0], b[1], b[2], b[3]] });
    });
    if (orphanBoxes) warnings.push(`${orphanBoxes} instance(s) refer to images not in the captions file (ignored)`);
  }

  const images = order.filter((im) => im.captions.length > 0);
  if (images.length < order.length) warnings.push(`${order.length - images.length} image(s) without captions left out`);
  for (const im of images)
    if (im.objects.length > 0 && !(im.width > 0 && im.height > 0))
      throw new GptDataError(`image ${im.imageId} has boxes but no positive width/height`);
  return { images, warnings };
}

/** Reads captions_*.json and, when given, instances_*.json (needed for detail / complex_reasoning). */
export function loadCoco(captionsFile: string, instancesFile?: string): CocoLoadResult {
  const cap = readJson(captionsFile, 'captions file', 'gen-data', { makeError: (m) => new GptDataError(m) });
  const ins = instancesFile !== undefined ? readJson(instancesFile, 'instances file', 'gen-data', { makeError: (m) => new GptDataError(m) }) : undefined;
  return cocoFromJson(cap, ins, captionsFile);
}

// ---------------------------------------------------------------------------------------------------------
// Context

export interface ContextOptions {
  coordStyle?: CoordStyle;
}

/** Whether a type's context carries object boxes (detail and complex reasoning do, conversation does not). */
export function usesBoxes(type: GptDataType): boolean {
  return type !== 'conversation';
}

/** "[x1, y1, x2, y2]" for a COCO pixel box [x, y, w, h], normalised by the image size. */
export function formatBox(bbox: readonly number[], width: number, height: number, style: CoordStyle = 'fixed'): string {
  const [x, y, w, h] = bbox;
  const v = [x / width, y / height, (x + w) / width, (y + h) / height];
  return `[${v.map((n) => formatCoord(n, style)).join(', ')}]`;
}

/**
 * The user turn for one image: captions one per line; for detail / complex reasoning a blank line and one
 * "category: [x1, y1, x2, y2]" line per object follow.
 */
export function buildContext(img: ImageContextSource, type: GptDataType, opts: ContextOptions = {}): string {
  const caps = img.captions.join('\n');
  if (!usesBoxes(type) || img.objects.length === 0) return caps;
  const boxes = img.objects.map((o) => `${o.category}: ${formatBox(o.bbox, img.width, img.height, opts.coordStyle)}`);
  return `${caps}\n\n${boxes.join('\n')}`;
}

// ---------------------------------------------------------------------------------------------------------
// Prompts

/** A system message and the few-shot examples of one type. */
export interface PromptSet {
  type: GptDataType;
  system: string;
  examples: FewShotExample[];
  /** 'builtin' or the folder the files came from. */
  source: string;
}

export function builtinPromptSet(type: GptDataType): PromptSet {
  return { type, system: SYSTEM_MESSAGES[type], examples: BUILTIN_FEW_SHOT[type].map((e) => ({ ...e })), source: 'builtin' };
}

function readText(file: string): string {
  return pyStrip(fs.readFileSync(file, 'utf8').replace(/\r\n/g, '\n'));
}

/**
 * Reads one type's prompts from the reference layout: `dir/<folder>/` (folder = conversation,
 * detail_description or complex_reasoning) or, when that does not exist, `dir` itself. NNN_caps.txt /
 * NNN_conv.txt pairs are used in name order; system_message.txt is optional (default: the verbatim one).
 */
export function loadPromptSet(dir: string, type: GptDataType): PromptSet {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new GptDataError(`prompts directory ${dir} not found`);
  const sub = path.join(dir, PROMPT_FOLDERS[type]);
  const folder = fs.existsSync(sub) && fs.statSync(sub).isDirectory() ? sub : dir;
  const files = fs.readdirSync(folder);
  const stems = files.filter((f) => f.endsWith('_caps.txt')).map((f) => f.slice(0, -'_caps.txt'.length)).sort();
  const convs = new Set(files.filter((f) => f.endsWith('_conv.txt')).map((f) => f.slice(0, -'_conv.txt'.length)));
  const examples: FewShotExample[] = [];
  for (const s of stems) {
    if (!convs.has(s)) throw new GptDataError(`prompts: ${path.join(folder, `${s}_caps.txt`)} has no matching ${s}_conv.txt`);
    examples.push({ name: s, caps: readText(path.join(folder, `${s}_caps.txt`)), conv: readText(path.join(folder, `${s}_conv.txt`)) });
  }
  for (const s of convs) if (!stems.includes(s)) throw new GptDataError(`prompts: ${path.join(folder, `${s}_conv.txt`)} has no matching ${s}_caps.txt`);
  if (examples.length === 0) throw new GptDataError(`prompts: no NNN_caps.txt / NNN_conv.txt pairs in ${folder}`);
  const sysFile = path.join(folder, 'system_message.txt');
  const system = fs.existsSync(sysFile) ? readText(sysFile) : SYSTEM_MESSAGES[type];
  return { type, system, examples, source: folder };
}

/** Writes the built-in prompts in the reference layout (dir/<folder>/system_message.txt, NNN_caps.txt, NNN_conv.txt). */
export function writePromptsDir(dir: string, types: readonly GptDataType[] = GPT_DATA_TYPES): string[] {
  const written: string[] = [];
  for (const type of types) {
    const folder = path.join(dir, PROMPT_FOLDERS[type]);
    fs.mkdirSync(folder, { recursive: true });
    const put = (name: string, text: string): void => {
      const f = path.join(folder, name);
      fs.writeFileSync(f, text + '\n');
      written.push(f);
    };
    put('system_message.txt', SYSTEM_MESSAGES[type]);
    for (const e of BUILTIN_FEW_SHOT[type]) {
      put(`${e.name}_caps.txt`, e.caps);
      put(`${e.name}_conv.txt`, e.conv);
    }
  }
  return written;
}

/**
 * The chat sent for one image: [system, (user: example caps, assistant: example output) x k, user: context].
 * `fewShot` limits k (default: every example of the set).
 */
export function buildMessages(set: PromptSet, context: string, fewShot?: number): ChatMessage[] {
  const k = fewShot === undefined ? set.examples.length : Math.min(Math.max(0, fewShot), set.examples.length);
  const msgs: ChatMessage[] = [{ role: 'system', content: set.system }];
  for (const e of set.examples.slice(0, k)) {
    msgs.push({ role: 'user', content: e.caps });
    msgs.push({ role: 'assistant', content: e.conv });
  }
  msgs.push({ role: 'user', content: context });
  return msgs;
}

/** A readable rendering of a chat (dry runs, debugging). */
export function renderMessages(messages: readonly ChatMessage[]): string {
  return messages.map((m) => `----- ${m.role} -----\n${m.content}`).join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// Output parsing

export interface QAPair {
  question: string;
  answer: string;
}

export type ParseOutcome<T> = { ok: true; value: T } | { ok: false; reason: string };

/** A LLaVA instruction record (§6.1) with an image. */
export interface LlavaRecord {
  id: string;
  image: string;
  conversations: Turn[];
}

const LABEL_RE = /^\s*(question|answer)\s*:[ \t]*(.*)$/i;
const SEPARATOR_RE = /^\s*===+\s*$/;

/** Parses `Question:\n...\n===\nAnswer:\n...` blocks (separated by `===`) into question/answer pairs. */
export function parseQAPairs(text: string): ParseOutcome<QAPair[]> {
  const turns: { kind: 'question' | 'answer'; lines: string[]; line: number }[] = [];
  const src = text.replace(/\r\n/g, '\n').split('\n');
  for (let i = 0; i < src.length; i++) {
    const l = src[i];
    if (SEPARATOR_RE.test(l)) continue;
    const m = LABEL_RE.exec(l);
    if (m) {
      turns.push({ kind: m[1].toLowerCase() as 'question' | 'answer', lines: m[2] ? [m[2]] : [], line: i + 1 });
      continue;
    }
    if (turns.length === 0) {
      if (pyStrip(l) === '') continue;
      return { ok: false, reason: `text before the first 'Question:' label (line ${i + 1}: ${JSON.stringify(l.slice(0, 60))})` };
    }
    turns[turns.length - 1].lines.push(l);
  }
  if (turns.length === 0) return { ok: false, reason: "no 'Question:' / 'Answer:' blocks found" };
  const pairs: QAPair[] = [];
  for (let i = 0; i < turns.length; i++) {
    const t = turns[i];
    const want = i % 2 === 0 ? 'question' : 'answer';
    if (t.kind !== want)
      return { ok: false, reason: `line ${t.line}: expected '${want === 'question' ? 'Question' : 'Answer'}:' but found '${t.kind === 'question' ? 'Question' : 'Answer'}:'` };
    const value = pyStrip(t.lines.join('\n'));
    if (!value) return { ok: false, reason: `line ${t.line}: empty ${t.kind}` };
    if (want === 'question') pairs.push({ question: value, answer: '' });
    else pairs[pairs.length - 1].answer = value;
  }
  if (turns.length % 2 === 1) return { ok: false, reason: `the last question (line ${turns[turns.length - 1].line}) has no answer` };
  return { ok: true, value: pairs };
}

/** Detail outputs are the description itself; an optional leading "Answer:" label is dropped. */
export function parseDetailOutput(text: string): ParseOutcome<string> {
  let s = pyStrip(text.replace(/\r\n/g, '\n'));
  if (!s) return { ok: false, reason: 'empty output' };
  const first = LABEL_RE.exec(s.split('\n')[0]);
  if (first && first[1].toLowerCase() === 'question') return { ok: false, reason: "expected a description, found a 'Question:' block" };
  if (first) s = pyStrip(s.replace(LABEL_RE, '$2'));
  if (!s) return { ok: false, reason: 'empty description' };
  return { ok: true, value: s };
}

/** first: "<image>\n" + question (default); last: question + "\n<image>"; random: either, seeded per image. */
export type ImagePosition = 'first' | 'last' | 'random';

/** Where an image id's random draws come from: mulberry32 seeded by (seed, type, image id). */
export function imageRng(seed: number, type: string, imageId: string): () => number {
  let h = 0x811c9dc5; // FNV-1a over the UTF-16 units of "type:id"
  const key = `${type}:${imageId}`;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return mulberry32(mixSeed(seed, h));
}

function withImage(question: string, pos: ImagePosition, rng: () => number): string {
  const first = pos === 'first' || (pos === 'random' && rng() < 0.5);
  return first ? `<image>\n${question}` : `${question}\n<image>`;
}

/** Question/answer pairs -> a LLaVA record; `<image>` is added to the first human turn only. */
export function pairsToRecord(id: string, image: string, pairs: readonly QAPair[], imagePosition: ImagePosition = 'first', rng: () => number = Math.random): LlavaRecord {
  const conversations: Turn[] = [];
  pairs.forEach((p, i) => {
    conversations.push({ from: 'human', value: i === 0 ? withImage(p.question, imagePosition, rng) : p.question });
    conversations.push({ from: 'gpt', value: p.answer });
  });
  return { id, image, conversations };
}

export interface RecordMeta {
  /** Record id (default: the image file name without extension). */
  id: string;
  /** Image path written into the record. */
  image: string;
  /** COCO image id (seeds the random draws). */
  imageId: string;
  seed?: number;
  imagePosition?: ImagePosition;
}

/**
 * Parses one model output of the given type into a LLaVA record: conversation = any number (>= 1) of
 * Q/A pairs (multi-turn); complex_reasoning = exactly one pair; detail = the description, with a question
 * drawn from DETAIL_DESCRIPTION_QUESTIONS (seeded per image).
 */
export function parseGptOutput(type: GptDataType, text: string, meta: RecordMeta): ParseOutcome<LlavaRecord> {
  const rng = imageRng(meta.seed ?? 42, type, meta.imageId);
  const pos = meta.imagePosition ?? 'first';
  if (type === 'detail') {
    const d = parseDetailOutput(text);
    if (!d.ok) return d;
    const q = DETAIL_DESCRIPTION_QUESTIONS[Math.floor(rng() * DETAIL_DESCRIPTION_QUESTIONS.length)];
    return { ok: true, value: pairsToRecord(meta.id, meta.image, [{ question: q, answer: d.value }], pos, rng) };
  }
  const p = parseQAPairs(text);
  if (!p.ok) return p;
  if (type === 'complex_reasoning' && p.value.length !== 1)
    return { ok: false, reason: `expected exactly one Question/Answer pair, found ${p.value.length}` };
  return { ok: true, value: pairsToRecord(meta.id, meta.image, p.value, pos, rng) };
}

/** A stage-1-style caption record: a brief-description question (seeded) + `<image>`, answered by the caption. */
export function briefCaptionRecord(o: { id: string; image: string; caption: string; seed?: number; imagePosition?: ImagePosition }): LlavaRecord {
  const rng = imageRng(o.seed ?? 42, 'brief', o.id);
  const q = BRIEF_DESCRIPTION_QUESTIONS[Math.floor(rng() * BRIEF_DESCRIPTION_QUESTIONS.length)];
  return pairsToRecord(o.id, o.image, [{ question: q, answer: pyStrip(o.caption) }], o.imagePosition ?? 'first', rng);
}

/** Record id and image path of a COCO image: "000000033471" and prefix + "000000033471.jpg". */
export function recordIdentity(img: ImageContextSource, imagePrefix = ''): { id: string; image: string } {
  const ext = path.extname(img.fileName);
  return { id: ext ? img.fileName.slice(0, -ext.length) : img.fileName, image: imagePrefix + img.fileName };
}

// ---------------------------------------------------------------------------------------------------------
// Client

export const DEFAULT_MODEL = 'gpt-4-0314';

// ---------------------------------------------------------------------------------------------------------
// JSONL log and collection

/** One line of the generation JSONL: the raw response and its parse (record or error). */
export interface GenerationLine {
  type: GptDataType;
  /** Position of the image in the source list. */
  index: number;
  image_id: string;
  id: string;
  image: string;
  model: string | null;
  response: string;
  finish_reason: string | null;
  usage: Record<string, unknown> | null;
  record: LlavaRecord | null;
  error: string | null;
  created: string;
}

export interface ImageIssue {
  type?: GptDataType;
  imageId: string;
  reason: string;
}

export interface JsonlReadResult {
  lines: GenerationLine[];
  /** Lines that are not JSON or lack the fields above (a crash can leave a partial last line). */
  bad: { file: string; line: number; reason: string }[];
}

/** Calls `fn(text, lineNumber)` for every line of a file, reading 1 MiB at a time (JSONL files of a full
 *  run reach hundreds of MB, more than one JS string may hold). */
export function forEachLine(file: string, fn: (line: string, lineNo: number) => void): void {
  const fd = fs.openSync(file, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    let rest: Buffer = Buffer.alloc(0);
    let lineNo = 0;
    for (;;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      const buf = n > 0 ? Buffer.concat([rest, chunk.subarray(0, n)]) : rest;
      let start = 0;
      for (let i = buf.indexOf(0x0a, start); i >= 0; i = buf.indexOf(0x0a, start)) {
        fn(buf.toString('utf8', start, i), ++lineNo);
        start = i + 1;
      }
      rest = Buffer.from(buf.subarray(start));
      if (n === 0) {
        if (rest.length > 0) fn(rest.toString('utf8'), ++lineNo);
        return;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Streams the valid lines of a generation JSONL file (missing file = nothing); returns the bad ones. */
export function scanGenerationJsonl(file: string, fn: (l: GenerationLine) => void): JsonlReadResult['bad'] {
  const bad: JsonlReadResult['bad'] = [];
  if (!fs.existsSync(file)) return bad;
  forEachLine(file, (l, lineNo) => {
    if (!l.trim()) return;
    let j: GenerationLine;
    try {
      j = JSON.parse(l) as GenerationLine;
    } catch (e) {
      bad.push({ file, line: lineNo, reason: `not JSON (${(e as Error).message})` });
      return;
    }
    if (typeof j !== 'object' || j === null || typeof j.image_id !== 'string' || typeof j.type !== 'string' || !('record' in j))
      bad.push({ file, line: lineNo, reason: 'not a generation record (needs type, image_id, record)' });
    else fn(j);
  });
  return bad;
}

/** Reads a whole generation JSONL file into memory (missing file = empty). */
export function readGenerationJsonl(file: string): JsonlReadResult {
  const lines: GenerationLine[] = [];
  const bad = scanGenerationJsonl(file, (l) => lines.push(l));
  return { lines, bad };
}

/** What resuming needs of a line: which image of which type, and whether it produced a record. */
type LineStatus = { type: string; image_id: string; record: unknown };

/** Image ids of a type that a rerun skips: those with a line (with `retryFailed`, only those whose latest line has a record). */
export function completedImageIds(lines: Iterable<LineStatus>, type: GptDataType, retryFailed = false): Set<string> {
  const latestOk = new Map<string, boolean>();
  for (const l of lines) if (l.type === type) latestOk.set(l.image_id, l.record !== null);
  const done = new Set<string>();
  for (const [id, ok] of latestOk) if (!retryFailed || ok) done.add(id);
  return done;
}

export interface CollectResult {
  records: LlavaRecord[];
  /** Images whose latest line has no record (malformed output), with the reason. */
  failures: ImageIssue[];
  /** Records that data.ts validation rejects (should not happen; reported, left out). */
  invalid: ImageIssue[];
  bad: JsonlReadResult['bad'];
  outFile: string | null;
}

/** Same text as JSON.stringify(records, null, 2) + "\n", written one record at a time. */
function writeJsonArray(file: string, records: readonly unknown[]): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    if (records.length === 0) fs.writeSync(fd, '[]\n');
    else {
      fs.writeSync(fd, '[\n');
      records.forEach((r, i) => fs.writeSync(fd, `  ${JSON.stringify(r, null, 2).replace(/\n/g, '\n  ')}${i + 1 < records.length ? ',' : ''}\n`));
      fs.writeSync(fd, ']\n');
    }
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/**
 * Collects generation JSONL files into one LLaVA JSON array. Per file, the latest line of each (type, image)
 * wins and records are ordered by source position; files are concatenated in the order given. Each record is
 * checked with the training-data validator (data.ts). With `outFile` the array is written there.
 */
export function collectInstructData(files: readonly string[], outFile?: string): CollectResult {
  const res: CollectResult = { records: [], failures: [], invalid: [], bad: [], outFile: outFile ?? null };
  for (const f of files) {
    if (!fs.existsSync(f)) throw new GptDataError(`JSONL file ${f} not found`);
    // Only what the output needs is kept (not the raw responses).
    const latest = new Map<string, Pick<GenerationLine, 'type' | 'image_id' | 'index' | 'record' | 'error'>>();
    res.bad.push(
      ...scanGenerationJsonl(f, (l) => latest.set(`${l.type}\u0000${l.image_id}`, { type: l.type, image_id: l.image_id, index: l.index, record: l.record, error: l.error })),
    );
    const sorted = [...latest.values()].sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
    for (const l of sorted) {
      if (l.record === null) {
        res.failures.push({ type: l.type, imageId: l.image_id, reason: l.error ?? 'no record' });
        continue;
      }
      const v = validateRecord(l.record, 'instruct');
      if (v.errors.length) res.invalid.push({ type: l.type, imageId: l.image_id, reason: v.errors.join('; ') });
      else res.records.push(l.record);
    }
  }
  if (outFile) writeJsonArray(outFile, res.records);
  return res;
}

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
  const log = o.log ?? ((m: string) => console.log(m));
  const prompts = o.prompts ?? builtinPromptSet(o.type);
  if (prompts.type !== o.type) throw new GptDataError(`prompt set is for '${prompts.type}', not '${o.type}'`);
  const concurrency = o.concurrency ?? 4;
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new GptDataError(`concurrency must be an integer >= 1 (got ${concurrency})`);
  if (usesBoxes(o.type) && o.images.length > 0 && o.images.every((im) => im.objects.length === 0))
    log(`[gen-data] warning: no image has object boxes; ${o.type} prompts expect them (was an instances file given?)`);

  const seen: LineStatus[] = [];
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
  let next = 0;
  const stop: { error: Error | null } = { error: null };
  const worker = async (): Promise<void> => {
    while (stop.error === null && next < todo.length) {
      const img = todo[next++];
      const { id, image } = recordIdentity(img, o.imagePrefix);
      const messages = buildMessages(prompts, buildContext(img, o.type, { coordStyle: o.coordStyle }), o.fewShot);
      let r: ChatCompletionResult;
      try {
        r = await o.client.complete(messages);
      } catch (e) {
        if (e instanceof ApiError && !e.fatal) {
          summary.apiErrors.push({ type: o.type, imageId: img.imageId, reason: e.message });
          tick(true);
          continue;
        }
        stop.error ??= e as Error;
        return;
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
      fs.appendFileSync(o.outJsonl, JSON.stringify(line) + '\n');
      summary.completed++;
      if (!parsed.ok) summary.parseErrors.push({ type: o.type, imageId: img.imageId, reason: parsed.reason });
      tick(!parsed.ok);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, todo.length) }, worker));
  } finally {
    progress.stop();
  }
  if (stop.error !== null) {
    const e = stop.error;
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

/** One line of a dry run (the OpenAI Batch API input format, so the file can also be submitted as a batch). */
export interface DryRunLine {
  custom_id: string;
  method: 'POST';
  url: '/v1/chat/completions';
  body: { model: string; messages: ChatMessage[]; temperature?: number; max_tokens?: number };
}

/** Writes the request of every image without calling any API; returns the first chat for display. */
export function writeDryRun(o: DryRunOptions): { outFile: string; count: number; first: ChatMessage[] | null } {
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
