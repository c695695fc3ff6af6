// hostile_edges.test.ts — native edges of issue 10: writes into views whose elements share memory are
// refused (PyTorch's message), empty work with a huge leading dim returns at once instead of looping,
// argument checks for manualSeed / checkpoint / deep nested arrays / impossible shapes, linear with no
// output features (backward and leaks), and a readback that runs out of memory throws instead of
// aborting the process; a backward whose vjp throws leaves nothing behind.
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'child_process';
import * as L from '../../lib';
import { Tensor } from '../../lib';
import { checkpoint } from '../../lib/core/recompute';
import { record } from '../../lib/core/autograd';
import { native, nativeFile } from '../../lib/native';
import { refuses as refusesIn } from '../helpers';

const OVERLAP = /^\[(copyInto|addInPlace)\] unsupported operation: more than one element of the written-to tensor refers to a single memory location/;

/** The shared refusal check (test/helpers.ts), which here must also answer within `ms`. */
const refuses = (t: Test, name: string, re: RegExp, fn: () => unknown, ms = 2000): void => refusesIn(t, name, re, fn, ms);

/** fn must run to completion within `ms` without leaking. */
function quick<T>(t: Test, name: string, fn: () => T, ms = 2000): T {
  const before = L.memory().numTensors;
  const t0 = Date.now();
  const r = L.tidy(fn);
  t.ok(Date.now() - t0 < ms, `${name}: returned at once (${Date.now() - t0} ms)`);
  t.equal(L.memory().numTensors, before, `${name}: no tensor leaked`);
  return r;
}

t.test('writes into overlapping views are refused', async (t) => {
  const one = L.keep(L.zeros([1]));
  const big = L.keep(L.expand(one, [2 ** 40]));
  t.teardown(() => [one, big].forEach((x) => x.dispose()));
  refuses(t, 'copyInto a stride-0 view of 2^40 elements', OVERLAP, () => L.copyInto(big, L.ones([1])));
  refuses(t, 'addInPlace into a stride-0 view of 2^40 elements', OVERLAP, () => L.addInPlace(big, L.ones([1])));
  refuses(t, 'copyInto an expanded [3, 4]', OVERLAP, () => L.copyInto(L.expand(L.zeros([3, 1]), [3, 4]), L.ones([3, 4])));
  // Strides that overlap without a zero: [3, 3] over 5 elements with strides [1, 1].
  const base = L.zeros([5]);
  refuses(t, 'copyInto strides [1, 1]', OVERLAP, () => L.copyInto(base.makeView([3, 3], [1, 1], 0), L.ones([3, 3])));
  refuses(t, 'copyInto strides [2, 3] of size [3, 2]', OVERLAP, () => L.copyInto(L.zeros([12]).makeView([3, 2], [2, 3], 0), L.ones([3, 2])));
  base.dispose();

  // What stays allowed: broadcast sources, size-1 dims with any stride, slices, transposes, empty views.
  const x = L.zeros([4, 6]);
  L.copyInto(x, L.arange(6, undefined, 1, { dtype: 'float32' }));
  t.same(x.toNumbers().slice(0, 7), [0, 1, 2, 3, 4, 5, 0]);
  L.copyInto(L.slice(x, 1, 0, 6, 2), L.ones([4, 3]));
  L.copyInto(L.transpose(x, 0, 1), L.full([6, 4], 2));
  L.addInPlace(L.slice(x, 0, 1, 3), L.ones([2, 6]));
  t.same(x.toNumbers().slice(0, 13), [2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]);
  L.copyInto(x.makeView([1, 6], [0, 1], 0), L.full([1, 6], 7)); // size-1 dim with stride 0
  L.copyInto(L.expand(L.zeros([0, 1]), [0, 2 ** 40]), L.ones([1])); // nothing is written
  t.equal(x.dataSync()[0], 7);
  x.dispose();
});

t.test('the addon refuses overlapping outputs too (a caller that skips the TypeScript check)', async (t) => {
  const h = native.alloc(0, 64);
  t.teardown(() => native.free(h));
  const view = (sh: number[], st: number[], o = 0) => ({ s: h, d: 0, sh, st, o });
  const NATIVE_OVERLAP = /^\[(fill|copy|unary|binary)\] unsupported operation: more than one element of the written-to tensor/;
  const cases: [string, () => void][] = [
    ['fill a stride-0 view of 2^40 elements', () => native.run('fill', [view([2 ** 40], [0]), 1])],
    ['copy into strides [1, 1]', () => native.run('copy', [view([3, 3], [1, 1]), view([3, 3], [3, 1])])],
    ['unary into a negative-stride overlap', () => native.run('unary', [view([2, 3], [-1, 1], 3), view([2, 3], [3, 1]), 'exp'])],
    ['binary into an expanded row', () => native.run('binary', [view([4, 4], [0, 1]), view([4, 4], [4, 1]), view([4, 4], [4, 1]), 'add'])],
  ];
  for (const [name, fn] of cases) t.throws(fn, NATIVE_OVERLAP, name);
  native.run('fill', [view([4, 1, 4], [4, 0, 1]), 2]); // size-1 dims may have any stride
  native.run('fill', [view([0, 2 ** 40], [0, 0]), 2]); // empty: nothing is written
  t.same(Array.from(new Float32Array(native.read(h, 0, 64))), new Array(16).fill(2), 'allowed views written');
});

