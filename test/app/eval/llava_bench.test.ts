// LLaVA-Bench (lib/app/eval/llava_bench.ts, judge.ts; docs/reference.md §8): the judge prompts (full strings,
// COCO and In-the-Wild), score parsing, the summary's roundings; then the judge client (retries, errors,
// missing key, concurrency) and the resumable review loop against a local HTTP mock.
import t from 'tap';
import * as fs from 'fs';
import {
  formatReviewSummary,
  judgeContent,
  judgePrompt,
  parseJudgeScores,
  pyFixed,
  pyFloatRepr,
  summarizeReviews,
  BENCH_RULES,
  JUDGE_SYSTEM_PROMPT,
  type AnswerRecord,
  type BenchQuestion,
  type CocoContext,
} from '../../../lib/app/eval/index';
import { OpenAIJudge, runBenchReview, type Judge } from '../../../lib/app/eval/judge';
import { WILD_CTX, mockServer, readLines, tempDir } from './fixtures';

const { tmpFile } = tempDir(t);

const RULE_END =
  ' \nPlease rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\nPlease first output a single line containing only two values indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space.\nIn the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in which the responses were presented does not affect your judgment.\n\n';

const COCO_Q: BenchQuestion = {
  question_id: 0,
  image: '000000441147.jpg',
  text: 'What is the color of the two suitcases in the image?',
  category: 'conv',
};
const COCO_CTX: CocoContext = {
  image: '000000441147.jpg',
  captions: ['Two suitcases on the floor.', 'Luggage stacked by a wall.'],
  instances: [
    { category: 'suitcase', bbox: [0.574, 0.298, 0.752, 0.704] },
    { category: 'person', bbox: [0, 0.5, 1, 0.25] },
  ],
};
const WILD_Q: BenchQuestion = { question_id: 7, image: '001.jpg', text: 'What is the name of this dish?', category: 'detail' };

t.test('judgePrompt: the exact judge messages (COCO and In-the-Wild)', async (t) => {
  const coco = judgePrompt({
    kind: 'coco',
    question: COCO_Q,
    context: COCO_CTX,
    reference: 'They are black and brown.',
    candidate: 'Both are black.',
  });
  t.equal(coco.length, 2);
  t.same(coco[0], { role: 'system', content: 'You are a helpful and precise assistant for checking the quality of the answer.' });
  t.equal(coco[1].role, 'user');
  t.equal(
    coco[1].content,
    '[Context]\nTwo suitcases on the floor.\nLuggage stacked by a wall.\n\nsuitcase: [0.574, 0.298, 0.752, 0.704]\nperson: [0.0, 0.5, 1.0, 0.25]\n\n' +
      '[Question]\nWhat is the color of the two suitcases in the image?\n\n' +
      '[Assistant 1]\nThey are black and brown.\n\n[End of Assistant 1]\n\n' +
      '[Assistant 2]\nBoth are black.\n\n[End of Assistant 2]\n\n' +
      '[System]\nWe would like to request your feedback on the performance of two AI assistants in response to the user question displayed above. The user asks the question on observing an image. For your reference, the visual content in the image is represented with five descriptive sentences describing the same image and the bounding box coordinates of each object in the scene. These coordinates are in the form of bounding boxes, represented as (x1, y1, x2, y2) with floating numbers ranging from 0 to 1. These values correspond to the top left x, top left y, bottom right x, and bottom right y.' +
      RULE_END,
  );
  const wild = judgePrompt({ kind: 'wild', question: WILD_Q, context: WILD_CTX, reference: 'It is ramen.', candidate: 'Noodle soup.' });
  t.equal(wild[0].content, JUDGE_SYSTEM_PROMPT);
  t.equal(
    wild[1].content,
    '[Context]\nA bowl of ramen with a soft-boiled egg.\n\n' +
      '[Question]\nWhat is the name of this dish?\n\n' +
      '[Assistant 1]\nIt is ramen.\n\n[End of Assistant 1]\n\n' +
      '[Assistant 2]\nNoodle soup.\n\n[End of Assistant 2]\n\n' +
      '[System]\nWe would like to request your feedback on the performance of two AI assistants in response to the user question displayed above. The user asks the question on observing an image. For your reference, the visual content in the image is represented with a few sentences describing the image.' +
      RULE_END,
  );
  t.same(Object.keys(BENCH_RULES).sort(), ['complex', 'conv', 'detail', 'llava_bench_complex', 'llava_bench_conv', 'llava_bench_detail']);
  t.equal(
    judgeContent({ kind: 'wild', question: WILD_Q, context: { image: '001.jpg', caption: ['one', 'two'] }, reference: 'r', candidate: 'c' }).split(
      '\n\n',
    )[0],
    '[Context]\none\ntwo',
    'a list description is joined by newlines',
  );
  t.match(
    judgeContent({
      kind: 'coco',
      question: COCO_Q,
      context: { ...COCO_CTX, instances: [{ category: 'tie', bbox: '[0.1, 0.2, 0.3, 0.4]' }] },
      reference: 'r',
      candidate: 'c',
    }),
    /\n\ntie: \[0\.1, 0\.2, 0\.3, 0\.4\]\n\n\[Question\]/,
    'a string bbox is used verbatim',
  );
  t.throws(
    () => judgePrompt({ kind: 'coco', question: { ...COCO_Q, category: 'other' }, context: COCO_CTX, reference: 'r', candidate: 'c' }),
    /category 'other' is not in the rule table/,
  );
  const custom = judgeContent({
    kind: 'wild',
    question: WILD_Q,
    context: WILD_CTX,
    reference: 'r',
    candidate: 'c',
    rules: { llava_bench_detail: { role: 'Model', prompt: 'Rate.' } },
  });
  t.match(custom, /\[Model 1\]\nr\n\n\[End of Model 1\]\n\n\[Model 2\]\nc\n\n\[End of Model 2\]\n\n\[System\]\nRate\.\n\n$/);
  t.equal(pyFloatRepr(1e-5), '1e-05');
  t.equal(pyFloatRepr(0.1 + 0.2), '0.30000000000000004');
});

