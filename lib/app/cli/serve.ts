#!/usr/bin/env node
// serve.ts — the `llava serve` command: load one model and serve it over HTTP (serve/server.ts) until SIGINT
// or SIGTERM.
//
// `registerServeCommand(program)` adds the command to a commander program (cli/main.ts does); run
// directly (`node dist/lib/app/cli/serve.js serve --model DIR`) the file is a small program of its own.
//
// Decisions:
// - Same conventions as the other commands: commander validates numbers and choices, the model directory
//   is checked before anything heavy loads, every other bad input ends in one line `llava serve: error: ...` on stderr
//   and exit code 1 (runAction in cli/util.ts). The server (and with it the native addon) is imported inside
//   the action, so `--help` stays fast.
// - When the server listens, one line on stdout: `llava serve: listening on http://HOST:PORT (model NAME,
//   template T (why), aspect A (why), DEVICE/DTYPE; batching; access)`; with --port 0 the line carries the
//   port the system picked. Request log lines go to stderr.
// - SIGINT / SIGTERM: stop listening, stop the running and queued completions, close connections, free the
//   model, exit 0. A second signal while shutting down exits at once (code 130).
// - Hardening (serve/guard.ts, serve/server.ts): --api-key, else the LLAVA_API_KEY environment variable
//   (better: a key on the command line shows in `ps`), --cors, --max-connections and the two timeouts
//   (seconds here, milliseconds in ServeOptions). An empty key means none.
import { Command, InvalidArgumentError, Option } from 'commander';
import { UsageError, intArg, mustDir, mustModelDir, mustTemplateName, runAction } from './util';
import { DEVICES, INFERENCE_DTYPES } from '../util/runtime';

interface ServeCliOptions {
  model: string;
  host?: string;
  port?: number;
  template?: string;
  aspect?: 'square' | 'pad';
  device: string;
  dtype: string;
  visionTower?: string;
  modelBase?: string;
  load8bit?: boolean;
  load4bit?: boolean;
  apiKey?: string;
  cors?: string;
  maxConnections?: number;
  maxBatch?: number;
  prefixCache?: number;
  prefillChunk?: number;
  headersTimeout?: number;
  requestTimeout?: number;
}

/** Parser for a TCP port (0 = let the system pick one). */
function portArg(v: string): number {
  const n = intArg(0)(v);
  if (n > 65535) throw new InvalidArgumentError('must be between 0 and 65535.');
  return n;
}

async function serveAction(o: ServeCliOptions): Promise<void> {
  mustModelDir(o.model);
  if (o.visionTower) mustDir(o.visionTower, 'vision tower directory');
  if (o.host !== undefined && o.host.trim() === '') throw new UsageError('--host must not be empty');
  await mustTemplateName(o.template);

  const { startServer, parseCors } = await import('../serve/server');
  const { modelLoadOptions } = await import('../processing/session');
  let cors: string[] | '*' | undefined;
  try {
    cors = o.cors === undefined ? undefined : parseCors(o.cors);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^\[serve\] /, ''));
  }
  const apiKey = o.apiKey ?? process.env.LLAVA_API_KEY;
  const headersTimeoutMs = o.headersTimeout === undefined ? undefined : o.headersTimeout * 1000;
  const requestTimeoutMs = o.requestTimeout === undefined ? undefined : o.requestTimeout * 1000;
  if (headersTimeoutMs !== undefined && requestTimeoutMs !== undefined && headersTimeoutMs > requestTimeoutMs)
    throw new UsageError('--headers-timeout must not exceed --request-timeout');
  const running = await startServer({
    model: o.model,
    host: o.host,
    port: o.port,
    template: o.template,
    aspect: o.aspect,
    ...modelLoadOptions(o),
    apiKey: apiKey || undefined,
    cors,
    maxConnections: o.maxConnections,
    maxBatch: o.maxBatch,
    prefixCache: o.prefixCache,
    prefillChunk: o.prefillChunk,
    headersTimeoutMs,
    requestTimeoutMs,
  });
  const s = running.server.llava;
  const stopped = new Promise<void>((resolve, reject) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) {
        process.stderr.write(`llava serve: ${sig} again, exiting now\n`);
        process.exit(130);
      }
      stopping = true;
      process.stderr.write(`llava serve: ${sig}, shutting down\n`);
      running.close().then(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.stdout.write('llava serve: stopped\n');
        resolve();
      }, reject);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  // Printed only once the signal handlers are in place: whoever waits for this line may signal at once.
  const batching =
    `up to ${s.maxBatch} decoded together, prefill ${s.prefillChunk ? `in chunks of ${s.prefillChunk}` : 'whole'}, ` +
    `prefix cache ${s.prefixCache ? `${s.prefixCache} positions` : 'off'}`;
  const access = `${apiKey ? 'API key required' : 'no API key'}, ${cors === undefined ? 'no CORS' : `CORS ${cors === '*' ? '*' : cors.join(',')}`}`;
  process.stdout.write(
    `llava serve: listening on ${running.url} (model ${s.modelName}, ${s.describe}, ${s.device}/${s.dtype}; ${batching}; ${access}); Ctrl-C stops\n`,
  );
  await stopped;
}

