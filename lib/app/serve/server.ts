// serve.ts — `llava serve`: one loaded LLaVA model behind a small HTTP server that speaks the OpenAI
// chat-completions protocol, so tools written for that API can use the model as a backend.
//
// Endpoints
//   GET  /health               {status:'ok', model, device, dtype, template, format, running, waiting}
//   GET  /v1/models            OpenAI list format with the one served model (also GET /v1/models/<id>)
//   POST /v1/chat/completions  OpenAI chat completions, streaming (SSE) or not
//
// Decisions:
// - One model, one device: requests run one at a time, in arrival order, through a FIFO queue. A request
//   whose client goes away while it waits is skipped; one that goes away mid-generation stops at the next
//   token (the generator's `finally` frees the KV cache). Generation yields to the event loop between
//   tokens (generate.ts), so the server keeps accepting, validating and queueing meanwhile.
// - Everything that can be checked before the queue is: JSON, field types, message layout, the image
//   (decoded and preprocessed), the prompt length against the context. A request that passes these can
//   only fail on an internal error (500, or an SSE error event once streaming has started).
// - Prompts are built with the model's conversation template exactly as `llava chat` builds them
//   (conversation.ts: getTemplate / appendMessage / insertImageToken / render): the image goes into the
//   first user turn, earlier user/assistant pairs are history, the last message must come from the user.
//   A single user turn therefore renders the same string as chat.ts's buildPrompt.
// - System messages (role 'system' or 'developer') may only lead the conversation; several are joined with
//   '\n'. They replace the template's own system prompt for SINGLE, TWO and LLAMA_2 templates (an empty
//   one removes it). llava_hf has no system slot in conversation.ts; the text is put in front followed by
//   one space, as the llava-1.5-hf chat template prints a system turn ([unverified] against the spec).
//   The plain template has no place for one: 400.
// - Images: at most one per request, only as a `data:image/png|jpeg;base64,...` URI, only in the first
//   user message (LLaVA inserts its one image into the first user turn, spec §9). Nothing is ever fetched:
//   http(s)/file URLs are a 400. Preprocessing is chat.ts's (CLIPImageProcessor from preprocessor_config.json,
//   aspect mode from the model). Literal `<image>` in message text is a 400 (it would become an image slot).
// - Defaults (spec §9): temperature 0.2 (the LLaVA CLI / Gradio default; sampling iff > 0.001), top_p off,
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
// - The request's `model` field is accepted whatever it names (clients often send a fixed name); responses
//   carry the served model's name. Unknown fields are ignored; known ones whose meaning we cannot honour
//   (n > 1, logprobs, tools, penalties, logit_bias, a non-text response_format) are a 400 rather than
//   silently dropped. Extensions: `top_k`, and `return_token_ids: true` (adds prompt_token_ids and the
//   choice's token_ids to a non-streamed response).
// - Errors use OpenAI's body {error:{message,type,param,code}}: 400 invalid_request_error, 404 unknown
//   route, 405 wrong method (with Allow), 413 body over the limit (default 20 MiB), 500 server_error, 503
//   while shutting down. A bad request never throws out of the handler.
// - One log line per request when its response closes: method, path, status, milliseconds, and for
//   completions the token counts and finish reason (or the error, or "client closed").
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';
import { randomBytes } from 'crypto';
import type { AddressInfo } from 'net';
import { keep } from '../../core/memory';
import { tensor } from '../../ops/creation';
import { Tensor } from '../../core/tensor';
import type { Device, DType } from '../../core/dtype';
import { loadLlava } from '../../models/loader';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { resolveProcessorConfig } from '../train/dataset';
import { CLIPImageProcessor, AspectMode, PixelValues } from '../processing/image';
import {
  Conversation,
  appendMessage,
  getTemplate,
  insertImageToken,
  render,
  stopString,
} from '../processing/conversation';
import {
  generate,
  encodePrompt,
  splicedLength,
  contextLength,
  checkRuntime,
  FinishReason,
} from '../inference/generate';
import { defaultAspect, defaultTemplate, modelNameFromPath } from '../inference/chat';
import { DEFAULT_IMAGE_TOKEN, IMAGE_PLACEHOLDER } from '../../constants';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 8000;
/** max_tokens when the request has none (the LLaVA CLI and Gradio default, spec §9). */
export const DEFAULT_MAX_TOKENS = 512;
/** The model worker's hard cap on new tokens (spec §9). */
export const MAX_TOKENS_CAP = 1024;
/** temperature when the request has none (LLaVA CLI / Gradio default, spec §9). */
export const DEFAULT_TEMPERATURE = 0.2;
export const DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024;
/** Decoded images larger than this many pixels are refused before decoding (decompression bombs). */
export const DEFAULT_MAX_IMAGE_PIXELS = 50_000_000;
/** At most this many request stop strings (OpenAI allows 4; we are a little more lenient). */
export const MAX_STOP_STRINGS = 16;

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
  /** CLIP directory for original llava_llama checkpoints. */
  visionTower?: string;
  /** Image preprocessing (default: from the model, as chat.ts). */
  aspect?: AspectMode;
  /** Name in /v1/models and in responses (default: the model directory's name, as the reference). */
  modelName?: string;
  maxBodyBytes?: number;
  maxImagePixels?: number;
  /** One line per request (default: stderr). */
  log?: (line: string) => void;
}

