// The GPT-assisted data pipeline (lib/app/datagen/, cli/datagen.ts; docs/reference.md §7 and §6.1): context strings
// for a hand-made COCO image (boxes normalised by hand), the chat sent for each type, output parsing into LLaVA
// records (and the reasons given for malformed outputs), the fetch client against a local mock server (retries,
// fatal errors, missing key), the resumable concurrent run, JSONL -> JSON collection, and the CLI end to end.
import t from 'tap';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import type { AddressInfo } from 'net';
import {
  ApiError,
  BRIEF_DESCRIPTION_QUESTIONS,
  BUILTIN_FEW_SHOT,
  COMPLEX_REASONING_SYSTEM_MESSAGE,
  CONVERSATION_SYSTEM_MESSAGE,
  DETAIL_DESCRIPTION_QUESTIONS,
  DETAIL_SYSTEM_MESSAGE,
  FEW_SHOT_COUNTS,
  GPT_DATA_TYPES,
  OpenAIChatClient,
  SYSTEM_MESSAGES,
  briefCaptionRecord,
  buildContext,
  buildMessages,
  builtinPromptSet,
  cocoFromJson,
  collectInstructData,
  completedImageIds,
  formatBox,
  forEachLine,
  formatCoord,
  generateInstructData,
  loadPromptSet,
  parseDataType,
  parseGptOutput,
  parseQAPairs,
  readGenerationJsonl,
  writeDryRun,
  writePromptsDir,
} from '../../../lib/app/datagen/index';
import { pyFixed } from '../../../lib/app/util/pyformat';
import type { ChatMessage, GenerationLine, GptDataType, ImageContextSource } from '../../../lib/app/datagen/index';
import { validateRecord } from '../../../lib/app/processing/data';
import { TEST_DIR } from '../../helpers';

const ROOT = path.join(TEST_DIR, '..');
const CLI = path.join(ROOT, 'lib', 'app', 'cli', 'datagen.ts');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-gptdata-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------------------
// A hand-made COCO set: image 42 (640x480) with 5 captions and 3 boxes, image 7 (500x375) with 5 captions
// and no boxes, image 99 without captions (left out), plus stray annotations of an unknown image.

const CAPTIONS_42 = [
  'A man in a suit and tie stands by a window.',
  'A businessman wearing a striped tie.  ',
  'A man posing in\nformal clothes.',
  'Man in a dark suit with a red tie.',
  'A person dressed for the office.',
];
function cocoJson(n = 2): { captions: unknown; instances: unknown } {
  const images = [
    { id: 42, file_name: '000000000042.jpg', width: 640, height: 480 },
    { id: 7, file_name: '000000000007.jpg', width: 500, height: 375 },
    { id: 99, file_name: '000000000099.jpg', width: 100, height: 100 },
  ];
  const annotations = [
    ...CAPTIONS_42.map((caption, i) => ({ id: i, image_id: 42, caption })),
    ...[1, 2, 3, 4, 5].map((k) => ({ id: 100 + k, image_id: 7, caption: `A cat on a sofa, view ${k}.` })),
    { id: 500, image_id: 12345, caption: 'an image that is not listed' },
  ];
  // Extra synthetic images for the client tests.
  for (let i = 0; i < n; i++) {
    const id = 1000 + i;
    images.push({ id, file_name: `${String(id).padStart(12, '0')}.jpg`, width: 200, height: 100 });
    for (let k = 0; k < 5; k++) annotations.push({ id: 10_000 + i * 5 + k, image_id: id, caption: `Synthetic scene ${id}, caption ${k}.` });
  }
  const instances = {
    categories: [
      { id: 1, name: 'person' },
      { id: 32, name: 'tie' },
      { id: 62, name: 'chair' },
    ],
    annotations: [
      { id: 1, image_id: 42, category_id: 32, bbox: [367.36, 143.04, 113.92, 194.88] },
      { id: 2, image_id: 42, category_id: 1, bbox: [40, 0, 280, 480] },
      { id: 3, image_id: 42, category_id: 62, bbox: [0, 120.5, 100.3, 60.2] },
      { id: 4, image_id: 12345, category_id: 1, bbox: [1, 2, 3, 4] },
      ...Array.from({ length: n }, (_, i) => ({ id: 100 + i, image_id: 1000 + i, category_id: 1, bbox: [20, 10, 100, 50] })),
    ],
  };
  return { captions: { images, annotations }, instances };
}

