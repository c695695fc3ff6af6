// completion.ts — POST /v1/chat/completions for `llava serve`: validate and prepare a request (prompt ids,
// image pixels, token caps) before it queues, then generate in the shared decode batch (continuous
// batching, inference/batcher.ts) and answer as one JSON body or as an event stream. Owns the batcher, the
// in-flight requests and the counters; server.ts routes to it and reports its state.
//
// Decisions (see server.ts's header for the protocol-level ones):
// - Everything that can fail on a bad request happens in prepare(), before the queue: a prepared request
//   can only fail on an internal error (500, or an SSE error event once streaming has begun).
// - A client that goes away while waiting is skipped when its turn comes; one that goes away while
//   generating stops at the next token (breaking out of the generator frees its KV cache).
// - shutdown() refuses new work (503), aborts queued and running completions and waits for the queue; a
//   completion stopped by shutdown (not by its client) is told so: a 503, or an error event on a stream.
// - No request may hold the event loop for long. Tokenizing is synchronous and slow (BPE on 19.5 MB of
//   text took 120 s), so a rendered prompt longer than maxPromptChars characters is refused with
//   context_length_exceeded before it is tokenized: see promptCharBound for why that bound is sound.
//   Everything before it (body, JSON.parse, validation, rendering) is linear and fast (about 40 ms for a
//   19.5 MB text); the batch yields to the event loop between steps (inference/batcher.ts).
import * as fs from 'fs';
import { createHash } from 'crypto';
import * as path from 'path';
import type * as http from 'http';
import type { LlavaSession } from '../processing/session';
import type { Tokenizer } from '../processing/tokenizer';
import { ImageLimitError, type PixelValues } from '../processing/image';
import { encodePrompt, splicedLength, contextLength, promptLengthError, type FinishReason } from '../inference/generate';
import { DecodeBatcher, type BatchResult } from '../inference/batcher';
import {
  ApiError,
  bad,
  parseChatRequest,
  renderChatPrompt,
  TrimmedStream,
  MAX_TOKENS_CAP,
  completionBase,
  completionBody,
  chunkBody,
  usageChunkBody,
  usageOf,
  finishReason,
  type ChatRequest,
  type ImageInput,
  type Usage,
} from './protocol';
import { EventStream, readJsonBody, sendJson } from './http';
import { logprobEntry, type LogprobEntry } from './logprobs';

/** A validated request with everything generation needs. */
export interface Prepared {
  req: ChatRequest;
  promptIds: number[];
  /** Positions the prompt occupies, image rows included. */
  promptLength: number;
  pixels: PixelValues | null;
  /** max_tokens after the caps. */
  maxNew: number;
  stop: string[];
  /** The image's key for the prefix cache (a hash of its bytes), or undefined without an image. */
  imageKey?: string;
}

/** Per-request details for the server's log line. */
export interface LogInfo {
  note?: string;
}

/** Resolves on a later turn of the event loop (after pending I/O). */
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

const shuttingDown = (): ApiError => new ApiError(503, 'the server is shutting down', null, 'server_shutting_down');

/** The pixels of a request's image: decoding checks its size from the header (every header, so a second
 *  IHDR/SOF cannot hide a bigger image) and the images preprocessing makes of it. The JPEG or WebP decode
 *  runs off the event loop. Rejects with a 400. */
export async function requestPixels(session: LlavaSession, image: ImageInput, maxPixels: number): Promise<PixelValues> {
  const param = image.param;
  try {
    return await session.preprocessAsync(image.bytes, undefined, { maxPixels });
  } catch (e) {
    const msg = (e as Error).message.replace(/^image: (<buffer>: )?/, '');
    if (e instanceof ImageLimitError) throw bad(`${param}: ${msg}`, param, 'image_too_large');
    throw bad(`${param}: cannot read the image: ${msg}`, param, 'invalid_image');
  }
}

/** Normalizers that never make a text shorter (LLaMA's: Prepend '▁', Replace ' ' by '▁'). */
function lengthKeeping(n: unknown): boolean {
  if (n === null || n === undefined) return true;
  const o = n as { type?: string; normalizers?: unknown[]; pattern?: { String?: unknown }; content?: unknown };
  if (o.type === 'Sequence') return Array.isArray(o.normalizers) && o.normalizers.every(lengthKeeping);
  if (o.type === 'Prepend') return true;
  if (o.type === 'Replace')
    return typeof o.pattern?.String === 'string' && typeof o.content === 'string' && o.content.length >= o.pattern.String.length;
  return false;
}

