// Training data for the trainer (lib/app/train/dataset.ts): item encoding for both image schemes, text-only
// samples with zero images, collation (right padding, masks, labels, image order), malformed JSON /
// records / missing and corrupt images (reported with index and id, skipped or fatal), the prefetching
// loader (inline and worker threads give the same batches), and the two schemes giving the same loss.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../../../lib';
import { loadLlava, canonicalName, loadWeights } from '../../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../../lib/models/llava';
import type { TensorSource } from '../../../lib/io/safetensors';
import { openStateDict } from '../../../lib/io/state_dict';
import { makeDemoData, DemoData } from '../../../lib/app/train/demo_data';
import { LlavaDataset, DatasetSpec, collate, renderTrainingPrompt, DataError, CollatedBatch } from '../../../lib/app/train/dataset';
import { tinyDatasetSpec } from '../../tiny_dataset';
import { PrefetchLoader, EncoderPool, microBatches } from '../../../lib/app/train/batch_loader';
import { preprocessSample } from '../../../lib/app/processing/preprocess';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { Trainer } from '../../../lib/app/train/trainer';
import { TEST_DIR } from '../../helpers';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-dataset-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const demo: DemoData = makeDemoData(path.join(tmp, 'demo'));
const tok = Tokenizer.fromDir(FIX);

const spec = (over: Partial<DatasetSpec> = {}): DatasetSpec => tinyDatasetSpec(demo.imageFolder, over);
const quiet = { logger: () => {} };

t.test('items: llava-hf expansion, original sentinels, text-only samples', async (t) => {
  const ds = LlavaDataset.fromFile(demo.finetuneJson, spec(), { tokenizer: tok });
  t.equal(ds.length, 14);
  const img = ds.item(0);
  const ref = preprocessSample(ds.samples[0], { template: 'v1', tokenizer: tok, modelMaxLength: 512 });
  t.equal(img.inputIds.filter((x) => x === 676).length, 16, '16 image tokens');
  t.notOk(img.inputIds.includes(-200), 'no sentinel left');
  t.equal(img.inputIds.length, ref.inputIds.length + 15);
  img.inputIds.forEach((id, i) => id === 676 && t.equal(img.labels[i], -100));
  t.same(
    img.labels.filter((l) => l !== -100),
    ref.labels.filter((l) => l !== -100),
    'same supervised tokens',
  );
  t.equal(img.pixels!.length, 3 * 28 * 28);
  t.equal(img.index, 0);
  t.equal(img.id, 'ft-0');
  const text = ds.item(12);
  t.equal(text.id, 'text-0');
  t.equal(text.pixels, null, 'text-only sample: zero image added at collation');
  const orig = LlavaDataset.fromFile(demo.finetuneJson, spec({ format: 'llava_llama', imageTokenIndex: -200 }), { tokenizer: tok });
  const o = orig.item(0);
  t.same(o.inputIds, ref.inputIds, 'llava_llama keeps the -200 sentinel');
  t.same(o.labels, ref.labels);
  t.equal(o.inputIds.filter((x) => x === -200).length, 1);
});

t.test('collate: right padding, masks, labels, image order', async (t) => {
  const ds = LlavaDataset.fromFile(demo.finetuneJson, spec(), { tokenizer: tok });
  const items = [ds.item(12), ds.item(0), ds.item(2)]; // text-only, image, image (2 turns)
  const b = collate(items, { padId: ds.padId, format: 'llava-hf', imageSize: 28 });
  t.equal(ds.padId, 677, 'pad id from the tokenizer');
  const T = Math.max(...items.map((i) => i.inputIds.length));
  b.inputIds.forEach((row, r) => {
    const n = items[r].inputIds.length;
    t.equal(row.length, T);
    t.same(row.slice(n), new Array(T - n).fill(677), 'right-padded with the pad id');
    t.same(b.attentionMask[r], [...new Array(n).fill(1), ...new Array(T - n).fill(0)]);
    t.same(b.labels[r].slice(n), new Array(T - n).fill(-100), 'labels -100 on pads');
  });
  t.equal(b.numImages, 2, 'llava-hf: only real images when the batch has image tokens');
  t.same(Array.from(b.pixels!.subarray(0, 10)), Array.from(items[1].pixels!.subarray(0, 10)), 'images in sample order');
  const sup = items.reduce((a, it) => a + it.labels.slice(1).filter((l) => l !== -100).length, 0);
  t.equal(b.supervisedTokens, sup);
  const textOnly = collate([ds.item(12), ds.item(13)], { padId: 677, format: 'llava-hf', imageSize: 28 });
  t.equal(textOnly.numImages, 2, 'all text-only: zero images, encoded and dropped');
  t.ok(textOnly.pixels!.every((v) => v === 0));
  const orig = LlavaDataset.fromFile(demo.finetuneJson, spec({ format: 'llava_llama', imageTokenIndex: -200 }), { tokenizer: tok });
  const ob = collate([orig.item(12), orig.item(0)], { padId: 677, format: 'llava_llama', imageSize: 28, numImageTokens: 16 });
  t.equal(ob.numImages, 2, 'original scheme: zero image for the text-only sample');
  const per = 3 * 28 * 28;
  t.same(Array.from(ob.pixels!.subarray(0, 5)), Array.from(orig.item(0).pixels!.subarray(0, 5)), 'real image first');
  t.ok(
    ob.pixels!.subarray(per).every((v) => v === 0),
    'zero image after it',
  );
  t.throws(() => collate([], { padId: 0, format: 'llava-hf', imageSize: 28 }), /empty batch/);
});

