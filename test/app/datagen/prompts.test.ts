// What the GPT-assisted data pipeline sends for an image and how it reads the reply (lib/app/datagen/context.ts,
// prompts.ts, prompt_set.ts, parse.ts; docs/reference.md §7 and §6.1): context strings for a hand-made COCO image
// (boxes normalised by hand), the chat sent for each type, the prompts folder, and output parsing into LLaVA
// records (and the reasons given for malformed outputs).
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';
import {
  BRIEF_DESCRIPTION_QUESTIONS,
  BUILTIN_FEW_SHOT,
  COMPLEX_REASONING_SYSTEM_MESSAGE,
  CONVERSATION_SYSTEM_MESSAGE,
  DETAIL_DESCRIPTION_QUESTIONS,
  DETAIL_SYSTEM_MESSAGE,
  FEW_SHOT_COUNTS,
  GPT_DATA_TYPES,
  SYSTEM_MESSAGES,
  briefCaptionRecord,
  buildContext,
  buildMessages,
  builtinPromptSet,
  cocoFromJson,
  formatBox,
  formatCoord,
  loadPromptSet,
  parseDataType,
  parseGptOutput,
  parseQAPairs,
  writePromptsDir,
} from '../../../lib/app/datagen/index';
import { pyFixed } from '../../../lib/app/util/pyformat';
import type { ChatMessage, GptDataType } from '../../../lib/app/datagen/index';
import { validateRecord } from '../../../lib/app/processing/data';
import { CAPS_42, CONTEXT_42_BOXES, cocoJson, tempDir } from './fixtures';

const tmp = tempDir(t);

// ---------------------------------------------------------------------------------------------------------
// Context

t.test('COCO join and context strings', async (t) => {
  const { captions, instances } = cocoJson(0);
  const r = cocoFromJson(captions, instances);
  t.same(
    r.images.map((i) => i.imageId),
    ['42', '7'],
    'file order; image without captions left out',
  );
  t.ok(r.warnings.some((w) => /1 image\(s\) without captions/.test(w)));
  t.ok(r.warnings.some((w) => /1 caption\(s\) refer to images not in the images list/.test(w)));
  t.ok(r.warnings.some((w) => /1 instance\(s\) refer to images/.test(w)));
  const [im42, im7] = r.images;
  t.equal(buildContext(im42, 'conversation'), CAPS_42, 'conversation: captions only, stripped, one per line');
  t.equal(buildContext(im42, 'detail'), CONTEXT_42_BOXES, 'detail: captions, blank line, normalised boxes');
  t.equal(buildContext(im42, 'complex_reasoning'), CONTEXT_42_BOXES);
  t.equal(
    buildContext(im42, 'detail', { coordStyle: 'round' }),
    `${CAPS_42}\n\ntie: [0.574, 0.298, 0.752, 0.704]\nperson: [0.062, 0.0, 0.5, 1.0]\nchair: [0.0, 0.251, 0.157, 0.376]`,
    "coordStyle 'round' = Python repr(round(v, 3))",
  );
  t.equal(buildContext(im7, 'detail'), ['1', '2', '3', '4', '5'].map((k) => `A cat on a sofa, view ${k}.`).join('\n'), 'no boxes -> no blank line');
  t.equal(formatBox([367.36, 143.04, 113.92, 194.88], 640, 480), '[0.574, 0.298, 0.752, 0.704]', 'the example of docs/reference.md §7');

  t.throws(() => cocoFromJson({ images: [] }), /has no 'annotations' array/);
  t.throws(
    () => cocoFromJson(captions, { categories: [], annotations: [{ image_id: 42, category_id: 5, bbox: [0, 0, 1, 1] }] }),
    /unknown category_id 5/,
  );
  t.throws(
    () => cocoFromJson(captions, { categories: [{ id: 1, name: 'x' }], annotations: [{ image_id: 42, category_id: 1, bbox: [0, 0, 1] }] }),
    /bbox/,
  );
});

t.test("numbers: Python '%.3f' including exact ties to even", async (t) => {
  // Python: '%.3f' % 0.0625 == '0.062', '%.3f' % 0.3125 == '0.312', '%.3f' % 0.1875 == '0.188'
  t.equal(pyFixed(0.0625, 3), '0.062');
  t.equal((0.0625).toFixed(3), '0.063', 'JS toFixed differs here, hence pyFixed');
  t.equal(pyFixed(0.3125, 3), '0.312');
  t.equal(pyFixed(0.1875, 3), '0.188');
  t.equal(pyFixed(0.0005, 3), '0.001', '0.0005 is not an exact binary tie (slightly above)');
  t.equal(pyFixed(1, 3), '1.000');
  t.equal(pyFixed(-0.0001, 3), '-0.000');
  t.equal(pyFixed(2.5, 0), '2');
  t.equal(pyFixed(3.5, 0), '4');
  t.equal(formatCoord(0.5, 'round'), '0.5');
  t.equal(formatCoord(1, 'round'), '1.0');
  t.equal(formatCoord(0.0625, 'round'), '0.062');
  t.equal(formatCoord(0.12345, 'fixed'), '0.123');
});

