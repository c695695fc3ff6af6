// data.ts — LLaVA training data records: parsing and validation of the JSON datasets (docs/reference.md §6),
// image-file checks and the reference's length heuristics (`lengths` / `modality_lengths`, §4.7). The
// samplers that use those lengths are in train/sampler.ts, the seeded randomness in util/random.ts.
//
// Non-obvious decisions:
// - Validation is strict about anything the reference would crash on or silently train nothing on (bad roles,
//   non-alternating turns, a conversation ending on a human turn, empty turns, a literal `</s>` in a value, an
//   `image` key whose value is not a path, `<image>` count mismatches). Every rejected record is reported
//   with its index and id; with onError 'fatal' the first one throws, with 'skip' it is dropped and reported.
//   Nothing is ever dropped without a report entry.
// - `id` may be a string or a number (coerced to a string); mix665k-like files are not guaranteed uniform.
// - "has an image" is `'image' in record`, as the reference tests it; `"image": null` is therefore an error,
//   not a text-only sample.
// - Word counts use Python `str.split()` semantics (runs of Python whitespace), so lengths match the reference.

import * as fs from 'fs';
import * as path from 'path';
import { pyStrip, pyWhitespaceSplit } from '../util/pyformat';
import { DEFAULT_IMAGE_TOKEN } from '../../constants';
import { describeJsonError } from '../../io/json';

export interface Turn {
  from: 'human' | 'gpt';
  value: string;
}

export interface Sample {
  id: string;
  /** Relative image path (to the image folder); absent for text-only samples. */
  image?: string;
  conversations: Turn[];
}

/** instruct: LLaVA-Instruct-158K / mix665k (§6.1); pretrain: LCS-558K / CC3M-595K chat.json (§6.2);
 *  sqa: converted ScienceQA `llava_{split}_{format}.json` (§6.3). */
export type DatasetKind = 'instruct' | 'pretrain' | 'sqa';

export interface RecordIssue {
  /** Index of the record in the source JSON array. */
  index: number;
  id: string | null;
  message: string;
}

export interface ValidationReport {
  source: string;
  total: number;
  valid: number;
  errors: RecordIssue[];
  warnings: RecordIssue[];
}

export interface ParseOptions {
  kind?: DatasetKind;
  onError?: 'skip' | 'fatal';
  /** Receives one summary line when records were skipped (default: console.warn). */
  logger?: (msg: string) => void;
  /** Name used in messages (file path). */
  source?: string;
  /** Largest total length of a record's turn texts, in characters (default MAX_RECORD_CHARS). */
  maxRecordChars?: number;
}

/** A record whose turns hold more text than this is refused: LLaVA trains on at most a few thousand tokens
 *  per sample, and one runaway value (tens of MB) would otherwise exhaust the heap while tokenizing. */
export const MAX_RECORD_CHARS = 1_000_000;

export interface ParsedDataset {
  samples: Sample[];
  /** indices[k] = position of samples[k] in the source array. */
  indices: number[];
  report: ValidationReport;
}

export class DataError extends Error {
  constructor(
    message: string,
    readonly issues: RecordIssue[] = [],
  ) {
    super(message);
    this.name = 'DataError';
  }
}

function countOccurrences(s: string, needle: string): number {
  return s.split(needle).length - 1;
}

// ---------------------------------------------------------------------------------------------------------
// Validation

