// e2e.ts — the GPU check's end-to-end bars (issue 16), through the same entry points a user runs:
//   * `llava verify` on the tiny LLaVA fixture on the device, float32 and bfloat16: its 42 checks
//     (logits, loss, every gradient, AdamW steps, greedy ids) against transformers' reference, with the
//     command's own tolerances (looser for bf16);
//   * the bundled demo (`npm start`: stage 1 then stage 2 on generated images) trained on the device and
//     on the CPU from the same seed and data: every optimizer step's loss must agree within DEMO_RTOL;
//   * continuous batching as `llava serve` runs it: requests joining a running DecodeBatcher on the device
//     (their prompts prefilled 8 positions at a time, each chunk in one forward with the running rows'
//     decode step) must get the greedy ids
//     `generate` gives each alone on the device, and so must a follow-up turn that reuses the first turn
//     from the prefix cache, with no tensor left behind.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../../lib';
import type { Device } from '../../lib';
import { loadLlava } from '../../lib/models/loader';
import { Tokenizer } from '../../lib/app/processing/tokenizer';
import { generateText } from '../../lib/app/inference/generate';
import { DecodeBatcher, type BatchRequest, type BatchResult } from '../../lib/app/inference/batcher';
import { runVerify } from '../../lib/app/inference/verify';
import { runDemo } from '../../lib/app/train/demo';
import type { StepRecord } from '../../lib/app/train/trainer';
import { fixtureDir, tinyLlavaRef } from './fixture';

/** One named pass/fail line of the GPU check (memory, end to end, host CPU). */
export interface Check {
  name: string;
  pass: boolean;
  detail: string;
  values?: Record<string, unknown>;
}

/** `llava verify --device dev --dtype dtype` on the fixture; `log` gets the command's table. */
export async function verifyOnDevice(dev: Device, dtype: 'float32' | 'bfloat16', log: (line: string) => void): Promise<Check> {
  const dir = fixtureDir();
  const lines: string[] = [];
  const rc = await runVerify({
    model: dir,
    reference: path.join(dir, 'reference.safetensors'),
    device: dev,
    dtype,
    log: (l) => {
      lines.push(l);
      log(`verify ${dtype} | ${l}`);
    },
  });
  return {
    name: `llava verify --device ${dev} --dtype ${dtype} (tiny LLaVA vs transformers)`,
    pass: rc === 0,
    detail: lines[lines.length - 1] ?? '',
  };
}

/** |device - cpu| <= RTOL * max(1, |cpu|) per step: f32 training, the two devices differ only in summation order. */
export const DEMO_RTOL = 2e-3;

export async function demoParity(dev: Device, steps: number): Promise<Check> {
  const name = `demo training on ${dev} vs cpu: stage 1 and stage 2, ${steps} steps each, per-step losses`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-demo-parity-'));
  try {
    const run = (device: Device) =>
      runDemo({ device, stage1Steps: steps, stage2Steps: steps, outDir: path.join(tmp, device), progress: 'none', log: () => {} });
    const ref = await run('cpu');
    const got = await run(dev);
    let worst = 0;
    let where = '';
    const problems: string[] = [];
    for (const stage of ['stage1', 'stage2'] as const) {
      const a: StepRecord[] = got[stage].history;
      const b: StepRecord[] = ref[stage].history;
      if (a.length !== b.length) problems.push(`${stage}: ${a.length} steps on ${dev}, ${b.length} on cpu`);
      for (let i = 0; i < Math.min(a.length, b.length); i++) {
        const err = Math.abs(a[i].loss - b[i].loss) / Math.max(1, Math.abs(b[i].loss));
        if (!(err <= worst)) {
          worst = err;
          where = `${stage} step ${b[i].step}: ${a[i].loss.toFixed(6)} vs ${b[i].loss.toFixed(6)}`;
        }
      }
    }
    const pass = problems.length === 0 && worst <= DEMO_RTOL;
    const last = (r: typeof ref): string => `${r.stage1.lastLoss.toFixed(4)} / ${r.stage2.lastLoss.toFixed(4)}`;
    return {
      name,
      pass,
      detail: [
        ...problems,
        `worst relative loss difference ${worst.toExponential(2)} (${where}; bar ${DEMO_RTOL})`,
        `last losses ${dev} ${last(got)}, cpu ${last(ref)}; answers right ${got.correct}/${got.total} vs ${ref.correct}/${ref.total}`,
      ].join('; '),
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Four greedy requests through a DecodeBatcher of 3 rows on `dev`, the 2nd to 4th joining mid-flight (one
 *  waits for a row; their prompts go in chunks of 8 positions: masked attention of 8 queries over the
 *  cache), then a follow-up turn from the prefix cache, each against `generateText` alone on the same
 *  device. */
export async function servingParity(dev: Device): Promise<Check> {
  const name = `continuous batching on ${dev}: 4 requests joining a running batch of 3 rows (chunked prefill), and a follow-up from the prefix cache, vs each alone`;
  const model = loadLlava(fixtureDir(), { device: dev });
  const tok = Tokenizer.fromDir(fixtureDir());
  const pix = L.keep(L.tensor(tinyLlavaRef().refF('image0.pixel_values'), { shape: [1, 3, 28, 28], device: dev }));
  const before = L.memory().numTensors;
  try {
    const q = (text: string, image: boolean): BatchRequest => ({
      prompt: `USER: ${image ? '<image>\n' : ''}${text} ASSISTANT:`,
      pixelValues: image ? pix : null,
      maxNewTokens: 12,
      eosTokenId: null,
    });
    const reqs = [q('Describe the picture.', true), q('Count to ten.', false), q('What colour is it, and why?', true), q('Say hi.', false)];
    const alone: number[][] = [];
    for (const r of reqs) alone.push((await generateText(model, tok, r)).ids);
    const b = new DecodeBatcher(model, tok, { maxBatch: 3, prefillChunk: 8 });
    const done: Promise<BatchResult>[] = [];
    done[0] = b.submit({
      ...reqs[0],
      onPiece: (p) => {
        if (p.index === 2) done.push(...reqs.slice(1).map((r) => b.submit(r)));
      },
    });
    await b.idle();
    const got = (await Promise.all(done)).map((r) => r.ids);
    // A follow-up turn through the prefix cache: the first turn's keys and values reused, the rest fed.
    const cached = new DecodeBatcher(model, tok, { prefixCachePositions: 512 });
    const turn1 = await cached.submit({ ...reqs[0], prefixKey: 'img0' });
    const follow = q(`Describe the picture. ASSISTANT: ${turn1.text.trim()}</s>USER: And the colours?`, true);
    const turn2 = await cached.submit({ ...follow, prefixKey: 'img0' });
    await cached.dispose();
    got.push(turn2.ids);
    alone.push((await generateText(model, tok, follow)).ids);
    const differ = got.map((ids, i) => (JSON.stringify(ids) === JSON.stringify(alone[i]) ? null : i)).filter((i) => i !== null);
    const leaked = L.memory().numTensors - before;
    return {
      name,
      pass: got.length === 5 && differ.length === 0 && leaked === 0 && b.maxRunning === 3 && turn2.cachedTokens > 0,
      detail: `ids ${differ.length ? `differ for request(s) ${differ.join(', ')}: ${JSON.stringify(got)} vs ${JSON.stringify(alone)}` : 'equal'}; at most ${b.maxRunning} rows together; follow-up reused ${turn2.cachedTokens} positions; ${leaked} tensor(s) left`,
    };
  } finally {
    pix.dispose();
    model.dispose();
  }
}
