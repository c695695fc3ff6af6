// llava_bench.ts — LLaVA-Bench, COCO and In-the-Wild (docs/reference.md §8.1): the question, context and
// review file formats, the GPT-4 judge prompt exactly as eval_gpt_review_visual.py / _bench.py lay it out,
// the score pair read from a judge reply, and the summary table of summarize_gpt_review.py. Plain
// TypeScript: the HTTP judge and the review loop are judge.ts, answer generation is answer.ts.
//
// Reference behaviours kept on purpose (each is documented where it is implemented):
// - A judge review whose first line does not split into exactly two numbers scores [-1, -1], and that pair is
//   averaged in like any other (docs/reference.md §10.8).
// - The summary rounds the mean pair to 3 decimals before forming the relative score, as
//   summarize_gpt_review.py does; all roundings are Python's (correctly rounded, ties to even).
// Differences from the reference scripts, deliberate:
// - Answers and reviews are matched to questions by question_id, not zipped line by line; files that the
//   reference would pair positionally give the same result, misaligned files are an error instead of a
//   silent mismatch.
// - Output files are appended line by line and resumable (lines already present are skipped).
import * as path from 'path';
import { pyRound, pyFloatRepr, pyFloat, pyFloatList } from '../util/pyformat';
import { EvalError, checkFields, readJson, readJsonl, validateBenchAnswers, type AnswerRecord } from './common';
import { checkOptions, optionKeys } from '../../options';

// ---------------------------------------------------------------------------------------------------------
// LLaVA-Bench: files (docs/reference.md §8.1)

/** A question line (`qa90_questions.jsonl`, In-the-Wild `questions.jsonl`). */
export interface BenchQuestion {
  question_id: number | string;
  image: string;
  text: string;
  /** 'conv' | 'detail' | 'complex'. */
  category: string;
}

/** One object of a COCO context line. `bbox` is normalised [x1, y1, x2, y2]; a string is used verbatim. */
export interface CocoInstance {
  category: string;
  bbox: number[] | string;
}

/** A COCO context line (`caps_boxes_coco2014_val_80.jsonl`): five captions and the objects' boxes. */
export interface CocoContext {
  image: string;
  captions: string[];
  instances: CocoInstance[];
  id?: number | string;
}

/** An In-the-Wild context line (`context.jsonl`): the image's hand-written description. */
export interface WildContext {
  image: string;
  caption: string | string[];
  id?: number | string;
}

export type BenchContext = CocoContext | WildContext;

/** 'coco' = LLaVA-Bench (COCO), 'wild' = LLaVA-Bench (In-the-Wild). */
export type BenchKind = 'coco' | 'wild';

/** One line of a review JSONL (eval_gpt_review_*.py output). */
export interface BenchReview {
  id: number;
  question_id: number | string;
  answer1_id: string | number;
  answer2_id: string | number;
  /** Rule key: the question's category (COCO) or `llava_bench_` + category (In-the-Wild). */
  category: string;
  /** The judge's full reply. */
  content: string;
  /** [reference score, model score]; [-1, -1] when the reply could not be parsed. */
  tuple: [number, number];
}

/** Validates parsed question lines. */
export function validateBenchQuestions(recs: unknown[], source = 'questions'): BenchQuestion[] {
  recs.forEach((r, i) => checkFields(r, { question_id: 'id', image: 'string', text: 'string', category: 'string' }, source, i));
  return recs as BenchQuestion[];
}

/** Validates parsed context lines for a benchmark. */
export function validateBenchContexts(recs: unknown[], kind: BenchKind, source = 'context'): BenchContext[] {
  recs.forEach((r, i) =>
    checkFields(r, kind === 'coco' ? { image: 'string', captions: 'array', instances: 'array' } : { image: 'string', caption: 'text' }, source, i),
  );
  return recs as BenchContext[];
}

export function readBenchQuestions(file: string): BenchQuestion[] {
  return validateBenchQuestions(readJsonl(file, 'questions file'), `questions file ${file}`);
}
export function readBenchAnswers(file: string): AnswerRecord[] {
  return validateBenchAnswers(readJsonl(file, 'answers file'), `answers file ${file}`);
}
export function readBenchContexts(file: string, kind: BenchKind): BenchContext[] {
  return validateBenchContexts(readJsonl(file, 'context file'), kind, `context file ${file}`);
}

// ---------------------------------------------------------------------------------------------------------
// LLaVA-Bench: the judge prompt

export interface JudgeMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** A rule of `llava/eval/table/rule.json`: the role name used in the layout and the instruction text. */
export interface RulePrompt {
  role: string;
  prompt: string;
}

export const JUDGE_SYSTEM_PROMPT = 'You are a helpful and precise assistant for checking the quality of the answer.';

