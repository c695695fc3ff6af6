// server.ts — `llava serve`: one loaded LLaVA model behind a small HTTP server that speaks the OpenAI
// chat-completions protocol, so tools written for that API can use the model as a backend.
//
// Endpoints
//   GET  /health               {status:'ok', model, device, dtype, template, aspect, format, running, waiting,
//                               max_batch, prefix_cache}
//   GET  /v1/models            OpenAI list format with the one served model (also GET /v1/models/<id>)
//   POST /v1/chat/completions  OpenAI chat completions, streaming (SSE) or not
//   POST /v1/responses         OpenAI Responses API (text and one image), streaming or not (responses.ts)
//
// Decisions:
// - One model, one device, continuous batching: up to maxBatch completions (default 4; 1: one at a time)
//   decode together, one step for all per token; the others wait in arrival order and join as soon as a row
//   is free (inference/batcher.ts). A request whose client goes away while it waits never runs; one that
//   goes away mid-generation leaves the batch at the next step. The batch yields to the event loop between
//   steps, so the server keeps accepting meanwhile. A reply can differ from a lone run only by attention's
//   rounding (the batch blocks the sums differently).
// - Prefix caching (inference/prefix_cache.ts): the keys and values of finished requests are kept (up to
//   --prefix-cache positions, default the context length) and a prompt that begins as one of them did, with
//   the same image (a hash of its bytes), prefills only the rest: a chat's next turn skips the vision tower
//   and the earlier turns. usage.prompt_tokens_details.cached_tokens says how many positions were reused.
// - Everything that can be checked before the queue is: JSON, field types, message layout, the image
//   (decoded and preprocessed), the prompt length against the context. A request that passes these can
//   only fail on an internal error (500, or an SSE error event once streaming has started).
// - Prompts are built with the model's conversation template exactly as `llava chat` builds them
//   (conversation.ts: getTemplate / appendMessage / insertImageToken / render): the image goes into the
//   first user turn, earlier user/assistant pairs are history, the last message must come from the user.
//   A single user turn therefore renders the same string as chat's buildPrompt (processing/conversation.ts).
//   The template is the session's (processing/session.ts: the one the model was trained with, else for
//   llava-hf checkpoints their Jinja chat_template, which then renders the request, system text included).
// - System messages (role 'system' or 'developer') may only lead the conversation; several are joined with
//   '\n'. They replace the template's own system prompt for SINGLE, TWO and LLAMA_2 templates (an empty
//   one removes it). llava_hf has no system slot in conversation.ts; the text is put in front followed by
//   one space, as the llava-1.5-hf chat template prints a system turn ([unverified] against docs/reference.md).
//   The plain template has no place for one: 400.
// - Images: at most one per request, only as a `data:image/png|jpeg|webp|gif;base64,...` URI, only in the first
//   user message (LLaVA inserts its one image into the first user turn, docs/reference.md §9). Nothing is
//   ever fetched: http(s)/file URLs are a 400. The checkpoint is an LlavaSession (processing/session.ts), so
//   the vision tower, its preprocessor config and the aspect mode are those chat, eval and train use.
//   Literal `<image>` in message text is a 400 (it would become an image slot).
// - Defaults (docs/reference.md §9): temperature 0.2 (the LLaVA CLI / Gradio default; sampling iff > 0.001), top_p off,
//   max_tokens 512 (the CLI / Gradio default), capped as the model worker does at
//   min(requested, 1024, context − prompt positions); hitting any cap gives finish_reason 'length'.
//   Stop strings: the template's (`###` for SINGLE, `</s>` for TWO / LLAMA_2) plus the request's `stop`;
//   they end the reply and are removed from it. EOS and stop strings both give finish_reason 'stop'.
//   No text cut (the Gradio UI's 1536/1200-character cut is a UI rule, not the worker's): a prompt that
//   does not fit the context is a 400 `context_length_exceeded`.
// - The reply is trimmed as the reference decodes it (`.strip()`, generateText); the stream holds back
//   leading and trailing whitespace so that its deltas concatenate to exactly the non-streamed content.
// - usage.prompt_tokens counts the positions the prompt occupies with image rows spliced in;
//   completion_tokens counts every sampled token, the EOS token included.
// - `n` (chat completions, up to 16): n choices, each its own row of the batch, choice i sampled with seed
//   + i (so choice 0 is the n = 1 reply); usage counts the prompt once and every choice's tokens. Streamed,
//   each chunk names its choice's index and the finish chunks of all choices come at the end.
// - The request's `model` field is accepted whatever it names (clients often send a fixed name); responses
//   carry the served model's name. Unknown fields are ignored; known ones whose meaning we cannot honour
//   (tools, penalties, logit_bias, a non-text response_format) are a 400 rather than silently dropped.
//   logprobs / top_logprobs: logprobs.ts. Extensions: `top_k`, and `return_token_ids: true` (adds prompt_token_ids and each choice's
//   token_ids to a non-streamed response).
// - Errors use OpenAI's body {error:{message,type,param,code}}: 400 invalid_request_error, 404 unknown
//   route, 405 wrong method (with Allow), 413 body over the limit (default 20 MiB), 500 server_error, 503
//   while shutting down. A bad request never throws out of the handler.
// - One log line per request when its response closes: method, path, status, milliseconds, and for
//   completions the token counts and finish reason (or the error, or "client closed").
//
// Files: protocol.ts (request validation, prompt rendering, response shapes), http.ts (bodies, JSON, SSE),
// completion.ts (the shared completion path and POST /v1/chat/completions), responses.ts (POST /v1/responses
// on that path); this file holds the session, the routes, the per-request log line and the listening server.
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';
import type { AddressInfo } from 'net';
import { checkOptions, optionKeys } from '../../options';
import type { Device, DType } from '../../core/dtype';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import type { Tokenizer } from '../processing/tokenizer';
import type { AspectMode } from '../processing/image';
import { LlavaSession } from '../processing/session';
import { ApiError, modelCard } from './protocol';
import { sendError, sendJson } from './http';
import { CHAT_API, Completions, type Api, type LogInfo } from './completion';
import { contextLength } from '../inference/generate';
import { RESPONSES_API } from './responses';
import { textCompletionsApi, type TextRequest } from './text_completions';
import { Guard, requestId, requireJson, serverLimits } from './guard';

