// device_suites.test.ts — the suites once per available device: the DEVICE_SUITES of test/cuda_emu/harness.ts
// run again (as child processes) with every tensor and model created on 'cuda' when this machine has a
// usable GPU. Without one it is a skip carrying the reason; test/cuda/cuda_emu_addon.test.ts runs the
// same suites on the emulated device on every machine that can build it.
import t from 'tap';
import path from 'path';
import * as L from '../../lib';
import { DEVICE_SUITES, how, runSuiteOn, secs, tail } from '../cuda_emu/harness';
import { TEST_DIR } from '../helpers';

t.setTimeout(2_000_000);
const reason = L.cuda.isAvailable() ? null : `CUDA unavailable: ${L.cuda.describe()}`;

for (const suite of DEVICE_SUITES) {
  t.test(`test/${suite}.test.ts with every tensor on cuda`, reason ? { skip: reason } : { timeout: 1_000_000 }, async (tt) => {
    const s = await runSuiteOn(
      path.join(TEST_DIR, `${suite}.test.ts`),
      'cuda',
      process.env.LLAVA_NATIVE ? { LLAVA_NATIVE: process.env.LLAVA_NATIVE } : {},
    );
    tt.comment(`${suite}.test.ts on cuda: ${secs(s.ms)} s`);
    tt.ok(s.total > 0 && s.fail === 0 && s.code === 0, `passes on cuda (${s.pass}/${s.total}; ${how(s)})`, {
      failing: s.failing.slice(0, 30).join('\n'),
      output_tail: s.code === 0 ? '' : tail(s.out),
    });
  });
}
