// image_codec.ts — reading PNG, JPEG, WebP and GIF files into 8-bit RGB exactly as PIL's
// Image.open(f).convert('RGB') does, with the pixel caps checked from the file's header before any pixel is
// allocated.
//
// Decisions:
// - JPEG goes through sharp (libvips + mozjpeg, whose decoder is libjpeg-turbo's): same IDCT (islow) and
//   the same "fancy" chroma upsampling as the libjpeg-turbo PIL links, so 4:2:0, 4:2:2, 4:4:4, progressive
//   and greyscale files decode to PIL's bytes exactly (test/fixtures/images, made by PIL 9.4). sharp is
//   told not to rotate by EXIF orientation (PIL's convert('RGB') does not) and to ignore embedded ICC
//   profiles (PIL does not colour-manage either).
// - CMYK JPEGs: PIL reads every 4-channel JPEG as Adobe-inverted ("CMYK;I"), with or without an Adobe
//   APP14 marker, and libvips 8.18 does the same (both fixtures, cmyk and cmyk_noadobe, check it). sharp
//   would then convert CMYK to sRGB through an ICC profile; instead we take libvips's CMYK bands as they are
//   (pipeline colourspace cmyk) and convert with PIL's own formula (Convert.c cmyk2rgb):
//   nk - MULDIV255(c, nk) per channel, nk = 255 - k, MULDIV255(a, b) = (t + (t >> 8)) >> 8, t = a·b + 128.
// - WebP goes through sharp too: libvips decodes with libwebp, as PIL does, and libwebp's lossy decoder
//   (fancy chroma upsampling, fixed-point YUV -> RGB) gives PIL 9.4's bytes exactly (libwebp 1.2.4 there):
//   lossy, lossless, with an alpha plane (dropped, as convert('RGB') drops it, not composited) and the first
//   frame of an animation (fixtures webp_*). Its size comes from the VP8X canvas, else the VP8 / VP8L frame.
// - GIF is ours (gif.ts): libvips composites GIF frames its own way, PIL's first frame is simple to match.
// - PNG stays on pngjs: it is lossless, so the only PIL-specific parts are the conversions, which this
//   file does PIL's way (alpha dropped, not composited; a tRNS colour key ignored; 16-bit colour keeps the
//   high byte; 16-bit grey is clipped to 255 as PIL's I;16 -> RGB does). libvips shifts 16-bit grey down
//   instead of clipping, so it is not used for PNG.
// - Decompression bombs: `readHeader` walks the whole chunk / marker structure (through JPEG scan data)
//   and refuses a second PNG IHDR or a second JPEG frame header (decoders disagree on which one counts:
//   pngjs and jpeg-js used the last), a zero size, or a JPEG whose height comes from a DNL marker. The
//   size it returns is then checked against one set of limits (ImageLimits: w·h and the longest side)
//   before decoding; sharp gets the same w·h limit as its own header check.
import * as zlib from 'zlib';
import { PNG } from 'pngjs';
import type { Sharp } from 'sharp';
import { checkOptions, optionKeys } from '../../options';
import { gifSize } from './gif';

export interface RgbImage {
  width: number;
  height: number;
  /** HWC, 3 bytes per pixel, row-major. */
  data: Uint8Array;
}

// ---------------------------------------------------------------------------------------------------------
// Limits

/** The one pixel cap every decoding path applies (server, chat, eval, training data). */
export interface ImageLimits {
  /** Most pixels (w·h) an image may have, and any image the preprocessing makes of it (the 'pad' square,
   *  the resized image). Default 50,000,000, or the environment variable LLAVA_MAX_IMAGE_PIXELS; Infinity: no cap. */
  maxPixels: number;
  /** Longest side allowed. Default 16384, or LLAVA_MAX_IMAGE_SIDE; Infinity: no cap. */
  maxSide: number;
}
const LIMIT_KEYS = optionKeys<ImageLimits>({ maxPixels: true, maxSide: true });

