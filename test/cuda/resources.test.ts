// resources.test.ts — the rules of the launch-resource check (test/cuda_emu/ptxas.ts) on their own:
// parsing `nvcc -Xptxas -v` output, the per-block register file as the hardware allocates it, and the
// cases where a GPU refuses a launch ("too many resources requested for launch") on sm_80 / sm_90a.
// The check itself, over every launch of the emulated runs, is in cuda_emu_addon.test.ts. Pure
// TypeScript: runs everywhere in milliseconds.
import t from 'tap';
import fs from 'fs';
import { COMMITTED, type KernelUsage, type UsageFile, normalizeMangled, parsePtxas, refusal, regsPerBlock, sourceHash } from '../cuda_emu/ptxas';

const SAMPLE = `ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN5llava12_GLOBAL__N_114gemm_tc_kernelI13__nv_bfloat16EEvNS0_10GemmParamsE' for 'sm_80'
ptxas info    : Function properties for _ZN5llava12_GLOBAL__N_114gemm_tc_kernelI13__nv_bfloat16EEvNS0_10GemmParamsE
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 1024 bytes smem, 424 bytes cmem[0]
ptxas info    : Compiling entry function '_ZN5llava3add' for 'sm_90a'
ptxas info    : Function properties for _ZN5llava3add
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 16 registers, used 0 barriers, 380 bytes cmem[0]
`;

const k = (over: Partial<KernelUsage>): KernelUsage => ({
  arch: 'sm_80',
  mangled: 'plain_kernel',
  regs: 32,
  smem: 0,
  spillStores: 0,
  spillLoads: 0,
  stack: 0,
  ...over,
});
const launch = (threads: number, smem = 0) => ({ mangled: 'x', launches: 1, threads, smem });

t.test('ptxas -v output is parsed per kernel and arch', async (tt) => {
  const u = parsePtxas(SAMPLE);
  tt.equal(u.length, 2);
  tt.match(u[0], { arch: 'sm_80', regs: 168, smem: 1024, spillStores: 4, spillLoads: 4, stack: 8 });
  tt.match(u[1], { arch: 'sm_90a', mangled: '_ZN5llava3add', regs: 16, smem: 0, spillStores: 0 });
});

t.test('anonymous namespaces compare equal between g++ and nvcc manglings', async (tt) => {
  tt.equal(normalizeMangled('_ZN5llava39_GLOBAL__N__018b87de_7_anon_cu_d87434351kIfEEvPT_'), normalizeMangled('_ZN5llava12_GLOBAL__N_11kIfEEvPT_'));
  tt.not(normalizeMangled('_ZN5llava12_GLOBAL__N_11kIfEEvPT_'), normalizeMangled('_ZN5llava12_GLOBAL__N_11kIdEEvPT_'));
});

t.test('launches a GPU would refuse are refused, the rest pass', async (tt) => {
  tt.equal(regsPerBlock(32, 1024), 32768);
  tt.equal(regsPerBlock(65, 256), 8 * 9 * 256, 'registers are allocated per warp in units of 256 (65 -> 72 per thread)');
  tt.equal(refusal(k({ regs: 64 }), launch(1024), true), null, '64 registers x 1024 threads = 65,536 fits');
  tt.match(refusal(k({ regs: 72 }), launch(1024), true), /registers per block/, '72 x 1024 does not');
  tt.match(refusal(k({ regs: 255 }), launch(512), true), /255 registers x 512 threads/);
  tt.equal(refusal(k({ smem: 4096 }), launch(256, 158 * 1024), true), null, 'sm_80: 4 KB static + 158 KB dynamic fits the 163 KB opt-in');
  tt.match(refusal(k({ smem: 4096 }), launch(256, 161 * 1024), true), /shared memory/, 'sm_80: 165 KB does not');
  tt.equal(refusal(k({ arch: 'sm_90a', smem: 4096 }), launch(256, 200 * 1024), true), null, 'sm_90a: 204 KB fits 227 KB');
  tt.match(refusal(k({ arch: 'sm_90a' }), launch(256, 228 * 1024), true), /shared memory/, 'sm_90a: 228 KB does not');
  tt.match(refusal(k({}), launch(128, 64 * 1024), false), /no opt-in/, 'above 48 KB without cudaFuncSetAttribute');
  tt.match(refusal(k({ mangled: 'gemm_tc_kernel', spillStores: 128 }), launch(256), true), /spill/, 'a spilling tensor-core kernel');
  tt.equal(refusal(k({ spillStores: 128 }), launch(256), true), null, 'spills are budgeted only in tensor-core kernels');
});

t.test('the committed ptxas table is well formed', async (tt) => {
  if (!fs.existsSync(COMMITTED)) return tt.fail(`${COMMITTED} missing`);
  const u = JSON.parse(fs.readFileSync(COMMITTED, 'utf8')) as UsageFile;
  tt.ok(u.kernels.length >= 80, `${u.kernels.length} kernel entries`);
  tt.same([...new Set(u.kernels.map((x) => x.arch))].sort(), ['sm_80', 'sm_90a'], 'both archs');
  tt.ok(
    u.kernels.every((x) => x.regs > 0 && x.regs <= 255),
    'every entry has a register count',
  );
  tt.comment(u.hash === sourceHash() ? 'up to date with cuda/' : 'stale: cuda/ changed since; cuda_emu_addon.test.ts recompiles once into the cache');
});