/** Checks one raw record; returns the normalised sample (or null) and the messages found. */
export function validateRecord(
  rec: unknown,
  kind: DatasetKind = 'instruct',
  maxChars = MAX_RECORD_CHARS,
): { sample: Sample | null; id: string | null; errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
    return { sample: null, id: null, errors: ['record is not an object'], warnings };
  }
  const r = rec as Record<string, unknown>;
  let id: string | null = null;
  if (!('id' in r) || r.id === null || r.id === undefined) errors.push('missing id');
  else if (typeof r.id === 'string') id = r.id;
  else if (typeof r.id === 'number' && Number.isFinite(r.id)) id = String(r.id);
  else errors.push(`id must be a string or number, got ${typeof r.id}`);

  const hasImage = 'image' in r;
  let image: string | undefined;
  if (hasImage) {
    if (Array.isArray(r.image)) errors.push('image is a list (multi-image samples are not supported)');
    else if (typeof r.image !== 'string' || r.image.length === 0)
      errors.push('image must be a non-empty string path (the key being present marks an image sample)');
    else image = r.image;
  }

  const convs = r.conversations;
  const turns: Turn[] = [];
  if (!Array.isArray(convs) || convs.length === 0) {
    errors.push('conversations must be a non-empty array');
  } else {
    convs.forEach((t, k) => {
      if (t === null || typeof t !== 'object' || Array.isArray(t)) {
        errors.push(`turn ${k} is not an object`);
        return;
      }
      const tt = t as Record<string, unknown>;
      if (tt.from !== 'human' && tt.from !== 'gpt') errors.push(`turn ${k}: from must be 'human' or 'gpt', got ${JSON.stringify(tt.from)}`);
      if (typeof tt.value !== 'string') errors.push(`turn ${k}: value must be a string`);
      else if (pyStrip(tt.value).length === 0) errors.push(`turn ${k}: value is empty`);
      else if (tt.value.includes('</s>')) errors.push(`turn ${k}: value contains a literal "</s>" (would be read as EOS and break the v1 mask)`);
      if ((tt.from === 'human' || tt.from === 'gpt') && typeof tt.value === 'string') turns.push({ from: tt.from, value: tt.value });
    });
    const chars = turns.reduce((n, t) => n + t.value.length, 0);
    if (chars > maxChars) errors.push(`the conversation holds ${chars} characters, over the limit of ${maxChars} per record`);
  }

  if (errors.length === 0) {
    // Role structure as the v1/llama_2 preprocessors assert it: an opening gpt turn is dropped, then strict
    // alternation human/gpt, and the last turn must be an answer (otherwise the whole sample is masked).
    let start = 0;
    if (turns[0].from === 'gpt') {
      warnings.push('first turn is from gpt; the v1 preprocessor drops it');
      start = 1;
    }
    const rest = turns.slice(start);
    if (rest.length === 0) errors.push('no turns left after dropping the leading gpt turn');
    rest.forEach((t, k) => {
      const want = k % 2 === 0 ? 'human' : 'gpt';
      if (t.from !== want) errors.push(`turn ${k + start}: expected ${want}, got ${t.from} (roles must alternate)`);
    });
    if (rest.length > 0 && rest[rest.length - 1].from !== 'gpt')
      errors.push('last turn is from human (no answer; the v1 mismatch check would mask the whole sample)');

    const counts = turns.map((t) => countOccurrences(t.value, DEFAULT_IMAGE_TOKEN));
    const total = counts.reduce((a, b) => a + b, 0);
    if (hasImage) {
      if (total !== 1) errors.push(`image sample must contain exactly one <image> placeholder, found ${total}`);
      else {
        const k = counts.findIndex((c) => c > 0);
        if (turns[k].from !== 'human') errors.push(`<image> placeholder is in a gpt turn (turn ${k})`);
        else if (k !== start) warnings.push(`<image> placeholder is in turn ${k}, not the first human turn`);
      }
    } else if (total > 0) {
      errors.push('text-only sample (no image key) contains an <image> placeholder');
    }

    if (kind === 'pretrain') {
      if (!hasImage) errors.push('pretraining sample has no image');
      if (turns.length !== 2) errors.push(`pretraining sample must have exactly 2 turns, has ${turns.length}`);
      else if (turns[0].from !== 'human' || !turns[0].value.includes(DEFAULT_IMAGE_TOKEN))
        errors.push('pretraining sample: first turn must be human and contain <image>');
    }
    if (kind === 'sqa') {
      const last = rest[rest.length - 1];
      if (last && sqaAnswerLetter(last.value) === null) warnings.push('ScienceQA answer has no "The answer is X." sentence');
    }
  }

  if (errors.length > 0) return { sample: null, id, errors, warnings };
  const sample: Sample = { id: id as string, conversations: turns };
  if (image !== undefined) sample.image = image;
  return { sample, id, errors, warnings };
}

