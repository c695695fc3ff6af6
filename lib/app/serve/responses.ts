// responses.ts — POST /v1/responses for `llava serve`: OpenAI's Responses API on the same path as chat
// completions (completion.ts: one validation of the conversation, one prompt renderer, one queue, one
// generation loop). This file only reads the Responses request into a ChatRequest and writes the answer
// as a `response` object or as the Responses event stream.
//
// Decisions:
// - `input` is a string (one user message) or a list of message items ({role, content} with or without
//   type 'message'); content is a string or a list of `input_text` / `output_text` / `input_image` parts.
//   An image is an `input_image` part whose image_url is a data URL, under exactly the rules, caps and
//   error codes of chat completions (protocol.ts parseConversation). `instructions` leads as system text
//   (joined with any system/developer items by '\n'). Other item types (function calls, reasoning, item
//   references) and file ids are a 400.
// - Sampling: temperature (default 0.2, as chat), top_p, max_output_tokens (default 512, then the same caps
//   as max_tokens). Hitting a cap gives status 'incomplete' with incomplete_details.reason
//   'max_output_tokens'; EOS and template stop strings give 'completed'.
// - Nothing is stored: store is echoed as false, and fields that need stored state, tools or other outputs
//   are refused with a 400 `unsupported_parameter` when they ask for something (see UNSUPPORTED below);
//   harmless hints (user, safety_identifier, service_tier, prompt_cache_*, parallel_tool_calls,
//   max_tool_calls, stream_options.include_obfuscation, an image's detail) are accepted and have no
//   effect; metadata is validated and echoed. Chat-completions fields sent here by mistake (messages,
//   max_tokens, stop, n, seed) are a 400 naming the Responses field to use instead.
// - The stream is `event: <type>` + `data: <json>` blocks with a sequence_number from 0: response.created,
//   response.in_progress, response.output_item.added, response.content_part.added, response.output_text.delta
//   (one per piece of trimmed text), response.output_text.done, response.content_part.done,
//   response.output_item.done, then response.completed (or response.incomplete). No [DONE]. An internal
//   error or a shutdown after the stream began ends it with response.failed (error {code, message}).
import { randomBytes } from 'crypto';
import type * as http from 'http';
import {
  ApiError,
  bad,
  isObj,
  optBool,
  optNumber,
  parseConversation,
  checkModelField,
  typeName,
  DEFAULT_MAX_TOKENS,
  DEFAULT_TEMPERATURE,
  type ChatRequest,
  type PartDialect,
} from './protocol';
import { EventStream } from './http';
import type { Api, Answer, AnswerStream, Finished } from './completion';
import type { LogprobEntry } from './logprobs';
import { MAX_TOP_LOGPROBS } from '../inference/logprobs';

/** A validated Responses request: what generation needs (a ChatRequest) and what the answer echoes. */
export interface ResponsesRequest extends ChatRequest {
  instructions: string | null;
  maxOutputTokens: number | null;
  /** top_p as sent (null = not sent; the answer shows 1). */
  topPSent: number | null;
  metadata: Record<string, string>;
}

/** The Responses API's content parts: text in input_text (output_text in replayed assistant items), the
 *  image in input_image with image_url a data URL. */
export const RESPONSES_PARTS: PartDialect = {
  text: ['input_text', 'output_text'],
  image: 'input_image',
  imageUrl(part, pp) {
    if (part.file_id !== undefined && part.file_id !== null)
      throw bad(`${pp}.file_id: files are not supported by this server; send image_url as a data URL`, `${pp}.file_id`, 'unsupported_parameter');
    if (typeof part.image_url !== 'string')
      throw bad(`${pp}.image_url must be a string (a data URL; got ${typeName(part.image_url)})`, `${pp}.image_url`, 'invalid_type');
    return part.image_url;
  },
};

const present = (body: Record<string, unknown>, k: string): boolean => body[k] !== undefined && body[k] !== null;
const emptyList = (v: unknown): boolean => Array.isArray(v) && v.length === 0;
const emptyObject = (v: unknown): boolean => isObj(v) && Object.values(v).every((x) => x === undefined || x === null);

/** The `include` entry that asks for the output text's log-probabilities (with top_logprobs alternatives). */
const LOGPROBS_INCLUDE = 'message.output_text.logprobs';

/** Fields this server knows and cannot honour: [field, accepted when, why]. */
const UNSUPPORTED: [string, (v: unknown) => boolean, string][] = [
  ['tools', emptyList, 'no tool calling'],
  ['tool_choice', (v) => v === 'none', 'no tool calling'],
  ['previous_response_id', () => false, 'responses are not stored; send the whole conversation in input'],
  ['conversation', () => false, 'conversations are not stored; send the whole conversation in input'],
  ['store', (v) => v === false, 'responses are not stored; send store: false or leave it out'],
  ['background', (v) => v === false, 'no background responses'],
  ['prompt', () => false, 'no stored prompt templates'],
  ['include', (v) => Array.isArray(v) && v.every((x) => x === LOGPROBS_INCLUDE), `no extra output data but '${LOGPROBS_INCLUDE}'`],
  ['reasoning', emptyObject, 'not a reasoning model'],
  ['truncation', (v) => v === 'disabled', "only 'disabled': a conversation longer than the context is a 400"],
  ['context_management', emptyList, 'no context management'],
];

