// Conversation templates: every rendered prompt is compared with a string written out by hand from the rules
// and system messages of docs/reference.md §3 (and §1.9 for llava-hf), plus the §4.2 placeholder handling.
import t from 'tap';
import {
  appendMessage,
  buildPrompt,
  copy,
  getTemplate,
  insertImageToken,
  preprocessMultimodal,
  render,
  stopString,
  templateForModelName,
  TEMPLATE_NAMES,
  type Conversation,
} from '../../../lib/app/processing/conversation';
import { mulberry32 } from '../../../lib/app/util/random';

const SYS_USER =
  "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";
const SYS_HUMAN =
  "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
const SYS_MMTAG =
  'A chat between a curious user and an artificial intelligence assistant. The assistant is able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.The visual content will be provided with the following format: <Image>visual content</Image>.';
const SYS_LLAVA_LLAMA_2 =
  'You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.';

function conv(name: string, msgs: Array<string | null>): Conversation {
  const c = getTemplate(name);
  msgs.forEach((m, i) => appendMessage(c, c.roles[i % 2], m));
  return c;
}

t.test('vicuna_v1 / v1 (TWO, USER/ASSISTANT, " " and "</s>")', async (t) => {
  const pending = SYS_USER + ' USER: <image>\nWhat is shown? ASSISTANT:';
  t.equal(render(conv('vicuna_v1', ['<image>\nWhat is shown?', null])), pending);
  t.equal(render(conv('v1', ['<image>\nWhat is shown?', null])), pending);
  t.equal(
    render(conv('vicuna_v1', ['<image>\nWhat is shown?', 'A cat.', 'Why?', 'Because.'])),
    SYS_USER + ' USER: <image>\nWhat is shown? ASSISTANT: A cat.</s>USER: Why? ASSISTANT: Because.</s>',
  );
  t.equal(
    render(conv('vicuna_v1', ['<image>\nWhat is shown?', 'A cat.', 'Why?', null])),
    SYS_USER + ' USER: <image>\nWhat is shown? ASSISTANT: A cat.</s>USER: Why? ASSISTANT:',
  );
  // Python truthiness: an empty reply renders exactly like a pending one.
  t.equal(render(conv('v1', ['Hi', ''])), SYS_USER + ' USER: Hi ASSISTANT:');
  t.equal(stopString(getTemplate('v1')), '</s>');
});

t.test('llava_v1 differs only in the system text ("curious human")', async (t) => {
  t.equal(render(conv('llava_v1', ['<image>\nWhat is shown?', 'A cat.'])), SYS_HUMAN + ' USER: <image>\nWhat is shown? ASSISTANT: A cat.</s>');
});

t.test('llava_v0 (SINGLE, ###)', async (t) => {
  t.equal(render(conv('llava_v0', ['<image>\nWhat is shown?', null])), SYS_HUMAN + '###Human: <image>\nWhat is shown?###Assistant:');
  t.equal(
    render(conv('llava_v0', ['<image>\nWhat is shown?', 'A cat.', 'Why?', null])),
    SYS_HUMAN + '###Human: <image>\nWhat is shown?###Assistant: A cat.###Human: Why?###Assistant:',
  );
  t.equal(stopString(getTemplate('llava_v0')), '###');
});

t.test('v0 / default carry the one-shot exchange, offset 2', async (t) => {
  const c = conv('v0', ['Hi', null]);
  t.equal(c.offset, 2);
  t.equal(c.messages.length, 4);
  const s = render(c);
  t.ok(
    s.startsWith(
      SYS_HUMAN +
        '###Human: What are the key differences between renewable and non-renewable energy sources?###Assistant: Renewable energy sources are those',
    ),
  );
  t.ok(s.endsWith('and their depletion can lead to economic and social instability.\n###Human: Hi###Assistant:'));
  t.equal(render(conv('default', ['Hi', null])), s);
});

t.test('plain', async (t) => {
  t.equal(render(conv('plain', ['<image>', 'a cat on a mat'])), '<image>\na cat on a mat\n');
  t.equal(render(conv('plain', ['<image>', null])), '<image>\n');
  t.equal(render(conv('v0_plain', ['x', 'y'])), 'x\ny\n');
});

t.test('llava_llama_2 and llama_2 (LLAMA_2)', async (t) => {
  t.equal(
    render(conv('llava_llama_2', ['<image>\nWhat is shown?', 'A cat.', 'Why?', 'Because.'])),
    '[INST] <<SYS>>\n' + SYS_LLAVA_LLAMA_2 + '\n<</SYS>>\n\n<image>\nWhat is shown? [/INST] A cat. </s><s>[INST] Why? [/INST] Because. </s>',
  );
  t.equal(
    render(conv('llava_llama_2', ['<image>\nWhat is shown?', null])),
    '[INST] <<SYS>>\n' + SYS_LLAVA_LLAMA_2 + '\n<</SYS>>\n\n<image>\nWhat is shown? [/INST]',
  );
  const l2 = render(conv('llama_2', ['Hi', null]));
  t.ok(
    l2.startsWith(
      '[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  Your answers',
    ),
  );
  t.ok(l2.endsWith("please don't share false information.\n<</SYS>>\n\nHi [/INST]"));
  // Empty system: no <<SYS>> block (HEAD behaviour).
  const c = conv('llava_llama_2', ['Hi', 'Yo']);
  c.system = '';
  t.equal(render(c), '[INST] Hi [/INST] Yo </s>');
  t.throws(() => render(conv('llava_llama_2', [null, 'x'])), /first message/);
});

