// pyformat.ts — Python's number formatting and parsing with the reference scripts' exact semantics, so that
// files and reports written here match byte for byte what the Python reference writes (evaluation summaries,
// judge scores, GPT-data box coordinates), and the string helpers whose whitespace rules are Python's.

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

// ---------------------------------------------------------------------------------------------------------
// Numbers

/**
 * Python `format(x, f'.{n}f')`: the exact binary value rounded to n decimals, exact ties to even.
 * (JS `toFixed` is also correctly rounded but sends ties away from zero: 0.125 → "0.13", Python "0.12".)
 */
export function pyFixed(x: number, n: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf';
  if (Math.abs(x) >= 1e21) return x.toFixed(n); // far outside anything scored here
  const neg = x < 0 || Object.is(x, -0);
  const exact = Math.abs(x).toFixed(100); // the exact decimal expansion for every value of interest
  const [ip, fp] = exact.split('.');
  const tail = fp.slice(n);
  let out: string;
  if (tail[0] === '5' && /^0*$/.test(tail.slice(1))) {
    // An exact tie: keep the truncation if its last digit is even, otherwise step up.
    const kept = n > 0 ? `${ip}.${fp.slice(0, n)}` : ip;
    const lastDigit = Number(kept[kept.length - 1]);
    out = lastDigit % 2 === 0 ? kept : Math.abs(x).toFixed(n);
  } else {
    out = Math.abs(x).toFixed(n);
  }
  return neg ? `-${out}` : out; // Python keeps the sign of a negative value that rounds to zero ('-0.00')
}

/** Python `round(x, n)` for floats (half to even on exact ties). */
export function pyRound(x: number, n = 0): number {
  if (!Number.isFinite(x)) return x;
  return Number(pyFixed(x, n));
}

/** Python `repr(float)`: shortest round-trip digits, ".0" on integral values, exponent form outside
 *  1e-4 <= |x| < 1e16 with at least two exponent digits (1e-05, 1.5e+16). */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mant, expStr] = Math.abs(x).toExponential().split('e');
  const exp = Number(expStr);
  const digits = mant.replace('.', '');
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return sign + '0.' + '0'.repeat(-exp - 1) + digits;
    if (digits.length > exp + 1) return sign + digits.slice(0, exp + 1) + '.' + digits.slice(exp + 1);
    return sign + digits + '0'.repeat(exp + 1 - digits.length) + '.0';
  }
  const m = digits.length > 1 ? digits[0] + '.' + digits.slice(1) : digits;
  const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : String(Math.abs(exp));
  return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
}

const PY_DIGITS = '\\d(?:_?\\d)*';
const PY_FLOAT_RE = new RegExp(`^[+-]?(?:(?:${PY_DIGITS}(?:\\.(?:${PY_DIGITS})?)?|\\.${PY_DIGITS})(?:[eE][+-]?${PY_DIGITS})?)$`);
const PY_SPECIAL_RE = /^([+-]?)(inf|infinity|nan)$/i;

const ND_RE = /\p{Nd}/u;

/** A Unicode decimal digit (category Nd) → its ASCII digit. Nd digits come in contiguous runs of ten (or
 *  several tens) starting at zero, so the value is the offset from the start of the run, mod 10. */
function asciiDigit(c: string): string {
  let cp = c.codePointAt(0)!;
  const start = cp;
  while (ND_RE.test(String.fromCodePoint(cp - 1))) cp--;
  return String((start - cp) % 10);
}

/** Python `float(s)` for str input: surrounding whitespace allowed, underscores between digits, inf/nan
 *  spellings, any Unicode decimal digits. Returns null where Python raises ValueError. */
export function pyFloat(s: string): number | null {
  const t = pyStrip(s).replace(/\p{Nd}/gu, (c) => (c >= '0' && c <= '9' ? c : asciiDigit(c)));
  const sp = PY_SPECIAL_RE.exec(t);
  if (sp) return sp[2].toLowerCase() === 'nan' ? NaN : sp[1] === '-' ? -Infinity : Infinity;
  if (!PY_FLOAT_RE.test(t)) return null;
  return Number(t.replace(/_/g, ''));
}

/** Python `str(list_of_floats)`: "[0.574, 0.298, 0.752, 0.704]". */
export function pyFloatList(xs: readonly number[]): string {
  return '[' + xs.map(pyFloatRepr).join(', ') + ']';
}

/** Python `json.dumps(..., indent=2)` layout: JSON.stringify's indent-2 layout is the same; Python's default
 *  ensure_ascii escapes every non-ASCII UTF-16 unit as \uXXXX (lower-case hex), which this adds. */
export function pyJsonDump(value: unknown, indent?: number): string {
  const s = indent === undefined ? JSON.stringify(value) : JSON.stringify(value, null, indent);
  return s.replace(/[\u0080-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}
