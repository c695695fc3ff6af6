// Image loading and CLIP preprocessing, matching what LLaVA gets from PIL + transformers'
// CLIPImageProcessor (PIL backend): decode -> RGB -> [expand to square] -> resize short side (PIL bicubic)
// -> center crop -> x * rescale_factor -> (x - mean) / std -> CHW float32 (shape 3 x S x S).
//
// Decisions:
// - RGB images are { width, height, data } with data HWC uint8, so every step up to the crop stays in 8 bits
//   exactly like the PIL image does (PIL rounds to uint8 after resizing; the float maths starts after).
// - resizeRgb reimplements Pillow's Resample.c rather than approximating it: per output pixel a window of
//   source pixels (filter support widened by the scale when downscaling, i.e. antialiased), weights
//   normalised to sum 1, then converted to 22-bit fixed point rounded half away from zero; horizontal pass
//   first into a uint8 intermediate, then vertical, each accumulating from 1 << 21 (the rounding half) and
//   clamping to 0..255. C's (int) casts truncate toward zero, hence Math.trunc, not floor. This lands on the
//   same bytes as PIL.
// - Decoding (image_codec.ts) gives PIL's Image.open(f).convert('RGB') bytes exactly: JPEG and WebP through
//   sharp (libjpeg-turbo's and libwebp's decoders, EXIF orientation not applied, CMYK converted with PIL's
//   formula, WebP's alpha dropped), GIF by gif.ts, PNG through
//   pngjs with PIL's conversions. Every path checks one set of pixel caps (ImageLimits) from the header
//   before decoding, and prepareRgb checks the images it makes (the 'pad' square, the resize target) before
//   allocating them. decodeImage is synchronous (image_worker.ts explains how); decodeImageAsync and
//   preprocessAsync leave the event loop free while a JPEG or WebP decodes.
// - The pad colour for 'pad' mode is int(255 * mean) per channel, truncated as LLaVA's expand2square does:
//   (122, 116, 104) for CLIP, not the rounded (123, 117, 104).
import * as fs from 'fs';
import * as path from 'path';
import { readJson } from '../../io/json';
import { checkOptions, optionKeys } from '../../options';
import {
  checkLimits,
  decodeSharp,
  decodePng,
  imageLimits,
  loadSharp,
  readHeader,
  type ImageHeader,
  type ImageLimits,
  type RgbImage,
} from './image_codec';
import { decodeSharpSync } from './image_worker';
import { decodeGif } from './gif';

export type { RgbImage, ImageLimits };
export { ImageLimitError, imageLimits, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_IMAGE_SIDE } from './image_codec';

/** Options of the decoding entry points. */
export interface DecodeOptions {
  /** Overrides of the pixel caps (defaults: imageLimits()). */
  limits?: Partial<ImageLimits>;
}
const DECODE_KEYS = optionKeys<DecodeOptions>({ limits: true });

// ---------------------------------------------------------------------------------------------------------
// Decoding

/** Reads the bytes, the header and checks the limits: everything before pixels are allocated. */
function openImage(input: string | Uint8Array, opts: DecodeOptions): { name: string; buf: Buffer; head: ImageHeader; lim: ImageLimits } {
  checkOptions('decodeImage', opts, DECODE_KEYS);
  const name = typeof input === 'string' ? input : '<buffer>';
  const lim = imageLimits(opts.limits);
  let buf: Buffer;
  try {
    buf = typeof input === 'string' ? fs.readFileSync(input) : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  } catch (e) {
    throw new Error(`image: ${name}: cannot read (${(e as Error).message})`);
  }
  const head = readHeader(buf, name);
  checkLimits(name, head.width, head.height, lim);
  return { name, buf, head, lim };
}

const FORMAT_NAMES: Record<ImageHeader['kind'], string> = { png: 'PNG', jpeg: 'JPEG', webp: 'WebP', gif: 'GIF' };

/** The decoders that run in this thread, in JavaScript (JPEG and WebP go to sharp). */
function decodeHere(buf: Buffer, head: ImageHeader): RgbImage {
  return head.kind === 'gif' ? decodeGif(buf) : decodePng(buf);
}
const usesSharp = (head: ImageHeader): boolean => head.kind === 'jpeg' || head.kind === 'webp';