/** Chat-completions fields sent to /v1/responses: [field, what to send instead]. */
const CHAT_FIELDS: [string, string][] = [
  ['messages', "the Responses API takes the conversation in 'input'"],
  ['max_tokens', "the Responses API calls it 'max_output_tokens'"],
  ['max_completion_tokens', "the Responses API calls it 'max_output_tokens'"],
  ['stop', 'the Responses API has no stop strings'],
  ['n', 'the Responses API returns one output'],
  ['seed', 'the Responses API has no seed'],
];

function rejectUnsupported(body: Record<string, unknown>): void {
  for (const [k, ok, why] of UNSUPPORTED)
    if (present(body, k) && !ok(body[k])) throw bad(`'${k}' is not supported by this server (${why})`, k, 'unsupported_parameter');
  for (const [k, why] of CHAT_FIELDS) if (present(body, k)) throw bad(`'${k}' is a chat-completions field (${why})`, k, 'unsupported_parameter');
  const text = body.text;
  if (present(body, 'text')) {
    if (!isObj(text)) throw bad(`'text' must be an object (got ${typeName(text)})`, 'text', 'invalid_type');
    const f = text.format;
    if (f !== undefined && f !== null && !(isObj(f) && f.type === 'text'))
      throw bad("'text.format' is not supported by this server (only {type: 'text'})", 'text.format', 'unsupported_parameter');
    if (text.verbosity !== undefined && text.verbosity !== null && text.verbosity !== 'medium')
      throw bad("'text.verbosity' is not supported by this server (only 'medium')", 'text.verbosity', 'unsupported_parameter');
  }
}

/** metadata: up to 16 string values (OpenAI's limits: keys ≤ 64, values ≤ 512 characters). */
function parseMetadata(v: unknown): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw bad(`'metadata' must be an object of strings (got ${typeName(v)})`, 'metadata', 'invalid_type');
  const entries = Object.entries(v);
  if (entries.length > 16) throw bad(`'metadata' holds ${entries.length} keys; at most 16`, 'metadata', 'invalid_value');
  for (const [k, x] of entries)
    if (typeof x !== 'string' || k.length > 64 || x.length > 512)
      throw bad(`metadata.${k.slice(0, 64)}: keys up to 64 and string values up to 512 characters`, 'metadata', 'invalid_value');
  return Object.fromEntries(entries) as Record<string, string>;
}

/** The input items as messages: a string is one user message; items must be messages. */
function inputMessages(input: unknown): unknown {
  if (typeof input === 'string') {
    if (input.length === 0) throw bad("'input' is empty", 'input', 'invalid_value');
    return [{ role: 'user', content: input }];
  }
  if (!Array.isArray(input)) return input; // parseConversation names the problem
  input.forEach((item, i) => {
    const p = `input[${i}]`;
    if (isObj(item) && item.type !== undefined && item.type !== 'message')
      throw bad(
        `${p}: input items of type ${JSON.stringify(item.type)} are not supported by this server (only messages)`,
        `${p}.type`,
        'unsupported_parameter',
      );
  });
  return input;
}

/** Validates a parsed JSON body of POST /v1/responses (no model needed). Throws ApiError (400). */
export function parseResponsesRequest(body: unknown): ResponsesRequest {
  if (!isObj(body)) throw bad(`the request body must be a JSON object (got ${typeName(body)})`, null, 'invalid_type');
  rejectUnsupported(body);
  checkModelField(body);
  const instructions = body.instructions ?? null;
  if (instructions !== null && typeof instructions !== 'string')
    throw bad(`'instructions' must be a string (got ${typeName(instructions)})`, 'instructions', 'invalid_type');
  const conversation = parseConversation(inputMessages(body.input), {
    param: 'input',
    dialect: RESPONSES_PARTS,
    leadingSystem: instructions !== null ? [instructions] : [],
  });
  const temperature = optNumber(body, 'temperature', { min: 0, max: 2 }) ?? DEFAULT_TEMPERATURE;
  const topPSent = optNumber(body, 'top_p', { min: 0, max: 1 }) ?? null;
  const maxOutputTokens = optNumber(body, 'max_output_tokens', { min: 1, int: true }) ?? null;
  const top = optNumber(body, 'top_logprobs', { min: 0, max: MAX_TOP_LOGPROBS, int: true });
  const wantLogprobs = (Array.isArray(body.include) && body.include.includes(LOGPROBS_INCLUDE)) || (top ?? 0) > 0;
  const stream = optBool(body, 'stream') ?? false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!isObj(so)) throw bad(`'stream_options' must be an object (got ${typeName(so)})`, 'stream_options', 'invalid_type');
    if (!stream) throw bad("'stream_options' is only allowed with stream: true", 'stream_options', 'invalid_value');
  }
  return {
    ...conversation,
    temperature,
    topP: topPSent === null ? undefined : topPSent === 0 ? 1e-9 : topPSent, // 0: keep only the most probable token
    maxTokens: maxOutputTokens ?? DEFAULT_MAX_TOKENS,
    stop: [],
    n: 1,
    stream,
    includeUsage: false,
    returnTokenIds: false,
    logprobs: wantLogprobs ? (top ?? 0) : null,
    instructions,
    maxOutputTokens,
    topPSent,
    metadata: parseMetadata(body.metadata),
  };
}

