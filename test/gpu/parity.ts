// parity.ts — the device parity harness shared by test/gpu/check.ts (the one-command GPU check) and
// test/cuda/device_parity.test.ts (the tap suite): seeded input data, running a case on two devices, the
// element-wise comparison, and one result line per case.
//
// A case computes named outputs (forward values and gradients, read back as float64) on the device under
// test and on the reference device (the CPU) from the same host data, rounded to the same dtype on upload.
// An element passes when |a - r| <= atol + rtol*|r|, with atol = max(tol.atol, tol.atolRms * rms(r)):
// the rms term scales the absolute floor with the output's magnitude, so near-zero results of a
// cancellation do not demand impossible relative accuracy. NaN must meet NaN, ±inf must match exactly.
// Default tolerances by dtype (both sides compute in f32 and round once, so they differ by accumulation
// order, then by at most an ulp or two of the output dtype):
//   float64 rtol 1e-9; float32 rtol 1e-4, atolRms 1e-5; float16 rtol 2e-3 (2 ulps), atolRms 1e-3;
//   bfloat16 rtol 1.6e-2 (2 ulps), atolRms 8e-3; integers and bool exact.
// Low-precision attention and model checks use the flash-attention rule instead (see cases): the error
// against a float64 reference must be at most 2x the error of the composite in the same dtype.
import * as L from '../../lib';
import { mulberry32 } from '../../lib/app/util/random';

export type Outputs = Record<string, Float64Array>;

export interface Tol {
  atol?: number;
  rtol?: number;
  atolRms?: number;
}

export const DEFAULT_TOL: Record<L.DType, Tol> = {
  float64: { rtol: 1e-9, atolRms: 1e-10 },
  float32: { rtol: 1e-4, atolRms: 1e-5 },
  float16: { rtol: 2e-3, atolRms: 1e-3 },
  bfloat16: { rtol: 1.6e-2, atolRms: 8e-3 },
  int32: { rtol: 0, atol: 0 },
  int64: { rtol: 0, atol: 0 },
  uint8: { rtol: 0, atol: 0 },
  bool: { rtol: 0, atol: 0 },
};

/** Unit roundoff of a float dtype (half the distance from 1 to the next value). */
export const EPS: Record<string, number> = { float64: 2 ** -53, float32: 2 ** -24, float16: 2 ** -11, bfloat16: 2 ** -8 };

export interface OutputStat {
  n: number;
  bad: number;
  maxAbs: number;
  maxRel: number;
  nmse: number;
  worst?: string;
}

export interface CaseResult {
  name: string;
  group: string;
  pass: boolean;
  skipped?: string;
  ms: number;
  stats: Record<string, OutputStat>;
  /** Free text: the rule applied (flash rule figures, fixture tolerances) or the error. */
  detail?: string;
  /** Tensors alive after the case that were not before (a leak in an op or in the case). */
  leaked?: number;
}

export interface ParityCase {
  group: string;
  name: string;
  /** Cases the quick mode leaves out (slow on the CPU reference side). */
  slow?: boolean;
  evaluate(dev: L.Device, refDev: L.Device): Omit<CaseResult, 'name' | 'group' | 'ms'>;
}

// ------------------------------------------------------------------ data
/** mulberry32 (lib/app/processing/data.ts): a seeded PRNG so both devices see identical inputs. */
export const rng: (seed: number) => () => number = mulberry32;
export const numel = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** n values uniform in [lo, hi), optionally kept |x| >= gap away from 0. */
export function uniform(n: number, seed: number, lo = -1, hi = 1, gap = 0): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let v = lo + (hi - lo) * r();
    while (gap > 0 && Math.abs(v) < gap) v = lo + (hi - lo) * r();
    out[i] = v;
  }
  return out;
}
/** n integers uniform in [lo, hi). */
export function ints(n: number, seed: number, lo: number, hi: number): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => lo + Math.floor((hi - lo) * r()));
}

/** Host data for one input: shape, dtype, values. */
export interface Input {
  shape: number[];
  dtype: L.DType;
  values: ArrayLike<number>;
  grad?: boolean;
}
export const inp = (shape: number[], dtype: L.DType, seed: number, lo = -1, hi = 1, gap = 0): Input => ({
  shape,
  dtype,
  values: uniform(numel(shape), seed, lo, hi, gap),
  grad: L_isFloat(dtype),
});
export const intInp = (shape: number[], dtype: L.DType, seed: number, lo: number, hi: number): Input => ({
  shape,
  dtype,
  values: ints(numel(shape), seed, lo, hi),
  grad: false,
});
export const noGradInp = (i: Input): Input => ({ ...i, grad: false });

