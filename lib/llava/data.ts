// LLaVA training data records: parsing and validation of the JSON datasets (spec §6), image-file checks,
// the reference's length heuristics (`lengths` / `modality_lengths`, spec §4.7) and the samplers
// (`group_by_modality_length`, spec §4.8, plus plain seeded shuffling).
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
// - Randomness: mulberry32 (32-bit state, one 32-bit multiply-xorshift step per draw) seeded through a
//   splitmix32 mix of (seed, epoch). Permutations are Fisher–Yates. The reference draws from torch's global
//   RNG; we reproduce the algorithm and its determinism, not torch's random stream.
// - In the modality-grouped sampler the *last* megabatch of each modality is always set aside and appended
//   (merged and index-sorted) at the end, even when it happens to be full — this is what the reference does;
//   spec §4.8 describes it as "the trailing partial megabatches".

import * as fs from 'fs';
import * as path from 'path';

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
}

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

export const IMAGE_PLACEHOLDER_TEXT = '<image>';

// ---------------------------------------------------------------------------------------------------------
// Python string helpers (str.isspace set; used for strip() and split() fidelity)

const PY_WS = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_STRIP_RE = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'g');
const PY_SPLIT_RE = new RegExp(`[${PY_WS}]+`);

/** Python `s.strip()` (JS trim() differs on \x1c-\x1f, \x85 and \ufeff). */
export function pyStrip(s: string): string {
  return s.replace(PY_STRIP_RE, '');
}

