// Training-sample tokenisation and label masking, as the reference `llava/train/train.py` does it (docs/reference.md §1.5,
// §4). Output: input ids with IMAGE_TOKEN_INDEX (-200) standing for each image, and labels with IGNORE_INDEX
// (-100) on everything that is not supervised. Image rows are expanded later by the splice (§1.6), or here by
// `expandImageTokens` for the llava-hf scheme.
//
// Non-obvious decisions (each mirrors the reference, quirks included):
// - `tokenizerImageToken` tokenises every chunk between `<image>`s on its own (each gets BOS + dummy-prefix
//   space), keeps one BOS at the front, and drops the first token of *every* chunk when the first chunk began
//   with BOS (so an empty chunk contributes nothing).
// - Masks are computed from per-round token counts, not from offsets: `round_len = |tok(round)|` (its BOS stands
//   in for the `</s>`), `instr_len = |tok(instruction)| - 2`. If the counted length disagrees with the number
//   of non-pad tokens the whole sample is masked and a warning is emitted (reference text, via onWarning).
//   Pad id for that count is the UNK id (the reference sets pad = unk for every version but `v0`).
// - The non-legacy `-1` adjustment of v1 applies only when the tokenizer reports `legacy === false`; a
//   tokenizer that does not say is treated as legacy (HF's LlamaTokenizer default) and tokenizers ≥ 0.14 is
//   assumed (the reference pins 0.15.1).
// - Slices follow Python semantics (negative stop counts from the end), as the reference's tensor slicing does.
// - Truncation (§4.6): text-only samples are cut to modelMaxLength at tokenisation (before the mismatch
//   check); image samples are not; `preprocessSample` then applies the collator's cut to modelMaxLength.
// - `--version` → template (§4.1): 'v0' / 'v0.5' never set the template, so they train with `vicuna_v1`
//   (v1 path); unknown names also fall back to `vicuna_v1`. The `###` path is reached via llava_v0, v0_mmtag
//   and default.

import {
  appendMessage,
  copy,
  getTemplate,
  preprocessMultimodal,
  render,
  TEMPLATE_NAMES,
  type Conversation,
  type MultimodalOptions,
} from './conversation';
import type { Sample, Turn } from './data';
import { IGNORE_INDEX, IMAGE_TOKEN_INDEX } from '../../constants';
import { DEFAULT_IMAGE_TOKEN } from '../../constants';

/** The tokenizer surface this module needs (lib/app/processing/tokenizer.ts satisfies it). `encode` with
 *  addSpecialTokens (default true) prepends BOS like the slow LLaMA tokenizer, and recognises `</s>`/`<s>`
 *  written in the text as the special tokens. */
export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** When undefined (or not the first id of an encoding), tokenizerImageToken keeps every chunk whole. */
  bosId?: number;
  eosId?: number;
  unkId?: number;
  padId?: number;
  /** HF `tokenizer.legacy`; undefined is treated as true. */
  legacy?: boolean;
}

export interface Tokenized {
  inputIds: number[];
  labels: number[];
  /** Set when the v1/llama_2 length check failed and every label was masked. */
  mismatch?: boolean;
}

export interface MaskOptions {
  hasImage: boolean;
  modelMaxLength: number;
  /** Id not counted by the length check (reference: pad = UNK). Default: tokenizer.unkId ?? 0. */
  padId?: number;
  legacy?: boolean;
  tokenizersGe014?: boolean;
  onWarning?: (msg: string) => void;
}

const enc = (tok: TextTokenizer, text: string) => tok.encode(text, { addSpecialTokens: true });

/** §1.5: prompt with `<image>` → ids with one IMAGE_TOKEN_INDEX per placeholder. No truncation. */
export function tokenizerImageToken(prompt: string, tok: TextTokenizer, imageTokenIndex = IMAGE_TOKEN_INDEX): number[] {
  const chunks = prompt.split(DEFAULT_IMAGE_TOKEN).map((c) => enc(tok, c));
  const out: number[] = [];
  let offset = 0;
  if (chunks.length > 0 && chunks[0].length > 0 && chunks[0][0] === tok.bosId) {
    offset = 1;
    out.push(chunks[0][0]);
  }
  chunks.forEach((c, i) => {
    if (i > 0) out.push(imageTokenIndex);
    for (let k = offset; k < c.length; k++) out.push(c[k]);
  });
  return out;
}

