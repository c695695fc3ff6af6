// scienceqa_gpt4.test.ts — the paper's ScienceQA ensembles with text-only GPT-4 (lib/app/eval/scienceqa_gpt4.ts):
// complement and GPT-4-as-judge counts on a hand-made set whose every count is worked out in fixtures.ts, the
// scripts' regex-only letter rule, the order and seeding of the random choices, and bad inputs.
import t from 'tap';
import { evaluation as E } from '../../../lib';
import { mulberry32 } from '../../../lib/app/util/random';
import { G4_GPT4, G4_OURS, G4_PROBLEMS, G4_REQUERY, G4_SPLITS, prob } from './fixtures';

t.test('complement: GPT-4, or the model where GPT-4 names no letter', async (t) => {
  const s = E.scoreScienceQAWithGpt4(G4_PROBLEMS, G4_SPLITS.test, G4_OURS, G4_GPT4);
  t.equal(s.mode, 'complement');
  t.equal(s.total, 5, 'g6 has no GPT-4 answer');
  t.equal(s.skipped, 1);
  t.equal(s.ours, 3, 'the model alone: g1 g2 g4');
  t.equal(s.gpt4, 3, 'GPT-4 alone: g2 g3, and g4 by its random (one-choice) index');
  t.equal(s.gpt4Failed, 1);
  t.equal(s.complement, 3, 'g2 g3 from GPT-4, g4 from the model');
  t.equal(s.upperBound, 4, 'g1 g2 g3 g4');
  t.equal(s.judge, null);
  t.same(s.results, { g1: 1, g2: 1, g3: 2, g4: 0, g5: 0 });
  const r = E.sqaGpt4ResultJson(s);
  t.same(r, { acc: 60, correct: 3, count: 5, results: s.results, outputs: {} });
  const report = E.formatSqaGpt4Report(s);
  t.match(report, /^Total: 5, Our-Correct: 3, Accuracy: 60\.00%$/m);
  t.match(report, /^Total: 5, GPT-4 NO-ANS \(RANDOM\): 1, Percentage: 20\.00%$/m);
  t.match(report, /^Total: 5, GPT-4-OursVisual-Correct \(complement\): 3, Accuracy: 60\.00%$/m);
  t.match(report, /^Total: 5, Correct upper: 4, Accuracy: 80\.00%$/m);
  t.match(report, /1 problems of the split left out/);
  t.notMatch(report, /Requery/);
});

t.test('GPT-4 as judge: the requery answer, or the model where it names none', async (t) => {
  const s = E.scoreScienceQAWithGpt4(G4_PROBLEMS, G4_SPLITS.both, G4_OURS, G4_GPT4, { requery: G4_REQUERY });
  t.equal(s.mode, 'judge');
  t.equal(s.total, 5);
  t.equal(s.judge, 4, 'g1 g4 g5 from the requery, g2 from the model');
  t.equal(s.missingRequery, 1, 'g2');
  t.equal(s.complement, 3, 'complement counted alongside');
  t.equal(s.upperBound, 4);
  t.same(s.results, { g1: 0, g2: 1, g3: 0, g4: 0, g5: 1 });
  t.same(E.sqaGpt4ResultJson(s), { acc: 80, correct: 4, count: 5, results: s.results, outputs: {} });
  t.match(E.formatSqaGpt4Report(s), /^Total: 5, Requery-Correct \(GPT-4 as judge\): 4, Accuracy: 80\.00%$/m);
  t.throws(
    () => E.scoreScienceQAWithGpt4(G4_PROBLEMS, G4_SPLITS.test, G4_OURS, G4_GPT4, { requery: G4_REQUERY }),
    /^\[eval\] ScienceQA problem g6 of the split has no answer from GPT-4$/,
    'the judge needs both answers for the whole split, as the script asserts',
  );
});

