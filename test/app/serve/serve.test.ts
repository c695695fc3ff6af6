// `llava serve` (lib/app/serve/server.ts, lib/app/cli/serve.ts) on the tiny LLaVA fixture: the HTTP API against
// generateText on the same prompt (ids and text), streaming, usage, max_tokens, stop strings, images sent as
// data URIs (PNG and JPEG) against the decoded image passed directly, system messages and history, the
// serial queue under concurrent requests, client aborts, every error path, shutdown, and the CLI. The request
// and prompt pieces alone (lib/app/serve/protocol.ts) are tested in protocol.test.ts.
import t from 'tap';
import type { Test } from 'tap';
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';
import { spawn } from 'child_process';
import { Command } from 'commander';
import { encode as encodeJpeg } from 'jpeg-js';
import * as L from '../../../lib';
import { Tensor } from '../../../lib/core/tensor';
import { generateText, encodePrompt, GenerateOptions } from '../../../lib/app/inference/generate';
import { buildPrompt } from '../../../lib/app/processing/conversation';
import { CLIPImageProcessor, decodeImage } from '../../../lib/app/processing/image';
import { createServer, startServer, LlavaServer, MAX_TOKENS_CAP } from '../../../lib/app/serve/server';
import { registerServeCommand } from '../../../lib/app/cli/serve';
import { TEST_DIR } from '../../helpers';

const ROOT = path.join(TEST_DIR, '..');
const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const png0 = fs.readFileSync(path.join(dir, 'image0.png'));
const png1 = fs.readFileSync(path.join(dir, 'image1.png'));
const dataUri = (b: Buffer, mime = 'image/png'): string => `data:${mime};base64,${b.toString('base64')}`;
const Q = 'What is unusual about this image?';

let server: LlavaServer;
let base = '';
const logs: string[] = [];

