// profile.test.ts — the kernel profiler (L.profile, cpp/profiler.h): what it counts, how it keys calls,
// that its times add up, and that it cleans up after errors and refuses to nest. It runs on the default
// device, so the device suites (test/cuda_emu/harness.ts DEVICE_SUITES) run it on the emulated GPU in
// CI, where the times come from CUDA events on the stream, and on a real GPU where there is one.
import t from 'tap';
import * as L from '../../lib';
import { getDefaultDevice } from '../../lib';
import { randArray } from '../helpers';

const dev = getDefaultDevice();

t.test('each kernel call is counted and keyed by name, dtype and shapes', async (tt) => {
  const before = L.memory().numTensors;
  const a = L.tensor(randArray(33 * 17, 1), { shape: [33, 17], dtype: 'float32' });
  const b = L.tensor(randArray(17 * 5, 2), { shape: [17, 5], dtype: 'float32' });
  const p = L.profile(() =>
    L.tidy(() => {
      const c = L.matmul(a, b);
      const d = L.matmul(a, b);
      return L.sum(L.silu(L.add(c, d))).item();
    }),
  );
  tt.ok(Number.isFinite(p.result), 'the function result comes back');
  // The kernel sees the batched 3-D views matmul makes: out, a, b.
  const mmKey = /^matmul float32 \[1,33,5\] \[1,33,17\] \[1,17,5\]$/;
  const mm = p.kernels.find((k) => mmKey.test(k.key));
  tt.ok(mm, `the matmul has its own key: ${p.kernels.map((k) => k.key).join(' | ')}`);
  tt.equal(mm?.calls, 2, 'both calls of the same shape under one key');
  tt.equal(mm?.device, dev);
  tt.ok(
    p.kernels.some((k) => k.key.startsWith('unary float32 [33,5]')),
    'the activation is there',
  );
  for (const k of p.kernels) {
    tt.ok(k.totalMs >= 0 && k.maxMs <= k.totalMs + 1e-9 && Math.abs(k.meanMs * k.calls - k.totalMs) < 1e-6, `${k.key}: consistent times`);
  }
  tt.ok(
    p.kernels.every((k, i) => i === 0 || p.kernels[i - 1].totalMs >= k.totalMs),
    'largest total first',
  );
  tt.ok(p.kernelMs > 0, `some time was measured (${p.kernelMs.toFixed(4)} ms)`);
  tt.ok(Math.abs(p.kernels.reduce((s, k) => s + k.share, 0) - 1) < 1e-9, 'shares sum to 1');
  tt.ok(p.kernelMs <= p.wallMs * 1.05 + 0.05, `kernel time ${p.kernelMs.toFixed(3)} ms within the wall time ${p.wallMs.toFixed(3)} ms`);
  tt.equal(p.dropped, 0);
  const byName = L.byKernel(p.kernels);
  tt.equal(byName.find((k) => k.key === 'matmul')?.calls, 2, 'byKernel sums the shapes of one kernel');
  const text = L.formatProfile(p);
  tt.match(text, /by kernel:\n.*matmul/, 'formatProfile lists the kernels');
  tt.match(text, /matmul float32 \[1,33,5\] \[1,33,17\] \[1,17,5\]/);
  a.dispose();
  b.dispose();
  tt.equal(L.memory().numTensors, before, 'no tensor left behind');
});

t.test('nothing is recorded outside a profile, and a fresh profile starts empty', async (tt) => {
  const x = L.rand([8, 8]);
  L.tidy(() => L.exp(x));
  const p = L.profile(() => L.tidy(() => void L.neg(x)));
  tt.same(
    p.kernels.map((k) => k.key.split(' ')[0]),
    ['unary'],
    'only the call made inside',
  );
  tt.equal(p.kernels[0].calls, 1);
  x.dispose();
});

t.test('errors: a throwing function ends the recording; profiles do not nest; async is refused', async (tt) => {
  tt.throws(
    () =>
      L.profile(() => {
        throw new Error('boom');
      }),
    /boom/,
    'the error comes through',
  );
  const again = L.profile(() => 1);
  tt.equal(again.result, 1, 'a new profile works after the error');
  tt.same(again.kernels, []);
  const outer = L.profile(() => {
    tt.throws(() => L.profile(() => 0), /a recording is already on/, 'a nested profile is refused');
    return 2;
  });
  tt.equal(outer.result, 2, 'and the outer one completes');
  tt.throws(() => L.profile(() => Promise.resolve(3)), /must be synchronous/);
  tt.throws(() => L.profile(42 as unknown as () => number), { name: 'TypeError', message: /expected a function, got number/ });
  tt.equal(L.profile(() => 4).result, 4, 'the recorder is free again');
});

t.test('profileAsync covers the kernels launched until the promise settles', async (tt) => {
  const x = L.rand([16, 16]);
  const p = await L.profileAsync(async () => {
    L.tidy(() => void L.exp(x));
    await new Promise((r) => setTimeout(r, 5));
    L.tidy(() => void L.exp(x));
    return 'done';
  });
  tt.equal(p.result, 'done');
  tt.equal(p.kernels.find((k) => k.key.startsWith('unary'))?.calls, 2, 'calls on both sides of the await');
  tt.ok(p.wallMs >= 4, `the wall time spans the wait (${p.wallMs.toFixed(1)} ms)`);
  await tt.rejects(
    L.profileAsync(async () => {
      throw new Error('late boom');
    }),
    /late boom/,
  );
  tt.equal(L.profile(() => 5).result, 5, 'a rejected profile stops its recording');
  x.dispose();
});

t.test(
  'the same kernel and shapes on two devices are two entries',
  { skip: dev === 'cpu' ? 'needs a device besides the CPU' : false },
  async (tt) => {
    const x = L.rand([8, 8]);
    const xc = L.to(x, 'cpu');
    const p = L.profile(() => L.tidy(() => void [L.exp(x), L.exp(xc)]));
    const exps = p.kernels.filter((k) => k.key.startsWith('unary float32 [8,8]'));
    tt.same(exps.map((k) => k.device).sort(), ['cpu', dev].sort(), 'one entry per device');
    tt.ok(
      exps.every((k) => k.calls === 1),
      'each with its own call',
    );
    [x, xc].forEach((t2) => t2.dispose());
  },
);
