// inference.ts — the inference commands of `llava`: `chat` (ask about an image, streamed; interactive
// without --prompt) and `verify` (recompute a reference file and compare).
//
// Decisions:
// - Both are thin: the options go to runChat (inference/chat.ts) or runVerify (inference/verify.ts), which
//   validate the rest and load the model; they are imported inside the action so `--help` stays fast.
// - Options left unset are dropped before the call, so the functions' own defaults apply; a non-zero
//   return value becomes the exit code.
// - --device / --dtype choices come from util/runtime.ts, which runChat / runVerify check against.
import { Command, Option } from 'commander';
import { floatArg, intArg, runAction } from './util';
import { DEVICES, INFERENCE_DTYPES } from '../util/runtime';

/** The options that were given (undefined ones dropped). */
function given<T>(o: Record<string, unknown>): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function exitWith(code: number): void {
  if (code !== 0) process.exitCode = code;
}

async function chatAction(o: Record<string, unknown>): Promise<void> {
  const { runChat } = await import('../inference/chat');
  exitWith(await runChat(given(o)));
}

async function verifyAction(o: Record<string, unknown>): Promise<void> {
  const { runVerify } = await import('../inference/verify');
  exitWith(await runVerify(given(o)));
}

const deviceOption = (): Option => new Option('--device <device>', 'compute device').choices(DEVICES).default('cpu');
/** --model-base / --load-8bit / --load-4bit (session.ts WeightOptions), on chat, verify, serve and eval. */
export function addWeightOptions(c: Command): Command {
  return c
    .option('--model-base <dir>', '--model is a LoRA adapter (adapter_config.json): merge it into this base model')
    .option('--load-8bit', 'store the language model linears as int8 (per output channel)')
    .option('--load-4bit', 'store the language model linears as NF4 (blocks of 64)');
}

const dtypeOption = (): Option => new Option('--dtype <dtype>', 'parameter dtype').choices(INFERENCE_DTYPES).default('float32');

/** Adds `chat` and `verify` to a commander program. */
export function registerInferenceCommands(program: Command): Command {
  program
    .command('chat')
    .description('ask about an image, streaming the answer; without --prompt, an interactive session')
    .requiredOption('--model <dir>', 'model directory')
    .requiredOption('--image <file>', 'image file (PNG, JPEG, WebP or GIF)')
    .option('--prompt <text>', 'a single question (omit for an interactive session)')
    .option(
      '--template <name>',
      "conversation template, or chat_template for the checkpoint's Jinja one (default: the one the model was trained with, else from its format / name)",
    )
    .option('--temperature <t>', 'sampling temperature, 0 = greedy (default 0.2)', floatArg(0))
    .option('--top-p <p>', 'nucleus sampling probability', floatArg(0, 1))
    .option('--top-k <k>', 'keep the k most probable tokens', intArg(1))
    .option('--max-new-tokens <n>', 'generation limit (default 512)', intArg(0))
    .option('--seed <n>', 'sampling seed', intArg(0))
    .addOption(
      new Option('--aspect <mode>', 'image preprocessing (default: config.json image_aspect_ratio, else from the format)').choices(['square', 'pad']),
    )
    .addOption(deviceOption())
    .addOption(dtypeOption())
    .option('--vision-tower <dir>', 'CLIP directory for original llava_llama checkpoints');
  addWeightOptions(program.commands[program.commands.length - 1]).action(runAction('chat', chatAction));

  program
    .command('verify')
    .description('recompute a reference file (features, logits, losses, gradients, greedy ids) and compare')
    .requiredOption('--model <dir>', 'model directory')
    .requiredOption('--reference <file>', 'reference safetensors (layout of test/fixtures/tiny-llava/reference.safetensors)')
    .option('--atol <a>', 'absolute tolerance (default by dtype)', floatArg(0))
    .option('--rtol <r>', 'relative tolerance (default by dtype)', floatArg(0))
    .option('--out <file>', 'also write the results as JSON')
    .addOption(deviceOption())
    .addOption(dtypeOption())
    .option('--vision-tower <dir>', 'CLIP directory for original llava_llama checkpoints');
  addWeightOptions(program.commands[program.commands.length - 1]).action(runAction('verify', verifyAction));
  program
    .command('merge-lora')
    .description('merge a LoRA adapter into its base and write a complete model folder (merge_lora_weights.py)')
    .requiredOption('--model-path <dir>', 'the LoRA folder (adapter_config.json, adapter_model.safetensors, non_lora_trainables)')
    .requiredOption('--model-base <dir>', 'the base model it was trained from')
    .requiredOption('--save-model-path <dir>', 'output model folder')
    .action(
      runAction('merge-lora', async (o: { modelPath: string; modelBase: string; saveModelPath: string }) => {
        const { mergeLoraFolder } = await import('../train/lora');
        mergeLoraFolder(o.modelPath, o.modelBase, o.saveModelPath, (m) => process.stderr.write(m + '\n'));
      }),
    );
  return program;
}