t.before(async () => {
  server = createServer({ model: dir, log: (l) => logs.push(l) });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
t.teardown(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  await server.llava.shutdown();
});

// ---------------------------------------------------------------------------------------------------------
// helpers

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

function request(method: string, p: string, body?: unknown, o: { raw?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = o.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const req = http.request(base + p, { method, headers: { 'Content-Type': 'application/json', ...(o.headers ?? {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown = undefined;
        try {
          json = JSON.parse(text);
        } catch {
          // SSE or empty
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

const chat = (body: Record<string, unknown>) => request('POST', '/v1/chat/completions', body);

/** Data payloads of an SSE body, in order ('[DONE]' kept as a string). */
function sseEvents(text: string): any[] {
  const out: unknown[] = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    if (!block.startsWith('data: ')) throw new Error(`not an SSE data event: ${JSON.stringify(block)}`);
    const d = block.slice(6);
    out.push(d === '[DONE]' ? d : JSON.parse(d));
  }
  return out;
}

const userImage = (text: string, uri: string) => ({
  role: 'user',
  content: [
    { type: 'text', text },
    { type: 'image_url', image_url: { url: uri } },
  ],
});

/** Reference generation with the server's own model (called only while the server is idle). */
async function expected(prompt: string, o: Partial<GenerateOptions> & { image?: Buffer } = {}) {
  const { image, ...rest } = o;
  let pix: Tensor | null = null;
  if (image) {
    const pv = CLIPImageProcessor.fromDir(dir).preprocess(image);
    pix = L.keep(L.tensor(pv.pixelValues, { shape: [1, ...pv.shape] }));
  }
  try {
    const { model, tokenizer } = server.llava;
    return await generateText(model, tokenizer, { promptIds: encodePrompt(model, tokenizer, prompt), pixelValues: pix, temperature: 0, ...rest });
  } finally {
    pix?.dispose();
  }
}

function expectError(tt: Test, r: Reply, status: number, re: RegExp, code?: string, param?: string | null): void {
  tt.equal(r.status, status, `status ${status} (${r.text.slice(0, 200)})`);
  tt.match(r.headers['content-type'] ?? '', /application\/json/);
  tt.ok(r.json && typeof r.json.error === 'object', 'OpenAI error body');
  tt.match(r.json?.error?.message ?? '', re);
  tt.ok(typeof r.json?.error?.type === 'string');
  tt.ok('param' in (r.json?.error ?? {}) && 'code' in (r.json?.error ?? {}), 'param and code present');
  if (code !== undefined) tt.equal(r.json?.error?.code, code, `code ${code}`);
  if (param !== undefined) tt.equal(r.json?.error?.param, param, `param ${param}`);
}

const waitFor = async (cond: () => boolean, ms = 10_000): Promise<void> => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
};

// ---------------------------------------------------------------------------------------------------------
// the API

t.test('GET /health and /v1/models', async (tt) => {
  const h = await request('GET', '/health');
  tt.equal(h.status, 200);
  tt.match(h.json, { status: 'ok', model: 'tiny-llava', device: 'cpu', dtype: 'float32', template: 'llava_hf' });
  const m = await request('GET', '/v1/models');
  tt.equal(m.status, 200);
  tt.same(m.json.object, 'list');
  tt.equal(m.json.data.length, 1);
  tt.match(m.json.data[0], { id: 'tiny-llava', object: 'model' });
  tt.match((await request('GET', '/v1/models/tiny-llava')).json, { id: 'tiny-llava' });
  expectError(tt, await request('GET', '/v1/models/gpt-4'), 404, /does not exist/, 'model_not_found');
  tt.equal((await request('HEAD', '/health')).status, 200, 'HEAD works on GET routes');
});

t.test('greedy text-only completion equals generateText (ids, text, usage)', async (tt) => {
  const before = L.memory().numTensors;
  const r = await chat({
    model: 'whatever',
    messages: [{ role: 'user', content: 'Describe a traffic light.' }],
    temperature: 0,
    max_tokens: 12,
    return_token_ids: true,
  });
  tt.equal(r.status, 200, r.text);
  const prompt = buildPrompt('llava_hf', 'Describe a traffic light.');
  const g = await expected(prompt, { maxNewTokens: 12 });
  tt.match(r.json, { object: 'chat.completion', model: 'tiny-llava' });
  tt.match(r.json.id, /^chatcmpl-/);
  tt.ok(Number.isInteger(r.json.created));
  const c = r.json.choices[0];
  tt.equal(r.json.choices.length, 1);
  tt.equal(c.index, 0);
  tt.equal(c.message.role, 'assistant');
  tt.equal(c.message.content, g.text, 'text');
  tt.same(c.token_ids, g.ids, 'ids');
  tt.same(r.json.prompt_token_ids, encodePrompt(server.llava.model, server.llava.tokenizer, prompt), 'prompt ids');
  tt.equal(c.finish_reason, g.finishReason === 'length' ? 'length' : 'stop');
  tt.same(r.json.usage, { prompt_tokens: g.promptLength, completion_tokens: g.ids.length, total_tokens: g.promptLength + g.ids.length });
  tt.equal(L.memory().numTensors, before, 'no tensors leak');
});

t.test('image via a PNG data URI equals the decoded image passed directly', async (tt) => {
  for (const [name, png] of [
    ['image0', png0],
    ['image1', png1],
  ] as const) {
    const r = await chat({ messages: [userImage(Q, dataUri(png))], temperature: 0, max_tokens: 10, return_token_ids: true });
    tt.equal(r.status, 200, r.text);
    const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png, maxNewTokens: 10 });
    tt.equal(r.json.choices[0].message.content, g.text, `${name} text`);
    tt.same(r.json.choices[0].token_ids, g.ids, `${name} ids`);
    tt.equal(r.json.usage.prompt_tokens, g.promptLength, 'prompt tokens include the 16 image tokens');
  }
  // image part first, text after, and image_url as a bare string: same prompt (image goes first anyway)
  const r2 = await chat({
    messages: [
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: dataUri(png0) },
          { type: 'text', text: Q },
        ],
      },
    ],
    temperature: 0,
    max_tokens: 10,
  });
  const g2 = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png0, maxNewTokens: 10 });
  tt.equal(r2.json.choices[0].message.content, g2.text, 'part order does not matter');
  const other = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png1, maxNewTokens: 10 });
  tt.notSame(other.ids, g2.ids, 'the image matters (sanity)');
});

