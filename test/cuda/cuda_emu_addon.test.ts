// cuda_emu_addon.test.ts — the whole addon with its CUDA backend running under the host emulator
// (test/cuda_emu/build_addon.sh: every cuda/*.cu, the real backend.cu included, compiled by g++ against
// the emulator, with test/cuda_emu/runtime.cc standing in for the CUDA runtime). Then the GPU check
// itself (test/gpu/check.ts --no-bench) runs in a child process with LLAVA_NATIVE pointing at that build:
// every device parity case on 'cuda' against the CPU through the TypeScript API, the caching allocator's
// steady state over tiny-LLaVA training steps, and out-of-memory errors with the process staying usable.
// Then the device suites (DEVICE_SUITES: ops, grad, llava_model, generate, trainer, recompute; the trainer
// only its device-relevant subtests, EMULATOR_GREP) run again with tensors created
// on the emulated 'cuda'.
//
// This checks the kernels' logic, the backend and the TypeScript device paths on every push without a
// GPU. It is no evidence of how they behave on real hardware (memory ordering, the PTX strings, timing):
// test/cuda_emu/README.md lists what the emulator does not model. Without g++, the CUDA headers or the
// Node headers it is a skip carrying the reason.
import t from 'tap';
import fs from 'fs';
import os from 'os';
import path from 'path';
import { DEVICE_SUITES, EMULATOR_GREP, EMU, cleanEnv, how, run, runSuiteOn, secs, skipReason, tail } from '../cuda_emu/harness';
import { TEST_DIR } from '../helpers';
import { checkNcclOnEmulator } from '../dist/nccl_emu';

const ROOT = path.join(TEST_DIR, '..');
const NODE_INC = process.env.NODE_INC || '/usr/include/node';

// Compiling the whole addon twice over (CPU sources and emulated CUDA sources) on a 2-core CI machine
// that also runs another test file takes minutes; the check itself about one.
t.setTimeout(1_500_000);

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
  why ? { skip: why } : { timeout: 1_400_000 },
  async (tt) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cuda_emu_addon-'));
    tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

    const b = await run('bash', [path.join(EMU, 'build_addon.sh'), path.join(dir, 'build')], cleanEnv({ NODE_INC }), 1_000_000);
    tt.comment(`emulated addon build: ${secs(b.ms)} s`);
    const addon = path.join(dir, 'build', 'llava_native.node');
    if (
      !tt.ok(b.code === 0 && fs.existsSync(addon), 'test/cuda_emu/build_addon.sh builds the addon', {
        output_tail: b.code === 0 ? '' : tail(b.out, 60),
      })
    )
      return;

    const out = path.join(dir, 'out');
    // EMU_RANDOM=1: threads of a block resume in a shuffled (seeded, so repeatable) order, which with the
    // poisoned shared memory turns a missing __syncthreads into a wrong result.
    const env = cleanEnv({ LLAVA_NATIVE: addon, OUT: out, EMU_RANDOM: '1' });
    const r = await run(process.execPath, ['--import=tsx', path.join(ROOT, 'test', 'gpu', 'check.ts'), '--no-bench'], env, 600_000);
    tt.comment(`gpu check under the emulator: ${secs(r.ms)} s`);
    const file = path.join(out, 'gpu_check.json');
    if (!tt.ok(fs.existsSync(file), `check.ts wrote ${file}`, { output_tail: tail(r.out) })) return;
    const rep = JSON.parse(fs.readFileSync(file, 'utf8')) as Report;

    tt.match(String(rep.device ?? r.out), /CUDA emulator/, "'cuda' is the emulated device");
    tt.same(rep.kernels?.missingOnCuda, [], 'every CPU kernel has a CUDA version');
    const parity = rep.parity ?? [];
    tt.ok(parity.length >= 250, `the parity table ran (${parity.length} cases)`);
    for (const c of parity) tt.ok(c.pass && !c.leaked, `${c.group}/${c.name}`, c.pass && !c.leaked ? {} : { detail: c.detail, leaked: c.leaked });
    const mem = rep.memory ?? [];
    tt.ok(mem.length >= 4, `the memory checks ran (${mem.length})`);
    for (const m of mem) tt.ok(m.pass, `memory/${m.name}: ${m.detail.slice(0, 160)}`);
    tt.equal(r.code, 0, `check.ts exits 0 (${how(r)})`, { output_tail: r.code === 0 ? '' : tail(r.out) });

    // lib/dist's NCCL path (cpp/dist_nccl.cc) on the emulated device, against a stand-in libnccl over MPI.
    await checkNcclOnEmulator(tt, addon, dir);

    // The device suites once more with tensor factories (and loadLlava) defaulting to the emulated 'cuda'
    // (test/helpers.ts): every op against its float64 reference, every finite-difference gradient check,
    // the tiny LLaVA against the transformers fixture, generation and training, on the device.
    for (const suite of DEVICE_SUITES) {
      const grep = EMULATOR_GREP[suite];
      const s = await runSuiteOn(path.join(ROOT, 'test', `${suite}.test.ts`), 'cuda', { LLAVA_NATIVE: addon }, undefined, grep);
      tt.comment(`${suite}.test.ts on the emulated cuda device${grep ? ` (subtests /${grep}/)` : ''}: ${secs(s.ms)} s`);
      tt.ok(
        s.total > 0 && s.fail === 0 && s.code === 0,
        `test/${suite}.test.ts passes on the emulated cuda device (${s.pass}/${s.total}; ${how(s)})`,
        {
          failing: s.failing.slice(0, 30).join('\n'),
          output_tail: s.code === 0 ? '' : tail(s.out),
        },
      );
    }
  },
);
