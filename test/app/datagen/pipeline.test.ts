// The GPT-assisted data run (lib/app/datagen/pipeline.ts, collect.ts, util/openai.ts; docs/reference.md §7):
// the fetch client against a local mock server (retries, fatal errors, missing key), the resumable concurrent
// run, JSONL -> JSON collection, streamed line reading and the dry run's Batch-API request lines.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import {
  ApiError,
  OpenAIChatClient,
  SYSTEM_MESSAGES,
  buildMessages,
  builtinPromptSet,
  cocoFromJson,
  collectInstructData,
  completedImageIds,
  forEachLine,
  generateInstructData,
  parseGptOutput,
  readGenerationJsonl,
  writeDryRun,
} from '../../../lib/app/datagen/index';
import type { ChatMessage, GenerationLine, GptDataType, ImageContextSource } from '../../../lib/app/datagen/index';
import { CONTEXT_42_BOXES, cocoJson, formatReply, ok, startMock, tempDir } from './fixtures';

const tmp = tempDir(t);

function synthImages(n: number): ImageContextSource[] {
  const { captions, instances } = cocoJson(n);
  return cocoFromJson(captions, instances).images.filter((i) => Number(i.imageId) >= 1000);
}

const quiet = (): void => {};

t.test('client: retries on 500 and 429, fails fast on 400, key handling', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const msgs: ChatMessage[] = [{ role: 'user', content: 'hi' }];
  t.throws(() => new OpenAIChatClient({ env: {}, baseUrl: mock.url }), /no API key: set OPENAI_API_KEY or pass --api-key/);
  const envClient = new OpenAIChatClient({ env: { OPENAI_API_KEY: 'env-key', OPENAI_BASE_URL: mock.url + '/' } });
  t.equal(envClient.url, `${mock.url}/chat/completions`, 'base URL from the environment');
  t.equal(envClient.model, 'gpt-4-0314', 'default model');

  mock.handler = (_b, n) =>
    n === 1
      ? { status: 500, body: 'oops' }
      : n === 2
        ? { status: 429, body: { error: { message: 'slow down' } }, headers: { 'retry-after': '0' } }
        : ok('fine');
  const r = await envClient.complete(msgs);
  t.equal(r.content, 'fine');
  t.equal(r.attempts, 3, '500, 429, then 200');
  t.equal(mock.requests.length, 3);
  t.equal(mock.requests[0].auth, 'Bearer env-key');
  t.same(mock.requests[0].body, { model: 'gpt-4-0314', messages: msgs }, 'no temperature sent unless set');

  const c = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url, model: 'm', temperature: 0.7, maxTokens: 50, maxRetries: 2, retryBaseMs: 1 });
  mock.requests.length = 0;
  mock.handler = () => ({ status: 503, body: { error: { message: 'overloaded' } } });
  await t.rejects(c.complete(msgs), /failed after 3 attempt\(s\): HTTP 503: overloaded/);
  t.equal(mock.requests.length, 3, 'maxRetries 2 -> 3 attempts');
  t.same(mock.requests[0].body, { model: 'm', messages: msgs, temperature: 0.7, max_tokens: 50 });
  mock.requests.length = 0;
  mock.handler = () => ({ status: 400, body: { error: { message: 'context too long' } } });
  const e400 = await c.complete(msgs).catch((e) => e);
  t.ok(e400 instanceof ApiError && !e400.fatal && e400.status === 400);
  t.match(e400.message, /^\[openai\] HTTP 400 .*: context too long/);
  t.equal(mock.requests.length, 1, '400 is not retried');
  mock.handler = () => ({ status: 401, body: { error: { message: 'bad key' } } });
  const e401 = await c.complete(msgs).catch((e) => e);
  t.ok(e401 instanceof ApiError && e401.fatal, '401 is fatal');
  mock.handler = () => ({ body: { choices: [] } });
  await t.rejects(c.complete(msgs), /no choices\[0\]\.message\.content/);
  // Network error (nothing listens): retried, then reported.
  const dead = new OpenAIChatClient({ apiKey: 'k', baseUrl: 'http://127.0.0.1:9/v1', maxRetries: 1, retryBaseMs: 1 });
  await t.rejects(dead.complete(msgs), /failed after 2 attempt\(s\)/);
});