t.test("the scripts' letter rule is 'The answer is X.' alone", async (t) => {
  t.equal(E.sqaRegexLetter('The answer is C.'), 'C');
  t.equal(E.sqaRegexLetter('B'), 'FAILED', 'a bare letter, which sqa-score accepts');
  t.equal(E.extractSqaLetter('B').letter, 'B');
  t.equal(E.sqaRegexLetter('B. because'), 'FAILED');
  t.equal(E.sqaRegexLetter('The answer is A. The answer is A.'), 'FAILED', 'twice');
  t.equal(E.sqaRegexLetter('The answer is A\n'), 'FAILED', 'the any-character must not be a newline');
  // With a bare letter the model's side is random, not its letter.
  const probs = { x: prob({ answer: 0, choices: ['a', 'b', 'c', 'd', 'e'] }) };
  const seedDrawing = [0, 1, 2, 3, 4, 5, 6, 7].find((seed) => Math.floor(mulberry32(seed)() * 5) !== 0)!;
  const s = E.scoreScienceQAWithGpt4(probs, ['x'], [{ question_id: 'x', prompt: '', text: 'A' }], { x: '?' }, { seed: seedDrawing });
  t.equal(s.ours, 0, 'bare "A" on a problem whose answer is A scored by a random draw that missed');
});

t.test('random choices: seeded, in the order model, GPT-4, requery, drawn even when unused', async (t) => {
  const probs = { a: prob({ answer: 0, choices: ['a', 'b', 'c', 'd', 'e'] }), b: prob({ answer: 0, choices: ['a', 'b', 'c', 'd', 'e'] }) };
  const ours = [
    { question_id: 'a', prompt: '', text: '?' },
    { question_id: 'b', prompt: '', text: '?' },
  ];
  const gpt4 = { a: '?', b: '?' };
  const requery = [
    { question_id: 'a', prompt: '', text: '?' },
    { question_id: 'b', prompt: '', text: '?' },
  ];
  for (const seed of [1, 2, 3]) {
    const r = mulberry32(seed);
    const d = Array.from({ length: 6 }, () => Math.floor(r() * 5));
    const judge = E.scoreScienceQAWithGpt4(probs, ['a', 'b'], ours, gpt4, { requery, seed });
    // a: model d0, GPT-4 d1, requery d2 (failed: the model's d0 counts); b: model d3.
    t.same(judge.results, { a: d[0], b: d[3] }, `judge, seed ${seed}`);
    t.equal(judge.gpt4, (d[1] === 0 ? 1 : 0) + (d[4] === 0 ? 1 : 0), `GPT-4's random indices, seed ${seed}`);
    const comp = E.scoreScienceQAWithGpt4(probs, ['a', 'b'], ours, gpt4, { seed });
    t.same(comp.results, { a: d[0], b: d[2] }, `complement draws no requery, seed ${seed}`);
    t.same(E.scoreScienceQAWithGpt4(probs, ['a', 'b'], ours, gpt4, { seed }).results, comp.results, 'reproducible');
  }
});

t.test('bad inputs', async (t) => {
  t.throws(() => E.gpt4Outputs({ acc: 1 }, 'gpt4.json'), /^\[eval\] gpt4\.json: needs an "outputs" object/);
  t.throws(() => E.gpt4Outputs([], 'gpt4.json'), /needs an "outputs" object/);
  t.throws(() => E.gpt4Outputs({ outputs: { 1: 3 } }, 'gpt4.json'), /outputs\["1"\] is not a string/);
  t.same(E.gpt4Outputs({ outputs: { 1: 'x' } }), { 1: 'x' });
  t.throws(() => E.scoreScienceQAWithGpt4(G4_PROBLEMS, ['zz'], G4_OURS, G4_GPT4), /ScienceQA problem zz is not in problems\.json/);
  t.throws(
    () => E.scoreScienceQAWithGpt4(G4_PROBLEMS, [], G4_OURS, G4_GPT4, { requery_result: [] } as never),
    /unknown option 'requery_result' \(did you mean 'requery'\?\)/,
  );
  const empty = E.scoreScienceQAWithGpt4(G4_PROBLEMS, [], G4_OURS, G4_GPT4);
  t.equal(empty.total, 0);
  t.equal(E.sqaGpt4ResultJson(empty).acc, null, 'no problems: no accuracy, not NaN');
  t.match(E.formatSqaGpt4Report(empty), /Accuracy: n\/a%/);
});
