// text_completions.ts — POST /v1/completions, OpenAI's legacy text completions: a raw prompt (text, or token
// ids) continued as it stands, with no chat template, on the same path as chat completions (one decode
// batch, caps, streaming, `n`). What it is for: eval harnesses that score text by its likelihood send the
// question and a candidate answer with `echo: true` and `logprobs`, and read the answer tokens' scores from
// the echoed prompt (lm-evaluation-harness's local-completions model does this for multiple-choice tasks).
//
// Decisions:
// - The prompt is one string (encoded with BOS, as the tokenizer does for any text) or one array of token
//   ids (taken as they are), alone or as a list of one; several prompts in one request are refused (send
//   one request each). Image placeholders are refused: this endpoint is text only.
// - `echo: true` puts the prompt before the reply in `text`; with `logprobs` the prompt's tokens are scored
//   too (one extra pass over the prompt before the request queues, 256 positions a forward with the event
//   loop free between them; the first token has null, as nothing precedes it). `max_tokens: 0` is allowed then: only the prompt is scored.
// - `logprobs: k` (0 to 20) is OpenAI's legacy shape: per token its text, log-probability, the k likeliest
//   alternatives as a {token text: log-probability} map, and its character offset in `text`. The numbers
//   are the model's raw distribution (inference/logprobs.ts).
// - The reply is the generated text as it is (not trimmed as chat replies are: a leading space matters to a
//   scorer). Defaults as chat completions' (temperature 0.2, 16 tokens as OpenAI's max_tokens default).
// - suffix, best_of other than n, penalties and logit_bias are refused with a 400, as in chat completions.
import type * as http from 'http';
import { encodePrompt, promptLengthError, splicedLength } from '../inference/generate';
import { promptLogprobs, MAX_TOP_LOGPROBS, type StepLogprobs } from '../inference/logprobs';
import type { Tokenizer } from '../processing/tokenizer';
import { IMAGE_TOKEN_INDEX } from '../../constants';
import {
  bad,
  isObj,
  typeName,
  optBool,
  optNumber,
  finishReason,
  parseSampling,
  parseStreamOptions,
  rejectUnsupported,
  checkModelField,
  MAX_TOKENS_CAP,
  type ChatRequest,
} from './protocol';
import { EventStream } from './http';
import { tokenBytes, type LogprobEntry } from './logprobs';
import { choicesUsage, type Api, type Completions, type Finished, type Prepared } from './completion';
import { randomBytes } from 'crypto';

/** OpenAI's default max_tokens for text completions. */
export const TEXT_DEFAULT_MAX_TOKENS = 16;

export interface TextRequest extends ChatRequest {
  prompt: string | number[];
  echo: boolean;
  /** With echo and logprobs: the prompt's tokens scored (set when the request is prepared). */
  promptScores?: { ids: number[]; scores: (StepLogprobs | null)[] };
}

function parseTextRequest(body: unknown): TextRequest {
  if (!isObj(body)) throw bad(`the request body must be a JSON object (got ${typeName(body)})`, null, 'invalid_type');
  const refuse = (key: string, why: string): never => {
    throw bad(`'${key}' is not supported by this server (${why})`, key, 'unsupported_parameter');
  };
  const present = (k: string): boolean => body[k] !== undefined && body[k] !== null;
  rejectUnsupported(body);
  if (present('suffix') && body.suffix !== '') refuse('suffix', 'no insertion');
  checkModelField(body);
  const prompt = parsePrompt(body.prompt);
  const sampling = parseSampling(body, { maxTokens: TEXT_DEFAULT_MAX_TOKENS, minTokens: 0 });
  if (present('best_of') && body.best_of !== sampling.n && body.best_of !== 1) refuse('best_of', 'no best-of ranking; use n');
  const echo = optBool(body, 'echo') ?? false;
  const logprobs = optNumber(body, 'logprobs', { min: 0, max: MAX_TOP_LOGPROBS, int: true }) ?? null;
  if (sampling.maxTokens === 0 && !echo) throw bad("'max_tokens' must be >= 1 unless 'echo' is true", 'max_tokens', 'invalid_value');
  return { system: null, turns: [], image: null, ...sampling, ...parseStreamOptions(body), logprobs, prompt, echo };
}

/** One prompt: a non-empty string or a non-empty array of token ids, alone or as a list of one (the batch
 *  shape clients such as lm-evaluation-harness send). */
function parsePrompt(p: unknown): string | number[] {
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  if (typeof p === 'string') {
    if (p.length === 0) throw bad("'prompt' must not be empty", 'prompt', 'invalid_value');
    return p;
  }
  if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isSafeInteger(x))) return p as number[];
  if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || Array.isArray(x)))
    throw bad(`'prompt' holds ${p.length} prompts; this server takes one prompt per request`, 'prompt', 'invalid_value');
  if (p === undefined || p === null) throw bad("'prompt' is required", 'prompt', 'missing_required_parameter');
  throw bad(`'prompt' must be a string or an array of token ids (got ${typeName(p)})`, 'prompt', 'invalid_type');
}