t.test('image via a JPEG data URI', async (tt) => {
  const img = decodeImage(png0);
  const rgba = Buffer.alloc(img.width * img.height * 4);
  for (let i = 0; i < img.width * img.height; i++) {
    rgba[i * 4] = img.data[i * 3];
    rgba[i * 4 + 1] = img.data[i * 3 + 1];
    rgba[i * 4 + 2] = img.data[i * 3 + 2];
    rgba[i * 4 + 3] = 255;
  }
  const jpg = Buffer.from(encodeJpeg({ data: rgba, width: img.width, height: img.height }, 95).data);
  const r = await chat({ messages: [userImage(Q, dataUri(jpg, 'image/jpeg'))], temperature: 0, max_tokens: 8, return_token_ids: true });
  tt.equal(r.status, 200, r.text);
  const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: jpg, maxNewTokens: 8 });
  tt.same(r.json.choices[0].token_ids, g.ids);
});

t.test('streaming: chunks join to the non-streamed content, usage, [DONE]', async (tt) => {
  const body = { messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 20 };
  const plain = await chat(body);
  const s = await chat({ ...body, stream: true, stream_options: { include_usage: true } });
  tt.equal(s.status, 200);
  tt.match(s.headers['content-type'] ?? '', /text\/event-stream/);
  const ev = sseEvents(s.text);
  tt.equal(ev[ev.length - 1], '[DONE]', 'ends with [DONE]');
  const chunks = ev.slice(0, -1);
  tt.ok(
    chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id && c.model === 'tiny-llava'),
    'chunk objects, one id',
  );
  tt.same(chunks[0].choices[0].delta, { role: 'assistant', content: '' }, 'first chunk carries the role');
  const usageChunk = chunks[chunks.length - 1];
  tt.same(usageChunk.choices, [], 'usage chunk has no choices');
  tt.same(usageChunk.usage, plain.json.usage, 'usage matches the non-streamed request');
  const finishChunk = chunks[chunks.length - 2];
  tt.equal(finishChunk.choices[0].finish_reason, plain.json.choices[0].finish_reason);
  tt.same(finishChunk.choices[0].delta, {});
  const content = chunks
    .slice(0, -2)
    .map((c) => c.choices[0].delta.content ?? '')
    .join('');
  tt.equal(content, plain.json.choices[0].message.content, 'deltas concatenate to the content');
  tt.ok(chunks.slice(1, -2).length > 1, 'several content chunks');
  tt.ok(chunks.slice(0, -2).every((c) => c.choices[0].finish_reason === null));
  // without include_usage: no usage chunk
  const s2 = sseEvents((await chat({ ...body, stream: true })).text);
  tt.notOk(
    s2.some((c) => c !== '[DONE]' && 'usage' in c),
    'no usage chunk unless asked',
  );
  tt.equal(s2[s2.length - 2].choices[0].finish_reason, plain.json.choices[0].finish_reason);
});

t.test("max_tokens: finish_reason 'length' with exactly that many tokens; the context caps it", async (tt) => {
  for (const n of [1, 3, 7]) {
    const r = await chat({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: n, return_token_ids: true });
    tt.equal(r.json.choices[0].finish_reason, 'length', `max_tokens ${n}`);
    tt.equal(r.json.usage.completion_tokens, n);
    tt.equal(r.json.choices[0].token_ids.length, n);
    const s = sseEvents(
      (await chat({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: n, stream: true, stream_options: { include_usage: true } }))
        .text,
    );
    tt.equal(s[s.length - 2].usage.completion_tokens, n, 'streamed usage');
    tt.equal(s[s.length - 3].choices[0].finish_reason, 'length');
  }
  // 5000 asked: capped at min(1024, context − prompt); the tiny context (512) is the binding cap
  const r = await chat({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 5000 });
  tt.equal(r.status, 200);
  const room = server.llava.contextLength - r.json.usage.prompt_tokens;
  tt.ok(r.json.usage.completion_tokens <= Math.min(MAX_TOKENS_CAP, room), `${r.json.usage.completion_tokens} <= ${room}`);
  tt.equal(r.json.choices[0].finish_reason, 'length', 'the tiny model runs on to the cap');
  tt.equal(r.json.usage.completion_tokens, room, 'ran to context − prompt');
  tt.equal(r.json.usage.total_tokens, r.json.usage.prompt_tokens + r.json.usage.completion_tokens);
});