// The pieces other modules (and the tests) know by this module's name.
export {
  ApiError,
  DEFAULT_MAX_TOKENS,
  DEFAULT_TEMPERATURE,
  MAX_STOP_STRINGS,
  MAX_TOKENS_CAP,
  TrimmedStream,
  decodeDataUri,
  parseChatRequest,
  renderChatPrompt,
} from './protocol';
export type { ChatRequest } from './protocol';
export { requestPixels } from './completion';
export { parseCors, DEFAULT_MAX_CONNECTIONS, DEFAULT_HEADERS_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS } from './guard';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 8000;
export const DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024;
/** Decoded images larger than this many pixels are refused before decoding (decompression bombs). */
export const DEFAULT_MAX_IMAGE_PIXELS = 50_000_000;
/** Completions decoded together (continuous batching); more wait for a free row. */
export const DEFAULT_MAX_BATCH = 4;

export interface ServeOptions {
  /** Model directory (loaded once, disposed when the server closes). Give this or `loaded`. */
  model?: string;
  /** An already loaded model: the server uses it and never disposes it. `dir` finds the preprocessor
   *  config and names the model. */
  loaded?: { model: LlavaForConditionalGeneration; tokenizer: Tokenizer; dir: string };
  /** Conversation template (default: as `llava chat` picks it, from the model format / name). */
  template?: string;
  device?: string;
  dtype?: string;
  /** CLIP directory for original llava_llama checkpoints (default: the config's mm_vision_tower). */
  visionTower?: string;
  /** Image preprocessing (default: from the model, as chat). */
  aspect?: AspectMode;
  /** LoRA adapter in `model` over this base; int8 / NF4 language model (session.ts WeightOptions). */
  modelBase?: string;
  load8bit?: boolean;
  load4bit?: boolean;
  /** Name in /v1/models and in responses (default: the model directory's name, as the reference). */
  modelName?: string;
  /** Completions decoded together in one batch (default 4); 1 runs them one at a time. */
  maxBatch?: number;
  /** Positions of finished requests' keys and values kept so that a later prompt beginning the same way
   *  (a chat's next turn, the same image) prefills only the rest (default: the model's context length;
   *  0: off). */
  prefixCache?: number;
  /** Prompt columns prefilled per turn while other completions are decoding, so they keep streaming while a
   *  long prompt goes in (default 512; 0: whole prompts). */
  prefillChunk?: number;
  maxBodyBytes?: number;
  maxImagePixels?: number;
  /** Bearer key for every route but /health (default: none; the CLI also reads LLAVA_API_KEY). */
  apiKey?: string;
  /** Origins allowed to call from a browser ('*' = any; default: none, a request with Origin is a 403). */
  cors?: string[] | '*';
  maxConnections?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** One line per request (default: stderr). */
  log?: (line: string) => void;
}
const SERVE_KEYS = optionKeys<ServeOptions>({
  model: true,
  loaded: true,
  template: true,
  device: true,
  dtype: true,
  visionTower: true,
  aspect: true,
  modelBase: true,
  load8bit: true,
  load4bit: true,
  modelName: true,
  maxBatch: true,
  prefixCache: true,
  prefillChunk: true,
  maxBodyBytes: true,
  maxImagePixels: true,
  apiKey: true,
  cors: true,
  maxConnections: true,
  headersTimeoutMs: true,
  requestTimeoutMs: true,
  log: true,
});