export const DEFAULT_MAX_IMAGE_PIXELS = 50_000_000;
export const DEFAULT_MAX_IMAGE_SIDE = 16384;

function limitFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!(Number.isSafeInteger(v) && v > 0)) throw new Error(`image: ${name} must be a positive integer (got '${raw}')`);
  return v;
}

/** The limits in force: `over` (per call) over the environment over the defaults. */
export function imageLimits(over: Partial<ImageLimits> = {}): ImageLimits {
  checkOptions('imageLimits', over, LIMIT_KEYS);
  const lim: ImageLimits = {
    maxPixels: over.maxPixels ?? limitFromEnv('LLAVA_MAX_IMAGE_PIXELS', DEFAULT_MAX_IMAGE_PIXELS),
    maxSide: over.maxSide ?? limitFromEnv('LLAVA_MAX_IMAGE_SIDE', DEFAULT_MAX_IMAGE_SIDE),
  };
  for (const [k, v] of Object.entries(lim)) {
    if (!((Number.isSafeInteger(v) && v > 0) || v === Infinity))
      throw new Error(`image: limit ${k} must be a positive integer or Infinity (got ${v})`);
  }
  return lim;
}

/** An image (or an image the preprocessing would make of it) over the pixel caps. */
export class ImageLimitError extends Error {
  constructor(
    message: string,
    readonly width: number,
    readonly height: number,
  ) {
    super(message);
    this.name = 'ImageLimitError';
  }
}

/** Throws ImageLimitError when a `what` of width x height is over the limits. */
export function checkLimits(name: string | null, width: number, height: number, lim: ImageLimits, what = 'the image'): void {
  const where = name === null ? 'image:' : `image: ${name}:`;
  const px = width * height;
  if (px > lim.maxPixels)
    throw new ImageLimitError(
      `${where} ${what} is ${width}x${height} = ${px} pixels, more than the ${lim.maxPixels} allowed (LLAVA_MAX_IMAGE_PIXELS)`,
      width,
      height,
    );
  const side = Math.max(width, height);
  if (side > lim.maxSide)
    throw new ImageLimitError(
      `${where} ${what} is ${width}x${height}; its longest side ${side} is more than the ${lim.maxSide} allowed (LLAVA_MAX_IMAGE_SIDE)`,
      width,
      height,
    );
}

// ---------------------------------------------------------------------------------------------------------
// Headers