function L_isFloat(d: L.DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'bfloat16' || d === 'float16';
}

/** Values as they read back after a round trip through dtype (what a kernel in that dtype sees). */
export function roundTo(values: ArrayLike<number>, dtype: L.DType): Float64Array {
  return L.tidy(() => f64(L.tensor(Float64Array.from(values), { dtype, device: 'cpu' })));
}

export function upload(i: Input, dev: L.Device): L.Tensor {
  return L.tensor(Float64Array.from(i.values), { shape: i.shape, dtype: i.dtype, device: dev });
}

/** A tensor's values as float64 (bool → 0/1, int64 → Number). */
export function f64(t: L.Tensor): Float64Array {
  const d = t.dataSync();
  if (d instanceof BigInt64Array) return Float64Array.from(d, (v) => Number(v));
  return Float64Array.from(d as ArrayLike<number>);
}

/**
 * Upload inputs to dev, run fn, then (if the output is floating and some input wants a gradient)
 * backpropagate a seeded upstream gradient (first rounded through `roundGradTo` when given, so a float64
 * reference run can see exactly the gradient a bf16 run sees). Returns {out, d0, d1, ...} (d<i> for input i).
 */
export function forwardBackward(
  dev: L.Device,
  inputs: Input[],
  fn: (...xs: L.Tensor[]) => L.Tensor | L.Tensor[],
  opts: { gseed?: number; roundGradTo?: L.DType } = {},
): Outputs {
  const gseed = opts.gseed ?? 999;
  return L.tidy(() => {
    const xs = inputs.map((i) => {
      const t = upload(i, dev);
      if (i.grad) t.setRequiresGrad(true);
      return t;
    });
    const res = fn(...xs);
    const ys = Array.isArray(res) ? res : [res];
    const out: Outputs = {};
    ys.forEach((y, j) => (out[ys.length === 1 ? 'out' : `out${j}`] = f64(y)));
    const wantGrad = inputs.some((i) => i.grad) && ys.some((y) => y.requiresGrad);
    if (wantGrad) {
      // One scalar objective over all outputs: sum_j <y_j, g_j>, so every output's backward runs.
      let total: L.Tensor | null = null;
      ys.forEach((y, j) => {
        if (!y.requiresGrad) return;
        const gv = opts.roundGradTo ? roundTo(uniform(y.numel, gseed + j), opts.roundGradTo) : uniform(y.numel, gseed + j);
        const g = L.tensor(gv, { shape: y.shape, dtype: y.dtype, device: dev });
        const term = L.sum(L.mul(y, g).to(y.dtype === 'float64' ? 'float64' : 'float32'));
        total = total ? L.add(total, term) : term;
      });
      (total as L.Tensor | null)?.backward();
      xs.forEach((x, i) => {
        if (inputs[i].grad) out[`d${i}`] = x.grad ? f64(x.grad) : new Float64Array(x.numel);
      });
    }
    xs.forEach((x) => x.zeroGrad());
    return out;
  });
}

// ------------------------------------------------------------------ comparison
export function rms(r: ArrayLike<number>): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < r.length; i++)
    if (Number.isFinite(r[i])) {
      s += r[i] * r[i];
      n++;
    }
  return n ? Math.sqrt(s / n) : 0;
}

export function compare(a: ArrayLike<number>, r: ArrayLike<number>, tol: Tol): OutputStat {
  if (a.length !== r.length)
    return { n: r.length, bad: r.length, maxAbs: Infinity, maxRel: Infinity, nmse: Infinity, worst: `length ${a.length} vs ${r.length}` };
  const rtol = tol.rtol ?? 0;
  const atol = Math.max(tol.atol ?? 0, (tol.atolRms ?? 0) * rms(r));
  let bad = 0;
  let maxAbs = 0;
  let maxRel = 0;
  let se = 0;
  let sr = 0;
  let worst = -1;
  let worstExcess = -Infinity;
  for (let i = 0; i < r.length; i++) {
    const x = a[i];
    const y = r[i];
    let excess: number;
    if (Number.isNaN(x) || Number.isNaN(y)) excess = Number.isNaN(x) && Number.isNaN(y) ? -1 : Infinity;
    else if (!Number.isFinite(x) || !Number.isFinite(y)) excess = x === y ? -1 : Infinity;
    else {
      const e = Math.abs(x - y);
      maxAbs = Math.max(maxAbs, e);
      maxRel = Math.max(maxRel, e / Math.max(Math.abs(y), 1e-30));
      se += e * e;
      sr += y * y;
      excess = e - (atol + rtol * Math.abs(y));
    }
    if (excess > 0) {
      bad++;
      if (excess > worstExcess) {
        worstExcess = excess;
        worst = i;
      }
    }
  }
  const st: OutputStat = { n: r.length, bad, maxAbs, maxRel, nmse: sr > 0 ? se / sr : se };
  if (bad) st.worst = `[${worst}] got ${a[worst]} want ${r[worst]} (atol ${atol.toExponential(1)} rtol ${rtol})`;
  return st;
}

