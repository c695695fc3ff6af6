// index.ts — the GPT-assisted data pipeline as the package exports it (`L.gptData`): every step's names
// (context, prompt sets, reply parsing, the JSONL log and collection, the run itself), the fixed prompt
// texts, and the shared chat-completions client with its types.
export * from './common';
export * from './context';
export * from './prompt_set';
export * from './parse';
export * from './collect';
export * from './pipeline';
export * from './prompts';
export * from '../util/openai';
export type { ProgressMode } from '../util/progress';
