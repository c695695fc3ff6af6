// scienceqa.ts — the ScienceQA benchmark (docs/reference.md §6.3, §8.2): problems.json → LLaVA records
// (convert_sqa_to_llava.py), the question prompt a model is asked (model_vqa_science.py), the answer
// letter read back from its reply, accuracy, IMG-accuracy and the official per-category table. Plain
// TypeScript, no model: answer generation is answer.ts, the commands are cli/eval.ts.
//
// Reference behaviours kept on purpose (each is documented where it is implemented):
// - Extraction follows HEAD `eval_science_qa.py`: exact letter, then "X. " prefix, then the regex
//   `The answer is ([A-Z]).` whose final dot is an unescaped any-character and which must match exactly once.
//   Anything else is FAILED; FAILED or a letter beyond the question's choices is index −1 (wrong). The 2023
//   script's random fallback is available as `onInvalid: 'random'` with a seeded generator.
// - IMG-Accuracy is over predictions whose *prompt* contains `<image>` (a missing prediction has the prompt
//   "Unknown" and therefore never counts as an image question), as the reference computes it.
// - Answers are matched to problems by question_id, not zipped line by line.
import { type Sample } from '../processing/data';
import { DEFAULT_IMAGE_TOKEN } from '../../constants';
import { mulberry32 } from '../util/random';
import { pyFixed, pyStrip } from '../util/pyformat';
import { EvalError, readJson, type AnswerRecord } from './common';
import { checkOptions, optionKeys } from '../../options';

// ---------------------------------------------------------------------------------------------------------
// ScienceQA: records and conversion (docs/reference.md §6.3)

/** One problem of ScienceQA `problems.json` (keyed by problem id). */
export interface SqaProblem {
  question: string;
  choices: string[];
  /** Index of the correct choice. */
  answer: number;
  hint: string;
  /** Image file name inside the problem's folder, or null. */
  image: string | null;
  /** "natural science" | "social science" | "language science". */
  subject: string;
  /** "grade1" … "grade12". */
  grade: string;
  split: string;
  lecture?: string;
  solution?: string;
  caption?: string;
  [key: string]: unknown;
}

export type SqaProblems = Record<string, SqaProblem>;
/** `pid_splits.json`: split name → problem ids. */
export type SqaPidSplits = Record<string, string[]>;

/** The answer letters (`--options` default of the reference scripts). */
export const SQA_OPTIONS: readonly string[] = ['A', 'B', 'C', 'D', 'E'];

export type SqaInputFormat = 'QCM' | 'CQM' | 'QCML' | 'QCME' | 'QCMLE' | 'QCLM' | 'QCEM' | 'QCLEM';
export type SqaOutputFormat = 'A' | 'AL' | 'AE' | 'ALE' | 'AEL' | 'LA' | 'EA' | 'LEA' | 'ELA' | 'LEPA';
export const SQA_INPUT_FORMATS: readonly SqaInputFormat[] = ['QCM', 'CQM', 'QCML', 'QCME', 'QCMLE', 'QCLM', 'QCEM', 'QCLEM'];
export const SQA_OUTPUT_FORMATS: readonly SqaOutputFormat[] = ['A', 'AL', 'AE', 'ALE', 'AEL', 'LA', 'EA', 'LEA', 'ELA', 'LEPA'];

export interface SqaConvertOptions {
  /** How the question is laid out (default 'QCM'); 'CQM' puts the context first (v1.5 eval file). */
  input?: SqaInputFormat;
  /** What the answer turn contains (default 'LEA', the training format; 'A' is the bare answer). */
  output?: SqaOutputFormat;
}

/** Splits a reference-style prompt format such as "QCM-LEA" into its two halves, validated. */
export function parseSqaFormat(format: string): { input: SqaInputFormat; output: SqaOutputFormat } {
  const parts = format.split('-');
  if (parts.length !== 2) throw new EvalError(`ScienceQA prompt format '${format}' must look like INPUT-OUTPUT, e.g. QCM-LEA`);
  const [input, output] = parts as [SqaInputFormat, SqaOutputFormat];
  if (!SQA_INPUT_FORMATS.includes(input)) throw new EvalError(`unknown ScienceQA input format '${input}' (${SQA_INPUT_FORMATS.join(', ')})`);
  if (!SQA_OUTPUT_FORMATS.includes(output)) throw new EvalError(`unknown ScienceQA output format '${output}' (${SQA_OUTPUT_FORMATS.join(', ')})`);
  return { input, output };
}

