// image_decode.ts — JPEG decoding speed and exactness: ours (sharp, synchronously through the helper worker
// and asynchronously in this thread) against PIL (Image.open(f).convert('RGB'), timed in its own python3
// process) and jpeg-js (the pure-JS decoder used before).
//
//   npx tsx bench/image_decode.ts [--python PATH]        (node dist/bench/image_decode.js after build:ts)
//
// The test pictures are made here: a smooth gradient with noise and hard edges, encoded by sharp at quality
// 90 with 4:2:0 chroma (the usual camera/COCO kind), at COCO size (640x480) and phone size (4032x3024).
// Each line: {size, decoder, median_ms, samples, ratio_vs_pil, identical_to_pil}; ratio = PIL ms / ours,
// so > 1 means faster than PIL. Without python3 + PIL the PIL columns are null.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createHash } from 'crypto';
import { spawnSync } from 'child_process';
import { decode as jpegJs } from 'jpeg-js';
import sharp from 'sharp';
import { decodeImage, decodeImageAsync } from '../lib/app/processing/image';

const PIL_PEER = `
import hashlib, io, json, sys, time
from PIL import Image
for f in sys.argv[2:]:
    b = open(f, 'rb').read()
    reps = int(sys.argv[1])
    ts = []
    for _ in range(reps + 1):
        t = time.perf_counter(); im = Image.open(io.BytesIO(b)).convert('RGB'); ts.append(time.perf_counter() - t)
    ts = sorted(ts[1:])
    print(json.dumps({'file': f, 'median_ms': ts[len(ts) // 2] * 1e3, 'sha': hashlib.sha256(im.tobytes()).hexdigest()}))
`;

async function picture(w: number, h: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  let seed = 12345;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const n = (seed >>> 24) % 24;
      const o = (y * w + x) * 3;
      raw[o] = (128 + 100 * Math.sin(x / 23) * Math.cos(y / 31) + n) & 255;
      raw[o + 1] = Math.min(255, ((255 * x) / w + n) | 0);
      raw[o + 2] = ((x >> 5) + (y >> 5)) % 2 ? 230 : 20 + n;
    }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 90, chromaSubsampling: '4:2:0' })
    .toBuffer();
}

async function median(reps: number, fn: () => unknown): Promise<number> {
  await fn(); // warm-up (starts the helper worker on the first call)
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return ts.sort((a, b) => a - b)[Math.floor(ts.length / 2)];
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--python');
  const python = i > 0 ? process.argv[i + 1] : fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-img-'));
  try {
    for (const [w, h, reps] of [
      [640, 480, 20],
      [4032, 3024, 5],
    ]) {
      const jpg = await picture(w, h);
      const file = path.join(dir, `${w}x${h}.jpg`);
      fs.writeFileSync(file, jpg);
      const peer = spawnSync(python, ['-c', PIL_PEER, String(reps), file], { encoding: 'utf8' });
      const pil = peer.status === 0 ? (JSON.parse(peer.stdout.trim()) as { median_ms: number; sha: string }) : null;
      const size = `${w}x${h}`;
      const sha = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');
      const rows: [string, () => unknown, () => Promise<Uint8Array>][] = [
        ['ours (sync, helper worker)', () => decodeImage(jpg), async () => decodeImage(jpg).data],
        ['ours (async)', () => decodeImageAsync(jpg), async () => (await decodeImageAsync(jpg)).data],
        [
          'jpeg-js',
          () => jpegJs(jpg, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 4096 }),
          async () => jpegJs(jpg, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 4096 }).data,
        ],
      ];
      if (pil) console.log(JSON.stringify({ size, decoder: 'PIL', median_ms: +pil.median_ms.toFixed(2), samples: reps }));
      else console.log(JSON.stringify({ size, decoder: 'PIL', skipped: (peer.stderr || String(peer.error)).trim().slice(-200) }));
      for (const [decoder, fn, bytes] of rows) {
        const ms = await median(reps, fn);
        const line = {
          size,
          decoder,
          median_ms: +ms.toFixed(2),
          samples: reps,
          ratio_vs_pil: pil ? +(pil.median_ms / ms).toFixed(2) : null,
          identical_to_pil: pil ? sha(await bytes()) === pil.sha : null,
        };
        console.log(JSON.stringify(line));
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
