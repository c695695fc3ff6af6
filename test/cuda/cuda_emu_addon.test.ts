// cuda_emu_addon.test.ts — the whole addon with its CUDA backend running under the host emulator
// (test/cuda_emu/build_addon.sh: every cuda/*.cu, the real backend.cu included, compiled by g++ against
// the emulator, with test/cuda_emu/runtime.cc standing in for the CUDA runtime). Then the GPU check
// itself (test/gpu/check.ts --no-bench) runs in a child process with LLAVA_NATIVE pointing at that build:
// every device parity case on 'cuda' against the CPU through the TypeScript API, the caching allocator's
// steady state over tiny-LLaVA training steps, and out-of-memory errors with the process staying usable.
// Beside it the device suites (DEVICE_SUITES: ops, grad, swiglu, LoRA and quantized ops, AdamW,
// llava_model, generate, trainer, recompute, profile) run again, whole, with tensors created on the
// emulated 'cuda'.
//
// The GPU check runs with the emulator's sanitizers on: EMU_RACECHECK=1 (test/cuda_emu/racecheck.cc;
// zero hazards is a check), synccheck (always on) and EMU_DEFERRED=1 (launches and copies queue on the
// stream until a synchronising call, so host code that reads a result without synchronising sees
// poison). To keep CI's time, this build leaves out racecheck's per-access hooks (EMU_NO_HOOKS=1: with
// them the GPU check takes four times as long, 238 s against 60), so here racecheck sees the cp.async writes
// and ldmatrix reads of shared memory only; the full racecheck of the addon (every load and store) is
// test/cuda_emu/racecheck_addon.sh, and test/cuda/cuda_emu.test.ts runs the full one on the GEMM and
// attention kernels. Every launch is logged (EMU_LAUNCH_LOG) and checked against ptxas's register and shared
// memory figures for sm_80 and sm_90a (test/cuda_emu/ptxas.ts). A driver older than CUDA 13 is simulated
// (EMU_DRIVER) to check the message that names both versions.
//
// This checks the kernels' logic, the backend and the TypeScript device paths on every push without a
// GPU. It is no evidence of how they behave on real hardware (memory ordering, the PTX strings, timing):
// test/cuda_emu/README.md lists what the emulator does not model. Without g++, the CUDA headers or the
// Node headers it is a skip carrying the reason.
import t from 'tap';
import fs from 'fs';
import os from 'os';
import path from 'path';
import { DEVICE_SUITES, EMU, cleanEnv, how, run, runSuiteOn, secs, skipReason, tail } from '../cuda_emu/harness';
import { TEST_DIR } from '../helpers';
import { checkNcclOnEmulator } from '../dist/nccl_emu';
import { ARCHS, archsFor, type KernelUsage, type Launch, loadUsage, normalizeMangled, refusal } from '../cuda_emu/ptxas';

const ROOT = path.join(TEST_DIR, '..');
const NODE_INC = process.env.NODE_INC || '/usr/include/node';

// Compiling the whole addon twice over (CPU sources and emulated CUDA sources) on a 2-core CI machine
// that also runs another test file takes minutes (about 2 alone); the check and the suites beside it
// about one. The limits leave room for a machine several times slower.
t.setTimeout(1_600_000);

interface ParityLine {
  group: string;
  name: string;
  pass: boolean;
  detail?: string;
  leaked?: number;
}
interface Report {
  device?: string;
  kernels?: { cpu: number; cuda: number; missingOnCuda: string[] };
  parity?: ParityLine[];
  memory?: { name: string; pass: boolean; detail: string }[];
  e2e?: { name: string; pass: boolean; detail: string }[];
  ok?: boolean;
}

function reason(): string | null {
  const r = skipReason();
  if (r) return r;
  const hdr = path.join(NODE_INC, 'node_api.h');
  return fs.existsSync(hdr) ? null : `${hdr} not found (Node headers needed to build the emulated addon; set NODE_INC)`;
}