export interface ServeStats {
  running: number;
  waiting: number;
  /** Completions that ran to the end (any finish reason). */
  completed: number;
  /** Completions stopped because their client went away (while running or waiting). */
  aborted: number;
  /** Highest number of completions ever generating at the same time (at most maxBatch). */
  maxRunning: number;
}

export interface ServeState {
  readonly modelName: string;
  readonly template: string;
  /** Image aspect mode, and one line saying which template and aspect are used and why. */
  readonly aspect: AspectMode;
  readonly describe: string;
  readonly device: Device;
  readonly dtype: DType;
  readonly format: string;
  readonly contextLength: number;
  /** Completions decoded together, the prefix cache's size in positions (0: off), and the prompt columns
   *  prefilled per turn while others decode (0: whole prompts). */
  readonly maxBatch: number;
  readonly prefixCache: number;
  readonly prefillChunk: number;
  readonly model: LlavaForConditionalGeneration;
  readonly tokenizer: Tokenizer;
  /** The checkpoint as the server opened it (model, tokenizer, image processor, template, aspect). */
  readonly session: LlavaSession;
  stats(): ServeStats;
  /** Refuse new completions (503), stop queued and running ones, wait for the batch to empty, free the
   *  model if the server loaded it. Does not close the listening socket (startServer's close() does). */
  shutdown(): Promise<void>;
}

export interface LlavaServer extends http.Server {
  readonly llava: ServeState;
}

/** The session a server with these options serves: a loaded model is wrapped (never freed), a model
 *  directory is loaded (and freed at shutdown). */
export function openServeSession(opts: ServeOptions): LlavaSession {
  const pick = { template: opts.template, visionTower: opts.visionTower, aspect: opts.aspect };
  if (opts.loaded) return LlavaSession.fromModel(opts.loaded.model, opts.loaded.tokenizer, opts.loaded.dir, pick);
  if (!opts.model) throw new Error('[serve] a model directory is required');
  const o = opts;
  return LlavaSession.load(opts.model, {
    ...pick,
    device: opts.device,
    dtype: opts.dtype,
    modelBase: o.modelBase,
    load8bit: o.load8bit,
    load4bit: o.load4bit,
  });
}

/** What the routes need. */
interface App {
  session: LlavaSession;
  completions: Completions;
  guard: Guard;
  modelName: string;
  /** /v1/models `created`: the model's config.json mtime (seconds), else the server's start time. */
  created: number;
  /** POST /v1/completions (text_completions.ts). */
  text: Api<TextRequest>;
}

type Handler = () => Promise<void> | void;