// ---------------------------------------------------------------------------------------------------------
// The answer

const newId = (prefix: string): string => prefix + randomBytes(12).toString('hex');

interface ResponseState {
  status: 'in_progress' | 'completed' | 'incomplete' | 'failed';
  output: unknown[];
  usage: Record<string, unknown> | null;
  error?: { code: string; message: string } | null;
}

/** A `response` object: the request's settings echoed, the state given. */
function responseObject(id: string, createdAt: number, model: string, req: ResponsesRequest, s: ResponseState): Record<string, unknown> {
  return {
    id,
    object: 'response',
    created_at: createdAt,
    status: s.status,
    background: false,
    error: s.error ?? null,
    incomplete_details: s.status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: req.instructions,
    max_output_tokens: req.maxOutputTokens,
    max_tool_calls: null,
    model,
    output: s.output,
    parallel_tool_calls: false,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    service_tier: 'default',
    store: false,
    temperature: req.temperature,
    text: { format: { type: 'text' }, verbosity: 'medium' },
    tool_choice: 'none',
    tools: [],
    top_logprobs: req.logprobs ?? 0,
    top_p: req.topPSent ?? 1,
    truncation: 'disabled',
    usage: s.usage,
    user: null,
    metadata: req.metadata,
  };
}

const outputText = (text: string, logprobs: LogprobEntry[] = []): Record<string, unknown> => ({
  type: 'output_text',
  text,
  annotations: [],
  logprobs,
});

function usage(f: Finished): Record<string, unknown> {
  return {
    input_tokens: f.promptTokens,
    input_tokens_details: { cached_tokens: f.cachedTokens },
    output_tokens: f.completionTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: f.promptTokens + f.completionTokens,
  };
}

const statusOf = (f: Finished): 'completed' | 'incomplete' => (f.finish === 'length' ? 'incomplete' : 'completed');

function messageItem(id: string, status: string, content: unknown[]): Record<string, unknown> {
  return { id, type: 'message', status, role: 'assistant', content };
}

/** The writer of one Responses answer (ids and created_at fixed when the request is accepted). */
function responsesAnswer(req: ResponsesRequest, model: string): Answer {
  const id = newId('resp_');
  const msgId = newId('msg_');
  const createdAt = Math.floor(Date.now() / 1000);
  const obj = (s: ResponseState): Record<string, unknown> => responseObject(id, createdAt, model, req, s);
  const done = (f: Finished): Record<string, unknown> =>
    obj({ status: statusOf(f), output: [messageItem(msgId, statusOf(f), [outputText(f.text, f.logprobs)])], usage: usage(f) });
  return {
    body: (fs) => done(fs[0]), // the Responses API has no n: one choice
    stream(res: http.ServerResponse): AnswerStream {
      const events = new EventStream(res, { done: false });
      let seq = 0;
      const send = (type: string, fields: Record<string, unknown>): void => events.send({ type, ...fields, sequence_number: seq++ }, type);
      const at = { item_id: msgId, output_index: 0, content_index: 0 };
      send('response.created', { response: obj({ status: 'in_progress', output: [], usage: null }) });
      send('response.in_progress', { response: obj({ status: 'in_progress', output: [], usage: null }) });
      send('response.output_item.added', { output_index: 0, item: messageItem(msgId, 'in_progress', []) });
      send('response.content_part.added', { ...at, part: outputText('') });
      let text = '';
      return {
        text(delta, _i, lp) {
          text += delta;
          send('response.output_text.delta', { ...at, delta, logprobs: lp ?? [] });
        },
        finish([f]) {
          if (f.unsent?.length) send('response.output_text.delta', { ...at, delta: '', logprobs: f.unsent });
          send('response.output_text.done', { ...at, text: f.text, logprobs: f.logprobs ?? [] });
          send('response.content_part.done', { ...at, part: outputText(f.text, f.logprobs) });
          send('response.output_item.done', { output_index: 0, item: messageItem(msgId, statusOf(f), [outputText(f.text, f.logprobs)]) });
          send(statusOf(f) === 'completed' ? 'response.completed' : 'response.incomplete', { response: done(f) });
          events.end();
        },
        fail(e: ApiError) {
          if (res.writableEnded) return;
          const item = messageItem(msgId, 'incomplete', [outputText(text)]);
          send('response.failed', {
            response: obj({ status: 'failed', output: [item], usage: null, error: { code: e.code ?? 'server_error', message: e.message } }),
          });
          events.end();
        },
      };
    },
  };
}

/** POST /v1/responses on the shared completion path. */
export const RESPONSES_API: Api<ResponsesRequest> = {
  conversationParam: 'input',
  parse: parseResponsesRequest,
  answer: responsesAnswer,
};
