// eval.ts — the `llava eval ...` commands (ScienceQA and LLaVA-Bench, docs/reference.md §6.3 / §8), registered onto
// an existing commander program by registerEvalCommands(program):
//
//   eval sqa-convert   problems.json + pid_splits.json → llava_{split}_{format}.json
//   eval sqa-answer    a model answers a ScienceQA question file (model_vqa_science.py)
//   eval sqa-score     accuracy, IMG-accuracy and the official categories (eval_science_qa.py)
//   eval sqa-gpt4      the GPT-4 ensembles: complement or judge (eval_science_qa_gpt4{,_requery}.py)
//   eval bench-answer  a model answers LLaVA-Bench questions (model_vqa.py)
//   eval bench-review  the GPT judge scores model answers against GPT-4's (eval_gpt_review_*.py)
//   eval bench-summary relative scores per category from review files (summarize_gpt_review.py)
//
// Same conventions as main.ts: heavy modules (the native addon, models) load inside the actions; every bad
// input ends in one line `llava eval <command>: error: ...` on stderr and exit code 1 (set through
// process.exitCode, or the io hooks when given); commander's own usage errors behave as the program is
// configured (exitOverride etc. are inherited from the parent program at registration time).
import * as fs from 'fs';
import * as path from 'path';
import { Command, Option } from 'commander';
import { UsageError, floatArg, intArg, mustDir, mustFile, mustTemplateName, runAction } from './util';
import { DEVICES, INFERENCE_DTYPES } from '../util/runtime';
import type { SqaPidSplits, SqaProblems } from '../eval/scienceqa';
import type { BenchKind, ReviewLike, ReviewSummaryRow } from '../eval/llava_bench';

/** Where the commands write and how they report failure (defaults: process streams, process.exitCode). */
export interface EvalCliIO {
  out?: (s: string) => void;
  err?: (s: string) => void;
  setExitCode?: (code: number) => void;
  /** Environment for the judge's OPENAI_API_KEY / OPENAI_BASE_URL (default process.env). */
  env?: NodeJS.ProcessEnv;
}

// ---------------------------------------------------------------------------------------------------------
// Argument checks and files (the parsers are cli/util's)

function mustWritable(p: string, what: string): string {
  if (fs.existsSync(p) && !fs.statSync(p).isFile()) throw new UsageError(`${what} ${p} exists and is not a file`);
  return p;
}

/** Writes an output file (creating its folder) after checking that the path is not a folder. */
function writeOutput(file: string, text: string): void {
  mustWritable(file, 'output');
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, text);
}

/** problems.json and pid_splits.json of a ScienceQA folder. */
async function readSqaFolder(baseDir: string): Promise<{ problems: SqaProblems; splits: SqaPidSplits }> {
  const { readJson } = await import('../eval/common');
  return {
    problems: readJson<SqaProblems>(mustFile(path.join(baseDir, 'problems.json'), 'problems file'), 'problems file'),
    splits: readJson<SqaPidSplits>(mustFile(path.join(baseDir, 'pid_splits.json'), 'splits file'), 'splits file'),
  };
}

/** The problem ids of one split, or a usage error naming the splits there are. */
function splitIds(splits: SqaPidSplits, name: string): string[] {
  const ids = splits[name];
  if (!Array.isArray(ids)) throw new UsageError(`split '${name}' is not in pid_splits.json (${Object.keys(splits).join(', ')})`);
  return ids;
}

// ---------------------------------------------------------------------------------------------------------
// Actions

interface Ctx {
  out: (s: string) => void;
  err: (s: string) => void;
  env: NodeJS.ProcessEnv;
}

interface AnswerCliOptions {
  model: string;
  questions: string;
  imageFolder: string;
  answersFile: string;
  template?: string;
  temperature: number;
  topP?: number;
  maxNewTokens: number;
  seed: number;
  singlePredPrompt?: boolean;
  answerPrompter?: boolean;
  stopAtSeparator?: boolean;
  numChunks: number;
  chunkIdx: number;
  batchSize: number;
  device: string;
  dtype: string;
  visionTower?: string;
  modelBase?: string;
  load8bit?: boolean;
  load4bit?: boolean;
  progress: string;
}

