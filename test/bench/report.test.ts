// report.test.ts — what `npm run bench` prints after its JSON lines (bench/report.ts): the table of cases
// and the PNG chart of ratios; and one tiny real run (`--quick --device cpu --filter rms_norm --out`) that
// shows the JSON, the table, the chart file, and the fused op measured against an outside peer (PyTorch or
// numpy) when python3 has one, with the engine's own composite beside it.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { PNG } from 'pngjs';
import { chartPath, combineRounds, formatTable, renderRatioChart, rowsOf } from '../../bench/report';
import { parseOptions } from '../../bench/harness';
import { TEST_DIR } from '../helpers';

const ROOT = path.join(TEST_DIR, '..');

const recs = [
  { bench: 'llava-node', node: 'v20' },
  {
    op: 'matmul',
    scenario: 'square 256',
    dtype: 'float32',
    device: 'cpu',
    shape: '256x256x256',
    median_ms: 0.5,
    gflops: 67.1,
    baseline: 'numpy 2.4.6 (scipy-openblas)',
    baseline_ms: 0.6,
    ratio: 1.2,
  },
  {
    op: 'softmax',
    scenario: 'rows',
    dtype: 'float32',
    device: 'cpu',
    shape: '4096x4096',
    median_ms: 185,
    gbps: 0.72,
    baseline: 'torch 2.5.1 (cpu, 2 threads)',
    baseline_ms: 78,
    ratio: 0.42,
    composite_ms: 820,
    composite_ratio: 4.43,
  },
  {
    op: 'llava_forward',
    scenario: 'tiny-llava logits',
    dtype: 'float32',
    device: 'cpu',
    shape: 'B2 T143',
    median_ms: 11,
    tokens_per_s: 25900,
    baseline: null,
    baseline_ms: null,
    ratio: null,
  },
  { op: 'attention', scenario: 'big', dtype: 'bfloat16', device: 'cuda', shape: 'B4', error: 'out of memory' },
  { skipped: 'torch', device: 'cuda', reason: 'torch cannot be imported' },
  { summary: 'cpu', wall_s: 3 },
];

t.test('table: one row per case, ratios, composite column, skipped notes', async (t) => {
  const rows = rowsOf(recs);
  t.same(
    rows.map((r) => r.label),
    ['matmul square 256 256x256x256', 'softmax rows 4096x4096', 'llava_forward tiny-llava logits B2 T143', 'attention big B4'],
  );
  const text = formatTable(recs);
  const lines = text.split('\n');
  t.match(lines[0], /^case\s+device\s+ours\s+baseline\s+ratio\s+vs composite$/);
  t.match(text, /matmul square 256 256x256x256\s+cpu f32\s+0\.5 ms \(67\.1 GFLOP\/s\)\s+numpy 2\.4\.6: 0\.6 ms\s+1\.2x/);
  t.match(text, /softmax rows 4096x4096\s+cpu f32\s+185 ms \(0\.72 GB\/s\)\s+torch 2\.5\.1: 78 ms\s+0\.42x\s+4\.43x/);
  t.match(text, /attention big B4\s+cuda bf16\s+error: out of memory/);
  t.match(text, /ratio = baseline ms \/ ours \(> 1: llava-node is faster\)/);
  t.match(text, /skipped torch \(cuda\): torch cannot be imported/);
  t.notMatch(text, /summary/);
});

