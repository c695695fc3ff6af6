// common.ts — what both benchmarks (ScienceQA and LLaVA-Bench) and their answer/judge steps share: the
// error class, the JSON reader that reports through it, and the answer line a model writes
// (model_vqa*.py output) with its validation. The readers wrap util/files and io/json.
import { readJson as readJsonFile } from '../../io/json';
import { readJsonl as readJsonlFile } from '../util/files';

/** A bad evaluation input or a failed evaluation step. Every message reads `[eval] ...`: the prefix is
 *  added here unless the message already carries it (as the JSON reader's messages do). */
export class EvalError extends Error {
  constructor(message: string) {
    super(message.startsWith('[eval] ') ? message : `[eval] ${message}`);
    this.name = 'EvalError';
  }
}

/** Reads a JSON input of an evaluation (errors are EvalErrors naming the file). */
export function readJson<T = unknown>(file: string, what = 'JSON file'): T {
  return readJsonFile<T>(file, what, 'eval', { makeError: (m) => new EvalError(m) });
}

/** Reads a JSONL input of an evaluation, one record a line (errors are EvalErrors naming the file and line). */
export function readJsonl<T = unknown>(file: string, what = 'JSONL file'): T[] {
  try {
    return readJsonlFile<T>(file, what);
  } catch (e) {
    throw new EvalError((e as Error).message);
  }
}

/** One line of a model's answers JSONL (model_vqa*.py output). */
export interface AnswerRecord {
  question_id: string | number;
  prompt: string;
  text: string;
  answer_id?: string;
  model_id?: string;
  metadata?: Record<string, unknown>;
}

/** Field kinds checkFields knows: 'id' = string or number, 'text' = string or list of strings, 'array', or a
 *  `typeof` name. */
export type FieldKind = 'id' | 'text' | 'array' | 'string' | 'number';

/** Checks that parsed JSONL line `at` (0-based) is an object with the given fields, naming the line if not. */
export function checkFields(rec: unknown, fields: Record<string, FieldKind>, what: string, at: number): void {
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) throw new EvalError(`${what}: line ${at + 1} is not a JSON object`);
  const r = rec as Record<string, unknown>;
  for (const [k, type] of Object.entries(fields)) {
    const v = r[k];
    const ok =
      type === 'id'
        ? typeof v === 'string' || typeof v === 'number'
        : type === 'array'
          ? Array.isArray(v)
          : type === 'text'
            ? typeof v === 'string' || Array.isArray(v)
            : typeof v === type;
    if (!ok)
      throw new EvalError(
        `${what}: line ${at + 1} needs "${k}" (${type === 'id' ? 'string or number' : type === 'text' ? 'string or list of strings' : type})`,
      );
  }
}

/** Validates parsed answer lines (a model's, or the GPT-4 reference's of LLaVA-Bench). */
export function validateBenchAnswers(recs: unknown[], source = 'answers'): AnswerRecord[] {
  recs.forEach((r, i) => checkFields(r, { question_id: 'id', text: 'string' }, source, i));
  return recs as AnswerRecord[];
}
