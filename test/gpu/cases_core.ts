// cases_core.ts — device parity cases for the tensor core: unary and binary elementwise ops (broadcast,
// strided, scalar operands, comparisons, where/maskedFill/clamp), casts and copies of views, creation,
// reductions, and matmul (every transpose combination, odd sizes, batched and broadcast batches, 1-D
// operands, linear with bias) in float32, bfloat16 and float16, forward and backward.
import * as L from '../../lib';
import { native } from '../../lib/native';
import { Input, Outputs, ParityCase, forwardBackward, inp, intInp, noGradInp, parity, f64, upload, uniform, numel } from './parity';

const FLOATS: L.DType[] = ['float32', 'bfloat16', 'float16'];
const short = (d: L.DType): string =>
  ({ float32: 'f32', bfloat16: 'bf16', float16: 'f16', float64: 'f64', int32: 'i32', int64: 'i64', uint8: 'u8', bool: 'bool' })[d];

// ------------------------------------------------------------------ elementwise
const UNARY: { name: string; f: (x: L.Tensor) => L.Tensor; lo: number; hi: number; gap?: number; grad?: boolean }[] = [
  { name: 'neg', f: L.neg, lo: -3, hi: 3 },
  { name: 'exp', f: L.exp, lo: -4, hi: 4 },
  { name: 'log', f: L.log, lo: 0.05, hi: 4 },
  { name: 'sqrt', f: L.sqrt, lo: 0.01, hi: 4 },
  { name: 'rsqrt', f: L.rsqrt, lo: 0.05, hi: 4 },
  { name: 'abs', f: L.abs, lo: -3, hi: 3, gap: 0.02 },
  { name: 'sin', f: L.sin, lo: -6, hi: 6 },
  { name: 'cos', f: L.cos, lo: -6, hi: 6 },
  { name: 'tanh', f: L.tanh, lo: -4, hi: 4 },
  { name: 'sigmoid', f: L.sigmoid, lo: -8, hi: 8 },
  { name: 'relu', f: L.relu, lo: -3, hi: 3, gap: 0.02 },
  { name: 'gelu', f: (x) => L.gelu(x), lo: -5, hi: 5 },
  { name: 'gelu_tanh', f: (x) => L.gelu(x, 'tanh'), lo: -5, hi: 5 },
  { name: 'quick_gelu', f: L.quickGelu, lo: -5, hi: 5 },
  { name: 'silu', f: L.silu, lo: -6, hi: 6 },
  { name: 'square', f: L.square, lo: -3, hi: 3 },
  { name: 'reciprocal', f: L.reciprocal, lo: -3, hi: 3, gap: 0.2 },
  { name: 'sign', f: L.sign, lo: -3, hi: 3, gap: 0.02, grad: false },
  { name: 'erf', f: L.erf, lo: -3, hi: 3 },
  { name: 'pow 2.5', f: (x) => L.pow(x, 2.5), lo: 0.1, hi: 3 },
];

function unaryCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const u of UNARY)
    for (const dt of FLOATS) {
      const x: Input = { ...inp([37, 53], dt, 100, u.lo, u.hi, u.gap ?? 0), grad: u.grad !== false };
      out.push(parity('unary', `${u.name} ${short(dt)} [37,53] fwd+bwd`, dt, (dev) => forwardBackward(dev, [x], u.f)));
    }
  // Strided inputs: a permuted view and a stepped slice (the kernels take any strides).
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const x = inp([7, 9, 11], dt, 101, -3, 3);
    out.push(
      parity('unary', `exp ${short(dt)} permuted view fwd+bwd`, dt, (dev) => forwardBackward(dev, [x], (t) => L.exp(L.permute(t, [2, 0, 1])))),
    );
    out.push(
      parity('unary', `gelu ${short(dt)} stepped slice fwd+bwd`, dt, (dev) => forwardBackward(dev, [x], (t) => L.gelu(L.slice(t, 1, 1, 9, 2)))),
    );
  }
  // Fused SwiGLU: the vector map forward and the one-kernel backward; odd sizes, then strided views.
  for (const dt of FLOATS) {
    const g = inp([37, 53], dt, 103, -6, 6);
    const u = inp([37, 53], dt, 104, -3, 3);
    out.push(parity('swiglu', `swiglu ${short(dt)} [37,53] fwd+bwd`, dt, (dev) => forwardBackward(dev, [g, u], L.swiglu)));
  }
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const g = inp([9, 13], dt, 105, -6, 6);
    const u = inp([13, 9], dt, 106, -3, 3);
    out.push(
      parity('swiglu', `swiglu ${short(dt)} transposed gate fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [g, u], (x, y) => L.swiglu(L.transpose(x, 0, 1), y)),
      ),
    );
  }
  // Large flat tensor: grid-stride loops and vector tails (1 << 20 + 3 elements).
  const big = inp([(1 << 20) + 3], 'float32', 102, -4, 4);
  out.push(parity('unary', 'sigmoid f32 1M+3 elements', 'float32', (dev) => forwardBackward(dev, [noGradInp(big)], L.sigmoid)));
  return out;
}

const BINARY: { name: string; f: (a: L.Tensor, b: L.Tensor) => L.Tensor; alo?: number; blo?: number; bhi?: number; bgap?: number }[] = [
  { name: 'add', f: (a, b) => L.add(a, b) },
  { name: 'add alpha', f: (a, b) => L.add(a, b, -0.5) },
  { name: 'sub', f: (a, b) => L.sub(a, b) },
  { name: 'mul', f: L.mul },
  { name: 'div', f: L.div, bgap: 0.3 },
  { name: 'maximum', f: L.maximum },
  { name: 'minimum', f: L.minimum },
  { name: 'pow', f: L.pow, alo: 0.2, blo: -1, bhi: 2 },
];

function binaryCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const op of BINARY)
    for (const dt of FLOATS) {
      // [5,1,7] with [3,7] broadcasts to [5,3,7]; the backward reduces each gradient to its shape.
      const a = inp([5, 1, 7], dt, 200, op.alo ?? -2, 2);
      const b = inp([3, 7], dt, 201, op.blo ?? -2, op.bhi ?? 2, op.bgap ?? 0);
      out.push(parity('binary', `${op.name} ${short(dt)} broadcast [5,1,7]x[3,7] fwd+bwd`, dt, (dev) => forwardBackward(dev, [a, b], op.f)));
    }
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const a = inp([6, 10], dt, 202, 0.2, 2);
    const b = inp([10, 6], dt, 203, 0.3, 2);
    out.push(
      parity('binary', `mul ${short(dt)} transposed operand fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [a, b], (x, y) => L.mul(x, L.transpose(y, 0, 1))),
      ),
    );
    out.push(
      parity('binary', `div ${short(dt)} scalar operands fwd+bwd`, dt, (dev) => forwardBackward(dev, [a], (x) => L.add(L.div(x, 3), L.div(2, x)))),
    );
    out.push(
      parity('binary', `pow ${short(dt)} scalar base and exponent fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [a], (x) => L.add(L.pow(x, 3), L.pow(2, x))),
      ),
    );
  }
  // Integer arithmetic is exact.
  const ia = intInp([4, 9], 'int64', 204, -50, 50);
  const ib = intInp([9], 'int64', 205, -50, 50);
  out.push(
    parity('binary', 'add/mul/maximum i64 broadcast', 'int64', (dev) =>
      forwardBackward(dev, [ia, ib], (x, y) => [L.add(x, y), L.mul(x, y), L.maximum(x, y)]),
    ),
  );
  const ja = intInp([4, 9], 'int32', 206, -50, 50);
  out.push(parity('binary', 'sub i32 scalar', 'int32', (dev) => forwardBackward(dev, [ja], (x) => L.sub(x, 7))));
  // Comparisons on values with ties (integers 0..3 as floats) give bool outputs: exact.
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const qa = { ...intInp([5, 1, 6], dt, 207, 0, 4) };
    const qb = { ...intInp([3, 6], dt, 208, 0, 4) };
    out.push(
      parity('binary', `eq ne lt le gt ge and or ${short(dt)} broadcast`, 'bool', (dev) =>
        forwardBackward(dev, [qa, qb], (x, y) => [
          L.eq(x, y),
          L.ne(x, y),
          L.lt(x, y),
          L.le(x, y),
          L.gt(x, y),
          L.ge(x, y),
          L.logicalAnd(L.gt(x, 1), L.lt(y, 2)),
          L.logicalOr(L.eq(x, 0), L.eq(y, 3)),
        ]),
      ),
    );
  }
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const a = inp([4, 5, 6], dt, 209);
    const b = inp([5, 6], dt, 210);
    const c = intInp([4, 1, 6], 'int32', 211, 0, 2);
    out.push(
      parity('where', `where ${short(dt)} broadcast cond fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [a, b, c], (x, y, m) => L.where(L.eq(m, 1), x, y)),
      ),
    );
    out.push(
      parity('where', `maskedFill ${short(dt)} fwd+bwd`, dt, (dev) => forwardBackward(dev, [a, c], (x, m) => L.maskedFill(x, L.eq(m, 1), -7.5))),
    );
    out.push(parity('where', `clamp ${short(dt)} fwd+bwd`, dt, (dev) => forwardBackward(dev, [a], (x) => L.clamp(x, -0.4, 0.6))));
  }
  return out;
}

