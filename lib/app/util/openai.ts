// openai.ts — the one client for OpenAI-compatible chat-completions APIs, used by the GPT-assisted data
// pipeline (datagen/) and the LLaVA-Bench judge (eval/judge.ts): the official `openai` SDK behind the
// small interface those callers use. Errors are ApiErrors reading `[openai] ...`.
//
// - The SDK sends POST {baseUrl}/chat/completions with {model, messages} plus temperature / max_tokens when
//   set; the answer is choices[0].message.content.
// - Key and base URL from the options, else $OPENAI_API_KEY / $OPENAI_BASE_URL (default
//   https://api.openai.com/v1, any compatible server works). No key is an error at construction.
// - Retries are the SDK's: 408, 409, 429, 5xx (or what an x-should-retry header says), connection errors
//   and timeouts, up to maxRetries times. Only the wait before an HTTP retry is ours: the server's
//   Retry-After (capped at retryMaxMs), else retryBaseMs · 2^attempt with jitter in [0.5, 1], capped;
//   it reaches the SDK as a retry-after-ms header on the failed response, which the SDK honours. After a
//   connection error or a timeout the SDK waits its own backoff (0.5 s doubling up to 8 s, less up to 25%
//   jitter). onRetry hears of every retry before its wait, with the reason.
// - The SDK's typed errors are mapped to ApiError: a non-retryable status fails at once with the server's
//   message ('HTTP 400 from <url>: ...'; 401/403/404 are `fatal`: a wrong key, model or URL, a caller
//   running many requests should stop); retries that run out say 'failed after N attempt(s): <reason>'.
// - `concurrency` caps the requests this client has in flight (queued callers wait their turn).
// - The SDK is loaded when the first client is made, not when this file is: the package index reaches this
//   file, and a program that never calls a chat API (or a deployment without the package) should not load
//   20 MB of SDK for nothing.
import type OpenAI from 'openai';
import { checkOptions, optionKeys } from '../../options';

type OpenAIModule = typeof import('openai');
let openaiModule: OpenAIModule | null = null;
function openaiSdk(): OpenAIModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (openaiModule ??= require('openai') as OpenAIModule);
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export const DEFAULT_BASE_URL = 'https://api.openai.com/v1';

/** The model of LLaVA's published data and judge numbers, the client's default. */
export const DEFAULT_MODEL = 'gpt-4-0314';

export interface ChatCompletionResult {
  /** choices[0].message.content; null when the server sent a null content (e.g. a filtered reply). */
  content: string | null;
  finishReason: string | null;
  model: string | null;
  usage: Record<string, unknown> | null;
  /** HTTP attempts used (1 = no retry). */
  attempts: number;
}

/** What callers need from a client (lets tests and other back ends plug in). */
export interface ChatCompleter {
  readonly model: string;
  complete(messages: ChatMessage[]): Promise<ChatCompletionResult>;
}

/** A failed API call. `status` is the HTTP status when there was a response; `fatal` for 401/403/404. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
    readonly fatal: boolean,
  ) {
    super(`[openai] ${message}`);
    this.name = 'ApiError';
  }
}

export interface ChatClientOptions {
  /** Default: $OPENAI_API_KEY. Required. */
  apiKey?: string;
  /** Default: $OPENAI_BASE_URL, else https://api.openai.com/v1 (requests go to <base>/chat/completions). */
  baseUrl?: string;
  /** Default DEFAULT_MODEL ('gpt-4-0314'). */
  model?: string;
  /** Omitted from the request when unset (the server's default applies). */
  temperature?: number;
  maxTokens?: number;
  /** Retries after the first attempt (default 5). */
  maxRetries?: number;
  /** First backoff in ms (default 1000). */
  retryBaseMs?: number;
  /** Backoff ceiling, also the cap on a Retry-After header (default 60000). */
  retryMaxMs?: number;
  /** Per-request timeout in ms (default 300000). */
  timeoutMs?: number;
  /** Requests in flight at most (default: no limit). */
  concurrency?: number;
  /** Appended to the "no API key" message (what else the user can do). */
  missingKeyHint?: string;
  /** Called before each retry's wait (logging). After a connection error or timeout, delayMs is the
   *  SDK's nominal backoff (its jitter may shorten it by up to 25%). */
  onRetry?: (info: { attempt: number; delayMs: number; reason: string }) => void;
  /** Environment to read the defaults from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** The fetch the SDK uses underneath (default: the global fetch). */
  fetch?: typeof fetch;
}
const CLIENT_KEYS = optionKeys<ChatClientOptions>({
  apiKey: true,
  baseUrl: true,
  model: true,
  temperature: true,
  maxTokens: true,
  maxRetries: true,
  retryBaseMs: true,
  retryMaxMs: true,
  timeoutMs: true,
  concurrency: true,
  missingKeyHint: true,
  onRetry: true,
  env: true,
  fetch: true,
});

