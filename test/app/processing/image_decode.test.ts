// Image decoding against PIL (test/fixtures/images, made by make_images.py with PIL 9.4) and the
// decompression bombs: each is refused from its header, before any pixel is allocated. Refusals are
// asserted by their errors (a bomb that got through would allocate gigabytes and take seconds to minutes).
import t, { type Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { createHash } from 'crypto';
import { PNG } from 'pngjs';
import {
  CLIPImageProcessor,
  decodeImage,
  decodeImageAsync,
  ImageLimitError,
  imageLimits,
  DEFAULT_MAX_IMAGE_PIXELS,
} from '../../../lib/app/processing/image';
import { requestPixels } from '../../../lib/app/serve/completion';
import { SampleEncoder, type DatasetSpec } from '../../../lib/app/train/dataset';
import { EncoderPool } from '../../../lib/app/train/batch_loader';
import type { LlavaSession } from '../../../lib/app/processing/session';
import { TEST_DIR } from '../../helpers';

const FIX = path.join(TEST_DIR, 'fixtures', 'images');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'img-bomb-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Entry {
  file: string;
  mode: string;
  width: number;
  height: number;
  rgb: string;
  rgbSha256: string;
  clip224Sha256: { square: string; pad: string };
}
const manifest = JSON.parse(fs.readFileSync(path.join(FIX, 'manifest.json'), 'utf8')) as { images: Entry[] };
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

t.test('every fixture decodes to PIL convert("RGB") bytes, sync and async', async (t) => {
  const names = manifest.images.map((e) => e.file);
  for (const want of [
    ...['rgb420.jpg', 'rgb422.jpg', 'rgb444.jpg', 'progressive.jpg', 'grey.jpg', 'cmyk.jpg', 'cmyk_noadobe.jpg', 'exif_rotated.jpg'],
    ...['webp_lossy.webp', 'webp_lossless.webp', 'webp_alpha.webp', 'webp_anim.webp'],
    ...['gif_palette.gif', 'gif_interlaced.gif', 'gif_grey.gif', 'gif_transparent.gif', 'gif_anim.gif'],
    ...['gif_inset.gif', 'gif_inset_transparent.gif', 'gif_overhang.gif'],
  ])
    t.ok(names.includes(want), `fixture ${want} present`);
  for (const e of manifest.images) {
    const file = path.join(FIX, e.file);
    const pil = fs.readFileSync(path.join(FIX, e.rgb));
    t.equal(sha(pil), e.rgbSha256, `${e.rgb} matches the manifest`);
    const img = decodeImage(file);
    // EXIF orientation 6 would swap the sides if applied; PIL does not apply it.
    t.same([img.width, img.height], [e.width, e.height], `${e.file} (${e.mode}): size, not rotated`);
    t.ok(Buffer.from(img.data).equals(pil), `${e.file} (${e.mode}): byte-identical to PIL`);
    const a = await decodeImageAsync(fs.readFileSync(file));
    t.ok(Buffer.from(a.data).equals(pil), `${e.file}: async decode byte-identical`);
  }
});