t.test('stop strings end the reply, are removed, and give finish_reason stop', async (tt) => {
  const msgs = [userImage(Q, dataUri(png0))];
  const free = await chat({ messages: msgs, temperature: 0, max_tokens: 16 });
  const text: string = free.json.choices[0].message.content;
  tt.ok(text.length > 8, `reply ${JSON.stringify(text)}`);
  const stop = text.slice(5, 8);
  const r = await chat({ messages: msgs, temperature: 0, max_tokens: 16, stop, return_token_ids: true });
  const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png0, maxNewTokens: 16, stop: [stop] });
  tt.equal(g.finishReason, 'stop');
  tt.equal(r.json.choices[0].finish_reason, 'stop');
  tt.equal(r.json.choices[0].message.content, g.text);
  tt.same(r.json.choices[0].token_ids, g.ids);
  tt.equal(r.json.choices[0].message.content, text.slice(0, text.indexOf(stop)).trim(), 'text before the first occurrence');
  const s = sseEvents((await chat({ messages: msgs, temperature: 0, max_tokens: 16, stop: ['zzzz', stop], stream: true })).text);
  const streamed = s
    .slice(0, -2)
    .map((c) => c.choices[0].delta.content ?? '')
    .join('');
  tt.equal(streamed, g.text, 'streamed text stops too');
  tt.equal(s[s.length - 2].choices[0].finish_reason, 'stop');
});

t.test('seeded sampling is reproducible and matches generateText', async (tt) => {
  const body = { messages: [userImage(Q, dataUri(png0))], temperature: 1, top_p: 0.9, seed: 1234, max_tokens: 12, return_token_ids: true };
  const a = await chat(body);
  const b = await chat(body);
  tt.same(a.json.choices[0].token_ids, b.json.choices[0].token_ids, 'same seed, same ids');
  const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png0, maxNewTokens: 12, temperature: 1, topP: 0.9, seed: 1234 });
  tt.same(a.json.choices[0].token_ids, g.ids, 'same as generateText with that seed');
  const greedy = await chat({ ...body, temperature: 0 });
  tt.notSame(a.json.choices[0].token_ids, greedy.json.choices[0].token_ids, 'sampling differs from greedy');
  const k1 = await chat({ ...body, top_k: 1, top_p: undefined, temperature: 1.5 });
  tt.same(k1.json.choices[0].token_ids, greedy.json.choices[0].token_ids, 'top_k 1 (extension) is greedy');
});

t.test('system messages and history', async (tt) => {
  const r = await chat({
    messages: [
      { role: 'system', content: 'You are terse.' },
      userImage('What is it?', dataUri(png1)),
      { role: 'assistant', content: 'A shape.' },
      { role: 'user', content: 'What colour?' },
    ],
    temperature: 0,
    max_tokens: 6,
    return_token_ids: true,
  });
  tt.equal(r.status, 200, r.text);
  const prompt = 'You are terse. ' + buildPrompt('llava_hf', 'What colour?', { image: true, history: [['What is it?', 'A shape.']] });
  tt.same(
    r.json.prompt_token_ids,
    encodePrompt(server.llava.model, server.llava.tokenizer, prompt),
    'prompt: system + history + image in the first turn',
  );
  const g = await expected(prompt, { image: png1, maxNewTokens: 6 });
  tt.same(r.json.choices[0].token_ids, g.ids);

  // a template with a real system slot, on a second server sharing the model
  const s2 = createServer({ loaded: { model: server.llava.model, tokenizer: server.llava.tokenizer, dir }, template: 'vicuna_v1', log: () => {} });
  await new Promise<void>((res) => s2.listen(0, '127.0.0.1', res));
  const port = (s2.address() as { port: number }).port;
  try {
    const body = JSON.stringify({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
      ],
      temperature: 0,
      max_tokens: 2,
      return_token_ids: true,
    });
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
    });
    const j = (await res.json()) as { prompt_token_ids: number[] };
    tt.same(
      j.prompt_token_ids,
      encodePrompt(server.llava.model, server.llava.tokenizer, 'Be brief. USER: Hi ASSISTANT:'),
      'vicuna_v1: system replaced',
    );
    tt.equal(s2.llava.template, 'vicuna_v1');
  } finally {
    await new Promise<void>((res) => s2.close(() => res()));
    await s2.llava.shutdown();
  }
  tt.ok(server.llava.model.parameters()[0].dataSync().length > 0, 'a server given a loaded model does not dispose it');
});

