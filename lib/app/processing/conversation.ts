// Conversation templates (docs/reference.md §3) and the `<image>` placeholder handling of training data (docs/reference.md §4.2).
//
// `render(conv)` reproduces the reference `Conversation.get_prompt()` byte for byte:
// - a message that is empty or null is "pending": SINGLE/TWO render `role + ":"`, LLAMA_2/PLAIN render nothing
//   (Python truthiness: an empty string counts as pending too);
// - a first message given with an image ({text, image}) has `<image>` removed, is stripped, and is re-inserted
//   as "<image>\n" + text; mmtag templates instead get a fake first exchange `<Image><image></Image>` /
//   `Received.`;
// - LLAMA_2 strips the leading *characters* '<', 's', '>' (Python `lstrip(sep)` takes a character set), and
//   wraps the system prompt only when it is non-empty (HEAD behaviour);
// - PLAIN: docs/reference.md §3 renders `m + sep` for every message; the reference would concatenate `sep2` (None) for
//   odd messages and raise, so we use `sep2 ?? sep` (training never renders PLAIN, §4.3).
// `llava_hf` is the llava-hf prompt `USER: <image>\n{prompt} ASSISTANT:` (no system prompt, §1.9); its
// multi-turn layout (answer + " " between turns, no `</s>`) follows the llava-1.5-hf chat template and is
// [unverified] against docs/reference.md, which only gives the single-turn form. MPT/chatml/mistral are out of scope.

import { type Turn } from './data';
import { mulberry32 } from '../util/random';
import { pyStrip } from '../util/pyformat';
import { DEFAULT_IMAGE_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN, IMAGE_PLACEHOLDER } from '../../constants';

export type SepStyle = 'SINGLE' | 'TWO' | 'PLAIN' | 'LLAMA_2' | 'LLAVA_HF';

/** A first user message sent together with an image (the reference's `(text, image, mode)` tuple). */
export interface ImageMessage {
  text: string;
  image: unknown;
  mode?: string;
}

export type MessageContent = string | ImageMessage | null;
export type Message = [role: string, content: MessageContent];

export interface Conversation {
  system: string;
  roles: [string, string];
  messages: Message[];
  offset: number;
  sepStyle: SepStyle;
  sep: string;
  sep2: string | null;
  version: string;
}

const SYS_HUMAN =
  'A chat between a curious human and an artificial intelligence assistant. ' +
  "The assistant gives helpful, detailed, and polite answers to the human's questions.";
const SYS_USER =
  'A chat between a curious user and an artificial intelligence assistant. ' +
  "The assistant gives helpful, detailed, and polite answers to the user's questions.";
const SYS_MMTAG =
  'A chat between a curious user and an artificial intelligence assistant. ' +
  'The assistant is able to understand the visual content that the user provides, and assist the user with a ' +
  'variety of tasks using natural language.' + // (sic) no space before "The"
  'The visual content will be provided with the following format: <Image>visual content</Image>.';
const SYS_LLAVA_LLAMA_2 =
  'You are a helpful language and vision assistant. ' +
  'You are able to understand the visual content that the user provides, ' +
  'and assist the user with a variety of tasks using natural language.';
const SYS_LLAMA_2 =
  'You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being ' +
  'safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal ' +
  'content. Please ensure that your responses are socially unbiased and positive in nature.\n\n' +
  'If a question does not make any sense, or is not factually coherent, explain why instead of answering ' +
  "something not correct. If you don't know the answer to a question, please don't share false information.";

