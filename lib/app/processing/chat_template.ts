// chat_template.ts — Jinja chat templates, the way Hugging Face checkpoints describe their own prompt format.
//
// Two directions:
// - Reading: a checkpoint may ship a Jinja `chat_template` (chat_template.json, chat_template.jinja or the
//   `chat_template` key of tokenizer_config.json; llava-hf checkpoints do). readChatTemplate finds it and
//   renderJinjaPrompt renders a conversation with it through @huggingface/jinja, passing messages the way
//   transformers' processors do: `content` is a list of parts, `{type: 'image'}` then `{type: 'text', text}`.
//   The session uses it, under the pseudo template name CHAT_TEMPLATE, for llava-hf checkpoints when no
//   template was chosen explicitly and the checkpoint does not name a conversation template of its own.
// - Writing: jinjaForTemplate turns one of the hand-written templates (conversation.ts) into an equivalent
//   Jinja template, so a llava-hf model trained with, say, `v1` tells transformers users the prompt it was
//   trained on instead of passing on its base model's template. The test suite renders both ways and
//   compares them for every template that has an equivalent (mmtag and llava_hf have none: null).
//
// Decisions:
// - A leading bos_token in the rendered text is dropped: the tokenizer adds BOS itself (encodePrompt).
// - A user message whose text carries `<image>` gets an image part instead (a leading `<image>\n` removed,
//   else every `<image>` and the surrounding blanks); the templates print images before the text, as
//   insertImageToken does for chat, serve and eval.
// - Errors name the file the template came from and start with `[chat_template] `.
import * as fs from 'fs';
import * as path from 'path';
import { Template } from '@huggingface/jinja';
import { getTemplate, render, type Conversation } from './conversation';
import { pyStrip } from '../util/pyformat';
import { DEFAULT_IMAGE_TOKEN } from '../../constants';
import { readJson } from '../../io/json';

/** The template name that stands for "the checkpoint's own Jinja chat_template". */
export const CHAT_TEMPLATE = 'chat_template';

/** Files that may hold a Jinja chat template, in the order transformers prefers them. */
export const CHAT_TEMPLATE_FILES = ['chat_template.jinja', 'chat_template.json', 'tokenizer_config.json'] as const;

export interface JinjaTemplate {
  /** The Jinja source. */
  source: string;
  /** Where it came from (for messages). */
  file: string;
  bosToken?: string;
  eosToken?: string;
}

/** One message of a conversation as entry points hold it. */
export interface PromptMessage {
  role: 'system' | 'user' | 'assistant';
  text: string;
  /** The image goes with this message (chat and serve: the first user message). */
  image?: boolean;
}

const readJsonObject = (file: string): Record<string, unknown> => readJson(file, 'file', 'chat_template', { object: true });

/** A `chat_template` value: a string, or a list of {name, template} (the one named 'default'). */
function templateValue(v: unknown, file: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const d = v.find((x) => (x as { name?: unknown })?.name === 'default') as { template?: unknown } | undefined;
    if (d && typeof d.template === 'string') return d.template;
    throw new Error(`[chat_template] ${file}: chat_template is a list without a 'default' entry`);
  }
  throw new Error(`[chat_template] ${file}: chat_template must be a string (got ${typeof v})`);
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** The Jinja chat template a checkpoint directory ships, or null. Malformed files are errors naming them. */
export function readChatTemplate(dir: string): JinjaTemplate | null {
  const tcFile = path.join(dir, 'tokenizer_config.json');
  const tc = fs.existsSync(tcFile) ? readJsonObject(tcFile) : {};
  const tokens = { bosToken: tokenText(tc.bos_token), eosToken: tokenText(tc.eos_token) };
  for (const name of CHAT_TEMPLATE_FILES) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) continue;
    let source: string | null;
    if (name === 'chat_template.jinja') source = fs.readFileSync(file, 'utf8');
    else source = templateValue((name === 'tokenizer_config.json' ? tc : readJsonObject(file)).chat_template, file);
    if (source !== null && source.trim() !== '') return { source, file, ...tokens };
  }
  return null;
}

/** Messages as transformers' processors pass them to a chat template. */
function hfMessages(messages: readonly PromptMessage[]): Record<string, unknown>[] {
  return messages.map((m) => {
    let text = m.text;
    let image = m.image === true;
    if (m.role === 'user' && text.includes(DEFAULT_IMAGE_TOKEN)) {
      // '<image>\nWhat ...' (how eval and the data write it) becomes an image part and 'What ...'.
      text = text.startsWith(DEFAULT_IMAGE_TOKEN + '\n')
        ? text.slice(DEFAULT_IMAGE_TOKEN.length + 1)
        : pyStrip(text.replaceAll(DEFAULT_IMAGE_TOKEN, ''));
      image = true;
    }
    const content: Record<string, unknown>[] = image ? [{ type: 'image' }] : [];
    content.push({ type: 'text', text });
    return { role: m.role, content };
  });
}