t.test('concurrent requests are serialized and both answered correctly', async (tt) => {
  const prompt = buildPrompt('llava_hf', Q, { image: true });
  const g0 = await expected(prompt, { image: png0, maxNewTokens: 30 });
  const g1 = await expected(prompt, { image: png1, maxNewTokens: 30 });
  const mark = logs.length;
  let maxWaiting = 0;
  let polling = true;
  const poll = (): void => {
    maxWaiting = Math.max(maxWaiting, server.llava.stats().waiting);
    if (polling) setTimeout(poll, 1);
  };
  poll();
  const [a, b, c] = await Promise.all([
    chat({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 30, return_token_ids: true }),
    chat({ messages: [userImage(Q, dataUri(png1))], temperature: 0, max_tokens: 30, stream: true }),
    chat({ messages: [userImage(Q, dataUri(png1))], temperature: 0, max_tokens: 30, return_token_ids: true }),
  ]);
  tt.same(a.json.choices[0].token_ids, g0.ids, 'first answer');
  tt.same(c.json.choices[0].token_ids, g1.ids, 'third answer');
  const ev = sseEvents(b.text);
  tt.equal(
    ev
      .slice(0, -2)
      .map((x) => x.choices[0].delta.content ?? '')
      .join(''),
    g1.text,
    'second (streamed) answer',
  );
  polling = false;
  tt.equal(server.llava.stats().maxRunning, 1, 'never more than one generation at a time');
  tt.ok(maxWaiting >= 1, `requests waited in the queue (max ${maxWaiting} waiting)`);
  await waitFor(() => logs.length - mark >= 3);
  tt.equal(logs.length - mark, 3, 'one log line per request');
  tt.ok(
    logs.slice(mark).every((l) => /^\[serve\] POST \/v1\/chat\/completions 200 \d+ms prompt \d+ completion 30 finish length id=[\w-]+$/.test(l)),
    logs.slice(mark).join('\n'),
  );
});

t.test('a client that disconnects mid-stream stops its generation; the next request is fine', async (tt) => {
  const before = L.memory().numTensors;
  const stats0 = server.llava.stats();
  let timer: NodeJS.Timeout | undefined;
  const got = await new Promise<string>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error('no stream data')), 20_000);
    const req = http.request(base + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = '';
      res.on('data', (d) => {
        buf += d;
        if (buf.includes('"content":"') && buf.split('data: ').length > 3) {
          req.destroy();
          resolve(buf);
        }
      });
      res.on('error', () => {});
    });
    req.on('error', () => {});
    req.on('close', () => resolve(''));
    req.end(JSON.stringify({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 450, stream: true }));
  }).finally(() => clearTimeout(timer));
  tt.ok(got.length > 0, 'got some chunks before disconnecting');
  await waitFor(() => server.llava.stats().running === 0);
  tt.equal(server.llava.stats().aborted, stats0.aborted + 1, 'counted as aborted');
  tt.equal(server.llava.stats().completed, stats0.completed, 'not counted as completed');
  await waitFor(() => logs.some((l) => /client closed after \d+ tokens/.test(l)));
  const n = Number(/client closed after (\d+) tokens/.exec(logs.filter((l) => /client closed after/.test(l)).pop()!)![1]);
  tt.ok(n < 450, `stopped after ${n} of 450 tokens`);
  tt.equal(L.memory().numTensors, before, 'KV cache and image tensor freed');

  // aborted while waiting in the queue: skipped
  const long = chat({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 200 });
  await waitFor(() => server.llava.stats().running === 1);
  const queued = http.request(base + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' } });
  queued.on('error', () => {});
  queued.end(JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 5 }));
  await waitFor(() => server.llava.stats().waiting === 1);
  queued.destroy();
  tt.equal((await long).status, 200, 'the running request completes');
  await waitFor(() => server.llava.stats().aborted === stats0.aborted + 2);
  tt.ok(
    logs.some((l) => /client closed while queued/.test(l)),
    'logged as skipped',
  );

  const r = await chat({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 10, return_token_ids: true });
  const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png0, maxNewTokens: 10 });
  tt.same(r.json.choices[0].token_ids, g.ids, 'the next request gets the right answer');
  tt.equal(L.memory().numTensors, before);
});

