// entry.test.ts — the package's subpath export: `require('llava-node/tfjs')` (resolved through
// package.json `exports`, from the compiled dist/) registers the `llava` backend, and the package root
// still loads. Runs in a child process so that it sees the package exactly as a user would.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';

const root = path.resolve(__dirname, '..', '..');

t.test("require('llava-node/tfjs') registers llava; require('llava-node') still works", async (t) => {
  if (!fs.existsSync(path.join(root, 'dist', 'lib', 'tfjs', 'index.js'))) {
    t.skip('dist/ has no lib/tfjs (run `npm run build:ts`)', () => {});
    return;
  }
  const code = `
    const tf = require('@tensorflow/tfjs-core');
    const { nativeKernelNames } = require('llava-node/tfjs');
    const root = require('llava-node');
    tf.setBackend('llava').then(() => {
      const y = tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor2d([5, 6, 7, 8], [2, 2]));
      console.log(JSON.stringify({ backend: tf.getBackend(), y: Array.from(y.dataSync()),
        native: nativeKernelNames.length, kernels: tf.getKernelsForBackend('llava').length,
        cpuKernels: tf.getKernelsForBackend('cpu').length, root: typeof root.tensor }));
    });`;
  const r = spawnSync(process.execPath, ['-e', code], { cwd: root, encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr.slice(-1000));
  const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  t.equal(out.backend, 'llava');
  t.same(out.y, [19, 22, 43, 50]);
  t.equal(out.kernels, out.cpuKernels, `a kernel for each of tfjs-backend-cpu's ${out.cpuKernels}`);
  t.ok(out.native >= 40, `${out.native} of them native`);
  t.equal(out.root, 'function', 'the package root export');
});