/** The JSON body of a chat-completions request. */
export function requestBody(model: string, messages: ChatMessage[], o: { temperature?: number; maxTokens?: number } = {}): Record<string, unknown> {
  const body: Record<string, unknown> = { model, messages };
  if (o.temperature !== undefined) body.temperature = o.temperature;
  if (o.maxTokens !== undefined) body.max_tokens = o.maxTokens;
  return body;
}

function retryAfterMs(h: string | null): number | null {
  if (!h) return null;
  const s = Number(h);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const d = Date.parse(h);
  return Number.isFinite(d) ? Math.max(0, d - Date.now()) : null;
}

function errorText(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } | string };
    if (typeof j.error === 'string') return j.error;
    if (j.error && typeof j.error.message === 'string') return j.error.message;
  } catch {
    // not JSON
  }
  return body.slice(0, 200).replace(/\s+/g, ' ').trim() || '(empty body)';
}

/** A counting semaphore. */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** The SDK's rule for retrying a response (client.js shouldRetry). */
function sdkRetries(res: Response): boolean {
  const h = res.headers.get('x-should-retry');
  if (h === 'true' || h === 'false') return h === 'true';
  return res.status === 408 || res.status === 409 || res.status === 429 || res.status >= 500;
}

/** One complete() call's view of the SDK's attempts: counts them, remembers why the last one failed, sets
 *  the wait before an HTTP retry and tells onRetry. */
class Attempts {
  count = 0;
  reason = '';
  lastStatus: number | null = null;

  constructor(
    private readonly c: OpenAIChatClient,
    private readonly base: typeof fetch,
  ) {}

  readonly fetch = async (url: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const attempt = this.count++;
    const willRetry = attempt < this.c.maxRetries;
    let res: Response;
    try {
      res = await this.base(url, init);
    } catch (e) {
      const err = e as Error & { cause?: { message?: string } };
      this.reason =
        err.name === 'AbortError' || err.name === 'TimeoutError'
          ? `timed out after ${this.c.timeoutMs} ms`
          : `${err.message}${err.cause ? ` (${err.cause.message ?? String(err.cause)})` : ''}`;
      this.lastStatus = null;
      // The SDK retries every connection error and timeout, after its own backoff.
      if (willRetry) this.c.notifyRetry({ attempt: attempt + 1, delayMs: Math.min(8000, 500 * 2 ** attempt), reason: this.reason });
      throw e;
    }
    if (res.ok) return res;
    const text = await res.text();
    this.lastStatus = res.status;
    this.reason = `HTTP ${res.status}: ${errorText(text)}`;
    const headers = new Headers(res.headers);
    if (willRetry && sdkRetries(res)) {
      const delayMs = this.c.backoff(attempt, retryAfterMs(res.headers.get('retry-after')));
      headers.set('retry-after-ms', String(delayMs));
      headers.delete('retry-after');
      this.c.notifyRetry({ attempt: attempt + 1, delayMs, reason: this.reason });
    }
    return new Response(text, { status: res.status, statusText: res.statusText, headers });
  };
}

/** Chat completions through the official SDK, with a concurrency gate. */
export class OpenAIChatClient implements ChatCompleter {
  readonly model: string;
  readonly baseUrl: string;
  readonly url: string;
  readonly maxRetries: number;
  readonly timeoutMs: number;
  private readonly o: ChatClientOptions;
  private readonly sdk: OpenAI;
  private readonly baseFetch: typeof fetch;
  private readonly limiter: Limiter | null;

