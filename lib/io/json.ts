// json.ts — reading a JSON file with errors that name the file and say what went wrong, and where: a
// syntax error names its line and column. Used by the checkpoint loader, the tokenizer and the
// application's data, evaluation and data-generation readers.
//
// Where a syntax error is: V8's message sometimes carries "at position N" and sometimes only an excerpt
// of the text ("Unexpected token '}', "{"a": }" is not valid JSON"), so when no position is given a small
// JSON scanner (the grammar of RFC 8259, nothing built) finds the first offending character. It runs only
// after JSON.parse has failed. Lines count "\n" (so "\r\n" is one break); line and column start at 1 and
// columns count UTF-16 code units, as editors mostly do.
import * as fs from 'fs';

export interface ReadJsonOptions {
  /** Require a JSON object at the top level (not an array, string, number or null). */
  object?: boolean;
  /** Builds the thrown error (a caller's own error class); default `new Error(message)`. */
  makeError?: (message: string) => Error;
}

/** Parses `file` as JSON. Errors read "[area] <what> <file> not found" or "... malformed JSON at line L,
 *  column C (reason)". */
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
    fail(`: ${describeJsonError(text, e)}`);
  }
  if (o.object && (typeof v !== 'object' || v === null || Array.isArray(v))) fail(': malformed JSON (not a JSON object)');
  return v as T;
}

export interface JsonErrorLocation {
  /** 0-based offset into the text (text.length for an unexpected end). */
  offset: number;
  line: number;
  column: number;
  /** V8's reason without its echo of the text. */
  reason: string;
}

/** Where JSON.parse(text) failed, from its error `e` (or from scanning the text when e names no position). */
export function jsonErrorLocation(text: string, e: unknown): JsonErrorLocation {
  const msg = e instanceof Error ? e.message : String(e);
  const pos = /\bat position (\d+)/.exec(msg);
  let offset = pos ? Number(pos[1]) : /Unexpected end of JSON input/.test(msg) ? text.length : scanJsonError(text);
  if (offset < 0 || offset > text.length) offset = scanJsonError(text);
  const reason = msg
    .replace(/, (?:\.\.\.)?"[\s\S]* is not valid JSON$/, '')
    .replace(/ in JSON at position \d+(?: \(line \d+ column \d+\))?$/, '')
    .replace(/ at position \d+(?: \(line \d+ column \d+\))?$/, '');
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i >= 0 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { offset, line, column: offset - lineStart + 1, reason };
}

/** "malformed JSON at line L, column C (reason)" for a JSON.parse error on `text`. */
export function describeJsonError(text: string, e: unknown): string {
  const l = jsonErrorLocation(text, e);
  return `malformed JSON at line ${l.line}, column ${l.column} (${l.reason})`;
}

/** Offset of the first character where `text` stops being valid JSON (text.length: it ended too early;
 *  -1: it is valid). Iterative, so deep nesting cannot overflow the stack. */
export function scanJsonError(text: string): number {
  const n = text.length;
  let i = 0;
  const ws = (): void => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const digits = (): number => {
    const s = i;
    while (i < n && text.charCodeAt(i) >= 0x30 && text.charCodeAt(i) <= 0x39) i++;
    return i - s;
  };
  /** Scans a scalar at i; returns false (i at the fault) when it is not one. */
  const scalar = (): boolean => {
    const c = text[i];
    if (c === '"') {
      i++;
      while (i < n) {
        const ch = text.charCodeAt(i);
        if (ch === 0x22) {
          i++;
          return true;
        }
        if (ch < 0x20) return false;
        if (ch === 0x5c) {
          const esc = text[i + 1];
          if (esc === 'u') {
            if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
              i = Math.min(n, i + 2);
              return false;
            }
            i += 6;
          } else if (esc !== undefined && '"\\/bfnrt'.includes(esc)) i += 2;
          else {
            i = Math.min(n, i + 1);
            return false;
          }
        } else i++;
      }
      return false;
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      if (c === '-') i++;
      if (text[i] === '0') i++;
      else if (digits() === 0) return false;
      if (text[i] === '.') {
        i++;
        if (digits() === 0) return false;
      }
      if (text[i] === 'e' || text[i] === 'E') {
        i++;
        if (text[i] === '+' || text[i] === '-') i++;
        if (digits() === 0) return false;
      }
      return true;
    }
    for (const word of ['true', 'false', 'null'])
      if (c === word[0]) {
        for (let k = 0; k < word.length; k++, i++) if (text[i] !== word[k]) return false;
        return true;
      }
    return false;
  };
  // stack of open containers: '{' or '['
  const stack: string[] = [];
  ws();
  for (;;) {
    // expecting a value
    if (i >= n) return n;
    const c = text[i];
    if (c === '{' || c === '[') {
      stack.push(c);
      i++;
      ws();
      if (text[i] === (c === '{' ? '}' : ']')) {
        stack.pop();
        i++;
      } else if (c === '{') {
        if (!keyColon()) return i;
        continue;
      } else continue;
    } else if (!scalar()) return i;
    // after a value: ',' or a closer, or the end
    for (;;) {
      ws();
      if (stack.length === 0) return i < n ? i : -1;
      if (i >= n) return n;
      const top = stack[stack.length - 1];
      if (text[i] === ',') {
        i++;
        ws();
        if (top === '{' && !keyColon()) return i;
        break;
      }
      if (text[i] === (top === '{' ? '}' : ']')) {
        stack.pop();
        i++;
        continue;
      }
      return i;
    }
  }
  /** At an object key: scan `"key" :` and the whitespace after it. */
  function keyColon(): boolean {
    if (i >= n || text[i] !== '"' || !scalar()) return false;
    ws();
    if (text[i] !== ':') return false;
    i++;
    ws();
    return true;
  }
}
