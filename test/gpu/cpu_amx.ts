// cpu_amx.ts — phase (d) of the GPU check: the GPU machine's own CPU. The AMX-BF16 GEMM tile
// (cpp/isa/gemm_amx_avx512.cc) has only run emulated on the development machine (a Zen 4 without AMX);
// GPU hosts are often Sapphire Rapids or later Xeons, which have it. Where the host's CPU and kernel grant
// AMX, this runs each bf16 product of the table on the AMX tile and on the AVX512-BF16 tile, both against a
// reference in a wider type, and then times the two tiles and our f32 product on the shapes of the CPU
// benchmark. Elsewhere the check says why it did not run; --self-test runs the small cases with the AMX
// instructions emulated (test/engine/amx_check.test.ts), so this harness is exercised on every push.
import * as fs from 'fs';
import * as L from '../../lib';
import type { DType, Tensor } from '../../lib';
import { native } from '../../lib/native';
import { gemm2d } from '../../lib/ops/quant';
import { numel, randArray, useCpuIsa } from '../helpers';

export interface AmxCase {
  name: string;
  pass: boolean;
  /** Worst error against the reference of the AMX run, and of the AVX512-BF16 run (the bar it is held to). */
  amxErr: number;
  bf16TileErr: number;
  /** Largest |reference| value: half a bf16 ulp of it is the bar's absolute slack. */
  scale: number;
  detail: string;
}

export interface AmxTiming {
  case: string;
  amx_ms: number;
  avx512bf16_ms: number;
  f32_ms: number;
  /** avx512bf16_ms / amx_ms, f32_ms / amx_ms (> 1: the AMX tile is faster). */
  vs_avx512bf16: number;
  vs_f32: number;
  amx_gflops: number;
}

/** The host CPU as /proc/cpuinfo names it, and the instruction set our kernels detect on it. */
export function hostCpu(): { model: string; detected: string; threads: number } {
  let model = 'unknown';
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    /* not Linux */
  }
  return { model, detected: native.cpuIsa().detected, threads: native.numThreads() };
}

interface Spec {
  name: string;
  shapes: number[][];
  /** The product under test; the leaves get gradients when grads is set. */
  fn: (...xs: Tensor[]) => Tensor;
  grads?: boolean;
  /** Reference dtype: float64 (plain loops) for small cases, float32 (f32 tile) for the big ones. */
  ref?: DType;
  big?: boolean;
}

/** gemm2d into a copy of `out0`: out = a @ b + bias + 2 * out0 (the fused beta and bias of the tile's write-back). */
const withBeta = (a: Tensor, b: Tensor, bias: Tensor, out0: Tensor): Tensor => {
  const out = out0.clone();
  gemm2d(out, a, b, bias, 2);
  return out;
};

/** Shapes for every path of the AMX tile: edges in both directions, the transposed-A pack of dW, several depth blocks (KC 512) with and without the bias and beta, column units over two depth blocks. */
const SPECS: Spec[] = [
  {
    name: 'matmul 37x129 @ 129x70',
    shapes: [
      [37, 129],
      [129, 70],
    ],
    fn: (a, b) => L.matmul(a, b),
  },
  {
    name: 'matmul a @ b^T, odd K, batch 2',
    shapes: [
      [2, 61, 133],
      [2, 97, 133],
    ],
    fn: (a, b) => L.matmul(a, b.transpose(-1, -2)),
  },
  {
    name: 'matmul a^T @ b',
    shapes: [
      [45, 29],
      [45, 66],
    ],
    fn: (a, b) => L.matmul(a.transpose(0, 1), b),
  },
  { name: 'linear fwd+bwd 96x640x200 with bias', shapes: [[96, 640], [200, 640], [200]], fn: (x, w, b) => L.linear(x, w, b), grads: true },
  { name: 'gemm + bias + 2*out, K 1500 (three depth blocks)', shapes: [[70, 1500], [1500, 70], [70], [70, 70]], fn: withBeta },
  { name: 'gemm + bias + 2*out, K 2100, N 300', shapes: [[40, 2100], [2100, 300], [300], [40, 300]], fn: withBeta },
  {
    name: 'matmul 1024^3',
    shapes: [
      [1024, 1024],
      [1024, 1024],
    ],
    fn: (a, b) => L.matmul(a, b),
    ref: 'float32',
    big: true,
  },
  {
    name: 'linear fwd+bwd 256x2048x5504 (x @ W^T, dX, dW)',
    shapes: [
      [256, 2048],
      [5504, 2048],
    ],
    fn: (x, w) => L.linear(x, w),
    grads: true,
    ref: 'float32',
    big: true,
  },
];

/** Output (and input gradients of sum(y * w)) of spec on the given values, as float64 arrays. */
function evaluate(s: Spec, values: Float64Array[], dtype: DType, seed: number): Float64Array[] {
  const xs = values.map((v, i) => L.tensor(v, { shape: s.shapes[i], dtype, requiresGrad: !!s.grads }));
  try {
    return L.tidy(() => {
      const y = s.grads ? s.fn(...xs) : L.noGrad(() => s.fn(...xs));
      const outs = [y];
      if (s.grads) {
        const w = L.tensor(randValues(y.shape, seed), { shape: y.shape, dtype });
        y.mul(w).sum().backward();
        outs.push(...xs.map((x) => x.grad!));
      }
      return outs.map((t) => Float64Array.from(t.dataSync() as Float32Array));
    });
  } finally {
    xs.forEach((x) => x.dispose());
  }
}

/** Uniform values in [-1, 1) for a tensor of the given shape. */
const randValues = (shape: number[], seed: number): Float64Array => randArray(numel(shape), seed);