// ------------------------------------------------------------------ casts, copies, creation
function castCases(): ParityCase[] {
  const out: ParityCase[] = [];
  // Specials: rounding ties, values past f16's range, subnormals, infinities, NaN.
  const specials = [
    0,
    -0,
    1,
    -1,
    1 + 2 ** -8,
    1 + 3 * 2 ** -9,
    65504,
    70000,
    -70000,
    1e-6,
    6e-8,
    1e-40,
    3.4e38,
    Infinity,
    -Infinity,
    NaN,
    0.1,
    -2.7,
    2.5,
    3.5,
  ];
  const vals = Float64Array.from([...specials, ...uniform(200, 300, -100, 100)]);
  const src: Input = { shape: [vals.length], dtype: 'float32', values: vals };
  const exact = { rtol: 0, atol: 0, atolRms: 0 };
  for (const to of ['bfloat16', 'float16', 'float64'] as L.DType[])
    out.push(parity('cast', `f32 -> ${short(to)} (specials, round to nearest even)`, to, (dev) => ({ out: f64(L.to(upload(src, dev), to)) }), exact));
  const finite: Input = { shape: [220], dtype: 'float32', values: uniform(220, 301, -1000, 1000) };
  for (const to of ['int32', 'int64', 'uint8', 'bool'] as L.DType[])
    out.push(
      parity(
        'cast',
        `f32 -> ${short(to)} (truncation)`,
        to,
        (dev) => ({ out: f64(L.to(L.clamp(upload(finite, dev), to === 'uint8' ? 0 : -1000, to === 'uint8' ? 255 : 1000), to)) }),
        exact,
      ),
    );
  for (const [from, to] of [
    ['bfloat16', 'float32'],
    ['float16', 'float32'],
    ['bfloat16', 'float16'],
    ['float16', 'bfloat16'],
    ['int64', 'float32'],
    ['int64', 'bfloat16'],
    ['int32', 'float16'],
    ['bool', 'float32'],
  ] as [L.DType, L.DType][]) {
    const s: Input =
      from === 'bool'
        ? intInp([64], 'bool', 302, 0, 2)
        : from.startsWith('int')
          ? intInp([64], from, 303, -3000, 3000)
          : { shape: [220], dtype: from, values: vals };
    out.push(parity('cast', `${short(from)} -> ${short(to)}`, to, (dev) => ({ out: f64(L.to(upload(s, dev), to)) }), exact));
  }
  // Copies of views: permute, expand, stepped slices, cat, stack, to() across devices.
  for (const dt of ['float32', 'bfloat16', 'int64'] as L.DType[]) {
    const x: Input = dt === 'int64' ? intInp([3, 4, 5], dt, 304, -9, 9) : inp([3, 4, 5], dt, 304);
    out.push(
      parity('copy', `views -> contiguous ${short(dt)} (permute, expand, step slice, cat, stack)`, dt, (dev) => {
        const t = upload(x, dev);
        return L.tidy(() => ({
          permute: f64(L.contiguous(L.permute(t, [2, 0, 1]))),
          expand: f64(L.contiguous(L.expand(L.unsqueeze(t, 1), [3, 2, 4, 5]))),
          slice: f64(L.contiguous(L.slice(L.slice(t, 2, 0, 5, 2), 0, 1, 3))),
          cat: f64(L.cat([t, L.permute(L.permute(t, [0, 2, 1]), [0, 2, 1]), L.narrow(t, 1, 1, 2)], 1)),
          stack: f64(L.stack([t, t], 2)),
          toCpu: f64(L.to(t, 'cpu')),
        }));
      }),
    );
  }
  out.push(
    parity('creation', 'full, arange, zeros/ones (f32, bf16, i64)', 'float32', (dev) =>
      L.tidy(() => ({
        full: f64(L.full([3, 5], 2.75, { device: dev })),
        fullBf16: f64(L.full([7], -1.3, { dtype: 'bfloat16', device: dev })),
        arangeI: f64(L.arange(-5, 17, 3, { device: dev })),
        arangeF: f64(L.arange(0, 1, 0.07, { dtype: 'float32', device: dev })),
        ones: f64(L.ones([2, 3], { dtype: 'float16', device: dev })),
      })),
    ),
  );
  return out;
}

