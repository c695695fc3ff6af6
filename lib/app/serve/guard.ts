// guard.ts — what `llava serve` checks about a request before routing it: the request id it answers with,
// the Origin header and CORS, the API key, and the content type of a POST body; and the server's connection
// cap and timeouts (serverLimits). Knows nothing about models.
//
// Decisions:
// - Every response carries `X-Request-Id`: the client's own when it sent a sane one (1..128 visible ASCII
//   characters), else a fresh UUID. It also goes into the log line.
// - Origin: a browser sends it on cross-origin requests (and on same-origin POSTs; this server serves no
//   pages, so any Origin is a foreign page). A request with an Origin that --cors does not allow is a 403,
//   whatever its route, so a page on another site can neither read answers nor spend the model's time
//   (a "simple" cross-origin POST with Content-Type text/plain needs no preflight). Without --cors no
//   origin is allowed. An allowed origin gets Access-Control-Allow-Origin (its own value, or `*` when
//   --cors is `*`), and its preflight OPTIONS is answered 204 with the allowed methods and headers.
// - API key: with --api-key (or LLAVA_API_KEY), every route but /health needs `Authorization: Bearer KEY`
//   (401 invalid_api_key otherwise, with WWW-Authenticate). The two keys are compared as SHA-256 digests
//   with crypto.timingSafeEqual, so the time taken says nothing about the key, its length included.
//   /health stays open for load balancers and says nothing a client could misuse (model name, queue).
//   CORS preflights are answered before the key check (browsers never send credentials on them).
// - POST bodies must be declared `application/json` (charset, if given, utf-8): anything else is a 415.
import * as crypto from 'crypto';
import type * as http from 'http';
import { ApiError } from './protocol';

export interface GuardOptions {
  /** Bearer key every route but /health requires; undefined or '' = no authentication. */
  apiKey?: string;
  /** Origins allowed to call the server from a browser: a list of exact origins, or '*' for any. */
  cors?: string[] | '*';
}

const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;
const PREFLIGHT_MAX_AGE_S = 600;

/** The response's request id: the client's when sane, else a new UUID; set on the response at once. */
export function requestId(req: http.IncomingMessage, res: http.ServerResponse): string {
  const given = req.headers['x-request-id'];
  const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : crypto.randomUUID();
  res.setHeader('X-Request-Id', id);
  return id;
}

/** Parses --cors: '*' or a comma list of origins (scheme://host[:port], no path). Throws on a bad entry. */
export function parseCors(spec: string): string[] | '*' {
  if (spec.trim() === '*') return '*';
  const list = spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) throw new Error('[serve] --cors needs "*" or a comma-separated list of origins');
  for (const o of list) {
    let u: URL | null = null;
    try {
      u = new URL(o);
    } catch {
      u = null;
    }
    if (!u || !/^https?:$/.test(u.protocol) || u.origin !== o)
      throw new Error(`[serve] --cors: '${o}' is not an origin (scheme://host[:port], e.g. http://localhost:3000)`);
  }
  return list;
}

/** An API key as SHA-256 digest (fixed length, so timingSafeEqual applies whatever was sent). */
const digest = (s: string): Buffer => crypto.createHash('sha256').update(s, 'utf8').digest();

export class Guard {
  private readonly keyDigest: Buffer | null;

  constructor(private readonly o: GuardOptions) {
    this.keyDigest = o.apiKey ? digest(o.apiKey) : null;
  }

  get requiresKey(): boolean {
    return this.keyDigest !== null;
  }

  private originAllowed(origin: string): boolean {
    const cors = this.o.cors;
    return cors === '*' || (Array.isArray(cors) && cors.includes(origin));
  }

  /**
   * Checks a request before routing. Returns true when the request has been answered here (a preflight);
   * throws ApiError 403 (origin) or 401 (key); otherwise sets the CORS headers and returns false.
   */
  check(req: http.IncomingMessage, res: http.ServerResponse, pathname: string): boolean {
    const origin = req.headers.origin;
    if (origin !== undefined) {
      if (!this.originAllowed(origin)) {
        req.resume();
        throw new ApiError(403, `requests from origin '${origin}' are not allowed (see --cors)`, null, 'origin_not_allowed');
      }
      res.setHeader('Access-Control-Allow-Origin', this.o.cors === '*' ? '*' : origin);
      res.setHeader('Vary', 'Origin');
      res.setHeader('Access-Control-Expose-Headers', 'X-Request-Id');
      if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
        req.resume();
        res.writeHead(204, {
          'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
          'Access-Control-Allow-Headers': 'Authorization, Content-Type, X-Request-Id',
          'Access-Control-Max-Age': String(PREFLIGHT_MAX_AGE_S),
          'Content-Length': '0',
        });
        res.end();
        return true;
      }
    }
    if (this.keyDigest && pathname !== '/health') {
      const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '');
      if (!m || !crypto.timingSafeEqual(digest(m[1]), this.keyDigest)) {
        req.resume();
        throw Object.assign(
          new ApiError(401, m ? 'incorrect API key provided' : "missing API key: send 'Authorization: Bearer <key>'", null, 'invalid_api_key'),
          { headers: { 'WWW-Authenticate': 'Bearer' } },
        );
      }
    }
    return false;
  }
}

/** A POST body must be declared JSON (charset utf-8 if any); else ApiError 415. */
export function requireJson(req: http.IncomingMessage): void {
  const ct = req.headers['content-type'] ?? '';
  const [type, ...params] = ct.split(';').map((s) => s.trim().toLowerCase());
  const charset = params
    .find((p) => p.startsWith('charset='))
    ?.slice('charset='.length)
    .replace(/"/g, '');
  if (type !== 'application/json' || (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8')) {
    req.resume();
    throw new ApiError(
      415,
      `the request body must be sent as Content-Type: application/json (got '${ct || 'none'}')`,
      null,
      'unsupported_media_type',
    );
  }
}

/** Open connections beyond this many are closed at once (server.maxConnections). */
export const DEFAULT_MAX_CONNECTIONS = 64;
/** A client must send its request headers within this many milliseconds (server.headersTimeout). */
export const DEFAULT_HEADERS_TIMEOUT_MS = 30_000;
/** ... and its whole request, body included, within this many (server.requestTimeout; not the answer). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;

/** Connection cap and timeouts, validated (Node wants headersTimeout <= requestTimeout). */
export function serverLimits(opts: { maxConnections?: number; headersTimeoutMs?: number; requestTimeoutMs?: number }): {
  maxConnections: number;
  headersTimeout: number;
  requestTimeout: number;
} {
  const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const headersTimeout = opts.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
  const requestTimeout = Math.max(opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, headersTimeout);
  if (!(Number.isInteger(maxConnections) && maxConnections >= 1))
    throw new Error(`[serve] maxConnections must be an integer >= 1 (got ${maxConnections})`);
  for (const [k, v] of [
    ['headersTimeoutMs', headersTimeout],
    ['requestTimeoutMs', requestTimeout],
  ] as const)
    if (!(Number.isInteger(v) && v >= 1)) throw new Error(`[serve] ${k} must be an integer >= 1 (got ${v})`);
  return { maxConnections, headersTimeout, requestTimeout };
}
