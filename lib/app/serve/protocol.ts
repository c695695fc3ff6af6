// protocol.ts — the OpenAI chat-completions protocol as `llava serve` speaks it: request validation into a
// typed ChatRequest, the prompt a request renders to, the response and stream-chunk bodies, and the error
// body. No model and no sockets here; server.ts describes the behaviour these shapes implement.
//
// Decisions (details in server.ts's header):
// - Validation throws ApiError, which carries the HTTP status and OpenAI's {error:{message,type,param,code}}.
// - Images arrive only as data URIs (decodeDataUri); the image decoder (processing/image.ts) checks the pixel
//   caps from the file's headers before it allocates any pixels, so oversized images are refused cheaply.
// - Defaults follow docs/reference.md §9: temperature 0.2, max_tokens 512, the model worker's 1024 cap.
import { randomBytes } from 'crypto';
import { Conversation, appendMessage, getTemplate, insertImageToken, render } from '../processing/conversation';
import { CHAT_TEMPLATE, renderJinjaPrompt, type JinjaTemplate, type PromptMessage } from '../processing/chat_template';
import type { FinishReason } from '../inference/generate';
import { MAX_TOP_LOGPROBS } from '../inference/logprobs';
import { DEFAULT_IMAGE_TOKEN, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, IMAGE_PLACEHOLDER } from '../../constants';

/** max_tokens when the request has none (the LLaVA CLI and Gradio default, docs/reference.md §9). */
export const DEFAULT_MAX_TOKENS = DEFAULT_MAX_NEW_TOKENS;
/** The model worker's hard cap on new tokens (docs/reference.md §9). */
export const MAX_TOKENS_CAP = 1024;
export { DEFAULT_TEMPERATURE }; // temperature when the request has none (lib/constants.ts)
/** At most this many request stop strings (OpenAI allows 4; we are a little more lenient). */
export const MAX_STOP_STRINGS = 16;
/** Most choices one chat completion may ask for (`n`); each decodes as its own row of the batch. */
export const MAX_CHOICES = 16;

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

export const bad = (message: string, param: string | null = null, code: string | null = null): ApiError => new ApiError(400, message, param, code);

// ---------------------------------------------------------------------------------------------------------
// Request parsing

export type Role = 'user' | 'assistant';

export interface ChatTurn {
  role: Role;
  text: string;
}

export interface ImageInput {
  bytes: Buffer;
  /** Where it was, for messages: messages[i].content[j]. */
  param: string;
}

/** A validated chat-completions request, before tokenization. */
export interface ChatRequest {
  system: string | null;
  turns: ChatTurn[];
  image: ImageInput | null;
  temperature: number;
  topP?: number;
  topK?: number;
  /** max_tokens as asked (or the default), before the caps. */
  maxTokens: number;
  stop: string[];
  seed?: number;
  /** Choices to generate (chat completions' `n`; choice i samples with seed + i). 1 for the Responses API. */
  n: number;
  stream: boolean;
  includeUsage: boolean;
  returnTokenIds: boolean;
  /** null: no log-probabilities; else each token's and this many alternatives (chat completions'
   *  logprobs: true and top_logprobs). */
  logprobs: number | null;
}

export const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
export const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

export function optNumber(body: Record<string, unknown>, key: string, o: { min?: number; max?: number; int?: boolean } = {}): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`'${key}' must be a number (got ${typeName(v)})`, key, 'invalid_type');
  if (o.int && !Number.isSafeInteger(v)) throw bad(`'${key}' must be an integer (got ${v})`, key, 'invalid_value');
  if (o.min !== undefined && v < o.min) throw bad(`'${key}' must be >= ${o.min} (got ${v})`, key, 'invalid_value');
  if (o.max !== undefined && v > o.max) throw bad(`'${key}' must be <= ${o.max} (got ${v})`, key, 'invalid_value');
  return v;
}

export function optBool(body: Record<string, unknown>, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(`'${key}' must be a boolean (got ${typeName(v)})`, key, 'invalid_type');
  return v;
}

/** `model`: any name (responses carry the served model's), but a string when sent. */
export function checkModelField(body: Record<string, unknown>): void {
  if (body.model !== undefined && body.model !== null && typeof body.model !== 'string')
    throw bad(`'model' must be a string (got ${typeName(body.model)})`, 'model', 'invalid_type');
}