/** Python `a[start:stop] = value` on a list (negative indices count from the end, bounds clipped). */
export function pySliceFill(a: number[], start: number, stop: number, value: number): void {
  const n = a.length;
  const norm = (i: number) => (i < 0 ? Math.max(0, n + i) : Math.min(i, n));
  for (let i = norm(start), e = norm(stop); i < e; i++) a[i] = value;
}

function tokenLen(text: string, tok: TextTokenizer, hasImage: boolean): number {
  return hasImage ? tokenizerImageToken(text, tok).length : enc(tok, text).length;
}

function tokenizeConversation(prompt: string, tok: TextTokenizer, o: MaskOptions): number[] {
  return o.hasImage ? tokenizerImageToken(prompt, tok) : enc(tok, prompt).slice(0, o.modelMaxLength);
}

/** Renders turns with a TWO or LLAMA_2 template; drops a leading gpt turn and asserts alternation. */
function renderTurns(turns: Turn[], template: Conversation): { conv: Conversation; prompt: string } {
  const conv = copy(template);
  conv.messages = [];
  const roles = { human: conv.roles[0], gpt: conv.roles[1] };
  let src = turns;
  if (src.length > 0 && roles[src[0].from] !== conv.roles[0]) src = src.slice(1);
  src.forEach((t, j) => {
    const role = roles[t.from];
    if (role === undefined || role !== conv.roles[j % 2]) {
      throw new Error(`[preprocess] turn ${j}: roles must alternate human/gpt (got ${t.from})`);
    }
    appendMessage(conv, role, t.value);
  });
  return { conv, prompt: render(conv) };
}

/** Shared round-counting mask of preprocess_v1 / preprocess_llama_2. */
function maskRounds(
  prompt: string,
  inputIds: number[],
  tok: TextTokenizer,
  sep: string,
  roundSep: string,
  legacyAdjust: boolean,
  o: MaskOptions,
): Tokenized {
  const labels = inputIds.slice();
  const padId = o.padId ?? tok.unkId ?? 0;
  const total = inputIds.reduce((n, id) => n + (id !== padId ? 1 : 0), 0);
  let cur = 1;
  pySliceFill(labels, 0, cur, IGNORE_INDEX);
  const rounds = prompt.split(roundSep);
  for (let i = 0; i < rounds.length; i++) {
    const rou = rounds[i];
    if (rou === '') break;
    const parts = rou.split(sep);
    if (parts.length !== 2) break;
    let roundLen = tokenLen(rou, tok, o.hasImage);
    let instrLen = tokenLen(parts[0] + sep, tok, o.hasImage) - 2;
    if (legacyAdjust && i !== 0) {
      roundLen -= 1;
      instrLen -= 1;
    }
    pySliceFill(labels, cur, cur + instrLen, IGNORE_INDEX);
    cur += roundLen;
  }
  pySliceFill(labels, cur, labels.length, IGNORE_INDEX);
  if (cur < o.modelMaxLength && cur !== total) {
    labels.fill(IGNORE_INDEX);
    (o.onWarning ?? ((m: string) => console.warn(m)))(`WARNING: tokenization mismatch: ${cur} vs. ${total}. (ignored)`);
    return { inputIds, labels, mismatch: true };
  }
  return { inputIds, labels };
}

/** §4.4 preprocess_v1 (templates whose version starts with "v1": vicuna_v1, llava_v1, v1_mmtag). */
export function preprocessV1(turns: Turn[], tok: TextTokenizer, template: Conversation, o: MaskOptions): Tokenized {
  const { conv, prompt } = renderTurns(turns, template);
  const ids = tokenizeConversation(prompt, tok, o);
  const legacy = o.legacy ?? tok.legacy ?? true;
  const adjust = !legacy && (o.tokenizersGe014 ?? true);
  return maskRounds(prompt, ids, tok, conv.sep + conv.roles[1] + ': ', conv.sep2 as string, adjust, o);
}

