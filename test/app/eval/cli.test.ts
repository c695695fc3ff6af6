// `llava eval` (lib/app/cli/eval.ts): every command through registerEvalCommands — sqa-convert, sqa-score,
// sqa-answer and bench-answer on the tiny fixture model, bench-review against a local chat-completions mock,
// bench-summary — and their errors: one-line messages and exit code 1, commander usage errors.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { Command, CommanderError } from 'commander';
import { convertScienceQA } from '../../../lib/app/eval/index';
import { registerEvalCommands } from '../../../lib/app/cli/eval';
import {
  FIX,
  G4_GPT4,
  G4_OURS,
  G4_PROBLEMS,
  G4_REQUERY,
  G4_SPLITS,
  PREDS,
  PROBLEMS,
  SPLITS,
  WILD_CTX,
  mockServer,
  readLines,
  tempDir,
} from './fixtures';

const { tmp, tmpFile } = tempDir(t);

function cli(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const codes: number[] = [];
  const program = new Command('llava').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerEvalCommands(program, { out: (s) => out.push(s), err: (s) => err.push(s), setExitCode: (c) => codes.push(c), env });
  return {
    run: (...args: string[]) => program.parseAsync(['eval', ...args], { from: 'user' }),
    get out() {
      return out.join('');
    },
    get err() {
      return err.join('');
    },
    codes,
  };
}