// Hand-computed boxes of image 42 (x2 = x + w, y2 = y + h, divided by 640 / 480):
//   tie    [367.36/640, 143.04/480, 481.28/640, 337.92/480] = [0.574, 0.298, 0.752, 0.704]
//   person [40/640 = 0.0625 (exact tie -> 0.062), 0, 320/640 = 0.5, 480/480 = 1]
//   chair  [0, 120.5/480 = 0.25104, 100.3/640 = 0.15672, 180.7/480 = 0.37646]
const CAPS_42 = [
  'A man in a suit and tie stands by a window.',
  'A businessman wearing a striped tie.',
  'A man posing in formal clothes.',
  'Man in a dark suit with a red tie.',
  'A person dressed for the office.',
].join('\n');
const CONTEXT_42_BOXES = `${CAPS_42}\n\ntie: [0.574, 0.298, 0.752, 0.704]\nperson: [0.062, 0.000, 0.500, 1.000]\nchair: [0.000, 0.251, 0.157, 0.376]`;

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

// ---------------------------------------------------------------------------------------------------------
// Mock chat-completions server

interface MockReply {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
}
interface Mock {
  url: string;
  requests: { auth: string | undefined; body: { model: string; messages: ChatMessage[]; temperature?: number } }[];
  inFlight: number;
  maxInFlight: number;
  handler: (body: { messages: ChatMessage[] }, n: number) => MockReply;
  close(): Promise<void>;
}

/** Answers in the format the system message asks for; the image id is echoed from the captions. */
function formatReply(body: { messages: ChatMessage[] }): string {
  const sys = body.messages[0].content;
  const ctx = body.messages[body.messages.length - 1].content;
  const id = /Synthetic scene (\d+)/.exec(ctx)?.[1] ?? /(suit|cat)/.exec(ctx)?.[1] ?? '?';
  if (sys === DETAIL_SYSTEM_MESSAGE || sys === 'Describe it.') return `A detailed description of scene ${id}.`;
  if (sys === COMPLEX_REASONING_SYSTEM_MESSAGE) return `Question:\nWhat is special about scene ${id}?\n===\nAnswer:\nIt is synthetic.`;
  return `Question:\nWhat is in scene ${id}?\n===\nAnswer:\nShapes.\n===\nQuestion:\nHow many?\n===\nAnswer:\nA few.`;
}
function ok(content: string): MockReply {
  return {
    body: {
      id: 'x',
      model: 'mock-model',
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
      usage: { total_tokens: 10 },
    },
  };
}