t.test('parseJudgeScores: first line, commas to spaces, exactly two fields', async (t) => {
  const cases: [unknown, [number, number]][] = [
    ['8 9\nAssistant 1 was more detailed.', [8, 9]],
    ['7.5 8.5', [7.5, 8.5]],
    ['8,9\n', [8, 9]],
    ['8, 9\n', [-1, -1]], // "8  9" splits into three fields
    ['9 10 \n', [-1, -1]], // a trailing space is a third (empty) field
    [' 8 9', [-1, -1]],
    ['8\t9', [-1, -1]],
    ['Assistant 1: 8\nAssistant 2: 9', [-1, -1]],
    ['\n8 9', [-1, -1]],
    ['eight nine', [-1, -1]],
    ['8 9\r\nreason', [8, 9]], // float() strips the \r
    ['1_0 9', [10, 9]],
    ['+7 .5', [7, 0.5]],
    [null, [-1, -1]],
  ];
  for (const [review, want] of cases) t.same(parseJudgeScores(review), want, JSON.stringify(review));
});

// Hand-checked against the reference algorithm: means rounded to 3 decimals, ratio of means, Python rounding.
const REVIEWS = [
  ...[
    [8, 7],
    [9, 9],
  ].map((p) => ({ category: 'conv', tuple: p })),
  ...[
    [7, 6],
    [-1, -1],
  ].map((p) => ({ category: 'detail', tuple: p })), // the unparsed pair counts
  ...[
    [7, 6],
    [7, 6],
    [7, 6],
    [7, 6],
    [7, 6],
    [7, 6],
    [7, 7],
    [8, 7],
  ].map((p) => ({ category: 'complex', tuple: p })),
  ...[
    [1, 1],
    [1, 1],
    [2, 3],
  ].map((p) => ({ category: 'odd', tuple: p })),
].map((r, i) => ({ ...r, question_id: i }));

t.test('summarizeReviews: relative scores, roundings and the -1 quirk', async (t) => {
  const rows = summarizeReviews(REVIEWS);
  t.same(
    rows.map((r) => r.category),
    ['all', 'complex', 'conv', 'detail', 'odd'],
    'sorted, all included',
  );
  const by = Object.fromEntries(rows.map((r) => [r.category, r]));
  t.same(by.conv, { category: 'conv', count: 2, refMean: 8.5, modelMean: 8, relative: 94.1, ref10: 85, model10: 80 });
  t.same(by.detail, { category: 'detail', count: 2, refMean: 3, modelMean: 2.5, relative: 83.3, ref10: 30, model10: 25 }, '[-1, -1] averaged in');
  t.same(
    by.complex,
    { category: 'complex', count: 8, refMean: 7.125, modelMean: 6.25, relative: 87.7, ref10: 71.2, model10: 62.5 },
    '71.25 rounds to even (71.2)',
  );
  t.same(
    by.odd,
    { category: 'odd', count: 3, refMean: 1.333, modelMean: 1.667, relative: 125.1, ref10: 13.3, model10: 16.7 },
    'ratio of the 3-decimal means (125.1, not 125.0)',
  );
  t.same(by.all, { category: 'all', count: 15, refMean: 5.6, modelMean: 5.067, relative: 90.5, ref10: 56, model10: 50.7 });
  t.equal(
    formatReviewSummary('review_wild', rows),
    'review_wild\nall 90.5 56.0 50.7\ncomplex 87.7 71.2 62.5\nconv 94.1 85.0 80.0\ndetail 83.3 30.0 25.0\nodd 125.1 13.3 16.7\n=================================',
  );
  const ig = Object.fromEntries(summarizeReviews(REVIEWS, { ignore: [3] }).map((r) => [r.category, r]));
  t.same([ig.detail.count, ig.detail.refMean, ig.detail.modelMean], [1, 7, 6], 'ignored question left out');
  const noCat = summarizeReviews([{ tuple: [8, 4] }, { score: [6, 6] }]);
  t.same(
    noCat.map((r) => [r.category, r.relative]),
    [['all', 71.4]],
    'reviews without category go to all; `score` is accepted',
  );
  t.equal(pyFixed(0.125, 2), '0.12');
  t.equal(pyFixed(0.375, 2), '0.38');
  t.equal(pyFixed(2.675, 2), '2.67', 'binary value below the tie');
});

