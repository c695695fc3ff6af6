// `llava serve` through the official `openai` npm SDK (v6) on the tiny LLaVA fixture: models list and
// retrieve, chat completions with and without streaming and with an image, the SDK's typed errors, an
// abort mid-stream (the slot is freed, the server stays healthy), and the Responses API
// (lib/app/serve/responses.ts) with and without streaming, checked against chat completions on the same
// conversation (they share one prompt path) and against generateText. Raw-HTTP details of the Responses
// stream (event lines, no [DONE]) and its refusals are checked here too.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import OpenAI, { APIError, APIUserAbortError, AuthenticationError, BadRequestError, NotFoundError } from 'openai';
import * as L from '../../../lib';
import { Tensor } from '../../../lib/core/tensor';
import { generateText, encodePrompt } from '../../../lib/app/inference/generate';
import { buildPrompt } from '../../../lib/app/processing/conversation';
import { CLIPImageProcessor } from '../../../lib/app/processing/image';
import { startServer, type RunningServer } from '../../../lib/app/serve/server';
import { TEST_DIR } from '../../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const png0 = fs.readFileSync(path.join(dir, 'image0.png'));
const dataUri = (b: Buffer): string => `data:image/png;base64,${b.toString('base64')}`;
const Q = 'What is unusual about this image?';
const KEY = 'sk-local-test';

let srv: RunningServer;
let client: OpenAI;

t.before(async () => {
  // prefixCache 0: the tests check that requests leave no tensor behind (serve_service.test.ts tests the cache).
  srv = await startServer({ model: dir, host: '127.0.0.1', port: 0, apiKey: KEY, prefixCache: 0, log: () => {} });
  client = new OpenAI({ apiKey: KEY, baseURL: `${srv.url}/v1`, maxRetries: 0, timeout: 60_000 });
});
t.teardown(() => srv.close());

const stats = () => srv.server.llava.stats();
const waitFor = async (cond: () => boolean, ms = 10_000): Promise<void> => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** generateText on the server's own model (only while the server is idle). */
async function expected(prompt: string, maxNewTokens: number, image?: Buffer) {
  let pix: Tensor | null = null;
  if (image) {
    const pv = CLIPImageProcessor.fromDir(dir).preprocess(image);
    pix = L.keep(L.tensor(pv.pixelValues, { shape: [1, ...pv.shape] }));
  }
  try {
    const { model, tokenizer } = srv.server.llava;
    return await generateText(model, tokenizer, {
      promptIds: encodePrompt(model, tokenizer, prompt),
      pixelValues: pix,
      temperature: 0,
      maxNewTokens,
    });
  } finally {
    pix?.dispose();
  }
}

t.test('models.list and models.retrieve; an unknown model is a NotFoundError', async (tt) => {
  const ids: string[] = [];
  for await (const m of client.models.list()) ids.push(m.id);
  tt.same(ids, ['tiny-llava']);
  const m = await client.models.retrieve('tiny-llava');
  tt.match(m, { id: 'tiny-llava', object: 'model', owned_by: 'llava-node' });
  tt.ok(m.created > 1_500_000_000, 'a real created time');
  const e = await client.models.retrieve('gpt-4').catch((x) => x);
  tt.ok(e instanceof NotFoundError, 'NotFoundError');
  tt.equal(e.status, 404);
  tt.equal(e.code, 'model_not_found');
  tt.match(e.requestID, /^[0-9a-f-]{36}$/, 'the x-request-id header reaches the SDK');
});