async function startMock(handler: Mock['handler'] = (b) => ok(formatReply(b))): Promise<Mock> {
  const mock = { requests: [], inFlight: 0, maxInFlight: 0, handler } as unknown as Mock;
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      mock.inFlight++;
      mock.maxInFlight = Math.max(mock.maxInFlight, mock.inFlight);
      const body = JSON.parse(data);
      mock.requests.push({ auth: req.headers.authorization, body });
      const r =
        req.url === '/v1/chat/completions'
          ? mock.handler(body, mock.requests.length)
          : { status: 404, body: { error: { message: `no route ${req.url}` } } };
      setTimeout(() => {
        mock.inFlight--;
        res.writeHead(r.status ?? 200, { 'content-type': 'application/json', ...r.headers });
        res.end(typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
      }, r.delayMs ?? 0);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  mock.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  mock.close = () => new Promise((r) => server.close(() => r()));
  return mock;
}

function synthImages(n: number): ImageContextSource[] {
  const { captions, instances } = cocoJson(n);
  return cocoFromJson(captions, instances).images.filter((i) => Number(i.imageId) >= 1000);
}

const quiet = (): void => {};

t.test('client: retries on 500 and 429, fails fast on 400, key handling', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const msgs: ChatMessage[] = [{ role: 'user', content: 'hi' }];
  t.throws(() => new OpenAIChatClient({ env: {}, baseUrl: mock.url }), /no API key: set OPENAI_API_KEY or pass --api-key/);
  const envClient = new OpenAIChatClient({ env: { OPENAI_API_KEY: 'env-key', OPENAI_BASE_URL: mock.url + '/' } });
  t.equal(envClient.url, `${mock.url}/chat/completions`, 'base URL from the environment');
  t.equal(envClient.model, 'gpt-4-0314', 'default model');

  mock.handler = (_b, n) =>
    n === 1
      ? { status: 500, body: 'oops' }
      : n === 2
        ? { status: 429, body: { error: { message: 'slow down' } }, headers: { 'retry-after': '0' } }
        : ok('fine');
  const r = await envClient.complete(msgs);
  t.equal(r.content, 'fine');
  t.equal(r.attempts, 3, '500, 429, then 200');
  t.equal(mock.requests.length, 3);
  t.equal(mock.requests[0].auth, 'Bearer env-key');
  t.same(mock.requests[0].body, { model: 'gpt-4-0314', messages: msgs }, 'no temperature sent unless set');

  const c = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url, model: 'm', temperature: 0.7, maxTokens: 50, maxRetries: 2, retryBaseMs: 1 });
  mock.requests.length = 0;
  mock.handler = () => ({ status: 503, body: { error: { message: 'overloaded' } } });
  await t.rejects(c.complete(msgs), /failed after 3 attempt\(s\): HTTP 503: overloaded/);
  t.equal(mock.requests.length, 3, 'maxRetries 2 -> 3 attempts');
  t.same(mock.requests[0].body, { model: 'm', messages: msgs, temperature: 0.7, max_tokens: 50 });
  mock.requests.length = 0;
  mock.handler = () => ({ status: 400, body: { error: { message: 'context too long' } } });
  const e400 = await c.complete(msgs).catch((e) => e);
  t.ok(e400 instanceof ApiError && !e400.fatal && e400.status === 400);
  t.match(e400.message, /^\[openai\] HTTP 400 .*: context too long/);
  t.equal(mock.requests.length, 1, '400 is not retried');
  mock.handler = () => ({ status: 401, body: { error: { message: 'bad key' } } });
  const e401 = await c.complete(msgs).catch((e) => e);
  t.ok(e401 instanceof ApiError && e401.fatal, '401 is fatal');
  mock.handler = () => ({ body: { choices: [] } });
  await t.rejects(c.complete(msgs), /no choices\[0\]\.message\.content/);
  // Network error (nothing listens): retried, then reported.
  const dead = new OpenAIChatClient({ apiKey: 'k', baseUrl: 'http://127.0.0.1:9/v1', maxRetries: 1, retryBaseMs: 1 });
  await t.rejects(dead.complete(msgs), /failed after 2 attempt\(s\)/);
});

