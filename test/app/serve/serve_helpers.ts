// serve_helpers.ts — shared by serve.test.ts and serve_service.test.ts: the tiny LLaVA fixture and its two
// images, one `llava serve` server per test file (useServer: created on an ephemeral port before the file's
// tests, closed after them; `server`, `base` and `logs` are live bindings), requests with their parsed replies,
// SSE parsing, image data URIs, the reference generateText answer, the OpenAI error-body check, and
// runServeCli (the `llava serve` command run in-process; hostile.test.ts uses it too).
import t from 'tap';
import type { Test } from 'tap';
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';
import { Command } from 'commander';
import * as L from '../../../lib';
import { Tensor } from '../../../lib/core/tensor';
import { generateText, encodePrompt, GenerateOptions } from '../../../lib/app/inference/generate';
import { CLIPImageProcessor } from '../../../lib/app/processing/image';
import { createServer, LlavaServer } from '../../../lib/app/serve/server';
import { registerServeCommand } from '../../../lib/app/cli/serve';
import { TEST_DIR } from '../../helpers';

export const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
export const png0 = fs.readFileSync(path.join(dir, 'image0.png'));
export const png1 = fs.readFileSync(path.join(dir, 'image1.png'));
export const dataUri = (b: Buffer, mime = 'image/png'): string => `data:${mime};base64,${b.toString('base64')}`;
export const Q = 'What is unusual about this image?';

export let server: LlavaServer;
export let base = '';
export const logs: string[] = [];

/** Starts the file's server before its tests and closes it (and its model) after them. */
export function useServer(): void {
  t.before(async () => {
    // No prefix cache here: the tests check that a request leaves no tensor behind (serve_service.test.ts
    // tests the cache on a server of its own).
    server = createServer({ model: dir, prefixCache: 0, log: (l) => logs.push(l) });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  t.teardown(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await server.llava.shutdown();
  });
}

/** A reply: status, headers, the body as text and, when it parses, as JSON. */
export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/** One request to the file's server: `body` sent as JSON, or `o.raw` as it is. */
export function request(
  method: string,
  p: string,
  body?: unknown,
  o: { raw?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Reply> {
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

/** POST /v1/chat/completions. */
export const chat = (body: Record<string, unknown>) => request('POST', '/v1/chat/completions', body);

/** Data payloads of an SSE body, in order ('[DONE]' kept as a string). */
export function sseEvents(text: string): any[] {
  const out: unknown[] = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    if (!block.startsWith('data: ')) throw new Error(`not an SSE data event: ${JSON.stringify(block)}`);
    const d = block.slice(6);
    out.push(d === '[DONE]' ? d : JSON.parse(d));
  }
  return out;
}

/** A user message with a text part and an image_url part. */
export const userImage = (text: string, uri: string) => ({
  role: 'user',
  content: [
    { type: 'text', text },
    { type: 'image_url', image_url: { url: uri } },
  ],
});

/** Reference generation with the server's own model (called only while the server is idle). */
export async function expected(prompt: string, o: Partial<GenerateOptions> & { image?: Buffer } = {}) {
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

/** An OpenAI error reply: status, JSON content type, the error body with message, type, param and code. */
export function expectError(tt: Test, r: Reply, status: number, re: RegExp, code?: string, param?: string | null): void {
  tt.equal(r.status, status, `status ${status} (${r.text.slice(0, 200)})`);
  tt.match(r.headers['content-type'] ?? '', /application\/json/);
  tt.ok(r.json && typeof r.json.error === 'object', 'OpenAI error body');
  tt.match(r.json?.error?.message ?? '', re);
  tt.ok(typeof r.json?.error?.type === 'string');
  tt.ok('param' in (r.json?.error ?? {}) && 'code' in (r.json?.error ?? {}), 'param and code present');
  if (code !== undefined) tt.equal(r.json?.error?.code, code, `code ${code}`);
  if (param !== undefined) tt.equal(r.json?.error?.param, param, `param ${param}`);
}

/** Runs `llava serve ARGS` through commander in this process: what it wrote to stderr, the exit code it set,
 *  and what it threw (commander's exitOverride). */
export async function runServeCli(args: string[]): Promise<{ err: string; code: number | undefined; thrown?: Error }> {
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