// ------------------------------------------------------------------ reductions
function reduceCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const dt of ['float32', 'bfloat16', 'float16'] as L.DType[]) {
    const x = inp([6, 17, 33], dt, 400, -2, 2);
    out.push(
      parity('reduce', `sum/mean ${short(dt)} all, dim 1, dims [0,2] keepdim fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [x], (t) => [L.sum(t), L.sum(t, 1), L.sum(t, [0, 2], true), L.mean(t, -1), L.mean(t)]),
      ),
    );
    if (dt === 'float16') continue;
    out.push(
      parity('reduce', `max/min ${short(dt)} dim 1 / 0 fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [x], (t) => [L.max(t, 1), L.min(t, 0, true), L.max(t)]),
      ),
    );
    out.push(
      parity('reduce', `variance ${short(dt)} dim -1 (corr 1), [0,1] (corr 0) fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [x], (t) => [L.variance(t, -1), L.variance(t, [0, 1], { correction: 0, keepdim: true })]),
      ),
    );
    out.push(
      parity('reduce', `logsumexp ${short(dt)} dim -1, [0,2] fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [x], (t) => [L.logsumexp(t, -1), L.logsumexp(t, [0, 2])]),
      ),
    );
  }
  const xf = inp([6, 17, 33], 'float32', 401, -2, 2);
  out.push(
    parity('reduce', 'argmax/argmin f32 (i64 out)', 'int64', (dev) =>
      forwardBackward(dev, [noGradInp(xf)], (t) => [L.argmax(t, -1), L.argmin(t, 1), L.argmax(t)]),
    ),
  );
  // Ties: integer-valued rows; the first index wins (torch semantics) on every device.
  const tie = intInp([8, 20], 'float32', 402, 0, 3);
  out.push(
    parity('reduce', 'argmax/argmin with ties (first index)', 'int64', (dev) =>
      forwardBackward(dev, [tie], (t) => [L.argmax(t, -1), L.argmin(t, -1), L.argmax(t, 0)]),
    ),
  );
  // Long rows: one reduction over 300k elements, and many short rows along a strided dim.
  const long = inp([3, 100_000], 'float32', 403, 0, 1);
  // rtol 1e-3: an f32 sum of 1e5 terms carries up to ~n·eps relative error in whatever order each device
  // adds them (both are within it of the exact sum; 1e-4 would test the summation order, not the kernel).
  out.push(
    parity(
      'reduce',
      'sum/max f32 over 100k-element rows',
      'float32',
      (dev) => forwardBackward(dev, [noGradInp(long)], (t) => [L.sum(t, -1), L.max(t, -1), L.mean(t)]),
      { rtol: 1e-3 },
    ),
  );
  const col = inp([4097, 3], 'bfloat16', 404, -1, 1);
  out.push(parity('reduce', 'sum bf16 over dim 0 (4097 rows, strided)', 'bfloat16', (dev) => forwardBackward(dev, [col], (t) => L.sum(t, 0))));
  return out;
}