// ---------------------------------------------------------------------------------------------------------
// The judge client and the review loop against a local server

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fast = { retryBaseMs: 1, retryMaxMs: 5 };

t.test('OpenAIJudge: request body, retries, errors, missing key, concurrency', async (t) => {
  const m = await mockServer((n) => (n === 0 ? [500, 'overloaded'] : n === 1 ? [429, 'slow down', { 'retry-after': '0' }] : [200, '8 9\nfine']));
  t.teardown(() => m.close());
  const retries: string[] = [];
  const judge = new OpenAIJudge({ apiKey: 'sk-test', baseUrl: m.url + '/', ...fast, onRetry: (i) => retries.push(i.reason) });
  const msgs = judgePrompt({ kind: 'wild', question: WILD_Q, context: WILD_CTX, reference: 'r', candidate: 'c' });
  t.equal(await judge.complete(msgs), '8 9\nfine', 'a 500 and a 429 are retried, then success');
  t.equal(m.requests.length, 3);
  t.same(retries, ['HTTP 500: overloaded', 'HTTP 429: slow down']);
  t.same(m.requests[2].body, { model: 'gpt-4-0314', messages: msgs, temperature: 0.2, max_tokens: 1024 });
  t.equal(m.requests[2].headers.authorization, 'Bearer sk-test');

  const bad = await mockServer(() => [400, 'bad model']);
  t.teardown(() => bad.close());
  await t.rejects(new OpenAIJudge({ apiKey: 'k', baseUrl: bad.url, ...fast }).complete(msgs), /HTTP 400 .*bad model/, 'a 400 is not retried');
  t.equal(bad.requests.length, 1);

  const down = await mockServer(() => [503, 'down']);
  t.teardown(() => down.close());
  await t.rejects(
    new OpenAIJudge({ apiKey: 'k', baseUrl: down.url, maxRetries: 2, ...fast }).complete(msgs),
    /failed after 3 attempt\(s\): HTTP 503: down/,
  );
  t.equal(down.requests.length, 3);

  const nul = await mockServer(() => [200, '<null>']);
  t.teardown(() => nul.close());
  const empty = await new OpenAIJudge({ apiKey: 'k', baseUrl: nul.url }).complete(msgs);
  t.equal(empty, '', 'a null content is an empty review');
  t.same(parseJudgeScores(empty), [-1, -1]);

  t.throws(() => new OpenAIJudge({ env: {} }), /OPENAI_API_KEY/, 'missing key');
  const fromEnv = new OpenAIJudge({ env: { OPENAI_API_KEY: 'e', OPENAI_BASE_URL: m.url } });
  t.equal(fromEnv.baseUrl, m.url);
  t.equal(new OpenAIJudge({ env: { OPENAI_API_KEY: 'e' } }).baseUrl, 'https://api.openai.com/v1');
  t.equal(fromEnv.model, 'gpt-4-0314');

  const slow = await mockServer(async () => {
    await sleep(30);
    return [200, '5 5'];
  });
  t.teardown(() => slow.close());
  const two = new OpenAIJudge({ apiKey: 'k', baseUrl: slow.url, concurrency: 2 });
  await Promise.all(Array.from({ length: 6 }, () => two.complete(msgs)));
  t.equal(slow.requests.length, 6);
  t.equal(slow.maxInFlight, 2, 'at most 2 requests in flight');
});