t.test('empty work with a huge leading dim returns at once', async (t) => {
  // x [2^40, 3, 0]: no element, but 2^40 * 2 (outer * selected) rows for a kernel to visit.
  const x = L.keep(L.zeros([1, 3, 0]).expand([2 ** 40, 3, 0]));
  t.teardown(() => x.dispose());
  const r = quick(t, 'indexSelect of two rows', () => L.indexSelect(x, 1, L.tensor([0, 2])).shape);
  t.same(r, [2 ** 40, 2, 0]);
  quick(t, 'indexSelect of no row', () => L.indexSelect(x, 1, L.tensor([], { dtype: 'int64' })).shape);
  refuses(t, 'indexSelect still range-checks', /^\[index_select\] /, () => L.indexSelect(x, 1, L.tensor([5])));
  // The kernels themselves return at once (no TS shortcut in front of them).
  const out = L.zeros([1, 2, 0]).expand([2 ** 40, 2, 0]);
  const idx = L.tensor([0, 2]);
  quick(t, 'index_select kernel', () => native.run('index_select', [out.v(), x.v(), idx.v(), 1]));
  quick(t, 'index_add kernel', () => native.run('index_add', [x.v(), idx.v(), out.v(), 1]));
  out.dispose();
  idx.dispose();

  const q = L.zeros([1, 1, 1, 0]).expand([2 ** 40, 1, 1, 0]);
  const tab = L.zeros([1, 0]);
  quick(t, 'rope on [2^40, 1, 1, 0]', () => L.rope(q, tab, tab).shape);
  quick(t, 'softmax over an empty last dim', () => L.softmax(L.zeros([1, 0]).expand([2 ** 40, 0]), -1).shape);
  refuses(t, 'rope still checks its tables', /^\[rope\] /, () => L.rope(q, L.zeros([2, 0]), L.zeros([2, 0])));
  [q, tab].forEach((v) => v.dispose());
});

t.test('argument checks', async (t) => {
  refuses(t, 'manualSeed(-1)', /^\[manualSeed\] seed must be an integer in \[0, 2\^53 - 1\], got -1/, () => L.manualSeed(-1));
  refuses(t, 'manualSeed(NaN)', /^\[manualSeed\] .*got NaN/, () => L.manualSeed(NaN));
  refuses(t, 'manualSeed(1.5)', /^\[manualSeed\] /, () => L.manualSeed(1.5));
  refuses(t, "manualSeed('7')", /^\[manualSeed\] /, () => L.manualSeed('7' as unknown as number));
  L.manualSeed(123);
  const a = L.rand([3]).toNumbers();
  L.manualSeed(123);
  t.same(L.rand([3]).toNumbers(), a, 'a valid seed still replays');

  refuses(t, 'checkpoint(5)', /^\[checkpoint\] fn must be a function, got number/, () => checkpoint(5 as unknown as () => Tensor, [], []));
  refuses(t, 'checkpoint without inputs', /^\[checkpoint\] inputs must be an array/, () =>
    checkpoint((x: Tensor) => x, undefined as unknown as [Tensor], []),
  );
  refuses(t, 'checkpoint with a number input', /^\[checkpoint\] inputs\[0\] must be a Tensor or null/, () =>
    checkpoint((x) => x!, [3 as unknown as Tensor], []),
  );
  refuses(t, 'checkpoint with bad params', /^\[checkpoint\] params must be an array/, () =>
    checkpoint((x) => x!, [L.zeros([1])], 'w' as unknown as Tensor[]),
  );

  let deep: L.NestedArray = [1];
  for (let i = 0; i < 10000; i++) deep = [deep];
  refuses(t, 'tensor of a 10,000-deep array', /^\[tensor\] nested arrays are more than 8 levels deep; at most 8 dims/, () => L.tensor(deep));
  let nine: L.NestedArray = 1;
  for (let i = 0; i < 9; i++) nine = [nine];
  refuses(t, 'tensor of a 9-deep array', /^\[tensor\] nested arrays are more than 8 levels deep/, () => L.tensor(nine));
  let eight: L.NestedArray = 1;
  for (let i = 0; i < 8; i++) eight = [eight];
  t.same(
    quick(t, '8-deep array', () => L.tensor(eight).shape),
    [1, 1, 1, 1, 1, 1, 1, 1],
  );

  const tooBig =
    /^\[(zeros|full|empty)\] shape \[2147483648, 2147483648\] holds 4611686018427388000 elements \(18446744073709552000 bytes of float32\); a tensor may hold at most 1000000000000000 bytes/;
  refuses(t, 'zeros([2^31, 2^31])', tooBig, () => L.zeros([2 ** 31, 2 ** 31]));
  refuses(t, 'randn([2^31, 2^31])', /^\[randn\] shape \[2147483648, 2147483648\] holds/, () => L.randn([2 ** 31, 2 ** 31]));
  refuses(t, 'empty over the byte limit', /^\[empty\] shape \[125000000000001\] .* float64.*at most/, () =>
    L.empty([125000000000001], { dtype: 'float64' }),
  );
});

