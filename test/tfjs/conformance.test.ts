// conformance.test.ts — tfjs-core's own spec suite against the `llava` backend (spec_runner.cjs in
// a child process: jasmine owns its process's globals). Passes when no spec fails and at most 3% of
// the suite is excluded (exclusions.cjs, one reason each). Prints the runner's counts.
import t from 'tap';
import * as path from 'path';
import { spawnSync } from 'child_process';

t.test("tfjs-core's spec suite passes on llava", async (t) => {
  const runner = path.join(__dirname, 'spec_runner.cjs');
  const r = spawnSync(process.execPath, [runner, 'llava'], { encoding: 'utf8', timeout: 280_000, maxBuffer: 64 << 20 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const m = /backend llava: (\d+) passed, (\d+) failed, (\d+) skipped/.exec(out);
  if (!m) {
    t.fail(`the runner printed no summary (exit ${r.status}, signal ${r.signal}):\n${out.slice(-4000)}`);
    return;
  }
  const [passed, failed, skipped] = m.slice(1).map(Number);
  t.comment(m[0]);
  const failures = out.split('\n').filter((l) => l.startsWith('FAILED'));
  t.equal(failed, 0, failures.slice(0, 20).join('\n') || 'no failures');
  t.equal(r.status, 0, 'runner exit status');
  const total = passed + failed + skipped;
  t.ok(total > 4000, `the whole suite ran (${total} specs)`);
  t.ok(skipped / total <= 0.03, `at most 3% skipped or excluded (${skipped} of ${total})`);
});