t.test("224x224 CLIP preprocessing matches PIL's resize and crop", async (t) => {
  const proc = new CLIPImageProcessor(); // openai/clip-vit-large-patch14 defaults: shortest edge 224, crop 224
  for (const e of manifest.images.filter((x) => /^(rgb420|odd422|grey|cmyk|png_palette|webp_lossy|webp_alpha|gif_inset)\./.test(x.file))) {
    const img = decodeImage(path.join(FIX, e.file));
    for (const aspect of ['square', 'pad'] as const) {
      const out = proc.prepareRgb(img, aspect);
      t.same([out.width, out.height], [224, 224]);
      t.equal(sha(out.data), e.clip224Sha256[aspect], `${e.file} ${aspect}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------------------
// Bombs

function chunk(type: string, body: Buffer): Buffer {
  const c = Buffer.alloc(12 + body.length);
  c.writeUInt32BE(body.length, 0);
  c.write(type, 4, 'latin1');
  body.copy(c, 8);
  c.writeUInt32BE(zlib.crc32(c.subarray(4, 8 + body.length)), 8 + body.length);
  return c;
}

function ihdr(w: number, h: number): Buffer {
  const b = Buffer.alloc(13);
  b.writeUInt32BE(w, 0);
  b.writeUInt32BE(h, 4);
  b.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return chunk('IHDR', b);
}

function greyPng(w: number, h: number): Buffer {
  const png = new PNG({ width: w, height: h, colorType: 0, inputColorType: 0, bitDepth: 8, inputHasAlpha: false } as never);
  png.data = Buffer.alloc(w * h, 90);
  return PNG.sync.write(png, { colorType: 0, inputColorType: 0, bitDepth: 8, inputHasAlpha: false } as never);
}

/** A JPEG with `extra` inserted right after its first segment of marker `after`. */
function insertAfter(jpg: Buffer, after: number, extra: Buffer): Buffer {
  let p = 2;
  while (jpg[p + 1] !== after) p += 2 + jpg.readUInt16BE(p + 2);
  const end = p + 2 + jpg.readUInt16BE(p + 2);
  return Buffer.concat([jpg.subarray(0, end), extra, jpg.subarray(end)]);
}

function sof0(w: number, h: number): Buffer {
  const b = Buffer.from([0xff, 0xc0, 0, 17, 8, 0, 0, 0, 0, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
  b.writeUInt16BE(h, 5);
  b.writeUInt16BE(w, 7);
  return b;
}

const jpg420 = fs.readFileSync(path.join(FIX, 'rgb420.jpg'));

t.test('PNG with two IHDR chunks (1x1, then 12000x12000)', async (t) => {
  const one = greyPng(1, 1);
  const bomb = Buffer.concat([one.subarray(0, 33), ihdr(12000, 12000), one.subarray(33)]);
  const re = /<buffer>: malformed PNG: a second IHDR chunk at byte 33 \(12000x12000 after 1x1\); refused/;
  t.throws(() => decodeImage(bomb), re);
  await t.rejects(decodeImageAsync(bomb), re);
});

t.test('JPEG with two frame headers', async (t) => {
  // A second SOF right after the first, and one hidden after the scan data (found by walking the scan).
  const early = insertAfter(jpg420, 0xc0, sof0(15000, 15000));
  t.throws(() => decodeImage(early), /malformed JPEG: a second frame header \(SOF marker 0xc0 at byte \d+, after the one at byte \d+\); refused/);
  const eoi = jpg420.length - 2;
  const late = Buffer.concat([jpg420.subarray(0, eoi), sof0(15000, 15000), jpg420.subarray(eoi)]);
  t.throws(() => decodeImage(late), /malformed JPEG: a second frame header/);
  await t.rejects(decodeImageAsync(late), /malformed JPEG: a second frame header/);
});

t.test('a small 15000x15000 JPEG is refused from its header', async (t) => {
  // A real 64x48 file whose frame header claims 15000x15000: 2 KB that would decode to 675 MB.
  const big = Buffer.from(jpg420);
  let p = 2;
  while (big[p + 1] !== 0xc0) p += 2 + big.readUInt16BE(p + 2);
  big.writeUInt16BE(15000, p + 5);
  big.writeUInt16BE(15000, p + 7);
  const re = /<buffer>: the image is 15000x15000 = 225000000 pixels, more than the 50000000 allowed/;
  t.throws(() => decodeImage(big), re);
  t.throws(() => decodeImage(big), ImageLimitError);
  await t.rejects(decodeImageAsync(big), re);
  // The side cap alone: within maxPixels, over maxSide.
  t.throws(
    () => decodeImage(big, { limits: { maxPixels: 3e8, maxSide: 10000 } }),
    /15000x15000; its longest side 15000 is more than the 10000 allowed/,
  );
});

/** decodeImage and decodeImageAsync both refuse `bytes` with an error matching `re`. */
async function refusedBoth(t: Test, bytes: Buffer, re: RegExp): Promise<void> {
  t.throws(() => decodeImage(bytes), re);
  await t.rejects(decodeImageAsync(bytes), re);
}
const BOMB_15000 = /<buffer>: the image is 15000x15000 = 225000000 pixels, more than the 50000000 allowed/;

t.test('WebP: sizes from the header (VP8, VP8L, VP8X canvas) checked before decoding; malformed files refused', async (t) => {
  const lossy = fs.readFileSync(path.join(FIX, 'webp_lossy.webp')); // VP8: frame size at data byte 6
  const lossless = fs.readFileSync(path.join(FIX, 'webp_lossless.webp')); // VP8L: packed size at data byte 1
  const anim = fs.readFileSync(path.join(FIX, 'webp_anim.webp')); // VP8X: canvas size at data byte 4
  const big = Buffer.from(lossy);
  big.writeUInt16LE(15000, 26);
  big.writeUInt16LE(15000, 28);
  await refusedBoth(t, big, BOMB_15000);
  const wide = Buffer.from(lossless);
  wide.writeUInt32LE((wide.readUInt32LE(21) & ~0x3fff) | 16383, 21);
  t.throws(() => decodeImage(wide, { limits: { maxSide: 8000 } }), /16384x37; its longest side 16384 is more than the 8000 allowed/);
  const canvas = Buffer.from(anim);
  canvas.writeUIntLE(9999, 24, 3);
  canvas.writeUIntLE(9999, 27, 3);
  t.throws(() => decodeImage(canvas), /the image is 10000x10000 = 100000000 pixels/);
  // a canvas that disagrees with the frame decodes to another size: refused, not resized
  const small = Buffer.from(anim);
  small.writeUIntLE(29, 24, 3);
  t.throws(() => decodeImage(small), /corrupt or unsupported WebP/);
  await refusedBoth(t, lossy.subarray(0, 200), /<buffer>: corrupt or unsupported WebP/);
  const odd = Buffer.from(lossy);
  odd.write('ABCD', 12, 'latin1');
  t.throws(() => decodeImage(odd), /corrupt or unsupported WebP \(first chunk 'ABCD' is not VP8, VP8L or VP8X\)/);
  const nostart = Buffer.from(lossy);
  nostart[23] = 0;
  t.throws(() => decodeImage(nostart), /corrupt or unsupported WebP \(no VP8 start code\)/);
});

t.test('GIF: the size (screen grown to the first frame) checked before decoding; malformed files refused', async (t) => {
  const gif = fs.readFileSync(path.join(FIX, 'gif_palette.gif'));
  const desc = gif.indexOf(0x2c, 13 + (3 << ((gif[10] & 7) + 1))); // the first image descriptor
  const screen = Buffer.from(gif);
  screen.writeUInt16LE(15000, 6);
  screen.writeUInt16LE(15000, 8);
  await refusedBoth(t, screen, BOMB_15000);
  const overhang = Buffer.from(gif);
  overhang.writeUInt16LE(20000, desc + 1); // the frame placed at x 20000 grows the image past the side cap
  t.throws(() => decodeImage(overhang), /the image is 20064x48; its longest side 20064 is more than the 16384 allowed/);
  await refusedBoth(t, gif.subarray(0, gif.length - 40), /<buffer>: corrupt or unsupported GIF \(image data truncated after \d+ of 3072 pixels\)/);
  const code = Buffer.from(gif);
  code[desc + 10] = 12; // LZW minimum code size
  t.throws(() => decodeImage(code), /corrupt or unsupported GIF \(LZW code size 12 outside 2\.\.8\)/);
  const noImage = Buffer.concat([gif.subarray(0, desc), Buffer.from([0x3b])]);
  t.throws(() => decodeImage(noImage), /corrupt or unsupported GIF \(no image before the trailer\)/);
  const empty = Buffer.from(gif);
  empty.writeUInt16LE(0, desc + 5);
  t.throws(() => decodeImage(empty), /corrupt or unsupported GIF \(empty first frame 0x48\)/);
});

t.test('1x20000 PNG: side cap, pad square and resize target', async (t) => {
  const file = path.join(tmp, 'tall.png');
  fs.writeFileSync(file, greyPng(1, 20000));
  const proc = new CLIPImageProcessor();
  t.throws(() => proc.preprocess(file, { aspect: 'pad' }), /tall\.png: the image is 1x20000; its longest side 20000 is more than the 16384 allowed/);
  // With the side cap raised the file decodes (20000 pixels), but neither mode may blow it up.
  const limits = { maxSide: 20000 };
  t.equal(decodeImage(file, { limits }).height, 20000);
  t.throws(
    () => proc.preprocess(file, { aspect: 'pad', limits }),
    /the 'pad' square is 20000x20000 = 400000000 pixels, more than the 50000000 allowed/,
  );
  t.throws(() => proc.preprocess(file, { aspect: 'square', limits }), /the resized image is 224x4480000 = 1003520000 pixels/);
});

t.test('a JPEG with thousands of scans, an interlaced PNG that inflates to far more than its size', async (t) => {
  // 1001 copies of the last scan of a progressive file: refused from the header walk.
  const prog = fs.readFileSync(path.join(FIX, 'progressive.jpg'));
  const lastSos = prog.lastIndexOf(Buffer.from([0xff, 0xda]));
  const scan = prog.subarray(lastSos, prog.length - 2);
  const many = Buffer.concat([prog.subarray(0, lastSos), ...new Array(1001).fill(scan), prog.subarray(prog.length - 2)]);
  t.throws(() => decodeImage(many), /malformed JPEG: more than 1000 scans; refused/);

  // Interlaced 3x3 grey: the seven Adam7 passes hold 15 bytes with their filter bytes.
  const grid = [10, 20, 30, 40, 50, 60, 70, 80, 90];
  const at = (x: number, y: number) => grid[y * 3 + x];
  const passes = [
    [[0, 0]],
    [[2, 0]],
    [
      [0, 2],
      [2, 2],
    ],
    [[1, 0]],
    [[1, 2]],
    [
      [0, 1],
      [1, 1],
      [2, 1],
    ],
  ]; // pass 1; 4; 5; 6 (row 0, then row 2); 7: one row each (filter byte 0 first)
  const stream = Buffer.from(passes.flatMap((row) => [0, ...row.map(([x, y]) => at(x, y))]));
  t.equal(stream.length, 15);
  const head = Buffer.alloc(13);
  head.writeUInt32BE(3, 0);
  head.writeUInt32BE(3, 4);
  head.set([8, 0, 0, 0, 1], 8); // 8-bit grey, interlaced
  const sig = greyPng(1, 1).subarray(0, 8);
  const png = (idat: Buffer) => Buffer.concat([sig, chunk('IHDR', head), chunk('IDAT', zlib.deflateSync(idat)), chunk('IEND', Buffer.alloc(0))]);
  t.same(
    Array.from(decodeImage(png(stream)).data),
    grid.flatMap((v) => [v, v, v]),
    'a real interlaced PNG decodes',
  );
  const bomb = png(Buffer.concat([stream, Buffer.alloc(20_000_000)])); // ~20 KB that inflates to 20 MB
  t.ok(bomb.length < 50_000);
  t.throws(() => decodeImage(bomb), /corrupt or unsupported PNG \(its image data inflates to more than the 15 bytes a 3x3 interlaced image needs\)/);
});

t.test('one cap on every path: limits, environment, server, training data', async (t) => {
  t.equal(imageLimits().maxPixels, DEFAULT_MAX_IMAGE_PIXELS);
  const file = path.join(FIX, 'rgb420.jpg'); // 64x48 = 3072 pixels
  t.throws(() => decodeImage(file, { limits: { maxPixels: 3000 } }), /rgb420\.jpg: the image is 64x48 = 3072 pixels, more than the 3000 allowed/);
  process.env.LLAVA_MAX_IMAGE_PIXELS = '3000';
  t.teardown(() => delete process.env.LLAVA_MAX_IMAGE_PIXELS);
  t.throws(() => decodeImage(file), /more than the 3000 allowed \(LLAVA_MAX_IMAGE_PIXELS\)/);
  t.throws(() => new CLIPImageProcessor().preprocess(file), ImageLimitError);
  process.env.LLAVA_MAX_IMAGE_PIXELS = 'lots';
  t.throws(() => decodeImage(file), /LLAVA_MAX_IMAGE_PIXELS must be a positive integer \(got 'lots'\)/);
  delete process.env.LLAVA_MAX_IMAGE_PIXELS;

  // Server: the request's cap reaches decoding, and malformed files are invalid images.
  const proc = new CLIPImageProcessor();
  const session = { preprocessAsync: (img: Uint8Array, aspect: undefined, limits: object) => proc.preprocessAsync(img, { aspect, limits }) };
  const req = (bytes: Buffer) => ({ param: 'messages[0].content[1]', bytes }) as never;
  const err = async (f: () => Promise<unknown>) => {
    try {
      await f();
    } catch (e) {
      return e as { status?: number; code?: string; message: string };
    }
    return null;
  };
  const tooBig = await err(() => requestPixels(session as unknown as LlavaSession, req(fs.readFileSync(file)), 3000));
  t.match(tooBig, { status: 400, code: 'image_too_large', message: /messages\[0\]\.content\[1\]: the image is 64x48 = 3072 pixels/ });
  // The cap covers what preprocessing makes too: the 298x224 resize of this 64x48 image.
  t.equal((await requestPixels(session as unknown as LlavaSession, req(fs.readFileSync(file)), 70000)).shape[1], 224);
  t.match(await err(() => requestPixels(session as unknown as LlavaSession, req(fs.readFileSync(file)), 4000)), {
    code: 'image_too_large',
    message: /the resized image is 298x224/,
  });
  const one = greyPng(1, 1);
  const twoIhdr = Buffer.concat([one.subarray(0, 33), ihdr(12000, 12000), one.subarray(33)]);
  t.match(await err(() => requestPixels(session as unknown as LlavaSession, req(twoIhdr), DEFAULT_MAX_IMAGE_PIXELS)), {
    code: 'invalid_image',
    message: /cannot read the image: malformed PNG/,
  });

  // Training data: a bomb in the image folder is a DataError naming the record.
  fs.copyFileSync(path.join(FIX, 'rgb420.jpg'), path.join(tmp, 'ok.jpg'));
  fs.writeFileSync(path.join(tmp, 'bomb.png'), twoIhdr);
  const spec: DatasetSpec = {
    imageFolder: tmp,
    tokenizerDir: path.join(TEST_DIR, 'fixtures', 'tiny-llava'),
    processor: { size: { shortest_edge: 28 }, crop_size: { height: 28, width: 28 } },
    template: 'plain',
    aspect: 'pad',
    modelMaxLength: 64,
    format: 'llava_llama',
    numImageTokens: 4,
    imageTokenIndex: 32000,
    maxLength: 64,
  };
  const enc = new SampleEncoder(spec);
  const sample = (image: string) => ({
    id: image,
    image,
    conversations: [
      { from: 'human' as const, value: '<image>' },
      { from: 'gpt' as const, value: 'a picture' },
    ],
  });
  t.equal(enc.encode(sample('ok.jpg'), 0, 0).pixels!.length, 3 * 28 * 28);
  t.throws(() => enc.encode(sample('bomb.png'), 1, 7), /record 7 \(id bomb\.png\): image: .*bomb\.png: malformed PNG: a second IHDR/);

  // The same inside a training worker thread, whose synchronous decode runs sharp in a nested helper.
  const pool = new EncoderPool(spec, 1);
  t.teardown(() => pool.close());
  const fromWorker = await pool.encode(sample('ok.jpg'), 0, 0);
  t.same(Array.from(fromWorker.pixels!), Array.from(enc.encode(sample('ok.jpg'), 0, 0).pixels!), 'worker thread: same pixels');
  await t.rejects(pool.encode(sample('bomb.png'), 1, 7), /record 7 \(id bomb\.png\): image: .*malformed PNG/);
});