/** `llava_{split}_{input}-{output}.json`, the converter's output name. */
export function sqaConvertedFileName(split: string, input: SqaInputFormat, output: SqaOutputFormat): string {
  return `llava_${split}_${input}-${output}.json`;
}

function sqaContext(p: SqaProblem): string {
  // The reference joins [hint, ""] with a space and strips (captions are not used); empty → "N/A".
  const c = pyStrip(`${p.hint ?? ''} `);
  return c === '' ? 'N/A' : c;
}

function sqaChoices(p: SqaProblem, id: string): string {
  if (p.choices.length > SQA_OPTIONS.length)
    throw new EvalError(`ScienceQA problem ${id}: ${p.choices.length} choices, at most ${SQA_OPTIONS.length} letters`);
  return p.choices.map((c, i) => `(${SQA_OPTIONS[i]}) ${c}`).join(' ');
}

/** One (input, output) pair exactly as the reference's chatbot prompt builder forms it (training form). */
export function sqaExample(p: SqaProblem, id: string, fmt: Required<SqaConvertOptions>): { input: string; output: string } {
  const question = p.question;
  const context = sqaContext(p);
  const choice = sqaChoices(p, id);
  const answer = SQA_OPTIONS[p.answer];
  if (answer === undefined) throw new EvalError(`ScienceQA problem ${id}: answer index ${p.answer} is not a valid choice`);
  // The reference escapes newlines to "\\n" and back again, which also turns a literal backslash-n in the
  // text into a newline; the net effect is reproduced here.
  const lecture = (p.lecture ?? '').replaceAll('\\n', '\n');
  const solution = (p.solution ?? '').replaceAll('\\n', '\n');
  const qcm = `Question: ${question}\nContext: ${context}\n`;
  const inputs: Record<SqaInputFormat, string> = {
    CQM: `Context: ${context}\nQuestion: ${question}\nOptions: ${choice}\n`,
    QCM: `${qcm}Options: ${choice}\n`,
    QCML: `${qcm}Options: ${choice}\nBECAUSE: ${lecture}\n`,
    QCME: `${qcm}Options: ${choice}\nBECAUSE: ${solution}\n`,
    QCMLE: `${qcm}Options: ${choice}\nBECAUSE: ${lecture} ${solution}\n`,
    QCLM: `${qcm}BECAUSE: ${lecture}\nOptions: ${choice}\n`,
    QCEM: `${qcm}BECAUSE: ${solution}\nOptions: ${choice}\n`,
    QCLEM: `${qcm}BECAUSE: ${lecture} ${solution}\nOptions: ${choice}\n`,
  };
  const ans = `The answer is ${answer}.`;
  let lepa = '';
  if (pyStrip(lecture).length > 0) lepa += `LECTURE: ${lecture}\n`;
  if (pyStrip(solution).length > 0) lepa += `SOLUTION: ${solution}\n`;
  lepa += `###\nANSWER: ${answer}.`;
  const outputs: Record<SqaOutputFormat, string> = {
    A: `Answer: ${ans}`,
    AL: `Answer: ${ans} BECAUSE: ${solution}`,
    AE: `Answer: ${ans} BECAUSE: ${lecture}`,
    ALE: `Answer: ${ans} BECAUSE: ${lecture} ${solution}`,
    AEL: `Answer: ${ans} BECAUSE: ${solution} ${lecture}`,
    LA: `Answer: ${lecture} ${ans}`,
    EA: `Answer: ${solution} ${ans}`,
    LEA: `Answer: ${lecture} ${solution} ${ans}`,
    ELA: `Answer: ${solution} ${lecture} ${ans}`,
    LEPA: lepa,
  };
  // One pass of "  " → " " (Python str.replace: non-overlapping, so three spaces become two), then strip;
  // a dangling "BECAUSE:" is removed everywhere it occurs.
  let input = pyStrip(inputs[fmt.input].replaceAll('  ', ' '));
  let output = pyStrip(outputs[fmt.output].replaceAll('  ', ' '));
  if (input.endsWith('BECAUSE:')) input = pyStrip(input.replaceAll('BECAUSE:', ''));
  if (output.endsWith('BECAUSE:')) output = pyStrip(output.replaceAll('BECAUSE:', ''));
  // convert_sqa_to_llava.py: a leading "Question: " / "Answer: " goes, and Python's replace takes every
  // other occurrence with it (kept: it only matters when the text itself contains those words). Also kept:
  // with an empty lecture and solution, LEA's "Answer:   The answer is X." only loses one of its three
  // spaces to the collapse above, so the answer turn starts with a space (" The answer is X.").
  if (input.startsWith('Question: ')) input = input.replaceAll('Question: ', '');
  if (output.startsWith('Answer: ')) output = output.replaceAll('Answer: ', '');
  return { input, output };
}

