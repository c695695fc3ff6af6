// context.ts — the text a GPT model sees for one image (docs/reference.md §7): COCO captions_*.json (and
// instances_*.json) read into one ImageContextSource per image, then the user turn built from it —
// captions, and for detail / complex reasoning one normalised box line per object.
//
// Decisions:
// - Box numbers: each coordinate is printed with exactly three decimals, trailing zeros kept ("0.500",
//   "1.000"), i.e. Python's '%.3f' — including its round-half-to-even on exact binary ties (0.0625 -> "0.062";
//   JS toFixed would give "0.063"). The reference states "3 decimals" and its one example has three
//   significant decimals, and a fixed width keeps every box line uniform. The other plausible reading, Python
//   repr(round(v, 3)) ("0.5", "1.0"), is available as coordStyle 'round'. x2 = (x + w) / width and
//   y2 = (y + h) / height, since COCO boxes are [x, y, w, h] in pixels. Boxes are not clamped to [0, 1].
// - Captions: every caption of the image in annotation-file order (COCO has 5, a few images have 6 or 7),
//   stripped, with internal newlines folded into spaces so that each caption stays on its own line. Objects:
//   every instance annotation of the image in file order (crowd regions included), named by category.
//   An image with no objects gets the captions only (no dangling blank line).
import type { GptDataType } from './prompts';
import { pyFixed, pyStrip } from '../util/pyformat';
import { readJson } from '../../io/json';
import { GptDataError } from './common';
import { checkOptions, optionKeys } from '../../options';

// ---------------------------------------------------------------------------------------------------------
// Numbers

/** 'fixed': Python '%.3f' ("0.500"); 'round': Python repr(round(v, 3)) ("0.5"). */
export type CoordStyle = 'fixed' | 'round';