export interface ImageHeader {
  kind: 'png' | 'jpeg' | 'webp' | 'gif';
  width: number;
  height: number;
  /** JPEG: colour components in the frame (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK). */
  components: number;
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The container format by its magic bytes ('png', 'jpeg', 'webp', 'gif', or a name for the message). */
export function sniff(b: Uint8Array): string {
  if (PNG_MAGIC.every((v, i) => b[i] === v)) return 'png';
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  const ascii = Buffer.from(b.subarray(0, 12)).toString('latin1');
  if (ascii.startsWith('RIFF') && ascii.slice(8, 12) === 'WEBP') return 'webp';
  if (ascii.startsWith('GIF87a') || ascii.startsWith('GIF89a')) return 'gif';
  if (ascii.startsWith('BM')) return 'BMP';
  if (ascii.startsWith('II*\0') || ascii.startsWith('MM\0*')) return 'TIFF';
  return 'unknown';
}

/** A WebP's size: the VP8X canvas (extended files: alpha, animation, metadata), else the VP8 (lossy) or VP8L
 *  (lossless) frame header of its first chunk. */
function webpHeader(b: Buffer, name: string): ImageHeader {
  const corrupt = (why: string): never => {
    throw new Error(`image: ${name}: corrupt or unsupported WebP (${why})`);
  };
  if (b.length < 30) corrupt('too short');
  const chunk = b.toString('latin1', 12, 16);
  const d = 20; // the first chunk's data
  let width = 0;
  let height = 0;
  if (chunk === 'VP8X') {
    width = 1 + b.readUIntLE(d + 4, 3);
    height = 1 + b.readUIntLE(d + 7, 3);
  } else if (chunk === 'VP8 ') {
    if (b[d] & 1) corrupt('its first frame is not a key frame');
    if (b[d + 3] !== 0x9d || b[d + 4] !== 0x01 || b[d + 5] !== 0x2a) corrupt('no VP8 start code');
    width = b.readUInt16LE(d + 6) & 0x3fff;
    height = b.readUInt16LE(d + 8) & 0x3fff;
  } else if (chunk === 'VP8L') {
    if (b[d] !== 0x2f) corrupt('no VP8L signature');
    const bits = b.readUInt32LE(d + 1);
    width = 1 + (bits & 0x3fff);
    height = 1 + ((bits >>> 14) & 0x3fff);
  } else corrupt(`first chunk '${chunk.replace(/[^ -~]/g, '?')}' is not VP8, VP8L or VP8X`);
  if (width === 0 || height === 0) corrupt(`invalid size ${width}x${height}`);
  return { kind: 'webp', width, height, components: 0 };
}

function pngHeader(b: Buffer, name: string): ImageHeader {
  const corrupt = (why: string): never => {
    throw new Error(`image: ${name}: corrupt or unsupported PNG (${why})`);
  };
  if (b.length < 33 || b.toString('latin1', 12, 16) !== 'IHDR' || b.readUInt32BE(8) !== 13) corrupt('no IHDR chunk first');
  const width = b.readUInt32BE(16);
  const height = b.readUInt32BE(20);
  // Every chunk up to IEND: a second IHDR makes the size ambiguous (pngjs would take the last one).
  for (let pos = 33; pos + 8 <= b.length;) {
    const len = b.readUInt32BE(pos);
    const type = b.toString('latin1', pos + 4, pos + 8);
    if (type === 'IHDR')
      throw new Error(
        `image: ${name}: malformed PNG: a second IHDR chunk at byte ${pos} (${b.readUInt32BE(pos + 8)}x${b.readUInt32BE(pos + 12)} after ${width}x${height}); refused`,
      );
    if (type === 'IEND') break;
    pos += 12 + len; // a chunk running past the end is left for the decoder to call truncated
  }
  if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) corrupt(`invalid size ${width}x${height}`);
  return { kind: 'png', width, height, components: 0 };
}

const isSof = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

/** Scans a JPEG may have. A progressive file has about 10; thousands of tiny scans over a large frame are
 *  a known way to make a small file decode for minutes (libjpeg-turbo's own tools cap them too). */
export const MAX_JPEG_SCANS = 1000;

function jpegHeader(b: Buffer, name: string): ImageHeader {
  let scans = 0;
  let frame: { width: number; height: number; components: number; at: number } | null = null;
  let p = 2;
  while (p + 1 < b.length) {
    if (b[p] !== 0xff) {
      p++; // stray bytes between segments: libjpeg skips them with a warning, so do we
      continue;
    }
    const m = b[p + 1];
    if (m === 0xff) {
      p++; // fill byte
      continue;
    }
    if (m === 0xd9) break; // EOI
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7) || m === 0x00) {
      p += 2;
      continue;
    }
    if (p + 4 > b.length) break;
    const len = b.readUInt16BE(p + 2);
    if (isSof(m)) {
      if (frame)
        throw new Error(
          `image: ${name}: malformed JPEG: a second frame header (SOF marker 0x${m.toString(16)} at byte ${p}, after the one at byte ${frame.at}); refused`,
        );
      if (p + 10 > b.length) break;
      frame = { height: b.readUInt16BE(p + 5), width: b.readUInt16BE(p + 7), components: b[p + 9], at: p };
    }
    p += 2 + len;
    if (m === 0xda && ++scans > MAX_JPEG_SCANS)
      throw new Error(`image: ${name}: malformed JPEG: more than ${MAX_JPEG_SCANS} scans; refused (each scan walks every block of the image)`);
    if (m === 0xda) {
      // Entropy-coded data up to the next marker that is not a stuffed 0x00 or a restart marker.
      while (p + 1 < b.length && !(b[p] === 0xff && b[p + 1] !== 0x00 && !(b[p + 1] >= 0xd0 && b[p + 1] <= 0xd7))) p++;
    }
  }
  if (!frame) throw new Error(`image: ${name}: corrupt or unsupported JPEG (no frame header)`);
  if (frame.height === 0) throw new Error(`image: ${name}: unsupported JPEG (height 0, set later by a DNL marker)`);
  if (frame.width === 0) throw new Error(`image: ${name}: corrupt or unsupported JPEG (width 0)`);
  return { kind: 'jpeg', width: frame.width, height: frame.height, components: frame.components };
}