t.test('both image schemes give the same loss on the same batch', async (t) => {
  const hf = loadLlava(FIX);
  const orig = new LlavaForConditionalGeneration({ ...hf.config, format: 'llava_llama', imageTokenIndex: -200 });
  loadWeights(orig, [{ src: openStateDict(FIX) as TensorSource, rename: canonicalName }], { allowMissing: (n) => n.includes('post_layernorm') });
  try {
    const positions = [0, 12, 2, 5];
    const a = LlavaDataset.fromFile(demo.finetuneJson, spec(), { tokenizer: tok });
    const b = LlavaDataset.fromFile(demo.finetuneJson, spec({ format: 'llava_llama', imageTokenIndex: -200 }), { tokenizer: tok });
    const ba = collate(
      positions.map((p) => a.item(p)),
      { padId: 677, format: 'llava-hf', imageSize: 28 },
    );
    const bb = collate(
      positions.map((p) => b.item(p)),
      { padId: 677, format: 'llava_llama', imageSize: 28, numImageTokens: 16 },
    );
    t.equal(ba.inputTokens, bb.inputTokens, 'same real positions once spliced');
    const loss = (m: LlavaForConditionalGeneration, x: CollatedBatch): number =>
      L.tidy(() => {
        const px = L.tensor(x.pixels!, { shape: [x.numImages, 3, 28, 28] });
        return m.loss({ inputIds: x.inputIds, attentionMask: x.attentionMask, labels: x.labels, pixelValues: px }).loss.item();
      });
    const la = loss(hf, ba);
    const lb = loss(orig, bb);
    // Same maths in a different gather order: float32 rounding only.
    t.ok(Math.abs(la - lb) < 1e-5, `llava-hf ${la} vs llava_llama ${lb}`);
    // The trainer on the original scheme (sentinels, zero images for text-only samples in mixed batches).
    const tr = new Trainer(orig, b, {
      stage: 2,
      lr: 1e-3,
      microBatch: 4,
      gradAccum: 1,
      maxSteps: 2,
      groupByModalityLength: true,
      progress: 'none',
      log: () => {},
    });
    const r = await tr.train();
    tr.dispose();
    t.equal(r.steps, 2);
    t.ok(Number.isFinite(r.lastLoss));
  } finally {
    hf.dispose();
    orig.dispose();
  }
});

t.test('malformed JSON, bad records, missing images: index and id, skip or fatal', async (t) => {
  const dir = path.join(tmp, 'bad');
  fs.mkdirSync(dir, { recursive: true });
  const broken = path.join(dir, 'broken.json');
  fs.writeFileSync(broken, '[{"id": "a", "conversations": [');
  t.throws(() => LlavaDataset.fromFile(broken, spec(), { tokenizer: tok }), /malformed JSON/);
  t.throws(() => LlavaDataset.fromFile(path.join(dir, 'nope.json'), spec(), { tokenizer: tok }), /data file .*nope\.json not found/);
  t.throws(
    () => LlavaDataset.fromFile(demo.finetuneJson, spec({ imageFolder: path.join(dir, 'no-such') }), { tokenizer: tok }),
    /image folder .* not found/,
  );

  const recs = JSON.parse(fs.readFileSync(demo.finetuneJson, 'utf8')) as Record<string, unknown>[];
  const mixed = [
    recs[0],
    { id: 'bad-roles', conversations: [{ from: 'gpt', value: 'x' }] },
    recs[1],
    { ...recs[2], id: 'lost', image: 'missing.png' },
    recs[12],
  ];
  const f = path.join(dir, 'mixed.json');
  fs.writeFileSync(f, JSON.stringify(mixed));
  t.throws(() => LlavaDataset.fromFile(f, spec(), { tokenizer: tok }), /record 1 \(id bad-roles\)/, 'fatal: first bad record named');
  const msgs: string[] = [];
  const ds = LlavaDataset.fromFile(f, spec(), { tokenizer: tok, onError: 'skip', logger: (m) => msgs.push(m) });
  t.same(ds.indices, [0, 2, 4], 'bad record and missing image skipped');
  t.same(
    ds.samples.map((s) => s.id),
    ['ft-0', 'ft-1', 'text-0'],
  );
  t.same(
    ds.skipped.map((s) => [s.index, s.id]),
    [
      [1, 'bad-roles'],
      [3, 'lost'],
    ],
  );
  t.match(msgs.join('\n'), /record 1, id bad-roles/);
  t.match(msgs.join('\n'), /record 3, id lost: missing image file .*missing\.png/);
  // Missing image alone, fatal.
  const f2 = path.join(dir, 'missing.json');
  fs.writeFileSync(f2, JSON.stringify([recs[0], { ...recs[1], id: 'gone', image: 'gone.png' }]));
  const e = t.throws(() => LlavaDataset.fromFile(f2, spec(), { tokenizer: tok })) as unknown as DataError;
  t.ok(e instanceof DataError);
  t.match(e.message, /record 1, id gone: missing image file/);
  t.same(
    e.issues.map((i) => [i.index, i.id]),
    [[1, 'gone']],
  );
});