const compiled = new Map<string, Template>();

/** The prompt for `messages` with a pending assistant reply (add_generation_prompt), rendered by the Jinja
 *  template. */
export function renderJinjaPrompt(tpl: JinjaTemplate, messages: readonly PromptMessage[]): string {
  let t = compiled.get(tpl.source);
  try {
    if (!t) compiled.set(tpl.source, (t = new Template(tpl.source)));
  } catch (e) {
    throw new Error(`[chat_template] ${tpl.file}: cannot parse the chat template (${(e as Error).message})`);
  }
  let out: string;
  try {
    out = t.render({
      messages: hfMessages(messages),
      add_generation_prompt: true,
      bos_token: tpl.bosToken ?? '',
      eos_token: tpl.eosToken ?? '',
    });
  } catch (e) {
    throw new Error(`[chat_template] ${tpl.file}: rendering failed (${(e as Error).message})`);
  }
  if (tpl.bosToken && out.startsWith(tpl.bosToken)) out = out.slice(tpl.bosToken.length);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Hand-written template -> Jinja

/** A Jinja string literal. */
const lit = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'`;

/** Shared head: `text(content)` joins text parts; `system` and `loop_messages` split off a system message. */
function head(defaultSystem: string): string {
  return (
    "{%- macro text(c) -%}{%- if c is string -%}{{ c }}{%- else -%}{%- for p in c if p['type'] == 'text' -%}{{ p['text'] }}{%- endfor -%}{%- endif -%}{%- endmacro -%}" +
    "{%- macro images(c) -%}{%- if c is not string -%}{%- for p in c if p['type'] == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}{%- endif -%}{%- endmacro -%}" +
    "{%- if messages[0]['role'] == 'system' -%}{%- set system = text(messages[0]['content']) -%}{%- set loop_messages = messages[1:] -%}" +
    `{%- else -%}{%- set system = ${lit(defaultSystem)} -%}{%- set loop_messages = messages -%}{%- endif -%}`
  );
}

/** The message text as buildPrompt prints it: its images (`<image>\n` each), then its text. */
const BODY = "{%- set body = images(m['content']) + text(m['content']) -%}";

/** Jinja equivalent of a hand-written template, or null when there is none (llava_hf, mmtag templates). */
export function jinjaForTemplate(name: string): string | null {
  const conv: Conversation = getTemplate(name);
  if (conv.sepStyle === 'LLAVA_HF' || conv.version.includes('mmtag')) return null;
  const [user, assistant] = conv.roles;
  const role = `{%- set role = ${lit(user)} if m['role'] == 'user' else ${lit(assistant)} -%}`;
  const loop = (inner: string, after = ''): string => `{%- for m in loop_messages -%}${role}${BODY}${inner}{%- endfor -%}${after}`;
  const n = conv.messages.length; // preset exchange (the v0 one-shot), printed literally
  switch (conv.sepStyle) {
    case 'SINGLE': {
      const preset = n ? render({ ...conv, system: '' }).slice(conv.sep.length) : '';
      return (
        head(conv.system) +
        `{{ system + ${lit(conv.sep)} + ${lit(preset)} }}` +
        loop(`{{ role + ': ' + body + ${lit(conv.sep)} }}`, `{{ ${lit(assistant)} + ':' }}`)
      );
    }
    case 'TWO': {
      if (n) return null;
      const seps = `[${lit(conv.sep)}, ${lit(conv.sep2 ?? '')}]`;
      return (
        head(conv.system) +
        `{{ system + ${lit(conv.sep)} }}` +
        loop(`{{ role + ': ' + body + ${seps}[loop.index0 % 2] }}`, `{{ ${lit(assistant)} + ':' }}`)
      );
    }
    case 'LLAMA_2': {
      if (n) return null;
      const sys = "{%- if loop.first and system -%}{%- set body = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + body -%}{%- endif -%}";
      const turn =
        `{%- if loop.index0 % 2 == 0 -%}{{ (${lit(conv.sep)} if not loop.first else '') + '[INST] ' + body + ' [/INST]' }}` +
        `{%- else -%}{{ ' ' + body + ' ' + ${lit(conv.sep2 ?? '')} }}{%- endif -%}`;
      return head(conv.system) + loop(sys + turn);
    }
    case 'PLAIN': {
      if (n) return null;
      const seps = `[${lit(conv.sep)}, ${lit(conv.sep2 ?? conv.sep)}]`;
      return head(conv.system) + '{{ system }}' + loop(`{{ body + ${seps}[loop.index0 % 2] }}`);
    }
    default:
      return null;
  }
}
