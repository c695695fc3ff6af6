// The README's tensor-API example must run as written (with the package name pointed at lib/):
// it trains a linear classifier in tidy() and prints memory(), which must show nothing leaked.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';

const root = path.join(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

t.test('the tensor API example runs and leaks nothing', async (tt) => {
  const section = readme.slice(readme.indexOf('## The tensor API'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  tt.ok(m, 'found the example');
  if (!m) return;
  const code = m[1].replace("from 'llava-node'", `from ${JSON.stringify(path.join(root, 'lib'))}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'readme-'));
  const file = path.join(dir, 'example.ts');
  fs.writeFileSync(file, code);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: root, encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true, force: true });
  tt.equal(r.status, 0, `exit 0 (stderr: ${r.stderr.slice(-500)})`);
  const mem = /numTensors: (\d+)/.exec(r.stdout);
  tt.ok(mem, 'prints memory()');
  // x, w, b, y and the two gradients are alive: six tensors, nothing from the 100 steps.
  tt.ok(mem && Number(mem[1]) <= 6, `live tensors after training: ${mem?.[1]}`);
});

// The npm commands the README tells a new user to type exist, and the closing line it quotes for `npm test`
// is the one scripts/run_tests.js prints (CI reads it).
t.test('npm commands in the README exist; the quoted npm test line matches the runner', async (tt) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  // `npm run NAME`, `npm start` and `npm test` run package.json scripts; other npm words (ci, install) are npm's own.
  const scripts = new Set<string>();
  for (const m of readme.matchAll(/\bnpm (run )?([a-z][\w:-]*)/g)) if (m[1] || m[2] === 'start' || m[2] === 'test') scripts.add(m[2]);
  tt.ok(
    scripts.has('start') && scripts.has('test') && scripts.has('bench'),
    `the README names npm start, npm test and npm run bench (${[...scripts]})`,
  );
  for (const name of scripts) tt.ok(name in pkg.scripts, `npm ${name === 'test' || name === 'start' ? '' : 'run '}${name} is a package.json script`);
  const runner = fs.readFileSync(path.join(root, 'scripts', 'run_tests.js'), 'utf8');
  tt.match(readme, /"N passed, N failed, N skipped"/, 'the README quotes the closing line');
  tt.match(runner, /\$\{s\.pass\} passed, \$\{s\.fail\} failed, \$\{s\.skip \+ s\.todo\} skipped/, 'the runner prints that line');
});

// The LLaVA example runs as written on the bundled tiny checkpoint (random weights): its path and one of
// its images stand in for the placeholders; it must print some text and leave no tensor alive.
t.test('the LLaVA example runs on the tiny fixture', async (tt) => {
  const section = readme.slice(readme.indexOf('## LLaVA'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  tt.ok(m, 'found the example');
  if (!m) return;
  const fixture = path.join(root, 'test', 'fixtures', 'tiny-llava');
  const code =
    m[1]
      .replace("from 'llava-node'", `from ${JSON.stringify(path.join(root, 'lib'))}`)
      .replace("'path/to/llava-1.5-7b-hf'", JSON.stringify(fixture))
      .replace("'photo.jpg'", JSON.stringify(path.join(fixture, 'image0.png')))
      .replace('maxNewTokens: 64', 'maxNewTokens: 4') + '\nprocess.on("exit", () => console.log("\\nlive", L.memory().numTensors));\n';
  tt.ok(code.includes(fixture) && code.includes('image0.png'), 'placeholders replaced');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'readme-'));
  const file = path.join(dir, 'llava_example.ts');
  fs.writeFileSync(file, code);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: root, encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true, force: true });
  tt.equal(r.status, 0, `exit 0 (stderr: ${r.stderr.slice(-500)})`);
  const live = /\nlive (\d+)/.exec(r.stdout);
  tt.ok(live && r.stdout.slice(0, live.index).length > 0, `generated text: ${JSON.stringify(r.stdout.slice(0, 80))}`);
  tt.equal(live?.[1], '0', 'no tensor left alive');
});