function finish(name: string, head: ImageHeader, decode: () => RgbImage): RgbImage {
  let img: RgbImage;
  try {
    img = decode();
  } catch (e) {
    throw new Error(`image: ${name}: corrupt or unsupported ${FORMAT_NAMES[head.kind]} (${(e as Error).message})`);
  }
  if (!(img.width > 0 && img.height > 0) || img.data.length !== img.width * img.height * 3) {
    throw new Error(`image: ${name}: decoded to an empty or inconsistent ${img.width}x${img.height} image`);
  }
  return img;
}

/** Decodes a PNG, JPEG, WebP or GIF (file path or bytes) to 8-bit RGB, as PIL's
 *  Image.open(...).convert('RGB'), after checking its header against the pixel caps (ImageLimitError) and
 *  refusing malformed files. */
export function decodeImage(input: string | Uint8Array, opts: DecodeOptions = {}): RgbImage {
  const { name, buf, head, lim } = openImage(input, opts);
  return finish(name, head, () => (usesSharp(head) ? decodeSharpSync(buf, head, lim) : decodeHere(buf, head)));
}

/** decodeImage without blocking the thread while a JPEG or WebP decodes (sharp runs on libuv's thread pool). */
export async function decodeImageAsync(input: string | Uint8Array, opts: DecodeOptions = {}): Promise<RgbImage> {
  const { name, buf, head, lim } = openImage(input, opts);
  let decoded: RgbImage | null = null;
  let error: unknown = null;
  if (usesSharp(head)) {
    try {
      decoded = await decodeSharp(buf, head, lim);
    } catch (e) {
      error = e;
    }
  }
  return finish(name, head, () => {
    if (error) throw error;
    return decoded ?? decodeHere(buf, head);
  });
}

/** Loads the JPEG and WebP decoder in this thread now. Call it on the main thread before starting worker threads
 *  that decode images (sharp's rule on glibc; batch_loader.ts's EncoderPool does). */
export function loadImageDecoder(): void {
  loadSharp();
}

// ---------------------------------------------------------------------------------------------------------
// PIL resampling

/** PIL's resample codes (Image.Resampling). NEAREST (0) is a different algorithm and is not offered. */
export const Resample = { LANCZOS: 1, BILINEAR: 2, BICUBIC: 3, BOX: 4, HAMMING: 5 } as const;

interface Filter {
  support: number;
  fn: (x: number) => number;
}

const sinc = (x: number) => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));