async function answerAction(kind: 'sqa' | 'bench', o: AnswerCliOptions, c: Ctx): Promise<void> {
  mustDir(o.model, 'model directory');
  mustFile(path.join(o.model, 'config.json'), 'model config');
  mustFile(o.questions, 'questions file');
  mustDir(o.imageFolder, 'image folder');
  mustWritable(o.answersFile, 'answers file');
  if (o.chunkIdx >= o.numChunks) throw new UsageError(`--chunk-idx ${o.chunkIdx} must be below --num-chunks ${o.numChunks}`);
  await mustTemplateName(o.template);
  // Read the questions before the model loads: a bad file fails fast.
  const set: import('../eval/answer').QuestionSet =
    kind === 'sqa'
      ? { kind, questions: (await import('../eval/scienceqa')).readSqaQuestions(o.questions) }
      : { kind, questions: (await import('../eval/llava_bench')).readBenchQuestions(o.questions) };
  const G = await import('../eval/answer');
  const m = G.loadEvalModel(o.model, o);
  try {
    const template = o.template ?? m.template;
    c.out(
      `[answer] ${set.questions.length} questions, model ${m.modelId}, template ${template}, aspect ${m.aspect}, temperature ${o.temperature}, max ${o.maxNewTokens} new tokens\n`,
    );
    const r = await G.generateAnswers({
      model: m.model,
      tokenizer: m.tokenizer,
      imageProcessor: m.imageProcessor,
      modelId: m.modelId,
      set,
      imageFolder: o.imageFolder,
      answersFile: o.answersFile,
      template,
      chatTemplate: m.chatTemplate,
      aspect: m.aspect,
      temperature: o.temperature,
      topP: o.topP,
      maxNewTokens: o.maxNewTokens,
      seed: o.seed,
      singlePredPrompt: o.singlePredPrompt,
      answerPrompter: o.answerPrompter,
      stopAtSeparator: o.stopAtSeparator,
      numChunks: o.numChunks,
      chunkIdx: o.chunkIdx,
      batchSize: o.batchSize,
      progress: o.progress as 'auto',
      log: (s) => c.out(s + '\n'),
    });
    c.out(`[answer] done: ${r.written} answered, ${r.skipped} already there, ${r.total} in total -> ${o.answersFile}\n`);
  } finally {
    m.dispose();
  }
}

interface ConvertCliOptions {
  baseDir: string;
  split: string;
  promptFormat: string;
  output?: string;
}

async function convertAction(o: ConvertCliOptions, c: Ctx): Promise<void> {
  mustDir(o.baseDir, 'ScienceQA folder');
  const { problems, splits } = await readSqaFolder(o.baseDir);
  const E = await import('../eval/scienceqa');
  const { pyJsonDump } = await import('../util/pyformat');
  const fmt = E.parseSqaFormat(o.promptFormat);
  const recs = E.convertScienceQA(problems, splits, o.split, fmt);
  const out = o.output ?? path.join(o.baseDir, E.sqaConvertedFileName(o.split, fmt.input, fmt.output));
  writeOutput(out, pyJsonDump(recs, 2));
  c.out(`Number of samples: ${recs.length}\n[convert] wrote ${out}\n`);
}

interface ScoreCliOptions {
  baseDir: string;
  resultFile: string;
  split: string;
  outputFile?: string;
  outputResult?: string;
  onInvalid: string;
  seed: number;
  json?: boolean;
}

async function scoreAction(o: ScoreCliOptions, c: Ctx): Promise<void> {
  mustDir(o.baseDir, 'ScienceQA folder');
  mustFile(o.resultFile, 'answers file');
  const { problems, splits } = await readSqaFolder(o.baseDir);
  const E = await import('../eval/scienceqa');
  const C = await import('../eval/common');
  const preds = C.validateBenchAnswers(C.readJsonl(o.resultFile, 'answers file'), `answers file ${o.resultFile}`);
  const s = E.scoreScienceQA(problems, preds, splitIds(splits, o.split), { onInvalid: o.onInvalid as 'wrong' | 'random', seed: o.seed });
  if (o.outputFile) writeOutput(o.outputFile, JSON.stringify(s.analysis, null, 2));
  if (o.outputResult) writeOutput(o.outputResult, JSON.stringify(E.sqaResultJson(s), null, 2));
  if (o.json) {
    const { total, correct, accuracy, imgTotal, imgCorrect, imgAccuracy, categories, categoryCounts } = s;
    c.out(JSON.stringify({ total, correct, accuracy, imgTotal, imgCorrect, imgAccuracy, categories, categoryCounts }) + '\n');
  } else c.out(E.formatSqaReport(s) + '\n');
}