/** Format and size from the header, refusing unsupported formats and malformed multi-header files. */
export function readHeader(b: Buffer, name: string): ImageHeader {
  const kind = sniff(b);
  if (kind === 'png') return pngHeader(b, name);
  if (kind === 'jpeg') return jpegHeader(b, name);
  if (kind === 'webp') return webpHeader(b, name);
  if (kind === 'gif') return { kind, ...gifSize(b, name), components: 0 };
  throw new Error(`image: ${name}: unsupported image format (${kind}); PNG, JPEG, WebP and GIF are supported`);
}

// ---------------------------------------------------------------------------------------------------------
// PNG (pngjs)

/** Drops tRNS chunks of grey/RGB PNGs so pngjs keeps the keyed colour (PIL's convert('RGB') keeps it). */
function stripColorKey(buf: Buffer): Buffer {
  const colorType = buf.length > 25 ? buf[25] : -1;
  if (colorType !== 0 && colorType !== 2) return buf;
  const parts: Buffer[] = [buf.subarray(0, 8)];
  let pos = 8;
  let removed = false;
  while (pos + 12 <= buf.length) {
    const len = buf.readUInt32BE(pos);
    const end = pos + 12 + len;
    if (end > buf.length) break; // truncated: leave the rest for pngjs to reject
    if (buf.toString('latin1', pos + 4, pos + 8) === 'tRNS') removed = true;
    else parts.push(buf.subarray(pos, end));
    pos = end;
  }
  if (!removed) return buf;
  parts.push(buf.subarray(pos));
  return Buffer.concat(parts);
}

const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

/** pngjs inflates an interlaced PNG's data without a bound (a few MB of IDAT can inflate to gigabytes), so
 *  for those the stream is first inflated here with the exact size the seven passes need as the limit. */
function checkInterlacedSize(buf: Buffer): void {
  if (buf[28] !== 1) return; // not interlaced: pngjs bounds the inflate by the image size itself
  const w = buf.readUInt32BE(16);
  const h = buf.readUInt32BE(20);
  const bits = buf[24] * ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[buf[25]];
  if (!(bits > 0)) return; // an invalid colour type: pngjs refuses it
  let need = 0;
  for (const [x0, y0, dx, dy] of ADAM7) {
    const pw = w > x0 ? Math.ceil((w - x0) / dx) : 0;
    const ph = h > y0 ? Math.ceil((h - y0) / dy) : 0;
    if (pw > 0 && ph > 0) need += ph * (Math.ceil((pw * bits) / 8) + 1);
  }
  const idat: Buffer[] = [];
  for (let pos = 8; pos + 12 <= buf.length;) {
    const len = buf.readUInt32BE(pos);
    if (buf.toString('latin1', pos + 4, pos + 8) === 'IDAT') idat.push(buf.subarray(pos + 8, Math.min(pos + 8 + len, buf.length)));
    pos += 12 + len;
  }
  try {
    zlib.inflateSync(Buffer.concat(idat), { maxOutputLength: Math.max(need, 1) });
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE')
      throw new Error(`its image data inflates to more than the ${need} bytes a ${w}x${h} interlaced image needs`);
    // other inflate errors: left for pngjs to report
  }
}

