// Evaluation harnesses (lib/app/eval/, cli/eval.ts; docs/reference.md §6.3, §8): ScienceQA answer extraction rule by rule, prompts, conversion,
// accuracy and the official categories on a hand-made problem set; LLaVA-Bench judge prompts (full strings),
// score parsing, the summary's roundings; the judge client and review loop against a local HTTP mock;
// answer generation on the tiny fixture model; and every `llava eval` command through registerEvalCommands.
import t from 'tap';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import { AddressInfo } from 'net';
import { Command, CommanderError } from 'commander';
import { SafetensorsFile } from '../../../lib/io/safetensors';
import { parseDataset } from '../../../lib/app/processing/data';
import {
  convertScienceQA,
  extractSqaAnswer,
  formatReviewSummary,
  formatSqaReport,
  judgeContent,
  judgePrompt,
  parseJudgeScores,
  parseSqaFormat,
  pyFixed,
  pyFloatRepr,
  pyJsonDump,
  scienceQACategoryAccuracy,
  scoreScienceQA,
  sqaConvertedFileName,
  sqaPrompt,
  sqaResultJson,
  summarizeReviews,
  BENCH_RULES,
  JUDGE_SYSTEM_PROMPT,
  type AnswerRecord,
  type BenchQuestion,
  type CocoContext,
  type SqaProblem,
  type SqaProblems,
  type WildContext,
} from '../../../lib/app/eval/index';
import { OpenAIJudge, runBenchReview, type Judge } from '../../../lib/app/eval/judge';
import { generateAnswers, getChunk, loadEvalModel, shortUuid, type EvalModel } from '../../../lib/app/eval/answer';
import { registerEvalCommands } from '../../../lib/app/cli/eval';
import { TEST_DIR } from '../../helpers';
import { mulberry32 } from '../../../lib/app/util/random';
import { prepareJsonlOutput } from '../../../lib/app/util/files';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-eval-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (name: string) => path.join(tmp, `${fileNo++}-${name}`);
const readLines = (f: string) =>
  fs
    .readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));

// ---------------------------------------------------------------------------------------------------------
// ScienceQA

t.test('extractSqaAnswer: the reference rules, in order', async (t) => {
  const cases: [string, number, string, number, string][] = [
    // output, choices, letter, index, rule
    ['A', 2, 'A', 0, 'letter'],
    ['E', 5, 'E', 4, 'letter'],
    ['C', 2, 'C', -1, 'letter'], // a letter beyond the choices is wrong
    [' A', 2, 'FAILED', -1, 'failed'], // no stripping
    ['A.', 2, 'FAILED', -1, 'failed'], // too short for the prefix rule
    ['B. because it is', 3, 'B', 1, 'prefix'],
    ['B.because', 3, 'FAILED', -1, 'failed'],
    ['F. the sixth', 5, 'FAILED', -1, 'failed'], // prefix rule only takes A-E
    ['A. The answer is B.', 2, 'A', 0, 'prefix'], // earlier rule wins
    ['The answer is B.', 3, 'B', 1, 'regex'],
    ['Because of X. The answer is C.', 3, 'C', 2, 'regex'],
    ['The answer is B!', 3, 'B', 1, 'regex'], // the final dot is any character
    ['The answer is BC', 3, 'B', 1, 'regex'],
    ['The answer is B\r', 3, 'B', 1, 'regex'], // Python's '.' takes \r
    ['The answer is B', 3, 'FAILED', -1, 'failed'], // needs one more character
    ['The answer is B\nmore', 3, 'FAILED', -1, 'failed'], // '.' does not take \n
    ['The answer is A. The answer is B.', 2, 'FAILED', -1, 'failed'], // must match exactly once
    ['The answer is A. The answer is A.', 2, 'FAILED', -1, 'failed'], // even when both agree
    ['The answer is A. So the answer is A.', 2, 'A', 0, 'regex'], // lower-case "the" is another string
    ['The answer is e.', 5, 'FAILED', -1, 'failed'],
    ['The answer is E.', 3, 'E', -1, 'regex'],
    ['The answer is Z.', 5, 'Z', -1, 'regex'], // [A-Z] in the regex
    ['FAILED', 2, 'FAILED', -1, 'failed'],
    ['', 2, 'FAILED', -1, 'failed'],
  ];
  for (const [out, n, letter, index, rule] of cases) {
    t.same(extractSqaAnswer(out, n), { letter, index, rule }, JSON.stringify(out));
  }
  // The 2023 fallback: a seeded random valid choice; the letter itself is unchanged.
  const a = [0, 1, 2, 3].map(() => 0);
  const rng = mulberry32(7);
  for (let i = 0; i < 400; i++) a[extractSqaAnswer('no idea', 4, { onInvalid: 'random', rng }).index]++;
  t.ok(
    a.every((c) => c > 60),
    `every choice drawn: ${a}`,
  );
  const r1 = [1, 2, 3].map(() => extractSqaAnswer('The answer is E.', 3, { onInvalid: 'random', rng: mulberry32(3) }).index);
  t.same(new Set(r1).size, 1, 'same seed, same draw');
  t.equal(extractSqaAnswer('The answer is E.', 3, { onInvalid: 'random' }).letter, 'E');
  t.equal(extractSqaAnswer('B', 3, { onInvalid: 'random', rng: () => 0.99 }).index, 1, 'valid answers are not redrawn');
});