t.test('client on the openai SDK: our wait before HTTP retries (Retry-After capped), onRetry, timeouts, typed errors mapped', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const msgs: ChatMessage[] = [{ role: 'user', content: 'hi' }];
  const retries: { attempt: number; delayMs: number; reason: string }[] = [];
  const c = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url, maxRetries: 3, retryBaseMs: 1, retryMaxMs: 30, onRetry: (i) => retries.push(i) });
  // An hour's Retry-After is capped at retryMaxMs (the SDK alone would sleep the hour); x-should-retry: false wins.
  mock.handler = (_b, n) =>
    n === 1
      ? { status: 429, body: { error: { message: 'later' } }, headers: { 'retry-after': '3600' } }
      : n === 2
        ? { status: 502, body: 'bad gw' }
        : ok('done');
  const t0 = Date.now();
  const r = await c.complete(msgs);
  t.equal(r.content, 'done');
  t.equal(r.attempts, 3);
  t.ok(Date.now() - t0 < 5000, `capped wait (${Date.now() - t0} ms)`);
  t.same(
    retries.map((x) => [x.attempt, x.reason]),
    [
      [1, 'HTTP 429: later'],
      [2, 'HTTP 502: bad gw'],
    ],
  );
  t.equal(retries[0].delayMs, 30, 'Retry-After capped at retryMaxMs');
  t.ok(retries[1].delayMs >= 1 && retries[1].delayMs <= 2, `backoff retryBaseMs * 2 * [0.5, 1] (${retries[1].delayMs})`);
  mock.handler = () => ({ status: 500, body: { error: { message: 'no' } }, headers: { 'x-should-retry': 'false' } });
  mock.requests.length = 0;
  await t.rejects(c.complete(msgs), /failed after 1 attempt\(s\): HTTP 500: no/);
  t.equal(mock.requests.length, 1, 'x-should-retry: false is obeyed');
  for (const [status, fatal] of [
    [403, true],
    [404, true],
    [422, false],
  ] as const) {
    mock.handler = () => ({ status, body: { error: { message: `status ${status}` } } });
    const e = await c.complete(msgs).catch((x) => x);
    t.ok(e instanceof ApiError && e.status === status && e.fatal === fatal, `${status}: fatal ${fatal}`);
    t.match(e.message, new RegExp(`^\\[openai\\] HTTP ${status} from ${mock.url}/chat/completions: status ${status}$`));
  }
  // A per-attempt timeout is retried and reported as one.
  mock.handler = () => ({ ...ok('late'), delayMs: 300 });
  const slow = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url, maxRetries: 0, timeoutMs: 50 });
  await t.rejects(slow.complete(msgs), /failed after 1 attempt\(s\): timed out after 50 ms/);
});

