// index.ts — the evaluation surface the package exports as `L.evaluation`: ScienceQA (scienceqa.ts) and
// LLaVA-Bench (llava_bench.ts) formats and scoring, the shared error and readers, and the Python-style
// number formatting the reports use. The model-driven steps (answer.ts, judge.ts) are exported by
// lib/index.ts under their own names.
export * from './scienceqa';
export * from './llava_bench';
export { EvalError, readJson, validateBenchAnswers, type AnswerRecord } from './common';
export { pyFixed, pyRound, pyFloatRepr, pyFloat, pyFloatList, pyJsonDump } from '../util/pyformat';
export * from './scienceqa_gpt4';
