// `llava serve` (lib/app/serve/server.ts, lib/app/cli/serve.ts) on the tiny LLaVA fixture, as a service: the
// decode batch under concurrent requests, client aborts (mid-stream and while queued), every error path with
// its status and OpenAI error JSON, startServer and shutdown, and the `llava serve` command (argument
// validation; a child process that answers and stops on SIGTERM). The answers themselves are tested in
// serve.test.ts; the shared server and request helpers are in serve_helpers.ts.
import t from 'tap';
import * as http from 'http';
import * as path from 'path';
import { spawn } from 'child_process';
import * as L from '../../../lib';
import { buildPrompt } from '../../../lib/app/processing/conversation';
import { createServer, startServer } from '../../../lib/app/serve/server';
import { TEST_DIR } from '../../helpers';
import {
  Q,
  Reply,
  base,
  chat,
  dataUri,
  dir,
  expectError,
  expected,
  logs,
  png0,
  png1,
  request,
  runServeCli,
  server,
  sseEvents,
  useServer,
  userImage,
} from './serve_helpers';

const ROOT = path.join(TEST_DIR, '..');

useServer();

const waitFor = async (cond: () => boolean, ms = 10_000): Promise<void> => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
};

t.test('concurrent requests decode together in one batch and are each answered correctly', async (tt) => {
  const prompt = buildPrompt('llava_hf', Q, { image: true });
  const g0 = await expected(prompt, { image: png0, maxNewTokens: 30 });
  const g1 = await expected(prompt, { image: png1, maxNewTokens: 30 });
  const mark = logs.length;
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
  const { maxRunning } = server.llava.stats();
  tt.ok(maxRunning >= 2 && maxRunning <= 4, `requests decoded together (up to ${maxRunning} at once; max_batch 4)`);
  await waitFor(() => logs.length - mark >= 3);
  tt.equal(logs.length - mark, 3, 'one log line per request');
  tt.ok(
    logs.slice(mark).every((l) => /^\[serve\] POST \/v1\/chat\/completions 200 \d+ms prompt \d+ completion 30 finish length id=[\w-]+$/.test(l)),
    logs.slice(mark).join('\n'),
  );
});

t.test('a short request is not held behind a long one', async (tt) => {
  const order: string[] = [];
  const long = chat({ messages: [{ role: 'user', content: Q }], temperature: 0, max_tokens: 300 }).then((r) => (order.push('long'), r));
  await waitFor(() => server.llava.stats().running === 1);
  const short = chat({ messages: [{ role: 'user', content: Q }], temperature: 0, max_tokens: 3 }).then((r) => (order.push('short'), r));
  const [a, b] = await Promise.all([long, short]);
  tt.same([a.status, b.status], [200, 200]);
  tt.equal(b.json.usage.completion_tokens, 3);
  tt.ok(a.json.usage.completion_tokens > 3, `the long one ran on (${a.json.usage.completion_tokens} tokens)`);
  tt.same(order, ['short', 'long'], 'the short request joined the running batch and finished first');
});

t.test('maxBatch 1 runs completions one at a time; a request aborted while waiting never runs; /health reports max_batch', async (tt) => {
  const { model, tokenizer } = server.llava;
  const mark = logs.length;
  const one = createServer({ loaded: { model, tokenizer, dir }, maxBatch: 1, log: (l) => logs.push(l) });
  await new Promise<void>((r) => one.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(one.address() as { port: number }).port}`;
  try {
    const post = (max: number): Promise<Reply> =>
      fetch(url + '/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: Q }], temperature: 0, max_tokens: max, return_token_ids: true }),
      }).then(async (r) => ({ status: r.status, headers: {}, text: '', json: await r.json() }));
    let maxWaiting = 0;
    let polling = true;
    const poll = (): void => {
      maxWaiting = Math.max(maxWaiting, one.llava.stats().waiting);
      if (polling) setTimeout(poll, 1);
    };
    poll();
    const [a, b] = await Promise.all([post(20), post(20)]);
    polling = false;
    tt.same(a.json.choices[0].token_ids, b.json.choices[0].token_ids, 'the same request twice, the same answer');
    tt.equal(one.llava.stats().maxRunning, 1, 'never more than one generation at a time');
    tt.ok(maxWaiting >= 1, `a request waited for the row (max ${maxWaiting} waiting)`);

    // aborted while waiting for the row: skipped
    const stats0 = one.llava.stats();
    const long = post(200);
    await waitFor(() => one.llava.stats().running === 1);
    const queued = http.request(url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' } });
    queued.on('error', () => {});
    queued.end(JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 5 }));
    await waitFor(() => one.llava.stats().waiting === 1);
    queued.destroy();
    tt.equal((await long).status, 200, 'the running request completes');
    await waitFor(() => one.llava.stats().aborted === stats0.aborted + 1);
    tt.equal(one.llava.stats().completed, stats0.completed + 1, 'only the running one completed');
    await waitFor(() => logs.slice(mark).some((l) => /client closed while queued/.test(l)));
    tt.pass('logged as skipped');

    const h = (await (await fetch(url + '/health')).json()) as { max_batch: number };
    tt.equal(h.max_batch, 1);
    tt.throws(() => createServer({ loaded: { model, tokenizer, dir }, maxBatch: 0 }), /maxBatch must be an integer >= 1 \(got 0\)/);

    // shutdown: the running request and the one waiting for the row both get a 503
    const running = post(300);
    await waitFor(() => one.llava.stats().running === 1);
    const waiting = post(5);
    await waitFor(() => one.llava.stats().waiting === 1);
    await one.llava.shutdown();
    for (const [name, r] of [
      ['running', await running],
      ['waiting', await waiting],
    ] as const) {
      tt.equal(r.status, 503, `the ${name} request gets a 503`);
      tt.equal(r.json.error.code, 'server_shutting_down');
    }
  } finally {
    await new Promise<void>((r) => one.close(() => r()));
    await one.llava.shutdown();
    logs.splice(mark);
  }
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
  expectError(tt, await chat({ messages: [userImage(Q, 'data:image/bmp;base64,Qk0AAAAA')] }), 400, /unsupported image type/);
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
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], n: 17 }), 400, /'n' must be <= 16/, 'invalid_value', 'n');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], n: 0 }), 400, /'n' must be >= 1/, 'invalid_value', 'n');
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }), 400, /tool/);
  expectError(tt, await chat({ messages: [{ role: 'user', content: 'x' }], top_logprobs: 1 }), 400, /logprobs/);
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
  expectError(tt, await request('GET', '/v1/completions'), 405, /not allowed/, 'method_not_allowed');
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
    [
      '--import',
      'tsx',
      path.join(ROOT, 'lib', 'app', 'cli', 'serve.ts'),
      'serve',
      '--model',
      dir,
      '--port',
      '0',
      '--max-batch',
      '2',
      '--prefix-cache',
      '64',
      '--prefill-chunk',
      '16',
    ],
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
    tt.match(out, /up to 2 decoded together, prefill in chunks of 16, prefix cache 64 positions/);
    const h = (await (await fetch(url + '/health')).json()) as Record<string, unknown>;
    tt.match(h, { status: 'ok', model: 'tiny-llava', max_batch: 2, prefill_chunk: 16, prefilling: 0, prefix_cache: { max_positions: 64 } });
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
