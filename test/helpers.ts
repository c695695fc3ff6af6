// helpers.ts — shared by the engine tests: float64 reference implementations (plain nested loops
// over Float64Array, deliberately naive so they can be read against the maths), assertClose with
// NMSE and worst-index reporting, a deterministic PRNG for test data, and a finite-difference
// gradient checker.
//
// Tolerance rule (docs/design.md "Numbers and tests"): |a - r| <= atol + rtol * |r|, with f32
// defaults atol 1e-6 / rtol 1e-5 scaled by sqrt(K) for ops that reduce over K terms.
import type { Test } from 'tap';
import { Tensor, tensor, noGrad, tidy, sum, mul, memory, setDefaultDevice } from '../lib';
import type { DType, Device } from '../lib';
import { mulberry32 } from '../lib/app/util/random';
import { native } from '../lib/native';
export { readInts } from './gpu/fixture'; // an int64 fixture tensor as numbers

// LLAVA_TEST_DEVICE=cuda runs a test file with tensor factories defaulting to that device, so the op
// suites (ops, grad) run once per device; test/cuda/cuda_emu_addon.test.ts does it on the emulated GPU.
if (process.env.LLAVA_TEST_DEVICE) setDefaultDevice(process.env.LLAVA_TEST_DEVICE as Device);

// ------------------------------------------------------------------ data
/** mulberry32 (lib/app/processing/data.ts): a tiny seeded PRNG so every test input is reproducible. */
/** The test/ folder: tests in sub-folders find fixtures and the repo root from here. */
export const TEST_DIR = __dirname;

export const rng: (seed: number) => () => number = mulberry32;

/** n values uniform in [lo, hi). */
export function randArray(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/** n values uniform in [lo, hi) with |x| >= gap (keeps inputs away from kinks such as relu at 0). */
export function randAway(n: number, seed: number, lo = -1, hi = 1, gap = 0.05): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let v = 0;
    do v = lo + (hi - lo) * r();
    while (Math.abs(v) < gap);
    out[i] = v;
  }
  return out;
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A tensor of the given shape/dtype filled from a seeded uniform distribution. */
export function randT(shape: number[], seed: number, dtype: DType = 'float32', lo = -1, hi = 1): Tensor {
  return tensor(randArray(numel(shape), seed, lo, hi), { shape, dtype });
}

/** The tensor's values as float64 (what the kernel actually saw, after rounding to its dtype). */
export function f64(x: Tensor): Float64Array {
  const d = x.dataSync();
  if (d instanceof BigInt64Array) return Float64Array.from(d, (v) => Number(v));
  return Float64Array.from(d as ArrayLike<number>);
}

// ------------------------------------------------------------------ comparisons
export interface CloseOptions {
  atol?: number;
  rtol?: number;
  /** Checked before the values when `actual` is a Tensor. */
  shape?: number[];
  dtype?: DType;
  msg?: string;
}

/** Tolerances for f32 results that reduce over K terms (sqrt(K) scaling of 1e-6 / 1e-5). */
export function f32Tol(K = 1): { atol: number; rtol: number } {
  const s = Math.sqrt(Math.max(1, K));
  return { atol: 1e-6 * s, rtol: 1e-5 * s };
}

/**
 * Element-wise |a - r| <= atol + rtol * |r| (NaN only matches NaN, infinities must match exactly).
 * On failure the message carries the NMSE, the number of bad elements and the worst index.
 */
export function assertClose(t: Test, actual: Tensor | ArrayLike<number>, expected: ArrayLike<number>, opts: CloseOptions = {}): boolean {
  const msg = opts.msg ?? 'values close';
  if (actual instanceof Tensor) {
    if (opts.shape && actual.shape.join(',') !== opts.shape.join(',')) {
      t.fail(`${msg}: shape [${actual.shape}] != expected [${opts.shape}]`);
      return false;
    }
    if (opts.dtype && actual.dtype !== opts.dtype) {
      t.fail(`${msg}: dtype ${actual.dtype} != expected ${opts.dtype}`);
      return false;
    }
  }
  const a = actual instanceof Tensor ? f64(actual) : actual;
  const atol = opts.atol ?? 1e-6;
  const rtol = opts.rtol ?? 1e-5;
  if (a.length !== expected.length) {
    t.fail(`${msg}: length ${a.length} != expected ${expected.length}`);
    return false;
  }
  let bad = 0;
  let worst = -1;
  let worstExcess = -Infinity;
  let se = 0;
  let sr = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const r = expected[i];
    let excess: number; // > 0 means out of tolerance; Infinity for NaN / infinity mismatches
    if (Number.isNaN(r) || Number.isNaN(x)) excess = Number.isNaN(r) && Number.isNaN(x) ? -1 : Infinity;
    else if (!Number.isFinite(r) || !Number.isFinite(x)) excess = x === r ? -1 : Infinity;
    else {
      const err = Math.abs(x - r);
      excess = err - (atol + rtol * Math.abs(r));
      se += err * err;
      sr += r * r;
    }
    if (excess > 0) {
      bad++;
      if (excess > worstExcess) {
        worstExcess = excess;
        worst = i;
      }
    }
  }
  const nmse = sr > 0 ? se / sr : se;
  if (bad) {
    t.fail(
      `${msg}: ${bad}/${a.length} elements out of tolerance (atol ${atol.toExponential(2)}, rtol ${rtol.toExponential(2)}); ` +
        `NMSE ${nmse.toExponential(3)}; worst index ${worst}: got ${a[worst]}, expected ${expected[worst]}`,
    );
    return false;
  }
  t.pass(`${msg} (NMSE ${nmse.toExponential(2)})`);
  return true;
}

