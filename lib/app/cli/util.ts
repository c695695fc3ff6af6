// util.ts — what every `llava` command shares: number parsers for commander options, path checks,
// and the action wrapper that turns any error into one line `llava <command>: error: ...` on stderr and
// exit code 1 (the stack too when LLAVA_DEBUG is set). A UsageError is a mistake in the arguments.
import * as fs from 'fs';
import * as path from 'path';
import { InvalidArgumentError } from 'commander';
import { commandErrorLine } from '../util/messages';

/** Parser for an integer option >= min. */
export function intArg(min: number) {
  return (v: string): number => {
    if (!/^[+-]?\d+$/.test(v.trim())) throw new InvalidArgumentError('not an integer.');
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`must be an integer >= ${min}.`);
    return n;
  };
}

/** Parser for a finite number option in [min, max]. */
export function floatArg(min: number, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('not a number.');
    if (n < min || n > max) throw new InvalidArgumentError(`must be between ${min} and ${max}.`);
    return n;
  };
}

export class UsageError extends Error {}

export function mustDir(p: string, what: string): string {
  if (!fs.existsSync(p)) throw new UsageError(`${what} ${p} not found`);
  if (!fs.statSync(p).isDirectory()) throw new UsageError(`${what} ${p} is not a directory`);
  return p;
}

export function mustFile(p: string, what: string): string {
  if (!fs.existsSync(p)) throw new UsageError(`${what} ${p} not found`);
  if (!fs.statSync(p).isFile()) throw new UsageError(`${what} ${p} is not a file`);
  return p;
}

/** A model directory: exists and has a config.json. */
export function mustModelDir(p: string): string {
  mustDir(p, 'model directory');
  mustFile(path.join(p, 'config.json'), 'model config');
  return p;
}

/** --template: a hand-written template's name or 'chat_template' (the checkpoint's Jinja one), if given. */
export async function mustTemplateName(name: string | undefined): Promise<void> {
  const { TEMPLATE_NAMES } = await import('../processing/conversation');
  const { CHAT_TEMPLATE } = await import('../processing/chat_template');
  if (name !== undefined && !TEMPLATE_NAMES.includes(name) && name !== CHAT_TEMPLATE)
    throw new UsageError(`unknown template '${name}' (${TEMPLATE_NAMES.join(', ')}, ${CHAT_TEMPLATE})`);
}

/** Where a failed action reports (tests pass their own; default: stderr, process.env, process.exitCode). */
export interface ActionIO {
  err?: (s: string) => void;
  env?: NodeJS.ProcessEnv;
  setExitCode?: (code: number) => void;
}

/** Wraps a command action: errors become `<prog> <name>: error: <message>` and exit code 1; a leading
 *  `[name] ` in the message that repeats the command is dropped (util/messages.ts). */
export function runAction<A extends unknown[]>(name: string, fn: (...a: A) => Promise<void> | void, prog = 'llava', io: ActionIO = {}) {
  const err = io.err ?? ((s: string) => void process.stderr.write(s));
  return async (...a: A): Promise<void> => {
    try {
      await fn(...a);
    } catch (e) {
      const msg = (e as Error)?.message ?? String(e);
      err(`${commandErrorLine(prog, name, msg)}\n`);
      if ((io.env ?? process.env).LLAVA_DEBUG) err(`${(e as Error).stack}\n`);
      if (io.setExitCode) io.setExitCode(1);
      else process.exitCode = 1;
    }
  };
}