/**
 * At most how many characters (UTF-16 units) of a prompt one token stands for, and whether that is proven.
 *
 * Why it holds: the text is normalized, then every token's piece covers a piece of the normalized text of
 * at most its own length (a merged BPE piece is that very text, '▁' standing for one space; a byte-fallback
 * piece like '<0x0A>' stands for one byte of one character; an added token is matched literally). So a
 * text of n characters has at least n / K tokens, K the longest piece in the vocabulary, provided the
 * normalizer never shortens the text (checked: LLaMA's Prepend / Replace(' ', '▁')), the pre-tokenizer
 * drops nothing (none, Metaspace or ByteLevel) and unknown characters are not fused into one <unk>
 * (byte_fallback, or fuse_unk off). A prompt with more than context × K characters therefore cannot fit.
 * For a tokenizer outside these rules the bound is widened four-fold and only a heuristic.
 */
export function promptCharBound(tokenizer: Tokenizer, dir: string): { perToken: number; proven: boolean } {
  let perToken = 1;
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    let piece: string;
    try {
      piece = tokenizer.idToToken(id);
    } catch {
      continue; // a hole in the ids
    }
    perToken = Math.max(perToken, piece.length);
  }
  let proven = false;
  try {
    const tj = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    const pre = tj.pre_tokenizer as { type?: string; pretokenizers?: { type?: string }[] } | null;
    const preOk = (p: { type?: string } | null | undefined): boolean => !p || p.type === 'Metaspace' || p.type === 'ByteLevel';
    const preKeeps = !pre || (pre.type === 'Sequence' ? (pre.pretokenizers ?? []).every(preOk) : preOk(pre));
    const m = tj.model ?? {};
    proven = lengthKeeping(tj.normalizer) && preKeeps && m.type === 'BPE' && (m.byte_fallback === true || m.fuse_unk !== true);
  } catch {
    proven = false;
  }
  return { perToken: proven ? perToken : perToken * 4, proven };
}

export class Completions {
  /** The decode batch every completion runs in. */
  readonly batcher: DecodeBatcher;
  /** Positions the model can hold. */
  readonly contextLength: number;
  /** Rendered prompts longer than this many characters are refused before tokenizing (promptCharBound). */
  readonly maxPromptChars: number;
  completed = 0;
  aborted = 0;
  private readonly active = new Set<AbortController>();
  private readonly templateStop: string | null;
  private closing: Promise<void> | null = null;

  constructor(
    readonly session: LlavaSession,
    private readonly o: {
      modelName: string;
      maxBodyBytes: number;
      maxImagePixels: number;
      maxBatch: number;
      prefixCache: number;
      prefillChunk?: number;
    },
  ) {
    this.batcher = new DecodeBatcher(session.model, session.tokenizer, {
      maxBatch: o.maxBatch,
      prefixCachePositions: o.prefixCache,
      prefillChunk: o.prefillChunk,
    });
    this.contextLength = contextLength(session.model);
    this.maxPromptChars = this.contextLength * promptCharBound(session.tokenizer, session.dir).perToken;
    this.templateStop = session.stop;
  }

  get isClosing(): boolean {
    return this.closing !== null;
  }

  /** Tokenizes, preprocesses the image and applies the caps; rejects with ApiError 400. */
  async prepare(req: ChatRequest, param = 'messages'): Promise<Prepared> {
    const { model, tokenizer, template, chatTemplate, mmUseImStartEnd } = this.session;
    const prompt = renderChatPrompt(template, req, req.image !== null, { jinja: chatTemplate, mmUseImStartEnd });
    const ctx = this.contextLength;
    if (prompt.length > this.maxPromptChars)
      throw bad(
        `the prompt has ${prompt.length} characters; the model's context holds ${ctx} positions, at most ${this.maxPromptChars} characters`,
        param,
        'context_length_exceeded',
      );
    const pixels = req.image ? await requestPixels(this.session, req.image, this.o.maxImagePixels) : null;
    const promptIds = encodePrompt(model, tokenizer, prompt);
    const promptLength = splicedLength(model, promptIds);
    const tooLong = promptLengthError(model, promptIds, promptLength);
    if (tooLong) throw bad(`the prompt${req.image ? ' (image included)' : ''} ${tooLong}`, param, 'context_length_exceeded');
    // The model worker's rule (docs/reference.md §9): min(requested, 1024, context − prompt − image tokens).
    const maxNew = Math.min(req.maxTokens, MAX_TOKENS_CAP, ctx - promptLength);
    const stop = [...(this.templateStop ? [this.templateStop] : []), ...req.stop];
    const imageKey = req.image ? createHash('sha256').update(req.image.bytes).digest('hex') : undefined;
    return { req, promptIds, promptLength, pixels, maxNew, stop, imageKey };
  }