/**
 * ScienceQA → LLaVA instruction records (`scripts/convert_sqa_to_llava.py`, docs/reference.md §6.3), in split order.
 * Records with an image get `image = "{pid}/{file}"` and "\n<image>" after the input text.
 */
export function convertScienceQA(problems: SqaProblems, pidSplits: SqaPidSplits, split: string, opts: SqaConvertOptions = {}): Sample[] {
  checkOptions('convertScienceQA', opts, optionKeys<SqaConvertOptions>({ input: true, output: true }));
  const ids = pidSplits[split];
  if (!Array.isArray(ids)) throw new EvalError(`ScienceQA split '${split}' is not in pid_splits (${Object.keys(pidSplits).join(', ')})`);
  const fmt = { input: opts.input ?? 'QCM', output: opts.output ?? 'LEA' } as Required<SqaConvertOptions>;
  if (!SQA_INPUT_FORMATS.includes(fmt.input)) throw new EvalError(`unknown ScienceQA input format '${fmt.input}'`);
  if (!SQA_OUTPUT_FORMATS.includes(fmt.output)) throw new EvalError(`unknown ScienceQA output format '${fmt.output}'`);
  const out: Sample[] = [];
  // A Set keeps each id once, in first-seen order (the reference builds a dict keyed by id).
  for (const id of new Set(ids)) {
    const p = problems[id];
    if (!p) throw new EvalError(`ScienceQA problem ${id} (split ${split}) is not in problems.json`);
    const { input, output } = sqaExample(p, id, fmt);
    // The reference tests `image is None`; a missing key is treated the same way here.
    const hasImage = p.image !== null && p.image !== undefined;
    const conversations: Sample['conversations'] = [
      { from: 'human', value: hasImage ? `${input}\n${DEFAULT_IMAGE_TOKEN}` : input },
      { from: 'gpt', value: output },
    ];
    // Key order as the reference writes it: id, image, conversations.
    out.push(hasImage ? { id, image: `${id}/${p.image}`, conversations } : { id, conversations });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// ScienceQA: question prompts (model_vqa_science.py, docs/reference.md §8.2)

/** A ScienceQA question record as the eval file `llava_test_CQM-A.json` holds it (the §6.1 schema). */
export interface SqaQuestion {
  id: string;
  image?: string;
  conversations: Array<{ from: string; value: string }>;
}

/** Reads a ScienceQA question file: a JSON array of LLaVA records (numeric ids become strings). */
export function readSqaQuestions(file: string): SqaQuestion[] {
  const raw = readJson<unknown>(file, 'questions file');
  if (!Array.isArray(raw)) throw new EvalError(`questions file ${file}: expected a JSON array of {id, image?, conversations}`);
  raw.forEach((r, i) => {
    const q = r as Partial<SqaQuestion> | null;
    const ok = q !== null && typeof q === 'object' && (typeof q.id === 'string' || typeof q.id === 'number') && Array.isArray(q.conversations);
    if (!ok) throw new EvalError(`questions file ${file}: record ${i} needs "id" and "conversations"`);
    if (typeof q.id === 'number') q.id = String(q.id);
  });
  return raw as SqaQuestion[];
}

export const SQA_SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly.";

export interface SqaPromptOptions {
  /** v1.5: append "\nAnswer with the option's letter from the given choices directly." */
  singlePredPrompt?: boolean;
  /** Wrap the image token as `<im_start><image><im_end>` (mm_use_im_start_end; all released scripts: off). */
  mmUseImStartEnd?: boolean;
}

/**
 * The user message for one ScienceQA question: the first human value with `<image>` removed and stripped;
 * with an image, "<image>\n" in front. `question` goes into the conversation, `prompt` is what the answers
 * file records (they differ only with mmUseImStartEnd).
 */
export function sqaPrompt(q: SqaQuestion, opts: SqaPromptOptions = {}): { question: string; prompt: string; hasImage: boolean } {
  checkOptions('sqaPrompt', opts, optionKeys<SqaPromptOptions>({ singlePredPrompt: true, mmUseImStartEnd: true }));
  const first = q.conversations?.find((t) => t.from === 'human');
  if (!first || typeof first.value !== 'string') throw new EvalError(`ScienceQA question ${q.id}: no human turn`);
  let qs = pyStrip(first.value.replaceAll(DEFAULT_IMAGE_TOKEN, ''));
  let cur = qs;
  const hasImage = 'image' in q && q.image !== undefined;
  if (hasImage) {
    qs = (opts.mmUseImStartEnd ? '<im_start><image><im_end>' : DEFAULT_IMAGE_TOKEN) + '\n' + qs;
    cur = DEFAULT_IMAGE_TOKEN + '\n' + cur;
  }
  if (opts.singlePredPrompt) {
    qs += '\n' + SQA_SINGLE_PRED_PROMPT;
    cur += '\n' + SQA_SINGLE_PRED_PROMPT;
  }
  return { question: qs, prompt: cur, hasImage };
}

// ---------------------------------------------------------------------------------------------------------
// ScienceQA: answer extraction and scoring (eval_science_qa.py, evaluate_acc.py)

export type SqaExtractRule = 'letter' | 'prefix' | 'regex' | 'failed';

export interface SqaExtraction {
  /** The parsed letter ('A'–'Z'), or 'FAILED'. */
  letter: string;
  /** Predicted choice index; −1 = wrong (FAILED, or a letter beyond the choices) unless onInvalid 'random'. */
  index: number;
  /** Which rule produced the letter. */
  rule: SqaExtractRule;
}

export interface SqaExtractOptions {
  /** 'wrong' (HEAD, default): unusable answers are index −1. 'random': a uniformly drawn valid choice, as the
   *  original 2023 script did (`random.choice(range(len(choices)))`). */
  onInvalid?: 'wrong' | 'random';
  /** Uniform [0, 1) draws for 'random' (default: mulberry32(0)). */
  rng?: () => number;
}

// "The answer is X" followed by any one character except a newline (Python's `.` without DOTALL; JS's `.`
// would also refuse \r, \u2028 and \u2029, hence the explicit class).
const SQA_ANSWER_RE = /The answer is ([A-Z])[^\n]/g;

/** The letter a model output names, by the reference's rules in order; 'FAILED' when none applies. */
export function extractSqaLetter(output: string): { letter: string; rule: SqaExtractRule } {
  if (SQA_OPTIONS.includes(output)) return { letter: output, rule: 'letter' };
  if (output.length >= 3 && SQA_OPTIONS.includes(output[0]) && output.slice(1, 3) === '. ') return { letter: output[0], rule: 'prefix' };
  const letter = sqaRegexLetter(output);
  return { letter, rule: letter === 'FAILED' ? 'failed' : 'regex' };
}

/** The letter of "The answer is X." when the output says it exactly once, else 'FAILED' (the third rule
 *  alone, which is all the GPT-4 ensemble scripts apply). */
export function sqaRegexLetter(output: string): string {
  const found = [...output.matchAll(SQA_ANSWER_RE)];
  return found.length === 1 ? found[0][1] : 'FAILED';
}

/** Model output → predicted choice index (see SqaExtraction). */
export function extractSqaAnswer(output: string, numChoices: number, opts: SqaExtractOptions = {}): SqaExtraction {
  checkOptions('extractSqaAnswer', opts, optionKeys<SqaExtractOptions>({ onInvalid: true, rng: true }));
  const { letter, rule } = extractSqaLetter(output);
  let index = SQA_OPTIONS.slice(0, numChoices).indexOf(letter);
  if (index < 0 && opts.onInvalid === 'random' && numChoices > 0) {
    const rng = opts.rng ?? mulberry32(0);
    index = Math.min(numChoices - 1, Math.floor(rng() * numChoices));
  }
  return { letter, index, rule };
}

/** Per-problem analysis entry, as the reference's `--output-file` lists them. */
export interface SqaAnalysis {
  question_id: string;
  parsed_ans: string;
  ground_truth: string;
  question: string;
  pred: string;
  is_multimodal: boolean;
}

/** Official per-category accuracies in percent (null where a category is empty). */
export interface SqaCategoryAccuracy {
  NAT: number | null;
  SOC: number | null;
  LAN: number | null;
  TXT: number | null;
  IMG: number | null;
  NO: number | null;
  'G1-6': number | null;
  'G7-12': number | null;
  Avg: number | null;
}

export const SQA_CATEGORY_KEYS: readonly (keyof SqaCategoryAccuracy)[] = ['NAT', 'SOC', 'LAN', 'TXT', 'IMG', 'NO', 'G1-6', 'G7-12', 'Avg'];

export interface SqaCategoryCounts {
  correct: Record<keyof SqaCategoryAccuracy, number>;
  total: Record<keyof SqaCategoryAccuracy, number>;
}

export interface SqaScore {
  total: number;
  correct: number;
  /** Percent; null when there is nothing to score. */
  accuracy: number | null;
  imgTotal: number;
  imgCorrect: number;
  imgAccuracy: number | null;
  /** Problem id → predicted index (the `results` map of `*_result.json`, input of the official scorer). */
  results: Record<string, number>;
  /** Problem id → raw model output. */
  outputs: Record<string, string>;
  analysis: { correct: SqaAnalysis[]; incorrect: SqaAnalysis[] };
  categories: SqaCategoryAccuracy;
  categoryCounts: SqaCategoryCounts;
}

const GRADES_LOW = ['grade1', 'grade2', 'grade3', 'grade4', 'grade5', 'grade6'];
const GRADES_HIGH = ['grade7', 'grade8', 'grade9', 'grade10', 'grade11', 'grade12'];

/**
 * The official per-category accuracy (`lupantech/ScienceQA tools/evaluate_acc.py`) over the given problem
 * ids: subject NAT/SOC/LAN, context TXT (non-empty hint, image or not), IMG (has an image), NO (neither),
 * grade G1-6 / G7-12, and the average. A problem without a result counts as wrong. (The official script
 * divides the average by the number of results, which equals the number of test problems it asserts.)
 */
export function scienceQACategoryAccuracy(
  problems: SqaProblems,
  results: Record<string, number>,
  ids: readonly string[],
): { accuracy: SqaCategoryAccuracy; counts: SqaCategoryCounts } {
  const zero = () => Object.fromEntries(SQA_CATEGORY_KEYS.map((k) => [k, 0])) as Record<keyof SqaCategoryAccuracy, number>;
  const correct = zero();
  const total = zero();
  for (const id of new Set(ids)) {
    const p = problems[id];
    if (!p) throw new EvalError(`ScienceQA problem ${id} is not in problems.json`);
    const ok = results[id] === p.answer;
    const hasText = Boolean(p.hint);
    const hasImage = Boolean(p.image);
    const keys: (keyof SqaCategoryAccuracy)[] = ['Avg'];
    if (p.subject === 'natural science') keys.push('NAT');
    else if (p.subject === 'social science') keys.push('SOC');
    else if (p.subject === 'language science') keys.push('LAN');
    if (hasText) keys.push('TXT');
    if (hasImage) keys.push('IMG');
    if (!hasText && !hasImage) keys.push('NO');
    if (GRADES_LOW.includes(p.grade)) keys.push('G1-6');
    else if (GRADES_HIGH.includes(p.grade)) keys.push('G7-12');
    for (const k of keys) {
      total[k]++;
      if (ok) correct[k]++;
    }
  }
  const accuracy = Object.fromEntries(
    SQA_CATEGORY_KEYS.map((k) => [k, total[k] > 0 ? (correct[k] / total[k]) * 100 : null]),
  ) as unknown as SqaCategoryAccuracy;
  return { accuracy, counts: { correct, total } };
}

export interface SqaScoreOptions extends SqaExtractOptions {
  /** Seed for onInvalid 'random' when no rng is given (default 0). */
  seed?: number;
}

/**
 * Scores a model's ScienceQA answers (HEAD `eval_science_qa.py` plus the official categories) over the
 * problem ids of one split, in split order. A problem without a prediction is scored as the output "FAILED"
 * with the prompt "Unknown". When an answers file holds a problem twice, the later line wins.
 */
export function scoreScienceQA(
  problems: SqaProblems,
  predictions: readonly AnswerRecord[] | ReadonlyMap<string, AnswerRecord>,
  splitIds: readonly string[],
  opts: SqaScoreOptions = {},
): SqaScore {
  checkOptions('scoreScienceQA', opts, optionKeys<SqaScoreOptions>({ onInvalid: true, rng: true, seed: true }));
  const byId = new Map<string, AnswerRecord>();
  if (predictions instanceof Map) for (const [k, v] of predictions) byId.set(String(k), v);
  else for (const p of predictions as readonly AnswerRecord[]) byId.set(String(p.question_id), p);
  const rng = opts.rng ?? (opts.onInvalid === 'random' ? mulberry32(opts.seed ?? 0) : undefined);
  const results: Record<string, number> = {};
  const outputs: Record<string, string> = {};
  const analysis = { correct: [] as SqaAnalysis[], incorrect: [] as SqaAnalysis[] };
  const ids = [...new Set(splitIds)];
  for (const id of ids) {
    const prob = problems[id];
    if (!prob) throw new EvalError(`ScienceQA problem ${id} is not in problems.json`);
    const pred = byId.get(id) ?? { question_id: id, prompt: 'Unknown', text: 'FAILED' };
    const text = typeof pred.text === 'string' ? pred.text : 'FAILED';
    const prompt = typeof pred.prompt === 'string' ? pred.prompt : 'Unknown';
    const ex = extractSqaAnswer(text, prob.choices.length, { onInvalid: opts.onInvalid, rng });
    results[id] = ex.index;
    outputs[id] = text;
    const a: SqaAnalysis = {
      question_id: id,
      parsed_ans: ex.letter,
      ground_truth: SQA_OPTIONS[prob.answer],
      question: prompt,
      pred: text,
      is_multimodal: prompt.includes(DEFAULT_IMAGE_TOKEN),
    };
    (ex.index === prob.answer ? analysis.correct : analysis.incorrect).push(a);
  }
  const correct = analysis.correct.length;
  const total = correct + analysis.incorrect.length;
  const imgCorrect = analysis.correct.filter((x) => x.is_multimodal).length;
  const imgTotal = imgCorrect + analysis.incorrect.filter((x) => x.is_multimodal).length;
  const cat = scienceQACategoryAccuracy(problems, results, ids);
  return {
    total,
    correct,
    accuracy: total > 0 ? (correct / total) * 100 : null,
    imgTotal,
    imgCorrect,
    imgAccuracy: imgTotal > 0 ? (imgCorrect / imgTotal) * 100 : null,
    results,
    outputs,
    analysis,
    categories: cat.accuracy,
    categoryCounts: cat.counts,
  };
}

/** The `--output-result` JSON of the reference (`*_result.json`): acc, correct, count, results, outputs. */
export function sqaResultJson(s: SqaScore): {
  acc: number | null;
  correct: number;
  count: number;
  results: Record<string, number>;
  outputs: Record<string, string>;
} {
  return { acc: s.accuracy, correct: s.correct, count: s.total, results: s.results, outputs: s.outputs };
}

const pct = (x: number | null): string => (x === null ? 'n/a' : pyFixed(x, 2));

/** The report lines: the reference's one-line summary, then the official category table. */
export function formatSqaReport(s: SqaScore): string {
  const lines = [`Total: ${s.total}, Correct: ${s.correct}, Accuracy: ${pct(s.accuracy)}%, IMG-Accuracy: ${pct(s.imgAccuracy)}%`];
  const w = 7;
  lines.push(SQA_CATEGORY_KEYS.map((k) => k.padStart(w)).join(''));
  lines.push(SQA_CATEGORY_KEYS.map((k) => pct(s.categories[k]).padStart(w)).join(''));
  lines.push(SQA_CATEGORY_KEYS.map((k) => `${s.categoryCounts.total[k]}`.padStart(w)).join('') + '   (questions)');
  return lines.join('\n');
}
