// bad_input_native.test.ts — bad calls straight into the native addon must throw a JS Error whose
// message starts with `[op]` (naming the op or its kernel) and must never crash the process.
//
// The native table feeds `native.run` / `alloc` / `read` / `write` / `free` / `copyBytes` directly
// with wrong JS types, fake storage objects, negative or huge sizes, views that reach outside their
// storage (including extents that overflow 64-bit arithmetic), unknown kernels and too many dims; then the
// fused kernels (matmul, norms, attention) get malformed calls. The public ops are tested in
// bad_input.test.ts; the table runner is in bad_input_helpers.ts.
import t from 'tap';
import * as L from '../../lib';
import { native, NativeView, KernelArg, StorageHandle } from '../../lib/native';
import { Case, runTable } from './bad_input_helpers';

t.test('bad calls straight into the native addon', async (t) => {
  const h = native.alloc(0, 16); // 4 float32
  const h2 = native.alloc(0, 16);
  const freed = native.alloc(0, 16);
  native.free(freed);
  const view = (over: Partial<NativeView> & Record<string, unknown> = {}): NativeView =>
    ({ s: h, d: 0, sh: [4], st: [1], o: 0, ...over }) as NativeView;
  const other = (): NativeView => ({ s: h2, d: 0, sh: [4], st: [1], o: 0 });
  const run = (k: unknown, args: unknown): void => native.run(k as string, args as KernelArg[]);
  const fake = {} as StorageHandle;
  const b3 = { sh: [1, 2, 2], st: [4, 2, 1] }; // a batch of one 2x2 matrix
  const m2 = { sh: [2, 2], st: [2, 1] };
  /** Runs `fn` with an int64 index tensor [1] holding v, in a storage of its own, freed afterwards: a storage
   *  left live here could take the handle number that 'hostView of a number' below relies on being dead. */
  const withIndex = (v: bigint, fn: (ix: NativeView) => void): void => {
    const s = native.alloc(0, 8);
    try {
      native.write(s, 0, BigInt64Array.of(v));
      fn({ s, d: 5, sh: [1], st: [1], o: 0 });
    } finally {
      native.free(s);
    }
  };
  const cases: Case[] = [
    // run: names, argument lists, argument types
    ['run with a numeric kernel name', 'run', () => run(123, [])],
    ['run with a null kernel name', 'run', () => run(null, [])],
    ['unknown kernel', 'no_such_kernel', () => run('no_such_kernel', [view()])],
    ['arguments not an array', 'copy', () => run('copy', null)],
    ['arguments a string', 'copy', () => run('copy', 'abc')],
    ['arguments an object', 'copy', () => run('copy', { 0: view() })],
    ['missing arguments', 'copy', () => run('copy', [])],
    ['missing second tensor', 'copy', () => run('copy', [view()])],
    ['number where a tensor is expected', 'copy', () => run('copy', [1, 2])],
    ['string where a tensor is expected', 'fill', () => run('fill', ['x', 1])],
    ['tensor where a number is expected', 'fill', () => run('fill', [view(), view()])],
    ['BigInt argument', 'fill', () => run('fill', [view(), 1n])],
    ['Symbol argument', 'fill', () => run('fill', [view(), Symbol('x')])],
    ['function argument', 'fill', () => run('fill', [() => 1, 1])],
    ['list with a string', 'fill', () => run('fill', [view(), ['a']])],
    // tensor views
    ['fake storage object', 'copy', () => run('copy', [view({ s: fake }), other()])],
    ['storage a fractional number', 'copy', () => run('copy', [view({ s: 5.5 as unknown as StorageHandle }), other()])],
    ['storage a negative number', 'copy', () => run('copy', [view({ s: -1 as unknown as StorageHandle }), other()])],
    ['storage beyond the handle range', 'copy', () => run('copy', [view({ s: (2 ** 53) as unknown as StorageHandle }), other()])],
    ['freed storage', 'fill', () => run('fill', [view({ s: freed }), 1])],
    ['unknown dtype code', 'fill', () => run('fill', [view({ d: 9 }), 1])],
    ['fractional dtype code', 'fill', () => run('fill', [view({ d: 0.5 }), 1])],
    ['dtype a string', 'fill', () => run('fill', [view({ d: 'float32' as unknown as number }), 1])],
    ['shape a string', 'fill', () => run('fill', [view({ sh: 'abc' as unknown as number[] }), 1])],
    ['shape missing', 'fill', () => run('fill', [{ s: h, d: 0, st: [1], o: 0 }, 1])],
    ['too many dims', 'fill', () => run('fill', [view({ sh: [1, 1, 1, 1, 1, 1, 1, 1, 1], st: [1, 1, 1, 1, 1, 1, 1, 1, 1] }), 1])],
    ['negative size', 'fill', () => run('fill', [view({ sh: [-1] }), 1])],
    ['fractional size', 'fill', () => run('fill', [view({ sh: [1.5] }), 1])],
    ['NaN size', 'fill', () => run('fill', [view({ sh: [NaN] }), 1])],
    ['Infinity size', 'fill', () => run('fill', [view({ sh: [Infinity] }), 1])],
    ['strides of the wrong length', 'fill', () => run('fill', [view({ st: [1, 1] }), 1])],
    ['string stride', 'fill', () => run('fill', [view({ st: ['1'] as unknown as number[] }), 1])],
    ['negative offset', 'fill', () => run('fill', [view({ o: -1 }), 1])],
    ['fractional offset', 'fill', () => run('fill', [view({ o: 0.5 }), 1])],
    ['offset a string', 'fill', () => run('fill', [view({ o: '0' as unknown as number }), 1])],
    ['view past the end', 'fill', () => run('fill', [view({ sh: [5] }), 1])],
    ['offset past the end', 'fill', () => run('fill', [view({ sh: [1], o: 4 }), 1])],
    ['float64 view of 16 bytes with 3 elements', 'fill', () => run('fill', [view({ d: 1, sh: [3] }), 1])],
    ['negative stride below the start', 'fill', () => run('fill', [view({ sh: [3], st: [-1] }), 1])],
    ['stride too large', 'fill', () => run('fill', [view({ sh: [2], st: [4] }), 1])],
    // extents whose 64-bit product wraps around (used to pass the range check)
    ['stride 2^62 (extent wraps to 0)', 'fill', () => run('fill', [view({ sh: [5], st: [2 ** 62] }), 1])],
    ['stride 2^63', 'fill', () => run('fill', [view({ sh: [3], st: [2 ** 63] }), 1])],
    ['offset 2^62 (byte range wraps)', 'fill', () => run('fill', [view({ d: 1, sh: [1], o: 2 ** 62 }), 1])],
    ['stride 2^47 in 3 dims', 'fill', () => run('fill', [view({ sh: [3, 3, 3], st: [2 ** 47, 2 ** 47, -(2 ** 47)] }), 1])],
    ['2^60 broadcast elements', 'fill', () => run('fill', [view({ sh: [2 ** 30, 2 ** 30], st: [0, 0] }), 1])],
    // kernel-level validation
    ['copy shapes differ', 'copy', () => run('copy', [view(), view({ sh: [2] })])],
    ['copy into itself (overlap)', 'copy', () => run('copy', [view({ sh: [2] }), view({ sh: [2], o: 1 })])],
    ['unary unknown op', 'unary', () => run('unary', [view(), other(), 'bogus'])],
    ['unary op a number', 'unary', () => run('unary', [view(), other(), 3])],
    ['unary dtypes differ', 'unary', () => run('unary', [view(), { ...other(), d: 4 }, 'exp'])],
    ['swiglu shapes differ', 'swiglu', () => run('swiglu', [view(), other(), view({ s: h2, sh: [2] })])],
    ['swiglu dtypes differ', 'swiglu', () => run('swiglu', [view(), other(), { ...other(), d: 4 }])],
    ['swiglu output is the gate', 'swiglu', () => run('swiglu', [view(), view(), other()])],
    [
      'swiglu_bwd strided dgate',
      /^\[swiglu_bwd\] dgate must be contiguous/,
      () => run('swiglu_bwd', [view({ sh: [2], st: [2] }), view({ s: h2, sh: [2] }), ...[0, 0, 0].map(() => view({ s: h2, sh: [2], o: 2 }))]),
    ],
    ['swiglu_bwd missing dy', 'swiglu_bwd', () => run('swiglu_bwd', [view(), other(), other(), other()])],
    ['swiglu_bwd dgate is the gate', 'swiglu_bwd', () => run('swiglu_bwd', [view(), other(), view(), view(), other()])],
    ['binary shapes differ', 'binary', () => run('binary', [view(), other(), view({ s: h2, sh: [2] }), 'add'])],
    ['binary unknown op', 'binary', () => run('binary', [view(), other(), other(), 'xor'])],
    ['binary compare into float', 'binary', () => run('binary', [view(), other(), other(), 'lt'])],
    ['where int condition', 'where', () => run('where', [view(), other(), other(), other()])],
    ['random unknown kind', 'random', () => run('random', [view(), 'cauchy', 0, 0, null])],
    ['random fractional seed', 'random', () => run('random', [view(), 'normal', 0.5, 0, null])],
    ['reduce R does not divide', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'sum', 3, null, 1])],
    ['reduce unknown op', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'median', 4])],
    ['reduce bad inner', 'reduce', () => run('reduce', [view({ sh: [2] }), other(), 'sum', 2, null, 3])],
    ['reduce R = 0 for max', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'max', 0])],
    // out [2^11] x R 2^53 wraps to 2^64 == 0 == numel of an empty input (used to read out of bounds)
    [
      'reduce size product wraps',
      'reduce',
      () => {
        const big = native.alloc(0, 4 * 2 ** 11);
        try {
          run('reduce', [{ s: big, d: 0, sh: [2 ** 11], st: [1], o: 0 }, view({ sh: [0] }), 'sum', 2 ** 53, null, 1]);
        } finally {
          native.free(big);
        }
      },
    ],
    ['reduce R beyond the input', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'sum', 8])],
    ['reduce R beyond 2^53', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'sum', 2 ** 60])],
    ['softmax int input', 'softmax_fwd', () => run('softmax_fwd', [view({ d: 4 }), { ...other(), d: 4 }, false])],
    ['softmax flag not a boolean', 'softmax_fwd', () => run('softmax_fwd', [view(), other(), 'yes'])],
    ['matmul K differs', 'matmul', () => run('matmul', [view(b3), { ...other(), ...b3 }, { ...other(), sh: [1, 1, 2], st: [2, 2, 1] }, null, null])],
    ['matmul 2-D operands', 'matmul', () => run('matmul', [view(m2), { ...other(), ...m2 }, { ...other(), ...m2 }, null, null])],
    [
      'matmul bias of the wrong size',
      'matmul',
      () => run('matmul', [view(b3), { ...other(), ...b3 }, { ...other(), ...b3 }, { ...other(), sh: [3] }, null]),
    ],
    ['matmul output aliases an input', 'matmul', () => run('matmul', [view(b3), view(b3), { ...other(), ...b3 }, null, null])],
    [
      'cross_entropy target out of range',
      'cross_entropy_fwd',
      () =>
        withIndex(7n, (ix) =>
          run('cross_entropy_fwd', [view({ sh: [1] }), view({ s: h2, sh: [1] }), view({ s: h2, sh: [1, 2], st: [2, 1], o: 2 }), ix, -100]),
        ),
    ],
    ['index_select index out of range', 'index_select', () => withIndex(4n, (ix) => run('index_select', [view({ sh: [1] }), other(), ix, 0]))],
    ['index_select negative index', 'index_select', () => withIndex(-1n, (ix) => run('index_select', [view({ sh: [1] }), other(), ix, 0]))],
    ['index_select float index', 'index_select', () => run('index_select', [view({ sh: [1] }), other(), view({ s: h2, sh: [1] }), 0])],
    ['index_add dim out of range', 'index_add', () => run('index_add', [view(), { s: h2, d: 5, sh: [1], st: [1], o: 0 }, other(), 3])],
    ['gather index out of range', 'gather', () => withIndex(9n, (ix) => run('gather', [view({ sh: [1] }), other(), ix, 0]))],
    ['scatter_add index out of range', 'scatter_add', () => withIndex(-2n, (ix) => run('scatter_add', [view(), ix, view({ s: h2, sh: [1] }), 0]))],
    ['rope 2-D x', 'rope', () => run('rope', [view(), other(), other(), other()])],
    [
      'attention H % Hkv',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          view({ sh: [1, 3, 1, 1], st: [3, 1, 1, 1] }),
          view({ s: h2, sh: [1, 3, 1], st: [3, 1, 1] }),
          view({ sh: [1, 3, 1, 1], st: [3, 1, 1, 1] }),
          view({ sh: [1, 2, 1, 1], st: [2, 1, 1, 1] }),
          view({ sh: [1, 2, 1, 1], st: [2, 1, 1, 1] }),
          null,
          false,
          1,
        ]),
    ],
    ['layer_norm_fwd missing args', 'layer_norm_fwd', () => run('layer_norm_fwd', [view()])],
    ['adamw bad step', 'adamw', () => run('adamw', [view(), other(), other(), other(), null, 0.1, 0.9, 0.99, 1e-8, 0, 0])],
    // storage functions
    ['alloc negative size', 'alloc', () => native.alloc(0, -1)],
    ['alloc fractional size', 'alloc', () => native.alloc(0, 1.5)],
    ['alloc NaN size', 'alloc', () => native.alloc(0, NaN)],
    ['alloc absurd size', 'alloc', () => native.alloc(0, 1e20)],
    ['alloc size a string', 'alloc', () => native.alloc(0, '16' as unknown as number)],
    ['alloc unknown device', 'alloc', () => native.alloc(5, 16)],
    ['alloc fractional device', 'alloc', () => native.alloc(0.5, 16)],
    ['alloc device a string', 'alloc', () => native.alloc('cpu' as unknown as number, 16)],
    ['read fake handle', 'read', () => native.read(fake, 0, 4)],
    ['read freed storage', 'read', () => native.read(freed, 0, 4)],
    ['read negative offset', 'read', () => native.read(h, -1, 4)],
    ['read past the end', 'read', () => native.read(h, 8, 12)],
    ['read absurd size', 'read', () => native.read(h, 0, 1e20)],
    ['read size a string', 'read', () => native.read(h, 0, '4' as unknown as number)],
    ['write a string', 'write', () => native.write(h, 0, 'abcd' as unknown as ArrayBufferView)],
    ['write a DataView', 'write', () => native.write(h, 0, new DataView(new ArrayBuffer(4)))],
    ['write past the end', 'write', () => native.write(h, 12, new Float32Array(2))],
    ['write to a freed storage', 'write', () => native.write(freed, 0, new Float32Array(1))],
    ['write to a fake handle', 'write', () => native.write(fake, 0, new Float32Array(1))],
    ['free a fake handle', 'free', () => native.free(fake)],
    ['free a freed storage', 'free', () => native.free(freed)],
    ['free a string', 'free', () => native.free('3' as unknown as StorageHandle)],
    ['copyBytes past the end', 'copy', () => native.copyBytes(h, 0, h2, 8, 16)],
    ['copyBytes fake source', 'copy', () => native.copyBytes(h, 0, fake, 0, 4)],
    ['copyBytes negative size', 'copy', () => native.copyBytes(h, 0, h2, 0, -4)],
    ['deviceInfo of a string', 'device_info', () => native.deviceInfo('cuda' as unknown as number)],
    ['memoryStats of device 7', 'memory', () => native.memoryStats(7)],
    ['kernels of device -1', 'kernels', () => native.kernels(-1)],
    ['hostView of a freed storage', 'hostView', () => native.hostView(freed)],
    ['hostView of a fake handle', 'hostView', () => native.hostView(fake)],
    ['hostView of a number', 'hostView', () => native.hostView(3 as unknown as StorageHandle)],
  ];
  runTable(t, cases);

  // Validation of the fused kernels (matmul, norms, attention) against malformed calls.
  const S = [0, 1, 2, 3, 4, 5].map(() => native.alloc(0, 512)); // separate storages: no accidental overlap
  const tv = (si: number, sh: number[], d = 0, o = 0, st?: number[]): NativeView => {
    const strides = st ?? sh.map((_, i) => sh.slice(i + 1).reduce((a, b) => a * b, 1));
    return { s: S[si], d, sh, st: strides, o };
  };
  const m3 = (si: number, b: number, r: number, c: number, d = 0): NativeView => tv(si, [b, r, c], d);
  const q4 = (si: number, sh: number[], d = 0): NativeView => tv(si, sh, d);
  // A well-formed call with the given arguments replaced: layer_norm_fwd(y, mean, rstd, x, w, b, eps) on x [2, 4],
  // and attention_fwd(out, lse, q, k, v, mask, causal, scale) with q [1, 2, 3, 4] and k, v [1, 2, 5, 4].
  const lnFwd = (bad: Record<string, unknown>) => (): void => {
    const a = { y: tv(0, [2, 4]), mean: tv(1, [2]), rstd: tv(2, [2]), x: tv(3, [2, 4]), w: null, b: null, eps: 1e-5, ...bad };
    run('layer_norm_fwd', [a.y, a.mean, a.rstd, a.x, a.w, a.b, a.eps]);
  };
  const qs = [1, 2, 3, 4];
  const kvs = [1, 2, 5, 4];
  const attnFwd = (bad: Record<string, unknown>) => (): void => {
    const a = { out: q4(0, qs), lse: tv(1, [1, 2, 3]), q: q4(2, qs), k: q4(3, kvs), v: q4(4, kvs), mask: null, causal: false, scale: 0.5, ...bad };
    run('attention_fwd', [a.out, a.lse, a.q, a.k, a.v, a.mask, a.causal, a.scale]);
  };
  const fused: Case[] = [
    ['matmul output shape wrong', 'matmul', () => run('matmul', [m3(0, 1, 3, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, null])],
    ['matmul operand dtypes differ', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2, 1), null, null])],
    ['matmul int operands', 'matmul', () => run('matmul', [m3(0, 1, 2, 2, 4), m3(1, 1, 2, 4, 4), m3(2, 1, 4, 2, 4), null, null])],
    ['matmul bias dtype', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), tv(3, [2], 1), null])],
    ['matmul non-contiguous output', 'matmul', () => run('matmul', [tv(0, [1, 2, 2], 0, 0, [4, 1, 2]), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, null])],
    ['matmul beta NaN', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, NaN])],
    ['matmul beta a string', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, 'x'])],
    ['matmul batch 3 vs 2', 'matmul', () => run('matmul', [m3(0, 3, 2, 2), m3(1, 3, 2, 4), m3(2, 2, 4, 2), null, null])],
    ['layer_norm_fwd weight size', 'layer_norm_fwd', lnFwd({ w: tv(4, [3]) })],
    ['layer_norm_fwd int stats', 'layer_norm_fwd', lnFwd({ mean: tv(1, [2], 4), rstd: tv(2, [2], 4) })],
    ['layer_norm_fwd stats size', 'layer_norm_fwd', lnFwd({ mean: tv(1, [3]), rstd: tv(2, [3]) })],
    ['layer_norm_fwd output shape', 'layer_norm_fwd', lnFwd({ y: tv(0, [4, 2]) })],
    ['layer_norm_fwd int input', 'layer_norm_fwd', lnFwd({ y: tv(0, [2, 4], 4), x: tv(3, [2, 4], 4) })],
    ['layer_norm_fwd NaN eps', 'layer_norm_fwd', lnFwd({ eps: NaN })],
    ['layer_norm_fwd output aliases input', 'layer_norm_fwd', lnFwd({ x: tv(0, [2, 4], 0, 1) })],
    [
      'layer_norm_bwd dw without w',
      'layer_norm_bwd',
      () => run('layer_norm_bwd', [tv(0, [2, 4]), tv(1, [4]), null, tv(2, [2, 4]), tv(3, [2, 4]), null, tv(4, [2]), tv(5, [2])]),
    ],
    [
      'layer_norm_bwd dy shape',
      'layer_norm_bwd',
      () => run('layer_norm_bwd', [tv(0, [2, 4]), null, null, tv(2, [2, 3]), tv(3, [2, 4]), null, tv(4, [2]), tv(5, [2])]),
    ],
    ['rms_norm_fwd rstd size', 'rms_norm_fwd', () => run('rms_norm_fwd', [tv(0, [2, 4]), tv(1, [5]), tv(3, [2, 4]), null, 1e-6])],
    ['rms_norm_fwd weight dtype', 'rms_norm_fwd', () => run('rms_norm_fwd', [tv(0, [2, 4]), tv(1, [2]), tv(3, [2, 4]), tv(4, [4], 1), 1e-6])],
    ['rms_norm_bwd x shape', 'rms_norm_bwd', () => run('rms_norm_bwd', [tv(0, [2, 4]), null, tv(2, [2, 4]), tv(3, [4, 2]), null, tv(5, [2])])],
    ['attention_fwd mask shape', 'attention_fwd', attnFwd({ mask: tv(5, [1, 2, 3, 4], 7) })],
    ['attention_fwd float mask', 'attention_fwd', attnFwd({ mask: tv(5, [1, 2, 3, 5]) })],
    ['attention_fwd int lse', 'attention_fwd', attnFwd({ lse: tv(1, [1, 2, 3], 4) })],
    ['attention_fwd lse shape', 'attention_fwd', attnFwd({ lse: tv(1, [1, 3, 2]) })],
    ['attention_fwd output aliases q', 'attention_fwd', attnFwd({ q: q4(0, [1, 2, 3, 4]) })],
    ['attention_fwd q last stride 2', 'attention_fwd', attnFwd({ q: tv(2, [1, 2, 3, 4], 0, 0, [48, 24, 8, 2]) })],
    ['attention_fwd causal not a boolean', 'attention_fwd', attnFwd({ causal: 1 })],
    ['attention_fwd zero kv heads', 'attention_fwd', attnFwd({ k: q4(3, [1, 0, 5, 4]), v: q4(4, [1, 0, 5, 4]) })],
    [
      'attention_bwd dk shape',
      'attention_bwd',
      () =>
        run('attention_bwd', [
          q4(0, [1, 2, 3, 4]),
          q4(1, [1, 2, 3, 4]),
          q4(5, [1, 2, 5, 4]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 3, 4]),
          tv(4, [1, 2, 3]),
          null,
          false,
          0.5,
        ]),
    ],
    ['attention_bwd missing args', 'attention_bwd', () => run('attention_bwd', [q4(0, [1, 2, 3, 4])])],
  ];
  runTable(t, fused);
  S.forEach((x) => native.free(x));

  // The storages are intact after all that (a double free was refused above), data round-trips.
  native.write(h, 0, Float32Array.of(1, 2, 3, 4));
  native.run('copy', [other(), view()]);
  t.same(Array.from(new Float32Array(native.read(h2, 0, 16))), [1, 2, 3, 4], 'storages still usable after the bad calls');
  native.free(h);
  native.free(h2);
});

t.test('the process survived and nothing leaked', async (t) => {
  t.equal(L.memory().numTensors, 0, 'no live tensors');
  const x = L.tidy(() => L.add(L.ones([2]), 1));
  t.same(x.arraySync(), [2, 2], 'the engine still works');
  x.dispose();
});