// ---------------------------------------------------------------------------------------------------------
// Prompts

t.test('system messages and instruction lists are the reference text (docs/reference.md §7)', async (t) => {
  const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
  t.equal(sha(CONVERSATION_SYSTEM_MESSAGE), '757b171c13466d57c9b951fef24b82308a77cfbcf5178cfdbf746161a3bed8ac', 'conversation (1400 chars)');
  t.equal(sha(DETAIL_SYSTEM_MESSAGE), '4a5cd9a1388cb55640da17ffc126e756060226abd37ae2696899a92e4d98384e', 'detail (1017 chars)');
  t.equal(sha(COMPLEX_REASONING_SYSTEM_MESSAGE), '640a7ed07d0241efa48dc3eeb5538e8a1c6dba72012614bdd74aed27b5ee12d7', 'complex (1503 chars)');
  // Readable checks of the same facts.
  const conv = CONVERSATION_SYSTEM_MESSAGE.split('\n');
  t.equal(
    conv[0],
    'You are an AI visual assistant, and you are seeing a single image. What you see are provided with five sentences, describing the same image you are looking at. Answer all questions as you are seeing the image.',
  );
  t.equal(conv[3], 'Ask diverse questions and give corresponding answers.');
  t.equal(conv[6], '(1) one can see the content in the image that the question asks about and can answer confidently;');
  t.equal(conv[7], '(2) one can determine confidently from the image that it is not in the image.');
  t.match(CONVERSATION_SYSTEM_MESSAGE, /well-organized\. {2}You can include multiple paragraphs if necessary\.$/);
  t.equal(CONVERSATION_SYSTEM_MESSAGE.split('\n\n').length, 4, 'four paragraphs');
  t.equal(DETAIL_SYSTEM_MESSAGE.split('\n\n').length, 4);
  t.equal(COMPLEX_REASONING_SYSTEM_MESSAGE.split('\n\n').length, 5);
  t.equal(DETAIL_SYSTEM_MESSAGE.split('\n\n')[0], COMPLEX_REASONING_SYSTEM_MESSAGE.split('\n\n')[0], 'shared first paragraph');
  t.match(DETAIL_SYSTEM_MESSAGE, /or the bounding box\. {2}Always answer as if you are directly looking at the image\.$/);
  t.match(COMPLEX_REASONING_SYSTEM_MESSAGE, /help to user's request\. {2}Make the question challenging/);
  t.equal(COMPLEX_REASONING_SYSTEM_MESSAGE.split('  ').length - 1, 2, 'two double spaces');
  t.equal(DETAIL_DESCRIPTION_QUESTIONS.length, 16);
  t.equal(DETAIL_DESCRIPTION_QUESTIONS[0], 'Describe the following image in detail.');
  t.equal(DETAIL_DESCRIPTION_QUESTIONS[15], 'Write an exhaustive depiction of the given image.');
  t.equal(new Set(DETAIL_DESCRIPTION_QUESTIONS).size, 16);
  t.equal(BRIEF_DESCRIPTION_QUESTIONS.length, 11);
  t.equal(BRIEF_DESCRIPTION_QUESTIONS[6], "Present a compact description of the photo's key features.");
  t.equal(BRIEF_DESCRIPTION_QUESTIONS[10], 'Create a compact narrative representing the image presented.');
  t.equal(parseDataType('detail_description'), 'detail');
  t.throws(() => parseDataType('captions'), /^\[gen-data\] unknown data type 'captions'/);
});

t.test('messages: system, (user caps, assistant conv) x k, user context', async (t) => {
  const img = cocoFromJson(cocoJson(0).captions, cocoJson(0).instances).images[0];
  for (const type of GPT_DATA_TYPES) {
    const set = builtinPromptSet(type);
    const k = FEW_SHOT_COUNTS[type];
    t.equal(set.examples.length, k, `${type}: ${k} few-shot examples`);
    const ctx = buildContext(img, type);
    const msgs = buildMessages(set, ctx);
    const want: ChatMessage[] = [{ role: 'system', content: SYSTEM_MESSAGES[type] }];
    for (const e of BUILTIN_FEW_SHOT[type]) want.push({ role: 'user', content: e.caps }, { role: 'assistant', content: e.conv });
    want.push({ role: 'user', content: ctx });
    t.same(msgs, want, `${type}: whole chat`);
    t.equal(msgs.length, 2 + 2 * k);
    t.same(
      msgs.map((m) => m.role),
      ['system', ...Array(k).fill(['user', 'assistant']).flat(), 'user'],
    );
    t.same(buildMessages(set, ctx, 1).length, 4, 'fewShot limits k');
    // The built-in examples follow the formats they teach.
    for (const e of set.examples) {
      const hasBoxes = /\n\n[a-z ]+: \[\d\.\d{3}, \d\.\d{3}, \d\.\d{3}, \d\.\d{3}\]/.test(e.caps);
      t.equal(hasBoxes, type !== 'conversation', `${type}/${e.name} caps ${type === 'conversation' ? 'without' : 'with'} boxes`);
      const parsed = parseGptOutput(type, e.conv, { id: 'x', image: 'x.jpg', imageId: 'x' });
      t.ok(parsed.ok, `${type}/${e.name} output parses`);
      if (parsed.ok && type === 'conversation') t.ok(parsed.value.conversations.length >= 6, 'several turns');
    }
  }
});

t.test('prompts dir: write the built-ins in the reference layout, read them back, errors', async (t) => {
  const dir = path.join(tmp, 'prompts');
  const files = writePromptsDir(dir);
  t.equal(files.length, 3 + 2 * (2 + 3 + 3));
  t.ok(fs.existsSync(path.join(dir, 'detail_description', '002_conv.txt')));
  for (const type of GPT_DATA_TYPES) {
    const s = loadPromptSet(dir, type);
    t.same(s.examples, builtinPromptSet(type).examples, `${type} round trip`);
    t.equal(s.system, SYSTEM_MESSAGES[type]);
  }
  // A custom folder: one example, no system_message.txt (-> the verbatim default), CRLF line ends.
  const own = path.join(tmp, 'own', 'conversation');
  fs.mkdirSync(own, { recursive: true });
  fs.writeFileSync(path.join(own, '000_caps.txt'), 'cap one\r\ncap two\r\n');
  fs.writeFileSync(path.join(own, '000_conv.txt'), 'Question:\r\nQ?\r\n===\r\nAnswer:\r\nA.\r\n');
  const s = loadPromptSet(path.join(tmp, 'own'), 'conversation');
  t.same(s.examples, [{ name: '000', caps: 'cap one\ncap two', conv: 'Question:\nQ?\n===\nAnswer:\nA.' }]);
  t.equal(s.system, CONVERSATION_SYSTEM_MESSAGE);
  fs.writeFileSync(path.join(own, '001_caps.txt'), 'x');
  t.throws(() => loadPromptSet(path.join(tmp, 'own'), 'conversation'), /001_caps\.txt has no matching 001_conv\.txt/);
  t.throws(() => loadPromptSet(path.join(tmp, 'nope'), 'detail'), /prompts directory .* not found/);
});

// ---------------------------------------------------------------------------------------------------------
// Parsing

const CONV_OUT = [
  'Question:',
  'What is the man wearing?',
  '===',
  'Answer:',
  'He is wearing a dark suit with a red tie.',
  '===',
  'Question: Where is he standing?',
  '===',
  'Answer:',
  'He stands next to a window.',
  '',
  'The light comes from his left.',
  '===',
].join('\n');

t.test('parse: conversation (multi-turn), complex reasoning, detail', async (t) => {
  const meta = { id: '000000000042', image: '000000000042.jpg', imageId: '42' };
  const conv = parseGptOutput('conversation', CONV_OUT, meta);
  t.same(conv, {
    ok: true,
    value: {
      id: '000000000042',
      image: '000000000042.jpg',
      conversations: [
        { from: 'human', value: '<image>\nWhat is the man wearing?' },
        { from: 'gpt', value: 'He is wearing a dark suit with a red tie.' },
        { from: 'human', value: 'Where is he standing?' },
        { from: 'gpt', value: 'He stands next to a window.\n\nThe light comes from his left.' },
      ],
    },
  });
  const complex = parseGptOutput('complex_reasoning', 'Question:\nWhy is he dressed up?\n===\nAnswer:\nProbably for work.', meta);
  t.same(complex.ok && complex.value.conversations, [
    { from: 'human', value: '<image>\nWhy is he dressed up?' },
    { from: 'gpt', value: 'Probably for work.' },
  ]);
  const last = parseGptOutput('complex_reasoning', 'Question:\nWhy?\n===\nAnswer:\nBecause.', { ...meta, imagePosition: 'last' });
  t.equal(last.ok && last.value.conversations[0].value, 'Why?\n<image>');

  const detail = parseGptOutput('detail', '\n  A man in a suit stands by a window.\n\nHe wears a tie.  \n', { ...meta, seed: 1 });
  t.ok(detail.ok);
  if (!detail.ok) return;
  const [h, g] = detail.value.conversations;
  t.equal(g.value, 'A man in a suit stands by a window.\n\nHe wears a tie.');
  t.match(h.value, /^<image>\n/);
  t.ok(DETAIL_DESCRIPTION_QUESTIONS.includes(h.value.slice('<image>\n'.length)), 'question from the 16-entry list');
  const again = parseGptOutput('detail', 'A man.', { ...meta, seed: 1 });
  t.equal(again.ok && again.value.conversations[0].value, h.value, 'same seed and image -> same question');
  const qs = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const r = parseGptOutput('detail', 'A man.', { ...meta, imageId: String(i), seed: 1 });
    if (r.ok) qs.add(r.value.conversations[0].value);
  }
  t.ok(qs.size >= 8, `questions vary across images (${qs.size} distinct of 16)`);
  const other = [2, 3, 4, 5, 6].map(
    (seed) =>
      (parseGptOutput('detail', 'A man.', { ...meta, seed }) as { value: { conversations: { value: string }[] } }).value.conversations[0].value,
  );
  t.ok(
    other.some((q) => q !== h.value),
    'the seed changes the draw',
  );
  t.equal(
    (parseGptOutput('detail', 'Answer: A man.', meta) as { value: { conversations: { value: string }[] } }).value.conversations[1].value,
    'A man.',
    'leading Answer: label dropped',
  );

  let firsts = 0;
  for (let i = 0; i < 40; i++) {
    const r = parseGptOutput('complex_reasoning', 'Question:\nQ?\n===\nAnswer:\nA.', { ...meta, imageId: String(i), imagePosition: 'random' });
    if (r.ok && r.value.conversations[0].value.startsWith('<image>')) firsts++;
  }
  t.ok(firsts > 5 && firsts < 35, `random image position mixes both sides (${firsts}/40 first)`);

  // Records pass the training-data validator.
  for (const r of [conv, complex, detail]) if (r.ok) t.same(validateRecord(r.value).errors, [], 'valid LLaVA record');
  const brief = briefCaptionRecord({ id: '1', image: '1.jpg', caption: ' a dog on grass ' });
  t.ok(BRIEF_DESCRIPTION_QUESTIONS.includes(brief.conversations[0].value.replace('<image>\n', '')));
  t.equal(brief.conversations[1].value, 'a dog on grass');
});

