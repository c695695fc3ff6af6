#!/usr/bin/env node
// Runs the tap suite (test/**/*.test.ts) and ends with the line CI reads:
//   N passed, N failed, N skipped
// Extra arguments are passed to tap (e.g. a single test file). Exit code is tap's.
const { spawn } = require('child_process');
const path = require('path');

const args = ['tap', '--reporter=tap', ...process.argv.slice(2)];
const child = spawn('npx', args, { cwd: path.join(__dirname, '..'), stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString()).slice(-4096);
});
child.on('close', (code) => {
  // tap's closing summary: "# { total: N, pass: N, fail: N, skip: N, todo: N }"
  const m = tail.match(/# \{ total: (\d+)([^}]*)\}/);
  const field = (name) => {
    const r = m && m[2].match(new RegExp(`${name}: (\\d+)`));
    return r ? Number(r[1]) : 0;
  };
  if (m) {
    const failed = field('fail');
    const skipped = field('skip') + field('todo');
    console.log(`\n${field('pass')} passed, ${failed} failed, ${skipped} skipped`);
  } else {
    console.log('\n0 passed, 1 failed, 0 skipped (no tap summary found)');
    if (!code) code = 1;
  }
  process.exit(code ?? 1);
});