t.test('generate: concurrency limit, JSONL lines, resume, malformed outputs, retry-failed, fatal stop', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const images = synthImages(9);
  const out = path.join(tmp, 'gen', 'conversation.jsonl');
  const client = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url, maxRetries: 3, retryBaseMs: 1 });
  // Image 1004 answers garbage; the 3rd request overall gets a 500 first.
  mock.handler = (b, n) => {
    const ctx = b.messages[b.messages.length - 1].content;
    if (n === 3) return { status: 500, body: 'boom', delayMs: 5 };
    return { ...ok(ctx.includes('scene 1004') ? 'I cannot help with that.' : formatReply(b)), delayMs: 40 };
  };
  const s = await generateInstructData({ type: 'conversation', images, client, outJsonl: out, concurrency: 3, progress: 'none', log: quiet });
  t.equal(mock.maxInFlight, 3, 'never more than 3 requests in flight, and 3 used');
  t.equal(mock.requests.length, 10, '9 images + 1 retry');
  t.same([s.total, s.alreadyDone, s.completed, s.apiErrors.length], [9, 0, 9, 0]);
  t.same(s.parseErrors, [
    { type: 'conversation', imageId: '1004', reason: 'text before the first \'Question:\' label (line 1: "I cannot help with that.")' },
  ]);
  const { lines, bad } = readGenerationJsonl(out);
  t.equal(lines.length, 9);
  t.same(bad, []);
  const l1 = lines.find((l) => l.image_id === '1001') as GenerationLine;
  t.same(
    { ...l1, created: 'T', usage: null },
    {
      type: 'conversation',
      index: 4,
      image_id: '1001',
      id: '000000001001',
      image: '000000001001.jpg',
      model: 'mock-model',
      response: formatReply(mock.requests.find((r) => r.body.messages[2 * 2 + 1].content.includes('scene 1001'))!.body),
      finish_reason: 'stop',
      usage: null,
      record: {
        id: '000000001001',
        image: '000000001001.jpg',
        conversations: [
          { from: 'human', value: '<image>\nWhat is in scene 1001?' },
          { from: 'gpt', value: 'Shapes.' },
          { from: 'human', value: 'How many?' },
          { from: 'gpt', value: 'A few.' },
        ],
      },
      error: null,
      created: 'T',
    },
  );
  const bad1004 = lines.find((l) => l.image_id === '1004') as GenerationLine;
  t.equal(bad1004.record, null, 'malformed output kept with record = null');
  t.equal(bad1004.response, 'I cannot help with that.');
  t.match(bad1004.error, /text before the first 'Question:' label/);
  const req0 = mock.requests[0].body.messages;
  t.equal(req0.length, 6, 'conversation: system + 2 few-shot pairs + query');

  // Restart: nothing left to do (the malformed one counts as done).
  mock.requests.length = 0;
  const s2 = await generateInstructData({ type: 'conversation', images, client, outJsonl: out, concurrency: 3, progress: 'none', log: quiet });
  t.same([s2.alreadyDone, s2.completed, mock.requests.length], [9, 0, 0], 'resume skips every done id');
  t.same([...completedImageIds(lines, 'conversation')].sort(), images.map((i) => i.imageId).sort());
  t.same([...completedImageIds(lines, 'detail')], [], 'ids are per type');

  // --retry-failed asks only for 1004 again; now it answers properly; collect keeps the newest line.
  mock.handler = (b) => ok(formatReply(b));
  const s3 = await generateInstructData({ type: 'conversation', images, client, outJsonl: out, retryFailed: true, progress: 'none', log: quiet });
  t.same([s3.alreadyDone, s3.completed, mock.requests.length], [8, 1, 1]);
  t.match(mock.requests[0].body.messages[5].content, /scene 1004/);

  // Partial resume after a crash: 3 lines kept, the 4th cut in half.
  const partial = path.join(tmp, 'gen', 'partial.jsonl');
  const text = fs.readFileSync(out, 'utf8').split('\n');
  fs.writeFileSync(partial, text.slice(0, 3).join('\n') + '\n' + text[3].slice(0, 30));
  mock.requests.length = 0;
  const logs: string[] = [];
  const s4 = await generateInstructData({
    type: 'conversation',
    images,
    client,
    outJsonl: partial,
    concurrency: 2,
    progress: 'plain',
    log: (m) => logs.push(m),
  });
  t.same([s4.alreadyDone, s4.completed, mock.requests.length], [3, 6, 6], 'only the 6 missing images are asked');
  t.ok(
    logs.some((m) => /partial\.jsonl:4 ignored: not JSON/.test(m)),
    'partial line reported',
  );
  t.ok(
    logs.some((m) => /\[gen-data\] conversation 6\/6 \| failed 0/.test(m)),
    'plain progress lines',
  );
  const after = readGenerationJsonl(partial);
  t.equal(after.lines.length, 9, 'new lines start on a fresh line');
  t.equal(after.bad.length, 1);

  // A 401 stops everything and says so; what was answered before stays.
  const fatalOut = path.join(tmp, 'gen', 'fatal.jsonl');
  mock.handler = (b, n) => (n <= 1 ? ok(formatReply(b)) : { status: 401, body: { error: { message: 'invalid key' } } });
  mock.requests.length = 0;
  await t.rejects(
    generateInstructData({ type: 'conversation', images, client, outJsonl: fatalOut, concurrency: 1, progress: 'none', log: quiet }),
    /HTTP 401 .*invalid key \(stopped; 1 response\(s\) of this run saved in .*fatal\.jsonl, rerun to continue\)/,
  );
  t.equal(mock.requests.length, 2, 'no request after the fatal error');
  t.equal(readGenerationJsonl(fatalOut).lines.length, 1);

  // A non-fatal failure after the retries: reported, no line, asked again next time.
  const failOut = path.join(tmp, 'gen', 'fail.jsonl');
  mock.handler = (b) => (b.messages[5].content.includes('scene 1002') ? { status: 500, body: 'down' } : ok(formatReply(b)));
  const s5 = await generateInstructData({ type: 'conversation', images, client, outJsonl: failOut, progress: 'none', log: quiet });
  t.equal(s5.apiErrors.length, 1);
  t.match(s5.apiErrors[0], { imageId: '1002', reason: /failed after 4 attempt\(s\): HTTP 500/ });
  t.equal(readGenerationJsonl(failOut).lines.length, 8);
});

