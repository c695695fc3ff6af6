// run_tests.test.ts — `npm test`'s runner (scripts/run_tests.js): its TAP reader on a recorded stream (per
// file counts, failing assertions with their subtest path and diagnostics, a file that crashed), and the
// runner itself on throwaway test files outside test/ (one line per file, failures in full, the raw TAP
// kept in a file, stderr kept aside and shown when the run fails, --raw, exit codes, and the closing
// "N passed, N failed, N skipped" as the last line).
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { TEST_DIR } from '../helpers';

const ROOT = path.join(TEST_DIR, '..');
const RUNNER = path.join(ROOT, 'scripts', 'run_tests.js');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { TapReport, fileLine, failureText, parseArgs, expectedFiles, parseFileTap } = require(RUNNER);

interface FileResult {
  name: string;
  ok: boolean;
  pass: number;
  fail: number;
  skip: number;
  todo: number;
  seconds: number | null;
  failures: { path: string[]; line: string; yaml: string | null }[];
}

const RECORDED = `TAP version 14
1..2
# Subtest: test/crash.test.ts
    ok 1 - before crash
    1..1
    # time=38.017ms
not ok 1 - test/crash.test.ts # time=38.017ms
  ---
  stdio: inherit
  cwd: /work
  command: /usr/bin/node
  args:
    - --import=tsx
    - test/crash.test.ts
  jobId: 1
  exitCode: 3
  signal: null
  ...

# Subtest: test/fail.test.ts
    # Subtest: group a
        ok 1 - fine
        not ok 2 - one is two
          ---
          compare: ===
          diff: |
            -2
            +1
          ...
        
        # Subtest: nested
            not ok 1 - deep compare
              ---
              diff: |
                -  "a": 2,
              ...
            
            ok 2 - skipped one # SKIP
            1..2
        not ok 3 - nested # time=8.115ms
          ---
          at:
            lineNumber: 5
          ...
        
        1..3
    not ok 1 - group a # time=96.099ms
    
    ok 2 - top-level pass
    ok 3 - later # TODO
    ok 4 - has a \\# in its name
    1..4
    # time=170.701ms
not ok 2 - test/fail.test.ts # time=170.701ms
  ---
  exitCode: 1
  ...

# No coverage generated
# { total: 9, pass: 4, fail: 3, todo: 1, skip: 1 }
# time=3837.442ms
`;

t.test('the TAP reader: per-file counts and failures', async (t) => {
  const files: FileResult[] = [];
  const r = new TapReport((f: FileResult) => files.push(f));
  for (const l of RECORDED.split('\n')) r.line(l);
  r.end();
  t.same(
    files.map((f) => [f.name, f.ok, f.pass, f.fail, f.skip, f.todo, f.seconds]),
    [
      ['test/crash.test.ts', false, 1, 1, 0, 0, 0.038017],
      ['test/fail.test.ts', false, 3, 2, 1, 1, 0.170701],
    ],
  );
  t.same(r.summary(), { total: 9, pass: 4, fail: 3, skip: 1, todo: 1 });
  const [crash, fail] = files;
  t.same(
    fail.failures.map((x) => [x.path, x.line]),
    [
      [['group a'], 'not ok 2 - one is two'],
      [['group a', 'nested'], 'not ok 1 - deep compare'],
    ],
    'failing assertions with their subtest path; the failed subtests around them are not extra failures',
  );
  t.match(fail.failures[0].yaml, /compare: ===\ndiff: \|\n {2}-2\n {2}\+1/, 'diagnostics kept, de-indented');
  const text = failureText(fail);
  t.match(text, /--- test\/fail\.test\.ts > group a > nested\n {2}not ok 1 - deep compare\n {4}diff: \|/);
  t.notMatch(text, /exitCode/, "a file with failing assertions does not repeat tap's process diagnostics");
  // the crashed file: tap's diagnostics for it, without how it was spawned
  const crashText = failureText(crash);
  t.match(crashText, /exitCode: 3/);
  t.notMatch(crashText, /args:|--import|command:|cwd:/);
  t.equal(fileLine(crash), 'FAIL test/crash.test.ts  1 passed, 1 failed, 0 skipped  0.0 s');
  t.equal(fileLine({ ...fail, ok: true, fail: 0 }), 'ok   test/fail.test.ts  3 passed, 0 failed, 2 skipped  0.2 s');
  // one file's own TAP (tap's --output-dir copy): nothing until its closing "# time=" line
  const own =
    'TAP version 14\n# Subtest: g\n    ok 1 - a\n    not ok 2 - b\n      ---\n      diff: x\n      ...\n    1..2\nnot ok 1 - g # time=3ms\n\nok 2 - c # SKIP\n1..2\n';
  t.equal(parseFileTap('test/x.test.ts', own), null, 'not finished yet');
  const done = parseFileTap('test/x.test.ts', own + '# time=12.5ms\n') as FileResult;
  t.same([done.name, done.ok, done.pass, done.fail, done.skip, done.seconds], ['test/x.test.ts', false, 1, 1, 1, 0.0125]);
  t.same(
    done.failures.map((f) => [f.path, f.line, f.yaml]),
    [[['g'], 'not ok 2 - b', 'diff: x']],
  );
  // a subtest left open (its process died inside it) does not hide the file's result
  const cut: FileResult[] = [];
  const r2 = new TapReport((f: FileResult) => cut.push(f));
  for (const l of [
    '# Subtest: test/died.test.ts',
    '    # Subtest: half',
    '        ok 1 - one',
    'not ok 1 - test/died.test.ts # time=5ms',
    '# { total: 2, pass: 1, fail: 1 }',
  ])
    r2.line(l);
  r2.end();
  t.same(
    cut.map((f) => [f.name, f.ok, f.pass, f.fail]),
    [['test/died.test.ts', false, 1, 1]],
  );
  t.same(parseArgs(['--raw', 'a.ts', '--tap-file=/x/y.tap', '--grep', 'z']), { raw: true, tapFile: '/x/y.tap', tapArgs: ['a.ts', '--grep', 'z'] });
  // the files a "still running" line can name
  const all = expectedFiles([]) as string[];
  t.ok(all.includes(path.join('test', 'scripts', 'run_tests.test.ts')) && all.every((f) => f.endsWith('.test.ts')), `${all.length} suite files`);
  t.same(expectedFiles(['test/layout.test.ts', '--bail']), [path.join('test', 'layout.test.ts')]);
  t.equal(expectedFiles(['test/app']), null, 'a directory: unknown');
});

