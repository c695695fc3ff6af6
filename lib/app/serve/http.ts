// http.ts — the HTTP plumbing of `llava serve`: reading a request body under a size limit (and as JSON),
// writing JSON responses and OpenAI error bodies, and the server-sent-events stream a streamed completion
// is written to. Knows nothing about models.
import type * as http from 'http';
import { ApiError, bad } from './protocol';

/** A complete JSON response. */
export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

/** An error response; when a response has already begun (a stream), it is only ended. */
export function sendError(res: http.ServerResponse, e: ApiError, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    if (!res.writableEnded) res.end();
    return;
  }
  sendJson(res, e.status, e.body(), headers);
}

/** JSON bodies may hold at most this many values ('[', '{' and ',' outside strings): JSON.parse of
 *  19 MB of `[0,0,...]` holds the event loop for half a second, while a chat request with a long history
 *  needs a few thousand. Counted as the bytes arrive, so the check itself never blocks. */
export const MAX_JSON_VALUES = 100_000;

/** Counts JSON value separators outside strings, chunk by chunk. */
export class JsonValueCounter {
  count = 0;
  private inString = false;
  private escaped = false;

  push(c: Buffer): void {
    let n = this.count;
    let inString = this.inString;
    let escaped = this.escaped;
    for (let i = 0; i < c.length; i++) {
      const b = c[i];
      if (inString) {
        if (escaped) escaped = false;
        else if (b === 0x5c) escaped = true;
        else if (b === 0x22) inString = false;
      } else if (b === 0x22) inString = true;
      else if (b === 0x2c || b === 0x5b || b === 0x7b) n++;
    }
    this.count = n;
    this.inString = inString;
    this.escaped = escaped;
  }
}

/** Reads the whole body; over `limit` bytes → ApiError 413 (the rest of the body is left to drain).
 *  `check` sees each chunk as it arrives and may throw an ApiError to refuse the body. */
export function readBody(req: http.IncomingMessage, limit: number, check?: (c: Buffer) => void): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): ApiError => new ApiError(413, `the request body is larger than ${limit} bytes`, null, 'request_too_large');
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume(); // discard
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const onData = (c: Buffer): void => {
      if (done) return;
      size += c.length;
      if (size > limit) {
        done = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      try {
        check?.(c);
      } catch (e) {
        done = true;
        chunks.length = 0;
        req.resume(); // discard the rest
        reject(e);
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => {
      if (!done) {
        done = true;
        resolve(Buffer.concat(chunks));
      }
    });
    req.on('error', (e) => {
      if (!done) {
        done = true;
        reject(e);
      }
    });
    req.on('close', () => {
      if (!done) {
        done = true;
        reject(new Error('the client closed the connection before the body was complete'));
      }
    });
  });
}

/** Reads the body as JSON: an empty body, invalid JSON or more than MAX_JSON_VALUES values is a 400, one
 *  over `limit` bytes a 413. */
export async function readJsonBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const counter = new JsonValueCounter();
  const raw = await readBody(req, limit, (c) => {
    counter.push(c);
    if (counter.count > MAX_JSON_VALUES)
      throw bad(`the request body holds more than ${MAX_JSON_VALUES} JSON values; a chat request needs far fewer`, null, 'too_many_values');
  });
  if (raw.length === 0) throw bad('the request body is empty; send a JSON object', null, 'invalid_json');
  const text = raw.toString('utf8');
  await new Promise((r) => setImmediate(r)); // a big body: let other requests in before parsing it
  try {
    return JSON.parse(text);
  } catch (e) {
    throw bad(`the request body is not valid JSON (${(e as Error).message})`, null, 'invalid_json');
  }
}

/** A server-sent-events response: `data: <json>` events (with an `event: <name>` line when named), closed
 *  by `data: [DONE]` for chat completions (`done`, the default) or by the end of the body (Responses API). */
export class EventStream {
  private readonly done: boolean;

  constructor(
    private readonly res: http.ServerResponse,
    o: { done?: boolean } = {},
  ) {
    this.done = o.done ?? true;
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
  }

  send(obj: unknown, event?: string): void {
    this.res.write(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(obj)}\n\n`);
  }

  /** An error event mid-stream as OpenAI sends it (`data: {"error": {...}}`, which the SDK raises as an
   *  APIError), then the end of the stream. */
  fail(e: ApiError): void {
    if (this.res.writableEnded) return;
    this.send(e.body());
    this.end();
  }

  end(): void {
    if (this.res.writableEnded) return;
    this.res.end(this.done ? 'data: [DONE]\n\n' : undefined);
  }
}