/** Decodes a PNG whose header has passed readHeader and the limits. */
export function decodePng(buf: Buffer): RgbImage {
  checkInterlacedSize(buf);
  const png = PNG.sync.read(stripColorKey(buf), { skipRescale: true });
  const { width, height, depth, colorType } = png as unknown as { width: number; height: number; depth: number; colorType: number };
  const src = png.data as unknown as ArrayLike<number>; // RGBA; Uint16Array when depth is 16 (skipRescale)
  const n = width * height;
  const out = new Uint8Array(n * 3);
  const grey = colorType === 0 || colorType === 4;
  let map: (v: number) => number = (v) => v;
  if (colorType !== 3 && depth === 16) map = colorType === 0 ? (v) => Math.min(v, 255) : (v) => v >>> 8;
  else if (colorType !== 3 && depth < 8) {
    const max = 2 ** depth - 1; // 1/2/4-bit grey: 0..max spread over 0..255 (x255, x85, x17) as PIL does
    map = (v) => Math.floor((v * 255) / max + 0.5);
  }
  for (let i = 0; i < n; i++) {
    const r = map(src[i * 4]);
    out[i * 3] = r;
    out[i * 3 + 1] = grey ? r : map(src[i * 4 + 1]);
    out[i * 3 + 2] = grey ? r : map(src[i * 4 + 2]);
  }
  return { width, height, data: out };
}

// ---------------------------------------------------------------------------------------------------------
// JPEG and WebP (sharp)

type SharpFactory = typeof import('sharp').default;
let sharpModule: SharpFactory | null = null;

/** Loads sharp in this thread (lazily: it costs ~70 ms, and most commands never decode a JPEG). On glibc
 *  the main thread must load it before any worker thread that uses it starts, so that libvips stays loaded
 *  until those threads end (sharp's documentation); callers that start such workers call this first. */
export function loadSharp(): SharpFactory {
  if (!sharpModule) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    sharpModule = require('sharp') as SharpFactory;
    sharpModule.cache(false); // libvips's operation cache would keep decoded images alive between calls
  }
  return sharpModule;
}

/** PIL's CMYK -> RGB: nk - MULDIV255(c, nk), nk = 255 - k (Convert.c cmyk2rgb). */
function cmykToRgb(src: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const nk = 255 - src[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const t = src[i * 4 + c] * nk + 128;
      out[i * 3 + c] = nk - (((t >> 8) + t) >> 8);
    }
  }
  return out;
}

/** Decodes a JPEG or WebP whose header has passed readHeader and the limits (async: sharp works on libuv's
 *  pool). */
export async function decodeSharp(buf: Uint8Array, head: ImageHeader, lim: ImageLimits): Promise<RgbImage> {
  const sharp = loadSharp();
  // failOn 'error': a truncated file fails as in PIL (LOAD_TRUNCATED_IMAGES is off), libjpeg warnings
  // (e.g. extraneous bytes before a marker) pass as they do in PIL. An animated WebP gives its first frame.
  let s: Sharp = sharp(buf, {
    autoOrient: false,
    ignoreIcc: true,
    failOn: 'error',
    limitInputPixels: Number.isFinite(lim.maxPixels) ? lim.maxPixels : false,
  });
  if (head.components === 4) s = s.pipelineColourspace('cmyk').toColourspace('cmyk');
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  const n = info.width * info.height;
  if (info.width !== head.width || info.height !== head.height)
    throw new Error(`decoded ${info.width}x${info.height}, but the header says ${head.width}x${head.height}`);
  let out: Uint8Array;
  if (info.channels === 3) out = new Uint8Array(data);
  else if (info.channels === 4 && head.kind === 'webp') {
    out = new Uint8Array(n * 3); // RGBA: the alpha plane is dropped, as PIL's convert('RGB') drops it
    for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = data[i * 4 + c];
  } else if (info.channels === 1) {
    out = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = data[i];
  } else if (info.channels === 4 && head.components === 4) out = cmykToRgb(data, n);
  else throw new Error(`unexpected ${info.channels}-channel output for a ${head.kind === 'webp' ? 'WebP' : `${head.components}-component JPEG`}`);
  return { width: info.width, height: info.height, data: out };
}