t.test('eval CLI: every command', async (t) => {
  // ScienceQA folder
  const base = path.join(tmp, 'scienceqa');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'problems.json'), JSON.stringify(PROBLEMS));
  fs.writeFileSync(path.join(base, 'pid_splits.json'), JSON.stringify(SPLITS));

  let c = cli();
  await c.run('sqa-convert', '--base-dir', base, '--split', 'test', '--prompt-format', 'CQM-A');
  t.same(c.codes, [], c.err);
  const conv = path.join(base, 'llava_test_CQM-A.json');
  t.match(c.out, /Number of samples: 7/);
  t.same(JSON.parse(fs.readFileSync(conv, 'utf8')), convertScienceQA(PROBLEMS, SPLITS, 'test', { input: 'CQM', output: 'A' }));
  t.match(fs.readFileSync(conv, 'utf8'), /^\[\n {2}\{\n {4}"id": "p1",\n {4}"image": "p1\/i\.png",/, 'indent-2 layout');

  const answers = tmpFile('sqa_answers.jsonl');
  fs.writeFileSync(answers, PREDS.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const resultJson = tmpFile('sqa_result.json');
  const analysisJson = tmpFile('sqa_analysis.json');
  c = cli();
  await c.run('sqa-score', '--base-dir', base, '--result-file', answers, '--output-result', resultJson, '--output-file', analysisJson);
  t.same(c.codes, [], c.err);
  t.match(c.out, /^Total: 7, Correct: 3, Accuracy: 42\.86%, IMG-Accuracy: 100\.00%\n/);
  t.same(JSON.parse(fs.readFileSync(resultJson, 'utf8')).results, { p1: 0, p2: 1, p3: -1, p4: 0, p5: -1, p6: 3, p7: -1 });
  t.equal(JSON.parse(fs.readFileSync(analysisJson, 'utf8')).correct.length, 3);
  c = cli();
  await c.run('sqa-score', '--base-dir', base, '--result-file', answers, '--json');
  t.equal(JSON.parse(c.out).categories['G1-6'], 50);

  // sqa-answer on the fixture: ScienceQA records whose images sit in the fixture folder.
  const qfile = tmpFile('sqa_questions.json');
  fs.writeFileSync(
    qfile,
    JSON.stringify([
      {
        id: 'a',
        image: 'image1.png',
        conversations: [
          { from: 'human', value: 'Question: What?\nOptions: (A) x (B) y\n<image>' },
          { from: 'gpt', value: 'A' },
        ],
      },
      {
        id: 'b',
        conversations: [
          { from: 'human', value: 'Question: Why?' },
          { from: 'gpt', value: 'B' },
        ],
      },
    ]),
  );
  const sqaOut = tmpFile('sqa_out.jsonl');
  const answerArgs = ['--model', FIX, '--image-folder', FIX, '--max-new-tokens', '3', '--progress', 'none'];
  c = cli();
  await c.run('sqa-answer', ...answerArgs, '--questions', qfile, '--answers-file', sqaOut, '--single-pred-prompt');
  t.same(c.codes, [], c.err);
  t.match(c.out, /done: 2 answered, 0 already there, 2 in total/);
  t.same(
    readLines(sqaOut).map((l) => l.question_id),
    ['a', 'b'],
  );
  c = cli();
  await c.run('sqa-answer', ...answerArgs, '--questions', qfile, '--answers-file', sqaOut, '--single-pred-prompt');
  t.match(c.out, /done: 0 answered, 2 already there/);
  const sqaBatched = tmpFile('sqa_batched.jsonl');
  c = cli();
  await c.run('sqa-answer', ...answerArgs, '--questions', qfile, '--answers-file', sqaBatched, '--single-pred-prompt', '--batch-size', '2');
  t.same(
    readLines(sqaBatched).map((l) => [l.question_id, l.text]),
    readLines(sqaOut).map((l) => [l.question_id, l.text]),
    '--batch-size 2 writes the same answers',
  );

  // bench-answer
  const bq = tmpFile('questions.jsonl');
  fs.writeFileSync(
    bq,
    [
      { question_id: 0, image: 'image0.png', text: 'What is this?', category: 'conv' },
      { question_id: 1, image: 'image1.png', text: 'Describe it.', category: 'detail' },
    ]
      .map((q) => JSON.stringify(q))
      .join('\n') + '\n',
  );
  const bOut = tmpFile('bench_answers.jsonl');
  c = cli();
  await c.run('bench-answer', ...answerArgs, '--questions', bq, '--answers-file', bOut, '--template', 'vicuna_v1');
  t.same(c.codes, [], c.err);
  t.match(c.out, /template vicuna_v1/);
  t.same(
    readLines(bOut).map((l) => [l.question_id, l.prompt]),
    [
      [0, 'What is this?'],
      [1, 'Describe it.'],
    ],
  );

  // bench-review against the mock server
  const ctx = tmpFile('context.jsonl');
  fs.writeFileSync(ctx, JSON.stringify({ ...WILD_CTX, image: 'image0.png' }) + '\n' + JSON.stringify({ ...WILD_CTX, image: 'image1.png' }) + '\n');
  const refFile = tmpFile('answers_gpt4.jsonl');
  fs.writeFileSync(
    refFile,
    readLines(bOut)
      .map((a) => JSON.stringify({ ...a, text: 'reference', answer_id: `g${a.question_id}` }))
      .join('\n') + '\n',
  );
  const m = await mockServer((n) => (n === 0 ? [502, 'bad gateway'] : [200, n === 1 ? '8 6\nok' : '10 5\nok']));
  t.teardown(() => m.close());
  fs.mkdirSync(path.join(tmp, 'reviews'));
  const reviews = path.join(tmp, 'reviews', 'review_wild.jsonl');
  const reviewArgs = [
    '--benchmark',
    'wild',
    '--questions',
    bq,
    '--context',
    ctx,
    '--reference',
    refFile,
    '--answers',
    bOut,
    '--output',
    reviews,
    '--concurrency',
    '1',
    '--progress',
    'none',
  ];
  c = cli({ OPENAI_API_KEY: 'sk-env', OPENAI_BASE_URL: m.url });
  await c.run('bench-review', ...reviewArgs);
  t.same(c.codes, [], c.err);
  t.match(c.err, /retry 1 in .*HTTP 502: bad gateway/);
  t.match(c.out, /done: 2 reviewed, 0 already there, 2 in total/);
  t.equal(m.requests[0].headers.authorization, 'Bearer sk-env');
  t.same(
    readLines(reviews).map((l) => [l.category, l.tuple, l.answer1_id]),
    [
      ['llava_bench_conv', [8, 6], 'g0'],
      ['llava_bench_detail', [10, 5], 'g1'],
    ],
  );
  c = cli();
  await c.run('bench-review', ...reviewArgs.slice(0, -4), '--output', tmpFile('r.jsonl'), '--progress', 'none');
  t.same(c.codes, [1], 'no key: exit code 1');
  t.match(c.err, /^llava eval bench-review: error: \[openai\] no API key: set OPENAI_API_KEY or pass --api-key/);
  c = cli();
  await c.run('bench-review', ...reviewArgs, '--api-key', 'k', '--base-url', m.url);
  t.match(c.out, /2 already there/, 'resumed: nothing left');

  // bench-summary
  c = cli();
  await c.run('bench-summary', reviews);
  t.same(c.codes, [], c.err);
  t.equal(
    c.out,
    'review_wild\nall 61.1 90.0 55.0\nllava_bench_conv 75.0 80.0 60.0\nllava_bench_detail 50.0 100.0 50.0\n=================================\n',
  );
  c = cli();
  await c.run('bench-summary', '--dir', path.dirname(reviews), '--json', '--ignore', '1');
  const js = JSON.parse(c.out);
  t.same(Object.keys(js), ['review_wild']);
  t.same(
    js.review_wild.map((r: { category: string }) => r.category),
    ['all', 'llava_bench_conv'],
    '--ignore 1 drops the detail review',
  );
  c = cli();
  await c.run('bench-summary', '--dir', path.join(tmp, 'scienceqa'));
  t.same(c.codes, [1]);
  t.match(c.err, /no review files/);

  // Errors: clear one-line messages and exit code 1; commander usage errors throw under exitOverride.
  const bad: [string[], RegExp][] = [
    [['sqa-score', '--base-dir', base, '--result-file', path.join(tmp, 'nope.jsonl')], /answers file .*nope\.jsonl not found/],
    [['sqa-score', '--base-dir', base, '--result-file', answers, '--split', 'dev'], /split 'dev' is not in pid_splits\.json/],
    [['sqa-convert', '--base-dir', base, '--prompt-format', 'QCM'], /must look like INPUT-OUTPUT/],
    [['bench-answer', ...answerArgs, '--questions', bq, '--answers-file', tmpFile('a.jsonl'), '--template', 'bogus'], /unknown template 'bogus'/],
    [
      ['bench-answer', ...answerArgs, '--questions', bq, '--answers-file', tmpFile('a.jsonl'), '--num-chunks', '2', '--chunk-idx', '2'],
      /--chunk-idx 2 must be below --num-chunks 2/,
    ],
    [
      ['sqa-answer', '--model', path.join(tmp, 'nomodel'), '--image-folder', FIX, '--questions', qfile, '--answers-file', tmpFile('a.jsonl')],
      /model directory .* not found/,
    ],
    [['sqa-answer', ...answerArgs, '--questions', bq, '--answers-file', tmpFile('a.jsonl')], /malformed JSON/],
  ];
  for (const [args, re] of bad) {
    c = cli();
    await c.run(...args);
    t.same(c.codes, [1], `exit code: ${args[0]} ${re}`);
    t.match(c.err, re);
    t.match(c.err, new RegExp(`^llava eval ${args[0]}: error: `));
  }
  c = cli();
  await t.rejects(c.run('bench-review', '--benchmark', 'mars'), CommanderError);
  t.match(c.err, /argument 'mars' is invalid/);
  c = cli();
  await t.rejects(c.run('bench-answer', '--model', FIX), CommanderError);
  t.match(c.err, /required option/);
  c = cli();
  await t.rejects(c.run('bench-answer', ...answerArgs, '--questions', bq, '--answers-file', 'x', '--temperature', 'hot'), CommanderError);
  t.match(c.err, /'--temperature <t>' argument 'hot' is invalid/);
  c = cli();
  await t.rejects(c.run('--help'), CommanderError);
  for (const cmd of ['sqa-convert', 'sqa-answer', 'sqa-score', 'sqa-gpt4', 'bench-answer', 'bench-review', 'bench-summary']) t.match(c.out, cmd);
});

t.test('eval sqa-gpt4: the complement and judge ensembles from files', async (t) => {
  const base = path.join(tmp, 'scienceqa-gpt4');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'problems.json'), JSON.stringify(G4_PROBLEMS));
  fs.writeFileSync(path.join(base, 'pid_splits.json'), JSON.stringify(G4_SPLITS));
  const jsonl = (name: string, recs: object[]) => {
    const f = tmpFile(name);
    fs.writeFileSync(f, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
    return f;
  };
  const ours = jsonl('ours.jsonl', G4_OURS);
  const requery = jsonl('requery.jsonl', G4_REQUERY);
  const gpt4 = tmpFile('gpt4.json');
  fs.writeFileSync(gpt4, JSON.stringify({ acc: 0, outputs: G4_GPT4 }));
  const args = ['--base-dir', base, '--gpt4-result', gpt4, '--our-result', ours];

  let c = cli();
  await c.run('sqa-gpt4', ...args);
  t.same(c.codes, []);
  t.match(c.out, /^Total: 5, GPT-4-OursVisual-Correct \(complement\): 3, Accuracy: 60\.00%$/m);
  const result = tmpFile('result.json');
  c = cli();
  await c.run('sqa-gpt4', ...args, '--split', 'both', '--requery-result', requery, '--output-result', result, '--json');
  const scores = JSON.parse(c.out);
  t.equal(scores.judge, 4);
  t.equal(scores.complement, 3);
  t.notOk('results' in scores, 'the per-problem map goes to --output-result only');
  t.same(JSON.parse(fs.readFileSync(result, 'utf8')), { acc: 80, correct: 4, count: 5, results: { g1: 0, g2: 1, g3: 0, g4: 0, g5: 1 }, outputs: {} });

  const bad: [string[], RegExp][] = [
    [[...args, '--requery-result', requery], /problem g6 of the split has no answer from GPT-4/],
    [['--base-dir', base, '--gpt4-result', ours, '--our-result', ours], /GPT-4 result file .*: .*JSON/],
    [['--base-dir', base, '--gpt4-result', requery.replace('requery', 'none'), '--our-result', ours], /GPT-4 result file .* not found/],
    [[...args, '--split', 'dev'], /split 'dev' is not in pid_splits\.json/],
  ];
  const notOutputs = tmpFile('not-outputs.json');
  fs.writeFileSync(notOutputs, JSON.stringify({ results: {} }));
  bad.push([['--base-dir', base, '--gpt4-result', notOutputs, '--our-result', ours], /needs an "outputs" object/]);
  for (const [a, re] of bad) {
    c = cli();
    await c.run('sqa-gpt4', ...a);
    t.same(c.codes, [1], `exit code: ${re}`);
    t.match(c.err, re);
    t.match(c.err, /^llava eval sqa-gpt4: error: /);
  }
});