const RULE_HEAD =
  'We would like to request your feedback on the performance of two AI assistants in response to the user question displayed above. ' +
  'The user asks the question on observing an image. For your reference, the visual content in the image is represented with ';
// Note the space before "\n": the rule texts carry it.
const RULE_TAIL =
  ' \nPlease rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.' +
  '\nPlease first output a single line containing only two values indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space.' +
  '\nIn the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in which the responses were presented does not affect your judgment.';

/** The generic visual rule (In-the-Wild keys `llava_bench_*`): the image is "a few sentences". */
export const WILD_RULE_PROMPT = RULE_HEAD + 'a few sentences describing the image.' + RULE_TAIL;

/** The COCO rule (keys conv / detail / complex): five captions plus normalised boxes. */
export const COCO_RULE_PROMPT =
  RULE_HEAD +
  'five descriptive sentences describing the same image and the bounding box coordinates of each object in the scene. ' +
  'These coordinates are in the form of bounding boxes, represented as (x1, y1, x2, y2) with floating numbers ranging from 0 to 1. ' +
  'These values correspond to the top left x, top left y, bottom right x, and bottom right y.' +
  RULE_TAIL;

/** The visual rules of rule.json, by key. */
export const BENCH_RULES: Readonly<Record<string, RulePrompt>> = Object.freeze({
  conv: { role: 'Assistant', prompt: COCO_RULE_PROMPT },
  detail: { role: 'Assistant', prompt: COCO_RULE_PROMPT },
  complex: { role: 'Assistant', prompt: COCO_RULE_PROMPT },
  llava_bench_conv: { role: 'Assistant', prompt: WILD_RULE_PROMPT },
  llava_bench_detail: { role: 'Assistant', prompt: WILD_RULE_PROMPT },
  llava_bench_complex: { role: 'Assistant', prompt: WILD_RULE_PROMPT },
});

/** The rule key of a question: its category for COCO, `llava_bench_` + category for In-the-Wild. */
export function ruleKey(kind: BenchKind, category: string): string {
  return kind === 'wild' ? `llava_bench_${category}` : category;
}

/** Reads a rule.json-style file ({key: {role, prompt}}). */
export function loadRules(file: string): Record<string, RulePrompt> {
  const raw = readJson<Record<string, unknown>>(file, 'rule file');
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new EvalError(`rule file ${file}: expected an object of {role, prompt}`);
  for (const [k, v] of Object.entries(raw)) {
    const r = v as Partial<RulePrompt> | null;
    if (!r || typeof r.role !== 'string' || typeof r.prompt !== 'string')
      throw new EvalError(`rule file ${file}: rule '${k}' needs string "role" and "prompt"`);
  }
  return raw as Record<string, RulePrompt>;
}

/** The [Context] block: COCO = captions, a blank line, then one `category: [x1, y1, x2, y2]` line per object
 *  (boxes printed as Python prints a list of floats); In-the-Wild = the description (a list is joined by
 *  newlines). */
export function judgeContext(kind: BenchKind, ctx: BenchContext): string {
  if (kind === 'coco') {
    const c = ctx as CocoContext;
    const caps = c.captions.join('\n');
    const boxes = c.instances.map((o) => `${o.category}: ${typeof o.bbox === 'string' ? o.bbox : pyFloatList(o.bbox)}`).join('\n');
    return `${caps}\n\n${boxes}`;
  }
  // [unverified] whether the public context.jsonl stores the description as a string or a list; the reference
  // joins it with "\n", which for a list is what is done here. A string is used as it is.
  const cap = (ctx as WildContext).caption;
  return Array.isArray(cap) ? cap.join('\n') : cap;
}

export interface JudgePromptInput {
  kind: BenchKind;
  question: BenchQuestion;
  context: BenchContext;
  /** Assistant 1: the GPT-4 reference answer. */
  reference: string;
  /** Assistant 2: the model being evaluated. */
  candidate: string;
  /** Rule table (default BENCH_RULES). */
  rules?: Readonly<Record<string, RulePrompt>>;
}

/** The judge's user message, exactly as eval_gpt_review_visual.py / eval_gpt_review_bench.py lay it out. */
export function judgeContent(i: JudgePromptInput): string {
  const rules = i.rules ?? BENCH_RULES;
  const key = ruleKey(i.kind, i.question.category);
  const rule = rules[key];
  if (!rule) throw new EvalError(`question ${i.question.question_id}: category '${key}' is not in the rule table (${Object.keys(rules).join(', ')})`);
  const r = rule.role;
  return (
    `[Context]\n${judgeContext(i.kind, i.context)}\n\n` +
    `[Question]\n${i.question.text}\n\n` +
    `[${r} 1]\n${i.reference}\n\n[End of ${r} 1]\n\n` +
    `[${r} 2]\n${i.candidate}\n\n[End of ${r} 2]\n\n` +
    `[System]\n${rule.prompt}\n\n`
  );
}