/** Fields we know but cannot honour (chat and text completions): a 400 unless they ask for the default. */
export function rejectUnsupported(body: Record<string, unknown>): void {
  const unsupported = (key: string, why: string): never => {
    throw bad(`'${key}' is not supported by this server (${why})`, key, 'unsupported_parameter');
  };
  const present = (k: string): boolean => body[k] !== undefined && body[k] !== null;
  for (const k of ['tools', 'functions'])
    if (present(k) && !(Array.isArray(body[k]) && (body[k] as unknown[]).length === 0)) unsupported(k, 'no tool calling');
  if (present('tool_choice') && body.tool_choice !== 'none') unsupported('tool_choice', 'no tool calling');
  if (present('function_call') && body.function_call !== 'none') unsupported('function_call', 'no tool calling');
  for (const k of ['frequency_penalty', 'presence_penalty']) if (present(k) && body[k] !== 0) unsupported(k, 'no repetition penalties');
  if (present('logit_bias') && !(isObj(body.logit_bias) && Object.keys(body.logit_bias).length === 0)) unsupported('logit_bias', 'no logit bias');
  if (present('response_format') && !(isObj(body.response_format) && body.response_format.type === 'text'))
    unsupported('response_format', "only {type: 'text'}");
  if (present('modalities') && !(Array.isArray(body.modalities) && body.modalities.every((m) => m === 'text')))
    unsupported('modalities', 'text output only');
  if (present('audio')) unsupported('audio', 'text output only');
}

const DATA_URI = /^data:([^;,]*)((?:;[^;,]*)*),/i;
const IMAGE_MIME = new Set(['image/png', 'image/jpeg', 'image/jpg', 'image/pjpeg', 'image/webp', 'image/gif']);

/** The bytes of a `data:image/png|jpeg|webp|gif;base64,...` URI; anything else is a 400. */
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
  if (!IMAGE_MIME.has(mime))
    throw bad(
      `${param}: unsupported image type '${m[1] || '(none)'}' (image/png, image/jpeg, image/webp or image/gif)`,
      param,
      'invalid_image_format',
    );
  if (!m[2].toLowerCase().split(';').includes('base64'))
    throw bad(`${param}: the data URI must be base64-encoded (';base64,')`, param, 'invalid_image_url');
  const b64 = url.slice(m[0].length).replace(/\s+/g, '');
  if (b64.length === 0) throw bad(`${param}: the data URI holds no data`, param, 'invalid_image_url');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) && !/^[A-Za-z0-9_-]*={0,2}$/.test(b64))
    throw bad(`${param}: the data URI is not valid base64`, param, 'invalid_image_url');
  return Buffer.from(b64, b64.includes('-') || b64.includes('_') ? 'base64url' : 'base64');
}

/** The content parts one API uses: the types of its text parts, the type of its image part and where that
 *  part keeps its URL. Chat completions: `text` and `image_url` ({url} or a string); the Responses API:
 *  `input_text` / `output_text` and `input_image` (image_url a string; file_id is refused). */
export interface PartDialect {
  text: readonly string[];
  image: string;
  /** The image part's URL; throws ApiError when it has none. */
  imageUrl(part: Record<string, unknown>, pp: string): string;
}

export const CHAT_PARTS: PartDialect = {
  text: ['text'],
  image: 'image_url',
  imageUrl(part, pp) {
    const iu = part.image_url;
    const url = typeof iu === 'string' ? iu : isObj(iu) ? iu.url : undefined;
    if (typeof url !== 'string') throw bad(`${pp}.image_url.url must be a string`, `${pp}.image_url`, 'invalid_type');
    return url;
  },
};

/** The text parts (joined by '\n') and image parts of one message's content. */
function readContent(content: unknown, param: string, images: ImageInput[], dialect: PartDialect): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw bad(`${param} must be a string or an array of content parts (got ${typeName(content)})`, param, 'invalid_type');
  const texts: string[] = [];
  content.forEach((part, j) => {
    const pp = `${param}[${j}]`;
    if (!isObj(part)) throw bad(`${pp} must be an object (got ${typeName(part)})`, pp, 'invalid_type');
    if (typeof part.type === 'string' && dialect.text.includes(part.type)) {
      if (typeof part.text !== 'string') throw bad(`${pp}.text must be a string (got ${typeName(part.text)})`, `${pp}.text`, 'invalid_type');
      texts.push(part.text);
    } else if (part.type === dialect.image) {
      const url = dialect.imageUrl(part, pp);
      images.push({ bytes: decodeDataUri(url, `${pp}.image_url`), param: pp });
    } else {
      const known = [...dialect.text, dialect.image].map((k) => `'${k}'`);
      throw bad(
        `${pp}: unsupported content part type ${JSON.stringify(part.type)} (${known.slice(0, -1).join(', ')} or ${known[known.length - 1]})`,
        `${pp}.type`,
        'invalid_value',
      );
    }
  });
  return texts.join('\n');
}