/** Shape and dtype of a tensor. */
export function assertMeta(t: Test, x: Tensor, shape: number[], dtype: DType, msg = 'shape/dtype'): void {
  t.same({ shape: x.shape, dtype: x.dtype }, { shape, dtype }, msg);
}

// ------------------------------------------------------------------ float64 references
/** out[b] = a[b] @ c[b]; a [Bt, M, K], c [Bt, K, N] row-major (Bt may be 1 for either: broadcast). */
export function refMatmul(a: ArrayLike<number>, b: ArrayLike<number>, Bt: number, M: number, K: number, N: number, aBt = Bt, bBt = Bt): Float64Array {
  const out = new Float64Array(Bt * M * N);
  for (let t = 0; t < Bt; t++) {
    const ao = (aBt === 1 ? 0 : t) * M * K;
    const bo = (bBt === 1 ? 0 : t) * K * N;
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[ao + i * K + k] * b[bo + k * N + j];
        out[t * M * N + i * N + j] = s;
      }
  }
  return out;
}

/** Row-major transpose of the last two dims of [Bt, R, C]. */
export function refTranspose(x: ArrayLike<number>, Bt: number, R: number, C: number): Float64Array {
  const out = new Float64Array(Bt * R * C);
  for (let b = 0; b < Bt; b++) for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) out[b * R * C + j * R + i] = x[b * R * C + i * C + j];
  return out;
}

/** Softmax (or log-softmax) over the last dim of [N, C]. */
export function refSoftmax(x: ArrayLike<number>, N: number, C: number, log = false): Float64Array {
  const out = new Float64Array(N * C);
  for (let r = 0; r < N; r++) {
    let m = -Infinity;
    for (let i = 0; i < C; i++) m = Math.max(m, x[r * C + i]);
    let s = 0;
    for (let i = 0; i < C; i++) s += Math.exp(x[r * C + i] - m);
    for (let i = 0; i < C; i++) out[r * C + i] = log ? x[r * C + i] - m - Math.log(s) : Math.exp(x[r * C + i] - m) / s;
  }
  return out;
}

/** LayerNorm over the last dim of [N, C] (biased variance, as PyTorch). */
export function refLayerNorm(
  x: ArrayLike<number>,
  N: number,
  C: number,
  w: ArrayLike<number> | null,
  b: ArrayLike<number> | null,
  eps: number,
): Float64Array {
  const out = new Float64Array(N * C);
  for (let r = 0; r < N; r++) {
    let mu = 0;
    for (let i = 0; i < C; i++) mu += x[r * C + i];
    mu /= C;
    let v = 0;
    for (let i = 0; i < C; i++) v += (x[r * C + i] - mu) ** 2;
    v /= C;
    const rs = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < C; i++) out[r * C + i] = (x[r * C + i] - mu) * rs * (w ? w[i] : 1) + (b ? b[i] : 0);
  }
  return out;
}

/** RMSNorm over the last dim of [N, C]: x / sqrt(mean(x^2) + eps) * w. */
export function refRmsNorm(x: ArrayLike<number>, N: number, C: number, w: ArrayLike<number> | null, eps: number): Float64Array {
  const out = new Float64Array(N * C);
  for (let r = 0; r < N; r++) {
    let ms = 0;
    for (let i = 0; i < C; i++) ms += x[r * C + i] ** 2;
    ms /= C;
    const rs = 1 / Math.sqrt(ms + eps);
    for (let i = 0; i < C; i++) out[r * C + i] = x[r * C + i] * rs * (w ? w[i] : 1);
  }
  return out;
}

