// amx_check.test.ts — phase (d) of the GPU check (test/gpu/cpu_amx.ts) on this machine: its small cases with
// the AMX instructions emulated (the real instructions where the CPU has them), so the harness that a GPU
// session runs on its host CPU is known to work before device time is spent on it. The kernels themselves
// are covered by cpu_isa.test.ts; this checks the harness's cases, references and bar.
import t from 'tap';
import { native } from '../../lib/native';
import { amxParity, hostCpu } from '../gpu/cpu_amx';

const { detected } = native.cpuIsa();
const runs = detected === 'amx' || detected === 'avx512bf16';

t.test('the host CPU is described', async (tt) => {
  const h = hostCpu();
  tt.equal(h.detected, detected, 'names the instruction set the kernels detect');
  tt.ok(h.threads >= 1 && h.model.length > 0, `model "${h.model}", ${h.threads} threads`);
});

t.test(
  'phase (d): the AMX tile against the AVX512-BF16 tile and a float64 reference',
  { skip: runs ? false : `the CPU runs ${detected}: no AVX512-BF16 to emulate AMX on` },
  async (tt) => {
    const before = native.cpuIsa().active;
    const cases = amxParity({ small: true });
    tt.equal(cases.length, 6, 'every small case ran');
    for (const c of cases) {
      tt.ok(c.pass, `${c.name}: ${c.detail}`);
      // A case whose reference were empty or equal to the result would pass vacuously.
      tt.ok(c.scale > 1 && c.amxErr > 0, `${c.name}: a non-trivial reference (|ref| ${c.scale}) and a bf16-rounded result`);
    }
    tt.equal(native.cpuIsa().active, before, 'the instruction-set cap is restored');
  },
);