t.test('the runner on real files', async (t) => {
  // Inside the repository's git-ignored .tap folder, outside test/: tap names a file by its path from the
  // repository root and keeps a copy of its TAP under .tap/test-results by that name, so a file under the
  // OS temp dir would get its copy written outside .tap.
  fs.mkdirSync(path.join(ROOT, '.tap'), { recursive: true });
  const dir = fs.mkdtempSync(path.join(ROOT, '.tap', 'run-tests-'));
  t.teardown(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(path.join(ROOT, '.tap', 'test-results', path.relative(ROOT, dir)), { recursive: true, force: true });
  });
  const tapImport = JSON.stringify('tap');
  fs.writeFileSync(
    path.join(dir, 'good.test.ts'),
    `import t from ${tapImport};\nt.ok(true, 'yes');\nt.test('sub', async (tt) => { tt.equal(1, 1); tt.skip('later'); });\n`,
  );
  fs.writeFileSync(
    path.join(dir, 'bad.test.ts'),
    `import t from ${tapImport};\nprocess.stderr.write('a line on stderr\\n');\nt.test('arith', async (tt) => {\n  tt.ok(true, 'fine');\n  tt.equal(2 + 2, 5, 'two and two make five');\n});\n`,
  );
  // The child tap must not think it runs inside this tap process.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TAP|_TAPJS)/.test(k)));
  const run = (...args: string[]) => spawnSync(process.execPath, [RUNNER, ...args], { cwd: ROOT, encoding: 'utf8', env, timeout: 240_000 });

  const raw = path.join(dir, 'raw.tap');
  const r = run(path.join(dir, 'good.test.ts'), path.join(dir, 'bad.test.ts'), '--tap-file', raw);
  t.not(r.status, 0, 'a failure exits non-zero');
  const lines = r.stdout.trimEnd().split('\n');
  t.equal(lines[lines.length - 1], '3 passed, 1 failed, 1 skipped', 'the closing line is last and exact');
  t.match(r.stdout, /^ok {3}\S*good\.test\.ts {2}2 passed, 0 failed, 1 skipped {2}\d+\.\d s$/m, 'a line for the passing file');
  t.equal(r.stdout.split('\n').filter((l) => /^(ok |FAIL)/.test(l)).length, 2, 'one line per file (the early line and the stream agree)');
  t.match(r.stdout, /^FAIL \S*bad\.test\.ts {2}1 passed, 1 failed, 0 skipped {2}\d+\.\d s$/m, 'a line for the failing file');
  t.match(
    r.stdout,
    /--- \S*bad\.test\.ts > arith\n {2}not ok 2 - two and two make five\n[\s\S]*diff:[\s\S]*-5\n[\s\S]*\+4/,
    'the failing assertion in full',
  );
  t.notMatch(r.stdout, /ok 1 - yes/, 'passing assertions are not echoed');
  t.match(r.stdout, /failed files:\n {2}\S*bad\.test\.ts/);
  t.match(
    r.stdout,
    /stderr of the test processes \(1 line; all in \S+raw\.tap\.stderr\):\n {2}a line on stderr\n/,
    "a failed run shows the tests' stderr",
  );
  t.equal(r.stderr, '', 'nothing on the console stderr');
  t.match(fs.readFileSync(`${raw}.stderr`, 'utf8'), /a line on stderr/);
  t.match(r.stdout, new RegExp(`full TAP output: ${raw.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  const tap = fs.readFileSync(raw, 'utf8');
  t.match(tap, /^TAP version 14/, 'the raw TAP is kept');
  t.match(tap, /ok 1 - yes/);

  const ok = run('--raw', path.join(dir, 'good.test.ts'), '--tap-file', raw);
  t.equal(ok.status, 0, 'all passing exits 0');
  t.match(ok.stdout, /^TAP version 14/m, '--raw streams the TAP');
  t.equal(ok.stdout.trimEnd().split('\n').pop(), '2 passed, 0 failed, 1 skipped');

  const broken = run('--no-such-tap-option', '--tap-file', raw);
  t.not(broken.status, 0, 'no summary: failure');
  t.equal(broken.stdout.trimEnd().split('\n').pop(), '0 passed, 1 failed, 0 skipped (no tap summary found)');
});
