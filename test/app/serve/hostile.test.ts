// `llava serve` against hostile inputs (issue 10): a huge prompt must not freeze the server (it is refused
// before tokenizing, and /health keeps answering during it and during generation), the API key, Origin /
// CORS and content-type checks, the connection cap and the header / request timeouts, X-Request-Id and
// /v1/models' created time. The ordinary API is tested in serve.test.ts and serve_service.test.ts.
import t from 'tap';
import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import * as path from 'path';
import { createServer, parseCors, LlavaServer, ServeOptions } from '../../../lib/app/serve/server';
import { promptCharBound } from '../../../lib/app/serve/completion';
import { JsonValueCounter } from '../../../lib/app/serve/http';
import { TEST_DIR } from '../../helpers';
import { runServeCli } from './serve_helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

async function listen(opts: Partial<ServeOptions> = {}): Promise<{ server: LlavaServer; base: string; logs: string[] }> {
  const logs: string[] = [];
  const server = createServer({ model: dir, log: (l) => logs.push(l), ...opts });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, logs };
}

async function stop(server: LlavaServer): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await server.llava.shutdown();
}

function request(base: string, method: string, p: string, o: { body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(base + p, { method, agent: false, headers: { 'Content-Type': 'application/json', ...(o.headers ?? {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** Polls GET /health every few ms until `done` settles; returns the slowest answer in ms and the count. */
async function healthWhile(base: string, done: Promise<unknown>): Promise<{ max: number; n: number }> {
  let finished = false;
  void done.finally(() => (finished = true));
  let max = 0;
  let n = 0;
  while (!finished) {
    const t0 = performance.now();
    const r = await request(base, 'GET', '/health');
    if (r.status !== 200) throw new Error(`/health answered ${r.status}`);
    max = Math.max(max, performance.now() - t0);
    n++;
    await new Promise((r) => setTimeout(r, 5));
  }
  return { max, n };
}

/** The slowest /health answer allowed while a hostile request is handled. The target is 100 ms, met alone
 *  (about 25 ms), but tap runs two files at once on a 2-core CI machine and a loaded one stretched it to
 *  255 ms. What these tests guard against holds the event loop for seconds (tokenizing the 19.5 MB prompt
 *  took 120 s; JSON.parse of 9.7 million values takes about 1.7 s), which a 1 s bound still catches. */
const SLACK_MS = 1000;

const user = (content: string) => ({ messages: [{ role: 'user', content }] });

t.test('the prompt character bound is proven for the fixture tokenizer and sound on real text', async (tt) => {
  const { server } = await listen();
  try {
    const { tokenizer } = server.llava;
    const b = promptCharBound(tokenizer, dir);
    tt.ok(b.proven, 'LLaMA normalizer, BPE with byte fallback: proven');
    // Every text has at least length / perToken tokens (no special tokens added).
    for (const text of ['hello world '.repeat(200), 'a'.repeat(3000), 'é中🙂\n\t  '.repeat(100), '</s><s>'.repeat(100), 'x']) {
      const ids = tokenizer.encode(text, { addSpecialTokens: false });
      tt.ok(ids.length * b.perToken >= text.length, `${JSON.stringify(text.slice(0, 12))}: ${ids.length} tokens x ${b.perToken} >= ${text.length}`);
    }
  } finally {
    await stop(server);
  }
});

t.test('a 19.5 MB prompt is refused before tokenizing; /health answers within 100 ms meanwhile', async (tt) => {
  const { server, base } = await listen();
  try {
    const body = Buffer.from(JSON.stringify(user('hello world '.repeat(1_625_000))));
    tt.ok(body.length > 19_000_000 && body.length < 20 * 1024 * 1024, `body ${body.length} bytes, under the 20 MiB limit`);
    const t0 = Date.now();
    const answer = request(base, 'POST', '/v1/chat/completions', { body });
    const health = await healthWhile(base, answer);
    const r = await answer;
    tt.equal(r.status, 400, r.text.slice(0, 200));
    tt.equal(r.json?.error?.code, 'context_length_exceeded');
    tt.match(r.json?.error?.message, /the prompt has \d+ characters; the model's context holds 512 positions, at most \d+ characters/);
    tt.ok(Date.now() - t0 < 10_000, `answered in ${Date.now() - t0} ms`);
    tt.ok(health.max < SLACK_MS, `slowest /health ${health.max.toFixed(1)} ms over ${health.n} polls`);
    // A prompt just over the bound in characters is refused the same way; one that fits is served.
    const ctx = server.llava.contextLength;
    const per = promptCharBound(server.llava.tokenizer, dir).perToken;
    const over = await request(base, 'POST', '/v1/chat/completions', { body: JSON.stringify(user('a'.repeat(ctx * per + 1))) });
    tt.equal(over.json?.error?.code, 'context_length_exceeded');
    tt.match(over.json?.error?.message, /characters/);
    const ok = await request(base, 'POST', '/v1/chat/completions', { body: JSON.stringify({ ...user('hello'), max_tokens: 2 }) });
    tt.equal(ok.status, 200);
  } finally {
    await stop(server);
  }
});

t.test('a 19 MB body of tiny JSON values is refused as it arrives, before JSON.parse', async (tt) => {
  const { server, base } = await listen();
  try {
    // a Buffer made up front: encoding a 19 MB string would block this (client and server) process
    const body = Buffer.from('{"messages":[{"role":"user","content":"hi"}],"x":[' + '0,'.repeat(9_700_000) + '0]}');
    const answer = request(base, 'POST', '/v1/chat/completions', { body });
    const health = await healthWhile(base, answer);
    const r = await answer;
    tt.equal(r.status, 400, r.text.slice(0, 200));
    tt.equal(r.json?.error?.code, 'too_many_values');
    tt.ok(health.max < SLACK_MS, `slowest /health ${health.max.toFixed(1)} ms over ${health.n} polls`);
    // commas, brackets and braces inside strings (escaped quotes included) do not count
    const note = '[{,\\"x\\",}]'.repeat(50_000);
    const ok = await request(base, 'POST', '/v1/chat/completions', { body: JSON.stringify({ ...user('hi'), max_tokens: 1, note }) });
    tt.equal(ok.status, 200, ok.text.slice(0, 200));
    const counter = new JsonValueCounter();
    const json = JSON.stringify({ a: [1, 2, { b: 'x,[{"\\' }], c: '"' });
    for (let i = 0; i < json.length; i += 3) counter.push(Buffer.from(json.slice(i, i + 3))); // split anywhere
    tt.equal(counter.count, 6, '{ [ , , { , outside strings');
  } finally {
    await stop(server);
  }
});

t.test('generation yields to the event loop: /health answers within 100 ms while a long prompt generates', async (tt) => {
  const { server, base } = await listen();
  try {
    // about 350 prompt positions (of 512), then up to 150 tokens, streamed and not
    for (const stream of [false, true]) {
      const body = JSON.stringify({ ...user('hello world '.repeat(55)), max_tokens: 150, temperature: 0, stream });
      const t0 = performance.now();
      const answer = request(base, 'POST', '/v1/chat/completions', { body });
      const health = await healthWhile(base, answer);
      const r = await answer;
      const took = performance.now() - t0;
      tt.equal(r.status, 200, r.text.slice(0, 200));
      // A completion that did not yield would answer /health once, after it; a load on the machine slows
      // the polls and the completion alike, so these two checks hold however busy it is.
      tt.ok(health.n >= 10, `stream ${stream}: ${health.n} polls during the ${took.toFixed(0)} ms completion`);
      tt.ok(
        health.max < took / 4,
        `stream ${stream}: slowest /health ${health.max.toFixed(1)} ms, under a quarter of the completion's ${took.toFixed(0)} ms`,
      );
      tt.ok(health.max < SLACK_MS, `stream ${stream}: slowest /health ${health.max.toFixed(1)} ms over ${health.n} polls`);
    }
  } finally {
    await stop(server);
  }
});

t.test('API key: Bearer required on every route but /health; 401 in OpenAI shape', async (tt) => {
  const { server, base } = await listen({ apiKey: 'sekret-key' });
  try {
    const chat = JSON.stringify({ ...user('hi'), max_tokens: 1 });
    const none = await request(base, 'POST', '/v1/chat/completions', { body: chat });
    tt.equal(none.status, 401);
    tt.equal(none.headers['www-authenticate'], 'Bearer');
    tt.same(Object.keys(none.json.error).sort(), ['code', 'message', 'param', 'type']);
    tt.equal(none.json.error.code, 'invalid_api_key');
    tt.equal(none.json.error.type, 'invalid_request_error');
    tt.match(none.json.error.message, /missing API key/);
    for (const auth of ['Bearer wrong', 'Bearer sekret-ke', 'Bearer sekret-key-and-more', 'Basic sekret-key', 'sekret-key']) {
      const r = await request(base, 'GET', '/v1/models', { headers: { Authorization: auth } });
      tt.equal(r.status, 401, auth);
      tt.equal(r.json?.error?.code, 'invalid_api_key');
    }
    const unknown = await request(base, 'GET', '/nope');
    tt.equal(unknown.status, 401, 'unknown routes need the key too');
    tt.equal((await request(base, 'GET', '/health')).status, 200, '/health stays open');
    const ok = await request(base, 'POST', '/v1/chat/completions', { body: chat, headers: { Authorization: 'Bearer sekret-key' } });
    tt.equal(ok.status, 200);
    tt.equal((await request(base, 'GET', '/v1/models', { headers: { Authorization: 'bearer  sekret-key' } })).status, 200);
    tt.equal(server.llava.stats().completed, 1, 'only the authorized completion ran');
  } finally {
    await stop(server);
  }
});

t.test('Origin and content type: a cross-origin text/plain POST is refused; CORS is opt-in', async (tt) => {
  const plain = await listen();
  try {
    const body = JSON.stringify({ ...user('hi'), max_tokens: 1 });
    const evil = await request(plain.base, 'POST', '/v1/chat/completions', {
      body,
      headers: { 'Content-Type': 'text/plain', Origin: 'http://evil.example' },
    });
    tt.equal(evil.status, 403);
    tt.equal(evil.json?.error?.code, 'origin_not_allowed');
    tt.notOk(evil.headers['access-control-allow-origin']);
    const evilJson = await request(plain.base, 'POST', '/v1/chat/completions', { body, headers: { Origin: 'http://evil.example' } });
    tt.equal(evilJson.status, 403, 'any Origin is refused without --cors');
    tt.equal((await request(plain.base, 'GET', '/health', { headers: { Origin: 'http://evil.example' } })).status, 403);
    const text = await request(plain.base, 'POST', '/v1/chat/completions', { body, headers: { 'Content-Type': 'text/plain' } });
    tt.equal(text.status, 415);
    tt.equal(text.json?.error?.code, 'unsupported_media_type');
    const latin = await request(plain.base, 'POST', '/v1/chat/completions', {
      body,
      headers: { 'Content-Type': 'application/json; charset=latin1' },
    });
    tt.equal(latin.status, 415);
    const utf8 = await request(plain.base, 'POST', '/v1/chat/completions', {
      body,
      headers: { 'Content-Type': 'Application/JSON; charset="UTF-8"' },
    });
    tt.equal(utf8.status, 200);
    tt.equal(plain.server.llava.stats().completed, 1, 'no refused request reached the model');
    const preflight = await request(plain.base, 'OPTIONS', '/v1/chat/completions', {
      headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' },
    });
    tt.equal(preflight.status, 403);
  } finally {
    await stop(plain.server);
  }

  const cors = await listen({ cors: ['http://good.example'], apiKey: 'k' });
  try {
    const pre = await request(cors.base, 'OPTIONS', '/v1/chat/completions', {
      headers: {
        Origin: 'http://good.example',
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'authorization,content-type',
      },
    });
    tt.equal(pre.status, 204, 'preflight answered without the key');
    tt.equal(pre.headers['access-control-allow-origin'], 'http://good.example');
    tt.match(pre.headers['access-control-allow-methods'] ?? '', /POST/);
    tt.match(pre.headers['access-control-allow-headers'] ?? '', /Authorization/);
    tt.match(pre.headers['access-control-allow-headers'] ?? '', /Content-Type/);
    tt.ok(pre.headers['access-control-max-age']);
    tt.equal(pre.headers.vary, 'Origin');
    const post = await request(cors.base, 'POST', '/v1/chat/completions', {
      body: JSON.stringify({ ...user('hi'), max_tokens: 1 }),
      headers: { Origin: 'http://good.example', Authorization: 'Bearer k' },
    });
    tt.equal(post.status, 200);
    tt.equal(post.headers['access-control-allow-origin'], 'http://good.example');
    tt.match(post.headers['access-control-expose-headers'] ?? '', /X-Request-Id/);
    tt.equal((await request(cors.base, 'GET', '/health', { headers: { Origin: 'http://other.example' } })).status, 403);
  } finally {
    await stop(cors.server);
  }

  const any = await listen({ cors: '*' });
  try {
    const r = await request(any.base, 'GET', '/v1/models', { headers: { Origin: 'http://whoever.example' } });
    tt.equal(r.status, 200);
    tt.equal(r.headers['access-control-allow-origin'], '*');
  } finally {
    await stop(any.server);
  }
  tt.equal(parseCors('*'), '*');
  tt.same(parseCors(' http://a.example, https://b.example:8443 '), ['http://a.example', 'https://b.example:8443']);
  tt.throws(() => parseCors('http://a.example/path'), /\[serve\] --cors: 'http:\/\/a.example\/path' is not an origin/);
  tt.throws(() => parseCors(' , '), /\[serve\] --cors needs/);
});

/** Connects a raw socket and writes `data`; resolves with what the server sent once it closes. */
function rawExchange(port: number, data: string): Promise<{ got: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const s = net.connect(port, '127.0.0.1', () => s.write(data));
    let got = '';
    s.on('data', (c) => (got += c.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => resolve({ got, ms: Date.now() - t0 }));
    setTimeout(() => {
      s.destroy();
      reject(new Error('the server never closed the connection'));
    }, 8000);
  });
}

t.test('limits: connection cap, header timeout, request timeout', async (tt) => {
  const { server, base, logs } = await listen({ maxConnections: 2, headersTimeoutMs: 300, requestTimeoutMs: 600 });
  const port = (server.address() as net.AddressInfo).port;
  try {
    tt.equal(server.maxConnections, 2);
    tt.equal(server.headersTimeout, 300);
    tt.equal(server.requestTimeout, 600);
    // a client that never finishes its headers is cut off after about 300 ms
    const slow = await rawExchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\n');
    tt.match(slow.got, /^HTTP\/1\.1 408/, 'headers timeout: 408');
    tt.ok(slow.ms >= 250 && slow.ms < 3000, `closed after ${slow.ms} ms`);
    // a body that never completes is cut off after about 600 ms
    const body = await rawExchange(
      port,
      'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mess',
    );
    tt.ok(body.ms >= 500 && body.ms < 4000, `request timeout: closed after ${body.ms} ms (${JSON.stringify(body.got.slice(0, 40))})`);
    tt.match(body.got, /^HTTP\/1\.1 408/, 'request timeout: 408');
    tt.ok(
      logs.some((l) => /request timed out/.test(l)),
      'timeouts are logged',
    );
    // two open connections: a third is dropped without an answer
    const open = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<net.Socket>((r) => {
            const s = net.connect(port, '127.0.0.1', () => r(s));
            s.on('error', () => {});
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 50));
    const third = await rawExchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    tt.equal(third.got, '', 'the third connection is closed unanswered');
    tt.ok(
      logs.some((l) => /connection from .* dropped: 2 connections are open/.test(l)),
      'logged',
    );
    open.forEach((s) => s.destroy());
    await new Promise((r) => setTimeout(r, 50));
    tt.equal((await request(base, 'GET', '/health')).status, 200, 'served again once they close');
  } finally {
    await stop(server);
  }
});

t.test('X-Request-Id on every response; /v1/models created is the config mtime', async (tt) => {
  const { server, base, logs } = await listen({ apiKey: 'k' });
  try {
    const echo = await request(base, 'GET', '/health', { headers: { 'X-Request-Id': 'client-id-42' } });
    tt.equal(echo.headers['x-request-id'], 'client-id-42');
    tt.ok(
      logs.some((l) => /\/health 200 .*id=client-id-42$/.test(l)),
      'in the log line',
    );
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    tt.match((await request(base, 'GET', '/health')).headers['x-request-id'], uuid, 'generated when absent');
    tt.match(
      (await request(base, 'GET', '/health', { headers: { 'X-Request-Id': 'x'.repeat(200) } })).headers['x-request-id'],
      uuid,
      'replaced when not sane',
    );
    const denied = await request(base, 'GET', '/v1/models', { headers: { 'X-Request-Id': 'r1' } });
    tt.equal(denied.status, 401);
    tt.equal(denied.headers['x-request-id'], 'r1', 'on errors too');
    const missing = await request(base, 'GET', '/nope', { headers: { Authorization: 'Bearer k' } });
    tt.equal(missing.status, 404);
    tt.match(missing.headers['x-request-id'], uuid);
    const models = await request(base, 'GET', '/v1/models', { headers: { Authorization: 'Bearer k' } });
    const created = Math.floor(fs.statSync(path.join(dir, 'config.json')).mtimeMs / 1000);
    tt.equal(models.json.data[0].created, created);
    tt.ok(created > 1_500_000_000, 'a real time');
    const one = await request(base, 'GET', `/v1/models/${encodeURIComponent(server.llava.modelName)}`, { headers: { Authorization: 'Bearer k' } });
    tt.equal(one.json.created, created);
  } finally {
    await stop(server);
  }
});

t.test('serve command: the new options are validated', async (tt) => {
  const run = async (args: string[]): Promise<string> => (await runServeCli(['--model', dir, ...args])).err;
  tt.match(await run(['--cors', 'evil.example']), /llava serve: error: --cors: 'evil.example' is not an origin/);
  tt.match(await run(['--max-connections', '0']), /--max-connections.*must be an integer >= 1/);
  tt.match(await run(['--max-batch', '0']), /--max-batch.*must be an integer >= 1/);
  tt.match(await run(['--max-batch', '2.5']), /--max-batch.*not an integer/);
  tt.match(await run(['--prefix-cache', '-1']), /--prefix-cache.*must be an integer >= 0/);
  tt.match(await run(['--prefill-chunk', '-1']), /--prefill-chunk.*must be an integer >= 0/);
  tt.match(await run(['--headers-timeout', 'x']), /not an integer/);
  tt.match(await run(['--headers-timeout', '60', '--request-timeout', '30']), /--headers-timeout must not exceed --request-timeout/);
});
