// device_parity.test.ts — the device parity suite under tap: every case of test/gpu/cases.ts on 'cuda'
// against the CPU, one subtest per group. Without a usable GPU each group is a skip carrying the reason
// (docs/design.md: a device missing at run time is a skip, never a pass). The same table runs in one
// command on the GPU machine through test/gpu/check.ts, which also checks memory and runs the bench.
import t from 'tap';
import * as L from '../../lib';
import { formatResult, parityCases, parityGroups, runParityCase } from '../gpu/cases';

const cases = parityCases();
const reason = L.cuda.isAvailable() ? null : `CUDA unavailable: ${L.cuda.describe()}`;

for (const group of parityGroups(cases)) {
  const mine = cases.filter((c) => c.group === group);
  t.test(`device parity: ${group} (${mine.length} cases, cuda vs cpu)`, reason ? { skip: reason } : {}, async (tt) => {
    for (const c of mine) {
      const r = runParityCase(c, 'cuda', 'cpu');
      tt.ok(r.pass, formatResult(r));
    }
  });
}
