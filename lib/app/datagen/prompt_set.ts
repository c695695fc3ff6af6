// prompt_set.ts — the chat sent for one image: a type's system message and few-shot examples (built in,
// or read from the reference folder layout), and the message list built from them and an image's context.
//
// Decisions:
// - Few-shot examples are TypeScript constants (prompts.ts) so nothing has to be copied next to the
//   compiled JS; `--prompts-dir` reads the reference layout <dir>/<folder>/{system_message.txt, NNN_caps.txt,
//   NNN_conv.txt} (folders conversation, detail_description, complex_reasoning) when the originals are at
//   hand, and writePromptsDir() writes the built-ins out in that layout. File contents are stripped.
import * as fs from 'fs';
import * as path from 'path';
import { BUILTIN_FEW_SHOT, GPT_DATA_TYPES, PROMPT_FOLDERS, SYSTEM_MESSAGES, type FewShotExample, type GptDataType } from './prompts';
import type { ChatMessage } from '../util/openai';
import { pyStrip } from '../util/pyformat';
import { GptDataError } from './common';

// ---------------------------------------------------------------------------------------------------------
// Prompts

/** A system message and the few-shot examples of one type. */
export interface PromptSet {
  type: GptDataType;
  system: string;
  examples: FewShotExample[];
  /** 'builtin' or the folder the files came from. */
  source: string;
}

export function builtinPromptSet(type: GptDataType): PromptSet {
  return { type, system: SYSTEM_MESSAGES[type], examples: BUILTIN_FEW_SHOT[type].map((e) => ({ ...e })), source: 'builtin' };
}

function readText(file: string): string {
  return pyStrip(fs.readFileSync(file, 'utf8').replace(/\r\n/g, '\n'));
}

/**
 * Reads one type's prompts from the reference layout: `dir/<folder>/` (folder = conversation,
 * detail_description or complex_reasoning) or, when that does not exist, `dir` itself. NNN_caps.txt /
 * NNN_conv.txt pairs are used in name order; system_message.txt is optional (default: the verbatim one).
 */
export function loadPromptSet(dir: string, type: GptDataType): PromptSet {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new GptDataError(`prompts directory ${dir} not found`);
  const sub = path.join(dir, PROMPT_FOLDERS[type]);
  const folder = fs.existsSync(sub) && fs.statSync(sub).isDirectory() ? sub : dir;
  const files = fs.readdirSync(folder);
  const stems = files
    .filter((f) => f.endsWith('_caps.txt'))
    .map((f) => f.slice(0, -'_caps.txt'.length))
    .sort();
  const convs = new Set(files.filter((f) => f.endsWith('_conv.txt')).map((f) => f.slice(0, -'_conv.txt'.length)));
  const examples: FewShotExample[] = [];
  for (const s of stems) {
    if (!convs.has(s)) throw new GptDataError(`prompts: ${path.join(folder, `${s}_caps.txt`)} has no matching ${s}_conv.txt`);
    examples.push({ name: s, caps: readText(path.join(folder, `${s}_caps.txt`)), conv: readText(path.join(folder, `${s}_conv.txt`)) });
  }
  for (const s of convs)
    if (!stems.includes(s)) throw new GptDataError(`prompts: ${path.join(folder, `${s}_conv.txt`)} has no matching ${s}_caps.txt`);
  if (examples.length === 0) throw new GptDataError(`prompts: no NNN_caps.txt / NNN_conv.txt pairs in ${folder}`);
  const sysFile = path.join(folder, 'system_message.txt');
  const system = fs.existsSync(sysFile) ? readText(sysFile) : SYSTEM_MESSAGES[type];
  return { type, system, examples, source: folder };
}

/** Writes the built-in prompts in the reference layout (dir/<folder>/system_message.txt, NNN_caps.txt, NNN_conv.txt). */
export function writePromptsDir(dir: string, types: readonly GptDataType[] = GPT_DATA_TYPES): string[] {
  const written: string[] = [];
  for (const type of types) {
    const folder = path.join(dir, PROMPT_FOLDERS[type]);
    fs.mkdirSync(folder, { recursive: true });
    const put = (name: string, text: string): void => {
      const f = path.join(folder, name);
      fs.writeFileSync(f, text + '\n');
      written.push(f);
    };
    put('system_message.txt', SYSTEM_MESSAGES[type]);
    for (const e of BUILTIN_FEW_SHOT[type]) {
      put(`${e.name}_caps.txt`, e.caps);
      put(`${e.name}_conv.txt`, e.conv);
    }
  }
  return written;
}

/**
 * The chat sent for one image: [system, (user: example caps, assistant: example output) x k, user: context].
 * `fewShot` limits k (default: every example of the set).
 */
export function buildMessages(set: PromptSet, context: string, fewShot?: number): ChatMessage[] {
  const k = fewShot === undefined ? set.examples.length : Math.min(Math.max(0, fewShot), set.examples.length);
  const msgs: ChatMessage[] = [{ role: 'system', content: set.system }];
  for (const e of set.examples.slice(0, k)) {
    msgs.push({ role: 'user', content: e.caps });
    msgs.push({ role: 'assistant', content: e.conv });
  }
  msgs.push({ role: 'user', content: context });
  return msgs;
}

/** A readable rendering of a chat (dry runs, debugging). */
export function renderMessages(messages: readonly ChatMessage[]): string {
  return messages.map((m) => `----- ${m.role} -----\n${m.content}`).join('\n');
}