interface Gpt4CliOptions {
  baseDir: string;
  gpt4Result: string;
  ourResult: string;
  requeryResult?: string;
  outputResult?: string;
  split: string;
  seed: number;
  json?: boolean;
}

async function gpt4Action(o: Gpt4CliOptions, c: Ctx): Promise<void> {
  mustDir(o.baseDir, 'ScienceQA folder');
  mustFile(o.gpt4Result, 'GPT-4 result file');
  mustFile(o.ourResult, 'answers file');
  if (o.requeryResult) mustFile(o.requeryResult, 'requery answers file');
  const { problems, splits } = await readSqaFolder(o.baseDir);
  const E = await import('../eval/scienceqa_gpt4');
  const C = await import('../eval/common');
  const answers = (f: string, what: string) => C.validateBenchAnswers(C.readJsonl(f, what), `${what} ${f}`);
  const s = E.scoreScienceQAWithGpt4(
    problems,
    splitIds(splits, o.split),
    answers(o.ourResult, 'answers file'),
    E.gpt4Outputs(C.readJson(o.gpt4Result, 'GPT-4 result file'), `GPT-4 result file ${o.gpt4Result}`),
    {
      requery: o.requeryResult ? answers(o.requeryResult, 'requery answers file') : undefined,
      seed: o.seed,
    },
  );
  if (o.outputResult) writeOutput(o.outputResult, JSON.stringify(E.sqaGpt4ResultJson(s), null, 2));
  if (o.json) {
    const { results: _results, ...scores } = s;
    c.out(JSON.stringify(scores) + '\n');
  } else c.out(E.formatSqaGpt4Report(s) + '\n');
}

interface ReviewCliOptions {
  benchmark: string;
  questions: string;
  context: string;
  reference: string;
  answers: string;
  output: string;
  rule?: string;
  judgeModel: string;
  apiKey?: string;
  baseUrl?: string;
  temperature: number;
  maxTokens: number;
  concurrency: number;
  maxRetries: number;
  timeout: number;
  progress: string;
}

async function reviewAction(o: ReviewCliOptions, c: Ctx): Promise<void> {
  for (const [f, what] of [
    [o.questions, 'questions file'],
    [o.context, 'context file'],
    [o.reference, 'reference answers file'],
    [o.answers, 'answers file'],
  ] as const)
    mustFile(f, what);
  if (o.rule) mustFile(o.rule, 'rule file');
  mustWritable(o.output, 'output');
  const E = await import('../eval/llava_bench');
  const J = await import('../eval/judge');
  const kind = o.benchmark as BenchKind;
  const questions = E.readBenchQuestions(o.questions);
  const contexts = E.readBenchContexts(o.context, kind);
  const references = E.readBenchAnswers(o.reference);
  const candidates = E.readBenchAnswers(o.answers);
  const rules = o.rule ? E.loadRules(o.rule) : undefined;
  const judge = new J.OpenAIJudge({
    apiKey: o.apiKey,
    baseUrl: o.baseUrl,
    model: o.judgeModel,
    temperature: o.temperature,
    maxTokens: o.maxTokens,
    concurrency: o.concurrency,
    maxRetries: o.maxRetries,
    timeoutMs: o.timeout * 1000,
    env: c.env,
    onRetry: (i) => c.err(`[review] retry ${i.attempt} in ${(i.delayMs / 1000).toFixed(1)} s: ${i.reason}\n`),
  });
  const r = await J.runBenchReview({
    kind,
    questions,
    contexts,
    references,
    candidates,
    outputFile: o.output,
    judge,
    rules,
    concurrency: o.concurrency,
    progress: o.progress as 'auto',
    log: (s) => c.out(s + '\n'),
  });
  c.out(
    `[review] done: ${r.written} reviewed${r.unparsed ? ` (${r.unparsed} unparseable, scored [-1, -1])` : ''}, ${r.skipped} already there, ${r.total} in total -> ${o.output}\n`,
  );
}

interface SummaryCliOptions {
  dir?: string;
  ignore?: number[];
  json?: boolean;
}

