// gif.ts — the first image of a GIF as PIL 9.4's Image.open(f).convert('RGB') gives it (our own decoder:
// libvips, through sharp, composites GIF frames differently, so transparent and uncovered pixels would not
// match). What PIL does, and this file with it (fixtures gif_* in test/fixtures/images):
// - The image is the logical screen, grown to hold the first frame where that frame runs past it.
// - Pixels the frame does not cover hold the frame's transparency index if its graphic control extension
//   gives one, else index 0; never the background index.
// - Indices map through the frame's local colour table, else the global one; entries a short table lacks
//   keep PIL's default palette, a grey ramp (index i is (i, i, i)). The transparency index maps to its
//   colour too: convert('RGB') ignores transparency.
// - Interlaced frames are stored in four passes (rows 0, 4, 2, 1 mod 8, 8, 4, 2).
// - Later frames of an animation are not read.
// A frame whose LZW data ends before its pixels do (no end code) is refused as truncated, as PIL refuses
// it; an end code that comes early leaves the remaining pixels as filled.

interface GifLayout {
  /** The image size: the screen, grown to hold the first frame. */
  width: number;
  height: number;
  /** The first frame's rectangle. */
  x: number;
  y: number;
  w: number;
  h: number;
  interlaced: boolean;
  /** Its colour table (local, else global; RGB triples), null: none. */
  palette: Uint8Array | null;
  transparency: number | null;
  /** LZW minimum code size, and where the frame's data sub-blocks start. */
  minCodeSize: number;
  data: number;
}

/** Walks the header, colour tables and extensions to the first image descriptor. */
function layout(b: Uint8Array, name: string): GifLayout {
  const corrupt = (why: string): never => {
    throw new Error(`image: ${name}: corrupt or unsupported GIF (${why})`);
  };
  const u16 = (p: number): number => (p + 1 < b.length ? b[p] | (b[p + 1] << 8) : corrupt('truncated'));
  const byte = (p: number): number => (p < b.length ? b[p] : corrupt('truncated'));
  const screenW = u16(6);
  const screenH = u16(8);
  const flags = byte(10);
  let p = 13;
  let global: Uint8Array | null = null;
  if (flags & 0x80) {
    const n = 3 << ((flags & 7) + 1);
    if (p + n > b.length) corrupt('truncated global colour table');
    global = b.subarray(p, p + n);
    p += n;
  }
  let transparency: number | null = null;
  for (;;) {
    const block = byte(p);
    if (block === 0x2c) break;
    if (block === 0x3b) corrupt('no image before the trailer');
    if (block !== 0x21) corrupt(`unexpected block 0x${block.toString(16)} at byte ${p}`);
    const label = byte(p + 1);
    p += 2;
    if (label === 0xf9 && byte(p) >= 4) transparency = byte(p + 1) & 1 ? byte(p + 4) : null; // graphic control
    while (byte(p) !== 0) p += byte(p) + 1;
    p++;
  }
  const x = u16(p + 1);
  const y = u16(p + 3);
  const w = u16(p + 5);
  const h = u16(p + 7);
  const f = byte(p + 9);
  p += 10;
  let palette = global;
  if (f & 0x80) {
    const n = 3 << ((f & 7) + 1);
    if (p + n > b.length) corrupt('truncated local colour table');
    palette = b.subarray(p, p + n);
    p += n;
  }
  const minCodeSize = byte(p);
  if (minCodeSize < 2 || minCodeSize > 8) corrupt(`LZW code size ${minCodeSize} outside 2..8`);
  if (w === 0 || h === 0) corrupt(`empty first frame ${w}x${h}`);
  const width = Math.max(screenW, x + w);
  const height = Math.max(screenH, y + h);
  return { width, height, x, y, w, h, interlaced: (f & 0x40) !== 0, palette, transparency, minCodeSize, data: p + 1 };
}

/** Size from the file's structure (screen and first frame), for the pixel caps before decoding. */
export function gifSize(b: Uint8Array, name: string): { width: number; height: number } {
  const { width, height } = layout(b, name);
  return { width, height };
}