export interface AttnDims {
  B: number;
  H: number;
  Hkv: number;
  T: number;
  S: number;
  D: number;
}
/**
 * Attention with q [B,H,T,D], k/v [B,Hkv,S,D] (query head h uses kv head floor(h / (H/Hkv))),
 * causal bottom-right aligned (key j visible to query i iff j <= i + S - T), optional boolean mask
 * [B,H,T,S] (1 = attend). Rows with no visible key give 0 (the fused kernel's convention).
 */
export function refAttention(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dims: AttnDims,
  opts: { causal?: boolean; mask?: ArrayLike<number> | null; scale?: number } = {},
): Float64Array {
  const { B, H, Hkv, T, S, D } = dims;
  const G = H / Hkv;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * H * T * D);
  const sc = new Float64Array(S);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / G);
      for (let i = 0; i < T; i++) {
        let m = -Infinity;
        for (let j = 0; j < S; j++) {
          let visible = true;
          if (opts.causal && j > i + S - T) visible = false;
          if (opts.mask && !opts.mask[((b * H + h) * T + i) * S + j]) visible = false;
          if (!visible) {
            sc[j] = -Infinity;
            continue;
          }
          let s = 0;
          for (let d = 0; d < D; d++) s += q[((b * H + h) * T + i) * D + d] * k[((b * Hkv + kh) * S + j) * D + d];
          sc[j] = s * scale;
          m = Math.max(m, sc[j]);
        }
        const o = ((b * H + h) * T + i) * D;
        if (m === -Infinity) continue; // no visible key: zeros
        let z = 0;
        for (let j = 0; j < S; j++) z += sc[j] === -Infinity ? 0 : Math.exp(sc[j] - m);
        for (let j = 0; j < S; j++) {
          if (sc[j] === -Infinity) continue;
          const p = Math.exp(sc[j] - m) / z;
          for (let d = 0; d < D; d++) out[o + d] += p * v[((b * Hkv + kh) * S + j) * D + d];
        }
      }
    }
  return out;
}

/** Per-row cross-entropy of logits [N, V] against targets; ignored rows give 0. */
export function refCrossEntropy(
  logits: ArrayLike<number>,
  target: ArrayLike<number>,
  N: number,
  V: number,
  opts: { ignoreIndex?: number; reduction?: 'mean' | 'sum' | 'none' } = {},
): Float64Array {
  const ignore = opts.ignoreIndex ?? -100;
  const rows = new Float64Array(N);
  let count = 0;
  for (let r = 0; r < N; r++) {
    if (target[r] === ignore) continue;
    count++;
    let m = -Infinity;
    for (let i = 0; i < V; i++) m = Math.max(m, logits[r * V + i]);
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(logits[r * V + i] - m);
    rows[r] = m + Math.log(s) - logits[r * V + target[r]];
  }
  const red = opts.reduction ?? 'mean';
  if (red === 'none') return rows;
  const tot = rows.reduce((a, b) => a + b, 0);
  return Float64Array.of(red === 'sum' ? tot : tot / count);
}

// ------------------------------------------------------------------ gradient check
export interface GradCheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
  /** Indices of float64 inputs that should not be checked (held constant, no requiresGrad). */
  skip?: number[];
  msg?: string;
}

/**
 * Compares backward() with central differences for every element of every float64 input. The
 * output is reduced to a scalar with fixed random weights (sum(out * R)) so every output element's
 * gradient path is exercised. Non-float64 inputs (indices) are passed through unchanged.
 * Returns false (after reporting) on the first mismatching input.
 */