t.test('parse: malformed outputs give a reason', async (t) => {
  const meta = { id: 'x', image: 'x.jpg', imageId: '1' };
  const cases: [GptDataType, string, RegExp][] = [
    ['conversation', 'Sure! Here is a conversation:\nQuestion:\nQ?\n===\nAnswer:\nA.', /text before the first 'Question:' label \(line 1/],
    ['conversation', 'Question:\nQ1?\n===\nQuestion:\nQ2?\n===\nAnswer:\nA.', /line 4: expected 'Answer:' but found 'Question:'/],
    ['conversation', 'Answer:\nA.', /expected 'Question:' but found 'Answer:'/],
    ['conversation', 'Question:\nQ1?\n===\nAnswer:\nA1.\n===\nQuestion:\nQ2?', /the last question \(line 7\) has no answer/],
    ['conversation', 'Question:\nQ1?\n===\nAnswer:\n   \n===', /line 4: empty answer/],
    ['conversation', 'The image shows a man.', /text before the first 'Question:' label/],
    ['conversation', '   \n', /no 'Question:' \/ 'Answer:' blocks found/],
    [
      'complex_reasoning',
      'Question:\nQ1?\n===\nAnswer:\nA1.\n===\nQuestion:\nQ2?\n===\nAnswer:\nA2.',
      /expected exactly one Question\/Answer pair, found 2/,
    ],
    ['detail', '  \n ', /empty output/],
    ['detail', 'Question:\nWhat?\n===\nAnswer:\nThat.', /expected a description, found a 'Question:' block/],
  ];
  for (const [type, text, re] of cases) {
    const r = parseGptOutput(type, text, meta);
    t.notOk(r.ok, `${type}: ${JSON.stringify(text.slice(0, 30))} rejected`);
    if (!r.ok) t.match(r.reason, re);
  }
  t.same(parseQAPairs('Question: A?\nAnswer: B.'), { ok: true, value: [{ question: 'A?', answer: 'B.' }] }, 'labels with inline text, no separators');
});
