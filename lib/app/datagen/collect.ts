// collect.ts — the generation JSONL log (one line per answered image: raw reply plus parsed record or the
// reason it did not parse), read back for resuming and collected into the LLaVA JSON array
// (llava_instruct_*.json style). Files of a full run reach hundreds of MB, so they are streamed.
//
// Decisions:
// - Resume: an image whose (type, image id) already has a line is skipped — including one whose output was
//   malformed, so a restart never pays twice; `retryFailed` re-asks only those.
// - Lines that are not JSON or not generation records (a crash can leave a partial last line) are reported
//   with their file and line number and otherwise ignored.
import * as fs from 'fs';
import * as path from 'path';
import { validateRecord } from '../processing/data';
import type { GptDataType } from './prompts';
import type { LlavaRecord } from './parse';
import { GptDataError } from './common';

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
  /** Records that processing/data.ts validation rejects (should not happen; reported, left out). */
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
 * checked with the training-data validator (processing/data.ts). With `outFile` the array is written there.
 */
export function collectInstructData(files: readonly string[], outFile?: string): CollectResult {
  const res: CollectResult = { records: [], failures: [], invalid: [], bad: [], outFile: outFile ?? null };
  for (const f of files) {
    if (!fs.existsSync(f)) throw new GptDataError(`JSONL file ${f} not found`);
    // Only what the output needs is kept (not the raw responses).
    const latest = new Map<string, Pick<GenerationLine, 'type' | 'image_id' | 'index' | 'record' | 'error'>>();
    res.bad.push(
      ...scanGenerationJsonl(f, (l) =>
        latest.set(`${l.type}\u0000${l.image_id}`, { type: l.type, image_id: l.image_id, index: l.index, record: l.record, error: l.error }),
      ),
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
