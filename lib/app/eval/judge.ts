// judge.ts — the GPT judge of LLaVA-Bench (docs/reference.md §8.1): the reference's judge settings on the shared
// chat-completions client (util/openai.ts), and the review loop that writes `tuple`-scored reviews to a JSONL file.
//
// Decisions:
// - Defaults are the reference's: gpt-4-0314, temperature 0.2, max_tokens 1024.
// - Retries (the reference retries forever with a fixed sleep): the client (the openai SDK) retries 408, 409,
//   429, 5xx, network errors and timeouts up to maxRetries (6) times, waiting as util/openai.ts says; other
//   HTTP errors fail at once.
// - The review loop runs `concurrency` questions at once; the client caps requests in flight too.
// - The review file is resumable: question_ids already reviewed are skipped, each new review is appended as
//   one line as soon as it arrives (so lines follow completion order, not question order). When a request
//   fails for good, no new ones start, the ones in flight are still written, and the run throws; running it
//   again picks up where it stopped.
// - Answers are matched to questions by question_id (the reference zips the three files line by line).
import { checkOptions, optionKeys } from '../../options';
import { EvalError, type AnswerRecord } from './common';
import {
  BENCH_RULES,
  judgePrompt,
  parseJudgeScores,
  ruleKey,
  type BenchContext,
  type BenchKind,
  type BenchQuestion,
  type BenchReview,
  type JudgeMessage,
  type RulePrompt,
} from './llava_bench';
import { OpenAIChatClient, type ChatClientOptions } from '../util/openai';
import { Progress, type ProgressMode } from '../util/progress';
import { appendJsonl, prepareJsonlOutput } from '../util/files';
import { forEachConcurrent } from '../util/pool';

/** Anything that can answer a judge prompt (OpenAIJudge, or a stub in tests). */
export interface Judge {
  complete(messages: JudgeMessage[]): Promise<string>;
}

/** The shared client's options; the judge changes only the defaults. */
export type OpenAIJudgeOptions = ChatClientOptions;

/** The reference judge (gpt-4-0314, temperature 0.2, max_tokens 1024) on the shared chat-completions client,
 *  with 6 retries, a 120 s timeout and 4 requests in flight unless told otherwise. */
export class OpenAIJudge implements Judge {
  readonly client: OpenAIChatClient;

  constructor(o: OpenAIJudgeOptions = {}) {
    this.client = new OpenAIChatClient({
      model: 'gpt-4-0314',
      temperature: 0.2,
      maxTokens: 1024,
      maxRetries: 6,
      timeoutMs: 120_000,
      concurrency: 4,
      ...o,
    });
  }

  get baseUrl(): string {
    return this.client.baseUrl;
  }
  get model(): string {
    return this.client.model;
  }

  /** One judge reply. A null content (e.g. a filtered reply) becomes an empty review, which scores
   *  [-1, -1] as the reference's parse_score(None) does. */
  async complete(messages: JudgeMessage[]): Promise<string> {
    return (await this.client.complete(messages)).content ?? '';
  }
}

// ---------------------------------------------------------------------------------------------------------
// The review loop (eval_gpt_review_visual.py / eval_gpt_review_bench.py)

export interface BenchReviewOptions {
  kind: BenchKind;
  questions: readonly BenchQuestion[];
  /** Context lines; looked up by the question's image (the last line for an image wins). */
  contexts: readonly BenchContext[];
  /** Assistant 1: GPT-4's reference answers. */
  references: readonly AnswerRecord[];
  /** Assistant 2: the model's answers. */
  candidates: readonly AnswerRecord[];
  /** Review JSONL (appended; existing question_ids are skipped). */
  outputFile: string;
  judge: Judge;
  rules?: Readonly<Record<string, RulePrompt>>;
  /** Questions judged at once (default 4). */
  concurrency?: number;
  progress?: ProgressMode;
  log?: (m: string) => void;
}
const REVIEW_KEYS = optionKeys<BenchReviewOptions>({
  kind: true,
  questions: true,
  contexts: true,
  references: true,
  candidates: true,
  outputFile: true,
  judge: true,
  rules: true,
  concurrency: true,
  progress: true,
  log: true,
});

export interface BenchReviewResult {
  total: number;
  /** Reviews already in the file. */
  skipped: number;
  /** Reviews written by this run. */
  written: number;
  /** Of those, replies whose score line could not be parsed ([-1, -1]). */
  unparsed: number;
}

function indexById<T extends { question_id: number | string }>(recs: readonly T[]): Map<string, T> {
  const m = new Map<string, T>();
  for (const r of recs) m.set(String(r.question_id), r);
  return m;
}

/** Judges every question not yet in the output file and appends one review line per question. */
export async function runBenchReview(o: BenchReviewOptions): Promise<BenchReviewResult> {
  checkOptions('eval', o, REVIEW_KEYS);
  const log = o.log ?? ((m: string) => console.log(m));
  const rules = o.rules ?? BENCH_RULES;
  const ctxByImage = new Map<string, BenchContext>();
  for (const c of o.contexts) ctxByImage.set(c.image, c);
  const refs = indexById(o.references);
  const cands = indexById(o.candidates);

  // Check everything before the first request, so a bad input costs no API calls.
  const jobs = o.questions.map((q, i) => {
    const id = String(q.question_id);
    const ctx = ctxByImage.get(q.image);
    if (!ctx) throw new EvalError(`question ${id}: no context line for image ${q.image}`);
    const a1 = refs.get(id);
    if (!a1) throw new EvalError(`question ${id}: no reference answer (Assistant 1)`);
    const a2 = cands.get(id);
    if (!a2) throw new EvalError(`question ${id}: no model answer (Assistant 2)`);
    const messages = judgePrompt({ kind: o.kind, question: q, context: ctx, reference: a1.text, candidate: a2.text, rules });
    const base = {
      id: i + 1,
      question_id: q.question_id,
      answer1_id: a1.answer_id ?? a1.question_id,
      answer2_id: a2.answer_id ?? a2.question_id,
      category: ruleKey(o.kind, q.category),
    };
    return { id, messages, base };
  });

  const done = new Set(prepareJsonlOutput<BenchReview>(o.outputFile).map((r) => String(r.question_id)));
  const todo = jobs.filter((j) => !done.has(j.id));
  const result: BenchReviewResult = { total: jobs.length, skipped: jobs.length - todo.length, written: 0, unparsed: 0 };
  if (result.skipped > 0) log(`[review] ${result.skipped} of ${jobs.length} questions already reviewed in ${o.outputFile}`);
  if (todo.length === 0) return result;

  const progress = new Progress({ mode: o.progress, label: '[review]', total: jobs.length, done: result.skipped, log });
  try {
    await forEachConcurrent(todo, o.concurrency ?? 4, async (job) => {
      try {
        const content = await o.judge.complete(job.messages);
        const tuple = parseJudgeScores(content);
        if (tuple[0] === -1 && tuple[1] === -1) {
          result.unparsed++;
          log(`[review] question ${job.id}: could not parse the score line ${JSON.stringify(content.split('\n')[0])}; recorded as [-1, -1]`);
        }
        const review: BenchReview = { ...job.base, content, tuple };
        appendJsonl(o.outputFile, review);
        result.written++;
        progress.tick();
      } catch (e) {
        throw new EvalError(`question ${job.id}: ${(e as Error).message}`);
      }
    });
  } catch (e) {
    throw new EvalError(`${(e as Error).message} (${result.written} new reviews were written to ${o.outputFile}; run again to resume)`);
  } finally {
    progress.stop();
  }
  return result;
}
