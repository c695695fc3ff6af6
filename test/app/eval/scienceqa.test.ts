// ScienceQA (lib/app/eval/scienceqa.ts; docs/reference.md §6.3, §8): answer extraction rule by rule, the
// model_vqa_science.py prompts, conversion to training records in every layout, and accuracy, IMG-accuracy
// and the official categories on a hand-made problem set.
import t from 'tap';
import { parseDataset } from '../../../lib/app/processing/data';
import {
  convertScienceQA,
  extractSqaAnswer,
  formatSqaReport,
  parseSqaFormat,
  pyJsonDump,
  scienceQACategoryAccuracy,
  scoreScienceQA,
  sqaConvertedFileName,
  sqaPrompt,
  sqaResultJson,
  type SqaProblems,
} from '../../../lib/app/eval/index';
import { mulberry32 } from '../../../lib/app/util/random';
import { PREDS, PROBLEMS, SPLITS, prob } from './fixtures';

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
