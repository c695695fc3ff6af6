// scienceqa_gpt4.ts — the paper's two ScienceQA ensembles of LLaVA with text-only GPT-4 (§5.2 of the paper;
// the reference's eval_science_qa_gpt4.py and eval_science_qa_gpt4_requery.py), as scoring over answers
// already written:
//
// - complement: GPT-4's answer, or LLaVA's where GPT-4 names no letter (paper: 90.97%);
// - judge: where the two disagreed, GPT-4 was asked again with both answers in view; its second answer
//   counts, or LLaVA's where that second answer names no letter (paper: 92.53%). The requery prompt is not
//   in the reference repository, so the second answers come as a file (JSONL lines {question_id, text},
//   as a model's answers are written); the requests themselves are not made here.
//
// Reference behaviour kept, and where it differs from `eval sqa-score`:
// - a letter is read by the "The answer is X." rule alone (not the bare-letter or "X. " rules);
// - an unparseable letter, or one beyond the problem's choices, becomes a uniformly random choice. The
//   scripts draw from Python's unseeded `random`; here the draws come from mulberry32(seed), made in the
//   scripts' order (LLaVA's, GPT-4's, then the requery's, per problem), so a run is reproducible;
// - complement leaves out problems that either side did not answer; judge requires both for every problem
//   of the split, and a problem without a requery answer takes LLaVA's.
import { checkOptions, optionKeys } from '../../options';
import { mulberry32 } from '../util/random';
import { pyFixed } from '../util/pyformat';
import { EvalError, type AnswerRecord } from './common';
import { SQA_OPTIONS, sqaRegexLetter, type SqaProblems } from './scienceqa';

/** GPT-4's text-only answers: problem id → its output text (the `outputs` field of its result file). */
export type Gpt4Outputs = Readonly<Record<string, string>>;

export interface SqaGpt4Options {
  /** The requery answers: given, the judge ensemble is scored; absent, the complement one. */
  requery?: readonly AnswerRecord[];
  /** Seed of the random choices for unusable letters (default 0). */
  seed?: number;
}
const GPT4_KEYS = optionKeys<SqaGpt4Options>({ requery: true, seed: true });

export interface SqaGpt4Score {
  mode: 'complement' | 'judge';
  /** Problems scored (complement: those both sides answered). */
  total: number;
  /** Split problems left out because LLaVA or GPT-4 gave no answer (complement only; judge refuses). */
  skipped: number;
  /** LLaVA alone, GPT-4 alone, and GPT-4 with LLaVA's answer where GPT-4 named no letter (complement). */
  ours: number;
  gpt4: number;
  complement: number;
  /** Problems where GPT-4's output named no letter. */
  gpt4Failed: number;
  /** The judge ensemble's correct count (judge only) and the problems without a requery answer. */
  judge: number | null;
  missingRequery: number;
  /** Either LLaVA or GPT-4 right. */
  upperBound: number;
  /** The ensemble's predicted choice index per problem (complement's or the judge's). */
  results: Record<string, number>;
}

/** Reads `outputs` of a GPT-4 result JSON ({outputs: {pid: text}}), checking its shape. */
export function gpt4Outputs(json: unknown, source = 'GPT-4 result'): Gpt4Outputs {
  const outputs = json !== null && typeof json === 'object' ? (json as { outputs?: unknown }).outputs : undefined;
  if (outputs === null || typeof outputs !== 'object' || Array.isArray(outputs))
    throw new EvalError(`${source}: needs an "outputs" object mapping problem ids to GPT-4's answers`);
  for (const [id, text] of Object.entries(outputs)) if (typeof text !== 'string') throw new EvalError(`${source}: outputs["${id}"] is not a string`);
  return outputs as Gpt4Outputs;
}