export interface ServeStats {
  running: number;
  waiting: number;
  /** Completions that ran to the end (any finish reason). */
  completed: number;
  /** Completions stopped because their client went away (while running or waiting). */
  aborted: number;
  /** Highest number of completions ever generating at the same time (1 by construction). */
  maxRunning: number;
}

export interface ServeState {
  readonly modelName: string;
  readonly template: string;
  readonly device: Device;
  readonly dtype: DType;
  readonly format: string;
  readonly contextLength: number;
  readonly model: LlavaForConditionalGeneration;
  readonly tokenizer: Tokenizer;
  stats(): ServeStats;
  /** Refuse new completions (503), stop queued and running ones, wait for the queue to drain, free the
   *  model if the server loaded it. Does not close the listening socket (startServer's close() does). */
  shutdown(): Promise<void>;
}

export interface LlavaServer extends http.Server {
  readonly llava: ServeState;
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/** An error that becomes an OpenAI-style error response. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = status >= 500 ? 'server_error' : 'invalid_request_error',
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const bad = (message: string, param: string | null = null, code: string | null = null): ApiError => new ApiError(400, message, param, code);

// ---------------------------------------------------------------------------------------------------------
// Request parsing

type Role = 'user' | 'assistant';

interface Turn {
  role: Role;
  text: string;
}

interface ImageInput {
  bytes: Buffer;
  /** Where it was, for messages: messages[i].content[j]. */
  param: string;
}

/** A validated chat-completions request, before tokenization. */
export interface ChatRequest {
  system: string | null;
  turns: Turn[];
  image: ImageInput | null;
  temperature: number;
  topP?: number;
  topK?: number;
  /** max_tokens as asked (or the default), before the caps. */
  maxTokens: number;
  stop: string[];
  seed?: number;
  stream: boolean;
  includeUsage: boolean;
  returnTokenIds: boolean;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function optNumber(body: Record<string, unknown>, key: string, o: { min?: number; max?: number; int?: boolean } = {}): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`'${key}' must be a number (got ${typeName(v)})`, key, 'invalid_type');
  if (o.int && !Number.isSafeInteger(v)) throw bad(`'${key}' must be an integer (got ${v})`, key, 'invalid_value');
  if (o.min !== undefined && v < o.min) throw bad(`'${key}' must be >= ${o.min} (got ${v})`, key, 'invalid_value');
  if (o.max !== undefined && v > o.max) throw bad(`'${key}' must be <= ${o.max} (got ${v})`, key, 'invalid_value');
  return v;
}

function optBool(body: Record<string, unknown>, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(`'${key}' must be a boolean (got ${typeName(v)})`, key, 'invalid_type');
  return v;
}

/** Fields we know but cannot honour: rejected when they ask for something other than the default. */
function rejectUnsupported(body: Record<string, unknown>): void {
  const unsupported = (key: string, why: string): never => {
    throw bad(`'${key}' is not supported by this server (${why})`, key, 'unsupported_parameter');
  };
  const present = (k: string): boolean => body[k] !== undefined && body[k] !== null;
  if (present('n') && body.n !== 1) unsupported('n', 'one choice per request');
  if (present('logprobs') && body.logprobs !== false) unsupported('logprobs', 'no log probabilities');
  if (present('top_logprobs')) unsupported('top_logprobs', 'no log probabilities');
  for (const k of ['tools', 'functions']) if (present(k) && !(Array.isArray(body[k]) && (body[k] as unknown[]).length === 0)) unsupported(k, 'no tool calling');
  if (present('tool_choice') && body.tool_choice !== 'none') unsupported('tool_choice', 'no tool calling');
  if (present('function_call') && body.function_call !== 'none') unsupported('function_call', 'no tool calling');
  for (const k of ['frequency_penalty', 'presence_penalty']) if (present(k) && body[k] !== 0) unsupported(k, 'no repetition penalties');
  if (present('logit_bias') && !(isObj(body.logit_bias) && Object.keys(body.logit_bias).length === 0)) unsupported('logit_bias', 'no logit bias');
  if (present('response_format') && !(isObj(body.response_format) && body.response_format.type === 'text')) unsupported('response_format', "only {type: 'text'}");
  if (present('modalities') && !(Array.isArray(body.modalities) && body.modalities.every((m) => m === 'text'))) unsupported('modalities', 'text output only');
  if (present('audio')) unsupported('audio', 'text output only');
}