t.test('generate: concurrency limit, JSONL lines, resume, malformed outputs, retry-failed, fatal stop', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const images = synthImages(9);
  const out = path.join(tmp, 'gen', 'conversation.jsonl');
  const client = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url, maxRetries: 3, retryBaseMs: 1 });
  // Image 1004 answers garbage; the 3rd request overall gets a 500 first.
  mock.handler = (b, n) => {
    const ctx = b.messages[b.messages.length - 1].content;
    if (n === 3) return { status: 500, body: 'boom', delayMs: 5 };
    return { ...ok(ctx.includes('scene 1004') ? 'I cannot help with that.' : formatReply(b)), delayMs: 40 };
  };
  const s = await generateInstructData({ type: 'conversation', images, client, outJsonl: out, concurrency: 3, progress: 'none', log: quiet });
  t.equal(mock.maxInFlight, 3, 'never more than 3 requests in flight, and 3 used');
  t.equal(mock.requests.length, 10, '9 images + 1 retry');
  t.same([s.total, s.alreadyDone, s.completed, s.apiErrors.length], [9, 0, 9, 0]);
  t.same(s.parseErrors, [
    { type: 'conversation', imageId: '1004', reason: 'text before the first \'Question:\' label (line 1: "I cannot help with that.")' },
  ]);
  const { lines, bad } = readGenerationJsonl(out);
  t.equal(lines.length, 9);
  t.same(bad, []);
  const l1 = lines.find((l) => l.image_id === '1001') as GenerationLine;
  t.same(
    { ...l1, created: 'T', usage: null },
    {
      type: 'conversation',
      index: 4,
      image_id: '1001',
      id: '000000001001',
      image: '000000001001.jpg',
      model: 'mock-model',
      response: formatReply(mock.requests.find((r) => r.body.messages[2 * 2 + 1].content.includes('scene 1001'))!.body),
      finish_reason: 'stop',
      usage: null,
      record: {
        id: '000000001001',
        image: '000000001001.jpg',
        conversations: [
          { from: 'human', value: '<image>\nWhat is in scene 1001?' },
          { from: 'gpt', value: 'Shapes.' },
          { from: 'human', value: 'How many?' },
          { from: 'gpt', value: 'A few.' },
        ],
      },
      error: null,
      created: 'T',
    },
  );
  const bad1004 = lines.find((l) => l.image_id === '1004') as GenerationLine;
  t.equal(bad1004.record, null, 'malformed output kept with record = null');
  t.equal(bad1004.response, 'I cannot help with that.');
  t.match(bad1004.error, /text before the first 'Question:' label/);
  const req0 = mock.requests[0].body.messages;
  t.equal(req0.length, 6, 'conversation: system + 2 few-shot pairs + query');

  // Restart: nothing left to do (the malformed one counts as done).
  mock.requests.length = 0;
  const s2 = await generateInstructData({ type: 'conversation', images, client, outJsonl: out, concurrency: 3, progress: 'none', log: quiet });
  t.same([s2.alreadyDone, s2.completed, mock.requests.length], [9, 0, 0], 'resume skips every done id');
  t.same([...completedImageIds(lines, 'conversation')].sort(), images.map((i) => i.imageId).sort());
  t.same([...completedImageIds(lines, 'detail')], [], 'ids are per type');

  // --retry-failed asks only for 1004 again; now it answers properly; collect keeps the newest line.
  mock.handler = (b) => ok(formatReply(b));
  const s3 = await generateInstructData({ type: 'conversation', images, client, outJsonl: out, retryFailed: true, progress: 'none', log: quiet });
  t.same([s3.alreadyDone, s3.completed, mock.requests.length], [8, 1, 1]);
  t.match(mock.requests[0].body.messages[5].content, /scene 1004/);

  // Partial resume after a crash: 3 lines kept, the 4th cut in half.
  const partial = path.join(tmp, 'gen', 'partial.jsonl');
  const text = fs.readFileSync(out, 'utf8').split('\n');
  fs.writeFileSync(partial, text.slice(0, 3).join('\n') + '\n' + text[3].slice(0, 30));
  mock.requests.length = 0;
  const logs: string[] = [];
  const s4 = await generateInstructData({
    type: 'conversation',
    images,
    client,
    outJsonl: partial,
    concurrency: 2,
    progress: 'plain',
    log: (m) => logs.push(m),
  });
  t.same([s4.alreadyDone, s4.completed, mock.requests.length], [3, 6, 6], 'only the 6 missing images are asked');
  t.ok(
    logs.some((m) => /partial\.jsonl:4 ignored: not JSON/.test(m)),
    'partial line reported',
  );
  t.ok(
    logs.some((m) => /\[gen-data\] conversation 6\/6 \| failed 0/.test(m)),
    'plain progress lines',
  );
  const after = readGenerationJsonl(partial);
  t.equal(after.lines.length, 9, 'new lines start on a fresh line');
  t.equal(after.bad.length, 1);

  // A 401 stops everything and says so; what was answered before stays.
  const fatalOut = path.join(tmp, 'gen', 'fatal.jsonl');
  mock.handler = (b, n) => (n <= 1 ? ok(formatReply(b)) : { status: 401, body: { error: { message: 'invalid key' } } });
  mock.requests.length = 0;
  await t.rejects(
    generateInstructData({ type: 'conversation', images, client, outJsonl: fatalOut, concurrency: 1, progress: 'none', log: quiet }),
    /HTTP 401 .*invalid key \(stopped; 1 response\(s\) of this run saved in .*fatal\.jsonl, rerun to continue\)/,
  );
  t.equal(mock.requests.length, 2, 'no request after the fatal error');
  t.equal(readGenerationJsonl(fatalOut).lines.length, 1);

  // A non-fatal failure after the retries: reported, no line, asked again next time.
  const failOut = path.join(tmp, 'gen', 'fail.jsonl');
  mock.handler = (b) => (b.messages[5].content.includes('scene 1002') ? { status: 500, body: 'down' } : ok(formatReply(b)));
  const s5 = await generateInstructData({ type: 'conversation', images, client, outJsonl: failOut, progress: 'none', log: quiet });
  t.equal(s5.apiErrors.length, 1);
  t.match(s5.apiErrors[0], { imageId: '1002', reason: /failed after 4 attempt\(s\): HTTP 500/ });
  t.equal(readGenerationJsonl(failOut).lines.length, 8);
});