/** Python `s.split()` with no separator: runs of whitespace, no empty strings. */
export function pyWhitespaceSplit(s: string): string[] {
  return s.split(PY_SPLIT_RE).filter((w) => w.length > 0);
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
      if (tt.from !== 'human' && tt.from !== 'gpt')
        errors.push(`turn ${k}: from must be 'human' or 'gpt', got ${JSON.stringify(tt.from)}`);
      if (typeof tt.value !== 'string') errors.push(`turn ${k}: value must be a string`);
      else if (pyStrip(tt.value).length === 0) errors.push(`turn ${k}: value is empty`);
      else if (tt.value.includes('</s>'))
        errors.push(`turn ${k}: value contains a literal "</s>" (would be read as EOS and break the v1 mask)`);
      if ((tt.from === 'human' || tt.from === 'gpt') && typeof tt.value === 'string')
        turns.push({ from: tt.from, value: tt.value });
    });
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

    const counts = turns.map((t) => countOccurrences(t.value, IMAGE_PLACEHOLDER_TEXT));
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
      else if (turns[0].from !== 'human' || !turns[0].value.includes(IMAGE_PLACEHOLDER_TEXT))
        errors.push('pretraining sample: first turn must be human and contain <image>');
    }
    if (kind === 'sqa') {
      const last = rest[rest.length - 1];
      if (last && sqaAnswerLetter(last.value) === null)
        warnings.push('ScienceQA answer has no "The answer is X." sentence');
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
    throw new DataError(`[data] ${source}: malformed JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new DataError(`[data] ${source}: top level must be a JSON array of samples`);

  const report: ValidationReport = { source, total: raw.length, valid: 0, errors: [], warnings: [] };
  const samples: Sample[] = [];
  const indices: number[] = [];
  raw.forEach((rec, index) => {
    const v = validateRecord(rec, kind);
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
    log(`[data] ${source}: skipped ${skipped} of ${report.total} malformed records (first: record ` +
      `${report.errors[0].index}, id ${report.errors[0].id ?? '?'}: ${report.errors[0].message})`);
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

// ---------------------------------------------------------------------------------------------------------
// Randomness

/** mulberry32: tiny 32-bit PRNG, uniform floats in [0, 1). Deterministic for a given seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** splitmix32-style mix of (seed, stream), to derive independent per-epoch seeds. */
export function mixSeed(seed: number, stream = 0): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b9) + Math.imul(stream >>> 0, 0x85ebca6b) + 0x7f4a7c15) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Fisher–Yates permutation of 0..n-1 (the role torch.randperm plays in the reference). */
export function randomPermutation(n: number, rng: () => number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** Plain random-sampler order for an epoch: deterministic in (seed, epoch). */
export function shuffleIndices(n: number, seed: number, epoch = 0): number[] {
  return randomPermutation(n, mulberry32(mixSeed(seed, epoch)));
}

// ---------------------------------------------------------------------------------------------------------
// Length-grouped samplers (llava_trainer.py)

/** Split sorted indices into numChunks chunks of equal count, greedily balancing total length. */
export function splitToEvenChunks(indices: number[], lengths: number[], numChunks: number): number[][] {
  if (indices.length % numChunks !== 0) {
    // Not divisible: strided split, as the reference does.
    return Array.from({ length: numChunks }, (_, c) => indices.filter((_, k) => k % numChunks === c));
  }
  const per = indices.length / numChunks;
  const chunks: number[][] = Array.from({ length: numChunks }, () => []);
  const totals = new Array<number>(numChunks).fill(0);
  for (const idx of indices) {
    let best = 0;
    for (let c = 1; c < numChunks; c++) if (totals[c] < totals[best]) best = c; // first minimum wins
    chunks[best].push(idx);
    totals[best] += lengths[idx];
    if (chunks[best].length === per) totals[best] = Infinity;
  }
  return chunks;
}

/** `get_length_grouped_indices`: random permutation, megabatches of worldSize*batchSize sorted by length
 *  (descending, stable), each split into worldSize balanced chunks. */
export function lengthGroupedIndices(
  lengths: number[],
  batchSize: number,
  worldSize: number,
  rng: () => number,
): number[] {
  const perm = randomPermutation(lengths.length, rng);
  const mb = worldSize * batchSize;
  const out: number[] = [];
  for (let i = 0; i < perm.length; i += mb) {
    const megabatch = perm.slice(i, i + mb).sort((a, b) => lengths[b] - lengths[a]);
    for (const chunk of splitToEvenChunks(megabatch, lengths, worldSize)) out.push(...chunk);
  }
  return out;
}

/** `get_modality_length_grouped_indices` (group_by_modality_length). `lengths` are modality lengths
 *  (positive = image sample, negative = text-only); `worldSize` is world_size × grad_accum as the trainer
 *  passes it. Every megabatch holds one modality except the final, merged one. */
export function modalityLengthGroupedIndices(
  lengths: number[],
  batchSize: number,
  worldSize: number,
  rng: () => number,
): number[] {
  const zero = lengths.findIndex((l) => l === 0);
  if (zero >= 0) throw new DataError(`[data] sampler: sample ${zero} has zero length (reference asserts non-zero)`);
  if (lengths.every((l) => l > 0) || lengths.every((l) => l < 0)) {
    // Single modality: the reference passes the signed lengths through unchanged, so an all-text-only set
    // sorts its megabatches by -words, i.e. shortest first. Kept as is.
    return lengthGroupedIndices(lengths, batchSize, worldSize, rng);
  }
  const mmIdx: number[] = [];
  const mmLen: number[] = [];
  const langIdx: number[] = [];
  const langLen: number[] = [];
  lengths.forEach((l, i) => {
    if (l > 0) {
      mmIdx.push(i);
      mmLen.push(l);
    } else {
      langIdx.push(i);
      langLen.push(-l);
    }
  });
  // Draw order as in the reference: image permutation, text permutation, then the megabatch permutation.
  const mmShuffle = lengthGroupedIndices(mmLen, batchSize, worldSize, rng).map((i) => mmIdx[i]);
  const langShuffle = lengthGroupedIndices(langLen, batchSize, worldSize, rng).map((i) => langIdx[i]);
  const mb = worldSize * batchSize;
  const cut = (xs: number[]) => {
    const r: number[][] = [];
    for (let i = 0; i < xs.length; i += mb) r.push(xs.slice(i, i + mb));
    return r;
  };
  const mmMb = cut(mmShuffle);
  const langMb = cut(langShuffle);
  const additional = [...mmMb[mmMb.length - 1], ...langMb[langMb.length - 1]];
  const full = [...mmMb.slice(0, -1), ...langMb.slice(0, -1)];
  const order = randomPermutation(full.length, rng);
  const megabatches = order.map((k) => full[k]);
  if (additional.length > 0) megabatches.push(additional.sort((a, b) => a - b));
  return megabatches.flat();
}

export interface EpochOrderOptions {
  seed: number;
  epoch?: number;
  /** per-device batch size */
  batchSize?: number;
  /** world_size × gradient_accumulation_steps */
  worldSize?: number;
  groupByModalityLength?: boolean;
}

/** Sample order for one epoch: modality-length grouped (v1.5 finetune) or a plain seeded shuffle. */
export function epochOrder(samples: Sample[], opts: EpochOrderOptions): number[] {
  if (!opts.groupByModalityLength) return shuffleIndices(samples.length, opts.seed, opts.epoch ?? 0);
  const rng = mulberry32(mixSeed(opts.seed, opts.epoch ?? 0));
  return modalityLengthGroupedIndices(samples.map(modalityLengthOf), opts.batchSize ?? 1, opts.worldSize ?? 1, rng);
}