t.test('sqaPrompt: model_vqa_science.py question text', async (t) => {
  const q = {
    id: '12',
    image: '12/image.png',
    conversations: [
      { from: 'human', value: 'Context: N/A\nQuestion: Which is a mammal?\nOptions: (A) cat (B) fish\n<image>' },
      { from: 'gpt', value: 'A' },
    ],
  };
  t.same(sqaPrompt(q), {
    question: '<image>\nContext: N/A\nQuestion: Which is a mammal?\nOptions: (A) cat (B) fish',
    prompt: '<image>\nContext: N/A\nQuestion: Which is a mammal?\nOptions: (A) cat (B) fish',
    hasImage: true,
  });
  const v15 = sqaPrompt(q, { singlePredPrompt: true });
  t.equal(
    v15.question,
    "<image>\nContext: N/A\nQuestion: Which is a mammal?\nOptions: (A) cat (B) fish\nAnswer with the option's letter from the given choices directly.",
  );
  t.equal(v15.prompt, v15.question);
  const text = sqaPrompt({ id: '3', conversations: [{ from: 'human', value: '  Question: Why?<image> \n' }] }, { singlePredPrompt: true });
  t.same(text, {
    question: "Question: Why?\nAnswer with the option's letter from the given choices directly.",
    prompt: "Question: Why?\nAnswer with the option's letter from the given choices directly.",
    hasImage: false,
  });
  t.equal(sqaPrompt(q, { mmUseImStartEnd: true }).question.split('\n')[0], '<im_start><image><im_end>');
  t.equal(sqaPrompt(q, { mmUseImStartEnd: true }).prompt.split('\n')[0], '<image>', 'the recorded prompt keeps <image>');
  t.throws(() => sqaPrompt({ id: '4', conversations: [] }), /^\[eval\] ScienceQA question 4: no human turn/);
});

const prob = (o: Partial<SqaProblem>): SqaProblem => ({
  question: 'Q?',
  choices: ['a', 'b'],
  answer: 0,
  hint: '',
  image: null,
  subject: 'natural science',
  grade: 'grade3',
  split: 'test',
  lecture: '',
  solution: '',
  ...o,
});