async function summaryAction(files: string[], o: SummaryCliOptions, c: Ctx): Promise<void> {
  let list: string[];
  if (files.length > 0) list = files.map((f) => (o.dir ? path.join(o.dir, f) : f));
  else if (o.dir) {
    mustDir(o.dir, 'review folder');
    // The reference's selection: *.jsonl starting with gpt4_text / reviews_ / review_.
    list = fs
      .readdirSync(o.dir)
      .filter((x) => x.endsWith('.jsonl') && (x.startsWith('gpt4_text') || x.startsWith('reviews_') || x.startsWith('review_')))
      .map((x) => path.join(o.dir!, x));
    if (list.length === 0) throw new UsageError(`no review files (review_*.jsonl, reviews_*.jsonl, gpt4_text*.jsonl) in ${o.dir}`);
  } else throw new UsageError('give review files, or --dir with review_*.jsonl files');
  for (const f of list) mustFile(f, 'review file');
  const E = await import('../eval/llava_bench');
  const { readJsonl } = await import('../eval/common');
  const sorted = list.slice().sort((a, b) => (path.basename(a) < path.basename(b) ? -1 : path.basename(a) > path.basename(b) ? 1 : 0));
  const all: Record<string, ReviewSummaryRow[]> = {};
  for (const f of sorted) {
    const rows = E.summarizeReviews(readJsonl<ReviewLike>(f, 'review file'), { ignore: o.ignore });
    all[E.reviewConfigName(f)] = rows;
    if (!o.json) c.out(E.formatReviewSummary(E.reviewConfigName(f), rows) + '\n');
  }
  if (o.json) c.out(JSON.stringify(all) + '\n');
}

// ---------------------------------------------------------------------------------------------------------
// Registration

function answerOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--model <dir>', 'model directory (config.json, *.safetensors, tokenizer.json)')
    .requiredOption('--image-folder <dir>', "folder that the questions' image paths are relative to")
    .requiredOption(
      '--answers-file <file>',
      'output JSONL, one {question_id, prompt, text, answer_id, model_id, metadata} per line; existing question_ids are skipped (resume)',
    )
    .option(
      '--template <name>',
      '--conv-mode: conversation template (default: the one the model was trained with, else llava-hf: its chat_template or llava_hf; vicuna_v1 otherwise)',
    )
    .option('--temperature <t>', 'sampling temperature, 0 = greedy (the v1.5 scripts)', floatArg(0), 0)
    .option('--top-p <p>', 'nucleus sampling probability', floatArg(0, 1))
    .option('--max-new-tokens <n>', 'generation limit per answer', intArg(1), 1024)
    .option('--seed <n>', 'sampling seed (question i uses seed + i)', intArg(0), 0)
    .option('--stop-at-separator', "also stop at the template's separator (### or </s>); the reference stops at EOS only")
    .option('--num-chunks <n>', 'split the questions into this many chunks', intArg(1), 1)
    .option('--chunk-idx <k>', 'answer only chunk k (0-based)', intArg(0), 0)
    .option('--batch-size <n>', 'questions generated together (each answer is the one it gets alone)', intArg(1), 1)
    .addOption(new Option('--device <device>', 'compute device').choices(DEVICES).default('cpu'))
    .addOption(new Option('--dtype <dtype>', 'parameter dtype').choices(INFERENCE_DTYPES).default('float32'))
    .option('--vision-tower <dir>', 'CLIP directory for original llava_llama checkpoints')
    .option('--model-base <dir>', '--model is a LoRA adapter (adapter_config.json): merge it into this base model')
    .option('--load-8bit', 'store the language model linears as int8 (per output channel)')
    .option('--load-4bit', 'store the language model linears as NF4 (blocks of 64)')
    .addOption(new Option('--progress <mode>', 'progress display').choices(['auto', 'bar', 'plain', 'none']).default('auto'));
}

/**
 * Adds the `eval` command and its subcommands to `program` and returns the `eval` command. Usage errors
 * (missing options, bad numbers) are commander's; failures inside a command are reported on `io.err` as
 * `llava eval <name>: error: ...` and set exit code 1.
 */