t.test('linear with 0 output features: forward, backward, no leak', async (t) => {
  for (const lead of [[4], [2, 3], []] as number[][]) {
    const x = L.randn([...lead, 5], { requiresGrad: true });
    const w = L.randn([0, 5], { requiresGrad: true });
    const b = L.zeros([0], { requiresGrad: true });
    const before = L.memory();
    L.tidy(() => {
      const y = L.linear(x, w, b);
      t.same(y.shape, [...lead, 0]);
      L.sum(y).backward();
    });
    t.same(x.grad!.shape, x.shape, `[${lead}]: input grad shaped like x`);
    t.same(x.grad!.toNumbers(), new Array(x.numel).fill(0), `[${lead}]: input grad is zero`);
    t.same(w.grad!.shape, [0, 5]);
    t.same(b.grad!.shape, [0]);
    const after = L.memory();
    t.equal(after.numTensors, before.numTensors + 3, `[${lead}]: only the three grads outlive tidy`);
    [x, w, b].forEach((p) => p.dispose());
  }
  // 0 input features: the output is the bias, the weight's gradient is empty.
  const x = L.randn([3, 0], { requiresGrad: true });
  const w = L.randn([2, 0], { requiresGrad: true });
  const before = L.memory().numTensors;
  L.tidy(() => L.sum(L.linear(x, w)).backward());
  t.same(w.grad!.shape, [2, 0]);
  t.equal(L.memory().numTensors, before + 2);
  [x, w].forEach((p) => p.dispose());
});

t.test('a readback that runs out of host memory throws instead of aborting', async (t) => {
  // A child under `ulimit -v`: its address space fits the 256 MiB storage, not a second copy of it.
  // It is plain JS on the addon (tsx's WebAssembly would not start under the limit), doing what
  // dataSync does: alloc, fill, read.
  const addon = nativeFile;
  const N = 256 * 2 ** 20;
  const prelude = `const A = require(${JSON.stringify(addon)});
    const vm = () => Number(/VmSize:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]);
    const small = A.alloc(0, 16); A.run('fill', [{ s: small, d: 6, sh: [16], st: [1], o: 0 }, 1]); A.read(small, 0, 16);`;
  // The probe does everything but the read and reports its address space then, so the limit counts
  // what the allocation, the fill's worker threads and V8 already took; 96 MiB of headroom on top
  // leaves room for V8 to go on compiling but not for a second 256 MiB copy.
  const env = { ...process.env, MALLOC_ARENA_MAX: '2' };
  const allocFill = `const s = A.alloc(0, ${N});
    A.run('fill', [{ s, d: 6, sh: [${N}], st: [1], o: 0 }, 1]);`;
  const probe = spawnSync(process.execPath, ['-e', `${prelude} ${allocFill} console.log(vm());`], { encoding: 'utf8', env });
  const baseKb = Number(probe.stdout.trim());
  t.ok(baseKb > 0, `address space after the allocation and fill: ${baseKb} kB ${probe.stderr.slice(-300)}`);
  const limitKb = baseKb + 96 * 1024;
  const script = `${prelude} ${allocFill}
    try { const b = A.read(s, 0, ${N}); console.log('READ ' + b.byteLength); } catch (e) { console.log('ERR ' + e.message); }
    A.free(s); console.log('ALIVE');`;
  const r = spawnSync('bash', ['-c', `ulimit -v ${limitKb}; exec "$0" -e "$1"`, process.execPath, script], { encoding: 'utf8', env });
  t.equal(r.signal, null, `no signal (stderr: ${r.stderr.slice(-400)})`);
  t.equal(r.status, 0, 'exit 0');
  t.match(r.stdout, /ERR \[read\] out of host memory: cannot allocate 268435456 bytes/, `stdout: ${r.stdout}`);
  t.match(r.stdout, /ALIVE/);
});

t.test('a backward that throws leaks nothing', async (t) => {
  const x = L.randn([3, 4], { requiresGrad: true });
  const before = L.memory().numTensors;
  t.throws(
    () =>
      L.tidy(() => {
        const a = x.mul(2);
        const y = record(
          'failing',
          a.add(1),
          [a],
          () => {
            throw new Error('[failing] vjp failed');
          },
          [a],
        );
        L.sum(y.mul(3)).backward();
      }),
    /\[failing\] vjp failed/,
  );
  t.equal(L.memory().numTensors, before, 'record: nothing left after the failed backward');
  let calls = 0;
  t.throws(
    () =>
      L.tidy(() => {
        const y = checkpoint(
          (v) => {
            if (calls++ > 0) throw new Error('[block] recomputation failed');
            return v!.mul(2);
          },
          [x],
          [],
        );
        L.sum(y.mul(3)).backward();
      }),
    /recomputation failed/,
  );
  t.equal(L.memory().numTensors, before, 'checkpoint: nothing left after the failed recomputation');
  t.equal(x.grad, null);
  x.dispose();
});