  /** The POST handler of one API: read, validate and prepare, then generate in the batch and answer. */
  async handle<R extends ChatRequest>(api: Api<R>, req: http.IncomingMessage, res: http.ServerResponse, info: LogInfo): Promise<void> {
    if (this.closing) throw shuttingDown();
    const body = await readJsonBody(req, this.o.maxBodyBytes);
    await nextTurn(); // a big body: let other requests in between parsing, validating and preparing
    const parsed = api.parse(body);
    await nextTurn();
    const prep = api.prepare ? await api.prepare(parsed, this) : await this.prepare(parsed, api.conversationParam);
    if (this.closing) throw shuttingDown();
    const ac = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished) ac.abort();
    };
    res.on('close', onClose);
    if (res.destroyed || req.socket.destroyed) ac.abort(); // gone before we started listening for it
    this.active.add(ac);
    try {
      await this.answer(prep, api.answer(parsed, this.o.modelName), res, ac, info, api.raw ?? false);
    } finally {
      this.active.delete(ac);
      res.off('close', onClose);
    }
  }

  /**
   * Generates the request's choices in the batcher (each its own row) and answers: one JSON body, or an
   * event stream that opens when the first choice joins the batch and carries each choice's text (trimmed
   * as the reply is) as it becomes final. Aborting `ac` stops every choice; a failed choice stops the rest.
   */
  private async answer(prep: Prepared, answer: Answer, res: http.ServerResponse, ac: AbortController, info: LogInfo, raw: boolean): Promise<void> {
    const opened: { events: AnswerStream | null } = { events: null };
    const { req } = prep;
    const trims = Array.from({ length: req.n }, () => new TrimmedStream());
    // logprobs: each choice's entries, and those not yet sent with a streamed delta
    const entries: LogprobEntry[][] = trims.map(() => []);
    const unsent: LogprobEntry[][] = trims.map(() => []);
    const pix = prep.pixels ? this.session.toTensor(prep.pixels) : null;
    let outs: BatchResult[];
    try {
      outs = await this.batcher.submitAll(
        trims.map((trim, i) => ({
          promptIds: prep.promptIds,
          pixelValues: pix,
          temperature: req.temperature,
          topP: req.topP,
          topK: req.topK,
          maxNewTokens: prep.maxNew,
          seed: req.seed === undefined ? undefined : req.seed + i,
          stop: prep.stop,
          prefixKey: prep.imageKey,
          logprobs: req.logprobs ?? undefined,
          continues: raw ? prep.promptIds.slice(-1) : undefined,
          signal: ac.signal,
          onStart: req.stream ? () => (opened.events ??= answer.stream(res)) : undefined,
          onPiece: (piece) => {
            if (piece.logprobs && piece.finishReason !== 'eos') {
              const e = logprobEntry(this.session.tokenizer, piece.logprobs);
              entries[i].push(e);
              unsent[i].push(e);
            }
            const t = opened.events && piece.text ? (raw ? piece.text : trim.push(piece.text)) : '';
            if (t) opened.events!.text(t, i, req.logprobs === null ? null : unsent[i].splice(0));
          },
        })),
      );
    } catch (e) {
      ac.abort(); // the other choices
      const msg = (e as Error).message;
      if (!opened.events) throw new ApiError(500, `generation failed: ${msg}`, null, 'generation_failed');
      info.note = `error: ${msg}`;
      opened.events.fail(new ApiError(500, msg, null, 'generation_failed'));
      return;
    } finally {
      pix?.dispose();
    }
    const events = opened.events;
    const tokens = outs.reduce((a, o) => a + o.ids.length, 0);
    if (outs.some((o) => o.finishReason === 'aborted')) {
      const started = outs.some((o) => o.started);
      if (!started && this.closing) throw shuttingDown(); // queued when the server began to stop
      this.aborted++;
      if (!started) info.note = 'client closed while queued';
      else if (this.closing && !res.destroyed) {
        // stopped by shutdown, not by the client: tell it why
        info.note = `stopped by shutdown after ${tokens} tokens`;
        if (!events) throw shuttingDown();
        events.fail(shuttingDown());
      } else info.note = `client closed after ${tokens} tokens`;
      return;
    }
    this.completed++;
    info.note = `prompt ${prep.promptLength} completion ${tokens} finish ${outs.map((o) => finishReason(o.finishReason as FinishReason)).join(',')}`;
    const choices = outs.map((o, i) => ({ ...finished(prep, o), ...(req.logprobs === null ? {} : { logprobs: entries[i], unsent: unsent[i] }) }));
    if (events) events.finish(choices);
    else sendJson(res, 200, answer.body(choices));
  }

  /** The prefix cache as /health shows it (null when off). */
  prefixStats(): Record<string, number> | null {
    const p = this.batcher.prefix;
    return p ? { positions: p.positions, max_positions: p.maxPositions, entries: p.size, hits: p.hits, lookups: p.lookups } : null;
  }

  /** Refuse new completions, stop queued and running ones, wait for the batch to empty (idempotent). */
  shutdown(): Promise<void> {
    this.closing ??= (async () => {
      for (const ac of this.active) ac.abort();
      await this.batcher.dispose(); // waits for the batch to empty, then frees the prefix cache
    })();
    return this.closing;
  }
}

