// The tiny LLaVA fixture against transformers' own outputs (test/fixtures/tiny-llava, computed in
// float64 and stored as float32). Tolerances: float32 maths here vs float64 there lands within about
// 1e-4 relative (fixtures README); we use atol 2e-5 on O(1) activations and rtol 1e-3 on gradients,
// whose smallest entries carry the most relative rounding.
import t from 'tap';
import type { Test } from 'tap';
import * as path from 'path';
import * as fs from 'fs';
import * as os from 'os';
import * as L from '../../lib';
import { loadLlava } from '../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../lib/models/llava';
import { SafetensorsFile } from '../../lib/io/safetensors';
import { AdamW } from '../../lib/optim';
import { TEST_DIR, readInts } from '../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
const refF = (n: string): Float32Array => ref.readAsFloat32(n);
const refI = (n: string): number[] => readInts(ref, n);
const T = 143;
const rows = (a: number[]): number[][] => [a.slice(0, T), a.slice(T)];
const ids = rows(refI('input_ids'));
const mask = rows(refI('attention_mask'));
const labels = rows(refI('labels'));

function maxErr(actual: ArrayLike<number>, expected: ArrayLike<number>, keep?: (i: number) => boolean): { abs: number; rel: number } {
  let abs = 0;
  let rel = 0;
  for (let i = 0; i < expected.length; i++) {
    if (keep && !keep(i)) continue;
    const d = Math.abs(actual[i] - expected[i]);
    abs = Math.max(abs, d);
    rel = Math.max(rel, d / (Math.abs(expected[i]) + 1e-6));
  }
  return { abs, rel };
}
function close(tt: Test, a: L.Tensor, name: string, atol: number, rtol: number, keep?: (i: number) => boolean, label = name): void {
  const e = refF(name);
  tt.same(
    a.shape,
    ref.info(name).shape.length === 1 && ref.info(name).shape[0] === 1 && a.ndim === 0 ? a.shape : ref.info(name).shape,
    `${name} shape`,
  );
  const got = a.dataSync() as Float32Array;
  let bad = 0;
  for (let i = 0; i < e.length; i++) if ((!keep || keep(i)) && !(Math.abs(got[i] - e[i]) <= atol + rtol * Math.abs(e[i]))) bad++;
  const { abs } = maxErr(got, e, keep);
  tt.equal(bad, 0, `${label}: max abs err ${abs.toExponential(2)}`);
}

let model: LlavaForConditionalGeneration;
let pixels: L.Tensor;
t.before(() => {
  model = loadLlava(dir);
  const pv = ref.info('pixel_values');
  pixels = L.keep(L.tensor(refF('pixel_values'), { shape: pv.shape }));
});
t.teardown(() => {
  model.dispose();
  pixels.dispose();
});

t.test('vision and projector features', async (tt) => {
  L.tidy(() => {
    close(tt, model.visionFeatures(pixels), 'vision_select_features', 2e-5, 1e-4);
    close(tt, model.imageFeatures(pixels), 'image_features', 2e-5, 1e-4);
    // the last encoder layer output (before post_layernorm), by running the whole tower
    close(tt, model.vision.forward(pixels, -1), 'vision_last_hidden_state', 2e-5, 1e-4);
  });
});

t.test('logits at attended positions', async (tt) => {
  L.tidy(() => {
    const { logits } = model.forward({ inputIds: ids, attentionMask: mask, pixelValues: pixels });
    const V = 678;
    const flatMask = mask.flat();
    close(tt, logits, 'logits', 3e-5, 1e-4, (i) => flatMask[Math.floor(i / V)] === 1);
  });
});

function lossAndGrads(stage: 1 | 2): number {
  model.zeroGrad();
  model.setStage(stage);
  return L.tidy(() => {
    const { loss } = model.loss({ inputIds: ids, attentionMask: mask, labels, pixelValues: pixels });
    loss.backward();
    return loss.item();
  });
}