/** The prompt's ids, the caps, and (echo with logprobs) the prompt's scores. */
async function prepareText(req: TextRequest, c: Completions): Promise<Prepared> {
  const { model, tokenizer } = c.session;
  const V = model.config.text.vocab_size;
  let promptIds: number[];
  if (typeof req.prompt === 'string') {
    if (req.prompt.length > c.maxPromptChars)
      throw bad(`the prompt has ${req.prompt.length} characters; at most ${c.maxPromptChars}`, 'prompt', 'context_length_exceeded');
    promptIds = encodePrompt(model, tokenizer, req.prompt);
  } else {
    const badId = req.prompt.findIndex((id) => id < 0 || id >= V);
    if (badId >= 0) throw bad(`prompt[${badId}]: token id ${req.prompt[badId]} outside [0, ${V})`, 'prompt', 'invalid_value');
    promptIds = req.prompt.slice();
  }
  if (promptIds.some((id) => id === IMAGE_TOKEN_INDEX || id === model.config.imageTokenIndex))
    throw bad('the prompt holds an image placeholder; /v1/completions is text only', 'prompt', 'invalid_value');
  const promptLength = splicedLength(model, promptIds);
  const tooLong = promptLengthError(model, promptIds, promptLength);
  if (tooLong) throw bad(`the prompt ${tooLong}`, 'prompt', 'context_length_exceeded');
  if (req.echo && req.logprobs !== null) req.promptScores = { ids: promptIds, scores: await promptLogprobs(model, promptIds, req.logprobs) };
  const maxNew = Math.min(req.maxTokens, MAX_TOKENS_CAP, c.contextLength - promptLength);
  return { req, promptIds, promptLength, pixels: null, maxNew, stop: req.stop };
}

/** OpenAI's legacy logprobs object for `tokens` (their text, offsets from `offset` in `text`). */
function legacyLogprobs(entries: LogprobEntry[], offset: number): Record<string, unknown> {
  const text_offset: number[] = [];
  let at = offset;
  for (const e of entries) {
    text_offset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries((e.top_logprobs ?? []).map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}

const tokenText = (tokenizer: Tokenizer, id: number): string => Buffer.from(tokenBytes(tokenizer, id)).toString('utf8');

/** The prompt's tokens as they appear in its text: special tokens (BOS) are '', and the first word keeps
 *  no leading space where the tokenizer's decoder drops it at the start of a text. */
function promptTokenTexts(tokenizer: Tokenizer, ids: number[]): string[] {
  let first = true;
  return ids.map((id) => {
    if (tokenizer.isSpecial(id)) return '';
    const piece = tokenText(tokenizer, id);
    if (!first) return piece;
    first = false;
    const alone = tokenizer.decode([id]);
    return alone.includes('\ufffd') ? piece : alone;
  });
}

/** The echoed prompt's part: its text, and its logprobs entries (the first token's score is null). */
function echoed(tokenizer: Tokenizer, req: TextRequest): { text: string; logprobs: Record<string, unknown> | null } {
  const text = typeof req.prompt === 'string' ? req.prompt : tokenizer.decode(req.prompt);
  if (!req.promptScores) return { text, logprobs: null };
  const { ids, scores } = req.promptScores;
  const texts = promptTokenTexts(tokenizer, ids);
  const entries: LogprobEntry[] = ids.map((_, t) => {
    const s = scores[t];
    const top = s ? s.top.map((x) => ({ token: tokenText(tokenizer, x.token), logprob: x.logprob, bytes: [] })) : [];
    return { token: texts[t], logprob: s ? s.logprob : NaN, bytes: [], top_logprobs: top };
  });
  const lp = legacyLogprobs(entries, 0);
  (lp.token_logprobs as (number | null)[])[0] = null;
  (lp.top_logprobs as (Record<string, number> | null)[])[0] = null;
  return { text, logprobs: lp };
}

/** POST /v1/completions (see the header). */
export function textCompletionsApi(tokenizer: Tokenizer): Api<TextRequest> {
  return {
    conversationParam: 'prompt',
    parse: parseTextRequest,
    prepare: prepareText,
    raw: true,
    answer(req, model) {
      const base = { id: 'cmpl-' + randomBytes(12).toString('hex'), object: 'text_completion', created: Math.floor(Date.now() / 1000), model };
      const echo = req.echo ? echoed(tokenizer, req) : null;
      const head = echo?.text ?? '';
      const choice = (f: Finished, index: number) => {
        let logprobs: Record<string, unknown> | null = null;
        if (req.logprobs !== null) {
          const gen = legacyLogprobs(f.logprobs ?? [], head.length);
          logprobs = echo?.logprobs
            ? Object.fromEntries(Object.keys(gen).map((k) => [k, [...(echo.logprobs![k] as unknown[]), ...(gen[k] as unknown[])]]))
            : gen;
        }
        return {
          text: head + f.raw,
          index,
          logprobs,
          finish_reason: finishReason(f.finish),
          ...(req.returnTokenIds ? { token_ids: f.ids } : {}),
        };
      };
      const usage = choicesUsage;
      return {
        body: (fs) => ({ ...base, choices: fs.map(choice), usage: usage(fs) }),
        stream(res: http.ServerResponse) {
          const events = new EventStream(res);
          const offsets = Array.from({ length: req.n }, () => head.length);
          const send = (i: number, text: string, lp: LogprobEntry[] | null, finish: string | null) => {
            const logprobs = lp ? legacyLogprobs(lp, offsets[i]) : null;
            offsets[i] += lp ? lp.reduce((a, e) => a + e.token.length, 0) : 0;
            events.send({ ...base, choices: [{ text, index: i, logprobs, finish_reason: finish }] });
          };
          if (echo)
            for (let i = 0; i < req.n; i++)
              events.send({ ...base, choices: [{ text: head, index: i, logprobs: echo.logprobs, finish_reason: null }] });
          return {
            text: (t, i, lp) => send(i, t, lp, null),
            finish(fs) {
              fs.forEach((f, i) => send(i, '', f.unsent ?? (req.logprobs === null ? null : []), finishReason(f.finish)));
              if (req.includeUsage) events.send({ ...base, choices: [], usage: usage(fs) });
              events.end();
            },
            fail: (e) => events.fail(e),
          };
        },
      };
    },
  };
}