t.test('generate: detail and complex reasoning chats carry boxes and 3 examples', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const images = synthImages(2);
  const client = new OpenAIChatClient({ apiKey: 'k', baseUrl: mock.url });
  for (const type of ['detail', 'complex_reasoning'] as const) {
    mock.requests.length = 0;
    const out = path.join(tmp, 'gen2', `${type}.jsonl`);
    const s = await generateInstructData({
      type,
      images,
      client,
      outJsonl: out,
      seed: 3,
      imagePrefix: 'coco/train2017/',
      progress: 'none',
      log: quiet,
    });
    t.same([s.completed, s.parseErrors.length], [2, 0]);
    const m = mock.requests[0].body.messages;
    t.equal(m.length, 8, `${type}: system + 3 pairs + query`);
    t.equal(m[0].content, SYSTEM_MESSAGES[type]);
    // 200x100 image, box [20, 10, 100, 50] -> [0.1, 0.1, 0.6, 0.6]
    t.match(m[7].content, /\n\nperson: \[0\.100, 0\.100, 0\.600, 0\.600\]$/);
    const recs = readGenerationJsonl(out).lines.map((l) => l.record!);
    t.equal(recs[0].image, 'coco/train2017/000000001000.jpg');
    t.equal(recs[0].conversations.length, 2, 'single turn');
    if (type === 'detail') {
      const q = parseGptOutput('detail', 'x', { id: 'a', image: 'b', imageId: '1000', seed: 3 });
      t.equal(recs[0].conversations[0].value, q.ok && q.value.conversations[0].value, 'question drawn per (seed, image), independent of order');
    }
  }
});