// ------------------------------------------------------------------ matmul
/** fn with the CUDA GEMM tile forced to `tile` (native.cudaGemmTile), then back to 'auto'; the GPU bench
 *  uses it too. */
export function withGemmTile<T>(tile: string | undefined, fn: () => T): T {
  if (!tile) return fn();
  native.cudaGemmTile(tile);
  try {
    return fn();
  } finally {
    native.cudaGemmTile('auto');
  }
}

/** The tiles native.cudaGemmTile can force, 'auto' left out; the wgmma ones only when the device is an sm_90
 *  (elsewhere they fall back to the default tile) and LLAVA_SKIP_WGMMA is not set (scripts/gpu_check.sh sets
 *  it when they failed in a process of their own, so that a fault of theirs cannot take the rest of the
 *  check and the benchmarks down with the CUDA context). The parity table and the GPU bench share it. */
export function forcedGemmTiles(): string[] {
  const wgmma = /\(sm_90[,)]/.test(L.cuda.describe()) && !process.env.LLAVA_SKIP_WGMMA;
  return native.cudaGemmTile().tiles.filter((t) => t !== 'auto' && (wgmma || !t.startsWith('wgmma-')));
}

/** a[M,K] @ b[K,N] with either operand stored transposed ([K,M] / [N,K]) and viewed back, so the kernel
 *  sees a non-unit last stride; values uniform in [-1, 1). */
function layoutCase(M: number, K: number, N: number, dt: L.DType, ta: boolean, tb: boolean, seedA: number, seedB: number) {
  return {
    name: `${M}x${K}x${N} ${ta ? 'aT' : 'a'} ${tb ? 'bT' : 'b'}`,
    a: inp(ta ? [K, M] : [M, K], dt, seedA, -1, 1),
    b: inp(tb ? [N, K] : [K, N], dt, seedB, -1, 1),
    f: (x: L.Tensor, y: L.Tensor): L.Tensor => L.matmul(ta ? L.transpose(x, 0, 1) : x, tb ? L.transpose(y, 0, 1) : y),
  };
}

