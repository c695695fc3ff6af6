// demo.test.ts — `npm start` (lib/app/train/demo.ts): a short run writes its data under ./llava-demo of the
// current directory by default, prints where, and prints two `llava train` command lines; run here with the
// CLI, those commands train the same two stages to the same losses. `--device cuda` on a machine without a
// usable GPU fails before any data is written, with one error line.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { spawnSync } from 'child_process';
import * as cuda from '../../../lib/cuda';
import { DEFAULT_DEMO_DIR, runDemo } from '../../../lib/app/train/demo';
import { shellQuote } from '../../../lib/app/train/output_dir';
import { TEST_DIR } from '../../helpers';

const ROOT = path.join(TEST_DIR, '..');
const CLI = path.join(ROOT, 'lib', 'app', 'cli', 'main.ts');
const DEMO = path.join(ROOT, 'lib', 'app', 'train', 'demo.ts');
const TSX = pathToFileURL(require.resolve('tsx')).href;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-demo-test-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const losses = (dir: string): number[] =>
  fs
    .readFileSync(path.join(dir, 'train_log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { loss: number }).loss);

t.test('default folder, printed commands, and the CLI reproduces both stages', async (t) => {
  const cwd = process.cwd();
  const initCwd = process.env.INIT_CWD;
  const lines: string[] = [];
  process.chdir(tmp);
  delete process.env.INIT_CWD; // set when the suite runs under npm: the demo would show paths from there
  let r;
  try {
    r = await runDemo({ stage1Steps: 3, stage2Steps: 3, progress: 'none', log: (m) => lines.push(m) });
  } finally {
    process.chdir(cwd);
    if (initCwd !== undefined) process.env.INIT_CWD = initCwd;
  }
  const out = path.join(fs.realpathSync(tmp), DEFAULT_DEMO_DIR);
  t.equal(fs.realpathSync(r.outDir), out, 'default: ./llava-demo of the current directory');
  for (const f of ['data/pretrain.json', 'data/finetune.json', 'data/images/blue_circle.png', 'stage1/train_log.jsonl', 'stage2/train_log.jsonl'])
    t.ok(fs.existsSync(path.join(out, f)), `${f} written`);
  const text = lines.join('\n');
  t.match(text, /data: 12 generated images \+ conversations in llava-demo\/data\//, 'says where the data went (relative to the current directory)');
  const printed = lines.filter((l) => / train --stage /.test(l)).map((l) => l.trim());
  t.equal(printed.length, 2, 'two command lines');
  t.ok(printed[0].endsWith(` train ${r.commands.stage1.map(shellQuote).join(' ')}`), 'stage 1 line is the returned argv');
  t.ok(printed[1].endsWith(` train ${r.commands.stage2.map(shellQuote).join(' ')}`), 'stage 2 line is the returned argv');
  t.match(printed[0], /^(node \S+main\.js|llava|npx llava) train --stage pretrain /);

  // Run them as printed (from the same directory), with the CLI from source.
  for (const [stage, argv] of [
    [1, r.commands.stage1],
    [2, r.commands.stage2],
  ] as const) {
    const c = spawnSync(process.execPath, ['--import', TSX, CLI, 'train', ...argv, '--progress', 'none'], {
      cwd: tmp,
      encoding: 'utf8',
      timeout: 240_000,
    });
    t.equal(c.status, 0, `stage ${stage} command exits 0 (${c.stderr.slice(-400)})`);
    const mine = losses(path.join(out, `stage${stage}`));
    const cli = losses(path.join(out, `cli-stage${stage}`));
    t.equal(cli.length, 3, `stage ${stage}: 3 steps logged`);
    t.ok(
      cli.every((l, i) => Math.abs(l - mine[i]) <= 1e-5 * Math.max(1, Math.abs(mine[i]))),
      `stage ${stage}: the CLI's losses equal the demo's (${cli.map((x) => x.toFixed(5))} vs ${mine.map((x) => x.toFixed(5))})`,
    );
  }
  t.ok(fs.existsSync(path.join(out, 'cli-stage1', 'mm_projector.safetensors')), 'stage 1 wrote the projector stage 2 starts from');
  const again = spawnSync(process.execPath, ['--import', TSX, CLI, 'train', ...r.commands.stage1, '--progress', 'none'], {
    cwd: tmp,
    encoding: 'utf8',
    timeout: 240_000,
  });
  t.equal(again.status, 0, `the printed command can be run again over its own output (${again.stderr.slice(-300)})`);
});

t.test('--device cuda without a GPU fails at once, before any data', { skip: cuda.isAvailable() ? 'this machine has CUDA' : false }, async (t) => {
  const where = path.join(tmp, 'cuda-out');
  const r = spawnSync(process.execPath, ['--import', TSX, DEMO, '--device', 'cuda', '--out', where], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  t.equal(r.status, 1);
  t.match(r.stderr, /^demo: error: --device cuda: CUDA is not available/m, 'one line with the reason');
  t.notMatch(r.stderr, /\[demo\]/, 'no doubled prefix');
  t.equal(r.stdout, '', 'nothing else printed');
  t.notOk(fs.existsSync(where), 'no data written');
});