/** §4.4 preprocess_llama_2: same counting with sep "[/INST] " and no legacy adjustment. */
export function preprocessLlama2(turns: Turn[], tok: TextTokenizer, template: Conversation, o: MaskOptions): Tokenized {
  if (template.sepStyle !== 'LLAMA_2') throw new Error('[preprocess] preprocessLlama2 needs a LLAMA_2 template');
  const { conv, prompt } = renderTurns(turns, template);
  const ids = tokenizeConversation(prompt, tok, o);
  return maskRounds(prompt, ids, tok, '[/INST] ', conv.sep2 as string, false, o);
}

/** §4.3 preprocess_plain: `<image>` + caption + "\n"; only BOS and the image sentinel are masked. Never
 *  truncated here (the collator and the splice cut later). */
export function preprocessPlain(turns: Turn[], tok: TextTokenizer, sep = '\n'): Tokenized {
  if (turns.length !== 2) throw new Error(`[preprocess] plain: sample must have exactly 2 turns, has ${turns.length}`);
  if (!turns[0].value.includes(DEFAULT_IMAGE_TOKEN)) throw new Error('[preprocess] plain: first turn has no <image>');
  const inputIds = tokenizerImageToken(DEFAULT_IMAGE_TOKEN + turns[1].value + sep, tok);
  const labels = inputIds.slice();
  pySliceFill(labels, 0, tokenizerImageToken(DEFAULT_IMAGE_TOKEN, tok).length, IGNORE_INDEX);
  return { inputIds, labels };
}

/** `_add_speaker_and_signal`: header + "### Role: text\n" per turn + "### ". Returns the per-turn pieces too. */
export function addSpeakerAndSignal(header: string, turns: Turn[], roles: [string, string]): { conversation: string; pieces: string[] } {
  const pieces = turns.map((t) => {
    const from = String(t.from).toLowerCase();
    const role = from === 'human' ? roles[0] : from === 'gpt' ? roles[1] : 'unknown';
    return '### ' + role + ': ' + t.value + '\n';
  });
  return { conversation: header + pieces.join('') + '### ', pieces };
}

/** `_mask_targets`: mask the header, then tokens [c+2, c+n) of every human piece (n counts its own BOS, so the
 *  offsets drift by one per turn — the inherited FastChat approximation, kept). */
export function maskTargets(target: number[], tokenizedLens: number[], speakers: string[]): void {
  let cur = tokenizedLens[0];
  pySliceFill(target, 0, cur, IGNORE_INDEX);
  tokenizedLens.slice(1).forEach((n, k) => {
    if (speakers[k] === 'human') pySliceFill(target, cur + 2, cur + n, IGNORE_INDEX);
    cur += n;
  });
}

/** §4.5 the `###` path (llava_v0, v0_mmtag, default). No mismatch check. */
export function preprocessV0(turns: Turn[], tok: TextTokenizer, template: Conversation, o: MaskOptions): Tokenized {
  const header = `${template.system}\n\n`;
  const { conversation, pieces } = addSpeakerAndSignal(header, turns, template.roles);
  const inputIds = tokenizeConversation(conversation, tok, o);
  const padId = o.padId ?? tok.unkId ?? 0;
  // Text-only: `_tokenize_fn` truncates each piece and counts its non-pad tokens; image: plain length.
  const lens = [header, ...pieces].map((p) =>
    o.hasImage
      ? tokenizerImageToken(p, tok).length
      : enc(tok, p)
          .slice(0, o.modelMaxLength)
          .filter((id) => id !== padId).length,
  );
  const labels = inputIds.slice();
  maskTargets(
    labels,
    lens,
    turns.map((t) => t.from),
  );
  return { inputIds, labels };
}

export type TrainingPath = 'plain' | 'llama_2' | 'v1' | 'sep';