/** The judge's chat messages: the fixed system text, then the user content of judgeContent. */
export function judgePrompt(i: JudgePromptInput): JudgeMessage[] {
  return [
    { role: 'system', content: JUDGE_SYSTEM_PROMPT },
    { role: 'user', content: judgeContent(i) },
  ];
}

// ---------------------------------------------------------------------------------------------------------
// LLaVA-Bench: scores and summary

/**
 * The score pair of a judge reply (parse_score): its first line, commas turned into spaces, split on single
 * spaces; exactly two fields that Python's float() accepts give the pair, anything else [-1, -1]. Quirk kept
 * (docs/reference.md §10.8): the [-1, -1] of an unparseable reply is not filtered out later; it enters the averages.
 */
export function parseJudgeScores(review: unknown): [number, number] {
  if (typeof review !== 'string') return [-1, -1];
  const fields = review.split('\n')[0].replaceAll(',', ' ').split(' ');
  if (fields.length !== 2) return [-1, -1];
  const a = pyFloat(fields[0]);
  const b = pyFloat(fields[1]);
  return a === null || b === null ? [-1, -1] : [a, b];
}

export interface ReviewSummaryRow {
  /** A rule key, or 'all'. */
  category: string;
  count: number;
  /** Mean reference (Assistant 1) score, rounded to 3 decimals as the reference does before dividing. */
  refMean: number;
  /** Mean model (Assistant 2) score, rounded to 3 decimals. */
  modelMean: number;
  /** round(modelMean / refMean × 100, 1): the relative score papers report. */
  relative: number;
  /** round(10 × refMean, 1). */
  ref10: number;
  /** round(10 × modelMean, 1). */
  model10: number;
}

/** A review line as summarize_gpt_review.py accepts it: category optional, `tuple` or (older files) `score`. */
export type ReviewLike = { question_id?: number | string; category?: string; tuple?: number[]; score?: number[] };

/**
 * summarize_gpt_review.py: per category and for 'all', the mean score pair (plain sequential sum / count, as
 * numpy does for this axis) rounded to 3 decimals, then relative = round(model/ref × 100, 1) — a ratio of
 * means — and both means × 10 rounded to 1 decimal. Rows are sorted by key ('all' sorts with the others).
 * Reviews whose question_id is in `ignore` are left out. Parse failures ([-1, -1]) are averaged in.
 */
export function summarizeReviews(reviews: readonly ReviewLike[], opts: { ignore?: ReadonlyArray<number | string> } = {}): ReviewSummaryRow[] {
  checkOptions('summarizeReviews', opts, optionKeys<typeof opts>({ ignore: true }));
  const ignore = new Set((opts.ignore ?? []).map(String));
  const groups = new Map<string, number[][]>();
  const add = (k: string, pair: number[]) => {
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(pair);
  };
  for (const r of reviews) {
    if (r.question_id !== undefined && ignore.has(String(r.question_id))) continue;
    const pair = r.tuple ?? r.score;
    if (!Array.isArray(pair) || pair.length < 2) throw new EvalError(`review ${r.question_id ?? '?'} has no score pair ("tuple")`);
    if (r.category !== undefined) add(r.category, pair);
    add('all', pair);
  }
  const keys = [...groups.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return keys.map((category) => {
    const v = groups.get(category)!;
    let s0 = 0;
    let s1 = 0;
    for (const p of v) {
      s0 += Number(p[0]);
      s1 += Number(p[1]);
    }
    const refMean = pyRound(s0 / v.length, 3);
    const modelMean = pyRound(s1 / v.length, 3);
    return {
      category,
      count: v.length,
      refMean,
      modelMean,
      relative: pyRound((modelMean / refMean) * 100, 1),
      ref10: pyRound(refMean * 10, 1),
      model10: pyRound(modelMean * 10, 1),
    };
  });
}

/** The reference's printout: the file's config name, `key relative ref10 model10` per row, a rule line. */
export function formatReviewSummary(name: string, rows: readonly ReviewSummaryRow[]): string {
  const lines = [name];
  for (const r of rows) lines.push(`${r.category} ${pyFloatRepr(r.relative)} ${pyFloatRepr(r.ref10)} ${pyFloatRepr(r.model10)}`);
  lines.push('=================================');
  return lines.join('\n');
}

/** The name the reference prints for a review file: basename without "gpt4_text_" and ".jsonl". */
export function reviewConfigName(file: string): string {
  return path.basename(file).replace('gpt4_text_', '').replace('.jsonl', '');
}