const why = reason();
t.test(
  'GPU check (parity, allocator, OOM) on the addon with its CUDA backend emulated on the host',
  why ? { skip: why } : { timeout: 1_500_000 },
  async (tt) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cuda_emu_addon-'));
    tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

    const b = await run('bash', [path.join(EMU, 'build_addon.sh'), path.join(dir, 'build')], cleanEnv({ NODE_INC, EMU_NO_HOOKS: '1' }), 1_000_000);
    tt.comment(`emulated addon build: ${secs(b.ms)} s`);
    const addon = path.join(dir, 'build', 'llava_native.node');
    if (
      !tt.ok(b.code === 0 && fs.existsSync(addon), 'test/cuda_emu/build_addon.sh builds the addon', {
        output_tail: b.code === 0 ? '' : tail(b.out, 60),
      })
    )
      return;

    // The device suites (below) run beside the GPU check: two single-threaded emulated processes on the
    // two cores, instead of one after the other.
    const logs = path.join(dir, 'launches');
    fs.mkdirSync(logs);
    const suitesRun = (async () => {
      const res: { suite: string; s: Awaited<ReturnType<typeof runSuiteOn>> }[] = [];
      for (const suite of DEVICE_SUITES) {
        const launchLog = path.join(logs, `${suite.replace(/\//g, '_')}.jsonl`);
        const s = await runSuiteOn(path.join(ROOT, 'test', `${suite}.test.ts`), 'cuda', { LLAVA_NATIVE: addon, EMU_LAUNCH_LOG: launchLog });
        res.push({ suite, s });
      }
      return res;
    })();

    const out = path.join(dir, 'out');
    // EMU_RANDOM=1: threads of a block resume in a shuffled (seeded, so repeatable) order, which with the
    // poisoned shared memory turns a missing __syncthreads into a wrong result.
    const env = cleanEnv({
      LLAVA_NATIVE: addon,
      OUT: out,
      EMU_RANDOM: '1',
      EMU_RACECHECK: '1',
      EMU_DEFERRED: '1',
      EMU_LAUNCH_LOG: path.join(logs, 'check.jsonl'),
    });
    const r = await run(
      process.execPath,
      ['--import=tsx', path.join(ROOT, 'test', 'gpu', 'check.ts'), '--no-bench', '--demo-steps', '3'],
      env,
      900_000, // about 1 min of one core
    );
    tt.comment(`gpu check under the emulator: ${secs(r.ms)} s`);
    const file = path.join(out, 'gpu_check.json');
    if (!tt.ok(fs.existsSync(file), `check.ts wrote ${file}`, { output_tail: tail(r.out) })) {
      await suitesRun; // before the teardown removes their directory
      return;
    }
    const rep = JSON.parse(fs.readFileSync(file, 'utf8')) as Report;

    tt.match(String(rep.device ?? r.out), /CUDA emulator/, "'cuda' is the emulated device");
    tt.same(rep.kernels?.missingOnCuda, [], 'every CPU kernel has a CUDA version');
    const parity = rep.parity ?? [];
    tt.ok(parity.length >= 250, `the parity table ran (${parity.length} cases)`);
    for (const c of parity) tt.ok(c.pass && !c.leaked, `${c.group}/${c.name}`, c.pass && !c.leaked ? {} : { detail: c.detail, leaked: c.leaked });
    const mem = rep.memory ?? [];
    tt.ok(mem.length >= 4, `the memory checks ran (${mem.length})`);
    for (const m of mem) tt.ok(m.pass, `memory/${m.name}: ${m.detail.slice(0, 160)}`);
    const e2e = rep.e2e ?? [];
    for (const want of [
      /^llava verify --device cuda --dtype float32/,
      /^llava verify --device cuda --dtype bfloat16/,
      /^demo training on cuda vs cpu/,
    ])
      tt.ok(
        e2e.some((m) => want.test(m.name)),
        `end to end on the emulated device: ${want.source}`,
      );
    for (const m of e2e) tt.ok(m.pass, `e2e/${m.name}: ${m.detail.slice(0, 160)}`);
    tt.equal(r.code, 0, `check.ts exits 0 (${how(r)})`, { output_tail: r.code === 0 ? '' : tail(r.out) });
    const races = r.out.split('\n').filter((l) => l.startsWith('EMU RACE'));
    tt.match(r.out, /^EMU racecheck: 0 hazard\(s\)$/m, 'racecheck over the GPU check: no shared or global memory hazard', {
      races: races.slice(0, 20).join('\n'),
    });

    // lib/dist's NCCL path (cpp/dist_nccl.cc) on the emulated device, against a stand-in libnccl over MPI.
    await checkNcclOnEmulator(tt, addon, dir);

    // The device suites once more with tensor factories (and loadLlava) defaulting to the emulated 'cuda'
    // (test/helpers.ts): every op against its float64 reference, every finite-difference gradient check,
    // the tiny LLaVA against the transformers fixture, generation and training, on the device.
    for (const { suite, s } of await suitesRun) {
      tt.comment(`${suite}.test.ts on the emulated cuda device: ${secs(s.ms)} s`);
      tt.ok(
        s.total > 0 && s.fail === 0 && s.code === 0,
        `test/${suite}.test.ts passes on the emulated cuda device (${s.pass}/${s.total}; ${how(s)})`,
        {
          failing: s.failing.slice(0, 30).join('\n'),
          output_tail: s.code === 0 ? '' : tail(s.out),
        },
      );
    }

    // Resource check: every kernel the runs above launched, at its largest block and dynamic shared
    // memory, against ptxas's registers / static shared memory / spills for sm_80 and sm_90a.
    const launches = new Map<string, Launch>();
    for (const f of fs.readdirSync(logs)) {
      for (const line of fs.readFileSync(path.join(logs, f), 'utf8').split('\n').filter(Boolean)) {
        const l = JSON.parse(line) as Launch;
        const prev = launches.get(l.mangled);
        launches.set(l.mangled, prev ? { ...l, threads: Math.max(l.threads, prev.threads), smem: Math.max(l.smem, prev.smem) } : l);
      }
    }
    tt.ok(launches.size >= 40, `launch logs name the kernels launched (${launches.size})`);
    const t0 = Date.now();
    const got = await loadUsage((m) => tt.comment(m));
    if (!got) {
      tt.comment('resource check skipped: no ptxas table for these sources and no nvcc to make one');
    } else {
      tt.comment(`ptxas table from ${got.from} (${secs(Date.now() - t0)} s)`);
      const byName = new Map<string, KernelUsage>();
      for (const k of got.usage.kernels) byName.set(`${k.arch} ${normalizeMangled(k.mangled)}`, k);
      // launch.cuh raises cudaFuncAttributeMaxDynamicSharedMemorySize for every launch above 48 KB
      const launchHdr = fs.readFileSync(path.join(ROOT, 'cuda', 'launch.cuh'), 'utf8');
      const optin = /if \(smem > 48 \* 1024\)[\s\S]*cudaFuncSetAttribute\(fn, cudaFuncAttributeMaxDynamicSharedMemorySize/.test(launchHdr);
      tt.ok(optin, 'cuda/launch.cuh raises the dynamic shared memory limit (cudaFuncSetAttribute) above 48 KB');
      const refused: string[] = [];
      const missing: string[] = [];
      for (const l of launches.values()) {
        for (const arch of archsFor(l.mangled)) {
          const k = byName.get(`${arch} ${normalizeMangled(l.mangled)}`);
          if (!k) {
            missing.push(`${arch} ${l.mangled}`);
            continue;
          }
          const why = refusal(k, l, optin);
          if (why) refused.push(`${arch} ${l.mangled} (${l.threads} threads, ${l.smem} B dynamic): ${why}`);
        }
      }
      tt.same(missing, [], 'every launched kernel has ptxas figures for sm_80 and sm_90a');
      tt.same(refused, [], `no launch would be refused for resources (${launches.size} kernels x ${ARCHS.length} archs)`);
    }

    // A driver older than the runtime: the reason names what the driver supports and what is needed.
    const drv = await run(
      process.execPath,
      ['--import=tsx', '-e', `const L = require(${JSON.stringify(path.join(ROOT, 'lib'))}); console.log(L.cuda.isAvailable(), L.cuda.describe())`],
      cleanEnv({ LLAVA_NATIVE: addon, EMU_DRIVER: '12040' }),
      120_000,
    );
    tt.match(
      drv.out,
      /false CUDA not available: the driver supports CUDA 12\.4; this build needs 13\.0 \(driver R580 or newer\)/,
      'an old driver is reported with both versions',
      { output: tail(drv.out) },
    );
  },
);