/** Validates a parsed JSON body into a ChatRequest (no model needed). Throws ApiError (400). */
export function parseChatRequest(body: unknown): ChatRequest {
  if (!isObj(body)) throw bad(`the request body must be a JSON object (got ${typeName(body)})`, null, 'invalid_type');
  rejectUnsupported(body);
  checkModelField(body);
  // Checked in this order: the conversation, then sampling, then output options.
  const conversation = parseConversation(body.messages, { param: 'messages', dialect: CHAT_PARTS });
  const sampling = parseSampling(body);
  return { ...conversation, ...sampling, ...parseOutputOptions(body) };
}

interface MessageParts {
  systems: string[];
  turns: ChatTurn[];
  images: ImageInput[];
}

/** Where a conversation comes from: the request field (for messages), the content parts its API uses, and
 *  system text that leads it (the Responses API's `instructions`). */
export interface ConversationSource {
  param: string;
  dialect: PartDialect;
  leadingSystem?: string[];
}

/** The conversation: leading system text, user/assistant turns that alternate and end with the user,
 *  at most one image, in the first user message. Shared by chat completions (`messages`) and the
 *  Responses API (`input`). */
export function parseConversation(msgs: unknown, src: ConversationSource): Pick<ChatRequest, 'system' | 'turns' | 'image'> {
  const name = src.param;
  if (msgs === undefined || msgs === null) throw bad(`'${name}' is required`, name, 'missing_required_parameter');
  if (!Array.isArray(msgs)) throw bad(`'${name}' must be an array (got ${typeName(msgs)})`, name, 'invalid_type');
  if (msgs.length === 0) throw bad(`'${name}' must not be empty`, name, 'invalid_value');
  const parts: MessageParts = { systems: [...(src.leadingSystem ?? [])], turns: [], images: [] };
  msgs.forEach((m, i) => addMessage(m, `${name}[${i}]`, parts, src.dialect));
  const { systems, turns, images } = parts;
  if (turns.length === 0) throw bad(`'${name}' has no user message`, name, 'invalid_value');
  if (turns[turns.length - 1].role !== 'user')
    throw bad('the last message must come from the user', `${name}[${msgs.length - 1}].role`, 'invalid_value');
  if (images.length > 1)
    throw bad(
      `${images.length} images were sent; this server takes at most one image per request (LLaVA inserts one image into the first user turn)`,
      images[1].param,
      'too_many_images',
    );
  const image = images[0] ?? null;
  if (image && turns[0].text.split(IMAGE_PLACEHOLDER).length > 2)
    throw bad(`${name}: '${IMAGE_PLACEHOLDER}' may appear at most once (one image)`, name, 'invalid_value');
  return { system: systems.length ? systems.join('\n') : null, turns, image };
}

/** Adds message `m` (at `p`, e.g. messages[2]) to the parts read so far. */
function addMessage(m: unknown, p: string, parts: MessageParts, dialect: PartDialect): void {
  const { systems, turns, images } = parts;
  if (!isObj(m)) throw bad(`${p} must be an object (got ${typeName(m)})`, p, 'invalid_type');
  const role = m.role;
  if (typeof role !== 'string') throw bad(`${p}.role must be a string (got ${typeName(role)})`, `${p}.role`, 'invalid_type');
  const before = images.length;
  if (role === 'system' || role === 'developer') {
    if (turns.length > 0) throw bad(`${p}: a ${role} message must come before the user and assistant messages`, `${p}.role`, 'invalid_value');
    systems.push(readContent(m.content, `${p}.content`, images, dialect));
    if (images.length > before) throw bad(`${p}: images are only accepted in user messages`, `${p}.content`, 'invalid_value');
    return;
  }
  if (role !== 'user' && role !== 'assistant')
    throw bad(`${p}.role '${role}' is not supported (system, user, assistant)`, `${p}.role`, 'invalid_value');
  const expected: Role = turns.length % 2 === 0 ? 'user' : 'assistant';
  if (role !== expected)
    throw bad(
      `${p}: expected a ${expected} message (after any system messages, user and assistant messages must alternate, starting with user)`,
      `${p}.role`,
      'invalid_value',
    );
  const text = readContent(m.content, `${p}.content`, images, dialect);
  if (images.length > before) {
    if (role !== 'user') throw bad(`${p}: images are only accepted in user messages`, `${p}.content`, 'invalid_value');
    if (turns.length !== 0)
      throw bad(`${p}: the image must be in the first user message (LLaVA puts its image into the first user turn)`, `${p}.content`, 'invalid_value');
  }
  if (text.includes(DEFAULT_IMAGE_TOKEN))
    throw bad(`${p}: the text contains '${DEFAULT_IMAGE_TOKEN}'; send images as ${dialect.image} content parts`, `${p}.content`, 'invalid_value');
  if (text.length === 0 && !(images.length > before)) throw bad(`${p}: the message is empty`, `${p}.content`, 'invalid_value');
  turns.push({ role, text });
}