t.test('collect: JSONL -> LLaVA JSON array, ordered, newest line wins, failures listed', async (t) => {
  const dir = path.join(tmp, 'collect');
  fs.mkdirSync(dir, { recursive: true });
  const rec = (id: string, q: string): GenerationLine['record'] => ({
    id,
    image: `${id}.jpg`,
    conversations: [
      { from: 'human', value: `<image>\n${q}` },
      { from: 'gpt', value: 'A.' },
    ],
  });
  const line = (type: GptDataType, index: number, imageId: string, record: GenerationLine['record'], error: string | null = null): string =>
    JSON.stringify({
      type,
      index,
      image_id: imageId,
      id: imageId,
      image: `${imageId}.jpg`,
      model: 'm',
      response: 'r',
      finish_reason: 'stop',
      usage: null,
      record,
      error,
      created: 'T',
    });
  const a = path.join(dir, 'a.jsonl');
  fs.writeFileSync(
    a,
    [
      line('complex_reasoning', 2, '30', rec('30', 'third')),
      line('complex_reasoning', 0, '10', null, 'bad format'),
      line('complex_reasoning', 1, '20', rec('20', 'old')),
      '{"half a line',
      line('complex_reasoning', 1, '20', rec('20', 'second')),
      line('complex_reasoning', 0, '10', rec('10', 'first')),
      line('complex_reasoning', 3, '40', null, 'two pairs'),
      line('complex_reasoning', 4, '50', {
        id: '50',
        image: '50.jpg',
        conversations: [
          { from: 'human', value: 'no image tag' },
          { from: 'gpt', value: 'x' },
        ],
      }),
    ].join('\n') + '\n',
  );
  const b = path.join(dir, 'b.jsonl');
  fs.writeFileSync(b, line('detail', 0, '10', rec('10', 'detail q')) + '\n');
  const outFile = path.join(dir, 'llava_instruct_mix.json');
  const c = collectInstructData([a, b], outFile);
  t.same(
    c.records.map((r) => r.conversations[0].value),
    ['<image>\nfirst', '<image>\nsecond', '<image>\nthird', '<image>\ndetail q'],
  );
  t.same(c.failures, [{ type: 'complex_reasoning', imageId: '40', reason: 'two pairs' }]);
  t.equal(c.invalid.length, 1);
  t.match(c.invalid[0], { imageId: '50', reason: /<image>/ });
  t.equal(c.bad.length, 1);
  t.match(c.bad[0], { line: 4, reason: /not JSON/ });
  t.equal(fs.readFileSync(outFile, 'utf8'), JSON.stringify(c.records, null, 2) + '\n', 'the file is the JSON array, 2-space indent');
  collectInstructData([path.join(dir, 'b.jsonl')], path.join(dir, 'one.json'));
  t.same(JSON.parse(fs.readFileSync(path.join(dir, 'one.json'), 'utf8')), [rec('10', 'detail q')]);
  fs.writeFileSync(path.join(dir, 'empty.jsonl'), '');
  t.equal(fs.readFileSync(collectInstructData([path.join(dir, 'empty.jsonl')], path.join(dir, 'none.json')).outFile!, 'utf8'), '[]\n');
  t.throws(() => collectInstructData([path.join(dir, 'missing.jsonl')]), /not found/);
});

t.test('forEachLine: lines across 1 MiB read chunks, multi-byte characters, no final newline', async (t) => {
  const f = path.join(tmp, 'lines.txt');
  const want: string[] = [];
  for (let i = 0; want.join('\n').length < 2.5 * (1 << 20); i++) want.push(`${i} ${'é€😀x'.repeat(1 + (i % 700))}`);
  fs.writeFileSync(f, want.join('\n'));
  const got: string[] = [];
  const nums: number[] = [];
  forEachLine(f, (l, n) => {
    got.push(l);
    nums.push(n);
  });
  t.equal(got.length, want.length);
  t.ok(
    got.every((l, i) => l === want[i]),
    'every line intact',
  );
  t.equal(nums[nums.length - 1], want.length);
});

t.test('dry run: Batch-API request lines, no key needed', async (t) => {
  const { captions, instances } = cocoJson(0);
  const images = cocoFromJson(captions, instances).images;
  const f = path.join(tmp, 'dry', 'detail.prompts.jsonl');
  const r = writeDryRun({ type: 'detail', images, outFile: f, model: 'gpt-4o', temperature: 0.2 });
  t.equal(r.count, 2);
  const lines = fs
    .readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.equal(lines.length, 2);
  t.same(Object.keys(lines[0]), ['custom_id', 'method', 'url', 'body']);
  t.equal(lines[0].custom_id, 'detail-42');
  t.equal(lines[0].url, '/v1/chat/completions');
  t.equal(lines[0].body.model, 'gpt-4o');
  t.equal(lines[0].body.temperature, 0.2);
  t.same(lines[0].body.messages, buildMessages(builtinPromptSet('detail'), CONTEXT_42_BOXES));
  t.same(r.first, lines[0].body.messages);
});

// ---------------------------------------------------------------------------------------------------------
// CLI (run as a child process, asynchronously so the mock server in this process can answer)

