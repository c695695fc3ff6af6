// chat.ts — `llava chat`: ask about one image, streaming the answer; without a prompt, an interactive loop
// on stdin that keeps the conversation (the image goes into the first user turn only, docs/reference.md §9).
//
// The checkpoint is opened as an LlavaSession (processing/session.ts), which picks the template (--template,
// else the one the folder was trained with (config.json conversation_template), else for llava-hf checkpoints
// their Jinja chat_template or llava_hf, and by model name for original ones: llama-2 → llava_llama_2, v1 →
// llava_v1, else llava_v0), the aspect mode and the vision tower exactly as serve, eval and train do; one
// line on stderr says which template and aspect were chosen and why. The
// template's stop string (`###` for SINGLE, `</s>` for TWO) ends a reply besides EOS. Defaults follow the
// reference CLI: temperature 0.2, no top_p, 512 new tokens. Each turn's prompt is the whole conversation, as
// the reference CLI builds it, but only what the last turn added is prefilled: the turns go through a
// DecodeBatcher whose prefix cache keeps the conversation's keys and values (inference/prefix_cache.ts), so
// the image and the earlier turns are not computed again.
import * as fs from 'fs';
import * as readline from 'readline';
import type { Tensor } from '../../core/tensor';
import { LlavaSession, modelLoadOptions } from '../processing/session';
import { decodeImage, type AspectMode } from '../processing/image';
import { encodePrompt, contextLength } from './generate';
import { DecodeBatcher } from './batcher';
import { DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE } from '../../constants';

export interface ChatOptions {
  /** Model directory. */
  model: string;
  /** Image file (PNG, JPEG, WebP or GIF). */
  image: string;
  /** One question; without it, an interactive loop on `input`. */
  prompt?: string;
  /** Conversation template name (default: from the model format / name). */
  template?: string;
  temperature?: number;
  topP?: number;
  topK?: number;
  maxNewTokens?: number;
  device?: string;
  dtype?: string;
  seed?: number;
  /** CLIP directory for original llava_llama checkpoints (default: the config's mm_vision_tower). */
  visionTower?: string;
  /** LoRA adapter in `model` over this base; int8 / NF4 language model (session.ts WeightOptions). */
  modelBase?: string;
  load8bit?: boolean;
  load4bit?: boolean;
  /** Image preprocessing: 'pad' (expand to square) or 'square' (crop); default from the model. */
  aspect?: AspectMode;
  /** Streams (default process.stdin / process.stdout). */
  input?: NodeJS.ReadableStream;
  output?: { write(s: string): unknown };
  /** Where the "template ..., aspect ..." line goes (default: stderr). */
  info?: (line: string) => void;
}

/** Checks the --image argument before anything loads. */
function checkImageFile(image: string | undefined): void {
  if (!image) throw new Error('[chat] an image is required (--image)');
  if (!fs.existsSync(image)) throw new Error(`[chat] image file ${image} not found`);
  if (!fs.statSync(image).isFile()) throw new Error(`[chat] ${image} is not a file`);
}

/** The session `llava chat` opens for its options (the caller disposes it). */
export function openChatSession(
  o: Pick<ChatOptions, 'model' | 'template' | 'device' | 'dtype' | 'visionTower' | 'aspect' | 'modelBase' | 'load8bit' | 'load4bit'>,
): LlavaSession {
  return LlavaSession.load(o.model, { ...modelLoadOptions(o), template: o.template, aspect: o.aspect });
}

/** The image as chat feeds it to the model: a kept [1, 3, S, S] tensor (the caller disposes it). */
export function chatPixels(session: LlavaSession, image: string): Tensor {
  let rgb;
  try {
    rgb = decodeImage(image);
  } catch (e) {
    throw new Error(`[chat] cannot read image ${image}: ${(e as Error).message}`);
  }
  return session.pixelTensor(rgb);
}

/** `llava chat`: returns 0 on success. Setup problems (missing image or model, no CUDA, unknown template)
 *  throw an Error with a message for the user. */
export async function runChat(o: ChatOptions): Promise<number> {
  const out = o.output ?? process.stdout;
  checkImageFile(o.image);
  const session = openChatSession(o);
  (o.info ?? ((l: string) => process.stderr.write(l + '\n')))(`llava chat: ${session.describe()}`);
  let pixels: Tensor | null = null;
  const turns = new DecodeBatcher(session.model, session.tokenizer, { maxBatch: 1, prefixCachePositions: contextLength(session.model) });
  try {
    pixels = chatPixels(session, o.image);
    const history: Array<[string, string]> = [];
    const answer = (question: string): Promise<string> => answerTurn(session, turns, o, pixels!, history, question, out);
    if (o.prompt !== undefined) {
      await answer(o.prompt);
      return 0;
    }
    await interactiveLoop(session, o.input ?? process.stdin, out, history, answer);
    return 0;
  } finally {
    await turns.dispose();
    pixels?.dispose();
    session.dispose();
  }
}

/** One reply, streamed to `out`; returns the reply text (trimmed). */
async function answerTurn(
  session: LlavaSession,
  turns: DecodeBatcher,
  o: ChatOptions,
  pixels: Tensor,
  history: Array<[string, string]>,
  question: string,
  out: { write(s: string): unknown },
): Promise<string> {
  const text = session.prompt(question, { image: true, history });
  let reply = '';
  await turns.submit({
    promptIds: encodePrompt(session.model, session.tokenizer, text),
    pixelValues: pixels,
    temperature: o.temperature ?? DEFAULT_TEMPERATURE,
    topP: o.topP,
    topK: o.topK,
    maxNewTokens: o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS,
    // One seed per turn, derived from the session seed, so a replayed conversation is reproducible.
    seed: o.seed === undefined ? undefined : o.seed + history.length,
    stop: session.stop,
    prefixKey: 'the chat image', // one image for the whole conversation
    onPiece: (piece) => {
      reply += piece.text;
      if (piece.text) out.write(piece.text);
    },
  });
  out.write('\n');
  return reply.trim();
}

/** Reads questions line by line until 'exit' or the end of the input, keeping the history. */
async function interactiveLoop(
  session: LlavaSession,
  input: NodeJS.ReadableStream,
  out: { write(s: string): unknown },
  history: Array<[string, string]>,
  answer: (q: string) => Promise<string>,
): Promise<void> {
  const rl = readline.createInterface({ input, terminal: false });
  const [user, assistant] = session.roles;
  try {
    out.write(`${user}: `);
    for await (const raw of rl) {
      const q = raw.trim();
      if (q === 'exit') break;
      if (q) {
        out.write(`${assistant}: `);
        history.push([q, await answer(q)]);
      }
      out.write(`${user}: `);
    }
  } finally {
    rl.close();
  }
  out.write('\n');
}
