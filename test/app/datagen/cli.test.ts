// `llava gen-data`, `collect-data` and `export-prompts` (lib/app/cli/datagen.ts) end to end, run as a child
// process (asynchronously, so the mock chat-completions server in this process can answer): generation,
// resume, dry run, custom prompts, collection and the one-line errors.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { spawn } from 'child_process';
import { TEST_DIR } from '../../helpers';
import { CAPS_42, CONTEXT_42_BOXES, cocoJson, formatReply, ok, startMock, tempDir } from './fixtures';

const ROOT = path.join(TEST_DIR, '..');
const CLI = path.join(ROOT, 'lib', 'app', 'cli', 'datagen.ts');
const tmp = tempDir(t);

function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const e: NodeJS.ProcessEnv = { ...process.env, FORCE_COLOR: '0', OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined, ...env };
    for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
    const p = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: e });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

t.test('CLI: gen-data end to end, resume, dry run, collect-data, export-prompts, errors', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const dir = path.join(tmp, 'cli');
  fs.mkdirSync(dir, { recursive: true });
  const { captions, instances } = cocoJson(3);
  const capFile = path.join(dir, 'captions_train2017.json');
  const insFile = path.join(dir, 'instances_train2017.json');
  fs.writeFileSync(capFile, JSON.stringify(captions));
  fs.writeFileSync(insFile, JSON.stringify(instances));
  const out = path.join(dir, 'out');
  const env = { OPENAI_API_KEY: 'cli-key', OPENAI_BASE_URL: mock.url };

  const help = await cli(['gen-data', '--help']);
  t.equal(help.code, 0);
  for (const o of ['--type', '--captions', '--instances', '--out', '--limit', '--concurrency', '--model', '--dry-run', '--prompts-dir', '--seed'])
    t.match(help.out, o, `gen-data --help lists ${o}`);

  mock.handler = (b, n) => (n === 2 ? { status: 429, body: 'wait', headers: { 'retry-after': '0' } } : ok(formatReply(b)));
  const run = await cli(
    [
      'gen-data',
      '--type',
      'complex_reasoning',
      '--captions',
      capFile,
      '--instances',
      insFile,
      '--out',
      out,
      '--limit',
      '4',
      '--concurrency',
      '2',
      '--progress',
      'none',
      '--model',
      'gpt-test',
      '--retry-base-ms',
      '1',
    ],
    env,
  );
  t.equal(run.code, 0, run.err);
  t.match(run.out, /complex_reasoning: 4 image\(s\): 0 already done, 4 answered this run \(0 malformed\), 0 failed/);
  t.match(run.out, /wrote 4 record\(s\) to .*llava_instruct_complex_reasoning\.json/);
  t.equal(mock.requests.length, 5, '4 images + one 429 retry');
  t.equal(mock.requests[0].auth, 'Bearer cli-key');
  t.equal(mock.requests[0].body.model, 'gpt-test');
  const json = JSON.parse(fs.readFileSync(path.join(out, 'llava_instruct_complex_reasoning.json'), 'utf8'));
  t.same(
    json.map((r: { id: string }) => r.id),
    ['000000000042', '000000000007', '000000001000', '000000001001'],
    'captions-file order',
  );
  t.same(json[0].conversations, [
    { from: 'human', value: '<image>\nWhat is special about scene suit?' },
    { from: 'gpt', value: 'It is synthetic.' },
  ]);
  const ctx42 = mock.requests.map((r) => r.body.messages[7].content).find((c) => c.startsWith('A man in a suit'));
  t.equal(ctx42, CONTEXT_42_BOXES, 'the CLI sends the hand-computed context');

  // Rerun with a larger limit: only the new image is asked; one malformed answer is reported, exit 0.
  mock.requests.length = 0;
  mock.handler = () => ok('no idea');
  const more = await cli(
    [
      'gen-data',
      '--type',
      'complex_reasoning',
      '--captions',
      capFile,
      '--instances',
      insFile,
      '--out',
      out,
      '--limit',
      '5',
      '--progress',
      'none',
      '--model',
      'gpt-test',
    ],
    env,
  );
  t.equal(more.code, 0, more.err);
  t.equal(mock.requests.length, 1, 'resume: 4 done, 1 new');
  t.match(more.err, /\[gen-data\] image 1002: malformed output: text before the first 'Question:' label/);
  t.match(more.out, /5 image\(s\): 4 already done, 1 answered this run \(1 malformed\)/);
  t.match(more.out, /wrote 4 record\(s\) .*1 malformed output\(s\) left out/);

  // Dry run: no key, no request.
  mock.requests.length = 0;
  const dry = await cli(['gen-data', '--type', 'conversation', '--captions', capFile, '--out', out, '--dry-run', '--limit', '2', '--few-shot', '1']);
  t.equal(dry.code, 0, dry.err);
  t.equal(mock.requests.length, 0);
  t.match(dry.out, /^----- system -----\nYou are an AI visual assistant, and you are seeing a single image\./);
  t.match(dry.out, /dry run: 2 conversation prompt\(s\) \(1 few-shot examples, builtin\) written to .*conversation\.prompts\.jsonl/);
  const dl = fs
    .readFileSync(path.join(out, 'conversation.prompts.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.equal(dl.length, 2);
  t.equal(dl[0].body.messages.length, 4);
  t.equal(dl[0].body.messages[3].content, CAPS_42);

  // export-prompts, edit, use with --prompts-dir; then collect-data over two files.
  const pdir = path.join(dir, 'prompts');
  const ex = await cli(['export-prompts', '--out', pdir, '--type', 'detail']);
  t.equal(ex.code, 0, ex.err);
  t.ok(fs.existsSync(path.join(pdir, 'detail_description', '000_caps.txt')));
  fs.writeFileSync(path.join(pdir, 'detail_description', 'system_message.txt'), 'Describe it.\n');
  mock.requests.length = 0;
  mock.handler = (b) => ok(formatReply(b));
  const det = await cli(
    [
      'gen-data',
      '--type',
      'detail',
      '--captions',
      capFile,
      '--instances',
      insFile,
      '--out',
      out,
      '--prompts-dir',
      pdir,
      '--limit',
      '2',
      '--progress',
      'none',
    ],
    env,
  );
  t.equal(det.code, 0, det.err);
  t.equal(mock.requests[0].body.messages[0].content, 'Describe it.', 'system message from --prompts-dir');
  const merged = path.join(dir, 'llava_instruct_mix.json');
  const col = await cli(['collect-data', path.join(out, 'complex_reasoning.jsonl'), path.join(out, 'detail.jsonl'), '--out', merged]);
  t.equal(col.code, 0, col.err);
  t.match(col.out, /wrote 6 record\(s\) from 2 file\(s\)/);
  t.match(col.err, /complex_reasoning image 1002: malformed output left out/);
  t.equal(JSON.parse(fs.readFileSync(merged, 'utf8')).length, 6);

  // Errors: one line, exit 1.
  const cases: [string[], Record<string, string>, RegExp][] = [
    [
      ['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o2')],
      { OPENAI_BASE_URL: mock.url },
      /llava gen-data: error: \[openai\] no API key: set OPENAI_API_KEY/,
    ],
    [['gen-data', '--type', 'detail', '--captions', capFile, '--out', path.join(dir, 'o2')], env, /--instances is required for --type detail/],
    [['gen-data', '--type', 'captions', '--captions', capFile, '--out', path.join(dir, 'o2')], env, /argument 'captions' is invalid/],
    [
      ['gen-data', '--type', 'conversation', '--captions', path.join(dir, 'nope.json'), '--out', path.join(dir, 'o2')],
      env,
      /captions file .*nope\.json not found/,
    ],
    [
      ['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o2'), '--concurrency', '0'],
      env,
      /--concurrency <n>' argument '0' is invalid/,
    ],
    [['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o2'), '--offset', '50'], env, /no images selected/],
    [['collect-data', path.join(dir, 'none.jsonl'), '--out', merged], {}, /llava collect-data: error: JSONL file .* not found/],
  ];
  for (const [args, e, re] of cases) {
    const r = await cli(args, e);
    t.equal(r.code, 1, `exit 1 for ${re}`);
    t.match(r.err, re);
  }
  mock.handler = () => ({ status: 401, body: { error: { message: 'Incorrect API key provided' } } });
  const bad = await cli(['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o3'), '--progress', 'none'], env);
  t.equal(bad.code, 1);
  t.match(bad.err, /llava gen-data: error: \[openai\] HTTP 401 .*Incorrect API key provided \(stopped;/);
});
