// Batched generation (lib/app/inference/generate_batch.ts) on the tiny LLaVA fixture: every row of a
// left-padded batch must generate what `generateText` generates for its prompt alone — greedy ids against
// transformers' `greedy.output_ids`, seeded sampling, rows with and without an image, rows of different
// lengths finishing at different steps (EOS, stop string, token cap) — in float64, where summation order
// cannot flip a token; the batched prefill's logits against one-row prefills; bad input; no leaked tensors.
import t from 'tap';
import * as path from 'path';
import * as L from '../../../lib';
import { loadLlava } from '../../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../../lib/models/llava';
import { SafetensorsFile } from '../../../lib/io/safetensors';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { generateText, encodePrompt } from '../../../lib/app/inference/generate';
import { generateBatch, type BatchPrompt } from '../../../lib/app/inference/generate_batch';
import { TEST_DIR, readInts } from '../../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
const refI = (n: string): number[] => readInts(ref, n);
const greedyPrompt = refI('greedy.prompt_ids');
const greedyIds = refI('greedy.output_ids');

let m32: LlavaForConditionalGeneration;
let m64: LlavaForConditionalGeneration;
let tok: Tokenizer;
let pix: { f32: L.Tensor; f64: L.Tensor; f64b: L.Tensor };
t.before(() => {
  m32 = loadLlava(dir);
  m64 = loadLlava(dir, { dtype: 'float64' });
  tok = Tokenizer.fromDir(dir);
  const p0 = ref.readAsFloat32('image0.pixel_values');
  const p1 = ref.readAsFloat32('image1.pixel_values');
  pix = {
    f32: L.keep(L.tensor(p0, { shape: [1, 3, 28, 28] })),
    f64: L.keep(L.tensor(p0, { shape: [1, 3, 28, 28], dtype: 'float64' })),
    f64b: L.keep(L.tensor(p1, { shape: [1, 3, 28, 28], dtype: 'float64' })),
  };
});
t.teardown(() => {
  m32.dispose();
  m64.dispose();
  for (const p of Object.values(pix)) p.dispose();
  ref.close();
});

const USER = (q: string, image: boolean) => `USER: ${image ? '<image>\n' : ''}${q} ASSISTANT:`;

t.test('greedy: the fixture prompt in a batch still gives greedy.output_ids', async (tt) => {
  const before = L.memory().numTensors;
  const out = await generateBatch(
    m32,
    tok,
    [{ promptIds: greedyPrompt, pixelValues: pix.f32 }, { prompt: USER('Name a colour, then count to five.', false) }],
    { maxNewTokens: greedyIds.length },
  );
  tt.same(out[0].ids, greedyIds, 'row 0 (the longer prompt, with its image) equals transformers');
  tt.equal(out[0].text, tok.decode(greedyIds).trim());
  tt.equal(out[0].promptLength, greedyPrompt.length);
  const alone = await generateText(m32, tok, { prompt: USER('Name a colour, then count to five.', false), maxNewTokens: greedyIds.length });
  tt.same(out[1].ids, alone.ids, 'row 1 (left-padded) equals its own generation (float32)');
  tt.equal(L.memory().numTensors, before, 'no tensors leak');
});

t.test('float64: every row equals its own generation, greedy and sampled, finishing at different steps', async (tt) => {
  const prompts: BatchPrompt[] = [
    { prompt: USER('What is in the picture?', true), pixelValues: pix.f64, seed: 11 },
    { prompt: USER('Hi', false), seed: 12 },
    { prompt: USER('Describe the second picture in great detail, please, with colours.', true), pixelValues: pix.f64b, seed: 13 },
    { promptIds: encodePrompt(m64, tok, USER('Count.', false)), seed: 14 },
  ];
  const before = L.memory().numTensors;
  for (const sampling of [{ temperature: 0 }, { temperature: 0.9, topP: 0.95 }, { temperature: 1.3, topK: 20 }]) {
    for (const maxNewTokens of [1, 9, 30]) {
      const batch = await generateBatch(m64, tok, prompts, { ...sampling, maxNewTokens });
      for (let b = 0; b < prompts.length; b++) {
        const p = prompts[b];
        const alone = await generateText(m64, tok, { ...p, ...sampling, maxNewTokens });
        tt.same(batch[b], alone, `row ${b}, ${JSON.stringify(sampling)}, ${maxNewTokens} tokens`);
      }
    }
  }
  // Rows ending at different steps: an EOS id only row 0 produces, a stop string only row 3 produces.
  const alone = await Promise.all(prompts.map((p) => generateText(m64, tok, { ...p, maxNewTokens: 12, eosTokenId: null })));
  const others = (b: number) => alone.filter((_, i) => i !== b);
  const eos = alone[0].ids.slice(2).find((id) => others(0).every((r) => !r.ids.includes(id)));
  const stop = alone[3].ids
    .slice(2)
    .map((id) => tok.decode([id]).trim())
    .find((piece) => piece.length >= 2 && others(3).every((r) => !r.text.includes(piece)));
  tt.ok(eos !== undefined && stop !== undefined, `an EOS id (${eos}) and a stop string (${JSON.stringify(stop)}) that one row each reaches`);
  const opts = { maxNewTokens: 12, eosTokenId: eos, stop };
  const batch = await generateBatch(m64, tok, prompts, opts);
  const single = await Promise.all(prompts.map((p) => generateText(m64, tok, { ...p, ...opts })));
  tt.same(batch, single, 'EOS, stop strings and caps per row');
  tt.ok(
    new Set(batch.map((r) => r.ids.length)).size > 1,
    `rows finished at different steps (${batch.map((r) => `${r.ids.length} ${r.finishReason}`)})`,
  );
  tt.equal(L.memory().numTensors, before, 'no tensors leak');
});