/** §4.1: the `--version` flag → template actually used and the preprocess path it dispatches to. */
export function resolveTrainingTemplate(version: string): { name: string; conv: Conversation; path: TrainingPath } {
  // 'v0' and 'v0.5' never assign the global template, which stays at the module default vicuna_v1; any name
  // that is not a template also becomes vicuna_v1.
  const name = version === 'v0' || version === 'v0.5' || !TEMPLATE_NAMES.includes(version) ? 'vicuna_v1' : version;
  if (name === 'llava_hf') throw new Error('[preprocess] llava_hf is an inference prompt, not a training version');
  const conv = getTemplate(name);
  // Dispatch order of the reference `preprocess`: PLAIN → LLAMA_2 → version "v1…" → (mpt) → `###`.
  let path: TrainingPath = 'sep';
  if (conv.sepStyle === 'PLAIN') path = 'plain';
  else if (conv.sepStyle === 'LLAMA_2') path = 'llama_2';
  else if (conv.version.startsWith('v1')) path = 'v1';
  return { name, conv, path };
}

export interface SampleOptions extends Omit<MultimodalOptions, 'mmtag'> {
  /** The training `--version` (plain, v1, llava_llama_2, llava_v0, v0, …); the §4.1 quirk is applied. */
  template: string;
  tokenizer: TextTokenizer;
  modelMaxLength: number;
  /** Default: `'image' in sample`, as the dataset decides it. */
  hasImage?: boolean;
  /** For `--version v0`, the id of the added `[PAD]` token (otherwise tokenizer.padId). */
  padId?: number;
  legacy?: boolean;
  tokenizersGe014?: boolean;
  onWarning?: (msg: string) => void;
}

/** One dataset item → {inputIds, labels}: preprocess_multimodal (image samples), the template's path, then the
 *  collator's cut to modelMaxLength. */
export function preprocessSample(sample: Sample, opts: SampleOptions): Tokenized {
  const { conv, path } = resolveTrainingTemplate(opts.template);
  const hasImage = opts.hasImage ?? sample.image !== undefined;
  const tok = opts.tokenizer;
  let turns = sample.conversations.map((t) => ({ ...t }));
  if (sample.image !== undefined) {
    turns = preprocessMultimodal(turns, { ...opts, mmtag: conv.version.includes('mmtag') });
  }
  const padId = opts.padId ?? (opts.template === 'v0' ? tok.padId : (tok.unkId ?? 0));
  if (padId === undefined) throw new Error('[preprocess] --version v0 needs a pad token id (the reference adds [PAD])');
  const o: MaskOptions = {
    hasImage,
    modelMaxLength: opts.modelMaxLength,
    padId,
    legacy: opts.legacy,
    tokenizersGe014: opts.tokenizersGe014,
    onWarning: opts.onWarning,
  };
  let r: Tokenized;
  if (path === 'plain') r = preprocessPlain(turns, tok, conv.sep);
  else if (path === 'llama_2') r = preprocessLlama2(turns, tok, conv, o);
  else if (path === 'v1') r = preprocessV1(turns, tok, conv, o);
  else r = preprocessV0(turns, tok, conv, o);
  // DataCollatorForSupervisedDataset: ids/labels cut to model_max_length (per-sample equivalent).
  const max = opts.modelMaxLength;
  const out: Tokenized = { inputIds: r.inputIds.slice(0, max), labels: r.labels.slice(0, max) };
  if (r.mismatch) out.mismatch = true;
  return out;
}

/** llava-hf scheme (§1.9): each IMAGE_TOKEN_INDEX sentinel becomes nImageTokens copies of imageTokenId
 *  (labels -100), one per feature row; optional maxLength applies the post-expansion cut (§1.6 step 6). */
export function expandImageTokens(inputIds: number[], labels: number[], nImageTokens: number, imageTokenId: number, maxLength?: number): Tokenized {
  if (labels.length !== inputIds.length) throw new Error('[preprocess] expandImageTokens: ids/labels length differ');
  const ids: number[] = [];
  const lab: number[] = [];
  inputIds.forEach((id, i) => {
    if (id === IMAGE_TOKEN_INDEX) {
      for (let k = 0; k < nImageTokens; k++) {
        ids.push(imageTokenId);
        lab.push(IGNORE_INDEX);
      }
    } else {
      ids.push(id);
      lab.push(labels[i]);
    }
  });
  if (maxLength !== undefined) return { inputIds: ids.slice(0, maxLength), labels: lab.slice(0, maxLength) };
  return { inputIds: ids, labels: lab };
}