/** Dispatches one request by path and method; unknown routes and methods throw ApiError 404 / 405. */
function route(app: App, req: http.IncomingMessage, res: http.ServerResponse, info: LogInfo): Promise<void> | void {
  const method = req.method ?? 'GET';
  const pathname = (req.url ?? '/').split('?')[0];
  if (app.guard.check(req, res, pathname)) return; // a CORS preflight, answered
  const allow = (methods: string[], fn: Handler): Promise<void> | void => {
    if (!methods.includes(method)) {
      req.resume();
      throw Object.assign(
        new ApiError(405, `method ${method} is not allowed on ${pathname} (allowed: ${methods.join(', ')})`, null, 'method_not_allowed'),
        { allow: methods },
      );
    }
    return fn();
  };
  const get = ['GET', 'HEAD'];
  if (pathname === '/health') return allow(get, () => sendJson(res, 200, health(app)));
  if (pathname === '/v1/models') return allow(get, () => sendJson(res, 200, { object: 'list', data: [modelCard(app.modelName, app.created)] }));
  if (pathname.startsWith('/v1/models/')) {
    const raw = pathname.slice('/v1/models/'.length);
    let wanted: string;
    try {
      wanted = decodeURIComponent(raw);
    } catch {
      wanted = raw;
    }
    return allow(get, () => {
      if (wanted !== app.modelName)
        throw new ApiError(404, `the model '${wanted}' does not exist (this server serves '${app.modelName}')`, 'model', 'model_not_found');
      sendJson(res, 200, modelCard(app.modelName, app.created));
    });
  }
  if (pathname === '/v1/chat/completions')
    return allow(['POST'], () => {
      requireJson(req);
      return app.completions.handle(CHAT_API, req, res, info);
    });
  if (pathname === '/v1/responses')
    return allow(['POST'], () => {
      requireJson(req);
      return app.completions.handle(RESPONSES_API, req, res, info);
    });
  if (pathname === '/v1/completions')
    return allow(['POST'], () => {
      requireJson(req);
      return app.completions.handle(app.text, req, res, info);
    });
  req.resume();
  throw new ApiError(
    404,
    `unknown route ${method} ${pathname} (GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /v1/responses)`,
    null,
    'not_found',
  );
}

function health(app: App): Record<string, unknown> {
  const { session, completions } = app;
  return {
    status: completions.isClosing ? 'shutting_down' : 'ok',
    model: app.modelName,
    device: session.device,
    dtype: session.dtype,
    template: session.template,
    aspect: session.aspect,
    format: session.format,
    running: completions.batcher.running,
    waiting: completions.batcher.waiting,
    prefilling: completions.batcher.prefilling,
    max_batch: completions.batcher.maxBatch,
    prefill_chunk: completions.batcher.prefillChunk,
    prefix_cache: completions.prefixStats(),
  };
}

/** The request listener: routes, turns anything thrown into an error response, and writes one log line
 *  once both the response has closed and the handler has returned (an aborted generation notices the
 *  disconnect only at its next token, and says how far it got). */