const DATA_URI = /^data:([^;,]*)((?:;[^;,]*)*),/i;
const IMAGE_MIME = new Set(['image/png', 'image/jpeg', 'image/jpg', 'image/pjpeg']);

/** The bytes of a `data:image/png|jpeg;base64,...` URI; anything else is a 400. */
export function decodeDataUri(url: string, param: string): Buffer {
  const m = DATA_URI.exec(url);
  if (!m) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
    throw bad(
      `${param}: only data URIs are accepted (data:image/png;base64,... or data:image/jpeg;base64,...); ` +
        `this server does not fetch ${scheme ? `${scheme}: URLs` : 'URLs or files'}`,
      param,
      'invalid_image_url',
    );
  }
  const mime = m[1].trim().toLowerCase();
  if (!IMAGE_MIME.has(mime)) throw bad(`${param}: unsupported image type '${m[1] || '(none)'}' (image/png or image/jpeg)`, param, 'invalid_image_format');
  if (!m[2].toLowerCase().split(';').includes('base64')) throw bad(`${param}: the data URI must be base64-encoded (';base64,')`, param, 'invalid_image_url');
  const b64 = url.slice(m[0].length).replace(/\s+/g, '');
  if (b64.length === 0) throw bad(`${param}: the data URI holds no data`, param, 'invalid_image_url');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) && !/^[A-Za-z0-9_-]*={0,2}$/.test(b64))
    throw bad(`${param}: the data URI is not valid base64`, param, 'invalid_image_url');
  return Buffer.from(b64, b64.includes('-') || b64.includes('_') ? 'base64url' : 'base64');
}

/** Width x height from a PNG IHDR or a JPEG SOF segment, without decoding; null when not found. */
export function imageDimensions(b: Buffer): { width: number; height: number } | null {
  if (b.length >= 24 && b.readUInt32BE(0) === 0x89504e47 && b.toString('latin1', 12, 16) === 'IHDR')
    return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let p = 2;
    while (p + 9 <= b.length) {
      if (b[p] !== 0xff) return null;
      const marker = b[p + 1];
      if (marker === 0xff) {
        p++;
        continue;
      }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
        p += 2;
        continue;
      }
      const len = b.readUInt16BE(p + 2);
      // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc)
        return { height: b.readUInt16BE(p + 5), width: b.readUInt16BE(p + 7) };
      p += 2 + len;
    }
  }
  return null;
}

/** The text parts (joined by '\n') and image parts of one message's content. */
function readContent(content: unknown, param: string, images: ImageInput[]): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw bad(`${param} must be a string or an array of content parts (got ${typeName(content)})`, param, 'invalid_type');
  const texts: string[] = [];
  content.forEach((part, j) => {
    const pp = `${param}[${j}]`;
    if (!isObj(part)) throw bad(`${pp} must be an object (got ${typeName(part)})`, pp, 'invalid_type');
    if (part.type === 'text') {
      if (typeof part.text !== 'string') throw bad(`${pp}.text must be a string (got ${typeName(part.text)})`, `${pp}.text`, 'invalid_type');
      texts.push(part.text);
    } else if (part.type === 'image_url') {
      const iu = part.image_url;
      const url = typeof iu === 'string' ? iu : isObj(iu) ? iu.url : undefined;
      if (typeof url !== 'string') throw bad(`${pp}.image_url.url must be a string`, `${pp}.image_url`, 'invalid_type');
      images.push({ bytes: decodeDataUri(url, `${pp}.image_url`), param: pp });
    } else {
      throw bad(`${pp}: unsupported content part type ${JSON.stringify(part.type)} ('text' or 'image_url')`, `${pp}.type`, 'invalid_value');
    }
  });
  return texts.join('\n');
}

