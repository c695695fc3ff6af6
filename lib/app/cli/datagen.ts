#!/usr/bin/env node
// datagen.ts — commands of the GPT-assisted data pipeline (lib/app/datagen/), for the `llava` program:
//   gen-data        COCO captions (+ instances) -> prompts -> chat-completions API -> LLaVA JSON
//   collect-data    generation JSONL file(s) -> one LLaVA JSON array
//   export-prompts  the built-in system messages and few-shot examples, in the reference folder layout
//
// `registerDataCommands(program)` adds them to a commander program (main.ts's `buildProgram()` calls it);
// run directly (`node dist/lib/app/cli/datagen.js gen-data ...`) the file is a small program of its own.
//
// Decisions:
// - Same conventions as main.ts: commander validates numbers and choices; every other bad input ends in one
//   line `llava <command>: error: ...` on stderr and exit code 1 (stack with LLAVA_DEBUG set).
// - gen-data writes into --out: <type>.jsonl (one line per image: raw response + parsed record, appended as
//   responses arrive, read back on restart), then llava_instruct_<type>.json (the LLaVA array, rebuilt from the
//   whole JSONL each time). --dry-run writes <type>.prompts.jsonl (OpenAI Batch-API request lines) instead and
//   prints the first chat; it needs no key.
// - --limit / --offset select images by position in the captions file, before the already-done ones are
//   skipped, so the same command can simply be rerun to resume.
// - Malformed model outputs are listed (image id + reason) but do not fail the command; requests that still
//   failed after the retries make it exit 1 after writing everything else (rerun to retry them).
import * as fs from 'fs';
import * as path from 'path';
import { Command, Option } from 'commander';
import { UsageError, floatArg, intArg, mustFile, runAction } from './util';
import { DEFAULT_MODEL } from '../util/openai';
import type { CoordStyle, ImageIssue, ImagePosition, ProgressMode } from '../datagen/index';

/** File names gen-data uses inside --out. */
export function genDataPaths(out: string, type: string): { jsonl: string; json: string; prompts: string } {
  return {
    jsonl: path.join(out, `${type}.jsonl`),
    json: path.join(out, `llava_instruct_${type}.json`),
    prompts: path.join(out, `${type}.prompts.jsonl`),
  };
}

function listIssues(what: string, issues: ImageIssue[], max = 20): void {
  for (const i of issues.slice(0, max)) process.stderr.write(`[gen-data] image ${i.imageId}: ${what}: ${i.reason}\n`);
  if (issues.length > max) process.stderr.write(`[gen-data] ... and ${issues.length - max} more ${what} (see the JSONL file)\n`);
}

// ---------------------------------------------------------------------------------------------------------
// gen-data

interface GenDataCliOptions {
  type: string;
  captions: string;
  instances?: string;
  out: string;
  limit?: number;
  offset: number;
  concurrency: number;
  model: string;
  temperature?: number;
  maxTokens?: number;
  baseUrl?: string;
  apiKey?: string;
  dryRun?: boolean;
  promptsDir?: string;
  fewShot?: number;
  seed: number;
  imagePosition: string;
  imagePrefix: string;
  coords: string;
  maxRetries: number;
  retryBaseMs: number;
  timeout: number;
  retryFailed?: boolean;
  progress: string;
}