export function registerEvalCommands(program: Command, io: EvalCliIO = {}): Command {
  const ctx: Ctx = {
    out: io.out ?? ((s) => void process.stdout.write(s)),
    err: io.err ?? ((s) => void process.stderr.write(s)),
    env: io.env ?? process.env,
  };
  const setExit = io.setExitCode ?? ((code: number) => void (process.exitCode = code));
  const act = <A extends unknown[]>(name: string, fn: (...a: A) => Promise<void>) =>
    runAction(`eval ${name}`, fn, 'llava', { err: ctx.err, env: ctx.env, setExitCode: setExit });

  const ev = program
    .command('eval')
    .description('benchmarks: ScienceQA (convert, answer, score, GPT-4 ensembles) and LLaVA-Bench COCO / In-the-Wild (answer, GPT review, summary)');

  ev.command('sqa-convert')
    .description('convert ScienceQA problems.json + pid_splits.json into LLaVA records llava_{split}_{format}.json')
    .requiredOption('--base-dir <dir>', 'ScienceQA data folder holding problems.json and pid_splits.json')
    .option('--split <name>', 'split to convert (train, val, test, minival, ...)', 'train')
    .option(
      '--prompt-format <fmt>',
      'INPUT-OUTPUT: input QCM|CQM|QCML|QCME|QCMLE|QCLM|QCEM|QCLEM, output A|AL|AE|ALE|AEL|LA|EA|LEA|ELA|LEPA',
      'QCM-LEA',
    )
    .option('--output <file>', 'output file (default: <base-dir>/llava_{split}_{format}.json)')
    .addHelpText('after', '\nExample:\n  llava eval sqa-convert --base-dir data/scienceqa --split train --prompt-format QCM-LEA')
    .action(act('sqa-convert', (o: ConvertCliOptions) => convertAction(o, ctx)));

  answerOptions(
    ev
      .command('sqa-answer')
      .description('answer ScienceQA questions with a model (model_vqa_science.py), resumable')
      .requiredOption('--questions <file>', 'question file: JSON array of {id, image?, conversations} (e.g. llava_test_CQM-A.json)')
      .option('--single-pred-prompt', 'append "Answer with the option\'s letter from the given choices directly." (v1.5)')
      .option('--answer-prompter', 'v0-era second pass: feed "<reply> ###\\nANSWER:" back for up to 64 tokens'),
  )
    .addHelpText(
      'after',
      '\nExample:\n  llava eval sqa-answer --model llava-v1.5-7b --questions llava_test_CQM-A.json --image-folder scienceqa/images/test \\\n    --answers-file answers/sqa.jsonl --single-pred-prompt',
    )
    .action(act('sqa-answer', (o: AnswerCliOptions) => answerAction('sqa', o, ctx)));

  ev.command('sqa-score')
    .description('score ScienceQA answers: accuracy, IMG-accuracy and the official per-category accuracy')
    .requiredOption('--base-dir <dir>', 'ScienceQA data folder holding problems.json and pid_splits.json')
    .requiredOption('--result-file <file>', 'answers JSONL from sqa-answer')
    .option('--split <name>', 'split to score', 'test')
    .option('--output-file <file>', 'write the per-question analysis {correct: [...], incorrect: [...]}')
    .option('--output-result <file>', "write {acc, correct, count, results: {pid: index}, outputs} (the official scorer's input)")
    .addOption(
      new Option('--on-invalid <mode>', 'unparseable answers: wrong (HEAD) or a random choice (2023 script)')
        .choices(['wrong', 'random'])
        .default('wrong'),
    )
    .option('--seed <n>', 'seed for --on-invalid random', intArg(0), 0)
    .option('--json', 'print the scores as one JSON object')
    .addHelpText(
      'after',
      '\nExample:\n  llava eval sqa-score --base-dir data/scienceqa --result-file answers/sqa.jsonl --output-result answers/sqa_result.json',
    )
    .action(act('sqa-score', (o: ScoreCliOptions) => scoreAction(o, ctx)));

  ev.command('sqa-gpt4')
    .description("score the paper's ScienceQA ensembles with text-only GPT-4: complement, or GPT-4 as judge given --requery-result")
    .requiredOption('--base-dir <dir>', 'ScienceQA data folder holding problems.json and pid_splits.json')
    .requiredOption('--gpt4-result <file>', "GPT-4's result JSON: {outputs: {problem id: answer text}}")
    .requiredOption('--our-result <file>', 'answers JSONL from sqa-answer')
    .option('--requery-result <file>', "GPT-4's second answers JSONL {question_id, text} where it disagreed (scores the judge ensemble)")
    .option('--output-result <file>', "write the ensemble's {acc, correct, count, results: {pid: index}}")
    .option('--split <name>', 'split to score', 'test')
    .option('--seed <n>', 'seed of the random choice for an unusable letter (the scripts draw one, unseeded)', intArg(0), 0)
    .option('--json', 'print the counts as one JSON object')
    .addHelpText(
      'after',
      '\nExample:\n  llava eval sqa-gpt4 --base-dir data/scienceqa --gpt4-result gpt4_text_test.json --our-result answers/sqa.jsonl',
    )
    .action(act('sqa-gpt4', (o: Gpt4CliOptions) => gpt4Action(o, ctx)));

  answerOptions(
    ev
      .command('bench-answer')
      .description('answer LLaVA-Bench questions with a model (model_vqa.py), resumable')
      .requiredOption('--questions <file>', 'question JSONL: {question_id, image, text, category} per line'),
  )
    .addHelpText(
      'after',
      '\nExample:\n  llava eval bench-answer --model llava-v1.5-7b --questions llava-bench-in-the-wild/questions.jsonl \\\n    --image-folder llava-bench-in-the-wild/images --answers-file answers/wild.jsonl',
    )
    .action(act('bench-answer', (o: AnswerCliOptions) => answerAction('bench', o, ctx)));

  ev.command('bench-review')
    .description('score model answers against GPT-4 reference answers with a GPT judge (OpenAI-compatible API), resumable')
    .addOption(
      new Option('--benchmark <name>', 'coco (captions + boxes context) or wild (In-the-Wild description)')
        .choices(['coco', 'wild'])
        .makeOptionMandatory(),
    )
    .requiredOption('--questions <file>', 'question JSONL')
    .requiredOption('--context <file>', 'context JSONL (COCO: caps_boxes_coco2014_val_80.jsonl; In-the-Wild: context.jsonl)')
    .requiredOption('--reference <file>', 'GPT-4 reference answers JSONL (Assistant 1)')
    .requiredOption('--answers <file>', "the model's answers JSONL (Assistant 2)")
    .requiredOption('--output <file>', 'review JSONL (appended; reviewed question_ids are skipped)')
    .option('--rule <file>', 'rule.json to use instead of the built-in rule prompts')
    .option('--judge-model <name>', 'judge model', 'gpt-4-0314')
    .option('--api-key <key>', 'API key (default: env OPENAI_API_KEY)')
    .option('--base-url <url>', 'API root, e.g. http://localhost:8000/v1 (default: env OPENAI_BASE_URL or https://api.openai.com/v1)')
    .option('--temperature <t>', 'judge temperature', floatArg(0, 2), 0.2)
    .option('--max-tokens <n>', 'judge max_tokens', intArg(1), 1024)
    .option('--concurrency <n>', 'requests in flight at most', intArg(1), 4)
    .option('--max-retries <n>', 'retries on 429 / 5xx / network errors', intArg(0), 6)
    .option('--timeout <s>', 'per-request timeout in seconds', floatArg(1), 120)
    .addOption(new Option('--progress <mode>', 'progress display').choices(['auto', 'bar', 'plain', 'none']).default('auto'))
    .addHelpText(
      'after',
      '\nExample:\n  OPENAI_API_KEY=... llava eval bench-review --benchmark wild --questions questions.jsonl --context context.jsonl \\\n    --reference answers_gpt4.jsonl --answers answers/wild.jsonl --output reviews/review_wild.jsonl',
    )
    .action(act('bench-review', (o: ReviewCliOptions) => reviewAction(o, ctx)));

  ev.command('bench-summary')
    .description('relative scores per category and overall from review JSONL files (summarize_gpt_review.py)')
    .argument('[files...]', 'review JSONL files')
    .option('--dir <dir>', 'folder of review_*.jsonl / reviews_*.jsonl / gpt4_text*.jsonl files (or the folder the files are in)')
    .option('--ignore <ids...>', 'question_ids to leave out', (v: string, prev: number[] | undefined) => [...(prev ?? []), intArg(0)(v)])
    .option('--json', 'print {file: rows} as JSON')
    .addHelpText(
      'after',
      '\nOutput per file: its name, then "<category> <relative> <10*ref> <10*model>" per row.\n\nExample:\n  llava eval bench-summary reviews/review_wild.jsonl',
    )
    .action(act('bench-summary', (files: string[], o: SummaryCliOptions) => summaryAction(files, o, ctx)));

  return ev;
}