t.test('error paths: status and OpenAI error JSON; the server keeps serving', async (tt) => {
  const raw = (s: string) => request('POST', '/v1/chat/completions', undefined, { raw: s });
  expectError(tt, await raw('{"messages": ['), 400, /not valid JSON/, 'invalid_json', null);
  expectError(tt, await raw(''), 400, /empty/, 'invalid_json');
  expectError(tt, await raw('[1,2]'), 400, /JSON object/);
  expectError(tt, await chat({ temperature: 0 }), 400, /'messages' is required/, 'missing_required_parameter', 'messages');
  expectError(tt, await chat({ messages: 'hi' }), 400, /must be an array/, 'invalid_type', 'messages');
  expectError(tt, await chat({ messages: [] }), 400, /must not be empty/, undefined, 'messages');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 5 }] }), 400, /string or an array/, 'invalid_type', 'messages[0].content');
  expectError(tt, await chat({ messages: [{ role: 'tool', content: 'x' }] }), 400, /not supported/, undefined, 'messages[0].role');
  expectError(tt, await chat({ messages: [{ role: 'assistant', content: 'x' }] }), 400, /expected a user message/);
  expectError(
    tt,
    await chat({
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
      ],
    }),
    400,
    /last message must come from the user/,
  );
  expectError(
    tt,
    await chat({
      messages: [
        { role: 'user', content: 'a' },
        { role: 'system', content: 'b' },
        { role: 'user', content: 'c' },
      ],
    }),
    400,
    /must come before/,
  );
  expectError(tt, await chat({ messages: [{ role: 'user', content: '' }] }), 400, /empty/);
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'look <image> here' }] }), 400, /<image>/);
  expectError(tt, await chat({ messages: [{ role: 'user', content: [{ type: 'input_audio' }] }] }), 400, /unsupported content part/);
  expectError(
    tt,
    await chat({ messages: [userImage(Q, 'http://example.com/cat.png')] }),
    400,
    /does not fetch http: URLs/,
    'invalid_image_url',
    'messages[0].content[1].image_url',
  );
  expectError(tt, await chat({ messages: [userImage(Q, 'file:///etc/hosts')] }), 400, /does not fetch file: URLs/, 'invalid_image_url');
  expectError(tt, await chat({ messages: [userImage(Q, 'data:image/gif;base64,R0lGODlh')] }), 400, /unsupported image type/);
  expectError(
    tt,
    await chat({ messages: [userImage(Q, dataUri(Buffer.from('definitely not a png')))] }),
    400,
    /cannot read the image/,
    'invalid_image',
  );
  expectError(tt, await chat({ messages: [userImage(Q, dataUri(png0.subarray(0, 200)))] }), 400, /cannot read the image/, 'invalid_image');
  const two = {
    role: 'user',
    content: [
      { type: 'text', text: Q },
      { type: 'image_url', image_url: { url: dataUri(png0) } },
      { type: 'image_url', image_url: { url: dataUri(png1) } },
    ],
  };
  expectError(tt, await chat({ messages: [two] }), 400, /2 images .* at most one image/, 'too_many_images', 'messages[0].content[2]');
  expectError(
    tt,
    await chat({ messages: [userImage('a', dataUri(png0)), { role: 'assistant', content: 'b' }, userImage('c', dataUri(png1))] }),
    400,
    /at most one image|first user message/,
  );
  expectError(
    tt,
    await chat({ messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, userImage('c', dataUri(png1))] }),
    400,
    /first user message/,
  );
  expectError(
    tt,
    await chat({ messages: [{ role: 'user', content: 'x' }], temperature: 'hot' }),
    400,
    /'temperature' must be a number/,
    'invalid_type',
    'temperature',
  );
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], temperature: 3 }), 400, /<= 2/, undefined, 'temperature');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], max_tokens: 0 }), 400, /max_tokens/, undefined, 'max_tokens');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], max_tokens: 2.5 }), 400, /integer/);
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], stream: 'yes' }), 400, /boolean/, undefined, 'stream');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], stop: [1] }), 400, /stop\[0\]/, undefined, 'stop');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], model: 7 }), 400, /'model' must be a string/);
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], n: 2 }), 400, /'n' is not supported/, 'unsupported_parameter', 'n');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }), 400, /tool/);
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], logprobs: true }), 400, /logprobs/);
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'word '.repeat(2000) }] }), 400, /context holds 512/, 'context_length_exceeded');
  tt.equal(
    (
      await chat({
        messages: [{ role: 'user', content: 'x' }],
        max_tokens: 1,
        n: 1,
        logprobs: false,
        frequency_penalty: 0,
        user: 'u',
        unknown_field: { a: 1 },
      })
    ).status,
    200,
    'harmless and default-valued fields are accepted',
  );

  // body size limit (20 MiB): declared by Content-Length, and chunked without a length
  const big = Buffer.alloc(21 * 1024 * 1024, 0x20);
  expectError(tt, await request('POST', '/v1/chat/completions', undefined, { raw: big }), 413, /larger than/, 'request_too_large');
  const chunked = await new Promise<Reply>((resolve, reject) => {
    const req = http.request(
      base + '/v1/chat/completions',
      { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    for (let i = 0; i < 21; i++) req.write(Buffer.alloc(1024 * 1024, 0x20));
    req.end();
  });
  expectError(tt, chunked, 413, /larger than/, 'request_too_large');

  // routes and methods
  expectError(tt, await request('GET', '/v1/completions'), 404, /unknown route/, 'not_found');
  expectError(tt, await request('POST', '/nothing/here', {}), 404, /unknown route/);
  const wrong = await request('GET', '/v1/chat/completions');
  expectError(tt, wrong, 405, /not allowed/, 'method_not_allowed');
  tt.equal(wrong.headers.allow, 'POST');
  const wrong2 = await request('DELETE', '/health');
  expectError(tt, wrong2, 405, /not allowed/);
  tt.equal(wrong2.headers.allow, 'GET, HEAD');

  // a malformed HTTP request line gets a 400 and the server lives on
  const net = await import('net');
  const rawReply = await new Promise<string>((resolve) => {
    const sock = net.connect(Number(new URL(base).port), '127.0.0.1', () => sock.write('THIS IS NOT HTTP\r\n\r\n'));
    let s = '';
    sock.on('data', (d) => (s += d));
    sock.on('close', () => resolve(s));
    sock.on('error', () => resolve(s));
  });
  tt.match(rawReply, /^HTTP\/1\.1 400/);

  tt.equal((await request('GET', '/health')).status, 200, 'still serving');
  const r = await chat({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 5, return_token_ids: true });
  const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png0, maxNewTokens: 5 });
  tt.same(r.json.choices[0].token_ids, g.ids, 'and still answering correctly');
});

