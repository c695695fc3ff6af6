// The request and prompt side of `llava serve` (lib/app/serve/protocol.ts), no server needed: chat prompts
// rendered as buildPrompt renders them for every template (system text, history), request parsing (defaults
// and fields), TrimmedStream against text.trim(), data URIs and image dimensions (PNG and JPEG headers).
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { buildPrompt, TEMPLATE_NAMES } from '../../../lib/app/processing/conversation';
import {
  renderChatPrompt,
  parseChatRequest,
  decodeDataUri,
  TrimmedStream,
  ApiError,
  DEFAULT_MAX_TOKENS,
  DEFAULT_TEMPERATURE,
  MAX_TOKENS_CAP,
} from '../../../lib/app/serve/protocol';
import { TEST_DIR } from '../../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const png0 = fs.readFileSync(path.join(dir, 'image0.png'));
const dataUri = (b: Buffer, mime = 'image/png'): string => `data:${mime};base64,${b.toString('base64')}`;
const Q = 'What is unusual about this image?';

t.test('renderChatPrompt: one turn (and history) renders as buildPrompt does for every template', async (tt) => {
  for (const name of TEMPLATE_NAMES) {
    const one = { system: null, turns: [{ role: 'user' as const, text: Q }] };
    tt.equal(renderChatPrompt(name, one, true), buildPrompt(name, Q, { image: true }), `${name} with image`);
    tt.equal(renderChatPrompt(name, one, false), buildPrompt(name, Q), `${name} text only`);
    const turns = [
      { role: 'user' as const, text: 'First?' },
      { role: 'assistant' as const, text: 'An answer.' },
      { role: 'user' as const, text: 'Second?' },
    ];
    tt.equal(
      renderChatPrompt(name, { system: null, turns }, true),
      buildPrompt(name, 'Second?', { image: true, history: [['First?', 'An answer.']] }),
      `${name} history`,
    );
  }
  const sys = (name: string, s: string) => renderChatPrompt(name, { system: s, turns: [{ role: 'user', text: 'Hi' }] }, false);
  tt.equal(sys('vicuna_v1', 'Be brief.'), 'Be brief. USER: Hi ASSISTANT:', 'TWO: system replaced');
  tt.equal(sys('llava_v0', 'Be brief.'), 'Be brief.###Human: Hi###Assistant:', 'SINGLE: system replaced');
  tt.equal(sys('llava_llama_2', 'Be brief.'), '[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]', 'LLAMA_2: <<SYS>> block');
  tt.equal(sys('llava_llama_2', ''), '[INST] Hi [/INST]', 'LLAMA_2: an empty system removes the block');
  tt.equal(sys('llava_hf', 'Be brief.'), 'Be brief. USER: Hi ASSISTANT:', 'llava_hf: system text + space in front');
  tt.throws(() => sys('plain', 'x'), /has no system prompt/);
});

t.test('parseChatRequest: defaults and fields', async (tt) => {
  const r = parseChatRequest({
    model: 'anything',
    messages: [
      { role: 'system', content: 'S1' },
      { role: 'developer', content: [{ type: 'text', text: 'S2' }] },
      { role: 'user', content: 'Hi' },
    ],
  });
  tt.equal(r.system, 'S1\nS2', 'system messages joined');
  tt.equal(r.temperature, DEFAULT_TEMPERATURE);
  tt.equal(r.maxTokens, DEFAULT_MAX_TOKENS);
  tt.equal(DEFAULT_MAX_TOKENS, 512);
  tt.equal(MAX_TOKENS_CAP, 1024);
  tt.equal(r.stream, false);
  tt.same(r.stop, []);
  const s = parseChatRequest({
    messages: [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'a' },
          { type: 'text', text: 'b' },
        ],
      },
    ],
    stop: ['x', ''],
    max_completion_tokens: 7,
    top_p: 0,
    top_k: -1,
    seed: 3,
    stream: true,
    stream_options: { include_usage: true },
  });
  tt.equal(s.turns[0].text, 'a\nb', 'text parts joined by newline');
  tt.same(s.stop, ['x'], 'empty stop strings dropped');
  tt.equal(s.maxTokens, 7);
  tt.ok(s.topP! > 0 && s.topP! < 1e-6, 'top_p 0 becomes most-probable-only');
  tt.equal(s.topK, undefined, 'top_k -1 is off');
  tt.ok(s.includeUsage);
  let err: unknown;
  try {
    parseChatRequest({ messages: [{ role: 'user', content: 'x' }], max_tokens: 3, max_completion_tokens: 4 });
  } catch (e) {
    err = e;
  }
  tt.ok(err instanceof ApiError && err.status === 400 && /disagree/.test(err.message), 'max_tokens vs max_completion_tokens: ApiError 400');
});

t.test('TrimmedStream joins to text.trim()', async (tt) => {
  const texts = ['  hello world  ', '\n\na b\n', 'x', '   ', '', 'a  \n  b', ' é 日本 '];
  for (const s of texts)
    for (let cut = 0; cut <= s.length; cut++)
      for (let cut2 = cut; cut2 <= s.length; cut2 += 2) {
        const ts = new TrimmedStream();
        tt.equal([s.slice(0, cut), s.slice(cut, cut2), s.slice(cut2)].map((p) => ts.push(p)).join(''), s.trim(), JSON.stringify([s, cut, cut2]));
      }
});

t.test('data URIs', async (tt) => {
  tt.same(decodeDataUri(dataUri(png0), 'p'), png0);
  tt.same(decodeDataUri(`data:image/jpeg;base64,${png0.toString('base64url')}`, 'p'), png0, 'base64url accepted');
  tt.throws(() => decodeDataUri('https://example.com/a.png', 'p'), /does not fetch https: URLs/);
  tt.throws(() => decodeDataUri('file:///etc/passwd', 'p'), /does not fetch file: URLs/);
  tt.throws(() => decodeDataUri('/tmp/a.png', 'p'), /only data URIs/);
  tt.throws(() => decodeDataUri('data:image/bmp;base64,Qk0A', 'p'), /unsupported image type/);
  tt.throws(() => decodeDataUri('data:image/png,rawbytes', 'p'), /base64/);
  tt.throws(() => decodeDataUri('data:image/png;base64,@@@', 'p'), /not valid base64/);
});