t.test('generate: detail and complex reasoning chats carry boxes and 3 examples', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const images = synthImages(2);
  const client = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url });
  for (const type of ['detail', 'complex_reasoning'] as const) {
    mock.requests.length = 0;
    const out = path.join(tmp, 'gen2', `${type}.jsonl`);
    const s = await generateInstructData({
      type,
      images,
      client,
      outJsonl: out,
      seed: 3,
      imagePrefix: 'coco/train2017/',
      progress: 'none',
      log: quiet,
    });
    t.same([s.completed, s.parseErrors.length], [2, 0]);
    const m = mock.requests[0].body.messages;
    t.equal(m.length, 8, `${type}: system + 3 pairs + query`);
    t.equal(m[0].content, SYSTEM_MESSAGES[type]);
    // 200x100 image, box [20, 10, 100, 50] -> [0.1, 0.1, 0.6, 0.6]
    t.match(m[7].content, /\n\nperson: \[0\.100, 0\.100, 0\.600, 0\.600\]$/);
    const recs = readGenerationJsonl(out).lines.map((l) => l.record!);
    t.equal(recs[0].image, 'coco/train2017/000000001000.jpg');
    t.equal(recs[0].conversations.length, 2, 'single turn');
    if (type === 'detail') {
      const q = parseGptOutput('detail', 'x', { id: 'a', image: 'b', imageId: '1000', seed: 3 });
      t.equal(recs[0].conversations[0].value, q.ok && q.value.conversations[0].value, 'question drawn per (seed, image), independent of order');
    }
  }
});

