// cuda_emu.test.ts — the tensor-core CUDA kernels (cuda/matmul.cu, cuda/attention_fwd.cu,
// cuda/attention_bwd.cu) run under the host emulator of test/cuda_emu/ (see its README.md) and compared
// with the CPU kernels and float64 references: no GPU needed, so CI runs it on every push. Builds the
// emulator into a fresh temp dir (outside the repo, removed afterwards), runs all its checks once with
// the default cp.async timing (copies land at the wait) and once with EMU_CP_EAGER=1 EMU_RANDOM=1
// EMU_RACECHECK=1 (copies land at issue, shuffled thread order, and the racecheck of
// test/cuda_emu/racecheck.cc on every shared and global access: zero hazards is a check of its own), then
// 60 random GEMM and attention cases from a fixed seed under the same settings, and the cases at model
// sizes (test_main.cc's vit, long, big).
// synccheck (partial __syncthreads, warp collective masks) is always on. Without g++, the CUDA headers or an x86-64 host it is
// a skip carrying the reason, never a pass. Build and run times are reported as comments.
import t from 'tap';
import type { Test } from 'tap';
import fs from 'fs';
import os from 'os';
import path from 'path';
import { EMU, cleanEnv, how, run, secs, skipReason, tail } from '../cuda_emu/harness';

const BUILD_TIMEOUT_MS = 600_000;
const RUN_TIMEOUT_MS = 300_000;

// tap's per-file timeout is 300 s (package.json); compiling on a 2-core CI machine that is also running
// another test file can take a good part of that, so ask the runner for more.
t.setTimeout(1_200_000);

/** Runs the kernel test binary once with `extra` in its environment (args: a family such as 'fuzz 60';
 *  none runs the default set) and checks that at least minChecks checks ran and none failed; the run is
 *  named by its args and settings. Returns its milliseconds. */
async function runEmulator(tt: Test, bin: string, extra: Record<string, string> = {}, args: string[] = [], minChecks = 100): Promise<number> {
  const mode = [...args, ...Object.entries(extra).map(([k, v]) => `${k}=${v}`)].join(' ') || 'default';
  const r = await run(bin, args, cleanEnv(extra), RUN_TIMEOUT_MS);
  tt.comment(`emulator run [${mode}]: ${secs(r.ms)} s`);
  const summary = [...r.out.matchAll(/^(\d+) passed, (\d+) failed$/gm)].pop();
  const failing = r.out.split('\n').filter((l) => /^FAIL|EMU FATAL/.test(l));
  if (!summary) {
    tt.fail(`[${mode}] no "N passed, N failed" summary (${how(r)}; a FATAL aborts the run)`, {
      failing: failing.slice(0, 50).join('\n'),
      output_tail: tail(r.out),
    });
    return r.ms;
  }
  const passed = Number(summary[1]);
  const failed = Number(summary[2]);
  tt.equal(failed, 0, `[${mode}] no failed checks (${passed} passed, ${failed} failed)`, {
    failing: failing.slice(0, 50).join('\n') || '(none printed)',
  });
  tt.ok(passed >= minChecks, `[${mode}] at least ${minChecks} checks passed (${passed})`);
  tt.equal(r.code, 0, `[${mode}] test binary exits 0 (${how(r)})`, { output_tail: r.code === 0 ? '' : tail(r.out) });
  if (extra.EMU_RACECHECK) {
    const races = r.out.split('\n').filter((l) => l.startsWith('EMU RACE'));
    tt.match(r.out, /^PASS racecheck: 0 hazard\(s\)$/m, `[${mode}] racecheck ran and found no hazard`, { races: races.slice(0, 20).join('\n') });
  }
  return r.ms;
}

const reason = skipReason();
t.test(
  'CUDA kernels under the host emulator (matmul, attention fwd/bwd) vs CPU kernels and f64 references',
  reason ? { skip: reason } : { timeout: 1_100_000 },
  async (tt) => {
    const t0 = Date.now();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cuda_emu-'));
    tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

    const b = await run('bash', [path.join(EMU, 'build.sh'), dir], cleanEnv(), BUILD_TIMEOUT_MS);
    tt.comment(`emulator build: ${secs(b.ms)} s`);
    const bin = path.join(dir, 'test');
    if (
      !tt.ok(b.code === 0 && fs.existsSync(bin), 'test/cuda_emu/build.sh builds the emulator', { output_tail: b.code === 0 ? '' : tail(b.out, 60) })
    ) {
      return;
    }

    const strict = { EMU_CP_EAGER: '1', EMU_RANDOM: '1', EMU_RACECHECK: '1' };
    let runMs = await runEmulator(tt, bin);
    runMs += await runEmulator(tt, bin, strict);
    // Random shapes, layouts, dtypes, batches, epilogues and attention settings (test_main.cc, "fuzz"), from
    // a fixed seed so that a failure repeats: 60 GEMM and 60 attention cases, about 20 s.
    runMs += await runEmulator(tt, bin, { ...strict, EMU_SEED: '7' }, ['fuzz', '60']);
    // Attention at model sizes on the SIMT path (f32): the ViT's B1 H16 T577 D64, causal T2048 at D64 and
    // D128; and bf16 attention at T300/S513 with a 256x384x1024 GEMM. Seconds each.
    for (const family of ['vit', 'long', 'big']) runMs += await runEmulator(tt, bin, {}, [family], 5);
    tt.comment(`cuda_emu total: ${secs(Date.now() - t0)} s (build ${secs(b.ms)} s, runs ${secs(runMs)} s)`);
  },
);
