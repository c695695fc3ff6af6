// Runs the standalone C++ kernel labs (test/native/*_test.cc: each CPU kernel against a naive
// double-precision reference, invalid calls, 1/2/3 threads) through CMake + ctest, so CI checks the
// kernels below the N-API layer too. Skips, with the reason, when cmake is not installed.
import t from 'tap';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { TEST_DIR } from '../helpers';

const root = path.join(TEST_DIR, '..');
const hasCmake = spawnSync('cmake', ['--version']).status === 0;

t.test('kernel labs under ctest', { skip: hasCmake ? false : 'cmake is not installed', timeout: 900_000 }, async (tt) => {
  const build = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-labs-'));
  try {
    const run = (cmd: string, args: string[]): { status: number | null; out: string } => {
      const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
      return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
    };
    const cfg = run('cmake', ['-S', '.', '-B', build, '-DCMAKE_BUILD_TYPE=Release']);
    tt.equal(cfg.status, 0, 'cmake configure', { output: cfg.out.slice(-4000) });
    const b = run('cmake', ['--build', build, '-j2']);
    tt.equal(b.status, 0, 'cmake build', { output: b.out.slice(-4000) });
    const ct = run('ctest', ['--test-dir', build, '--output-on-failure']);
    tt.equal(ct.status, 0, 'ctest', { output: ct.out.slice(-6000) });
    const m = /(\d+)% tests passed, (\d+) tests failed out of (\d+)/.exec(ct.out);
    tt.ok(m && Number(m[2]) === 0 && Number(m[3]) >= 9, `ctest summary: ${m?.[0] ?? 'missing'}`);
  } finally {
    fs.rmSync(build, { recursive: true, force: true });
  }
});