t.test('collect: JSONL -> LLaVA JSON array, ordered, newest line wins, failures listed', async (t) => {
  const dir = path.join(tmp, 'collect');
  fs.mkdirSync(dir, { recursive: true });
  const rec = (id: string, q: string): GenerationLine['record'] => ({
    id,
    image: `${id}.jpg`,
    conversations: [
      { from: 'human', value: `<image>\n${q}` },
      { from: 'gpt', value: 'A.' },
    ],
  });
  const line = (type: GptDataType, index: number, imageId: string, record: GenerationLine['record'], error: string | null = null): string =>
    JSON.stringify({
      type,
      index,
      image_id: imageId,
      id: imageId,
      image: `${imageId}.jpg`,
      model: 'm',
      response: 'r',
      finish_reason: 'stop',
      usage: null,
      record,
      error,
      created: 'T',
    });
  const a = path.join(dir, 'a.jsonl');
  fs.writeFileSync(
    a,
    [
      line('complex_reasoning', 2, '30', rec('30', 'third')),
      line('complex_reasoning', 0, '10', null, 'bad format'),
      line('complex_reasoning', 1, '20', rec('20', 'old')),
      '{"half a line',
      line('complex_reasoning', 1, '20', rec('20', 'second')),
      line('complex_reasoning', 0, '10', rec('10', 'first')),
      line('complex_reasoning', 3, '40', null, 'two pairs'),
      line('complex_reasoning', 4, '50', {
        id: '50',
        image: '50.jpg',
        conversations: [
          { from: 'human', value: 'no image tag' },
          { from: 'gpt', value: 'x' },
        ],
      }),
    ].join('\n') + '\n',
  );
  const b = path.join(dir, 'b.jsonl');
  fs.writeFileSync(b, line('detail', 0, '10', rec('10', 'detail q')) + '\n');
  const outFile = path.join(dir, 'llava_instruct_mix.json');
  const c = collectInstructData([a, b], outFile);
  t.same(
    c.records.map((r) => r.conversations[0].value),
    ['<image>\nfirst', '<image>\nsecond', '<image>\nthird', '<image>\ndetail q'],
  );
  t.same(c.failures, [{ type: 'complex_reasoning', imageId: '40', reason: 'two pairs' }]);
  t.equal(c.invalid.length, 1);
  t.match(c.invalid[0], { imageId: '50', reason: /<image>/ });
  t.equal(c.bad.length, 1);
  t.match(c.bad[0], { line: 4, reason: /not JSON/ });
  t.equal(fs.readFileSync(outFile, 'utf8'), JSON.stringify(c.records, null, 2) + '\n', 'the file is the JSON array, 2-space indent');
  collectInstructData([path.join(dir, 'b.jsonl')], path.join(dir, 'one.json'));
  t.same(JSON.parse(fs.readFileSync(path.join(dir, 'one.json'), 'utf8')), [rec('10', 'detail q')]);
  fs.writeFileSync(path.join(dir, 'empty.jsonl'), '');
  t.equal(fs.readFileSync(collectInstructData([path.join(dir, 'empty.jsonl')], path.join(dir, 'none.json')).outFile!, 'utf8'), '[]\n');
  t.throws(() => collectInstructData([path.join(dir, 'missing.jsonl')]), /not found/);
});

t.test('forEachLine: lines across 1 MiB read chunks, multi-byte characters, no final newline', async (t) => {
  const f = path.join(tmp, 'lines.txt');
  const want: string[] = [];
  for (let i = 0; want.join('\n').length < 2.5 * (1 << 20); i++) want.push(`${i} ${'é€😀x'.repeat(1 + (i % 700))}`);
  fs.writeFileSync(f, want.join('\n'));
  const got: string[] = [];
  const nums: number[] = [];
  forEachLine(f, (l, n) => {
    got.push(l);
    nums.push(n);
  });
  t.equal(got.length, want.length);
  t.ok(
    got.every((l, i) => l === want[i]),
    'every line intact',
  );
  t.equal(nums[nums.length - 1], want.length);
});

t.test('dry run: Batch-API request lines, no key needed', async (t) => {
  const { captions, instances } = cocoJson(0);
  const images = cocoFromJson(captions, instances).images;
  const f = path.join(tmp, 'dry', 'detail.prompts.jsonl');
  const r = writeDryRun({ type: 'detail', images, outFile: f, model: 'gpt-4o', temperature: 0.2 });
  t.equal(r.count, 2);
  const lines = fs
    .readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.equal(lines.length, 2);
  t.same(Object.keys(lines[0]), ['custom_id', 'method', 'url', 'body']);
  t.equal(lines[0].custom_id, 'detail-42');
  t.equal(lines[0].url, '/v1/chat/completions');
  t.equal(lines[0].body.model, 'gpt-4o');
  t.equal(lines[0].body.temperature, 0.2);
  t.same(lines[0].body.messages, buildMessages(builtinPromptSet('detail'), CONTEXT_42_BOXES));
  t.same(r.first, lines[0].body.messages);
});