async function genDataAction(o: GenDataCliOptions): Promise<void> {
  const g = await import('../datagen/index');
  const type = g.parseDataType(o.type);
  mustFile(o.captions, 'captions file');
  if (o.instances !== undefined) mustFile(o.instances, 'instances file');
  else if (g.usesBoxes(type)) throw new UsageError(`--instances is required for --type ${type} (its prompts list the object boxes)`);
  if (fs.existsSync(o.out) && !fs.statSync(o.out).isDirectory()) throw new UsageError(`output ${o.out} exists and is not a directory`);

  // The conversation context uses captions only: the instances file is not read for it.
  const coco = g.loadCoco(o.captions, g.usesBoxes(type) ? o.instances : undefined);
  for (const w of coco.warnings) process.stderr.write(`[gen-data] warning: ${w}\n`);
  const images = coco.images.slice(o.offset, o.limit === undefined ? undefined : o.offset + o.limit);
  if (images.length === 0)
    throw new UsageError(
      `no images selected (${coco.images.length} with captions in ${o.captions}, --offset ${o.offset}${o.limit !== undefined ? `, --limit ${o.limit}` : ''})`,
    );
  const prompts = o.promptsDir !== undefined ? g.loadPromptSet(o.promptsDir, type) : g.builtinPromptSet(type);
  const fewShot = o.fewShot ?? prompts.examples.length;
  const paths = genDataPaths(o.out, type);
  const coordStyle = o.coords as CoordStyle;
  fs.mkdirSync(o.out, { recursive: true });

  if (o.dryRun) {
    const r = g.writeDryRun({
      type,
      images,
      outFile: paths.prompts,
      prompts,
      fewShot,
      model: o.model,
      temperature: o.temperature,
      maxTokens: o.maxTokens,
      coordStyle,
    });
    if (r.first) process.stdout.write(`${g.renderMessages(r.first)}\n-----\n`);
    process.stdout.write(
      `[gen-data] dry run: ${r.count} ${type} prompt(s) (${Math.min(fewShot, prompts.examples.length)} few-shot examples, ${prompts.source}) written to ${r.outFile}\n`,
    );
    return;
  }

  const client = new g.OpenAIChatClient({
    apiKey: o.apiKey,
    baseUrl: o.baseUrl,
    model: o.model,
    temperature: o.temperature,
    maxTokens: o.maxTokens,
    maxRetries: o.maxRetries,
    retryBaseMs: o.retryBaseMs,
    timeoutMs: o.timeout * 1000,
    missingKeyHint: '(or use --dry-run to write the prompts without calling the API)',
  });
  const log = (m: string): void => void process.stderr.write(m + '\n');
  log(
    `[gen-data] ${type}: ${images.length} image(s), model ${client.model} at ${client.baseUrl}, concurrency ${o.concurrency}, prompts ${prompts.source}`,
  );
  const s = await g.generateInstructData({
    type,
    images,
    client,
    outJsonl: paths.jsonl,
    prompts,
    fewShot,
    concurrency: o.concurrency,
    seed: o.seed,
    imagePosition: o.imagePosition as ImagePosition,
    imagePrefix: o.imagePrefix,
    coordStyle,
    retryFailed: o.retryFailed,
    progress: o.progress as ProgressMode,
    log,
  });
  listIssues('malformed output', s.parseErrors);
  listIssues('request failed', s.apiErrors);
  const c = g.collectInstructData([paths.jsonl], paths.json);
  process.stdout.write(
    `[gen-data] ${type}: ${s.total} image(s): ${s.alreadyDone} already done, ${s.completed} answered this run ` +
      `(${s.parseErrors.length} malformed), ${s.apiErrors.length} failed\n` +
      `[gen-data] wrote ${c.records.length} record(s) to ${paths.json} (responses in ${paths.jsonl}` +
      `${c.failures.length ? `; ${c.failures.length} malformed output(s) left out` : ''})\n`,
  );
  if (s.apiErrors.length) throw new Error(`${s.apiErrors.length} request(s) failed after retries; rerun the same command to retry them`);
}

// ---------------------------------------------------------------------------------------------------------
// collect-data / export-prompts

async function collectAction(files: string[], o: { out: string }): Promise<void> {
  const g = await import('../datagen/index');
  for (const f of files) mustFile(f, 'JSONL file');
  const c = g.collectInstructData(files, o.out);
  for (const b of c.bad) process.stderr.write(`[collect-data] warning: ${b.file}:${b.line} ignored: ${b.reason}\n`);
  for (const f of c.failures.slice(0, 20))
    process.stderr.write(`[collect-data] ${f.type} image ${f.imageId}: malformed output left out: ${f.reason}\n`);
  if (c.failures.length > 20) process.stderr.write(`[collect-data] ... and ${c.failures.length - 20} more malformed outputs\n`);
  for (const f of c.invalid) process.stderr.write(`[collect-data] ${f.type} image ${f.imageId}: invalid record left out: ${f.reason}\n`);
  process.stdout.write(`[collect-data] wrote ${c.records.length} record(s) from ${files.length} file(s) to ${o.out}\n`);
}

async function exportPromptsAction(o: { out: string; type?: string }): Promise<void> {
  const g = await import('../datagen/index');
  const types = o.type !== undefined ? [g.parseDataType(o.type)] : g.GPT_DATA_TYPES;
  const files = g.writePromptsDir(o.out, types);
  process.stdout.write(`[export-prompts] wrote ${files.length} file(s) under ${o.out} (edit them and pass --prompts-dir ${o.out} to gen-data)\n`);
}

