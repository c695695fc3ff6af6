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