t.test('convertScienceQA: docs/reference.md §6.3 layouts', async (t) => {
  const problems: SqaProblems = {
    '10': prob({
      question: 'Which animal is a mammal?',
      choices: ['cat', 'trout', 'frog'],
      answer: 0,
      hint: 'Look  at the picture.',
      image: 'image.png',
      lecture: 'Mammals have fur.\nThey feed milk.',
      solution: 'A cat has fur.',
      split: 'train',
    }),
    '11': prob({ question: 'Which word rhymes?', choices: ['bat', 'dog'], answer: 1, hint: '', lecture: '', solution: '', split: 'train' }),
    '12': prob({ question: 'Question: what?', choices: ['x', 'y'], answer: 1, hint: 'h', lecture: 'L\\nM', solution: '', split: 'train' }),
  };
  const splits = { train: ['10', '11', '12', '10'], test: [] };
  const lea = convertScienceQA(problems, splits, 'train', { input: 'QCM', output: 'LEA' });
  t.equal(lea.length, 3, 'a repeated id is converted once');
  t.same(lea[0], {
    id: '10',
    image: '10/image.png',
    conversations: [
      { from: 'human', value: 'Which animal is a mammal?\nContext: Look at the picture.\nOptions: (A) cat (B) trout (C) frog\n<image>' },
      { from: 'gpt', value: 'Mammals have fur.\nThey feed milk. A cat has fur. The answer is A.' },
    ],
  });
  t.same(lea[1], {
    id: '11',
    conversations: [
      { from: 'human', value: 'Which word rhymes?\nContext: N/A\nOptions: (A) bat (B) dog' },
      { from: 'gpt', value: ' The answer is B.' }, // empty lecture and solution: three spaces collapse to two, one survives
    ],
  });
  t.same(
    lea[2].conversations.map((c) => c.value),
    ['what?\nContext: h\nOptions: (A) x (B) y', 'L\nM The answer is B.'],
    'every "Question: " goes (Python replace); a literal \\n becomes a newline',
  );
  const cqm = convertScienceQA(problems, splits, 'train', { input: 'CQM', output: 'A' });
  t.equal(
    cqm[0].conversations[0].value,
    'Context: Look at the picture.\nQuestion: Which animal is a mammal?\nOptions: (A) cat (B) trout (C) frog\n<image>',
  );
  t.equal(cqm[0].conversations[1].value, 'The answer is A.');
  const lepa = convertScienceQA(problems, splits, 'train', { input: 'QCM', output: 'LEPA' });
  t.equal(lepa[0].conversations[1].value, 'LECTURE: Mammals have fur.\nThey feed milk.\nSOLUTION: A cat has fur.\n###\nANSWER: A.');
  t.equal(lepa[1].conversations[1].value, '###\nANSWER: B.');
  const al = convertScienceQA(problems, splits, 'train', { input: 'QCML', output: 'AL' });
  t.equal(al[1].conversations[0].value, 'Which word rhymes?\nContext: N/A\nOptions: (A) bat (B) dog', 'a dangling BECAUSE: is removed');
  t.equal(al[1].conversations[1].value, 'The answer is B.');
  // The converted records are valid training data of kind 'sqa' (data.ts), answer sentence included.
  const parsed = parseDataset(JSON.stringify(lea), { kind: 'sqa' });
  t.equal(parsed.report.valid, 3);
  t.same(parsed.report.warnings, []);
  t.same(parseSqaFormat('CQM-A'), { input: 'CQM', output: 'A' });
  t.throws(() => parseSqaFormat('QCM'), /^\[eval\] ScienceQA prompt format 'QCM' must look like INPUT-OUTPUT/);
  t.throws(() => parseSqaFormat('QXM-A'), /unknown ScienceQA input format 'QXM'/);
  t.equal(sqaConvertedFileName('test', 'CQM', 'A'), 'llava_test_CQM-A.json');
  t.throws(() => convertScienceQA(problems, splits, 'val'), /split 'val' is not in pid_splits/);
  t.throws(() => convertScienceQA(problems, { x: ['99'] }, 'x'), /problem 99/);
  t.equal(pyJsonDump({ a: 'é' }), '{"a":"\\u00e9"}', 'ensure_ascii as Python writes the file');
});

