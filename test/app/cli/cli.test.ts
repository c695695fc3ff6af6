// The `llava` command (lib/app/cli/main.ts), run as a child process like a user would: --help on every
// subcommand, preprocess (text and --json), clear errors with a non-zero exit code, a tiny `train` run
// (--max-steps 3 -> 3 log lines and a checkpoint), stage 2 from the stage-1 projector, and --resume.
// In process: the train flags built from the option table, and which values count as typed.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
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
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' }, timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

t.test('--help on every command', async (t) => {
  const top = llava('--help');
  t.equal(top.code, 0);
  for (const c of ['train', 'chat', 'verify', 'preprocess', 'serve', 'eval', 'gen-data', 'collect-data', 'export-prompts']) t.match(top.out, new RegExp(`\\b${c}\\b`));
  const train = llava('train', '--help');
  t.equal(train.code, 0);
  for (const o of ['--stage', '--model', '--data', '--image-folder', '--output', '--template', '--preset', '--lr', '--epochs', '--max-steps', '--batch-size', '--grad-accum', '--max-length', '--device', '--dtype', '--seed', '--resume', '--pretrain-mm-mlp-adapter'])
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
  const cases: [string[], RegExp][] = [
    [['preprocess', '--model', FIX, '--data', path.join(tmp, 'nope.json'), '--index', '0'], /data file .*nope\.json not found/],
    [['preprocess', '--model', FIX, '--data', demo.finetuneJson, '--index', 'abc'], /'--index <i>' argument 'abc' is invalid/],
    [['preprocess', '--model', FIX, '--data', demo.finetuneJson, '--index', '99'], /--index 99 out of range: .* has 14 records/],
    [['preprocess', '--model', FIX, '--data', demo.finetuneJson, '--index', '0', '--template', 'nonsense'], /unknown template 'nonsense'/],
    [['preprocess', '--model', path.join(tmp, 'nomodel'), '--data', demo.finetuneJson, '--index', '0'], /model directory .* not found/],
    [['train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson, '--image-folder', demo.imageFolder, '--output', path.join(tmp, 'x'), '--lr', 'fast'], /'--lr <lr>' argument 'fast' is invalid/],
    [['train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson, '--image-folder', demo.imageFolder, '--output', path.join(tmp, 'x'), '--max-steps', '-3'], /--max-steps.* is invalid/],
    [['train', '--stage', 'stage3', '--model', FIX, '--data', demo.finetuneJson, '--image-folder', demo.imageFolder, '--output', path.join(tmp, 'x')], /unknown stage 'stage3'/],
    [['train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson, '--image-folder', path.join(tmp, 'noimg'), '--output', path.join(tmp, 'x')], /image folder .* not found/],
    [['train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson, '--image-folder', demo.imageFolder, '--output', path.join(tmp, 'x'), '--batch-size', '10', '--micro-batch-size', '4'], /not divisible/],
    [['train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson, '--image-folder', demo.imageFolder], /required option '--output <dir>'/],
  ];
  for (const [args, re] of cases) {
    const r = llava(...args);
    t.not(r.code, 0, `exit code for ${args.slice(0, 1)} ${re}`);
    t.match(r.err, re);
  }
});

t.test('train: --max-steps 3 writes 3 log lines and a checkpoint; stage 2 from the projector; resume', async (t) => {
  const out1 = path.join(tmp, 'stage1');
  const common = ['--model', FIX, '--image-folder', demo.imageFolder, '--progress', 'plain'];
  const s1 = llava('train', '--stage', 'pretrain', ...common, '--data', demo.pretrainJson, '--output', out1, '--max-steps', '3', '--batch-size', '4', '--lr', '1e-3');
  t.equal(s1.code, 0, s1.err);
  t.match(s1.out, /\[train\] done: 3\/3 steps/);
  t.equal(fs.readFileSync(path.join(out1, 'train_log.jsonl'), 'utf8').trim().split('\n').length, 3);
  t.ok(fs.existsSync(path.join(out1, 'mm_projector.safetensors')));
  t.ok(fs.existsSync(path.join(out1, 'checkpoint-3', 'trainer_state.json')));

  const out2 = path.join(tmp, 'stage2');
  const s2 = llava('train', '--stage', 'finetune', ...common, '--data', demo.finetuneJson, '--output', out2, '--max-steps', '3', '--batch-size', '4', '--grad-accum', '2', '--pretrain-mm-mlp-adapter', path.join(out1, 'mm_projector.safetensors'), '--max-grad-norm', '1');
  t.equal(s2.code, 0, s2.err);
  t.match(s2.out, /projector loaded from/);
  const lines = fs.readFileSync(path.join(out2, 'train_log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines.length, 3, 'train_log.jsonl has 3 lines');
  t.same(lines.map((l: { step: number }) => l.step), [1, 2, 3]);
  t.ok(lines.every((l: Record<string, number>) => Number.isFinite(l.loss) && Number.isFinite(l.lr) && l.tokens_per_s > 0 && l.grad_norm > 0));
  for (const f of ['checkpoint-3/model.safetensors', 'checkpoint-3/optimizer.safetensors', 'checkpoint-3/trainer_state.json', 'model.safetensors', 'config.json', 'loss.png'])
    t.ok(fs.existsSync(path.join(out2, f)), `${f} written`);

  const again = llava('train', '--stage', 'finetune', ...common, '--data', demo.finetuneJson, '--output', out2, '--max-steps', '3', '--batch-size', '4', '--grad-accum', '2', '--resume');
  t.equal(again.code, 0, again.err);
  t.match(again.out, /resumed from .*checkpoint-3 at step 3\/3/);
  const bad = llava('train', '--stage', 'finetune', ...common, '--data', demo.finetuneJson, '--output', path.join(tmp, 'empty'), '--max-steps', '3', '--resume');
  t.not(bad.code, 0);
  t.match(bad.err, /--resume: no checkpoint found/);
});