t.test('chat.completions.create: plain, streamed (deltas join, usage) and with an image', async (tt) => {
  const before = L.memory().numTensors;
  const messages = [{ role: 'user' as const, content: 'Describe a traffic light.' }];
  const r = await client.chat.completions.create({ model: 'tiny-llava', messages, temperature: 0, max_tokens: 12 });
  const g = await expected(buildPrompt('llava_hf', 'Describe a traffic light.'), 12);
  tt.equal(r.object, 'chat.completion');
  tt.equal(r.choices[0].message.content, g.text, 'the text generateText gives');
  tt.same(r.usage, {
    prompt_tokens: g.promptLength,
    completion_tokens: g.ids.length,
    total_tokens: g.promptLength + g.ids.length,
    prompt_tokens_details: { cached_tokens: 0 },
  });

  const stream = await client.chat.completions.create({
    model: 'tiny-llava',
    messages,
    temperature: 0,
    max_tokens: 12,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish: string | null = null;
  let usage: unknown = null;
  for await (const chunk of stream) {
    tt.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
  }
  tt.equal(text, r.choices[0].message.content, 'stream deltas join to the non-streamed text');
  tt.equal(finish, r.choices[0].finish_reason);
  tt.same(usage, r.usage);

  const img = await client.chat.completions.create({
    model: 'tiny-llava',
    messages: [
      {
        role: 'user',
        content: [
          { type: 'text', text: Q },
          { type: 'image_url', image_url: { url: dataUri(png0) } },
        ],
      },
    ],
    temperature: 0,
    max_tokens: 10,
  });
  const gi = await expected(buildPrompt('llava_hf', Q, { image: true }), 10, png0);
  tt.equal(img.choices[0].message.content, gi.text, 'the image reaches the model');
  tt.equal(img.usage?.prompt_tokens, gi.promptLength, 'image rows counted in prompt_tokens');
  tt.equal(L.memory().numTensors, before, 'no tensors leak');
});

t.test('typed errors: AuthenticationError, BadRequestError (param and code)', async (tt) => {
  const wrong = new OpenAI({ apiKey: 'sk-wrong', baseURL: `${srv.url}/v1`, maxRetries: 0 });
  const a = await wrong.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }] }).catch((x) => x);
  tt.ok(a instanceof AuthenticationError, 'AuthenticationError');
  tt.equal(a.status, 401);
  tt.equal(a.code, 'invalid_api_key');
  const r = await wrong.responses.create({ model: 'x', input: 'hi' }).catch((x) => x);
  tt.ok(r instanceof AuthenticationError, '/v1/responses needs the key too');

  const b = await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }], temperature: 5 }).catch((x) => x);
  tt.ok(b instanceof BadRequestError, 'BadRequestError');
  tt.equal(b.param, 'temperature');
  tt.equal(b.code, 'invalid_value');
  tt.match(b.message, /'temperature' must be <= 2/);
  const lp = await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }], top_logprobs: 30 }).catch((x) => x);
  tt.ok(lp instanceof BadRequestError);
  tt.equal(lp.param, 'top_logprobs');
});

t.test('logprobs through the SDK: typed entries, plain and streamed', async (tt) => {
  const body = {
    model: 'x',
    messages: [{ role: 'user' as const, content: 'Say something.' }],
    temperature: 0,
    max_tokens: 5,
    logprobs: true,
    top_logprobs: 2,
  };
  const r = await client.chat.completions.create(body);
  const content = r.choices[0].logprobs?.content ?? [];
  tt.ok(content.length > 0, `${content.length} entries`);
  tt.ok(
    content.every((e) => e.logprob <= 0 && e.top_logprobs.length === 2 && e.top_logprobs[0].token === e.token && Array.isArray(e.bytes)),
    'each entry: logprob, bytes and two alternatives, the first the greedy token',
  );
  const stream = await client.chat.completions.create({ ...body, stream: true });
  const streamed: typeof content = [];
  for await (const c of stream) streamed.push(...(c.choices[0]?.logprobs?.content ?? []));
  tt.same(streamed, content, 'the stream carries the same entries');

  // the Responses API: include message.output_text.logprobs, the same numbers on the same conversation
  const req = { model: 'x', input: 'Say something.', temperature: 0, max_output_tokens: 5, top_logprobs: 2 };
  const resp = await client.responses.create({ ...req, include: ['message.output_text.logprobs'] });
  const part = (resp.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
  tt.equal(resp.top_logprobs, 2);
  tt.same(
    part.logprobs?.map((e) => [e.token, e.logprob]),
    content.map((e) => [e.token, e.logprob]),
    'Responses: the same tokens and log-probabilities as chat completions',
  );
  const rs = await client.responses.create({ ...req, include: ['message.output_text.logprobs'], stream: true });
  const deltas: unknown[] = [];
  for await (const ev of rs) if (ev.type === 'response.output_text.delta') deltas.push(...ev.logprobs);
  tt.same(deltas, part.logprobs, 'streamed deltas carry them too');
});

t.test('n choices through the SDK: streamed choices, told apart by index, join to the non-streamed ones', async (tt) => {
  const body = { model: 'x', messages: [{ role: 'user' as const, content: Q }], temperature: 1, seed: 99, max_tokens: 10, n: 2 };
  const whole = await client.chat.completions.create(body);
  tt.same(
    whole.choices.map((c) => c.index),
    [0, 1],
  );
  const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
  const text = ['', ''];
  const finish: (string | null)[] = [null, null];
  let usage: unknown = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text[c.index] += c.delta.content ?? '';
      finish[c.index] = c.finish_reason ?? finish[c.index];
    }
  }
  tt.same(
    text,
    whole.choices.map((c) => c.message.content),
    'each choice streams its own text',
  );
  tt.same(
    finish,
    whole.choices.map((c) => c.finish_reason),
  );
  tt.same(usage, whole.usage);
});