  constructor(o: ChatClientOptions = {}) {
    checkOptions('openai', o, CLIENT_KEYS);
    const env = o.env ?? process.env;
    const key = o.apiKey ?? env.OPENAI_API_KEY;
    if (!key) throw new ApiError(`no API key: set OPENAI_API_KEY or pass --api-key${o.missingKeyHint ? ` ${o.missingKeyHint}` : ''}`, null, true);
    this.maxRetries = o.maxRetries ?? 5;
    if (!(Number.isInteger(this.maxRetries) && this.maxRetries >= 0))
      throw new RangeError(`[openai] maxRetries must be a non-negative integer (got ${o.maxRetries})`);
    if (o.concurrency !== undefined && !(Number.isInteger(o.concurrency) && o.concurrency >= 1))
      throw new RangeError(`[openai] concurrency must be a positive integer (got ${o.concurrency})`);
    this.timeoutMs = o.timeoutMs ?? 300_000;
    if (!(Number.isInteger(this.timeoutMs) && this.timeoutMs >= 1))
      throw new RangeError(`[openai] timeoutMs must be a positive integer (got ${o.timeoutMs})`);
    this.baseUrl = (o.baseUrl ?? env.OPENAI_BASE_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
    this.url = `${this.baseUrl}/chat/completions`;
    this.model = o.model ?? DEFAULT_MODEL;
    this.o = o;
    this.baseFetch = o.fetch ?? fetch;
    // Everything from the options or `env`, nothing from process.env behind our back.
    this.sdk = new (openaiSdk().OpenAI)({
      apiKey: key,
      baseURL: this.baseUrl,
      organization: env.OPENAI_ORG_ID ?? null,
      project: env.OPENAI_PROJECT_ID ?? null,
      maxRetries: this.maxRetries,
      timeout: this.timeoutMs,
    });
    this.limiter = o.concurrency !== undefined ? new Limiter(o.concurrency) : null;
  }

  /** The request body sent for `messages`. */
  requestBody(messages: ChatMessage[]): Record<string, unknown> {
    return requestBody(this.model, messages, this.o);
  }

  complete(messages: ChatMessage[]): Promise<ChatCompletionResult> {
    return this.limiter ? this.limiter.run(() => this.send(messages)) : this.send(messages);
  }

  /** The wait before HTTP retry number attempt + 1 (0-based attempt). */
  backoff(attempt: number, retryAfter: number | null): number {
    const max = this.o.retryMaxMs ?? 60_000;
    if (retryAfter !== null) return Math.round(Math.min(retryAfter, max));
    const base = (this.o.retryBaseMs ?? 1000) * 2 ** attempt;
    return Math.round(Math.min(max, base * (0.5 + 0.5 * Math.random())));
  }

  notifyRetry(info: { attempt: number; delayMs: number; reason: string }): void {
    this.o.onRetry?.(info);
  }

  private async send(messages: ChatMessage[]): Promise<ChatCompletionResult> {
    const attempts = new Attempts(this, this.baseFetch);
    let reply: unknown;
    try {
      reply = await this.sdk
        .withOptions({ fetch: attempts.fetch })
        .chat.completions.create(this.requestBody(messages) as unknown as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    } catch (e) {
      throw this.mapError(e, attempts);
    }
    return this.parse(reply, attempts.count);
  }

  /** The SDK's error as an ApiError with our wording. */
  private mapError(e: unknown, a: Attempts): ApiError {
    const tries = Math.max(1, a.count);
    const { APIError, APIConnectionError } = openaiSdk();
    if (e instanceof APIError && !(e instanceof APIConnectionError) && typeof e.status === 'number') {
      const retryable = e.status === 408 || e.status === 409 || e.status === 429 || e.status >= 500;
      if (retryable) return new ApiError(`request to ${this.url} failed after ${tries} attempt(s): ${a.reason}`, e.status, false);
      const fatal = e.status === 401 || e.status === 403 || e.status === 404;
      return new ApiError(`HTTP ${e.status} from ${this.url}: ${a.reason.replace(/^HTTP \d+: /, '')}`, e.status, fatal);
    }
    if (e instanceof APIConnectionError)
      return new ApiError(`request to ${this.url} failed after ${tries} attempt(s): ${a.reason || e.message}`, null, false);
    return new ApiError(`${this.url}: ${(e as Error)?.message ?? String(e)}`, a.lastStatus, false);
  }

  private parse(reply: unknown, attempts: number): ChatCompletionResult {
    const j = (reply ?? {}) as { choices?: { message?: { content?: unknown }; finish_reason?: unknown }[]; model?: unknown; usage?: unknown };
    if (typeof j !== 'object') throw new ApiError(`${this.url}: response is not JSON: ${String(reply).slice(0, 120)}`, 200, false);
    const c = j.choices?.[0];
    const content = c?.message?.content;
    if (!c || !c.message || (content !== null && typeof content !== 'string'))
      throw new ApiError(
        `${this.url}: response has no choices[0].message.content${c?.finish_reason ? ` (finish_reason ${String(c.finish_reason)})` : ''}`,
        200,
        false,
      );
    return {
      content: content as string | null,
      finishReason: typeof c.finish_reason === 'string' ? c.finish_reason : null,
      model: typeof j.model === 'string' ? j.model : null,
      usage: j.usage && typeof j.usage === 'object' ? (j.usage as Record<string, unknown>) : null,
      attempts,
    };
  }
}
