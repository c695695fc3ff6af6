// openai.ts — the one client for OpenAI-compatible chat-completions APIs, used by the GPT-assisted data
// pipeline (datagen/) and the LLaVA-Bench judge (eval/judge.ts). Errors are ApiErrors reading `[openai] ...`.
//
// - Plain HTTP through Node's global fetch: POST {baseUrl}/chat/completions with {model, messages} plus
//   temperature / max_tokens when set; the answer is choices[0].message.content.
// - Key and base URL from the options, else $OPENAI_API_KEY / $OPENAI_BASE_URL (default
//   https://api.openai.com/v1, any compatible server works). No key is an error at construction.
// - 408, 429, 5xx, network errors and timeouts are retried up to maxRetries times with exponential backoff
//   (retryBaseMs · 2^attempt with jitter in [0.5, 1], capped at retryMaxMs; a Retry-After header, also
//   capped, wins). Other statuses fail at once with the server's message; 401/403/404 are `fatal` (a
//   wrong key, model or URL: a caller running many requests should stop).
// - `concurrency` caps the requests this client has in flight (queued callers wait their turn).

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
  /** Called before each retry (logging). */
  onRetry?: (info: { attempt: number; delayMs: number; reason: string }) => void;
  /** Environment to read the defaults from (default process.env). */
  env?: NodeJS.ProcessEnv;
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
}

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

/** POSTs to an OpenAI-compatible /chat/completions endpoint, retrying transient failures. */
export class OpenAIChatClient implements ChatCompleter {
  readonly model: string;
  readonly baseUrl: string;
  readonly url: string;
  readonly maxRetries: number;
  private readonly apiKey: string;
  private readonly o: ChatClientOptions;
  private readonly fetchFn: typeof fetch;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly limiter: Limiter | null;

  constructor(o: ChatClientOptions = {}) {
    const env = o.env ?? process.env;
    const key = o.apiKey ?? env.OPENAI_API_KEY;
    if (!key) throw new ApiError(`no API key: set OPENAI_API_KEY or pass --api-key${o.missingKeyHint ? ` ${o.missingKeyHint}` : ''}`, null, true);
    this.maxRetries = o.maxRetries ?? 5;
    if (!(Number.isInteger(this.maxRetries) && this.maxRetries >= 0))
      throw new RangeError(`[openai] maxRetries must be a non-negative integer (got ${o.maxRetries})`);
    if (o.concurrency !== undefined && !(Number.isInteger(o.concurrency) && o.concurrency >= 1))
      throw new RangeError(`[openai] concurrency must be a positive integer (got ${o.concurrency})`);
    this.apiKey = key;
    this.baseUrl = (o.baseUrl ?? env.OPENAI_BASE_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
    this.url = `${this.baseUrl}/chat/completions`;
    this.model = o.model ?? DEFAULT_MODEL;
    this.o = o;
    this.fetchFn = o.fetch ?? fetch;
    this.sleep = o.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.limiter = o.concurrency !== undefined ? new Limiter(o.concurrency) : null;
  }

  /** The request body sent for `messages`. */
  requestBody(messages: ChatMessage[]): Record<string, unknown> {
    return requestBody(this.model, messages, this.o);
  }

  complete(messages: ChatMessage[]): Promise<ChatCompletionResult> {
    return this.limiter ? this.limiter.run(() => this.send(messages)) : this.send(messages);
  }

  private backoff(attempt: number, retryAfter: number | null): number {
    const max = this.o.retryMaxMs ?? 60_000;
    if (retryAfter !== null) return Math.min(retryAfter, max);
    const base = (this.o.retryBaseMs ?? 1000) * 2 ** attempt;
    return Math.min(max, base * (0.5 + 0.5 * Math.random()));
  }

  private async send(messages: ChatMessage[]): Promise<ChatCompletionResult> {
    const body = JSON.stringify(this.requestBody(messages));
    const timeoutMs = this.o.timeoutMs ?? 300_000;
    for (let attempt = 0; ; attempt++) {
      let reason: string;
      let retryAfter: number | null = null;
      try {
        const res = await this.fetchFn(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.apiKey}` },
          body,
          signal: AbortSignal.timeout(timeoutMs),
        });
        const text = await res.text();
        if (res.ok) return this.parse(text, res.status, attempt);
        const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
        if (!retryable) {
          const fatal = res.status === 401 || res.status === 403 || res.status === 404;
          throw new ApiError(`HTTP ${res.status} from ${this.url}: ${errorText(text)}`, res.status, fatal);
        }
        reason = `HTTP ${res.status}: ${errorText(text)}`;
        retryAfter = retryAfterMs(res.headers.get('retry-after'));
      } catch (e) {
        if (e instanceof ApiError) throw e;
        const err = e as Error & { cause?: { message?: string } };
        reason =
          err.name === 'TimeoutError'
            ? `timed out after ${timeoutMs} ms`
            : `${err.message}${err.cause ? ` (${err.cause.message ?? String(err.cause)})` : ''}`;
      }
      if (attempt >= this.maxRetries) throw new ApiError(`request to ${this.url} failed after ${attempt + 1} attempt(s): ${reason}`, null, false);
      const delayMs = this.backoff(attempt, retryAfter);
      this.o.onRetry?.({ attempt: attempt + 1, delayMs, reason });
      await this.sleep(delayMs);
    }
  }

  private parse(text: string, status: number, attempt: number): ChatCompletionResult {
    let j: { choices?: { message?: { content?: unknown }; finish_reason?: unknown }[]; model?: unknown; usage?: unknown };
    try {
      j = JSON.parse(text);
    } catch {
      throw new ApiError(`${this.url}: response is not JSON: ${text.slice(0, 120)}`, status, false);
    }
    const c = j.choices?.[0];
    const content = c?.message?.content;
    if (!c || !c.message || (content !== null && typeof content !== 'string'))
      throw new ApiError(
        `${this.url}: response has no choices[0].message.content${c?.finish_reason ? ` (finish_reason ${String(c.finish_reason)})` : ''}`,
        status,
        false,
      );
    return {
      content: content as string | null,
      finishReason: typeof c.finish_reason === 'string' ? c.finish_reason : null,
      model: typeof j.model === 'string' ? j.model : null,
      usage: j.usage && typeof j.usage === 'object' ? (j.usage as Record<string, unknown>) : null,
      attempts: attempt + 1,
    };
  }
}
