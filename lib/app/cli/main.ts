#!/usr/bin/env node
// main.ts — the `llava` program (package.json "bin": dist/lib/app/cli/main.js). It only assembles the
// commands; each group lives in its own file and registers itself:
//   train.ts      train, preprocess            inference.ts  chat, verify
//   datagen.ts    gen-data, collect-data, ...  eval.ts       eval sqa-* / bench-*
//   serve.ts      serve                       convert.ts    convert
//
// Conventions shared by every command (util.ts): commander validates numbers and choices; any other bad
// input ends in one line `llava <command>: error: ...` on stderr and exit code 1 (the stack too with
// LLAVA_DEBUG set); commander's own usage errors also exit 1. Heavy modules (the native addon, models) are
// imported inside the actions, so `--help` starts fast and works without the addon.
import { Command } from 'commander';
import { registerConvertCommand } from './convert';
import { registerDataCommands } from './datagen';
import { registerEvalCommands } from './eval';
import { registerInferenceCommands } from './inference';
import { registerServeCommand } from './serve';
import { registerPreprocessCommand, registerTrainCommand } from './train';
import { packageVersion } from '../util/paths';

export function buildProgram(): Command {
  const program = new Command('llava');
  program
    .description('LLaVA on a from-scratch tensor engine: train, chat, verify, inspect preprocessing')
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  program.version(packageVersion());

  // Registration order is the order of `llava --help`.
  registerTrainCommand(program);
  registerInferenceCommands(program);
  registerPreprocessCommand(program);
  registerDataCommands(program);
  registerEvalCommands(program);
  registerServeCommand(program);
  registerConvertCommand(program);
  return program;
}

export async function main(argv: string[] = process.argv): Promise<void> {
  await buildProgram().parseAsync(argv);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`llava: error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  });
}