/** The one-shot exchange preset in the `v0`/`default` template (offset 2). */
const V0_ONE_SHOT: Message[] = [
  ['Human', 'What are the key differences between renewable and non-renewable energy sources?'],
  [
    'Assistant',
    'Renewable energy sources are those that can be replenished naturally in a relatively ' +
      'short amount of time, such as solar, wind, hydro, geothermal, and biomass. ' +
      'Non-renewable energy sources, on the other hand, are finite and will eventually be ' +
      'depleted, such as coal, oil, and natural gas. Here are some key differences between ' +
      'renewable and non-renewable energy sources:\n' +
      '1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable ' +
      'energy sources are finite and will eventually run out.\n' +
      '2. Environmental impact: Renewable energy sources have a much lower environmental impact ' +
      'than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, ' +
      'and other negative effects.\n' +
      '3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically ' +
      'have lower operational costs than non-renewable sources.\n' +
      '4. Reliability: Renewable energy sources are often more reliable and can be used in more remote ' +
      'locations than non-renewable sources.\n' +
      '5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different ' +
      'situations and needs, while non-renewable sources are more rigid and inflexible.\n' +
      '6. Sustainability: Renewable energy sources are more sustainable over the long term, while ' +
      'non-renewable sources are not, and their depletion can lead to economic and social instability.\n',
  ],
];

type Preset = Omit<Conversation, 'messages'> & { messages?: Message[] };
const two = (system: string, version: string): Preset => ({
  system,
  roles: ['USER', 'ASSISTANT'],
  offset: 0,
  sepStyle: 'TWO',
  sep: ' ',
  sep2: '</s>',
  version,
});
const single = (system: string, version: string): Preset => ({
  system,
  roles: ['Human', 'Assistant'],
  offset: 0,
  sepStyle: 'SINGLE',
  sep: '###',
  sep2: null,
  version,
});
const llama2 = (system: string): Preset => ({
  system,
  roles: ['USER', 'ASSISTANT'],
  offset: 0,
  sepStyle: 'LLAMA_2',
  sep: '<s>',
  sep2: '</s>',
  version: 'llama_v2',
});
const plain: Preset = {
  system: '',
  roles: ['', ''],
  offset: 0,
  sepStyle: 'PLAIN',
  sep: '\n',
  sep2: null,
  version: 'Unknown',
};
const vicunaV0: Preset = { ...single(SYS_HUMAN, 'Unknown'), messages: V0_ONE_SHOT, offset: 2 };

const TEMPLATES: Record<string, Preset> = {
  default: vicunaV0,
  v0: vicunaV0,
  v1: two(SYS_USER, 'v1'),
  vicuna_v1: two(SYS_USER, 'v1'),
  llama_2: llama2(SYS_LLAMA_2),
  plain,
  v0_plain: plain,
  llava_v0: single(SYS_HUMAN, 'Unknown'),
  v0_mmtag: single(SYS_MMTAG, 'v0_mmtag'),
  llava_v1: two(SYS_HUMAN, 'v1'),
  v1_mmtag: two(SYS_MMTAG, 'v1_mmtag'),
  llava_llama_2: llama2(SYS_LLAVA_LLAMA_2),
  llava_hf: {
    system: '',
    roles: ['USER', 'ASSISTANT'],
    offset: 0,
    sepStyle: 'LLAVA_HF',
    sep: ' ',
    sep2: null,
    version: 'llava_hf',
  },
};

export const TEMPLATE_NAMES: readonly string[] = Object.keys(TEMPLATES);

/** A fresh, independent copy of a named template (the reference's `conv_templates[name].copy()`). */
export function getTemplate(name: string): Conversation {
  const t = TEMPLATES[name];
  if (!t) {
    throw new Error(
      `[conversation] unknown template '${name}' (known: ${TEMPLATE_NAMES.join(', ')}; ` + 'mpt/chatml_direct/mistral_instruct are out of scope)',
    );
  }
  return copy({ ...t, roles: [t.roles[0], t.roles[1]], messages: t.messages ?? [] });
}

/** Deep-enough copy: messages are new arrays; image payloads are shared. */
export function copy(conv: Conversation): Conversation {
  return {
    ...conv,
    roles: [conv.roles[0], conv.roles[1]],
    messages: conv.messages.map(([r, m]) => [r, m !== null && typeof m === 'object' ? { ...m } : m] as Message),
  };
}

export function appendMessage(conv: Conversation, role: string, content: MessageContent): void {
  conv.messages.push([role, content]);
}

/** Text of a message, or null when it is "pending" by Python truthiness (None or ""; a tuple is truthy). */
function textOf(m: MessageContent): string | null {
  if (m === null) return null;
  if (typeof m === 'string') return m.length > 0 ? m : null;
  return m.text;
}