export function gradCheck(t: Test, fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradCheckOptions = {}): boolean {
  const eps = opts.eps ?? 1e-6;
  // Central differences in f64 with eps 1e-6: truncation ~eps^2 * f''' ~ 1e-12, rounding
  // ~1e-16 * |L| / eps ~ 1e-9 here; every op passes at 1e-8 / 1e-7, so 1e-7 / 1e-6 leaves a 10x
  // margin while still catching an f32 intermediate in an f64 path (~1e-7 relative).
  const atol = opts.atol ?? 1e-7;
  const rtol = opts.rtol ?? 1e-6;
  const msg = opts.msg ?? 'gradcheck';
  const skip = new Set(opts.skip ?? []);
  const checked = inputs.map((x, i) => x.dtype === 'float64' && !skip.has(i));
  const vals = inputs.map((x) => (x.dtype === 'float64' ? f64(x) : null));
  const before = memory().numTensors;
  const build = (grad: boolean): Tensor[] =>
    inputs.map((x, i) => {
      if (!vals[i]) return x;
      const c = tensor(vals[i]!, { shape: x.shape.slice(), dtype: 'float64' });
      if (grad && checked[i]) c.setRequiresGrad(true);
      return c;
    });
  // Output shape and projection weights.
  const outShape = tidy(() => noGrad(() => fn(...build(false)).shape.slice()));
  const R = tensor(randArray(numel(outShape), 12345, -1, 1), { shape: outShape, dtype: 'float64' });
  const lossOf = (): number =>
    tidy(() => {
      const y = fn(...build(false));
      return sum(mul(y, R)).item();
    });
  // Analytic gradients. backward() runs outside any tidy scope so that a tensor leaked by a vjp
  // shows up in the count checked at the end.
  const xs = build(true);
  const Lt = tidy(() => {
    const y = fn(...xs);
    if (y.dtype !== 'float64') throw new Error(`${msg}: output dtype ${y.dtype}, expected float64`);
    return sum(mul(y, R));
  });
  Lt.backward();
  Lt.dispose();
  const analytic: (Float64Array | null)[] = xs.map((x, i) => {
    if (!checked[i]) return null;
    if (!x.grad) return new Float64Array(x.numel); // no path: gradient zero
    if (x.grad.shape.join() !== x.shape.join()) throw new Error(`${msg}: grad of input ${i} has shape [${x.grad.shape}], expected [${x.shape}]`);
    if (x.grad.dtype !== 'float64') throw new Error(`${msg}: grad of input ${i} has dtype ${x.grad.dtype}`);
    return f64(x.grad);
  });
  xs.forEach((x, i) => {
    if (x !== inputs[i]) x.dispose(); // also disposes its .grad
  });
  let ok = true;
  noGrad(() => {
    for (let i = 0; i < inputs.length && ok; i++) {
      if (!checked[i]) continue;
      const base = vals[i]!;
      const num = new Float64Array(base.length);
      for (let j = 0; j < base.length; j++) {
        const orig = base[j];
        base[j] = orig + eps;
        const lp = lossOf();
        base[j] = orig - eps;
        const lm = lossOf();
        base[j] = orig;
        num[j] = (lp - lm) / (2 * eps);
      }
      ok = assertClose(t, analytic[i]!, num, { atol, rtol, msg: `${msg}: d/d input ${i} [${inputs[i].shape}]` });
    }
  });
  R.dispose();
  if (memory().numTensors !== before) {
    t.fail(`${msg}: ${memory().numTensors - before} tensors leaked by forward/backward`);
    ok = false;
  }
  return ok;
}

/** Runs fn and checks that live tensors and CPU bytes are back to their starting values. */
export function assertNoLeak(t: Test, fn: () => void, msg = 'no leak'): void {
  const m0 = memory();
  fn();
  const m1 = memory();
  t.same(
    { numTensors: m1.numTensors, bytes: m1.cpu.bytes, storages: m1.cpu.storages },
    { numTensors: m0.numTensors, bytes: m0.cpu.bytes, storages: m0.cpu.storages },
    msg,
  );
}

/**
 * The CPU instruction sets this machine runs, lowest first (cpp/cpu_isa.h). 'amx' is listed too where the CPU
 * has AVX512-BF16 but no AMX: there it runs the AMX tile with its instructions done in software (emulated).
 */
export function cpuIsas(): string[] {
  const order = ['portable', 'avx2', 'avx512', 'avx512bf16', 'amx'];
  const { detected } = native.cpuIsa();
  return order.slice(0, Math.max(order.indexOf(detected), detected === 'avx512bf16' ? 4 : 0) + 1);
}

/** Caps the CPU kernels at isa (one of cpuIsas()), emulating AMX where that is how this machine runs it. */
export function useCpuIsa(isa: string): void {
  native.cpuIsa(isa, isa === 'amx' && native.cpuIsa().detected !== 'amx');
}

/**
 * fn must throw an Error whose message matches re, and leave the live-tensor count as it was (it runs inside
 * tidy). With `ms`, it must also answer within that many milliseconds (hostile sizes are refused up front).
 */
export function refuses(t: Test, name: string, re: RegExp, fn: () => unknown, ms?: number): void {
  const before = memory().numTensors;
  const t0 = Date.now();
  let err: unknown = null;
  try {
    tidy(() => {
      fn();
    });
  } catch (e) {
    err = e;
  }
  if (!(err instanceof Error)) t.fail(`${name}: expected an Error, got ${err === null ? 'no throw' : String(err)}`);
  else t.match(err.message, re, `${name}: ${err.message}`);
  if (ms !== undefined) t.ok(Date.now() - t0 < ms, `${name}: answered at once`);
  t.equal(memory().numTensors, before, `${name}: no tensor leaked`);
}
