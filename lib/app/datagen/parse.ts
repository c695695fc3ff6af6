// parse.ts — a GPT reply turned into a LLaVA instruction record (docs/reference.md §6.1): Question/Answer
// blocks (conversation, complex reasoning) or a description (detail, with a drawn question), `<image>`
// placed in the first human turn, and the record's id and image path.
//
// Decisions:
// - Output parsing is lenient about layout and strict about structure: `Question:` / `Answer:` label lines
//   open a turn (text may follow the colon on the same line), `===` lines are separators, and anything else
//   belongs to the open turn. Text before the first label, two questions or two answers in a row, an empty
//   turn, a question without an answer, or (complex reasoning) more than one pair is an error, returned as
//   a reason (never thrown: the caller keeps the raw reply and reports it).
// - `<image>` goes first in the first human turn ("<image>\n" + question) by default: LLaVA >= 1.0 moves it
//   there during training anyway (docs/reference.md §10.2), so the reference's random side carries no
//   information. The reference-like random side is available as imagePosition 'random' (seeded per image).
// - Randomness (the detail question, the random image side) is drawn from mulberry32 seeded by
//   (seed, type, image id), not from one stream, so results do not depend on the order in which concurrent
//   requests finish, and a resumed run draws the same as an uninterrupted one.
// - The record id is the image file name without its extension ("000000033471"), image the file name with an
//   optional prefix (e.g. "coco/train2017/" for the mix665k layout), as in the released LLaVA files.
import * as path from 'path';
import type { Turn } from '../processing/data';
import { BRIEF_DESCRIPTION_QUESTIONS, DETAIL_DESCRIPTION_QUESTIONS, type GptDataType } from './prompts';
import type { ImageContextSource } from './context';
import { mixSeed, mulberry32 } from '../util/random';
import { pyStrip } from '../util/pyformat';

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
      return {
        ok: false,
        reason: `line ${t.line}: expected '${want === 'question' ? 'Question' : 'Answer'}:' but found '${t.kind === 'question' ? 'Question' : 'Answer'}:'`,
      };
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
export function pairsToRecord(
  id: string,
  image: string,
  pairs: readonly QAPair[],
  imagePosition: ImagePosition = 'first',
  rng: () => number = Math.random,
): LlavaRecord {
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