t.test('the batched prefill: each row of the left-padded batch has its own logits', async (tt) => {
  const rows = [encodePrompt(m64, tok, USER('A long question about the image here?', true)), encodePrompt(m64, tok, USER('Hi', false))];
  const pre = m64.prefillBatch(rows, pix.f64, 64);
  tt.same(pre.lengths, [rows[0].length, rows[1].length]);
  const W = Math.max(...pre.lengths);
  tt.same(pre.keyMask[1], [...new Array(W - rows[1].length).fill(0), ...new Array(rows[1].length).fill(1)], 'left padding is masked');
  const got = pre.logits.toNumbers();
  const V = pre.logits.shape[1];
  for (let b = 0; b < 2; b++) {
    const one = m64.prefill(rows[b], b === 0 ? pix.f64 : null, 64);
    const want = one.logits.toNumbers();
    let d = 0;
    for (let v = 0; v < V; v++) d = Math.max(d, Math.abs(got[b * V + v] - want[v]));
    tt.ok(d < 1e-12, `row ${b}: max logit difference ${d}`);
    one.cache.dispose();
    one.logits.dispose();
  }
  pre.cache.dispose();
  pre.logits.dispose();
});

t.test('bad input', async (tt) => {
  const ok = { prompt: USER('Hi', false) };
  await tt.rejects(generateBatch(m32, tok, []), /\[generateBatch\] give a non-empty array of prompts/);
  await tt.rejects(
    generateBatch(m32, tok, [ok], { max_new_tokens: 3 } as never),
    /unknown option 'max_new_tokens' \(did you mean 'maxNewTokens'\?\)/,
  );
  await tt.rejects(
    generateBatch(m32, tok, [{ prompt: 'x', pixel_values: null } as never]),
    /\[generateBatch prompt 0\] unknown option 'pixel_values'/,
  );
  await tt.rejects(generateBatch(m32, tok, [ok, {}]), /prompt 1: give promptIds or prompt/);
  await tt.rejects(generateBatch(m32, tok, [ok, { prompt: USER('x', true) }]), /prompt 1 has 1 image placeholder\(s\) but 0 image\(s\)/);
  await tt.rejects(
    generateBatch(m32, tok, [{ prompt: USER('x', false), pixelValues: pix.f32 }, ok]),
    /prompt 0 has 0 image placeholder\(s\) but 1 image\(s\)/,
  );
  const flat = L.zeros([3, 28, 28]);
  await tt.rejects(
    generateBatch(m32, tok, [{ prompt: USER('x', true), pixelValues: flat }]),
    /prompt 0: pixelValues must be \[N, 3, 28, 28\], got \[3,28,28\]/,
  );
  flat.dispose();
  await tt.rejects(generateBatch(m32, tok, [ok], { maxNewTokens: -1 }), /maxNewTokens must be a non-negative integer/);
  await tt.rejects(generateBatch(m32, tok, [ok], { temperature: 0.5, topP: 2 }), /topP must be in \(0, 1\]/);
  const long = { promptIds: new Array(600).fill(5) };
  await tt.rejects(generateBatch(m32, tok, [ok, long]), /prompt 1 takes 600 positions; the context holds 512/);
  const zero = await generateBatch(m32, tok, [ok], { maxNewTokens: 0 });
  tt.same(zero, [{ text: '', ids: [], finishReason: 'length', promptLength: encodePrompt(m32, tok, ok.prompt).length }], 'no tokens asked');
});