t.test('startServer: listens on an ephemeral port; close() ends a running stream and stops listening', async (tt) => {
  const lines: string[] = [];
  const s = await startServer({ loaded: { model: server.llava.model, tokenizer: server.llava.tokenizer, dir }, port: 0, log: (l) => lines.push(l) });
  tt.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  tt.ok(s.port > 0);
  const h = (await (await fetch(s.url + '/health')).json()) as { status: string };
  tt.equal(h.status, 'ok');
  const streamDone = new Promise<string>((resolve) => {
    const req = http.request(s.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = '';
      res.on('data', (d) => (buf += d));
      res.on('end', () => resolve(buf));
      res.on('error', () => resolve(buf));
      res.on('close', () => resolve(buf));
    });
    req.on('error', () => resolve(''));
    req.end(JSON.stringify({ messages: [{ role: 'user', content: 'Go on.' }], temperature: 0, max_tokens: 450, stream: true }));
  });
  await waitFor(() => s.server.llava.stats().running === 1);
  await s.close();
  const tail = await streamDone;
  tt.match(tail, /"code":"server_shutting_down"[^]*data: \[DONE\]\n\n$/, 'the stream ends with a shutdown error event and [DONE]');
  tt.equal(s.server.llava.stats().running, 0, 'generation stopped');
  tt.equal(s.server.listening, false, 'not listening');
  await tt.rejects(fetch(s.url + '/health'), 'connection refused after close');
  tt.ok(server.llava.model.parameters()[0].dataSync().length > 0, 'the shared model is still alive');
});

// ---------------------------------------------------------------------------------------------------------
// CLI