function matmulCases(): ParityCase[] {
  const out: ParityCase[] = [];
  const sizes: [number, number, number][] = [
    [1, 1, 1],
    [7, 13, 5],
    [127, 129, 65],
    [64, 256, 96],
  ];
  for (const dt of FLOATS)
    for (const [M, K, N] of sizes)
      for (const ta of [false, true])
        for (const tb of [false, true]) {
          const c = layoutCase(M, K, N, dt, ta, tb, 500 + M, 600 + N);
          out.push(
            parity(
              'matmul',
              `${short(dt)} ${c.name} fwd+bwd`,
              dt,
              (dev) => forwardBackward(dev, [c.a, c.b], c.f),
              K > 200 && dt === 'float32' ? { rtol: 2e-4 } : {},
            ),
          );
        }
  for (const dt of FLOATS) {
    const pairs: [string, number[], number[]][] = [
      ['batched [3,7,13]@[3,13,5]', [3, 7, 13], [3, 13, 5]],
      ['broadcast [7,13]@[2,3,13,5]', [7, 13], [2, 3, 13, 5]],
      ['broadcast [2,1,7,13]@[3,13,5]', [2, 1, 7, 13], [3, 13, 5]],
      ['vector [13]@[13,5]', [13], [13, 5]],
      ['vector [2,7,13]@[13]', [2, 7, 13], [13]],
      ['dot [33]@[33]', [33], [33]],
    ];
    for (const [name, sa, sb] of pairs) {
      const a = inp(sa, dt, 700 + numel(sa));
      const b = inp(sb, dt, 800 + numel(sb));
      out.push(parity('matmul', `${short(dt)} ${name} fwd+bwd`, dt, (dev) => forwardBackward(dev, [a, b], L.matmul)));
    }
    const x = inp([2, 9, 33], dt, 900);
    const w = inp([17, 33], dt, 901, -0.3, 0.3);
    const bias = inp([17], dt, 902);
    out.push(
      parity('matmul', `${short(dt)} linear x[2,9,33] W[17,33] + bias fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [x, w, bias], (p, q, r) => L.linear(p, q, r)),
      ),
    );
  }
  // The skinny kernel (M <= 8, W's rows contiguous: x @ W^T in decoding): 16-byte loads at K 264, element
  // loads at K 263 and for a column-sliced x (row stride above K), one to eight rows.
  for (const dt of FLOATS)
    for (const [M, K, sliced] of [
      [1, 264, false],
      [4, 264, false],
      [8, 264, false],
      [3, 263, false],
      [5, 264, true],
    ] as const) {
      const x = inp([M, sliced ? K + 8 : K], dt, 910 + M);
      const w = inp([40, K], dt, 911, -0.3, 0.3);
      const bias = inp([40], dt, 912);
      out.push(
        parity('matmul', `${short(dt)} skinny linear x[${M},${K}]${sliced ? ' (sliced)' : ''} W[40,${K}] + bias fwd+bwd`, dt, (dev) =>
          forwardBackward(dev, [x, w, bias], (p, q, r) => L.linear(sliced ? L.narrow(p, 1, 3, K) : p, q, r)),
        ),
      );
    }
  // Every bf16 GEMM tile the benchmark can force (native.cudaGemmTile), on the four layouts, the backward's
  // products included; several k tiles deep and off every tile edge. Only the device run sets the tile.
  for (const tile of forcedGemmTiles())
    for (const ta of [false, true])
      for (const tb of [false, true]) {
        const c = layoutCase(136, 328, 264, 'bfloat16', ta, tb, 950, 951);
        out.push(
          parity('matmul', `bf16 tile ${tile} ${c.name} fwd+bwd`, 'bfloat16', (dev) =>
            withGemmTile(dev === 'cuda' ? tile : undefined, () => forwardBackward(dev, [c.a, c.b], c.f)),
          ),
        );
      }
  // Long K in bf16: f32 accumulation over 4096 terms (a bf16 accumulator would be far off).
  const a = inp([33, 4096], 'bfloat16', 903);
  const b = inp([4096, 40], 'bfloat16', 904);
  out.push(parity('matmul', 'bf16 33x4096x40 (long K) fwd', 'bfloat16', (dev) => forwardBackward(dev, [noGradInp(a), noGradInp(b)], L.matmul)));
  // f32 must not silently use TF32 (10-bit mantissa): K = 1024 of values near 1.
  const c = inp([16, 1024], 'float32', 905, 0.5, 1.5);
  const d = inp([1024, 16], 'float32', 906, 0.5, 1.5);
  out.push(
    parity('matmul', 'f32 16x1024x16 (no TF32: rtol 1e-5)', 'float32', (dev) => forwardBackward(dev, [noGradInp(c), noGradInp(d)], L.matmul), {
      rtol: 1e-5,
    }),
  );
  return out;
}

export function coreCases(): ParityCase[] {
  return [...unaryCases(), ...binaryCases(), ...castCases(), ...reduceCases(), ...matmulCases()];
}

export type { Outputs };