t.test('abort mid-stream with an AbortController: generation stops, the slot is freed, the server stays healthy', async (tt) => {
  const before = L.memory().numTensors;
  const s0 = stats();
  const ac = new AbortController();
  const stream = await client.chat.completions.create(
    { model: 'x', messages: [{ role: 'user', content: Q }], temperature: 0, max_tokens: 400, stream: true },
    { signal: ac.signal },
  );
  let chunks = 0;
  const err = await (async () => {
    for await (const _ of stream) if (++chunks === 3) ac.abort();
  })().catch((x) => x);
  tt.ok(err instanceof APIUserAbortError || err === undefined, `the loop ends on abort (${err})`);
  tt.equal(chunks, 3, 'no chunk after the abort');
  await waitFor(() => stats().running === 0 && stats().aborted === s0.aborted + 1);
  tt.equal(stats().completed, s0.completed, 'not counted as completed');
  tt.equal(L.memory().numTensors, before, 'KV cache freed');
  const ok = await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }], temperature: 0, max_tokens: 3 });
  tt.equal(ok.choices[0].finish_reason, 'length', 'the next request is served');
  tt.equal((await fetch(`${srv.url}/health`)).status, 200);
});

t.test('responses.create: same reply as chat completions on the same conversation; image; incomplete', async (tt) => {
  const before = L.memory().numTensors;
  const chat = await client.chat.completions.create({
    model: 'x',
    messages: [
      { role: 'system', content: 'Answer briefly.' },
      { role: 'user', content: 'Describe a traffic light.' },
    ],
    temperature: 0,
    max_tokens: 12,
  });
  const r = await client.responses.create({
    model: 'x',
    instructions: 'Answer briefly.',
    input: 'Describe a traffic light.',
    temperature: 0,
    max_output_tokens: 12,
    metadata: { run: 'sdk-test' },
  });
  tt.match(r.id, /^resp_/);
  tt.equal(r.object, 'response');
  tt.equal(r.model, 'tiny-llava');
  tt.ok(Math.abs(r.created_at - Date.now() / 1000) < 60, 'created_at is now');
  tt.equal(r.status, chat.choices[0].finish_reason === 'length' ? 'incomplete' : 'completed');
  tt.equal(r.output.length, 1);
  const msg = r.output[0] as OpenAI.Responses.ResponseOutputMessage;
  tt.match(msg, { type: 'message', role: 'assistant' });
  tt.match(msg.id, /^msg_/);
  tt.equal(msg.content[0].type, 'output_text');
  tt.equal(r.output_text, chat.choices[0].message.content, 'output_text (SDK convenience) equals the chat reply');
  tt.same(r.usage, {
    input_tokens: chat.usage!.prompt_tokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: chat.usage!.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: chat.usage!.total_tokens,
  });
  tt.match(r, { instructions: 'Answer briefly.', max_output_tokens: 12, temperature: 0, store: false, metadata: { run: 'sdk-test' } });

  // input as message items, with history and an input_image part (the same image rules as chat).
  const items: OpenAI.Responses.ResponseInput = [
    {
      role: 'user',
      content: [
        { type: 'input_text', text: Q },
        { type: 'input_image', image_url: dataUri(png0), detail: 'auto' },
      ],
    },
    { role: 'assistant', content: 'A square.' },
    { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'And the colors?' }] },
  ];
  const ri = await client.responses.create({ model: 'x', input: items, temperature: 0, max_output_tokens: 8 });
  const ci = await client.chat.completions.create({
    model: 'x',
    messages: [
      {
        role: 'user',
        content: [
          { type: 'text', text: Q },
          { type: 'image_url', image_url: { url: dataUri(png0) } },
        ],
      },
      { role: 'assistant', content: 'A square.' },
      { role: 'user', content: 'And the colors?' },
    ],
    temperature: 0,
    max_tokens: 8,
  });
  tt.equal(ri.output_text, ci.choices[0].message.content, 'image + history: same reply as chat');
  tt.equal(ri.usage?.input_tokens, ci.usage?.prompt_tokens);

  const short = await client.responses.create({ model: 'x', input: Q, temperature: 0, max_output_tokens: 2 });
  tt.equal(short.status, 'incomplete');
  tt.same(short.incomplete_details, { reason: 'max_output_tokens' });
  tt.equal(short.usage?.output_tokens, 2);
  tt.equal((short.output[0] as OpenAI.Responses.ResponseOutputMessage).status, 'incomplete');
  tt.equal(L.memory().numTensors, before, 'no tensors leak');
});