t.test('corrupt image: reported when the item is encoded; loader skips or fails', async (t) => {
  const dir = path.join(tmp, 'corrupt');
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(demo.imageFolder)) fs.copyFileSync(path.join(demo.imageFolder, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'red_circle.png'), Buffer.from('not a png at all'));
  const s = spec({ imageFolder: dir });
  const fatal = LlavaDataset.fromFile(demo.finetuneJson, s, { tokenizer: tok });
  const k = fatal.samples.findIndex((x) => x.image === 'red_circle.png');
  t.throws(() => fatal.item(k), new RegExp(`record ${fatal.indices[k]} \\(id ${fatal.samples[k].id}\\): image: .*red_circle\\.png`));
  const plan = microBatches([0, k, 3, 4], 2);
  const l1 = new PrefetchLoader(fatal, plan);
  await t.rejects(async () => {
    while (await l1.next());
  }, /red_circle\.png/);
  l1.close();
  const skipped: string[] = [];
  const skip = LlavaDataset.fromFile(demo.finetuneJson, s, { tokenizer: tok, onError: 'skip', ...quiet });
  const l2 = new PrefetchLoader(skip, plan, { onSkip: (i) => skipped.push(`${i.index}:${i.id}`) });
  const sizes: number[] = [];
  for await (const b of l2) sizes.push(b.ids.length);
  t.same(sizes, [1, 2], 'the corrupt sample is dropped from its micro-batch');
  t.same(skipped, [`${skip.indices[k]}:${skip.samples[k].id}`]);
  t.ok(skip.skipped.some((i) => i.id === skip.samples[k].id));
});

t.test('prefetching loader: inline and worker threads give the same batches, in order', async (t) => {
  const ds = LlavaDataset.fromFile(demo.finetuneJson, spec(), { tokenizer: tok });
  const plan = microBatches([3, 12, 0, 7, 13, 1, 9], 3);
  const collect = async (l: PrefetchLoader): Promise<CollatedBatch[]> => {
    const out: CollatedBatch[] = [];
    for await (const b of l) out.push(b);
    l.close();
    return out;
  };
  const inline = await collect(new PrefetchLoader(ds, plan, { prefetch: 2 }));
  const pool = new EncoderPool(ds.spec, 2);
  const workers = await collect(new PrefetchLoader(ds, plan, { prefetch: 3, pool }));
  // A shared pool survives its loaders (the trainer keeps one across epochs).
  const again = await collect(new PrefetchLoader(ds, plan.slice(1), { pool }));
  pool.close();
  t.equal(inline.length, 3);
  t.same(
    inline.map((b) => b.ids),
    [['ft-3', 'text-0', 'ft-0'], ['ft-7', 'text-1', 'ft-1'], ['ft-9']],
  );
  for (let i = 0; i < inline.length; i++) {
    t.same(workers[i].inputIds, inline[i].inputIds);
    t.same(workers[i].labels, inline[i].labels);
    t.same(Array.from(workers[i].pixels!), Array.from(inline[i].pixels!), `batch ${i} pixels identical`);
  }
  t.same(
    again.map((b) => b.ids),
    inline.slice(1).map((b) => b.ids),
  );
  // Encoding runs ahead: after the first batch is taken, the next ones are already being prepared.
  const l = new PrefetchLoader(ds, plan, { prefetch: 2 });
  await l.next();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(l.remaining, 2);
  const t0 = performance.now();
  await l.next();
  t.ok(performance.now() - t0 < 50, 'prefetched batch is ready');
  l.close();
});

t.test('rendered training prompts', async (t) => {
  const s = {
    id: 'x',
    image: 'a.png',
    conversations: [
      { from: 'human' as const, value: 'Q?\n<image>' },
      { from: 'gpt' as const, value: 'A b.' },
    ],
  };
  t.equal(renderTrainingPrompt(s, 'plain'), '<image>A b.\n');
  t.match(renderTrainingPrompt(s, 'v1'), /USER: <image>\nQ\? ASSISTANT: A b\.<\/s>$/);
  t.match(renderTrainingPrompt(s, 'llava_v0'), /### Human: <image>\nQ\?\n### Assistant: A b\.\n### $/);
});