for (const stage of [1, 2] as const) {
  t.test(`stage ${stage}: loss and every gradient`, async (tt) => {
    const loss = lossAndGrads(stage);
    tt.ok(Math.abs(loss - refF(`stage${stage}.loss`)[0]) < 1e-5, `loss ${loss} vs ${refF(`stage${stage}.loss`)[0]}`);
    const expected = ref
      .names()
      .filter((n) => n.startsWith(`stage${stage}.grad.`))
      .map((n) => n.slice(`stage${stage}.grad.`.length));
    tt.equal(expected.length, stage === 1 ? 4 : 25);
    for (const [name, p] of model.namedParameters()) {
      if (expected.includes(name)) {
        tt.ok(p.grad, `${name} has a gradient`);
        if (p.grad) close(tt, p.grad, `stage${stage}.grad.${name}`, 1e-6, 1e-3);
      } else {
        tt.equal(p.grad, null, `${name} (frozen) has no gradient`);
      }
    }
    model.zeroGrad();
  });
}

t.test('two AdamW steps on the projector', async (tt) => {
  // Strict: the optimizer alone, fed the reference gradient in float64.
  const names = ['linear_1.weight', 'linear_1.bias', 'linear_2.weight', 'linear_2.bias'].map((n) => `multi_modal_projector.${n}`);
  const src = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
  const params = names.map((n) => L.keep(L.tensor(src.readAsFloat32(n), { shape: src.info(n).shape, dtype: 'float64', requiresGrad: true })));
  params.forEach((p, i) => (p.grad = L.keep(L.tensor(refF(`stage1.grad.${names[i]}`), { shape: p.shape, dtype: 'float64' }))));
  const opt = new AdamW(params, { lr: 2e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
  opt.stepUpdate();
  opt.stepUpdate();
  params.forEach((p, i) => close(tt, p, `adamw2.${names[i]}`, 1e-7, 1e-6));
  opt.dispose();
  params.forEach((p) => p.dispose());
  // End to end: our float32 gradients, then the same two steps. Adam moves an entry by about
  // lr * g / (|g| + eps) per step, so where the reference gradient is tiny (|g| < 1e-6, i.e. within
  // 100x of the ~1e-8 float32 gradient error) a gradient error of 1e-8 can move the update by up to
  // lr: those few entries are held to 2 * lr, and must stay few; every other entry to 1e-6.
  const fresh = loadLlava(dir);
  try {
    lossAndGradsOn(fresh);
    const opt2 = new AdamW(fresh.projector.parameters(), { lr: 2e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
    opt2.stepUpdate();
    opt2.stepUpdate();
    for (const [name, p] of fresh.projector.namedParameters('multi_modal_projector.')) {
      const g = refF(`stage1.grad.${name}`);
      const tiny = (i: number): boolean => Math.abs(g[i]) < 1e-6;
      const nTiny = g.filter((v) => Math.abs(v) < 1e-6).length;
      tt.ok(nTiny <= Math.max(2, g.length / 100), `${name}: ${nTiny} of ${g.length} entries have a near-zero gradient`);
      close(tt, p, `adamw2.${name}`, 1e-6, 1e-5, (i) => !tiny(i));
      close(tt, p, `adamw2.${name}`, 2 * 2e-3, 0, tiny, `adamw2.${name} (near-zero gradient entries)`);
    }
    opt2.dispose();
  } finally {
    fresh.dispose();
  }
});
function lossAndGradsOn(m: LlavaForConditionalGeneration): void {
  m.setStage(1);
  L.tidy(() => m.loss({ inputIds: ids, attentionMask: mask, labels, pixelValues: pixels }).loss.backward());
}

t.test('greedy decoding with and without the KV cache', async (tt) => {
  const prompt = refI('greedy.prompt_ids');
  const expected = refI('greedy.output_ids');
  const pix0 = L.narrow(pixels, 0, 0, 1);
  tt.same(model.greedyNoCache(prompt, pix0, expected.length), expected, 'no cache');
  const { cache, logits, length } = model.prefill(prompt, pix0, prompt.length + expected.length + 1);
  const out: number[] = [];
  let lg = logits;
  for (let i = 0; i < expected.length; i++) {
    const next = L.argmax(lg).item();
    lg.dispose();
    out.push(next);
    lg = model.decodeStep(next, length + i, cache);
  }
  lg.dispose();
  cache.dispose();
  pix0.dispose();
  tt.same(out, expected, 'with cache');
});

t.test('bf16 weights load and match within bf16 tolerance', async (tt) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-bf16-'));
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(dir, f), path.join(tmp, f));
  fs.copyFileSync(path.join(dir, 'model.bf16.safetensors'), path.join(tmp, 'model.safetensors'));
  const m = loadLlava(tmp, { dtype: 'float32' });
  try {
    L.tidy(() => {
      const { logits } = m.forward({ inputIds: ids, attentionMask: mask, pixelValues: pixels });
      const got = logits.dataSync() as Float32Array;
      const e = refF('logits');
      const flatMask = mask.flat();
      const { abs } = maxErr(got, e, (i) => flatMask[Math.floor(i / 678)] === 1);
      // bf16 weights carry ~2^-9 relative error each; logits of size ~4 drift by a few 1e-2.
      tt.ok(abs < 0.1, `bf16-weight logits within 0.1 (max abs err ${abs.toFixed(4)})`);
      tt.ok(abs > 0, 'bf16 weights really differ from f32');
    });
  } finally {
    m.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

t.test('bad checkpoints give errors naming the problem', async (tt) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-bad-'));
  const { writeSafetensors } = await import('../../lib/io/safetensors');
  const src = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
  const all: Record<string, { dtype: 'F32'; shape: number[]; data: Uint8Array }> = {};
  for (const n of src.names()) all[n] = { dtype: 'F32', shape: src.info(n).shape, data: src.read(n).data };
  fs.copyFileSync(path.join(dir, 'config.json'), path.join(tmp, 'config.json'));
  const attempt = (mutate: (x: typeof all) => void, pattern: RegExp, what: string): void => {
    const copy = { ...all };
    mutate(copy);
    writeSafetensors(path.join(tmp, 'model.safetensors'), copy);
    tt.throws(() => loadLlava(tmp), pattern, what);
  };
  attempt((x) => delete x['language_model.model.norm.weight'], /missing tensors: language_model.model.norm.weight/, 'missing tensor');
  attempt((x) => (x['extra.weight'] = x['language_model.model.norm.weight']), /unexpected tensors in checkpoint: extra.weight/, 'unexpected tensor');
  attempt(
    (x) => (x['language_model.model.norm.weight'] = { dtype: 'F32', shape: [47], data: x['language_model.model.norm.weight'].data.slice(0, 47 * 4) }),
    /'language_model.model.norm.weight' has shape \[47\], model expects \[48\]/,
    'wrong shape',
  );
  // truncated file
  const good = fs.readFileSync(path.join(dir, 'model.safetensors'));
  fs.writeFileSync(path.join(tmp, 'model.safetensors'), good.subarray(0, good.length - 100));
  tt.throws(() => loadLlava(tmp), /model\.safetensors/, 'truncated file names the file');
  // header lying about offsets
  const hlen = Number(good.readBigUInt64LE(0));
  const header = JSON.parse(good.subarray(8, 8 + hlen).toString('utf8'));
  const first = Object.keys(header).find((k) => k !== '__metadata__')!;
  header[first].data_offsets = [0, 10_000_000];
  const hb = Buffer.from(JSON.stringify(header));
  const lenB = Buffer.alloc(8);
  lenB.writeBigUInt64LE(BigInt(hb.length));
  fs.writeFileSync(path.join(tmp, 'model.safetensors'), Buffer.concat([lenB, hb, good.subarray(8 + hlen)]));
  tt.throws(() => loadLlava(tmp), /./, 'lying header is an error');
  fs.writeFileSync(path.join(tmp, 'config.json'), '{"model_type": "bert"}');
  tt.throws(() => loadLlava(tmp), /not a LLaVA config/, 'wrong config');
  fs.rmSync(tmp, { recursive: true, force: true });
});

t.test('memory is flat across a training step', async (tt) => {
  model.setStage(2);
  const opt = new AdamW(
    model.parameters().filter((p) => p.requiresGrad),
    { lr: 1e-4, weightDecay: 0 },
  );
  const step = (): void => {
    L.tidy(() => model.loss({ inputIds: ids, attentionMask: mask, labels, pixelValues: pixels }).loss.backward());
    opt.stepUpdate();
    opt.zeroGrad();
  };
  step();
  const before = L.memory();
  step();
  step();
  const after = L.memory();
  tt.equal(after.numTensors, before.numTensors, 'live tensors flat');
  tt.equal(after.cpu.bytes, before.cpu.bytes, 'bytes flat');
  opt.dispose();
});
