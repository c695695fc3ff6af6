// logprobs.ts — chat completions' `logprobs` and `top_logprobs` (parsed in protocol.ts): the entries of a
// choice's `logprobs.content` as OpenAI writes them: per generated token its text, UTF-8 bytes and
// log-probability, with the likeliest alternatives. The numbers are the model's own distribution
// (inference/logprobs.ts: log-softmax of the raw logits, before temperature and top-p).
import type { Tokenizer } from '../processing/tokenizer';
import type { StepLogprobs, TokenLogprob } from '../inference/logprobs';

/** A token's bytes: a SentencePiece byte token (<0x0A>) is its one byte, other pieces are their text
 *  with the word marker ▁ as a space. */
export function tokenBytes(tokenizer: Tokenizer, id: number): number[] {
  const piece = tokenizer.idToToken(id);
  const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  return byte ? [parseInt(byte[1], 16)] : [...Buffer.from(piece.replace(/\u2581/g, ' '), 'utf8')];
}

/** One entry of `logprobs.content`, or of an entry's `top_logprobs`. */
export interface LogprobEntry {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs?: LogprobEntry[];
}

function entry(tokenizer: Tokenizer, t: TokenLogprob): LogprobEntry {
  const bytes = tokenBytes(tokenizer, t.token);
  return { token: Buffer.from(bytes).toString('utf8'), logprob: t.logprob, bytes };
}

/** The `logprobs.content` entry of a generated token. */
export function logprobEntry(tokenizer: Tokenizer, s: StepLogprobs): LogprobEntry {
  return { ...entry(tokenizer, s), top_logprobs: s.top.map((t) => entry(tokenizer, t)) };
}