async function runServeCli(args: string[]): Promise<{ err: string; code: number | undefined; thrown?: Error }> {
  const program = new Command('llava').exitOverride();
  let err = '';
  program.configureOutput({ writeErr: (s) => (err += s), writeOut: () => {} });
  registerServeCommand(program);
  program.commands.forEach((c) => c.exitOverride().configureOutput({ writeErr: (s) => (err += s), writeOut: () => {} }));
  const write = process.stderr.write.bind(process.stderr);
  const saved = process.exitCode;
  process.exitCode = undefined;
  (process.stderr as unknown as { write: (s: string) => boolean }).write = (s: string) => ((err += s), true);
  let thrown: Error | undefined;
  try {
    await program.parseAsync(['node', 'llava', 'serve', ...args]);
  } catch (e) {
    thrown = e as Error;
  } finally {
    (process.stderr as unknown as { write: typeof write }).write = write;
  }
  const code = process.exitCode as number | undefined;
  process.exitCode = saved;
  return { err, code, thrown };
}

t.test('serve command: argument validation', async (tt) => {
  const missing = await runServeCli(['--model', path.join(dir, 'nope')]);
  tt.equal(missing.code, 1);
  tt.match(missing.err, /^llava serve: error: model directory .*nope not found/m);
  const noConfig = await runServeCli(['--model', path.join(ROOT, 'test')]);
  tt.match(noConfig.err, /llava serve: error: model config .*config\.json not found/);
  const file = await runServeCli(['--model', path.join(dir, 'config.json')]);
  tt.match(file.err, /is not a directory/);
  const tpl = await runServeCli(['--model', dir, '--template', 'bogus']);
  tt.match(tpl.err, /unknown template 'bogus'/);
  tt.equal(tpl.code, 1);
  const vt = await runServeCli(['--model', dir, '--vision-tower', path.join(dir, 'nope')]);
  tt.match(vt.err, /vision tower directory .* not found/);
  const port = await runServeCli(['--model', dir, '--port', '70000']);
  tt.ok(port.thrown, 'commander rejects the port');
  tt.match(port.err, /--port.*between 0 and 65535/);
  const notInt = await runServeCli(['--model', dir, '--port', 'http']);
  tt.match(notInt.err, /not an integer/);
  const dev = await runServeCli(['--model', dir, '--device', 'tpu']);
  tt.match(dev.err, /Allowed choices are cpu, cuda/);
  const noModel = await runServeCli([]);
  tt.match(noModel.err, /required option '--model <dir>'/);
  if (!L.cuda.isAvailable()) {
    const cuda = await runServeCli(['--model', dir, '--device', 'cuda', '--port', '0']);
    tt.match(cuda.err, /CUDA is not available/);
  }
});

t.test('serve command: starts on port 0, prints the URL, answers, stops on SIGTERM', async (tt) => {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'lib', 'app', 'cli', 'serve.ts'), 'serve', '--model', dir, '--port', '0'],
    {
      cwd: ROOT,
      env: { ...process.env, FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  try {
    await waitFor(() => /listening on http:\/\/\S+/.test(out) || child.exitCode !== null, 50_000);
    const url = /listening on (http:\/\/[^\s]+)/.exec(out)?.[1];
    tt.ok(url, `printed the URL: ${out}${err}`);
    tt.match(out, /model tiny-llava, template llava_hf \(llava-hf format\), aspect square \(llava-hf processor: no padding\), cpu\/float32/);
    const h = (await (await fetch(url + '/health')).json()) as { status: string; model: string };
    tt.match(h, { status: 'ok', model: 'tiny-llava' });
    const r = (await (
      await fetch(url + '/v1/chat/completions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: [userImage(Q, dataUri(png0))], temperature: 0, max_tokens: 6 }),
      })
    ).json()) as { choices: { message: { content: string } }[] };
    const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: png0, maxNewTokens: 6 });
    tt.equal(r.choices[0].message.content, g.text, 'the CLI server answers like generateText');
    child.kill('SIGTERM');
    tt.equal(await exited, 0, 'clean exit on SIGTERM');
    tt.match(out, /llava serve: stopped/);
    tt.match(err, /\[serve\] POST \/v1\/chat\/completions 200 \d+ms prompt \d+ completion 6 finish length/, 'request log line on stderr');
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