t.test('--rounds: one line per case with the medians over the rounds and the range of the ratios', async (t) => {
  const line = (round: number, ms: number, base: number) => ({
    op: 'matmul',
    scenario: 'square 512',
    dtype: 'bfloat16',
    device: 'cpu',
    shape: '512x512x512',
    median_ms: ms,
    gflops: (2 * 512 ** 3) / (ms / 1e3) / 1e9,
    baseline: 'torch 1.13.0a0 (cpu, 2 threads)',
    baseline_ms: base,
    baseline_throughput: { gflops: (2 * 512 ** 3) / (base / 1e3) / 1e9 },
    ratio: base / ms,
    vs_our_f32: 2 + round / 10,
    round,
  });
  // Round 2 ran on a slow machine for both sides: its ratio stays 1.0 while its times double.
  const lines = [
    { bench: 'llava-node', round: 1 },
    line(1, 0.7, 0.63),
    line(2, 1.4, 1.4),
    line(3, 0.72, 0.8),
    { skipped: 'numpy', reason: 'x', round: 1 },
  ];
  const [c, ...more] = combineRounds(lines);
  t.equal(more.length, 0, 'one combined line');
  t.equal(c.rounds, 3);
  t.notOk('round' in c, 'no round field on the combined line');
  t.equal(c.median_ms, 0.72);
  t.equal(c.baseline_ms, 0.8);
  t.equal(c.ratio, 1, 'the median of the per-round ratios (0.9, 1, 1.11), not 0.8 / 0.72');
  t.equal(c.ratio_min, 0.9);
  t.ok(Math.abs((c.ratio_max as number) - 0.8 / 0.72) < 1e-12);
  t.equal(c.vs_our_f32, 2.2);
  t.ok(Math.abs((c.gflops as number) - (2 * 512 ** 3) / 0.72e-3 / 1e9) < 0.1, 'throughput of the median time');
  const bt = (c.baseline_throughput as { gflops: number }).gflops;
  t.ok(Math.abs(bt - (2 * 512 ** 3) / 0.8e-3 / 1e9) < 0.1, `the baseline's throughput of its median time (${bt})`);
  const text = formatTable([...lines, c]);
  t.equal(rowsOf([...lines, c]).length, 1, 'the per-round lines leave the table');
  t.match(text, /matmul square 512 512x512x512\s+cpu bf16\s+0\.72 ms \(373 GFLOP\/s\)\s+torch 1\.13\.0a0: 0\.8 ms\s+1x \(0\.9-1\.11\)/);
  t.match(text, /medians over 3 rounds/);
  t.equal(parseOptions(['--rounds', '4']).rounds, 4);
  t.equal(parseOptions([]).rounds, 1);
  t.throws(() => parseOptions(['--rounds', '0']), /--rounds must be a whole number >= 1/);
  t.throws(() => parseOptions(['--rounds=1.5']), /--rounds must be a whole number >= 1/);
});

t.test('chart: PNG beside the --out file', async (t) => {
  t.equal(chartPath('/x/bench.jsonl'), '/x/bench.png');
  t.equal(chartPath('out/run'), 'out/run.png');
  t.equal(chartPath('b.png'), 'b.chart.png');
  const png = PNG.sync.read(renderRatioChart(recs)!);
  t.ok(png.width >= 720 && png.height > 100, `${png.width}x${png.height}`);
  let green = 0;
  let red = 0;
  for (let i = 0; i < png.width * png.height; i++) {
    const [r, g, b] = [png.data[i * 4], png.data[i * 4 + 1], png.data[i * 4 + 2]];
    if (r === 60 && g === 160 && b === 80) green++;
    if (r === 205 && g === 70 && b === 60) red++;
  }
  t.ok(green > 50 && red > 50, `a faster bar and a slower bar (${green}, ${red})`);
  t.equal(renderRatioChart([{ summary: 'cpu' }]), null, 'nothing to draw');
});

t.test('a real quick run: JSON, table, chart, outside peer', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const out = path.join(dir, 'bench.jsonl');
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'bench', 'run.ts'), '--quick', '--device', 'cpu', '--filter', '^rms_norm', '--out', out],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 240_000,
    },
  );
  t.equal(r.status, 0, r.stderr.slice(-500));
  const lines = r.stdout.split('\n');
  const json = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  const rms = json.find((j) => j.op === 'rms_norm');
  t.ok(rms, 'rms_norm line');
  t.match(r.stdout, /\ncase\s+device\s+ours\s+baseline\s+ratio/, 'table after the JSON');
  t.ok(lines.findIndex((l) => l.startsWith('case ')) > lines.findIndex((l) => l.includes('"op":"rms_norm"')), 'the table comes after the JSON lines');
  t.same(
    fs
      .readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l)),
    json,
    '--out holds the JSON lines only',
  );
  t.ok(PNG.sync.read(fs.readFileSync(path.join(dir, 'bench.png'))).width > 0, 'chart written beside --out');
  t.equal(typeof rms!.composite_ms, 'number', 'the composite is still measured');
  const python = process.env.PYTHON ?? 'python3';
  const hasPeer = ['torch', 'numpy'].some((m) => spawnSync(python, ['-c', `import ${m}`]).status === 0);
  if (hasPeer) t.match(String(rms!.baseline), /^(torch|numpy) /, `outside peer: ${rms!.baseline}`);
  else t.equal(rms!.baseline, 'composite', 'no python peer: the composite is the baseline');
  t.equal(typeof rms!.ratio, 'number');
});
