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

/** Reads the whole body; over `limit` bytes → ApiError 413 (the rest of the body is left to drain). */
export function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
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

/** Reads the body as JSON: an empty body or invalid JSON is a 400, one over `limit` bytes a 413. */
export async function readJsonBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const raw = await readBody(req, limit);
  if (raw.length === 0) throw bad('the request body is empty; send a JSON object', null, 'invalid_json');
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw bad(`the request body is not valid JSON (${(e as Error).message})`, null, 'invalid_json');
  }
}

/** A server-sent-events response: `data: <json>` events, closed by `data: [DONE]`. */
export class EventStream {
  constructor(private readonly res: http.ServerResponse) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
  }

  send(obj: unknown): void {
    this.res.write(`data: ${JSON.stringify(obj)}\n\n`);
  }

  /** An error event (OpenAI's error object) mid-stream, then the end of the stream. */
  fail(e: ApiError): void {
    if (this.res.writableEnded) return;
    this.send(e.body().error);
    this.end();
  }

  end(): void {
    this.res.end('data: [DONE]\n\n');
  }
}
