// convert.ts — `llava convert <input> <output>`: writes the safetensors equivalent of a PyTorch checkpoint
// (a .bin/.pt file, or a model folder with pytorch_model*.bin shards and their index), via io/convert.ts.
// Progress goes to stderr (a line per output file and a tensor counter), the summary to stdout.
import { Command } from 'commander';
import { runAction } from './util';

async function convertAction(input: string, output: string, o: { quiet?: boolean }): Promise<void> {
  const { convertToSafetensors } = await import('../../io/convert');
  const tty = process.stderr.isTTY;
  const started = Date.now();
  const r = convertToSafetensors(input, output, {
    onProgress: (done, total) => {
      if (o.quiet) return;
      if (tty) process.stderr.write(`\r[convert] ${done}/${total} tensors`);
      else if (done === total || done % 100 === 0) process.stderr.write(`[convert] ${done}/${total} tensors\n`);
    },
    onFile: (f) => {
      if (!o.quiet) process.stderr.write(`${tty ? '\n' : ''}[convert] wrote ${f}\n`);
    },
  });
  const mb = (r.bytes / 1e6).toFixed(1);
  process.stdout.write(`converted ${r.tensors} tensors (${mb} MB) from ${input} to ${output} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

/** Adds `convert` to a commander program. */
export function registerConvertCommand(program: Command): Command {
  program
    .command('convert')
    .description('write the safetensors equivalent of a PyTorch checkpoint (.bin/.pt file, or a model folder, sharded or not)')
    .argument('<input>', 'PyTorch (or safetensors) checkpoint file, or model folder')
    .argument('<output>', 'new .safetensors file (for a file input) or new folder (for a folder input)')
    .option('--quiet', 'no progress output')
    .action(runAction('convert', convertAction));
  return program;
}