/** Scores the complement ensemble, or the judge ensemble when `opts.requery` is given. */
export function scoreScienceQAWithGpt4(
  problems: SqaProblems,
  splitIds: readonly string[],
  ours: readonly AnswerRecord[],
  gpt4: Gpt4Outputs,
  opts: SqaGpt4Options = {},
): SqaGpt4Score {
  checkOptions('scoreScienceQAWithGpt4', opts, GPT4_KEYS);
  const judging = opts.requery !== undefined;
  const byId = (recs: readonly AnswerRecord[]): Map<string, string> => new Map(recs.map((r) => [String(r.question_id), r.text]));
  const mine = byId(ours);
  const requery = byId(opts.requery ?? []);
  const rng = mulberry32(opts.seed ?? 0);
  const index = (letter: string, n: number): number => {
    const i = SQA_OPTIONS.slice(0, n).indexOf(letter);
    return i >= 0 ? i : Math.min(n - 1, Math.floor(rng() * n));
  };
  const s: SqaGpt4Score = {
    mode: judging ? 'judge' : 'complement',
    total: 0,
    skipped: 0,
    ours: 0,
    gpt4: 0,
    complement: 0,
    gpt4Failed: 0,
    judge: judging ? 0 : null,
    missingRequery: 0,
    upperBound: 0,
    results: {},
  };
  for (const id of new Set(splitIds)) {
    const prob = problems[id];
    if (!prob) throw new EvalError(`ScienceQA problem ${id} is not in problems.json`);
    const ourText = mine.get(id);
    const gptText = Object.prototype.hasOwnProperty.call(gpt4, id) ? gpt4[id] : undefined;
    if (ourText === undefined || gptText === undefined) {
      const who = ourText === undefined ? 'the model' : 'GPT-4';
      if (judging) throw new EvalError(`ScienceQA problem ${id} of the split has no answer from ${who}`);
      s.skipped++;
      continue;
    }
    const n = prob.choices.length;
    const gptLetter = sqaRegexLetter(gptText);
    const ourIdx = index(sqaRegexLetter(ourText), n);
    const gptIdx = index(gptLetter, n);
    const right = (i: number): number => (i === prob.answer ? 1 : 0);
    s.total++;
    s.ours += right(ourIdx);
    s.gpt4 += right(gptIdx);
    if (gptLetter === 'FAILED') s.gpt4Failed++;
    const complementIdx = gptLetter === 'FAILED' ? ourIdx : gptIdx;
    s.complement += right(complementIdx);
    // The complement script tests GPT-4's side after putting LLaVA's answer in for a failed one; the requery
    // script tests GPT-4's own (possibly random) index.
    s.upperBound += right(ourIdx) || right(judging ? gptIdx : complementIdx);
    s.results[id] = complementIdx;
    if (judging) {
      const text = requery.get(id);
      if (text === undefined) s.missingRequery++;
      const letter = sqaRegexLetter(text ?? 'MISSING');
      const requeryIdx = index(letter, n); // drawn even when unused, as the script does
      const judged = letter === 'FAILED' ? ourIdx : requeryIdx;
      s.judge! += right(judged);
      s.results[id] = judged;
    }
  }
  return s;
}

const pct = (k: number, n: number): string => (n > 0 ? pyFixed((k / n) * 100, 2) : 'n/a');

/** The report lines, in the reference scripts' wording. */
export function formatSqaGpt4Report(s: SqaGpt4Score): string {
  const n = s.total;
  const line = (what: string, k: number): string => `Total: ${n}, ${what}: ${k}, Accuracy: ${pct(k, n)}%`;
  const lines = [
    line('Our-Correct', s.ours),
    line('GPT-4-Correct', s.gpt4),
    `Total: ${n}, GPT-4 NO-ANS (RANDOM): ${s.gpt4Failed}, Percentage: ${pct(s.gpt4Failed, n)}%`,
    line('GPT-4-OursVisual-Correct (complement)', s.complement),
  ];
  if (s.judge !== null) lines.push(line('Requery-Correct (GPT-4 as judge)', s.judge));
  lines.push(line('Correct upper', s.upperBound));
  if (s.skipped) lines.push(`(${s.skipped} problems of the split left out: the model or GPT-4 did not answer them)`);
  if (s.missingRequery) lines.push(`(${s.missingRequery} problems had no requery answer and took the model's)`);
  return lines.join('\n');
}

/** The result JSON ({acc, correct, count, results, outputs}) of the ensemble, as the requery script writes it. */
export function sqaGpt4ResultJson(s: SqaGpt4Score): {
  acc: number | null;
  correct: number;
  count: number;
  results: Record<string, number>;
  outputs: Record<string, string>;
} {
  const correct = s.judge ?? s.complement;
  return { acc: s.total > 0 ? (correct / s.total) * 100 : null, correct, count: s.total, results: s.results, outputs: {} };
}