/** Max |a - r| and max |r|. */
function errOf(a: Float64Array, r: Float64Array): { err: number; scale: number } {
  let err = a.length === r.length ? 0 : Infinity;
  let scale = 0;
  for (let i = 0; i < r.length; i++) {
    const e = Math.abs(a[i] - r[i]);
    err = e > err || Number.isNaN(e) ? e : err;
    scale = Math.max(scale, Math.abs(r[i]));
  }
  return { err, scale };
}

/**
 * Each case on the AMX tile and on the AVX512-BF16 tile, against the reference. Bar (the one the bf16 attention
 * tests use): the AMX error at most 2x the AVX512-BF16 tile's plus half a bf16 ulp of the largest reference value
 * (2^-9 of it): both round their f32 sums to bf16, so a correct tile differs from the other only in summation order.
 */
export function amxParity(opts: { small: boolean }): AmxCase[] {
  const before = native.cpuIsa().active;
  const out: AmxCase[] = [];
  try {
    for (const [ci, s] of SPECS.entries()) {
      if (s.big && opts.small) continue;
      // Inputs rounded to bf16 once, so every run and the reference see the same values.
      const values = s.shapes.map((sh, i) => {
        const t = L.tensor(randValues(sh, 100 * ci + i), { shape: sh, dtype: 'bfloat16' });
        const v = Float64Array.from(t.dataSync() as Float32Array);
        t.dispose();
        return v;
      });
      useCpuIsa('avx512');
      const ref = evaluate(s, values, s.ref ?? 'float64', 7 + ci);
      useCpuIsa('avx512bf16');
      const tile = evaluate(s, values, 'bfloat16', 7 + ci);
      useCpuIsa('amx'); // emulated where the CPU has no AMX (the self-test)
      const active = native.cpuIsa().active;
      const amx = evaluate(s, values, 'bfloat16', 7 + ci);
      const parts = ref.map((r, i) => ({ what: i === 0 ? 'out' : `grad ${i - 1}`, a: errOf(amx[i], r), b: errOf(tile[i], r) }));
      const bad = parts.filter((p) => !(p.a.err <= 2 * p.b.err + p.a.scale * 2 ** -9));
      const worst = parts.reduce((w, p) => (p.a.err / (p.a.scale || 1) > w.a.err / (w.a.scale || 1) ? p : w), parts[0]);
      out.push({
        name: s.name,
        pass: active === 'amx' && bad.length === 0,
        amxErr: worst.a.err,
        bf16TileErr: worst.b.err,
        scale: worst.a.scale,
        detail:
          active !== 'amx'
            ? `the amx cap did not take (active ${active})`
            : parts
                .map((p) => `${p.what}: amx ${p.a.err.toExponential(2)} vs tile ${p.b.err.toExponential(2)} (|ref| ${p.a.scale.toPrecision(3)})`)
                .join('; '),
      });
    }
  } finally {
    native.cpuIsa(before, false);
  }
  return out;
}

/** Median ms of fn over reps calls after warmup calls. */
function medianMs(fn: () => unknown, reps: number): number {
  for (let i = 0; i < 2; i++) L.tidy(() => void fn());
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    L.tidy(() => void fn());
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return ts.sort((a, b) => a - b)[reps >> 1];
}

/** The bf16 products of the CPU benchmark on the AMX tile, the AVX512-BF16 tile and our f32 product (real AMX only). */
export function amxTiming(reps = 7): AmxTiming[] {
  const before = native.cpuIsa().active;
  const rows: AmxTiming[] = [];
  const shapes: { name: string; M: number; K: number; N: number; wt: boolean; bwd: boolean }[] = [
    ...[1024, 2048, 4096].map((n) => ({ name: `matmul ${n}^3`, M: n, K: n, N: n, wt: false, bwd: false })),
    { name: 'linear 256x2048x5504 fwd', M: 256, K: 2048, N: 5504, wt: true, bwd: false },
    { name: 'linear 256x2048x5504 fwd+bwd', M: 256, K: 2048, N: 5504, wt: true, bwd: true },
  ];
  try {
    for (const s of shapes) {
      const time = (dtype: DType, isa: string): number => {
        useCpuIsa(isa);
        const a = L.tensor(randValues([s.M, s.K], 1), { shape: [s.M, s.K], dtype, requiresGrad: s.bwd });
        const bShape = s.wt ? [s.N, s.K] : [s.K, s.N];
        const b = L.tensor(randValues(bShape, 2), { shape: bShape, dtype, requiresGrad: s.bwd });
        const g = s.bwd ? L.tensor(randValues([s.M, s.N], 3), { shape: [s.M, s.N], dtype }) : null;
        try {
          const f = (): Tensor => (s.wt ? L.linear(a, b) : L.matmul(a, b));
          return medianMs(
            s.bwd
              ? () => {
                  f().backward(g!);
                  a.zeroGrad();
                  b.zeroGrad();
                }
              : () => L.noGrad(f),
            reps,
          );
        } finally {
          [a, b, g].forEach((t) => t?.dispose());
        }
      };
      const amx = time('bfloat16', 'amx');
      const tile = time('bfloat16', 'avx512bf16');
      const f32 = time('float32', 'avx512');
      const flops = 2 * s.M * s.K * s.N * (s.bwd ? 3 : 1);
      const r = (x: number): number => Math.round(x * 1000) / 1000;
      rows.push({
        case: s.name,
        amx_ms: r(amx),
        avx512bf16_ms: r(tile),
        f32_ms: r(f32),
        vs_avx512bf16: r(tile / amx),
        vs_f32: r(f32 / amx),
        amx_gflops: Math.round(flops / amx / 1e6),
      });
    }
  } finally {
    native.cpuIsa(before, false);
  }
  return rows;
}