/** Validates a parsed JSON body into a ChatRequest (no model needed). Throws ApiError (400). */
export function parseChatRequest(body: unknown): ChatRequest {
  if (!isObj(body)) throw bad(`the request body must be a JSON object (got ${typeName(body)})`, null, 'invalid_type');
  rejectUnsupported(body);
  if (body.model !== undefined && body.model !== null && typeof body.model !== 'string') throw bad(`'model' must be a string (got ${typeName(body.model)})`, 'model', 'invalid_type');
  const msgs = body.messages;
  if (msgs === undefined || msgs === null) throw bad("'messages' is required", 'messages', 'missing_required_parameter');
  if (!Array.isArray(msgs)) throw bad(`'messages' must be an array (got ${typeName(msgs)})`, 'messages', 'invalid_type');
  if (msgs.length === 0) throw bad("'messages' must not be empty", 'messages', 'invalid_value');

  const systems: string[] = [];
  const turns: Turn[] = [];
  const images: ImageInput[] = [];
  msgs.forEach((m, i) => {
    const p = `messages[${i}]`;
    if (!isObj(m)) throw bad(`${p} must be an object (got ${typeName(m)})`, p, 'invalid_type');
    const role = m.role;
    if (typeof role !== 'string') throw bad(`${p}.role must be a string (got ${typeName(role)})`, `${p}.role`, 'invalid_type');
    const before = images.length;
    if (role === 'system' || role === 'developer') {
      if (turns.length > 0) throw bad(`${p}: a ${role} message must come before the user and assistant messages`, `${p}.role`, 'invalid_value');
      systems.push(readContent(m.content, `${p}.content`, images));
      if (images.length > before) throw bad(`${p}: images are only accepted in user messages`, `${p}.content`, 'invalid_value');
      return;
    }
    if (role !== 'user' && role !== 'assistant')
      throw bad(`${p}.role '${role}' is not supported (system, user, assistant)`, `${p}.role`, 'invalid_value');
    const expected: Role = turns.length % 2 === 0 ? 'user' : 'assistant';
    if (role !== expected)
      throw bad(`${p}: expected a ${expected} message (after any system messages, user and assistant messages must alternate, starting with user)`, `${p}.role`, 'invalid_value');
    const text = readContent(m.content, `${p}.content`, images);
    if (images.length > before) {
      if (role !== 'user') throw bad(`${p}: images are only accepted in user messages`, `${p}.content`, 'invalid_value');
      if (turns.length !== 0) throw bad(`${p}: the image must be in the first user message (LLaVA puts its image into the first user turn)`, `${p}.content`, 'invalid_value');
    }
    if (text.includes(DEFAULT_IMAGE_TOKEN))
      throw bad(`${p}: the text contains '${DEFAULT_IMAGE_TOKEN}'; send images as image_url content parts`, `${p}.content`, 'invalid_value');
    if (text.length === 0 && !(images.length > before)) throw bad(`${p}: the message is empty`, `${p}.content`, 'invalid_value');
    turns.push({ role, text });
  });
  if (turns.length === 0) throw bad("'messages' has no user message", 'messages', 'invalid_value');
  if (turns[turns.length - 1].role !== 'user') throw bad('the last message must come from the user', `messages[${msgs.length - 1}].role`, 'invalid_value');
  if (images.length > 1)
    throw bad(`${images.length} images were sent; this server takes at most one image per request (LLaVA inserts one image into the first user turn)`, images[1].param, 'too_many_images');
  const image = images[0] ?? null;
  if (image && turns[0].text.split(IMAGE_PLACEHOLDER).length > 2)
    throw bad(`messages: '${IMAGE_PLACEHOLDER}' may appear at most once (one image)`, 'messages', 'invalid_value');

  const temperature = optNumber(body, 'temperature', { min: 0, max: 2 }) ?? DEFAULT_TEMPERATURE;
  let topP = optNumber(body, 'top_p', { min: 0, max: 1 });
  if (topP === 0) topP = 1e-9; // OpenAI accepts 0: keep only the most probable token
  const topKRaw = optNumber(body, 'top_k', { min: -1, int: true });
  const topK = topKRaw !== undefined && topKRaw > 0 ? topKRaw : undefined;
  const mt = optNumber(body, 'max_tokens', { min: 1, int: true });
  const mct = optNumber(body, 'max_completion_tokens', { min: 1, int: true });
  if (mt !== undefined && mct !== undefined && mt !== mct)
    throw bad("'max_tokens' and 'max_completion_tokens' disagree; send one of them", 'max_tokens', 'invalid_value');
  const maxTokens = mct ?? mt ?? DEFAULT_MAX_TOKENS;
  const seed = optNumber(body, 'seed', { int: true });

  let stop: string[] = [];
  const s = body.stop;
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) {
    s.forEach((x, i) => {
      if (typeof x !== 'string') throw bad(`stop[${i}] must be a string (got ${typeName(x)})`, 'stop', 'invalid_type');
    });
    if (s.length > MAX_STOP_STRINGS) throw bad(`'stop' holds ${s.length} strings; at most ${MAX_STOP_STRINGS}`, 'stop', 'invalid_value');
    stop = s as string[];
  } else if (s !== undefined && s !== null) throw bad(`'stop' must be a string or an array of strings (got ${typeName(s)})`, 'stop', 'invalid_type');
  stop = stop.filter((x) => x.length > 0);

  const stream = optBool(body, 'stream') ?? false;
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!isObj(so)) throw bad(`'stream_options' must be an object (got ${typeName(so)})`, 'stream_options', 'invalid_type');
    if (!stream) throw bad("'stream_options' is only allowed with stream: true", 'stream_options', 'invalid_value');
    includeUsage = optBool(so, 'include_usage') ?? false;
  }
  const returnTokenIds = optBool(body, 'return_token_ids') ?? false;
  return {
    system: systems.length ? systems.join('\n') : null,
    turns,
    image,
    temperature,
    topP,
    topK,
    maxTokens,
    stop,
    seed,
    stream,
    includeUsage,
    returnTokenIds,
  };
}