/** Parses a dataset JSON text (a JSON array of records) and validates every record. */
export function parseDataset(text: string, opts: ParseOptions = {}): ParsedDataset {
  const source = opts.source ?? '<json>';
  const kind = opts.kind ?? 'instruct';
  const onError = opts.onError ?? 'fatal';
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new DataError(`[data] ${source}: ${describeJsonError(text, e)}`);
  }
  if (!Array.isArray(raw)) throw new DataError(`[data] ${source}: top level must be a JSON array of samples`);

  const report: ValidationReport = { source, total: raw.length, valid: 0, errors: [], warnings: [] };
  const samples: Sample[] = [];
  const indices: number[] = [];
  raw.forEach((rec, index) => {
    const v = validateRecord(rec, kind, opts.maxRecordChars);
    for (const message of v.warnings) report.warnings.push({ index, id: v.id, message });
    if (v.sample === null) {
      const issues = v.errors.map((message) => ({ index, id: v.id, message }));
      report.errors.push(...issues);
      if (onError === 'fatal') {
        throw new DataError(`[data] ${source}: record ${index} (id ${v.id ?? '?'}): ${v.errors.join('; ')}`, issues);
      }
      return;
    }
    samples.push(v.sample);
    indices.push(index);
  });
  report.valid = samples.length;
  const skipped = report.total - report.valid;
  if (skipped > 0) {
    const log = opts.logger ?? ((m: string) => console.warn(m));
    log(
      `[data] ${source}: skipped ${skipped} of ${report.total} malformed records (first: record ` +
        `${report.errors[0].index}, id ${report.errors[0].id ?? '?'}: ${report.errors[0].message})`,
    );
  }
  return { samples, indices, report };
}

/** Reads and parses a dataset file. */
export function loadDataset(file: string, opts: Omit<ParseOptions, 'source'> = {}): ParsedDataset {
  return parseDataset(fs.readFileSync(file, 'utf8'), { ...opts, source: file });
}

/** Resolves an image path as the reference does (`os.path.join(folder, image)`: an absolute image path wins). */
export function imagePath(folder: string, image: string): string {
  return path.resolve(folder, image);
}

/** Reports every image sample whose file is missing (or not a regular file) under `folder`. */
export function checkImages(samples: Sample[], folder: string, indices?: number[]): RecordIssue[] {
  const issues: RecordIssue[] = [];
  samples.forEach((s, k) => {
    if (s.image === undefined) return;
    const p = imagePath(folder, s.image);
    let ok = false;
    try {
      ok = fs.statSync(p).isFile();
    } catch {
      ok = false;
    }
    if (!ok) issues.push({ index: indices ? indices[k] : k, id: s.id, message: `missing image file ${p}` });
  });
  return issues;
}

// ---------------------------------------------------------------------------------------------------------
// Dataset-specific helpers

/** Pretraining sample → its caption (the gpt turn); the brief instruction is discarded by `plain` (§4.3). */
export function captionOf(sample: Sample): string {
  return sample.conversations[1].value;
}

/** "The answer is X." → X (A–E), from a converted ScienceQA answer; null when absent. */
export function sqaAnswerLetter(text: string): string | null {
  const m = /The answer is ([A-E])\./.exec(text);
  return m ? m[1] : null;
}

// ---------------------------------------------------------------------------------------------------------
// Lengths (LazySupervisedDataset.lengths / .modality_lengths)

function wordCount(sample: Sample): number {
  let n = 0;
  for (const t of sample.conversations) n += pyWhitespaceSplit(t.value).length;
  return n;
}

/** Reference `lengths`: whitespace words over all turns, + 128 when the sample has an image. */
export function lengthOf(sample: Sample): number {
  return wordCount(sample) + (sample.image !== undefined ? 128 : 0);
}

/** Reference `modality_lengths`: word count, positive for image samples, negative for text-only ones. */
export function modalityLengthOf(sample: Sample): number {
  const n = wordCount(sample);
  return sample.image !== undefined ? n : -n;
}
