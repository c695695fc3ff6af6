// The `llava` command (lib/app/cli/main.ts), run as a child process like a user would: --help on every
// subcommand, preprocess (text and --json), clear errors with a non-zero exit code, a tiny `train` run
// (--max-steps 3 -> 3 log lines and a checkpoint), stage 2 from the stage-1 projector, and --resume (a finished
// run fails: nothing to train); Ctrl-C during training (a checkpoint, the resume command, exit 130; a second
// Ctrl-C exits at once), a non-empty --output refused, --overwrite-output, and the small-data start line.
// In process: the train flags built from the option table, and which values count as typed.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { Command } from 'commander';
import { addTrainOptions, explicitTrainFlags } from '../../../lib/app/cli/train';
import { resolveTrainRun, type Layer } from '../../../lib/app/train/options';
import { makeDemoData } from '../../../lib/app/train/demo_data';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { preprocessSample } from '../../../lib/app/processing/preprocess';
import { TEST_DIR } from '../../helpers';

const ROOT = path.join(TEST_DIR, '..');
const CLI = path.join(ROOT, 'lib', 'app', 'cli', 'main.ts');
const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-cli-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const demo = makeDemoData(path.join(tmp, 'demo'));

function llava(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 120_000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** `llava train` arguments on the tiny fixture: finetune on the demo data and images unless told otherwise. */
function trainArgs(o: { stage?: string; data?: string; images?: string; output?: string }, ...extra: string[]): string[] {
  const { stage = 'finetune', data = demo.finetuneJson, images = demo.imageFolder, output } = o;
  return ['train', '--stage', stage, '--model', FIX, '--data', data, '--image-folder', images, ...(output ? ['--output', output] : []), ...extra];
}

/** The records of a run's train_log.jsonl. */
const logRecords = (out: string): Record<string, number>[] =>
  fs
    .readFileSync(path.join(out, 'train_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

t.test('--help on every command', async (t) => {
  const top = llava('--help');
  t.equal(top.code, 0);
  for (const c of ['train', 'chat', 'verify', 'preprocess', 'serve', 'eval', 'gen-data', 'collect-data', 'export-prompts'])
    t.match(top.out, new RegExp(`\\b${c}\\b`));
  const train = llava('train', '--help');
  t.equal(train.code, 0);
  for (const o of [
    '--stage',
    '--model',
    '--data',
    '--image-folder',
    '--output',
    '--template',
    '--preset',
    '--lr',
    '--epochs',
    '--max-steps',
    '--batch-size',
    '--grad-accum',
    '--max-length',
    '--device',
    '--dtype',
    '--seed',
    '--resume',
    '--pretrain-mm-mlp-adapter',
  ])
    t.match(train.out, o, `train --help lists ${o}`);
  for (const c of ['chat', 'verify', 'preprocess', 'serve']) {
    const h = llava(c, '--help');
    t.equal(h.code, 0, `${c} --help`);
    t.match(h.out, '--model');
  }
});

t.test('train flags: only typed values are explicit, commander defaults are not', async (t) => {
  const parse = async (...args: string[]): Promise<Layer> => {
    let seen: Layer = {};
    const cmd = addTrainOptions(new Command('train').exitOverride()).action((_o: unknown, c: Command) => void (seen = explicitTrainFlags(c)));
    await cmd.parseAsync(['--stage', 'finetune', '--model', 'm', '--data', 'd', '--image-folder', 'i', '--output', 'o', ...args], { from: 'user' });
    return seen;
  };
  const base = { stage: 'finetune', baseModelDir: 'm', data: 'd', imageFolder: 'i', outputDir: 'o' };
  t.same(await parse(), base, 'seed, warmup, device, preset ... left to the defaults');
  t.same(await parse('--seed', '42', '--no-group-by-modality-length', '--resume', '--micro-batch-size', '2', '--warmup-ratio', '0'), {
    ...base,
    seed: 42,
    groupByModalityLength: false,
    resume: true,
    microBatch: 2,
    warmupRatio: 0,
  });
  const run = resolveTrainRun(await parse('--preset', 'paper', '--lr', '1e-4', '--grad-accum', '2'));
  t.same([run.preset, run.lr, run.globalBatch, run.microBatch, run.gradAccum, run.template, run.seed], ['paper', 1e-4, 32, 16, 2, 'llava_v0', 42]);
  await t.rejects(parse('--warmup-ratio', '2'), /must be between 0 and 1/, 'the table range parses the flag');
});

t.test('preprocess: --json ids/labels with -200, and the text view', async (t) => {
  const tok = Tokenizer.fromDir(FIX);
  const recs = JSON.parse(fs.readFileSync(demo.finetuneJson, 'utf8'));
  for (const index of [2, 12]) {
    const r = llava('preprocess', '--template', 'v1', '--model', FIX, '--data', demo.finetuneJson, '--index', String(index), '--json');
    t.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as { input_ids: number[]; labels: number[] };
    t.same(Object.keys(j), ['input_ids', 'labels']);
    const want = preprocessSample(recs[index], { template: 'v1', tokenizer: tok, modelMaxLength: 512 });
    t.same(j.input_ids, want.inputIds);
    t.same(j.labels, want.labels);
    t.equal(j.input_ids.filter((x) => x === -200).length, index === 12 ? 0 : 1, 'image placeholder as -200');
  }
  const plain = llava('preprocess', '--template', 'plain', '--model', FIX, '--data', demo.pretrainJson, '--index', '0', '--json');
  const pj = JSON.parse(plain.out) as { input_ids: number[]; labels: number[] };
  t.same(pj.input_ids.slice(0, 2), [1, -200], 'plain: [BOS, -200, caption...]');
  t.same(pj.labels.slice(0, 2), [-100, -100]);
  const text = llava('preprocess', '--model', FIX, '--data', demo.finetuneJson, '--index', '0');
  t.equal(text.code, 0);
  t.match(text.out, /--- prompt ---\nA chat between a curious user .* USER: <image>\nWhat is in the image\? ASSISTANT: A red square\.<\/s>/);
  t.match(text.out, /\*\s+2\s+"<\/s>"/, 'EOS marked supervised');
  t.match(text.out, /--- supervised text ---\n.*A red square\.<\/s>/);
});

t.test('errors: clear message, non-zero exit', async (t) => {
  const pre = (...extra: string[]): string[] => ['preprocess', '--model', FIX, '--data', demo.finetuneJson, ...extra];
  const x = path.join(tmp, 'x');
  const cases: [string[], RegExp][] = [
    [['preprocess', '--model', FIX, '--data', path.join(tmp, 'nope.json'), '--index', '0'], /data file .*nope\.json not found/],
    [pre('--index', 'abc'), /'--index <i>' argument 'abc' is invalid/],
    [pre('--index', '99'), /--index 99 out of range: .* has 14 records/],
    [pre('--index', '0', '--template', 'nonsense'), /unknown template 'nonsense'/],
    [['preprocess', '--model', path.join(tmp, 'nomodel'), '--data', demo.finetuneJson, '--index', '0'], /model directory .* not found/],
    [trainArgs({ output: x }, '--lr', 'fast'), /'--lr <lr>' argument 'fast' is invalid/],
    [trainArgs({ output: x }, '--max-steps', '-3'), /--max-steps.* is invalid/],
    [trainArgs({ stage: 'stage3', output: x }), /unknown stage 'stage3'/],
    [trainArgs({ images: path.join(tmp, 'noimg'), output: x }), /image folder .* not found/],
    [trainArgs({ output: x }, '--batch-size', '10', '--micro-batch-size', '4'), /not divisible/],
    [trainArgs({}), /required option '--output <dir>'/],
  ];
  for (const [args, re] of cases) {
    const r = llava(...args);
    t.not(r.code, 0, `exit code for ${args.slice(0, 1)} ${re}`);
    t.match(r.err, re);
  }
});

t.test('train: --max-steps 3 writes 3 log lines and a checkpoint; stage 2 from the projector; resume', async (t) => {
  const out1 = path.join(tmp, 'stage1');
  const plain = ['--progress', 'plain'];
  const s1 = llava(
    ...trainArgs({ stage: 'pretrain', data: demo.pretrainJson, output: out1 }, ...plain, '--max-steps', '3', '--batch-size', '4', '--lr', '1e-3'),
  );
  t.equal(s1.code, 0, s1.err);
  t.match(s1.out, /\[train\] done: 3\/3 steps/);
  t.equal(logRecords(out1).length, 3);
  t.ok(fs.existsSync(path.join(out1, 'mm_projector.safetensors')));
  t.ok(fs.existsSync(path.join(out1, 'checkpoint-3', 'trainer_state.json')));

  const out2 = path.join(tmp, 'stage2');
  const stage2 = (...extra: string[]): string[] =>
    trainArgs({ output: out2 }, ...plain, '--max-steps', '3', '--batch-size', '4', '--grad-accum', '2', ...extra);
  const s2 = llava(...stage2('--pretrain-mm-mlp-adapter', path.join(out1, 'mm_projector.safetensors'), '--max-grad-norm', '1'));
  t.equal(s2.code, 0, s2.err);
  t.match(s2.out, /projector loaded from/);
  const lines = logRecords(out2);
  t.equal(lines.length, 3, 'train_log.jsonl has 3 lines');
  t.same(
    lines.map((l) => l.step),
    [1, 2, 3],
  );
  t.ok(lines.every((l) => Number.isFinite(l.loss) && Number.isFinite(l.lr) && l.tokens_per_s > 0 && l.grad_norm > 0));
  for (const f of [
    'checkpoint-3/model.safetensors',
    'checkpoint-3/optimizer.safetensors',
    'checkpoint-3/trainer_state.json',
    'model.safetensors',
    'config.json',
    'loss.png',
  ])
    t.ok(fs.existsSync(path.join(out2, f)), `${f} written`);

  // A finished run has nothing left to do: the resume says so and fails, and writes no model.
  const model2 = path.join(out2, 'model.safetensors');
  const before = fs.statSync(model2).mtimeMs;
  const again = llava(...stage2('--resume'));
  t.not(again.code, 0, 'a resume with no step left fails');
  t.match(again.out, /resumed from .*checkpoint-3 at step 3\/3/);
  t.match(again.err, /nothing to train: the run is already at step 3 of its 3-step schedule .*give a longer schedule/);
  t.equal(fs.statSync(model2).mtimeMs, before, 'model.safetensors untouched');
  const bad = llava(...trainArgs({ output: path.join(tmp, 'empty') }, ...plain, '--max-steps', '3', '--resume'));
  t.not(bad.code, 0);
  t.match(bad.err, /--resume: no checkpoint found/);
});

/** `llava` started in the background, with its output collected. */
function llavaBackground(...args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, FORCE_COLOR: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const r = { child, out: '', err: '', exited: null as Promise<number | null> | null };
  child.stdout.on('data', (d) => (r.out += d));
  child.stderr.on('data', (d) => (r.err += d));
  r.exited = new Promise((res) => child.on('exit', (code) => res(code)));
  return r;
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const logLines = (out: string): number =>
  fs.existsSync(path.join(out, 'train_log.jsonl'))
    ? fs
        .readFileSync(path.join(out, 'train_log.jsonl'), 'utf8')
        .split('\n')
        .filter((l) => l.trim()).length
    : 0;

/** Starts `llava train` into `out` in the background and, once a step is logged, hands the run to `fn`;
 *  a run still going when `fn` returns (or throws) is killed. */
async function duringTraining<T>(out: string, args: string[], fn: (run: ReturnType<typeof llavaBackground>) => Promise<T>): Promise<T> {
  const run = llavaBackground(...args);
  try {
    await waitFor(() => logLines(out) > 0 || run.child.exitCode !== null, 100_000, 'the first logged step');
    return await fn(run);
  } finally {
    if (run.child.exitCode === null) run.child.kill('SIGKILL');
  }
}

/** Starts a long finetune run into `out`, sends `signal` once a step is logged; the exit code and output. */
function interruptTraining(out: string, signal: NodeJS.Signals, extra: string[] = []) {
  const args = trainArgs({ output: out }, '--max-steps', '100000', '--batch-size', '2', ...extra, '--progress', 'none');
  return duringTraining(out, args, async (run) => {
    run.child.kill(signal);
    const code = await run.exited;
    return Object.assign(run, { code });
  });
}

t.test('train: Ctrl-C finishes the step, saves a checkpoint, prints the resume command, exits 130', async (t) => {
  const out = path.join(tmp, 'sigint');
  const run = await interruptTraining(out, 'SIGINT', ['--lr', '1e-4']);
  t.equal(run.code, 130, run.err);
  t.match(run.err, /\[train\] SIGINT: finishing the current optimizer step, then saving a checkpoint/);
  const n = logLines(out);
  t.match(run.out, new RegExp(`\\[train\\] stopped by SIGINT at step ${n}/100000; checkpoint .*checkpoint-${n}`));
  t.ok(fs.existsSync(path.join(out, `checkpoint-${n}`, 'optimizer.safetensors')), `checkpoint-${n} saved`);
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'no final model');
  const cmd = /\[train\] to resume: (.*)/.exec(run.out)?.[1] ?? '';
  // (`npx llava` when npx started the command, as it started this test)
  t.match(cmd, /^(npx )?llava train --stage finetune --model .* --output .*sigint .*--max-steps 100000 --batch-size 2 .*--resume$/);
  // the printed command resumes (here with a shorter schedule typed after it)
  const words = cmd.split(' ');
  const again = llava(...words.slice(words.indexOf('train')), '--max-steps', String(n + 1));
  t.equal(again.code, 0, again.err);
  t.match(again.out, new RegExp(`resumed from .*checkpoint-${n} at step ${n}/${n + 1}`));
  t.match(again.out, new RegExp(`done: ${n + 1}/${n + 1} steps`));
});

t.test('train: SIGTERM stops the same way (exit 143)', async (t) => {
  const out = path.join(tmp, 'sigterm');
  const run = await interruptTraining(out, 'SIGTERM');
  t.equal(run.code, 143, run.err);
  const n = logLines(out);
  t.ok(fs.existsSync(path.join(out, `checkpoint-${n}`, 'trainer_state.json')), `checkpoint-${n} saved`);
  t.match(run.out, /\[train\] to resume: .*--resume/);
  // As if the run had been started with --max-steps n+2: a bare --resume (no schedule, no batch flags)
  // continues with the checkpoint's schedule and batch sizes.
  const stateFile = path.join(out, `checkpoint-${n}`, 'trainer_state.json');
  const st = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  fs.writeFileSync(stateFile, JSON.stringify({ ...st, totalSteps: n + 2, options: { ...st.options, maxSteps: n + 2 } }));
  const again = llava(...trainArgs({ output: out }, '--progress', 'none', '--resume'));
  t.equal(again.code, 0, again.err);
  t.match(again.out, /--resume: as the checkpoint was trained \(flags override\): .*maxSteps \d+.*microBatch 2, gradAccum 1/);
  t.match(again.out, new RegExp(`done: ${n + 2}/${n + 2} steps, loss \\d`));
});

t.test('train: a second Ctrl-C exits at once', async (t) => {
  // 140 samples in one optimizer step of 140 micro-batches: a step long enough to signal twice inside it
  const recs = JSON.parse(fs.readFileSync(demo.finetuneJson, 'utf8')) as { id: string }[];
  const big = path.join(tmp, 'big.json');
  fs.writeFileSync(big, JSON.stringify(Array.from({ length: 10 }, (_, k) => recs.map((r) => ({ ...r, id: `${r.id}-${k}` }))).flat()));
  const out = path.join(tmp, 'sigint2');
  const args = trainArgs({ data: big, output: out }, '--max-steps', '1000', '--micro-batch-size', '1', '--grad-accum', '140', '--progress', 'none');
  const run = await duringTraining(out, args, async (run) => {
    run.child.kill('SIGINT');
    await waitFor(() => /finishing the current optimizer step/.test(run.err) || run.child.exitCode !== null, 20_000, 'the first signal');
    run.child.kill('SIGINT');
    t.equal(await run.exited, 130);
    return run;
  });
  t.match(run.err, /SIGINT again: exiting now/);
  t.notMatch(run.out, /to resume/, 'no checkpoint was waited for');
  t.equal(logLines(out), 1, 'the step under way was not finished');
});

t.test('train: a non-empty --output needs --resume or --overwrite-output; --save-total-limit; the small-data start line', async (t) => {
  const out = path.join(tmp, 'stage2');
  const args = trainArgs({ output: out }, '--progress', 'none');
  const refused = llava(...args, '--max-steps', '1');
  t.not(refused.code, 0);
  t.match(
    refused.err,
    /output directory .*stage2 is not empty \(checkpoint-3, .*\): pass --resume to continue the run in it, --overwrite-output to delete/,
  );
  const over = llava(...args, '--max-steps', '2', '--save-steps', '1', '--save-total-limit', '0', '--overwrite-output');
  t.equal(over.code, 0, over.err);
  t.match(over.out, /--overwrite-output: removed 1 checkpoint folder\(s\) and \d+ file\(s\)/);
  t.match(over.out, /global batch 128 = 4 x 32, but the data set has only 14 samples: each step takes all 14 \(4 micro-batches of up to 4\)/);
  t.same(
    fs
      .readdirSync(out)
      .filter((f) => f.startsWith('checkpoint-'))
      .sort(),
    ['checkpoint-1', 'checkpoint-2'],
    "the old run's checkpoint-3 is gone; --save-total-limit 0 keeps all",
  );
  t.equal(logLines(out), 2);
  const both = llava(...args, '--resume', '--overwrite-output');
  t.not(both.code, 0);
  t.match(both.err, /--resume and --overwrite-output contradict each other/);
});