/** A finished generation as an API's answer writer sees it. */
export interface Finished {
  /** The reply, trimmed as the reference decodes it; stream deltas join to exactly this (to `raw` for an
   *  API with raw text). */
  text: string;
  /** The reply untrimmed (stop string removed). */
  raw: string;
  finish: FinishReason;
  promptTokens: number;
  completionTokens: number;
  promptIds: number[];
  ids: number[];
  /** Prompt positions taken from the prefix cache. */
  cachedTokens: number;
  /** With logprobs: one entry per generated token (an EOS token excluded), and the entries a stream has
   *  not sent yet with a delta. */
  logprobs?: LogprobEntry[];
  unsent?: LogprobEntry[];
}

const finished = (p: Prepared, o: BatchResult): Finished => ({
  text: o.text.trim(),
  raw: o.text,
  finish: o.finishReason as FinishReason,
  promptTokens: p.promptLength,
  completionTokens: o.ids.length,
  promptIds: p.promptIds,
  ids: o.ids,
  cachedTokens: o.cachedTokens,
});

/** One API on the shared path (validation, prompt, queue, generation): how it reads a request and how it
 *  writes the answer. Chat completions is CHAT_API; the Responses API is responses.ts's RESPONSES_API. */
export interface Api<R extends ChatRequest = ChatRequest> {
  /** The request field holding the conversation (named in context_length_exceeded errors). */
  conversationParam: string;
  /** Validates a parsed JSON body; throws ApiError 400. */
  parse(body: unknown): R;
  /** The writer of one request's answer (called before the request queues: ids and times are fixed then). */
  answer(req: R, model: string): Answer;
  /** The prompt and caps, when the API does not render a conversation (default: Completions.prepare). */
  prepare?(req: R, c: Completions): Promise<Prepared>;
  /** Stream the reply's text as generated, not trimmed as the reference trims a chat reply. */
  raw?: boolean;
}

export interface Answer {
  /** The body of a non-streamed answer: its choices in order (one unless the request asked for n). */
  body(fs: Finished[]): unknown;
  /** Starts a streamed answer: writes the headers and opening events. */
  stream(res: http.ServerResponse): AnswerStream;
}

export interface AnswerStream {
  /** A piece of the (trimmed) reply of choice `index`, with the logprobs entries of the tokens since the
   *  last piece (null: not asked for). */
  text(delta: string, index: number, logprobs: LogprobEntry[] | null): void;
  /** The closing events of every choice, then the end of the stream. */
  finish(fs: Finished[]): void;
  /** An error after the stream began (internal error or shutdown), then the end of the stream. */
  fail(e: ApiError): void;
}

/** POST /v1/chat/completions: `chat.completion` bodies; `chat.completion.chunk` events closed by [DONE]. */
/** The usage of a request's choices: the prompt counts once, every choice's tokens count (as OpenAI
 *  counts n choices). */
export const choicesUsage = (fs: Finished[]): Usage =>
  usageOf(
    fs[0].promptTokens,
    fs.reduce((a, f) => a + f.completionTokens, 0),
    fs[0].cachedTokens,
  );

export const CHAT_API: Api = {
  conversationParam: 'messages',
  parse: parseChatRequest,
  answer(req, model) {
    const base = completionBase(model);
    const usage = choicesUsage;
    return {
      body: (fs) =>
        completionBody(base, {
          choices: fs.map((f) => ({ content: f.text, finish: f.finish, tokenIds: req.returnTokenIds ? f.ids : undefined, logprobs: f.logprobs })),
          usage: usage(fs),
          promptTokenIds: req.returnTokenIds ? fs[0].promptIds : undefined,
        }),
      stream(res) {
        const events = new EventStream(res);
        for (let i = 0; i < req.n; i++) events.send(chunkBody(base, { role: 'assistant', content: '' }, null, i));
        return {
          text: (t, i, lp) => events.send(chunkBody(base, { content: t }, null, i, lp)),
          finish(fs) {
            fs.forEach((f, i) => events.send(chunkBody(base, {}, finishReason(f.finish), i, f.unsent ?? null)));
            if (req.includeUsage) events.send(usageChunkBody(base, usage(fs)));
            events.end();
          },
          fail: (e) => events.fail(e),
        };
      },
    };
  },
};