function requestListener(app: App, log: (line: string) => void): http.RequestListener {
  return (req, res) => {
    const t0 = Date.now();
    const info: LogInfo = {};
    const id = requestId(req, res);
    const closed = new Promise<void>((r) => res.once('close', () => r()));
    req.on('error', () => {}); // a reset connection: nothing to answer
    res.on('error', () => {});
    const handled = Promise.resolve()
      .then(() => route(app, req, res, info))
      .catch((e: unknown) => {
        const api = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`);
        info.note = `error: ${e instanceof ApiError ? api.message : ((e as Error)?.stack ?? String(e))}`;
        const allowed = (e as { allow?: string[] }).allow;
        const headers = { ...((e as { headers?: Record<string, string> }).headers ?? {}), ...(allowed ? { Allow: allowed.join(', ') } : {}) };
        try {
          sendError(res, api, headers);
        } catch {
          res.destroy();
        }
      });
    void Promise.all([closed, handled]).then(() => {
      const status = res.headersSent ? res.statusCode : 0;
      const extra = info.note ?? (res.writableFinished ? '' : 'client closed');
      log(`[serve] ${req.method} ${req.url} ${status || '-'} ${Date.now() - t0}ms${extra ? ' ' + extra : ''} id=${id}`);
    });
  };
}

/** Creates the HTTP server (not listening) with the model loaded. */
export function createServer(opts: ServeOptions): LlavaServer {
  checkOptions('serve', opts, SERVE_KEYS);
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const limits = serverLimits(opts); // checked before the model loads
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  if (!(Number.isInteger(maxBatch) && maxBatch >= 1)) throw new Error(`[serve] maxBatch must be an integer >= 1 (got ${maxBatch})`);
  if (opts.prefixCache !== undefined && !(Number.isInteger(opts.prefixCache) && opts.prefixCache >= 0))
    throw new Error(`[serve] prefixCache must be an integer >= 0 (got ${opts.prefixCache})`);
  if (opts.prefillChunk !== undefined && !(Number.isInteger(opts.prefillChunk) && opts.prefillChunk >= 0))
    throw new Error(`[serve] prefillChunk must be an integer >= 0 (got ${opts.prefillChunk})`);
  const session = openServeSession(opts);
  const modelName = opts.modelName ?? session.name;
  const completions = new Completions(session, {
    modelName,
    maxBodyBytes: opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    maxImagePixels: opts.maxImagePixels ?? DEFAULT_MAX_IMAGE_PIXELS,
    maxBatch,
    prefixCache: opts.prefixCache ?? contextLength(session.model),
    prefillChunk: opts.prefillChunk,
  });
  const guard = new Guard({ apiKey: opts.apiKey, cors: opts.cors });
  const app: App = { session, completions, guard, modelName, created: createdTime(session.dir), text: textCompletionsApi(session.tokenizer) };
  const server = http.createServer(
    // Node checks the two timeouts only this often (default 30 s): check at a quarter of the shorter one.
    { connectionsCheckingInterval: Math.max(10, Math.min(30_000, Math.floor(Math.min(limits.headersTimeout, limits.requestTimeout) / 4))) },
    requestListener(app, log),
  ) as LlavaServer;
  Object.assign(server, limits);
  server.on('drop', (d?: { remoteAddress?: string }) =>
    log(`[serve] connection from ${d?.remoteAddress ?? '?'} dropped: ${limits.maxConnections} connections are open (--max-connections)`),
  );

  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // headersTimeout / requestTimeout: the client was too slow to send its request
      log(`[serve] request timed out (headers or body not received in time)`);
      socket.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    log(`[serve] malformed HTTP request: ${err.message}`);
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });

  let closing: Promise<void> | null = null;
  const shutdown = (): Promise<void> =>
    (closing ??= (async () => {
      await completions.shutdown();
      session.dispose(); // frees the model only when this server loaded it
    })());
  server.on('close', () => void shutdown());

  const state: ServeState = {
    modelName,
    template: session.template,
    aspect: session.aspect,
    describe: session.describe(),
    device: session.device,
    dtype: session.dtype,
    format: session.format,
    contextLength: completions.contextLength,
    maxBatch: completions.batcher.maxBatch,
    prefixCache: completions.batcher.prefix?.maxPositions ?? 0,
    prefillChunk: completions.batcher.prefillChunk,
    model: session.model,
    tokenizer: session.tokenizer,
    session,
    stats: () => ({
      running: completions.batcher.running,
      waiting: completions.batcher.waiting,
      completed: completions.completed,
      aborted: completions.aborted,
      maxRunning: completions.batcher.maxRunning,
    }),
    shutdown,
  };
  Object.defineProperty(server, 'llava', { value: state, enumerable: true });
  return server;
}

/** The model's `created` time in /v1/models: config.json's mtime in whole seconds, else now. */
function createdTime(dir: string): number {
  try {
    return Math.floor(fs.statSync(path.join(dir, 'config.json')).mtimeMs / 1000);
  } catch {
    return Math.floor(Date.now() / 1000);
  }
}

export interface StartOptions extends ServeOptions {
  host?: string;
  port?: number;
}
const START_KEYS = optionKeys<StartOptions>({ ...SERVE_KEYS, host: true, port: true });

export interface RunningServer {
  server: LlavaServer;
  host: string;
  port: number;
  url: string;
  /** Stops listening, stops queued and running completions, closes connections, frees the model. */
  close(): Promise<void>;
}

/** Loads the model, listens (default 127.0.0.1:8000; port 0 = any free port), resolves when ready. */
export async function startServer(opts: StartOptions): Promise<RunningServer> {
  checkOptions('serve', opts, START_KEYS);
  const { host = DEFAULT_HOST, port = DEFAULT_PORT, ...serveOpts } = opts;
  if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) throw new Error(`[serve] port must be an integer in 0..65535 (got ${port})`);
  const server = createServer(serveOpts);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    await server.llava.shutdown();
    throw new Error(`[serve] cannot listen on ${host}:${port}: ${(e as Error).message}`);
  }
  const addr = server.address() as AddressInfo;
  const shownHost = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  let closed: Promise<void> | null = null;
  return {
    server,
    host: addr.address,
    port: addr.port,
    url: `http://${shownHost}:${addr.port}`,
    close: () => {
      closed ??= (async () => {
        const stopped = new Promise<void>((r) => server.close(() => r()));
        await server.llava.shutdown(); // aborts the running completion; its connection then ends
        server.closeAllConnections();
        await stopped;
      })();
      return closed;
    },
  };
}