function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const e: NodeJS.ProcessEnv = { ...process.env, FORCE_COLOR: '0', OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined, ...env };
    for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
    const p = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: e });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

t.test('CLI: gen-data end to end, resume, dry run, collect-data, export-prompts, errors', async (t) => {
  const mock = await startMock();
  t.teardown(() => mock.close());
  const dir = path.join(tmp, 'cli');
  fs.mkdirSync(dir, { recursive: true });
  const { captions, instances } = cocoJson(3);
  const capFile = path.join(dir, 'captions_train2017.json');
  const insFile = path.join(dir, 'instances_train2017.json');
  fs.writeFileSync(capFile, JSON.stringify(captions));
  fs.writeFileSync(insFile, JSON.stringify(instances));
  const out = path.join(dir, 'out');
  const env = { OPENAI_API_KEY: 'cli-key', OPENAI_BASE_URL: mock.url };

  const help = await cli(['gen-data', '--help']);
  t.equal(help.code, 0);
  for (const o of ['--type', '--captions', '--instances', '--out', '--limit', '--concurrency', '--model', '--dry-run', '--prompts-dir', '--seed'])
    t.match(help.out, o, `gen-data --help lists ${o}`);

  mock.handler = (b, n) => (n === 2 ? { status: 429, body: 'wait', headers: { 'retry-after': '0' } } : ok(formatReply(b)));
  const run = await cli(
    [
      'gen-data',
      '--type',
      'complex_reasoning',
      '--captions',
      capFile,
      '--instances',
      insFile,
      '--out',
      out,
      '--limit',
      '4',
      '--concurrency',
      '2',
      '--progress',
      'none',
      '--model',
      'gpt-test',
      '--retry-base-ms',
      '1',
    ],
    env,
  );
  t.equal(run.code, 0, run.err);
  t.match(run.out, /complex_reasoning: 4 image\(s\): 0 already done, 4 answered this run \(0 malformed\), 0 failed/);
  t.match(run.out, /wrote 4 record\(s\) to .*llava_instruct_complex_reasoning\.json/);
  t.equal(mock.requests.length, 5, '4 images + one 429 retry');
  t.equal(mock.requests[0].auth, 'Bearer cli-key');
  t.equal(mock.requests[0].body.model, 'gpt-test');
  const json = JSON.parse(fs.readFileSync(path.join(out, 'llava_instruct_complex_reasoning.json'), 'utf8'));
  t.same(
    json.map((r: { id: string }) => r.id),
    ['000000000042', '000000000007', '000000001000', '000000001001'],
    'captions-file order',
  );
  t.same(json[0].conversations, [
    { from: 'human', value: '<image>\nWhat is special about scene suit?' },
    { from: 'gpt', value: 'It is synthetic.' },
  ]);
  const ctx42 = mock.requests.map((r) => r.body.messages[7].content).find((c) => c.startsWith('A man in a suit'));
  t.equal(ctx42, CONTEXT_42_BOXES, 'the CLI sends the hand-computed context');

  // Rerun with a larger limit: only the new image is asked; one malformed answer is reported, exit 0.
  mock.requests.length = 0;
  mock.handler = () => ok('no idea');
  const more = await cli(
    [
      'gen-data',
      '--type',
      'complex_reasoning',
      '--captions',
      capFile,
      '--instances',
      insFile,
      '--out',
      out,
      '--limit',
      '5',
      '--progress',
      'none',
      '--model',
      'gpt-test',
    ],
    env,
  );
  t.equal(more.code, 0, more.err);
  t.equal(mock.requests.length, 1, 'resume: 4 done, 1 new');
  t.match(more.err, /\[gen-data\] image 1002: malformed output: text before the first 'Question:' label/);
  t.match(more.out, /5 image\(s\): 4 already done, 1 answered this run \(1 malformed\)/);
  t.match(more.out, /wrote 4 record\(s\) .*1 malformed output\(s\) left out/);

  // Dry run: no key, no request.
  mock.requests.length = 0;
  const dry = await cli(['gen-data', '--type', 'conversation', '--captions', capFile, '--out', out, '--dry-run', '--limit', '2', '--few-shot', '1']);
  t.equal(dry.code, 0, dry.err);
  t.equal(mock.requests.length, 0);
  t.match(dry.out, /^----- system -----\nYou are an AI visual assistant, and you are seeing a single image\./);
  t.match(dry.out, /dry run: 2 conversation prompt\(s\) \(1 few-shot examples, builtin\) written to .*conversation\.prompts\.jsonl/);
  const dl = fs
    .readFileSync(path.join(out, 'conversation.prompts.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.equal(dl.length, 2);
  t.equal(dl[0].body.messages.length, 4);
  t.equal(dl[0].body.messages[3].content, CAPS_42);

  // export-prompts, edit, use with --prompts-dir; then collect-data over two files.
  const pdir = path.join(dir, 'prompts');
  const ex = await cli(['export-prompts', '--out', pdir, '--type', 'detail']);
  t.equal(ex.code, 0, ex.err);
  t.ok(fs.existsSync(path.join(pdir, 'detail_description', '000_caps.txt')));
  fs.writeFileSync(path.join(pdir, 'detail_description', 'system_message.txt'), 'Describe it.\n');
  mock.requests.length = 0;
  mock.handler = (b) => ok(formatReply(b));
  const det = await cli(
    [
      'gen-data',
      '--type',
      'detail',
      '--captions',
      capFile,
      '--instances',
      insFile,
      '--out',
      out,
      '--prompts-dir',
      pdir,
      '--limit',
      '2',
      '--progress',
      'none',
    ],
    env,
  );
  t.equal(det.code, 0, det.err);
  t.equal(mock.requests[0].body.messages[0].content, 'Describe it.', 'system message from --prompts-dir');
  const merged = path.join(dir, 'llava_instruct_mix.json');
  const col = await cli(['collect-data', path.join(out, 'complex_reasoning.jsonl'), path.join(out, 'detail.jsonl'), '--out', merged]);
  t.equal(col.code, 0, col.err);
  t.match(col.out, /wrote 6 record\(s\) from 2 file\(s\)/);
  t.match(col.err, /complex_reasoning image 1002: malformed output left out/);
  t.equal(JSON.parse(fs.readFileSync(merged, 'utf8')).length, 6);

  // Errors: one line, exit 1.
  const cases: [string[], Record<string, string>, RegExp][] = [
    [
      ['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o2')],
      { OPENAI_BASE_URL: mock.url },
      /llava gen-data: error: \[openai\] no API key: set OPENAI_API_KEY/,
    ],
    [['gen-data', '--type', 'detail', '--captions', capFile, '--out', path.join(dir, 'o2')], env, /--instances is required for --type detail/],
    [['gen-data', '--type', 'captions', '--captions', capFile, '--out', path.join(dir, 'o2')], env, /argument 'captions' is invalid/],
    [
      ['gen-data', '--type', 'conversation', '--captions', path.join(dir, 'nope.json'), '--out', path.join(dir, 'o2')],
      env,
      /captions file .*nope\.json not found/,
    ],
    [
      ['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o2'), '--concurrency', '0'],
      env,
      /--concurrency <n>' argument '0' is invalid/,
    ],
    [['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o2'), '--offset', '50'], env, /no images selected/],
    [['collect-data', path.join(dir, 'none.jsonl'), '--out', merged], {}, /llava collect-data: error: JSONL file .* not found/],
  ];
  for (const [args, e, re] of cases) {
    const r = await cli(args, e);
    t.equal(r.code, 1, `exit 1 for ${re}`);
    t.match(r.err, re);
  }
  mock.handler = () => ({ status: 401, body: { error: { message: 'Incorrect API key provided' } } });
  const bad = await cli(['gen-data', '--type', 'conversation', '--captions', capFile, '--out', path.join(dir, 'o3'), '--progress', 'none'], env);
  t.equal(bad.code, 1);
  t.match(bad.err, /llava gen-data: error: \[openai\] HTTP 401 .*Incorrect API key provided \(stopped;/);
});