/** Puts a request's system text where the template keeps its system prompt (see the header). */
function applySystem(conv: Conversation, templateName: string, system: string): void {
  switch (conv.sepStyle) {
    case 'SINGLE':
    case 'TWO':
    case 'LLAMA_2':
      conv.system = system;
      return;
    case 'LLAVA_HF':
      conv.system = system.length ? system + ' ' : '';
      return;
    default:
      throw bad(`the '${templateName}' template has no system prompt; remove the system message`, 'messages', 'invalid_value');
  }
}

/** The prompt string for a request: template, optional system override, turns, pending reply. */
export function renderChatPrompt(templateName: string, req: Pick<ChatRequest, 'system' | 'turns'>, hasImage: boolean): string {
  const conv = getTemplate(templateName);
  if (req.system !== null) applySystem(conv, templateName, req.system);
  req.turns.forEach((t, i) => {
    const role = t.role === 'user' ? conv.roles[0] : conv.roles[1];
    appendMessage(conv, role, i === 0 && hasImage ? insertImageToken(t.text) : t.text);
  });
  appendMessage(conv, conv.roles[1], null);
  return render(conv);
}

// ---------------------------------------------------------------------------------------------------------
// Streaming helpers

/** Holds back leading and trailing whitespace of a streamed reply, so the pieces join to text.trim(). */
export class TrimmedStream {
  private started = false;
  private pending = '';

  push(s: string): string {
    if (!this.started) {
      s = s.replace(/^\s+/, '');
      if (!s) return '';
      this.started = true;
    }
    const m = /\s+$/.exec(s);
    const body = m ? s.slice(0, m.index) : s;
    if (!body) {
      this.pending += s;
      return '';
    }
    const out = this.pending + body;
    this.pending = m ? m[0] : '';
    return out;
  }
}

/** FIFO of async jobs, one at a time. */
class SerialQueue {
  private tail: Promise<void> = Promise.resolve();
  running = 0;
  waiting = 0;
  maxRunning = 0;

