// `llava serve` (lib/app/serve/server.ts) on the tiny LLaVA fixture, the answers: the HTTP API against
// generateText on the same prompt (ids and text), /health and /v1/models, streaming, usage, max_tokens, stop
// strings, seeded sampling, images sent as data URIs (PNG, JPEG, WebP and GIF) against the decoded image passed directly,
// system messages and history. The decode batch, client aborts, every error path, shutdown and the CLI are
// tested in serve_service.test.ts; the request and prompt pieces alone (lib/app/serve/protocol.ts) in
// protocol.test.ts; the shared server and request helpers are in serve_helpers.ts.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { encode as encodeJpeg } from 'jpeg-js';
import * as L from '../../../lib';
import { encodePrompt } from '../../../lib/app/inference/generate';
import { buildPrompt } from '../../../lib/app/processing/conversation';
import { decodeImage } from '../../../lib/app/processing/image';
import { createServer, MAX_TOKENS_CAP } from '../../../lib/app/serve/server';
import { TEST_DIR } from '../../helpers';
import { Q, chat, dataUri, dir, expectError, expected, png0, png1, request, server, sseEvents, useServer, userImage } from './serve_helpers';

useServer();

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
  tt.same(r.json.usage, {
    prompt_tokens: g.promptLength,
    completion_tokens: g.ids.length,
    total_tokens: g.promptLength + g.ids.length,
    prompt_tokens_details: { cached_tokens: 0 },
  });
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

t.test('images via WebP and GIF data URIs', async (tt) => {
  for (const [file, mime] of [
    ['webp_alpha.webp', 'image/webp'],
    ['gif_inset_transparent.gif', 'image/gif'],
  ]) {
    const bytes = fs.readFileSync(path.join(TEST_DIR, 'fixtures', 'images', file));
    const r = await chat({ messages: [userImage(Q, dataUri(bytes, mime))], temperature: 0, max_tokens: 8, return_token_ids: true });
    tt.equal(r.status, 200, r.text);
    const g = await expected(buildPrompt('llava_hf', Q, { image: true }), { image: bytes, maxNewTokens: 8 });
    tt.same(r.json.choices[0].token_ids, g.ids, file);
  }
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

t.test('n choices: choice i is the reply seeded with seed + i; usage counts the prompt once and every choice', async (tt) => {
  const body = { messages: [userImage(Q, dataUri(png0))], temperature: 1, top_p: 0.9, seed: 1234, max_tokens: 12, n: 3, return_token_ids: true };
  const r = await chat(body);
  tt.equal(r.status, 200);
  tt.equal(r.json.choices.length, 3);
  const prompt = buildPrompt('llava_hf', Q, { image: true });
  let tokens = 0;
  for (let i = 0; i < 3; i++) {
    const g = await expected(prompt, { image: png0, maxNewTokens: 12, temperature: 1, topP: 0.9, seed: 1234 + i });
    const c = r.json.choices[i];
    tt.equal(c.index, i);
    tt.same(c.token_ids, g.ids, `choice ${i}: generateText with seed ${1234 + i}`);
    tt.equal(c.message.content, g.text);
    tt.equal(c.finish_reason, g.finishReason === 'length' ? 'length' : 'stop');
    tokens += g.ids.length;
  }
  tt.notSame(r.json.choices[0].token_ids, r.json.choices[1].token_ids, 'the choices differ');
  tt.equal(r.json.usage.completion_tokens, tokens, 'completion_tokens: every choice');
  const one = await chat({ ...body, n: 1 });
  tt.equal(r.json.usage.prompt_tokens, one.json.usage.prompt_tokens, 'prompt_tokens: the prompt once');
  tt.equal(r.json.usage.total_tokens, r.json.usage.prompt_tokens + tokens);
  tt.same(one.json.choices[0].token_ids, r.json.choices[0].token_ids, 'choice 0 is the n = 1 reply');
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