/** The frame's LZW data: its sub-blocks joined (up to the terminator or the end of the file). */
function subBlocks(b: Uint8Array, p: number): Uint8Array {
  const parts: Uint8Array[] = [];
  while (p < b.length && b[p] !== 0) {
    parts.push(b.subarray(p + 1, Math.min(p + 1 + b[p], b.length)));
    p += b[p] + 1;
  }
  return Buffer.concat(parts);
}

/** Decodes `count` palette indices from GIF LZW data (codes packed from the least significant bit).
 *  Returns how many it decoded before an end code; throws if the data runs out first. */
function lzw(data: Uint8Array, minCodeSize: number, out: Uint8Array): number {
  const clear = 1 << minCodeSize;
  const end = clear + 1;
  const prefix = new Uint16Array(4096);
  const suffix = new Uint8Array(4096);
  const stack = new Uint8Array(4097);
  for (let i = 0; i < clear; i++) suffix[i] = i;
  let size = minCodeSize + 1;
  let next = clear + 2;
  let old = -1;
  let first = 0;
  let acc = 0;
  let bits = 0;
  let p = 0;
  let n = 0;
  while (n < out.length) {
    while (bits < size) {
      if (p >= data.length) throw new Error(`image data truncated after ${n} of ${out.length} pixels`);
      acc |= data[p++] << bits;
      bits += 8;
    }
    let code = acc & ((1 << size) - 1);
    acc >>>= size;
    bits -= size;
    if (code === clear) {
      size = minCodeSize + 1;
      next = clear + 2;
      old = -1;
      continue;
    }
    if (code === end) return n;
    if (old === -1) {
      if (code > clear) throw new Error(`LZW code ${code} before any string`);
      out[n++] = first = code;
      old = code;
      continue;
    }
    const incoming = code;
    let top = 0;
    if (code >= next) {
      if (code > next) throw new Error(`LZW code ${code} beyond the table (${next})`);
      stack[top++] = first; // the string being defined: old's string plus its own first byte
      code = old;
    }
    while (code > clear) {
      stack[top++] = suffix[code];
      code = prefix[code];
    }
    first = suffix[code];
    stack[top++] = first;
    if (next < 4096) {
      prefix[next] = old;
      suffix[next] = first;
      next++;
      if (next === 1 << size && size < 12) size++;
    }
    old = incoming;
    while (top > 0 && n < out.length) out[n++] = stack[--top];
  }
  return n;
}

/** Decodes a GIF whose size has passed gifSize and the limits: 8-bit RGB, HWC. */
export function decodeGif(b: Uint8Array): { width: number; height: number; data: Uint8Array } {
  const g = layout(b, '<gif>');
  const fill = g.transparency ?? 0;
  const indices = new Uint8Array(g.w * g.h).fill(fill);
  lzw(subBlocks(b, g.data), g.minCodeSize, indices);
  // PIL's palette: a grey ramp, overwritten by the colour table's entries.
  const lut = new Uint8Array(768);
  for (let i = 0; i < 256; i++) lut[i * 3] = lut[i * 3 + 1] = lut[i * 3 + 2] = i;
  if (g.palette) lut.set(g.palette.subarray(0, Math.min(768, g.palette.length)));
  const { width, height } = g;
  const canvas = new Uint8Array(width * height).fill(fill);
  const passes = g.interlaced
    ? [
        [0, 8],
        [4, 8],
        [2, 4],
        [1, 2],
      ]
    : [[0, 1]];
  let row = 0;
  for (const [start, step] of passes)
    for (let r = start; r < g.h; r += step, row++) canvas.set(indices.subarray(row * g.w, (row + 1) * g.w), (g.y + r) * width + g.x);
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < canvas.length; i++) {
    const k = canvas[i] * 3;
    data[i * 3] = lut[k];
    data[i * 3 + 1] = lut[k + 1];
    data[i * 3 + 2] = lut[k + 2];
  }
  return { width, height, data };
}
