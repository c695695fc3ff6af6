// cpu_alloc.test.ts — the CPU host-memory cache (cpp/cpu_backend.cc): a freed large block is kept
// for its size bucket and reused without asking the OS again, memory() reports it as cached,
// emptyCache() returns it, and bytes in use come back to where they were.
import t from 'tap';
import * as L from '../../lib';
import { native } from '../../lib/native';

const cpu = (): Required<Pick<L.DeviceMemory, 'bytesInUse' | 'bytesCached' | 'deviceMallocs' | 'peakBytes'>> => {
  const m = L.memory().cpu;
  return { bytesInUse: m.bytesInUse!, bytesCached: m.bytesCached!, deviceMallocs: m.deviceMallocs!, peakBytes: m.peakBytes! };
};

t.test('large blocks are cached, reused and released by emptyCache', async (tt) => {
  L.emptyCache();
  const start = cpu();
  tt.equal(start.bytesCached, 0, 'nothing cached after emptyCache');
  const n = 300_001; // 1.2 MB of float32: an odd size, rounded up to its bucket
  const a = L.zeros([n]);
  const afterAlloc = cpu();
  tt.ok(afterAlloc.bytesInUse >= start.bytesInUse + 4 * n, 'in use grows by at least the tensor');
  tt.ok(afterAlloc.bytesInUse <= start.bytesInUse + 1.25 * 4 * n + 64, 'bucket waste at most 25%');
  a.dispose();
  const freed = cpu();
  tt.equal(freed.bytesInUse, start.bytesInUse, 'in use back to the start');
  tt.ok(freed.bytesCached >= 4 * n, `the block is cached (${freed.bytesCached} bytes)`);
  const mallocs = freed.deviceMallocs;
  for (let i = 0; i < 5; i++) {
    const b = L.zeros([n - 7 * i]); // same bucket
    const d = b.dataSync() as Float32Array; // read back through host memory, not the cache
    tt.ok(d.length === n - 7 * i && d.every((v) => v === 0), 'a reused block is written before it is read (zeros)');
    b.dispose();
  }
  tt.equal(cpu().deviceMallocs, mallocs, 'reuse asks the OS for nothing new');
  tt.ok(cpu().peakBytes >= afterAlloc.bytesInUse, 'peak covers the largest use');
  L.emptyCache();
  tt.equal(cpu().bytesCached, 0, 'emptyCache releases the cache');
  tt.equal(cpu().bytesInUse, start.bytesInUse, 'and in-use bytes stay flat');
});

t.test('small blocks bypass the cache', async (tt) => {
  L.emptyCache();
  const x = L.zeros([100]);
  x.dispose();
  tt.equal(cpu().bytesCached, 0, 'a 400-byte tensor is not cached');
});

t.test('kernel scratch (HostScratch) comes from the cache and goes back to it', async (tt) => {
  // Where the CPU has AVX512-BF16, the bf16 attention forward packs K and V for all its row blocks into
  // HostScratch (cpp/cpu_common.h): here 4 kv heads x 3 key tiles x 64 keys x 64 values x 2 bytes, twice
  // (K and V), 98,304 bytes each.
  const [B, H, T, D] = [1, 4, 150, 64];
  const mk = (seed: number): L.Tensor => L.mul(L.randn([B, H, T, D], { dtype: 'bfloat16', generator: new L.Generator(seed) }), 0.5);
  const [q, k, v] = [mk(1), mk(2), mk(3)];
  const attend = (): number[] => L.tidy(() => L.scaledDotProductAttention(q, k, v).toNumbers());
  try {
    L.emptyCache();
    const start = cpu();
    const first = attend();
    const after = cpu();
    tt.equal(after.bytesInUse, start.bytesInUse, 'bytes in use come back to where they were');
    if (native.cpuIsa().avx512bf16)
      tt.ok(after.bytesCached - start.bytesCached >= 2 * 98_304, `the scratch went back to the cache (${after.bytesCached} bytes cached)`);
    tt.same(attend(), first, 'a second call (scratch from the cache) gives the same output');
    tt.equal(cpu().bytesCached, after.bytesCached, 'and takes its scratch from the cache: nothing more is cached');
  } finally {
    [q, k, v].forEach((x) => x.dispose());
  }
});