const FILTERS: Record<number, Filter> = {
  1: { support: 3, fn: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
  2: { support: 1, fn: (x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0) },
  3: {
    support: 2,
    fn: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  4: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  5: {
    support: 1,
    fn: (x) => {
      x = Math.abs(x);
      if (x === 0) return 1;
      if (x >= 1) return 0;
      x *= Math.PI;
      return (Math.sin(x) / x) * (0.54 + 0.46 * Math.cos(x));
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

interface Coeffs {
  ksize: number;
  /** Per output pixel: first source index and count. */
  bounds: Int32Array;
  /** Fixed-point weights, ksize per output pixel. */
  kk: Int32Array;
}

function precomputeCoeffs(inSize: number, outSize: number, filter: Filter): Coeffs {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = filter.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v: number): number {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / ONE);
}

function resampleHorizontal(img: RgbImage, outW: number, c: Coeffs): RgbImage {
  const { width: inW, height: h, data } = img;
  const out = new Uint8Array(outW * h * 3);
  for (let y = 0; y < h; y++) {
    const row = y * inW * 3;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = c.bounds[xx * 2];
      const xmax = c.bounds[xx * 2 + 1];
      const k0 = xx * c.ksize;
      let s0 = ONE / 2,
        s1 = ONE / 2,
        s2 = ONE / 2;
      for (let x = 0; x < xmax; x++) {
        const k = c.kk[k0 + x];
        const p = row + (x + xmin) * 3;
        s0 += data[p] * k;
        s1 += data[p + 1] * k;
        s2 += data[p + 2] * k;
      }
      const o = (y * outW + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width: outW, height: h, data: out };
}

function resampleVertical(img: RgbImage, outH: number, c: Coeffs): RgbImage {
  const { width: w, data } = img;
  const stride = w * 3;
  const out = new Uint8Array(w * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = c.bounds[yy * 2];
    const ymax = c.bounds[yy * 2 + 1];
    const k0 = yy * c.ksize;
    for (let i = 0; i < stride; i++) {
      let s = ONE / 2;
      for (let y = 0; y < ymax; y++) s += data[(y + ymin) * stride + i] * c.kk[k0 + y];
      out[yy * stride + i] = clip8(s);
    }
  }
  return { width: w, height: outH, data: out };
}

/** PIL's Image.resize((outW, outH), resample) on an 8-bit RGB image, byte for byte. */
export function resizeRgb(img: RgbImage, outW: number, outH: number, resample: number = Resample.BICUBIC): RgbImage {
  const filter = FILTERS[resample];
  if (!filter) throw new Error(`image: resample mode ${resample} is not supported (use 1..5: PIL LANCZOS..HAMMING)`);
  if (!(Number.isInteger(outW) && Number.isInteger(outH) && outW > 0 && outH > 0)) {
    throw new Error(`image: invalid resize target ${outW}x${outH}`);
  }
  let cur = img;
  if (outW !== img.width) cur = resampleHorizontal(cur, outW, precomputeCoeffs(img.width, outW, filter));
  if (outH !== img.height) cur = resampleVertical(cur, outH, precomputeCoeffs(img.height, outH, filter));
  return cur === img ? { width: img.width, height: img.height, data: img.data.slice() } : cur;
}

/** PIL Image.resize with BICUBIC (the CLIP resampler). */
export function resizeBicubicPIL(img: RgbImage, outW: number, outH: number): RgbImage {
  return resizeRgb(img, outW, outH, Resample.BICUBIC);
}

// ---------------------------------------------------------------------------------------------------------
// Geometry

/** LLaVA's expand2square: a max(W,H) square of `bg`, the image pasted centred along the padded axis. */
export function expandToSquare(img: RgbImage, bg: readonly [number, number, number]): RgbImage {
  const { width: w, height: h } = img;
  if (w === h) return { width: w, height: h, data: img.data.slice() };
  const s = Math.max(w, h);
  const out = new Uint8Array(s * s * 3);
  for (let i = 0; i < s * s; i++) out.set(bg, i * 3);
  const left = Math.floor((s - w) / 2);
  const top = Math.floor((s - h) / 2);
  for (let y = 0; y < h; y++) out.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((top + y) * s + left) * 3);
  return { width: s, height: s, data: out };
}

/** transformers' center_crop: offsets (H - h) // 2 and (W - w) // 2; zero padding when the image is smaller. */
export function centerCrop(img: RgbImage, cropH: number, cropW: number): RgbImage {
  const { width: W, height: H } = img;
  // Pad to at least the crop size first, image centred with ceil() padding before it, as transformers does.
  const newH = Math.max(cropH, H);
  const newW = Math.max(cropW, W);
  const padTop = Math.ceil((newH - H) / 2);
  const padLeft = Math.ceil((newW - W) / 2);
  const top = Math.floor((H - cropH) / 2) + padTop;
  const left = Math.floor((W - cropW) / 2) + padLeft;
  const out = new Uint8Array(cropH * cropW * 3);
  for (let y = 0; y < cropH; y++) {
    const sy = top + y - padTop; // row in the original image
    if (sy < 0 || sy >= H) continue;
    for (let x = 0; x < cropW; x++) {
      const sx = left + x - padLeft;
      if (sx < 0 || sx >= W) continue;
      const o = (y * cropW + x) * 3;
      const p = (sy * W + sx) * 3;
      out[o] = img.data[p];
      out[o + 1] = img.data[p + 1];
      out[o + 2] = img.data[p + 2];
    }
  }
  return { width: cropW, height: cropH, data: out };
}

// ---------------------------------------------------------------------------------------------------------
// CLIPImageProcessor

export interface ClipProcessorConfig {
  do_resize?: boolean;
  size?: number | { shortest_edge?: number; height?: number; width?: number };
  resample?: number;
  do_center_crop?: boolean;
  crop_size?: number | { height: number; width: number };
  do_rescale?: boolean;
  rescale_factor?: number;
  do_normalize?: boolean;
  image_mean?: number[];
  image_std?: number[];
  do_convert_rgb?: boolean;
}

export type AspectMode = 'square' | 'pad';

export interface PixelValues {
  /** CHW float32. */
  pixelValues: Float32Array;
  shape: [number, number, number];
}

const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

export class CLIPImageProcessor {
  readonly doResize: boolean;
  /** Either resize the short side to `shortestEdge`, or to exactly `height` x `width`. */
  readonly size: { shortestEdge: number } | { height: number; width: number };
  readonly resample: number;
  readonly doCenterCrop: boolean;
  readonly cropHeight: number;
  readonly cropWidth: number;
  readonly doRescale: boolean;
  readonly rescaleFactor: number;
  readonly doNormalize: boolean;
  readonly mean: number[];
  readonly std: number[];

  /** Defaults are openai/clip-vit-large-patch14's preprocessor_config.json. */
  constructor(cfg: ClipProcessorConfig = {}, source = 'preprocessor config') {
    const bad = (msg: string): never => {
      throw new Error(`image: ${source}: ${msg}`);
    };
    this.doResize = cfg.do_resize ?? true;
    const size = cfg.size ?? { shortest_edge: 224 };
    // An int size means shortest edge for CLIP (get_size_dict with default_to_square=False).
    this.size =
      typeof size === 'number'
        ? { shortestEdge: size }
        : typeof size?.shortest_edge === 'number'
          ? { shortestEdge: size.shortest_edge }
          : typeof size?.height === 'number' && typeof size?.width === 'number'
            ? { height: size.height, width: size.width }
            : bad(`unsupported size ${JSON.stringify(size)}`);
    this.resample = cfg.resample ?? Resample.BICUBIC;
    if (!FILTERS[this.resample]) bad(`unsupported resample ${this.resample}`);
    this.doCenterCrop = cfg.do_center_crop ?? true;
    const crop = cfg.crop_size ?? 224;
    this.cropHeight = typeof crop === 'number' ? crop : crop.height;
    this.cropWidth = typeof crop === 'number' ? crop : crop.width;
    if (!(this.cropHeight > 0 && this.cropWidth > 0)) bad(`invalid crop_size ${JSON.stringify(crop)}`);
    this.doRescale = cfg.do_rescale ?? true;
    this.rescaleFactor = cfg.rescale_factor ?? 1 / 255;
    this.doNormalize = cfg.do_normalize ?? true;
    this.mean = cfg.image_mean ?? CLIP_MEAN;
    this.std = cfg.image_std ?? CLIP_STD;
    if (this.mean.length !== 3 || this.std.length !== 3) bad('image_mean and image_std must have 3 entries');
  }

  static fromFile(file: string): CLIPImageProcessor {
    let cfg: ClipProcessorConfig;
    try {
      cfg = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`image: ${file}: cannot load preprocessor config (${(e as Error).message})`);
    }
    return new CLIPImageProcessor(cfg, file);
  }

  static fromDir(dir: string): CLIPImageProcessor {
    return CLIPImageProcessor.fromFile(path.join(dir, 'preprocessor_config.json'));
  }

  /** LLaVA's pad colour: int(255 * mean) per channel. */
  get padColor(): [number, number, number] {
    return [0, 1, 2].map((c) => Math.trunc(255 * this.mean[c])) as [number, number, number];
  }

  /** The size the resize step produces for a W x H image (transformers' get_resize_output_image_size). */
  resizeTarget(width: number, height: number): { width: number; height: number } {
    if ('height' in this.size) return { width: this.size.width, height: this.size.height };
    const s = this.size.shortestEdge;
    const short = Math.min(width, height);
    const long = Math.max(width, height);
    const newLong = Math.trunc((s * long) / short); // Python int(): truncation, same float expression
    return width <= height ? { width: s, height: newLong } : { width: newLong, height: s };
  }

  /** The uint8 stages: [expand to square], resize, center crop. The images the first two make are checked
   *  against the pixel caps before they are allocated: a 1x20000 image in 'pad' mode would otherwise become
   *  a 20000x20000 square, and in 'square' mode a 224x4480000 resize. */
  prepareRgb(img: RgbImage, aspect: AspectMode = 'square', limits: Partial<ImageLimits> = {}): RgbImage {
    const lim = imageLimits(limits);
    let cur = img;
    if (aspect === 'pad' && img.width !== img.height) {
      const s = Math.max(img.width, img.height);
      checkLimits(null, s, s, lim, "the 'pad' square");
      cur = expandToSquare(img, this.padColor);
    }
    if (this.doResize) {
      const t = this.resizeTarget(cur.width, cur.height);
      if (t.width !== cur.width || t.height !== cur.height) {
        checkLimits(null, t.width, Math.max(t.height, cur.height), lim, 'the resized image');
        cur = resizeRgb(cur, t.width, t.height, this.resample);
      }
    }
    if (this.doCenterCrop) cur = centerCrop(cur, this.cropHeight, this.cropWidth);
    return cur;
  }

  /** Rescale and normalise a uint8 RGB image into CHW float32 (float64 maths, one rounding at the end). */
  toPixelValues(img: RgbImage): PixelValues {
    const { width: w, height: h, data } = img;
    const out = new Float32Array(3 * h * w);
    for (let c = 0; c < 3; c++) {
      const mean = this.doNormalize ? this.mean[c] : 0;
      const std = this.doNormalize ? this.std[c] : 1;
      const scale = this.doRescale ? this.rescaleFactor : 1;
      for (let i = 0; i < h * w; i++) out[c * h * w + i] = (data[i * 3 + c] * scale - mean) / std;
    }
    return { pixelValues: out, shape: [3, h, w] };
  }

  /** Full preprocessing of one image (path, encoded bytes, or decoded RGB); `limits` overrides the pixel
   *  caps of decoding and of the intermediate images. */
  preprocess(input: string | Uint8Array | RgbImage, opts: PreprocessOptions = {}): PixelValues {
    const aspect = checkPreprocess(opts);
    const img = typeof input === 'string' || input instanceof Uint8Array ? decodeImage(input, { limits: opts.limits }) : input;
    return this.toPixelValues(this.prepareRgb(img, aspect, opts.limits));
  }

  /** preprocess with the JPEG or WebP decode off this thread (decodeImageAsync). */
  async preprocessAsync(input: string | Uint8Array | RgbImage, opts: PreprocessOptions = {}): Promise<PixelValues> {
    const aspect = checkPreprocess(opts);
    const img = typeof input === 'string' || input instanceof Uint8Array ? await decodeImageAsync(input, { limits: opts.limits }) : input;
    return this.toPixelValues(this.prepareRgb(img, aspect, opts.limits));
  }
}

/** Options of CLIPImageProcessor.preprocess: the aspect mode and the decoding / resizing caps. */
export interface PreprocessOptions extends DecodeOptions {
  aspect?: AspectMode;
}
const PREPROCESS_KEYS = optionKeys<PreprocessOptions>({ ...DECODE_KEYS, aspect: true });

function checkPreprocess(opts: PreprocessOptions): AspectMode {
  checkOptions('preprocess', opts, PREPROCESS_KEYS);
  return checkAspect(opts.aspect);
}

function checkAspect(aspect: AspectMode | undefined): AspectMode {
  const a = aspect ?? 'square';
  if (a !== 'square' && a !== 'pad') throw new Error(`image: unknown aspect mode '${a}' (square or pad)`);
  return a;
}

/** The image processor config a checkpoint uses: preprocessor_config.json of the model directory, else of
 *  its vision tower directory, else CLIP's defaults at the tower's image size. Plain file reading (no
 *  native code), so training's worker threads may call it too. */
export function resolveProcessorConfig(modelDir: string, opts: { visionDir?: string | null; imageSize?: number } = {}): ClipProcessorConfig {
  for (const d of [modelDir, opts.visionDir]) {
    if (!d) continue;
    const f = path.join(d, 'preprocessor_config.json');
    if (fs.existsSync(f)) return readJson<ClipProcessorConfig>(f, 'file', 'image', { object: true });
  }
  const s = opts.imageSize ?? 224;
  return { size: { shortest_edge: s }, crop_size: { height: s, width: s } };
}