t.test('responses.create with stream: the event sequence, deltas join to the final text', async (tt) => {
  const params = { model: 'x', input: 'Describe a traffic light.', temperature: 0, max_output_tokens: 12 };
  const plain = await client.responses.create(params);
  const stream = await client.responses.create({ ...params, stream: true });
  const types: string[] = [];
  const seqs: number[] = [];
  let deltas = '';
  let final: OpenAI.Responses.Response | null = null;
  for await (const ev of stream) {
    types.push(ev.type);
    seqs.push(ev.sequence_number);
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
    if (ev.type === 'response.output_text.done') tt.equal(ev.text, plain.output_text, 'output_text.done carries the whole text');
    if (ev.type === 'response.completed' || ev.type === 'response.incomplete') final = ev.response;
    if (ev.type === 'response.created') tt.equal(ev.response.status, 'in_progress');
  }
  const last = plain.status === 'completed' ? 'response.completed' : 'response.incomplete';
  const nDelta = types.filter((x) => x === 'response.output_text.delta').length;
  tt.ok(nDelta >= 1, `${nDelta} deltas`);
  tt.same(types, [
    'response.created',
    'response.in_progress',
    'response.output_item.added',
    'response.content_part.added',
    ...Array(nDelta).fill('response.output_text.delta'),
    'response.output_text.done',
    'response.content_part.done',
    'response.output_item.done',
    last,
  ]);
  tt.same(
    seqs,
    types.map((_, i) => i),
    'sequence_number counts from 0',
  );
  tt.equal(deltas, plain.output_text, 'deltas join to the non-streamed text');
  tt.same(final!.usage, plain.usage);

  // The SDK's stream helper accumulates the same events into a final Response.
  const helper = client.responses.stream(params);
  let snap = '';
  helper.on('response.output_text.delta', (e) => (snap = e.snapshot));
  const fin = await helper.finalResponse();
  tt.equal(fin.output_text, plain.output_text);
  tt.equal(snap, plain.output_text);

  // On the wire: `event:` lines naming each data's type, and no [DONE].
  const raw = await fetch(`${srv.url}/v1/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ ...params, max_output_tokens: 3, stream: true }),
  });
  tt.match(raw.headers.get('content-type'), /text\/event-stream/);
  const blocks = (await raw.text()).split('\n\n').filter((b) => b.trim());
  for (const b of blocks) {
    const m = /^event: (\S+)\ndata: (.*)$/s.exec(b);
    tt.ok(m && JSON.parse(m[2]).type === m[1], `event line matches the data type: ${b.slice(0, 40)}`);
  }
  tt.notOk(
    blocks.some((b) => b.includes('[DONE]')),
    'no [DONE]',
  );
});

t.test('responses.create refusals: unsupported fields, chat fields, bad input, same image caps as chat', async (tt) => {
  const refuse = async (body: Record<string, unknown>, code: string, param: string | null, re: RegExp): Promise<void> => {
    const e = await client.responses.create({ model: 'x', ...body } as OpenAI.Responses.ResponseCreateParamsNonStreaming).catch((x) => x);
    tt.ok(e instanceof BadRequestError, `400 for ${JSON.stringify(body).slice(0, 80)}`);
    tt.equal(e.code, code);
    tt.equal(e.param, param);
    tt.match(e.message, re);
  };
  const input = 'hi';
  await refuse({ input, tools: [{ type: 'function', name: 'f', parameters: {} }] }, 'unsupported_parameter', 'tools', /no tool calling/);
  await refuse({ input, previous_response_id: 'resp_1' }, 'unsupported_parameter', 'previous_response_id', /not stored/);
  await refuse({ input, store: true }, 'unsupported_parameter', 'store', /not stored/);
  await refuse({ input, background: true }, 'unsupported_parameter', 'background', /background/);
  await refuse({ input, text: { format: { type: 'json_object' } } }, 'unsupported_parameter', 'text.format', /only \{type: 'text'\}/);
  await refuse({ input, truncation: 'auto' }, 'unsupported_parameter', 'truncation', /disabled/);
  await refuse({ input, include: ['reasoning.encrypted_content'] }, 'unsupported_parameter', 'include', /extra output/);
  await refuse({ input, top_logprobs: 21 }, 'invalid_value', 'top_logprobs', /<= 20/);
  await refuse({ input, messages: [] }, 'unsupported_parameter', 'messages', /'input'/);
  await refuse({ input, max_tokens: 5 }, 'unsupported_parameter', 'max_tokens', /max_output_tokens/);
  await refuse({}, 'missing_required_parameter', 'input', /'input' is required/);
  await refuse({ input: '' }, 'invalid_value', 'input', /empty/);
  await refuse({ input: [{ type: 'function_call_output', call_id: 'c', output: 'x' }] }, 'unsupported_parameter', 'input[0].type', /only messages/);
  await refuse({ input, temperature: 3 }, 'invalid_value', 'temperature', /<= 2/);
  await refuse({ input, max_output_tokens: 0 }, 'invalid_value', 'max_output_tokens', />= 1/);
  await refuse({ input, instructions: 5 }, 'invalid_type', 'instructions', /must be a string/);
  await refuse({ input, metadata: { a: 1 } }, 'invalid_value', 'metadata', /string values/);
  await refuse({ input: [{ role: 'assistant', content: 'x' }] }, 'invalid_value', 'input[0].role', /expected a user message/);
  await refuse({ input: [{ role: 'user', content: 'a <image> b' }] }, 'invalid_value', 'input[0].content', /input_image content parts/);
  await refuse(
    { input: [{ role: 'user', content: [{ type: 'input_file', file_id: 'f' }] }] },
    'invalid_value',
    'input[0].content[0].type',
    /input_image/,
  );
  await refuse(
    { input: [{ role: 'user', content: [{ type: 'input_image', file_id: 'file-1', detail: 'auto' }] }] },
    'unsupported_parameter',
    'input[0].content[0].file_id',
    /files are not supported/,
  );
  // Accepted and without effect: harmless hints, store: false, tool_choice 'none' with no tools.
  const ok = await client.responses.create({
    model: 'x',
    input,
    store: false,
    user: 'u',
    service_tier: 'auto',
    parallel_tool_calls: false,
    tools: [],
    tool_choice: 'none',
    max_output_tokens: 1,
    temperature: 0,
  });
  tt.equal(ok.status, 'incomplete');

  // The image rules are chat's: a URL is refused, a huge image is refused from its header, two are too many.
  const img = (url: string) => ({ type: 'input_image' as const, image_url: url, detail: 'auto' as const });
  const chatImg = (url: string) => ({ type: 'image_url' as const, image_url: { url } });
  const huge = Buffer.from(png0);
  huge.writeUInt32BE(20_000, 16);
  huge.writeUInt32BE(20_000, 20);
  for (const [url, code] of [
    ['https://example.com/cat.png', 'invalid_image_url'],
    [dataUri(huge), 'image_too_large'],
  ]) {
    const er = await client.responses.create({ model: 'x', input: [{ role: 'user', content: [img(url)] }] }).catch((x) => x);
    const ec = await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: [chatImg(url)] }] }).catch((x) => x);
    tt.ok(er instanceof BadRequestError && ec instanceof BadRequestError);
    tt.equal(er.code, code);
    tt.equal(ec.code, code, 'chat gives the same code');
    tt.equal(er.message.replace(/input\[0\]\.content\[0\]/g, 'P'), ec.message.replace(/messages\[0\]\.content\[0\]/g, 'P'), 'and the same message');
  }
  const two = await client.responses
    .create({ model: 'x', input: [{ role: 'user', content: [img(dataUri(png0)), img(dataUri(png0))] }] })
    .catch((x) => x);
  tt.equal(two.code, 'too_many_images');
  const long = await client.responses.create({ model: 'x', input: 'word '.repeat(5000) }).catch((x) => x);
  tt.ok(long instanceof BadRequestError);
  tt.equal(long.code, 'context_length_exceeded');
  tt.equal(long.param, 'input');
});

// Last: these shut servers down.
t.test('shutdown mid-stream: response.failed (Responses), a 503 for the other request, the error event (chat)', async (tt) => {
  const resp = await client.responses.create({ model: 'x', input: Q, temperature: 0, max_output_tokens: 400, stream: true });
  let other: Promise<unknown> | null = null;
  let closing: Promise<void> | null = null;
  const types: string[] = [];
  let failed: OpenAI.Responses.Response | null = null;
  for await (const ev of resp) {
    types.push(ev.type);
    if (ev.type === 'response.failed') failed = ev.response;
    if (ev.type === 'response.output_text.delta' && !closing) {
      other = client.chat.completions
        .create({ model: 'x', messages: [{ role: 'user', content: Q }], temperature: 0, max_tokens: 300 })
        .catch((x) => x);
      await waitFor(() => stats().running + stats().waiting === 2);
      closing = srv.close();
    }
  }
  tt.equal(types[types.length - 1], 'response.failed', 'the running Responses stream ends with response.failed');
  tt.equal(failed?.status, 'failed');
  tt.equal(failed?.error?.code, 'server_shutting_down');
  const q = (await other) as InstanceType<typeof APIError>;
  tt.ok(q instanceof APIError && q.status === 503, `the other request gets a 503 (${q})`);
  tt.equal(q.code, 'server_shutting_down');
  await closing;

  // Chat completions: the mid-stream error event is OpenAI's {"error": {...}}, which the SDK raises.
  const two = await startServer({ model: dir, host: '127.0.0.1', port: 0, log: () => {} });
  const c2 = new OpenAI({ apiKey: 'none', baseURL: `${two.url}/v1`, maxRetries: 0 });
  const chat = await c2.chat.completions.create({
    model: 'x',
    messages: [{ role: 'user', content: Q }],
    temperature: 0,
    max_tokens: 400,
    stream: true,
  });
  let closing2: Promise<void> | null = null;
  const chatErr = await (async () => {
    for await (const _ of chat) closing2 ??= two.close();
  })().catch((x) => x);
  await closing2;
  tt.ok(chatErr instanceof APIError, `APIError (${chatErr})`);
  tt.equal(chatErr?.code, 'server_shutting_down');
});