/** temperature, top_p, top_k, max_tokens, seed and stop, with the defaults of docs/reference.md §9. */
/** temperature, top_p, top_k, max_tokens (or max_completion_tokens; `maxTokens` the default, from
 *  `minTokens` up), seed, stop and n. */
export function parseSampling(
  body: Record<string, unknown>,
  o: { maxTokens: number; minTokens: number } = { maxTokens: DEFAULT_MAX_TOKENS, minTokens: 1 },
): Pick<ChatRequest, 'temperature' | 'topP' | 'topK' | 'maxTokens' | 'seed' | 'stop' | 'n'> {
  const temperature = optNumber(body, 'temperature', { min: 0, max: 2 }) ?? DEFAULT_TEMPERATURE;
  let topP = optNumber(body, 'top_p', { min: 0, max: 1 });
  if (topP === 0) topP = 1e-9; // OpenAI accepts 0: keep only the most probable token
  const topKRaw = optNumber(body, 'top_k', { min: -1, int: true });
  const topK = topKRaw !== undefined && topKRaw > 0 ? topKRaw : undefined;
  const mt = optNumber(body, 'max_tokens', { min: o.minTokens, int: true });
  const mct = optNumber(body, 'max_completion_tokens', { min: o.minTokens, int: true });
  if (mt !== undefined && mct !== undefined && mt !== mct)
    throw bad("'max_tokens' and 'max_completion_tokens' disagree; send one of them", 'max_tokens', 'invalid_value');
  const maxTokens = mct ?? mt ?? o.maxTokens;
  const seed = optNumber(body, 'seed', { int: true });
  const n = optNumber(body, 'n', { min: 1, max: MAX_CHOICES, int: true }) ?? 1;
  return { temperature, topP, topK, maxTokens, seed, stop: parseStop(body.stop), n };
}

/** `stop`: a string or up to MAX_STOP_STRINGS strings; empty ones are dropped. */
function parseStop(s: unknown): string[] {
  let stop: string[] = [];
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) {
    s.forEach((x, i) => {
      if (typeof x !== 'string') throw bad(`stop[${i}] must be a string (got ${typeName(x)})`, 'stop', 'invalid_type');
    });
    if (s.length > MAX_STOP_STRINGS) throw bad(`'stop' holds ${s.length} strings; at most ${MAX_STOP_STRINGS}`, 'stop', 'invalid_value');
    stop = s as string[];
  } else if (s !== undefined && s !== null) throw bad(`'stop' must be a string or an array of strings (got ${typeName(s)})`, 'stop', 'invalid_type');
  return stop.filter((x) => x.length > 0);
}

/** stream, stream_options.include_usage and the return_token_ids extension (chat and text completions). */
export function parseStreamOptions(body: Record<string, unknown>): Pick<ChatRequest, 'stream' | 'includeUsage' | 'returnTokenIds'> {
  const stream = optBool(body, 'stream') ?? false;
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!isObj(so)) throw bad(`'stream_options' must be an object (got ${typeName(so)})`, 'stream_options', 'invalid_type');
    if (!stream) throw bad("'stream_options' is only allowed with stream: true", 'stream_options', 'invalid_value');
    includeUsage = optBool(so, 'include_usage') ?? false;
  }
  return { stream, includeUsage, returnTokenIds: optBool(body, 'return_token_ids') ?? false };
}

