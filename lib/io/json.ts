// json.ts — reading a JSON file with errors that name the file and say what went wrong. Used by the
// checkpoint loader, the tokenizer and the application's data, evaluation and data-generation readers.
import * as fs from 'fs';

export interface ReadJsonOptions {
  /** Require a JSON object at the top level (not an array, string, number or null). */
  object?: boolean;
  /** Builds the thrown error (a caller's own error class); default `new Error(message)`. */
  makeError?: (message: string) => Error;
}

/** Parses `file` as JSON. Errors read "[area] <what> <file> not found" or "... malformed JSON (reason)". */
export function readJson<T = unknown>(file: string, what: string, area: string, o: ReadJsonOptions = {}): T {
  const fail = (m: string): never => {
    throw (o.makeError ?? ((s: string) => new Error(s)))(`[${area}] ${what} ${file}${m}`);
  };
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(code === 'ENOENT' ? ' not found' : `: cannot read (${code ?? (e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    fail(`: malformed JSON (${(e as Error).message})`);
  }
  if (o.object && (typeof v !== 'object' || v === null || Array.isArray(v))) fail(': malformed JSON (not a JSON object)');
  return v as T;
}