// Seven test problems covering every category, plus one from another split.
const PROBLEMS: SqaProblems = {
  p1: prob({ subject: 'natural science', grade: 'grade3', hint: 'h', image: 'i.png', answer: 0, choices: ['a', 'b'] }),
  p2: prob({ subject: 'social science', grade: 'grade8', hint: '', image: null, answer: 1, choices: ['a', 'b', 'c'] }),
  p3: prob({ subject: 'language science', grade: 'grade10', hint: 'x', image: null, answer: 2, choices: ['a', 'b', 'c'] }),
  p4: prob({ subject: 'natural science', grade: 'grade5', hint: '', image: 'j.png', answer: 1, choices: ['a', 'b'] }),
  p5: prob({ subject: 'natural science', grade: 'grade12', hint: '', image: null, answer: 0, choices: ['a', 'b', 'c', 'd'] }),
  p6: prob({ subject: 'social science', grade: 'grade1', hint: 'h', image: 'k.png', answer: 3, choices: ['a', 'b', 'c', 'd'] }),
  p7: prob({ subject: 'language science', grade: 'grade2', hint: '', image: null, answer: 0, choices: ['a', 'b'] }),
  p8: prob({ split: 'val', answer: 0 }),
};
const SPLITS = { test: ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'], val: ['p8'] };
const PREDS: AnswerRecord[] = [
  { question_id: 'p1', prompt: '<image>\nQ', text: 'A' }, // right
  { question_id: 'p2', prompt: 'Q', text: 'A' }, // overridden by the later line
  { question_id: 'p2', prompt: 'Q', text: 'The answer is B.' }, // right
  { question_id: 'p3', prompt: 'Q', text: 'The answer is D.' }, // D beyond 3 choices: wrong
  { question_id: 'p4', prompt: 'Q', text: 'A. no' }, // wrong; its prompt has no <image>, so not in IMG-Accuracy
  // p5 missing: FAILED
  { question_id: 'p6', prompt: '<image>\nQ', text: 'D' }, // right
  { question_id: 'p7', prompt: 'Q', text: 'The answer is A. I repeat: The answer is A.' }, // twice: FAILED
  { question_id: 'p8', prompt: 'Q', text: 'A' }, // other split, ignored
];

t.test('scoreScienceQA: accuracy, IMG-accuracy and the official categories (hand-computed)', async (t) => {
  const s = scoreScienceQA(PROBLEMS, PREDS, SPLITS.test);
  t.equal(s.total, 7);
  t.equal(s.correct, 3);
  t.ok(Math.abs(s.accuracy! - 300 / 7) < 1e-12);
  t.equal(s.imgTotal, 2, 'IMG subset = predictions whose prompt has <image>');
  t.equal(s.imgAccuracy, 100);
  t.same(s.results, { p1: 0, p2: 1, p3: -1, p4: 0, p5: -1, p6: 3, p7: -1 });
  t.equal(s.outputs.p5, 'FAILED');
  t.same(
    s.analysis.correct.map((a) => a.question_id),
    ['p1', 'p2', 'p6'],
  );
  t.same(
    s.analysis.incorrect.find((a) => a.question_id === 'p5'),
    { question_id: 'p5', parsed_ans: 'FAILED', ground_truth: 'A', question: 'Unknown', pred: 'FAILED', is_multimodal: false },
  );
  t.same(s.analysis.incorrect.find((a) => a.question_id === 'p3')!.parsed_ans, 'D');
  const c = s.categories;
  const near = (a: number | null, b: number, what: string) => t.ok(a !== null && Math.abs(a - b) < 1e-9, `${what}: ${a} vs ${b}`);
  near(c.NAT, 100 / 3, 'NAT p1 ok, p4 p5 wrong');
  near(c.SOC, 100, 'SOC p2 p6');
  near(c.LAN, 0, 'LAN p3 p7');
  near(c.TXT, 200 / 3, 'TXT (hint) p1 ok, p3 wrong, p6 ok');
  near(c.IMG, 200 / 3, 'IMG (problem has an image) p1 ok, p4 wrong, p6 ok');
  near(c.NO, 100 / 3, 'NO p2 ok, p5 p7 wrong');
  near(c['G1-6'], 50, 'G1-6 p1 p4 p6 p7');
  near(c['G7-12'], 100 / 3, 'G7-12 p2 p3 p5');
  near(c.Avg, 300 / 7, 'average');
  t.same(s.categoryCounts.total, { NAT: 3, SOC: 2, LAN: 2, TXT: 3, IMG: 3, NO: 3, 'G1-6': 4, 'G7-12': 3, Avg: 7 });
  t.equal(formatSqaReport(s).split('\n')[0], 'Total: 7, Correct: 3, Accuracy: 42.86%, IMG-Accuracy: 100.00%');
  t.match(formatSqaReport(s).split('\n')[2], /^\s+33\.33\s+100\.00\s+0\.00\s+66\.67\s+66\.67\s+33\.33\s+50\.00\s+33\.33\s+42\.86$/);
  t.same(sqaResultJson(s), { acc: s.accuracy, correct: 3, count: 7, results: s.results, outputs: s.outputs });
  // The official scorer on the result map alone gives the same categories.
  t.same(scienceQACategoryAccuracy(PROBLEMS, s.results, SPLITS.test).accuracy, s.categories);
  // An empty category is null, not a division by zero.
  const one = scoreScienceQA(PROBLEMS, PREDS, ['p2']);
  t.equal(one.categories.NAT, null);
  t.equal(one.imgAccuracy, null);
  // 2023 mode: unusable answers become seeded random choices.
  const r1 = scoreScienceQA(PROBLEMS, PREDS, SPLITS.test, { onInvalid: 'random', seed: 5 });
  const r2 = scoreScienceQA(PROBLEMS, PREDS, SPLITS.test, { onInvalid: 'random', seed: 5 });
  t.same(r1.results, r2.results);
  for (const id of ['p3', 'p5', 'p7']) t.ok(r1.results[id] >= 0 && r1.results[id] < PROBLEMS[id].choices.length, `${id} drawn in range`);
  t.throws(() => scoreScienceQA(PROBLEMS, PREDS, ['nope']), /problem nope/);
});

// ---------------------------------------------------------------------------------------------------------
// LLaVA-Bench

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
const WILD_CTX: WildContext = { image: '001.jpg', caption: 'A bowl of ramen with a soft-boiled egg.' };

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

interface Mock {
  url: string;
  requests: Array<{ headers: http.IncomingHttpHeaders; body: Record<string, unknown> }>;
  maxInFlight: number;
  close(): Promise<void>;
}

/** A chat-completions mock: `reply(n, body)` gives [status, content or error text, headers?] for request n. */
async function mockServer(
  reply: (n: number, body: Record<string, unknown>) => [number, string, Record<string, string>?] | Promise<[number, string, Record<string, string>?]>,
): Promise<Mock> {
  const m = { requests: [] as Mock['requests'], maxInFlight: 0 };
  let inFlight = 0;
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', async () => {
      inFlight++;
      m.maxInFlight = Math.max(m.maxInFlight, inFlight);
      const body = JSON.parse(data);
      const n = m.requests.length;
      m.requests.push({ headers: req.headers, body });
      const [status, text, headers] = await reply(n, body);
      inFlight--;
      res.writeHead(status, { 'content-type': 'application/json', ...(headers ?? {}) });
      const content = text === '<null>' ? null : text;
      res.end(
        status === 200 ? JSON.stringify({ choices: [{ message: { role: 'assistant', content } }] }) : JSON.stringify({ error: { message: text } }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    get requests() {
      return m.requests;
    },
    get maxInFlight() {
      return m.maxInFlight;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

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

// ---------------------------------------------------------------------------------------------------------
// Answer generation on the tiny fixture

let em: EvalModel;
t.before(() => {
  em = loadEvalModel(FIX);
});
t.teardown(() => em?.dispose());

t.test('generateAnswers (bench): greedy answers equal the fixture reference; resumable', async (t) => {
  const ref = SafetensorsFile.open(path.join(FIX, 'reference.safetensors'));
  const r = ref.read('greedy.output_ids');
  const expected = Array.from(new BigInt64Array(r.data.buffer, r.data.byteOffset, r.data.byteLength / 8), Number);
  ref.close();
  t.equal(em.template, 'llava_hf');
  t.equal(em.modelId, 'tiny-llava');
  const questions: BenchQuestion[] = [
    { question_id: 0, image: 'image0.png', text: 'What is unusual about this image?', category: 'complex' },
    { question_id: 1, image: 'image1.png', text: 'Describe the image concisely.', category: 'detail' },
  ];
  const out = tmpFile('answers.jsonl');
  const o = {
    ...em,
    set: { kind: 'bench' as const, questions },
    imageFolder: FIX,
    answersFile: out,
    template: 'llava_v1',
    maxNewTokens: expected.length,
    progress: 'none' as const,
    log: () => {},
  };
  t.same(await generateAnswers(o), { total: 2, skipped: 0, written: 2 });
  const lines = readLines(out);
  t.same(Object.keys(lines[0]), ['question_id', 'prompt', 'text', 'answer_id', 'model_id', 'metadata']);
  t.same([lines[0].question_id, lines[0].prompt, lines[0].model_id, lines[0].metadata], [0, 'What is unusual about this image?', 'tiny-llava', {}]);
  // The fixture's greedy reference used this very prompt (llava_v1 template, image0).
  t.equal(lines[0].text, em.tokenizer.decode(expected).trim(), 'greedy answer = transformers reference');
  t.match(lines[0].answer_id, /^[2-9A-HJ-NP-Za-km-z]{22}$/);
  t.not(lines[0].answer_id, lines[1].answer_id);
  const before = fs.readFileSync(out, 'utf8');
  t.same(await generateAnswers(o), { total: 2, skipped: 2, written: 0 }, 'second run adds nothing');
  t.equal(fs.readFileSync(out, 'utf8'), before);
  // Killed mid-line: the partial answer is dropped and regenerated (greedy: the same text).
  fs.writeFileSync(out, before.split('\n')[0] + '\n' + before.split('\n')[1].slice(0, 15));
  t.same(await generateAnswers(o), { total: 2, skipped: 1, written: 1 });
  t.same(
    readLines(out).map((l) => l.text),
    [lines[0].text, lines[1].text],
  );
  // Chunks: the reference's get_chunk.
  t.same(getChunk([1, 2, 3, 4, 5], 2, 1), [4, 5]);
  t.same(getChunk([1, 2, 3], 4, 3), []);
  const c1 = tmpFile('chunk.jsonl');
  await generateAnswers({ ...o, answersFile: c1, numChunks: 2, chunkIdx: 1 });
  t.same(
    readLines(c1).map((l) => l.question_id),
    [1],
  );
  await t.rejects(
    generateAnswers({ ...o, answersFile: tmpFile('bad.jsonl'), set: { kind: 'bench', questions: [{ ...questions[0], image: 'missing.png' }] } }),
    /question 0: image file .*missing\.png not found/,
  );
  await t.rejects(generateAnswers({ ...o, answersFile: tmpFile('bad.jsonl'), template: 'nope' }), /unknown template 'nope'/);
  t.equal(shortUuid().length, 22);
});

t.test('generateAnswers (sqa): prompts recorded as the reference does, text-only questions, sampling seeds', async (t) => {
  const questions = [
    {
      id: '5',
      image: 'image0.png',
      conversations: [
        { from: 'human', value: 'Context: N/A\nQuestion: Which?\nOptions: (A) x (B) y\n<image>' },
        { from: 'gpt', value: 'The answer is A.' },
      ],
    },
    { id: '6', conversations: [{ from: 'human', value: 'Question: Why?\nOptions: (A) x (B) y' }] },
  ];
  const out = tmpFile('sqa.jsonl');
  const o = {
    ...em,
    set: { kind: 'sqa' as const, questions },
    imageFolder: FIX,
    answersFile: out,
    maxNewTokens: 4,
    singlePredPrompt: true,
    progress: 'none' as const,
    log: () => {},
  };
  t.same(await generateAnswers(o), { total: 2, skipped: 0, written: 2 });
  const lines = readLines(out);
  t.same(
    lines.map((l) => l.question_id),
    ['5', '6'],
  );
  t.equal(
    lines[0].prompt,
    "<image>\nContext: N/A\nQuestion: Which?\nOptions: (A) x (B) y\nAnswer with the option's letter from the given choices directly.",
  );
  t.equal(lines[1].prompt, "Question: Why?\nOptions: (A) x (B) y\nAnswer with the option's letter from the given choices directly.");
  t.ok(lines.every((l) => typeof l.text === 'string' && l.text.length > 0));
  // Sampling is reproducible per question (seed + index).
  const s1 = tmpFile('s1.jsonl');
  const s2 = tmpFile('s2.jsonl');
  await generateAnswers({ ...o, answersFile: s1, temperature: 1, seed: 11 });
  await generateAnswers({ ...o, answersFile: s2, temperature: 1, seed: 11 });
  t.same(
    readLines(s1).map((l) => l.text),
    readLines(s2).map((l) => l.text),
  );
  // The v0 answer prompter appends the second pass.
  const ap = tmpFile('ap.jsonl');
  await generateAnswers({ ...o, answersFile: ap, answerPrompter: true });
  t.ok(readLines(ap).every((l, i) => l.text.startsWith(lines[i].text + '\n The answer is ')));
});

t.test('prepareJsonlOutput: creates, cuts a partial last line, refuses a broken middle line', async (t) => {
  const f = path.join(tmp, 'sub', 'dir', 'x.jsonl');
  t.same(prepareJsonlOutput(f), []);
  t.ok(fs.existsSync(f));
  fs.writeFileSync(f, '{"a":1}\n{"a":');
  t.same(prepareJsonlOutput(f), [{ a: 1 }]);
  t.equal(fs.readFileSync(f, 'utf8'), '{"a":1}\n');
  fs.writeFileSync(f, '{"a":1}\nnot json\n{"a":2}\n');
  t.throws(() => prepareJsonlOutput(f), /line 2 is not valid JSON/);
});

// ---------------------------------------------------------------------------------------------------------
// CLI

function cli(env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const codes: number[] = [];
  const program = new Command('llava').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerEvalCommands(program, { out: (s) => out.push(s), err: (s) => err.push(s), setExitCode: (c) => codes.push(c), env });
  return {
    run: (...args: string[]) => program.parseAsync(['eval', ...args], { from: 'user' }),
    get out() {
      return out.join('');
    },
    get err() {
      return err.join('');
    },
    codes,
  };
}

t.test('eval CLI: every command', async (t) => {
  // ScienceQA folder
  const base = path.join(tmp, 'scienceqa');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'problems.json'), JSON.stringify(PROBLEMS));
  fs.writeFileSync(path.join(base, 'pid_splits.json'), JSON.stringify(SPLITS));

  let c = cli();
  await c.run('sqa-convert', '--base-dir', base, '--split', 'test', '--prompt-format', 'CQM-A');
  t.same(c.codes, [], c.err);
  const conv = path.join(base, 'llava_test_CQM-A.json');
  t.match(c.out, /Number of samples: 7/);
  t.same(JSON.parse(fs.readFileSync(conv, 'utf8')), convertScienceQA(PROBLEMS, SPLITS, 'test', { input: 'CQM', output: 'A' }));
  t.match(fs.readFileSync(conv, 'utf8'), /^\[\n {2}\{\n {4}"id": "p1",\n {4}"image": "p1\/i\.png",/, 'indent-2 layout');

  const answers = tmpFile('sqa_answers.jsonl');
  fs.writeFileSync(answers, PREDS.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const resultJson = tmpFile('sqa_result.json');
  const analysisJson = tmpFile('sqa_analysis.json');
  c = cli();
  await c.run('sqa-score', '--base-dir', base, '--result-file', answers, '--output-result', resultJson, '--output-file', analysisJson);
  t.same(c.codes, [], c.err);
  t.match(c.out, /^Total: 7, Correct: 3, Accuracy: 42\.86%, IMG-Accuracy: 100\.00%\n/);
  t.same(JSON.parse(fs.readFileSync(resultJson, 'utf8')).results, { p1: 0, p2: 1, p3: -1, p4: 0, p5: -1, p6: 3, p7: -1 });
  t.equal(JSON.parse(fs.readFileSync(analysisJson, 'utf8')).correct.length, 3);
  c = cli();
  await c.run('sqa-score', '--base-dir', base, '--result-file', answers, '--json');
  t.equal(JSON.parse(c.out).categories['G1-6'], 50);

  // sqa-answer on the fixture: ScienceQA records whose images sit in the fixture folder.
  const qfile = tmpFile('sqa_questions.json');
  fs.writeFileSync(
    qfile,
    JSON.stringify([
      {
        id: 'a',
        image: 'image1.png',
        conversations: [
          { from: 'human', value: 'Question: What?\nOptions: (A) x (B) y\n<image>' },
          { from: 'gpt', value: 'A' },
        ],
      },
      {
        id: 'b',
        conversations: [
          { from: 'human', value: 'Question: Why?' },
          { from: 'gpt', value: 'B' },
        ],
      },
    ]),
  );
  const sqaOut = tmpFile('sqa_out.jsonl');
  const answerArgs = ['--model', FIX, '--image-folder', FIX, '--max-new-tokens', '3', '--progress', 'none'];
  c = cli();
  await c.run('sqa-answer', ...answerArgs, '--questions', qfile, '--answers-file', sqaOut, '--single-pred-prompt');
  t.same(c.codes, [], c.err);
  t.match(c.out, /done: 2 answered, 0 already there, 2 in total/);
  t.same(
    readLines(sqaOut).map((l) => l.question_id),
    ['a', 'b'],
  );
  c = cli();
  await c.run('sqa-answer', ...answerArgs, '--questions', qfile, '--answers-file', sqaOut, '--single-pred-prompt');
  t.match(c.out, /done: 0 answered, 2 already there/);

  // bench-answer
  const bq = tmpFile('questions.jsonl');
  fs.writeFileSync(
    bq,
    [
      { question_id: 0, image: 'image0.png', text: 'What is this?', category: 'conv' },
      { question_id: 1, image: 'image1.png', text: 'Describe it.', category: 'detail' },
    ]
      .map((q) => JSON.stringify(q))
      .join('\n') + '\n',
  );
  const bOut = tmpFile('bench_answers.jsonl');
  c = cli();
  await c.run('bench-answer', ...answerArgs, '--questions', bq, '--answers-file', bOut, '--template', 'vicuna_v1');
  t.same(c.codes, [], c.err);
  t.match(c.out, /template vicuna_v1/);
  t.same(
    readLines(bOut).map((l) => [l.question_id, l.prompt]),
    [
      [0, 'What is this?'],
      [1, 'Describe it.'],
    ],
  );

  // bench-review against the mock server
  const ctx = tmpFile('context.jsonl');
  fs.writeFileSync(ctx, JSON.stringify({ ...WILD_CTX, image: 'image0.png' }) + '\n' + JSON.stringify({ ...WILD_CTX, image: 'image1.png' }) + '\n');
  const refFile = tmpFile('answers_gpt4.jsonl');
  fs.writeFileSync(
    refFile,
    readLines(bOut)
      .map((a) => JSON.stringify({ ...a, text: 'reference', answer_id: `g${a.question_id}` }))
      .join('\n') + '\n',
  );
  const m = await mockServer((n) => (n === 0 ? [502, 'bad gateway'] : [200, n === 1 ? '8 6\nok' : '10 5\nok']));
  t.teardown(() => m.close());
  fs.mkdirSync(path.join(tmp, 'reviews'));
  const reviews = path.join(tmp, 'reviews', 'review_wild.jsonl');
  const reviewArgs = [
    '--benchmark',
    'wild',
    '--questions',
    bq,
    '--context',
    ctx,
    '--reference',
    refFile,
    '--answers',
    bOut,
    '--output',
    reviews,
    '--concurrency',
    '1',
    '--progress',
    'none',
  ];
  c = cli({ OPENAI_API_KEY: 'sk-env', OPENAI_BASE_URL: m.url });
  await c.run('bench-review', ...reviewArgs);
  t.same(c.codes, [], c.err);
  t.match(c.err, /retry 1 in .*HTTP 502: bad gateway/);
  t.match(c.out, /done: 2 reviewed, 0 already there, 2 in total/);
  t.equal(m.requests[0].headers.authorization, 'Bearer sk-env');
  t.same(
    readLines(reviews).map((l) => [l.category, l.tuple, l.answer1_id]),
    [
      ['llava_bench_conv', [8, 6], 'g0'],
      ['llava_bench_detail', [10, 5], 'g1'],
    ],
  );
  c = cli();
  await c.run('bench-review', ...reviewArgs.slice(0, -4), '--output', tmpFile('r.jsonl'), '--progress', 'none');
  t.same(c.codes, [1], 'no key: exit code 1');
  t.match(c.err, /^llava eval bench-review: error: \[openai\] no API key: set OPENAI_API_KEY or pass --api-key/);
  c = cli();
  await c.run('bench-review', ...reviewArgs, '--api-key', 'k', '--base-url', m.url);
  t.match(c.out, /2 already there/, 'resumed: nothing left');

  // bench-summary
  c = cli();
  await c.run('bench-summary', reviews);
  t.same(c.codes, [], c.err);
  t.equal(
    c.out,
    'review_wild\nall 61.1 90.0 55.0\nllava_bench_conv 75.0 80.0 60.0\nllava_bench_detail 50.0 100.0 50.0\n=================================\n',
  );
  c = cli();
  await c.run('bench-summary', '--dir', path.dirname(reviews), '--json', '--ignore', '1');
  const js = JSON.parse(c.out);
  t.same(Object.keys(js), ['review_wild']);
  t.same(
    js.review_wild.map((r: { category: string }) => r.category),
    ['all', 'llava_bench_conv'],
    '--ignore 1 drops the detail review',
  );
  c = cli();
  await c.run('bench-summary', '--dir', path.join(tmp, 'scienceqa'));
  t.same(c.codes, [1]);
  t.match(c.err, /no review files/);

  // Errors: clear one-line messages and exit code 1; commander usage errors throw under exitOverride.
  const bad: [string[], RegExp][] = [
    [['sqa-score', '--base-dir', base, '--result-file', path.join(tmp, 'nope.jsonl')], /answers file .*nope\.jsonl not found/],
    [['sqa-score', '--base-dir', base, '--result-file', answers, '--split', 'dev'], /split 'dev' is not in pid_splits\.json/],
    [['sqa-convert', '--base-dir', base, '--prompt-format', 'QCM'], /must look like INPUT-OUTPUT/],
    [['bench-answer', ...answerArgs, '--questions', bq, '--answers-file', tmpFile('a.jsonl'), '--template', 'bogus'], /unknown template 'bogus'/],
    [
      ['bench-answer', ...answerArgs, '--questions', bq, '--answers-file', tmpFile('a.jsonl'), '--num-chunks', '2', '--chunk-idx', '2'],
      /--chunk-idx 2 must be below --num-chunks 2/,
    ],
    [
      ['sqa-answer', '--model', path.join(tmp, 'nomodel'), '--image-folder', FIX, '--questions', qfile, '--answers-file', tmpFile('a.jsonl')],
      /model directory .* not found/,
    ],
    [['sqa-answer', ...answerArgs, '--questions', bq, '--answers-file', tmpFile('a.jsonl')], /malformed JSON/],
  ];
  for (const [args, re] of bad) {
    c = cli();
    await c.run(...args);
    t.same(c.codes, [1], `exit code: ${args[0]} ${re}`);
    t.match(c.err, re);
    t.match(c.err, new RegExp(`^llava eval ${args[0]}: error: `));
  }
  c = cli();
  await t.rejects(c.run('bench-review', '--benchmark', 'mars'), CommanderError);
  t.match(c.err, /argument 'mars' is invalid/);
  c = cli();
  await t.rejects(c.run('bench-answer', '--model', FIX), CommanderError);
  t.match(c.err, /required option/);
  c = cli();
  await t.rejects(c.run('bench-answer', ...answerArgs, '--questions', bq, '--answers-file', 'x', '--temperature', 'hot'), CommanderError);
  t.match(c.err, /'--temperature <t>' argument 'hot' is invalid/);
  c = cli();
  await t.rejects(c.run('--help'), CommanderError);
  for (const cmd of ['sqa-convert', 'sqa-answer', 'sqa-score', 'bench-answer', 'bench-review', 'bench-summary']) t.match(c.out, cmd);
});