// ---------------------------------------------------------------------------------------------------------
// Registration

/** Adds gen-data, collect-data and export-prompts to a commander program. */
export function registerDataCommands(program: Command): Command {
  const prog = program.name() || 'llava';
  program
    .command('gen-data')
    .description('generate LLaVA instruction data from COCO annotations with a GPT model (conversation, detail, complex_reasoning)')
    .addOption(new Option('--type <type>', 'kind of data').choices(['conversation', 'detail', 'complex_reasoning']).makeOptionMandatory())
    .requiredOption('--captions <file>', 'COCO captions_*.json (images + captions)')
    .option('--instances <file>', 'COCO instances_*.json (object boxes; required for detail and complex_reasoning)')
    .requiredOption('--out <dir>', 'output directory (<type>.jsonl, llava_instruct_<type>.json, or <type>.prompts.jsonl with --dry-run)')
    .option('--limit <n>', 'use at most n images (after --offset)', intArg(1))
    .option('--offset <n>', 'skip the first n images of the captions file', intArg(0), 0)
    .option('--concurrency <n>', 'requests in flight at once', intArg(1), 4)
    .option('--model <name>', 'chat model name', DEFAULT_MODEL)
    .option('--temperature <t>', "sampling temperature (default: the server's)", floatArg(0, 2))
    .option('--max-tokens <n>', "max_tokens of each request (default: the server's)", intArg(1))
    .option(
      '--base-url <url>',
      'OpenAI-compatible API base, requests go to <url>/chat/completions (default: $OPENAI_BASE_URL or https://api.openai.com/v1)',
    )
    .option('--api-key <key>', 'API key (default: $OPENAI_API_KEY)')
    .option('--dry-run', 'only write the prompts (OpenAI Batch-API request lines) and print the first one; no API key needed')
    .option(
      '--prompts-dir <dir>',
      'system message and few-shot examples in the reference layout (<dir>/<type folder>/NNN_caps.txt, NNN_conv.txt, system_message.txt)',
    )
    .option('--few-shot <n>', 'use only the first n few-shot examples (default: all: 2 conversation, 3 detail, 3 complex_reasoning)', intArg(0))
    .option('--seed <n>', 'seed of the detail-question draw and of --image-position random', intArg(0), 42)
    .addOption(new Option('--image-position <pos>', 'where <image> goes in the first question').choices(['first', 'last', 'random']).default('first'))
    .option('--image-prefix <prefix>', "prefix of each record's image path (e.g. coco/train2017/)", '')
    .addOption(
      new Option('--coords <style>', "box numbers: fixed = '%.3f' (0.500), round = round(v, 3) (0.5)").choices(['fixed', 'round']).default('fixed'),
    )
    .option('--max-retries <n>', 'retries on 408/429/5xx and network errors', intArg(0), 5)
    .option('--retry-base-ms <ms>', 'first backoff delay, doubled on each retry', intArg(0), 1000)
    .option('--timeout <s>', 'per-request timeout in seconds', floatArg(0.001), 300)
    .option('--retry-failed', 'ask again for images whose earlier output was malformed')
    .addOption(new Option('--progress <mode>', 'progress display').choices(['auto', 'bar', 'plain', 'none']).default('auto'))
    .action(runAction('gen-data', genDataAction, prog));

  program
    .command('collect-data')
    .description('merge gen-data JSONL file(s) into one LLaVA JSON array (malformed outputs are reported and left out)')
    .argument('<jsonl...>', 'JSONL files written by gen-data')
    .requiredOption('--out <file>', 'output JSON file, e.g. llava_instruct_mix.json')
    .action(runAction('collect-data', collectAction, prog));

  program
    .command('export-prompts')
    .description('write the built-in system messages and few-shot examples in the reference layout, to edit and use with --prompts-dir')
    .requiredOption('--out <dir>', 'output directory')
    .addOption(new Option('--type <type>', 'only this type').choices(['conversation', 'detail', 'complex_reasoning']))
    .action(runAction('export-prompts', exportPromptsAction, prog));
  return program;
}

if (require.main === module) {
  const program = new Command('llava')
    .description('GPT-assisted instruction data for LLaVA')
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerDataCommands(program)
    .parseAsync(process.argv)
    .catch((e) => {
      process.stderr.write(`llava: error: ${(e as Error).message}\n`);
      process.exitCode = 1;
    });
}