/** Python `s.lstrip(chars)`: removes leading characters that belong to the set `chars`. */
function lstripChars(s: string, chars: string): string {
  let i = 0;
  while (i < s.length && chars.includes(s[i])) i++;
  return s.slice(i);
}

/** The prompt string exactly as the reference `get_prompt()` renders it. */
export function render(conv: Conversation): string {
  let messages: Array<[string, string | null]> = conv.messages.map(([r, m]) => [r, textOf(m)]);
  // From here on `m !== null` is the reference's `if message:` (an image tuple is truthy even with empty text).
  const first = conv.messages[0];
  if (first && first[1] !== null && typeof first[1] === 'object') {
    const init = pyStrip(first[1].text.replaceAll(DEFAULT_IMAGE_TOKEN, ''));
    if (conv.version.includes('mmtag')) {
      messages = [[conv.roles[0], '<Image><image></Image>'], [conv.roles[1], 'Received.'], [first[0], init], ...messages.slice(1)];
    } else {
      messages[0] = [first[0], DEFAULT_IMAGE_TOKEN + '\n' + init];
    }
  }

  let ret = '';
  switch (conv.sepStyle) {
    case 'SINGLE':
      ret = conv.system + conv.sep;
      for (const [role, m] of messages) ret += m !== null ? role + ': ' + m + conv.sep : role + ':';
      break;
    case 'TWO': {
      const seps = [conv.sep, conv.sep2 ?? ''];
      ret = conv.system + seps[0];
      messages.forEach(([role, m], i) => {
        ret += m !== null ? role + ': ' + m + seps[i % 2] : role + ':';
      });
      break;
    }
    case 'LLAMA_2': {
      messages.forEach(([role, m], i) => {
        if (i === 0) {
          if (m === null) throw new Error('[conversation] LLAMA_2: first message should not be empty');
          if (role !== conv.roles[0]) throw new Error('[conversation] LLAMA_2: first message should come from user');
        }
        if (m === null) return;
        let msg = m;
        if (i === 0 && conv.system.length > 0) msg = `<<SYS>>\n${conv.system}\n<</SYS>>\n\n` + msg;
        if (i % 2 === 0) ret += conv.sep + `[INST] ${msg} [/INST]`;
        else ret += ' ' + msg + ' ' + (conv.sep2 ?? '');
      });
      ret = lstripChars(ret, conv.sep);
      break;
    }
    case 'PLAIN': {
      const seps = [conv.sep, conv.sep2 ?? conv.sep];
      ret = conv.system;
      messages.forEach(([, m], i) => {
        if (m !== null) ret += m + seps[i % 2];
      });
      break;
    }
    case 'LLAVA_HF': {
      // No system prompt; "ROLE: text " per turn, pending reply "ROLE:".
      const parts: string[] = [];
      for (const [role, m] of messages) parts.push(m !== null ? `${role}: ${m}` : `${role}:`);
      ret = conv.system + parts.join(conv.sep);
      break;
    }
  }
  return ret;
}

/** String that ends a generated reply (model worker, docs/reference.md §9): `sep` for SINGLE, `sep2` for TWO/LLAMA_2. */
export function stopString(conv: Conversation): string | null {
  if (conv.sepStyle === 'SINGLE') return conv.sep;
  if (conv.sepStyle === 'TWO' || conv.sepStyle === 'LLAMA_2') return conv.sep2;
  return null;
}

/** CLI template auto-pick from a model name (docs/reference.md §9). Out-of-scope names are returned as is. */
export function templateForModelName(modelName: string): string {
  const n = modelName.toLowerCase();
  if (n.includes('llama-2')) return 'llava_llama_2';
  if (n.includes('mistral')) return 'mistral_instruct';
  if (n.includes('v1.6-34b')) return 'chatml_direct';
  if (n.includes('v1')) return 'llava_v1';
  if (n.includes('mpt')) return 'mpt';
  return 'llava_v0';
}