t.test('runBenchReview: review lines, resume, failure and restart', async (t) => {
  const questions: BenchQuestion[] = [COCO_Q, { ...COCO_Q, question_id: 1, category: 'detail' }, { ...COCO_Q, question_id: 2, category: 'complex' }];
  const refs: AnswerRecord[] = questions.map((q) => ({
    question_id: q.question_id,
    prompt: q.text,
    text: `ref ${q.question_id}`,
    answer_id: `r${q.question_id}`,
  }));
  const cands: AnswerRecord[] = questions
    .map((q) => ({ question_id: q.question_id, prompt: q.text, text: `model ${q.question_id}`, answer_id: `m${q.question_id}` }))
    .reverse(); // order does not matter
  const replies: Record<string, string> = { 'model 0': '8 6\nok', 'model 1': 'Assistant 1: 9\nAssistant 2: 7', 'model 2': '7 7\nsame' };
  const judge: Judge & { seen: string[] } = {
    seen: [],
    async complete(msgs) {
      const cand = /\[Assistant 2\]\n(.*)\n/.exec(msgs[1].content)![1];
      this.seen.push(cand);
      return replies[cand];
    },
  };
  const out = tmpFile('review.jsonl');
  const base = {
    kind: 'coco' as const,
    questions,
    contexts: [COCO_CTX],
    references: refs,
    candidates: cands,
    outputFile: out,
    judge,
    progress: 'none' as const,
    log: () => {},
  };
  const r = await runBenchReview({ ...base, concurrency: 1 });
  t.same(r, { total: 3, skipped: 0, written: 3, unparsed: 1 });
  const lines = readLines(out);
  t.same(lines[0], {
    id: 1,
    question_id: 0,
    answer1_id: 'r0',
    answer2_id: 'm0',
    category: 'conv',
    content: '8 6\nok',
    tuple: [8, 6],
  });
  t.same(
    lines.map((l) => l.tuple),
    [
      [8, 6],
      [-1, -1],
      [7, 7],
    ],
  );
  t.equal(lines[0].content, '8 6\nok');
  t.same(judge.seen, ['model 0', 'model 1', 'model 2']);
  judge.seen = [];
  t.same(await runBenchReview(base), { total: 3, skipped: 3, written: 0, unparsed: 0 }, 'second run: nothing to do');
  t.same(judge.seen, []);

  // A run killed mid-line: the partial line is cut and that question is judged again.
  const text = fs.readFileSync(out, 'utf8').split('\n');
  fs.writeFileSync(out, text[0] + '\n' + text[1].slice(0, 20));
  t.same(await runBenchReview(base), { total: 3, skipped: 1, written: 2, unparsed: 1 });
  t.same(judge.seen.sort(), ['model 1', 'model 2']);
  t.equal(readLines(out).length, 3);

  // In-the-Wild keys and a mock server end to end; the server fails question 1 for good, a rerun resumes.
  let fail = true;
  const m = await mockServer((_n, body) => {
    const content = (body.messages as { content: string }[])[1].content;
    if (fail && content.includes('model 1')) return [401, 'no'];
    return [200, '6 3\nwhy'];
  });
  t.teardown(() => m.close());
  const wildOut = tmpFile('wild.jsonl');
  const wq = questions.map((q) => ({ ...q, image: '001.jpg' }));
  const wbase = { ...base, kind: 'wild' as const, questions: wq, contexts: [WILD_CTX], outputFile: wildOut, concurrency: 1 };
  await t.rejects(
    runBenchReview({ ...wbase, judge: new OpenAIJudge({ apiKey: 'k', baseUrl: m.url, ...fast }) }),
    /question 1: .*HTTP 401.*1 new reviews were written.*run again to resume/,
  );
  t.same(
    readLines(wildOut).map((l) => [l.question_id, l.category]),
    [[0, 'llava_bench_conv']],
  );
  fail = false;
  t.same(await runBenchReview({ ...wbase, judge: new OpenAIJudge({ apiKey: 'k', baseUrl: m.url, ...fast }) }), {
    total: 3,
    skipped: 1,
    written: 2,
    unparsed: 0,
  });
  t.same(
    readLines(wildOut).map((l) => l.category),
    ['llava_bench_conv', 'llava_bench_detail', 'llava_bench_complex'],
  );
  t.same(summarizeReviews(readLines(wildOut)).find((r) => r.category === 'all')!.relative, 50);

  // Inputs are checked before any request.
  const n0 = m.requests.length;
  await t.rejects(runBenchReview({ ...wbase, outputFile: tmpFile('x.jsonl'), candidates: cands.slice(1) }), /^\[eval\] question 2: no model answer/);
  await t.rejects(runBenchReview({ ...wbase, outputFile: tmpFile('x.jsonl'), contexts: [] }), /no context line for image 001\.jpg/);
  t.equal(m.requests.length, n0);
});