/** The stream options, and chat's logprobs (a boolean) with top_logprobs. */
function parseOutputOptions(body: Record<string, unknown>): Pick<ChatRequest, 'stream' | 'includeUsage' | 'returnTokenIds' | 'logprobs'> {
  const logprobs = optBool(body, 'logprobs') ?? false;
  const top = optNumber(body, 'top_logprobs', { min: 0, max: MAX_TOP_LOGPROBS, int: true });
  if (top !== undefined && !logprobs) throw bad("'top_logprobs' needs 'logprobs': true", 'top_logprobs', 'invalid_value');
  return { ...parseStreamOptions(body), logprobs: logprobs ? (top ?? 0) : null };
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

/** The prompt string for a request: template, optional system override, turns, pending reply. With the
 *  'chat_template' template the checkpoint's Jinja template renders it (the system text as a system message). */
export function renderChatPrompt(
  templateName: string,
  req: Pick<ChatRequest, 'system' | 'turns'>,
  hasImage: boolean,
  o: { jinja?: JinjaTemplate | null; mmUseImStartEnd?: boolean } = {},
): string {
  if (templateName === CHAT_TEMPLATE) {
    if (!o.jinja) throw new ApiError(500, "the chat_template template needs the checkpoint's Jinja template");
    const messages: PromptMessage[] = req.system !== null ? [{ role: 'system', text: req.system }] : [];
    req.turns.forEach((t, i) => messages.push({ role: t.role, text: t.text, image: i === 0 && hasImage }));
    return renderJinjaPrompt(o.jinja, messages);
  }
  const conv = getTemplate(templateName);
  if (req.system !== null) applySystem(conv, templateName, req.system);
  req.turns.forEach((t, i) => {
    const role = t.role === 'user' ? conv.roles[0] : conv.roles[1];
    appendMessage(conv, role, i === 0 && hasImage ? insertImageToken(t.text, { mmUseImStartEnd: o.mmUseImStartEnd }) : t.text);
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

// ---------------------------------------------------------------------------------------------------------
// Response bodies

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** cached_tokens: prompt positions taken from the prefix cache. */
  prompt_tokens_details: { cached_tokens: number };
}

/** The fields every response and chunk of one completion share. */
export interface CompletionBase {
  id: string;
  created: number;
  model: string;
}

/** A fresh completion id and timestamp for the served model. */
export function completionBase(model: string): CompletionBase {
  return { id: 'chatcmpl-' + randomBytes(12).toString('hex'), created: Math.floor(Date.now() / 1000), model };
}

/** OpenAI's finish_reason: EOS and stop strings are both 'stop'. */
export function finishReason(f: FinishReason): 'stop' | 'length' {
  return f === 'length' ? 'length' : 'stop';
}

export function usageOf(promptTokens: number, completionTokens: number, cachedTokens = 0): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

/** One `chat.completion.chunk` of a stream, for choice `index`. */
export function chunkBody(
  base: CompletionBase,
  delta: Record<string, unknown>,
  finish: string | null,
  index = 0,
  logprobs: unknown[] | null = null,
): Record<string, unknown> {
  const lp = logprobs ? { content: logprobs, refusal: null } : null;
  return { ...base, object: 'chat.completion.chunk', choices: [{ index, delta, logprobs: lp, finish_reason: finish }] };
}

/** The last chunk of a stream that asked for usage (stream_options.include_usage). */
export function usageChunkBody(base: CompletionBase, usage: Usage): Record<string, unknown> {
  return { ...base, object: 'chat.completion.chunk', choices: [], usage };
}

/** One choice of a non-streamed completion; `tokenIds` when the request asked (return_token_ids). */
export interface ChoiceOut {
  content: string;
  finish: FinishReason;
  tokenIds?: number[];
  /** `logprobs.content` when the request asked (logprobs: true). */
  logprobs?: unknown[];
}

/** A non-streamed `chat.completion`: its choices in order, the usage of them all, and the prompt's token ids
 *  when the request asked (return_token_ids). */
export function completionBody(base: CompletionBase, o: { choices: ChoiceOut[]; usage: Usage; promptTokenIds?: number[] }): Record<string, unknown> {
  const choices = o.choices.map((c, index) => ({
    index,
    message: { role: 'assistant', content: c.content },
    logprobs: c.logprobs ? { content: c.logprobs, refusal: null } : null,
    finish_reason: finishReason(c.finish),
    ...(c.tokenIds ? { token_ids: c.tokenIds } : {}),
  }));
  const body: Record<string, unknown> = { ...base, object: 'chat.completion', choices, usage: o.usage };
  if (o.promptTokenIds) body.prompt_token_ids = o.promptTokenIds;
  return body;
}

/** An entry of GET /v1/models. */
export function modelCard(id: string, created: number): Record<string, unknown> {
  return { id, object: 'model', created, owned_by: 'llava-node' };
}
