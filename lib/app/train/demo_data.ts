// demo_data.ts — a small procedurally generated instruction set for the demo and the tests: coloured
// shapes (square, circle, triangle in red, green, blue, yellow) drawn into PNGs, with LLaVA-format JSON
// for both stages.
//
// Decisions:
// - Everything is generated from a seed, so the demo needs no downloaded or bundled binary data: images are
//   written at run time into a directory the caller chooses (a temp dir by default).
// - Images are 40x40 (and a few 48x36, to exercise resizing and the `pad` aspect), the shape's position and
//   size jittered by the seed; the tiny fixture's vision tower sees them at 28x28.
// - Answers start with "A ..." and the vocabulary is kept to words the tiny test tokenizer encodes in few
//   pieces. With that tokenizer the reference's v1 round-length masking leaves the ":" of "ASSISTANT:"
//   supervised too (its "ASSISTANT: " instruction piece ends in a merged ":▁" token); answers starting with
//   "A" keep every answer token supervised and the prompt ending "ASSISTANT:" lined up with training.
import * as fs from 'fs';
import * as path from 'path';
import { PNG } from 'pngjs';

import type { Sample } from '../processing/data';
import type { RgbImage } from '../processing/image';
import { mulberry32 } from '../util/random';
import { checkOptions, optionKeys } from '../../options';

export const COLOURS: Record<string, [number, number, number]> = {
  red: [220, 40, 40],
  green: [40, 170, 60],
  blue: [40, 70, 220],
  yellow: [235, 205, 30],
};
export const SHAPES = ['square', 'circle', 'triangle'] as const;
export type ShapeName = (typeof SHAPES)[number];

/** Draw one shape on a light background. */
export function drawShape(
  shape: ShapeName,
  colour: [number, number, number],
  opts: { width?: number; height?: number; seed?: number } = {},
): RgbImage {
  const W = opts.width ?? 40;
  const H = opts.height ?? 40;
  const rng = mulberry32(opts.seed ?? 1);
  const data = new Uint8Array(W * H * 3);
  const bg = [236 + Math.floor(rng() * 12), 236 + Math.floor(rng() * 12), 236 + Math.floor(rng() * 12)];
  for (let i = 0; i < W * H; i++) data.set(bg, i * 3);
  const m = Math.min(W, H);
  const r = m * (0.28 + rng() * 0.1); // half size
  const cx = W / 2 + (rng() - 0.5) * (W - 2 * r) * 0.5;
  const cy = H / 2 + (rng() - 0.5) * (H - 2 * r) * 0.5;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      let inside = false;
      if (shape === 'square') inside = Math.abs(dx) <= r && Math.abs(dy) <= r;
      else if (shape === 'circle') inside = dx * dx + dy * dy <= r * r;
      else {
        // upward triangle: apex at (cx, cy - r), base at y = cy + r
        const t = (dy + r) / (2 * r);
        inside = t >= 0 && t <= 1 && Math.abs(dx) <= t * r;
      }
      if (inside) data.set(colour, (y * W + x) * 3);
    }
  return { width: W, height: H, data };
}

export function writePng(file: string, img: RgbImage): void {
  const png = new PNG({ width: img.width, height: img.height });
  for (let i = 0; i < img.width * img.height; i++) {
    png.data[i * 4] = img.data[i * 3];
    png.data[i * 4 + 1] = img.data[i * 3 + 1];
    png.data[i * 4 + 2] = img.data[i * 3 + 2];
    png.data[i * 4 + 3] = 255;
  }
  fs.writeFileSync(file, PNG.sync.write(png));
}

export interface DemoItem {
  file: string;
  colour: string;
  shape: ShapeName;
}

export interface DemoData {
  dir: string;
  imageFolder: string;
  /** Stage-1 captions (one per image). */
  pretrainJson: string;
  /** Stage-2 conversations (image questions + a couple of text-only samples). */
  finetuneJson: string;
  items: DemoItem[];
}

export const DEMO_QUESTION = 'What is in the image?';
export const answerFor = (it: { colour: string; shape: string }): string => `A ${it.colour} ${it.shape}.`;

/** Generate images and both JSON files under `dir` (created if needed). `copies` images per colour×shape. */
export function makeDemoData(dir: string, opts: { seed?: number; copies?: number } = {}): DemoData {
  checkOptions('makeDemoData', opts, optionKeys<typeof opts>({ seed: true, copies: true }));
  const seed = opts.seed ?? 7;
  const copies = opts.copies ?? 1;
  const imageFolder = path.join(dir, 'images');
  fs.mkdirSync(imageFolder, { recursive: true });
  const items: DemoItem[] = [];
  let k = 0;
  for (const colour of Object.keys(COLOURS))
    for (const shape of SHAPES)
      for (let c = 0; c < copies; c++) {
        const wide = k % 5 === 4;
        const img = drawShape(shape, COLOURS[colour], { width: wide ? 48 : 40, height: wide ? 36 : 40, seed: seed * 1000 + k });
        const file = `${colour}_${shape}${copies > 1 ? `_${c}` : ''}.png`;
        writePng(path.join(imageFolder, file), img);
        items.push({ file, colour, shape });
        k++;
      }
  const pretrain: Sample[] = items.map((it, i) => ({
    id: `pre-${i}`,
    image: it.file,
    conversations: [
      { from: 'human', value: i % 2 ? `${DEMO_QUESTION}\n<image>` : `<image>\n${DEMO_QUESTION}` },
      { from: 'gpt', value: answerFor(it) },
    ],
  }));
  const finetune: Sample[] = items.map((it, i) => ({
    id: `ft-${i}`,
    image: it.file,
    conversations:
      i % 3 === 2
        ? [
            { from: 'human', value: `<image>\n${DEMO_QUESTION}` },
            { from: 'gpt', value: answerFor(it) },
            { from: 'human', value: 'What colour is it?' },
            { from: 'gpt', value: `A ${it.colour} one.` },
          ]
        : [
            { from: 'human', value: `<image>\n${DEMO_QUESTION}` },
            { from: 'gpt', value: answerFor(it) },
          ],
  }));
  finetune.push(
    {
      id: 'text-0',
      conversations: [
        { from: 'human', value: 'What colours are there?' },
        { from: 'gpt', value: 'A red, green, blue or yellow one.' },
      ],
    },
    {
      id: 'text-1',
      conversations: [
        { from: 'human', value: 'What shapes are there?' },
        { from: 'gpt', value: 'A square, circle or triangle.' },
      ],
    },
  );
  const pretrainJson = path.join(dir, 'pretrain.json');
  const finetuneJson = path.join(dir, 'finetune.json');
  fs.writeFileSync(pretrainJson, JSON.stringify(pretrain, null, 1));
  fs.writeFileSync(finetuneJson, JSON.stringify(finetune, null, 1));
  return { dir, imageFolder, pretrainJson, finetuneJson, items };
}
