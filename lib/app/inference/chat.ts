// chat.ts — `llava chat`: ask about one image, streaming the answer; without a prompt, an interactive loop
// on stdin that keeps the conversation (the image goes into the first user turn only, spec §9).
//
// Template: --template, else llava-hf checkpoints use `llava_hf` ('USER: <image>\n... ASSISTANT:'), and
// original checkpoints pick by model name as the reference CLI does (llama-2 → llava_llama_2, v1 →
// llava_v1, else llava_v0; the name is the directory's last component, or the last two joined by '_' when
// it is a `checkpoint-*` directory). The template's stop string (`###` for SINGLE, `</s>` for TWO) ends a
// reply besides EOS. Defaults follow the reference CLI: temperature 0.2, no top_p, 512 new tokens.
// Images: llava-hf checkpoints are preprocessed as HF's processor does (no pad-to-square); original ones
// follow their config's image_aspect_ratio. The whole conversation is prefilled again each turn.
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';
import * as L from '../../index';
import { Tensor } from '../../core/tensor';
import { loadLlava } from '../../models/loader';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { Tokenizer } from '../processing/tokenizer';
import { resolveProcessorConfig } from '../train/dataset';
import { CLIPImageProcessor, AspectMode } from '../processing/image';
import { buildPrompt, getTemplate, stopString, templateForModelName } from '../processing/conversation';
import { generate, encodePrompt, checkRuntime } from './generate';

export interface ChatOptions {
  /** Model directory. */
  model: string;
  /** Image file (PNG or JPEG). */
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
  /** CLIP directory for original llava_llama checkpoints. */
  visionTower?: string;
  /** Image preprocessing: 'pad' (expand to square) or 'square' (crop); default `defaultAspect(model)`. */
  aspect?: AspectMode;
  /** Streams (default process.stdin / process.stdout). */
  input?: NodeJS.ReadableStream;
  output?: { write(s: string): unknown };
}

/** The reference's get_model_name_from_path. */
export function modelNameFromPath(modelPath: string): string {
  const parts = modelPath.replace(/[/\\]+$/, '').split(/[/\\]/);
  const last = parts[parts.length - 1] ?? '';
  return last.startsWith('checkpoint-') && parts.length > 1 ? `${parts[parts.length - 2]}_${last}` : last;
}

/** The default template for a loaded model (llava-hf → llava_hf; original → by model name). */
export function defaultTemplate(model: LlavaForConditionalGeneration, modelPath: string): string {
  return model.config.format === 'llava-hf' ? 'llava_hf' : templateForModelName(modelNameFromPath(path.resolve(modelPath)));
}

/** llava-hf's processor never pads (the fixture's pixel_values are the unpadded ones); original checkpoints
 *  follow their config's image_aspect_ratio (process_images, spec §2.2). */
export function defaultAspect(model: LlavaForConditionalGeneration): AspectMode {
  return model.config.format === 'llava-hf' ? 'square' : (model.config.imageAspectRatio ?? 'square');
}

/** `llava chat`: returns 0 on success. Setup problems (missing image or model, no CUDA, unknown template)
 *  throw an Error with a message for the user. */
export async function runChat(o: ChatOptions): Promise<number> {
  const out = o.output ?? process.stdout;
  const { device, dtype } = checkRuntime(o.device, o.dtype);
  if (!o.image) throw new Error('chat: an image is required (--image)');
  if (!fs.existsSync(o.image)) throw new Error(`chat: image file ${o.image} not found`);
  if (!fs.statSync(o.image).isFile()) throw new Error(`chat: ${o.image} is not a file`);
  if (!fs.existsSync(path.join(o.model, 'config.json'))) throw new Error(`chat: ${o.model} is not a model directory (no config.json)`);
  if (o.template) getTemplate(o.template); // unknown names fail before the model loads
  const temperature = o.temperature ?? 0.2;
  const maxNewTokens = o.maxNewTokens ?? 512;

  const tokenizer = Tokenizer.fromDir(o.model);
  const model = loadLlava(o.model, { dtype, device, visionTower: o.visionTower });
  let pixels: Tensor | null = null;
  try {
    const template = o.template ?? defaultTemplate(model, o.model);
    const conv = getTemplate(template);
    const stop = stopString(conv);
    const proc = new CLIPImageProcessor(resolveProcessorConfig(o.model, { visionDir: o.visionTower, imageSize: model.config.vision.image_size }));
    let pv;
    try {
      pv = proc.preprocess(o.image, { aspect: o.aspect ?? defaultAspect(model) });
    } catch (e) {
      throw new Error(`chat: cannot read image ${o.image}: ${(e as Error).message}`);
    }
    const S = model.config.vision.image_size;
    if (pv.shape[1] !== S || pv.shape[2] !== S)
      throw new Error(`chat: the image processor makes ${pv.shape[1]}x${pv.shape[2]} images; the vision tower takes ${S}x${S}`);
    pixels = L.keep(L.tensor(pv.pixelValues, { shape: [1, ...pv.shape], dtype, device }));
    const history: Array<[string, string]> = [];

    const answer = async (question: string): Promise<string> => {
      const text = buildPrompt(template, question, { image: true, history });
      let reply = '';
      for await (const piece of generate(model, tokenizer, {
        promptIds: encodePrompt(model, tokenizer, text),
        pixelValues: pixels,
        temperature,
        topP: o.topP,
        topK: o.topK,
        maxNewTokens,
        // One seed per turn, derived from the session seed, so a replayed session is reproducible.
        seed: o.seed === undefined ? undefined : o.seed + history.length,
        stop,
      })) {
        reply += piece.text;
        if (piece.text) out.write(piece.text);
      }
      out.write('\n');
      return reply.trim();
    };

    if (o.prompt !== undefined) {
      await answer(o.prompt);
      return 0;
    }

    const rl = readline.createInterface({ input: o.input ?? process.stdin, terminal: false });
    const [user, assistant] = conv.roles;
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
    return 0;
  } finally {
    pixels?.dispose();
    model.dispose();
  }
}