/** Max |a - r| over finite pairs (Infinity when NaN/inf patterns differ). */
export function maxAbsErr(a: ArrayLike<number>, r: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < r.length; i++) {
    if (Number.isFinite(a[i]) && Number.isFinite(r[i])) m = Math.max(m, Math.abs(a[i] - r[i]));
    else if (!(Object.is(a[i], r[i]) || (Number.isNaN(a[i]) && Number.isNaN(r[i])))) return Infinity;
  }
  return m;
}
export function maxAbs(r: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < r.length; i++) if (Number.isFinite(r[i])) m = Math.max(m, Math.abs(r[i]));
  return m;
}

/** Compare every output of `got` with `ref` (tolerance by output name, else by dtype). */
export function compareAll(got: Outputs, ref: Outputs, tol: (name: string) => Tol): { pass: boolean; stats: Record<string, OutputStat> } {
  const stats: Record<string, OutputStat> = {};
  let pass = true;
  for (const k of Object.keys(ref)) {
    if (!got[k]) {
      stats[k] = {
        n: ref[k].length,
        bad: ref[k].length,
        maxAbs: Infinity,
        maxRel: Infinity,
        nmse: Infinity,
        worst: 'missing on the device under test',
      };
      pass = false;
      continue;
    }
    stats[k] = compare(got[k], ref[k], tol(k));
    if (stats[k].bad) pass = false;
  }
  for (const k of Object.keys(got)) if (!ref[k]) pass = false;
  return { pass, stats };
}

// ------------------------------------------------------------------ case builders
/** The usual case: the same computation on both devices, compared element-wise. */
export function parity(
  group: string,
  name: string,
  dtype: L.DType,
  run: (dev: L.Device) => Outputs,
  tol: Tol | ((out: string) => Tol) = {},
  slow = false,
): ParityCase {
  const t = (k: string): Tol => ({ ...DEFAULT_TOL[dtype], ...(typeof tol === 'function' ? tol(k) : tol) });
  return {
    group,
    name,
    slow,
    evaluate(dev, refDev) {
      // Outputs are host arrays: every tensor a case makes is released here.
      const got = L.tidy(() => run(dev));
      const ref = L.tidy(() => run(refDev));
      return compareAll(got, ref, t);
    },
  };
}

/** Run one case, timing it and catching errors (an error is a FAIL with its message). */
export function runParityCase(c: ParityCase, dev: L.Device, refDev: L.Device = 'cpu'): CaseResult {
  const before = L.memory().numTensors;
  const t0 = process.hrtime.bigint();
  let r: Omit<CaseResult, 'name' | 'group' | 'ms'>;
  try {
    r = c.evaluate(dev, refDev);
  } catch (e) {
    r = { pass: false, stats: {}, detail: `error: ${(e as Error).message.split('\n')[0]}` };
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const leaked = L.memory().numTensors - before;
  return { name: c.name, group: c.group, ms: Math.round(ms), ...r, ...(leaked ? { leaked } : {}) };
}

const e2 = (x: number): string => (Number.isFinite(x) ? x.toExponential(2) : String(x));

/** One line: PASS/FAIL, the case, the worst output's errors. */
export function formatResult(r: CaseResult): string {
  const head = `${r.skipped ? 'SKIP' : r.pass ? 'PASS' : 'FAIL'} ${r.group}/${r.name}`;
  const parts = Object.entries(r.stats).map(
    ([k, s]) => `${k} maxAbs ${e2(s.maxAbs)} maxRel ${e2(s.maxRel)} nmse ${e2(s.nmse)}${s.bad ? ` BAD ${s.bad}/${s.n} ${s.worst}` : ''}`,
  );
  const worstFirst = parts.sort((a, b) => Number(b.includes(' BAD ')) - Number(a.includes(' BAD ')));
  const shown = r.pass ? worstFirst.slice(0, 3) : worstFirst;
  return `${head} (${r.ms} ms)${shown.length ? ' | ' + shown.join('; ') : ''}${Object.keys(r.stats).length > shown.length ? `; +${Object.keys(r.stats).length - shown.length} more` : ''}${r.detail ? ' | ' + r.detail : ''}${r.leaked ? ` | leaked ${r.leaked} tensors` : ''}${r.skipped ? ' | ' + r.skipped : ''}`;
}