/** One box coordinate in the chosen style. */
export function formatCoord(v: number, style: CoordStyle = 'fixed'): string {
  if (!Number.isFinite(v)) throw new GptDataError(`cannot format ${v} as a coordinate`);
  const fixed = pyFixed(v, 3);
  if (style === 'fixed') return fixed;
  // round(v, 3) is the double nearest to the correctly rounded decimal; repr prints its shortest form.
  const r = Number(fixed);
  if (r === 0) return fixed.startsWith('-') ? '-0.0' : '0.0';
  const s = String(r);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

// ---------------------------------------------------------------------------------------------------------
// COCO annotations -> per-image sources

/** A COCO instance: category name and the pixel box [x, y, w, h]. */
export interface ObjectBox {
  category: string;
  bbox: [number, number, number, number];
}

/** Everything the context of one image is built from. */
export interface ImageContextSource {
  /** COCO image id, as a string. */
  imageId: string;
  fileName: string;
  width: number;
  height: number;
  captions: string[];
  objects: ObjectBox[];
  /** Position in the source images list (orders the collected output). */
  index: number;
}

export interface CocoLoadResult {
  images: ImageContextSource[];
  /** Non-fatal findings (images without captions are left out, annotations of unknown images...). */
  warnings: string[];
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new GptDataError(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}
function asArray(o: Record<string, unknown>, key: string, what: string): unknown[] {
  const v = o[key];
  if (!Array.isArray(v)) throw new GptDataError(`${what} has no '${key}' array`);
  return v;
}
function idKey(v: unknown): string | null {
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'string' && v.length > 0) return v;
  return null;
}

/** Caption cleanup: strip, and fold internal line breaks so one caption stays one line. */
export function cleanCaption(c: string): string {
  return pyStrip(c).replace(/[ \t]*\r?\n\s*/g, ' ');
}

/**
 * Joins parsed COCO JSON: the images and captions of a captions_*.json, and (optionally) the boxes and
 * categories of an instances_*.json. Images keep the order of the captions file's `images` list.
 */
export function cocoFromJson(captions: unknown, instances?: unknown, source = 'captions'): CocoLoadResult {
  const warnings: string[] = [];
  const cap = asObject(captions, source);
  const imgs = asArray(cap, 'images', source);
  const anns = asArray(cap, 'annotations', source);
  const byId = new Map<string, ImageContextSource>();
  const order: ImageContextSource[] = [];
  imgs.forEach((raw, i) => {
    const im = asObject(raw, `${source}: images[${i}]`);
    const id = idKey(im.id);
    if (id === null) throw new GptDataError(`${source}: images[${i}] has no usable id`);
    if (typeof im.file_name !== 'string' || !im.file_name) throw new GptDataError(`${source}: image ${id} has no file_name`);
    const width = Number(im.width);
    const height = Number(im.height);
    if (byId.has(id)) throw new GptDataError(`${source}: image id ${id} appears twice`);
    const src: ImageContextSource = { imageId: id, fileName: im.file_name, width, height, captions: [], objects: [], index: order.length };
    byId.set(id, src);
    order.push(src);
  });
  let orphanCaptions = 0;
  anns.forEach((raw, i) => {
    const a = asObject(raw, `${source}: annotations[${i}]`);
    const img = byId.get(idKey(a.image_id) ?? '');
    if (!img) return void orphanCaptions++;
    if (typeof a.caption !== 'string') throw new GptDataError(`${source}: annotations[${i}] (image ${a.image_id}) has no caption string`);
    const c = cleanCaption(a.caption);
    if (c) img.captions.push(c);
  });
  if (orphanCaptions) warnings.push(`${orphanCaptions} caption(s) refer to images not in the images list (ignored)`);

  if (instances !== undefined) {
    const what = 'instances';
    const ins = asObject(instances, what);
    const cats = new Map<string, string>();
    asArray(ins, 'categories', what).forEach((raw, i) => {
      const c = asObject(raw, `${what}: categories[${i}]`);
      const id = idKey(c.id);
      if (id === null || typeof c.name !== 'string') throw new GptDataError(`${what}: categories[${i}] needs an id and a name`);
      cats.set(id, c.name);
    });
    let orphanBoxes = 0;
    asArray(ins, 'annotations', what).forEach((raw, i) => {
      const a = asObject(raw, `${what}: annotations[${i}]`);
      const img = byId.get(idKey(a.image_id) ?? '');
      if (!img) return void orphanBoxes++;
      const name = cats.get(idKey(a.category_id) ?? '');
      if (name === undefined) throw new GptDataError(`${what}: annotations[${i}] (image ${img.imageId}) has unknown category_id ${a.category_id}`);
      const b = a.bbox;
      if (!Array.isArray(b) || b.length !== 4 || !b.every((x) => typeof x === 'number' && Number.isFinite(x)))
        throw new GptDataError(`${what}: annotations[${i}] (image ${img.imageId}) has no [x, y, w, h] bbox`);
      img.objects.push({ category: name, bbox: [b[0], b[1], b[2], b[3]] });
    });
    if (orphanBoxes) warnings.push(`${orphanBoxes} instance(s) refer to images not in the captions file (ignored)`);
  }

  const images = order.filter((im) => im.captions.length > 0);
  if (images.length < order.length) warnings.push(`${order.length - images.length} image(s) without captions left out`);
  for (const im of images)
    if (im.objects.length > 0 && !(im.width > 0 && im.height > 0))
      throw new GptDataError(`image ${im.imageId} has boxes but no positive width/height`);
  return { images, warnings };
}

/** Reads captions_*.json and, when given, instances_*.json (needed for detail / complex_reasoning). */
export function loadCoco(captionsFile: string, instancesFile?: string): CocoLoadResult {
  const read = (file: string, what: string): unknown => readJson(file, what, 'gen-data', { makeError: (m) => new GptDataError(m) });
  const cap = read(captionsFile, 'captions file');
  const ins = instancesFile !== undefined ? read(instancesFile, 'instances file') : undefined;
  return cocoFromJson(cap, ins, captionsFile);
}

// ---------------------------------------------------------------------------------------------------------
// Context

export interface ContextOptions {
  coordStyle?: CoordStyle;
}

/** Whether a type's context carries object boxes (detail and complex reasoning do, conversation does not). */
export function usesBoxes(type: GptDataType): boolean {
  return type !== 'conversation';
}

/** "[x1, y1, x2, y2]" for a COCO pixel box [x, y, w, h], normalised by the image size. */
export function formatBox(bbox: readonly number[], width: number, height: number, style: CoordStyle = 'fixed'): string {
  const [x, y, w, h] = bbox;
  const v = [x / width, y / height, (x + w) / width, (y + h) / height];
  return `[${v.map((n) => formatCoord(n, style)).join(', ')}]`;
}

/**
 * The user turn for one image: captions one per line; for detail / complex reasoning a blank line and one
 * "category: [x1, y1, x2, y2]" line per object follow.
 */
export function buildContext(img: ImageContextSource, type: GptDataType, opts: ContextOptions = {}): string {
  checkOptions('buildContext', opts, optionKeys<ContextOptions>({ coordStyle: true }));
  const caps = img.captions.join('\n');
  if (!usesBoxes(type) || img.objects.length === 0) return caps;
  const boxes = img.objects.map((o) => `${o.category}: ${formatBox(o.bbox, img.width, img.height, opts.coordStyle)}`);
  return `${caps}\n\n${boxes.join('\n')}`;
}