  run<T>(job: () => Promise<T>): Promise<T> {
    this.waiting++;
    const p = this.tail.then(async () => {
      this.waiting--;
      this.running++;
      this.maxRunning = Math.max(this.maxRunning, this.running);
      try {
        return await job();
      } finally {
        this.running--;
      }
    });
    this.tail = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** Resolves once every job queued so far has finished. */
  idle(): Promise<void> {
    return this.tail;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Server

interface Prepared {
  req: ChatRequest;
  promptIds: number[];
  promptLength: number;
  pixels: PixelValues | null;
  maxNew: number;
  stop: string[];
}

interface Outcome {
  text: string;
  ids: number[];
  finish: FinishReason | 'aborted';
}

/** Per-request details for the log line. */
interface LogInfo {
  note?: string;
}

const newId = (): string => 'chatcmpl-' + randomBytes(12).toString('hex');
const now = (): number => Math.floor(Date.now() / 1000);

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

function sendError(res: http.ServerResponse, e: ApiError, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    if (!res.writableEnded) res.end();
    return;
  }
  sendJson(res, e.status, e.body(), headers);
}

/** Reads the whole body; over `limit` bytes → ApiError 413 (the rest of the body is left to drain). */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
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

/** Creates the HTTP server (not listening) with the model loaded. */
export function createServer(opts: ServeOptions): LlavaServer {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const maxPixels = opts.maxImagePixels ?? DEFAULT_MAX_IMAGE_PIXELS;
  if (opts.template) getTemplate(opts.template); // unknown names fail before the model loads

  let model: LlavaForConditionalGeneration;
  let tokenizer: Tokenizer;
  let dir: string;
  let owned: boolean;
  let device: Device;
  let dtype: DType;
  if (opts.loaded) {
    ({ model, tokenizer, dir } = opts.loaded);
    owned = false;
    const w = model.parameters()[0];
    device = (w?.device ?? 'cpu') as Device;
    dtype = (w?.dtype ?? 'float32') as DType;
  } else {
    if (!opts.model) throw new Error('serve: a model directory is required');
    dir = opts.model;
    if (!fs.existsSync(path.join(dir, 'config.json'))) throw new Error(`serve: ${dir} is not a model directory (no config.json)`);
    ({ device, dtype } = checkRuntime(opts.device, opts.dtype));
    tokenizer = Tokenizer.fromDir(dir);
    model = loadLlava(dir, { dtype, device, visionTower: opts.visionTower });
    owned = true;
  }

  let template: string;
  let processor: CLIPImageProcessor;
  let aspect: AspectMode;
  try {
    template = opts.template ?? defaultTemplate(model, dir);
    try {
      getTemplate(template);
    } catch (e) {
      throw new Error(`serve: ${(e as Error).message}; choose one with --template`);
    }
    processor = new CLIPImageProcessor(resolveProcessorConfig(dir, { visionDir: opts.visionTower, imageSize: model.config.vision.image_size }));
    aspect = opts.aspect ?? defaultAspect(model);
    // The processor must produce what the vision tower takes (checked once, on a 1x1 image).
    const S = model.config.vision.image_size;
    const probe = processor.preprocess({ width: 1, height: 1, data: new Uint8Array(3) }, { aspect });
    if (probe.shape[1] !== S || probe.shape[2] !== S)
      throw new Error(`serve: the image processor makes ${probe.shape[1]}x${probe.shape[2]} images; the vision tower takes ${S}x${S}`);
  } catch (e) {
    if (owned) model.dispose();
    throw e;
  }
  const modelName = opts.modelName ?? modelNameFromPath(path.resolve(dir));
  const ctx = contextLength(model);
  const stopOfTemplate = stopString(getTemplate(template));
  const queue = new SerialQueue();
  const active = new Set<AbortController>();
  let completed = 0;
  let aborted = 0;
  let closing: Promise<void> | null = null;
  let disposed = false;

  /** Tokenizes, preprocesses the image, and applies the caps; throws ApiError 400. */
  function prepare(req: ChatRequest): Prepared {
    const prompt = renderChatPrompt(template, req, req.image !== null);
    let pixels: PixelValues | null = null;
    if (req.image) {
      const param = req.image.param;
      const dims = imageDimensions(req.image.bytes);
      if (dims && dims.width * dims.height > maxPixels)
        throw bad(`${param}: the image is ${dims.width}x${dims.height}; at most ${maxPixels} pixels are accepted`, param, 'image_too_large');
      try {
        pixels = processor.preprocess(req.image.bytes, { aspect });
      } catch (e) {
        throw bad(`${param}: cannot read the image: ${(e as Error).message.replace(/^image: <buffer>: /, '')}`, param, 'invalid_image');
      }
    }
    const promptIds = encodePrompt(model, tokenizer, prompt);
    const promptLength = splicedLength(model, promptIds);
    if (promptLength >= ctx)
      throw bad(`the prompt takes ${promptLength} positions (image included); the model's context holds ${ctx}`, 'messages', 'context_length_exceeded');
    // Model worker rule (spec §9): min(requested, 1024, context − prompt − image tokens).
    const maxNew = Math.min(req.maxTokens, MAX_TOKENS_CAP, ctx - promptLength);
    const stop = [...(stopOfTemplate ? [stopOfTemplate] : []), ...req.stop];
    return { req, promptIds, promptLength, pixels, maxNew, stop };
  }

  /** Runs one generation (inside the queue). `onText` gets each piece of final text. */
  async function complete(p: Prepared, signal: AbortSignal, onText: (s: string) => void): Promise<Outcome> {
    const ids: number[] = [];
    let text = '';
    if (signal.aborted) return { text, ids, finish: 'aborted' };
    let pix: Tensor | null = null;
    try {
      if (p.pixels) pix = keep(tensor(p.pixels.pixelValues, { shape: [1, ...p.pixels.shape], dtype, device }));
      let finish: FinishReason | 'aborted' = 'length';
      for await (const piece of generate(model, tokenizer, {
        promptIds: p.promptIds,
        pixelValues: pix,
        temperature: p.req.temperature,
        topP: p.req.topP,
        topK: p.req.topK,
        maxNewTokens: p.maxNew,
        seed: p.req.seed,
        stop: p.stop,
      })) {
        ids.push(piece.token);
        text += piece.text;
        if (piece.text) onText(piece.text);
        if (piece.finishReason) finish = piece.finishReason;
        if (signal.aborted && !piece.finishReason) {
          finish = 'aborted';
          break; // for-await calls return(): the generator's finally frees the cache
        }
      }
      return { text, ids, finish };
    } finally {
      pix?.dispose();
    }
  }

  async function chatCompletions(req: http.IncomingMessage, res: http.ServerResponse, info: LogInfo): Promise<void> {
    if (closing) throw new ApiError(503, 'the server is shutting down', null, 'server_shutting_down');
    const raw = await readBody(req, maxBody);
    if (raw.length === 0) throw bad('the request body is empty; send a JSON object', null, 'invalid_json');
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw bad(`the request body is not valid JSON (${(e as Error).message})`, null, 'invalid_json');
    }
    const parsed = parseChatRequest(body);
    const prep = prepare(parsed);

    const ac = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished) ac.abort();
    };
    res.on('close', onClose);
    if (res.destroyed || req.socket.destroyed) ac.abort(); // gone before we started listening for it
    active.add(ac);
    const id = newId();
    const created = now();
    const base = { id, created, model: modelName };
    const finishOf = (f: FinishReason): 'stop' | 'length' => (f === 'length' ? 'length' : 'stop');
    const usage = (o: Outcome) => ({ prompt_tokens: prep.promptLength, completion_tokens: o.ids.length, total_tokens: prep.promptLength + o.ids.length });
    try {
      await queue.run(async () => {
        if (closing) throw new ApiError(503, 'the server is shutting down', null, 'server_shutting_down');
        if (ac.signal.aborted) {
          aborted++;
          info.note = 'client closed while queued';
          return;
        }
        if (parsed.stream) {
          res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
          const send = (obj: unknown): void => void res.write(`data: ${JSON.stringify(obj)}\n\n`);
          const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
            ...base,
            object: 'chat.completion.chunk',
            choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
          });
          send(chunk({ role: 'assistant', content: '' }, null));
          const trim = new TrimmedStream();
          let out: Outcome;
          try {
            out = await complete(prep, ac.signal, (s) => {
              const t = trim.push(s);
              if (t) send(chunk({ content: t }, null));
            });
          } catch (e) {
            info.note = `error: ${(e as Error).message}`;
            if (!res.writableEnded) {
              send({ error: new ApiError(500, (e as Error).message, null, 'generation_failed').body().error });
              res.end('data: [DONE]\n\n');
            }
            return;
          }
          if (out.finish === 'aborted') {
            aborted++;
            if (closing && !res.destroyed) {
              // stopped by shutdown, not by the client: tell it why
              info.note = `stopped by shutdown after ${out.ids.length} tokens`;
              send({ error: new ApiError(503, 'the server is shutting down', null, 'server_shutting_down').body().error });
              res.end('data: [DONE]\n\n');
            } else info.note = `client closed after ${out.ids.length} tokens`;
            return;
          }
          completed++;
          send(chunk({}, finishOf(out.finish)));
          if (parsed.includeUsage) send({ ...base, object: 'chat.completion.chunk', choices: [], usage: usage(out) });
          res.end('data: [DONE]\n\n');
          info.note = `prompt ${prep.promptLength} completion ${out.ids.length} finish ${finishOf(out.finish)}`;
          return;
        }
        let out: Outcome;
        try {
          out = await complete(prep, ac.signal, () => {});
        } catch (e) {
          throw new ApiError(500, `generation failed: ${(e as Error).message}`, null, 'generation_failed');
        }
        if (out.finish === 'aborted') {
          aborted++;
          if (closing && !res.destroyed) throw new ApiError(503, 'the server is shutting down', null, 'server_shutting_down');
          info.note = `client closed after ${out.ids.length} tokens`;
          return;
        }
        completed++;
        const choice: Record<string, unknown> = {
          index: 0,
          message: { role: 'assistant', content: out.text.trim() },
          logprobs: null,
          finish_reason: finishOf(out.finish),
        };
        const result: Record<string, unknown> = { ...base, object: 'chat.completion', choices: [choice], usage: usage(out) };
        if (parsed.returnTokenIds) {
          choice.token_ids = out.ids;
          result.prompt_token_ids = prep.promptIds;
        }
        info.note = `prompt ${prep.promptLength} completion ${out.ids.length} finish ${finishOf(out.finish)}`;
        sendJson(res, 200, result);
      });
    } finally {
      active.delete(ac);
      res.off('close', onClose);
    }
  }

  const modelCard = () => ({ id: modelName, object: 'model', created: 0, owned_by: 'llava-node' });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, info: LogInfo): Promise<void> {
    const method = req.method ?? 'GET';
    const pathname = (req.url ?? '/').split('?')[0];
    const route = (allow: string[], fn: () => Promise<void> | void): Promise<void> | void => {
      if (!allow.includes(method)) {
        req.resume();
        throw Object.assign(new ApiError(405, `method ${method} is not allowed on ${pathname} (allowed: ${allow.join(', ')})`, null, 'method_not_allowed'), { allow });
      }
      return fn();
    };
    const get = ['GET', 'HEAD'];
    if (pathname === '/health')
      return route(get, () =>
        sendJson(res, 200, { status: closing ? 'shutting_down' : 'ok', model: modelName, device, dtype, template, format: model.config.format, running: queue.running, waiting: queue.waiting }),
      );
    if (pathname === '/v1/models') return route(get, () => sendJson(res, 200, { object: 'list', data: [modelCard()] }));
    if (pathname.startsWith('/v1/models/')) {
      let wanted: string;
      try {
        wanted = decodeURIComponent(pathname.slice('/v1/models/'.length));
      } catch {
        wanted = pathname.slice('/v1/models/'.length);
      }
      return route(get, () => {
        if (wanted !== modelName) throw new ApiError(404, `the model '${wanted}' does not exist (this server serves '${modelName}')`, 'model', 'model_not_found');
        sendJson(res, 200, modelCard());
      });
    }
    if (pathname === '/v1/chat/completions') return route(['POST'], () => chatCompletions(req, res, info));
    req.resume();
    throw new ApiError(404, `unknown route ${method} ${pathname} (GET /health, GET /v1/models, POST /v1/chat/completions)`, null, 'not_found');
  }

  const server = http.createServer((req, res) => {
    const t0 = Date.now();
    const info: LogInfo = {};
    // The log line waits for both the response to close and the handler to return (an aborted generation
    // notices the disconnect only at its next token, and says how far it got).
    const closed = new Promise<void>((r) => res.once('close', () => r()));
    req.on('error', () => {}); // a reset connection: nothing to answer
    res.on('error', () => {});
    const handled = Promise.resolve()
      .then(() => handle(req, res, info))
      .catch((e: unknown) => {
        const api = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`);
        info.note = `error: ${e instanceof ApiError ? api.message : ((e as Error)?.stack ?? String(e))}`;
        const allow = (e as { allow?: string[] }).allow;
        try {
          sendError(res, api, allow ? { Allow: allow.join(', ') } : {});
        } catch {
          res.destroy();
        }
      });
    void Promise.all([closed, handled]).then(() => {
      const status = res.headersSent ? res.statusCode : 0;
      const extra = info.note ?? (res.writableFinished ? '' : 'client closed');
      log(`[serve] ${req.method} ${req.url} ${status || '-'} ${Date.now() - t0}ms${extra ? ' ' + extra : ''}`);
    });
  }) as LlavaServer;

  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    log(`[serve] malformed HTTP request: ${err.message}`);
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });

  const shutdown = (): Promise<void> => {
    if (!closing) {
      closing = (async () => {
        for (const ac of active) ac.abort();
        await queue.idle();
        if (owned && !disposed) {
          disposed = true;
          model.dispose();
        }
      })();
    }
    return closing;
  };
  server.on('close', () => void shutdown());

  const state: ServeState = {
    modelName,
    template,
    device,
    dtype,
    format: model.config.format,
    contextLength: ctx,
    model,
    tokenizer,
    stats: () => ({ running: queue.running, waiting: queue.waiting, completed, aborted, maxRunning: queue.maxRunning }),
    shutdown,
  };
  Object.defineProperty(server, 'llava', { value: state, enumerable: true });
  return server;
}

export interface StartOptions extends ServeOptions {
  host?: string;
  port?: number;
}

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
  const host = opts.host ?? DEFAULT_HOST;
  const port = opts.port ?? DEFAULT_PORT;
  if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) throw new Error(`serve: port must be an integer in 0..65535 (got ${port})`);
  const server = createServer(opts);
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
    throw new Error(`serve: cannot listen on ${host}:${port}: ${(e as Error).message}`);
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