t.test('llava-hf prompt', async (t) => {
  t.equal(render(conv('llava_hf', ['<image>\nWhat is shown?', null])), 'USER: <image>\nWhat is shown? ASSISTANT:');
  t.equal(
    render(conv('llava_hf', ['<image>\nWhat is shown?', 'A cat.', 'Why?', null])),
    'USER: <image>\nWhat is shown? ASSISTANT: A cat. USER: Why? ASSISTANT:',
  );
  t.equal(buildPrompt('llava_hf', 'What is shown?', { image: true }), 'USER: <image>\nWhat is shown? ASSISTANT:');
});

t.test('image given with the first message: moved to the front; mmtag fake exchange', async (t) => {
  const c = getTemplate('vicuna_v1');
  appendMessage(c, 'USER', { text: ' What is shown?\n<image> ', image: {} });
  appendMessage(c, 'ASSISTANT', null);
  t.equal(render(c), SYS_USER + ' USER: <image>\nWhat is shown? ASSISTANT:');

  const m1 = getTemplate('v1_mmtag');
  appendMessage(m1, 'USER', { text: 'What is shown?\n<image>', image: {} });
  appendMessage(m1, 'ASSISTANT', null);
  t.equal(render(m1), SYS_MMTAG + ' USER: <Image><image></Image> ASSISTANT: Received.</s>USER: What is shown? ASSISTANT:');
  const m0 = getTemplate('v0_mmtag');
  appendMessage(m0, 'Human', { text: '<image>\nWhat is shown?', image: {} });
  appendMessage(m0, 'Assistant', null);
  t.equal(render(m0), SYS_MMTAG + '###Human: <Image><image></Image>###Assistant: Received.###Human: What is shown?###Assistant:');
  // The stored messages are untouched by rendering.
  t.equal(m0.messages.length, 2);
});

t.test('buildPrompt / insertImageToken', async (t) => {
  t.equal(buildPrompt('vicuna_v1', 'What is shown?', { image: true }), SYS_USER + ' USER: <image>\nWhat is shown? ASSISTANT:');
  t.equal(
    buildPrompt('vicuna_v1', 'What is shown?', { image: true, mmUseImStartEnd: true }),
    SYS_USER + ' USER: <im_start><image><im_end>\nWhat is shown? ASSISTANT:',
  );
  t.equal(
    buildPrompt('vicuna_v1', 'Why?', { image: true, history: [['What?', 'A cat.']] }),
    SYS_USER + ' USER: <image>\nWhat? ASSISTANT: A cat.</s>USER: Why? ASSISTANT:',
  );
  t.equal(insertImageToken('Look <image-placeholder> here'), 'Look <image> here');
  t.equal(insertImageToken('Look <image-placeholder>', { mmUseImStartEnd: true }), 'Look <im_start><image><im_end>');
});

t.test('templates: copies are independent; names; model-name pick', async (t) => {
  const a = getTemplate('v1');
  appendMessage(a, 'USER', 'x');
  t.equal(getTemplate('v1').messages.length, 0);
  const b = copy(a);
  appendMessage(b, 'ASSISTANT', 'y');
  t.equal(a.messages.length, 1);
  t.equal(getTemplate('v0').messages.length, 2);
  for (const n of ['plain', 'llava_v0', 'v1', 'vicuna_v1', 'llava_v1', 'llava_llama_2', 'llava_hf']) t.ok(TEMPLATE_NAMES.includes(n), n);
  t.throws(() => getTemplate('mpt'), /unknown template/);
  t.equal(templateForModelName('liuhaotian/llava-v1.5-7b'), 'llava_v1');
  t.equal(templateForModelName('llava-llama-2-13b-chat'), 'llava_llama_2');
  t.equal(templateForModelName('LLaVA-13b-delta-v0'), 'llava_v0');
});

t.test('preprocessMultimodal (§4.2)', async (t) => {
  const turns = [
    { from: 'human' as const, value: 'What is shown?\n<image>' },
    { from: 'gpt' as const, value: 'A cat.' },
  ];
  t.same(
    preprocessMultimodal(turns).map((x) => x.value),
    ['<image>\nWhat is shown?', 'A cat.'],
  );
  t.equal(turns[0].value, 'What is shown?\n<image>', 'input not mutated');
  t.equal(preprocessMultimodal([{ from: 'human', value: ' <image> ' }])[0].value, '<image>');
  t.equal(preprocessMultimodal(turns, { mmUseImStartEnd: true })[0].value, '<im_start><image><im_end>\nWhat is shown?');
  t.equal(preprocessMultimodal(turns, { mmtag: true })[0].value, '<Image><image></Image>\nWhat is shown?');
  t.equal(preprocessMultimodal(turns, { isMultimodal: false })[0].value, 'What is shown?\n<image>');
  t.equal(
    preprocessMultimodal(turns, { imageOrder: 'asWritten', v0PatchTokens: 3, mmUseImStartEnd: true })[0].value,
    'What is shown?\n<im_start><im_patch><im_patch><im_patch><im_end>',
  );

  // Paper order: image before or after the question at random, reproducible from a seed.
  const draw = (seed: number) => {
    const rng = mulberry32(seed);
    return Array.from({ length: 64 }, () => preprocessMultimodal(turns, { imageOrder: 'random', rng })[0].value);
  };
  const a = draw(7);
  t.same(draw(7), a, 'same seed, same orders');
  t.ok(a.every((v) => v === '<image>\nWhat is shown?' || v === 'What is shown?\n<image>'));
  const first = a.filter((v) => v.startsWith('<image>')).length;
  t.ok(first > 16 && first < 48, `both orders occur (${first}/64 image-first)`);
  t.notSame(draw(8), a, 'another seed, other orders');
});