/** Inference-side image insertion (run_llava.py): `<image-placeholder>` is replaced in place if present,
 *  otherwise the image goes first, followed by a newline (cli.py / model_vqa.py do the latter). */
export function insertImageToken(query: string, opts: { mmUseImStartEnd?: boolean } = {}): string {
  const tok = opts.mmUseImStartEnd ? DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN : DEFAULT_IMAGE_TOKEN;
  if (query.includes(IMAGE_PLACEHOLDER)) return query.replaceAll(IMAGE_PLACEHOLDER, tok);
  return tok + '\n' + query;
}

/** A generation prompt: template + question (image inserted into the first user turn) + pending reply.
 *  `history` holds earlier [question, answer] rounds; the image goes into the first question only. */
export function buildPrompt(
  templateName: string,
  question: string,
  opts: { image?: boolean; mmUseImStartEnd?: boolean; history?: Array<[string, string]> } = {},
): string {
  const conv = getTemplate(templateName);
  const rounds: Array<[string, string | null]> = [...(opts.history ?? []), [question, null]];
  rounds.forEach(([q, a], i) => {
    appendMessage(conv, conv.roles[0], i === 0 && opts.image ? insertImageToken(q, opts) : q);
    appendMessage(conv, conv.roles[1], a);
  });
  return render(conv);
}

// ---------------------------------------------------------------------------------------------------------
// Training-side placeholder handling (preprocess_multimodal, §4.2)

export interface MultimodalOptions {
  /** data_args.is_multimodal (a vision tower is configured); when false the turns pass through untouched. */
  isMultimodal?: boolean;
  /** Wrap as `<im_start><image><im_end>`. */
  mmUseImStartEnd?: boolean;
  /** Template version contains "mmtag": wrap as `<Image><image></Image>`. */
  mmtag?: boolean;
  /** 'first' (code since v1.0.0): image always first; 'asWritten' (v0 code): keep the data's position;
   *  'random' (paper): image before or after the question with probability 1/2 each. */
  imageOrder?: 'first' | 'asWritten' | 'random';
  /** Draws for 'random' (default: mulberry32(seed)). */
  rng?: () => number;
  seed?: number;
  /** v0 in-place scheme (§1.7): `<image>` → n × `<im_patch>` (wrapped by start/end if mmUseImStartEnd). */
  v0PatchTokens?: number;
}

/** Returns new turns with `<image>` normalised as the reference training code does; inputs are not mutated. */
export function preprocessMultimodal(turns: Turn[], opts: MultimodalOptions = {}): Turn[] {
  const out = turns.map((t) => ({ ...t }));
  if (opts.isMultimodal === false) return out;
  const order = opts.imageOrder ?? 'first';
  const rng = opts.rng ?? (order === 'random' ? mulberry32(opts.seed ?? 0) : undefined);
  for (const t of out) {
    if (t.value.includes(DEFAULT_IMAGE_TOKEN)) {
      if (order !== 'asWritten') {
        const q = pyStrip(t.value.replaceAll(DEFAULT_IMAGE_TOKEN, ''));
        const imageFirst = order === 'first' || (rng as () => number)() < 0.5;
        t.value = pyStrip(imageFirst ? DEFAULT_IMAGE_TOKEN + '\n' + q : q + '\n' + DEFAULT_IMAGE_TOKEN);
      }
      if (opts.mmtag) t.value = t.value.replaceAll(DEFAULT_IMAGE_TOKEN, '<Image>' + DEFAULT_IMAGE_TOKEN + '</Image>');
    }
    let replace = DEFAULT_IMAGE_TOKEN;
    if (opts.v0PatchTokens !== undefined) replace = DEFAULT_IMAGE_PATCH_TOKEN.repeat(opts.v0PatchTokens);
    if (opts.mmUseImStartEnd) replace = DEFAULT_IM_START_TOKEN + replace + DEFAULT_IM_END_TOKEN;
    if (replace !== DEFAULT_IMAGE_TOKEN) t.value = t.value.replaceAll(DEFAULT_IMAGE_TOKEN, replace);
  }
  return out;
}