/** Adds `serve` to a commander program. */
export function registerServeCommand(program: Command): Command {
  program
    .command('serve')
    .description('serve one model over HTTP: OpenAI-compatible POST /v1/chat/completions (+ GET /v1/models, GET /health)')
    .requiredOption('--model <dir>', 'model directory')
    .option('--host <host>', 'address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)')
    .option('--port <n>', 'TCP port, 0 = any free port (default 8000)', portArg)
    .option(
      '--template <name>',
      "conversation template, or chat_template for the checkpoint's Jinja one (default: the one the model was trained with, else from its format / name)",
    )
    .addOption(new Option('--aspect <mode>', 'image preprocessing (default: from the model)').choices(['square', 'pad']))
    .addOption(new Option('--device <device>', 'compute device').choices(DEVICES).default('cpu'))
    .addOption(new Option('--dtype <dtype>', 'parameter dtype').choices(INFERENCE_DTYPES).default('float32'))
    .option('--vision-tower <dir>', 'CLIP directory for original llava_llama checkpoints')
    .option('--model-base <dir>', '--model is a LoRA adapter: merge it into this base model')
    .option('--load-8bit', 'store the language model linears as int8 (per channel)')
    .option('--load-4bit', 'store the language model linears as NF4 (blocks of 64)')
    .option('--api-key <key>', 'require Authorization: Bearer <key> on every route but /health (default: $LLAVA_API_KEY, else none)')
    .option(
      '--cors <origins>',
      "origins allowed to call from a browser: comma-separated list or '*' (default: none; requests with another Origin get 403)",
    )
    .option('--max-batch <n>', 'completions decoded together; more wait for a free row (default 4; 1: one at a time)', intArg(1))
    .option(
      '--prefill-chunk <n>',
      'prompt positions prefilled per step while other completions decode, so they keep streaming (default 512; 0: whole prompts)',
      intArg(0),
    )
    .option('--prefix-cache <n>', 'positions of finished requests kept to reuse as prompt prefixes (default: the context length; 0: off)', intArg(0))
    .option('--max-connections <n>', 'open connections at most; more are dropped (default 64)', intArg(1))
    .option('--headers-timeout <s>', 'seconds a client has to send its request headers (default 30)', intArg(1))
    .option('--request-timeout <s>', 'seconds a client has to send its whole request, body included (default 120)', intArg(1))
    .action(runAction('serve', serveAction));
  return program;
}

if (require.main === module) {
  const program = new Command('llava').description('llava serve (standalone)').showHelpAfterError('(add --help for usage)');
  registerServeCommand(program)
    .parseAsync(process.argv)
    .catch((e) => {
      process.stderr.write(`llava: error: ${(e as Error).message}\n`);
      process.exitCode = 1;
    });
}
