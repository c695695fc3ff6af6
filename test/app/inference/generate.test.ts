// Generation on the tiny LLaVA fixture: greedy ids through the streaming API (KV cache) against
// transformers' `greedy.output_ids`, seeded sampling, top-p/top-k, stop strings, EOS, max_new_tokens and the
// context cap; the sampler and the incremental detokenizer on their own; and `llava chat`.
import t from 'tap';
import * as path from 'path';
import { Readable } from 'stream';
import * as L from '../../../lib';
import { loadLlava } from '../../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../../lib/models/llava';
import { SafetensorsFile } from '../../../lib/io/safetensors';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import {
  generate,
  generateText,
  samplingDistribution,
  sampleToken,
  seededRandom,
  StreamDecoder,
  GenerateOptions,
  encodePrompt,
  prepareIds,
  eosIds,
} from '../../../lib/app/inference/generate';
import { runChat, openChatSession, chatPixels } from '../../../lib/app/inference/chat';
import { modelNameFromPath, defaultAspect, defaultTemplate } from '../../../lib/app/processing/session';
import { TEST_DIR, readInts } from '../../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
const refI = (n: string): number[] => readInts(ref, n);
const prompt = refI('greedy.prompt_ids');
const expected = refI('greedy.output_ids');

let model: LlavaForConditionalGeneration;
let tok: Tokenizer;
let pix0: L.Tensor;
t.before(() => {
  model = loadLlava(dir);
  tok = Tokenizer.fromDir(dir);
  pix0 = L.keep(L.tensor(ref.readAsFloat32('image0.pixel_values'), { shape: [1, 3, 28, 28] }));
});
t.teardown(() => {
  model.dispose();
  pix0.dispose();
  ref.close();
});

async function collect(o: Partial<GenerateOptions>) {
  const pieces: { token: number; text: string; finishReason?: string }[] = [];
  for await (const p of generate(model, tok, { promptIds: prompt, pixelValues: pix0, ...o })) pieces.push(p);
  return { ids: pieces.map((p) => p.token), text: pieces.map((p) => p.text).join(''), pieces, finish: pieces[pieces.length - 1]?.finishReason };
}

t.test('greedy through the streaming API equals greedy.output_ids', async (tt) => {
  const before = L.memory().numTensors;
  const r = await collect({ maxNewTokens: expected.length, temperature: 0 });
  tt.same(r.ids, expected, 'ids');
  tt.equal(r.text, tok.decode(expected), 'streamed text is the decoded reply');
  tt.equal(r.finish, 'length');
  tt.equal(r.pieces.filter((p) => p.finishReason).length, 1, 'only the last piece has a finish reason');
  tt.equal(L.memory().numTensors, before, 'no tensors leak (cache and logits disposed)');
  const g = await generateText(model, tok, { promptIds: prompt, pixelValues: pix0, maxNewTokens: expected.length });
  tt.same(g.ids, expected, 'generateText defaults to greedy');
  tt.equal(g.text, tok.decode(expected).trim());
  tt.equal(g.promptLength, prompt.length);
  // the same ids through the no-cache reference path, a little further
  tt.same((await collect({ maxNewTokens: 12 })).ids, model.greedyNoCache(prompt, pix0, 12), 'KV cache path == no-cache path for 12 tokens');
});

t.test('llava-hf prompts: -200 sentinels are expanded; encodePrompt tokenizes <image>', async (tt) => {
  const P = model.numImageTokens;
  const first = prompt.indexOf(676);
  const collapsed = [...prompt.slice(0, first), -200, ...prompt.slice(first + P)];
  tt.same(prepareIds(model, collapsed), prompt, 'sentinel → 16 image tokens');
  tt.same((await collect({ promptIds: collapsed, maxNewTokens: 4 })).ids, expected.slice(0, 4), 'same reply from the collapsed prompt');
  const text = tok.decode(prompt.slice(1, first), { skipSpecialTokens: false });
  const ids = encodePrompt(model, tok, text + '<image>\nWhat is unusual about this image? ASSISTANT:');
  tt.equal(ids.filter((i) => i === 676).length, P, 'image tokens expanded');
  tt.equal(ids[0], 1, 'BOS');
  tt.same(eosIds(model, tok), [2], 'EOS from the config');
});

t.test('seeded sampling is reproducible; different seeds differ', async (tt) => {
  const a = await collect({ temperature: 1, seed: 1234, maxNewTokens: 16 });
  const b = await collect({ temperature: 1, seed: 1234, maxNewTokens: 16 });
  const c = await collect({ temperature: 1, seed: 99, maxNewTokens: 16 });
  tt.same(a.ids, b.ids, 'same seed, same ids');
  tt.equal(a.text, b.text);
  tt.notSame(a.ids, c.ids, 'another seed, other ids');
  tt.notSame(a.ids, (await collect({ maxNewTokens: 16 })).ids, 'sampling differs from greedy');
});

t.test('a tiny top_p or top_k 1 is greedy', async (tt) => {
  const greedy = (await collect({ maxNewTokens: 10 })).ids;
  tt.same((await collect({ temperature: 1.5, topP: 1e-6, seed: 5, maxNewTokens: 10 })).ids, greedy, 'topP 1e-6');
  tt.same((await collect({ temperature: 1.5, topK: 1, seed: 5, maxNewTokens: 10 })).ids, greedy, 'topK 1');
  tt.same((await collect({ temperature: 0.0005, seed: 5, maxNewTokens: 10 })).ids, greedy, 'temperature <= 0.001 is greedy');
});

t.test('stop strings stop generation and are stripped', async (tt) => {
  // greedy reply: "a traffic ligmiga traffic ligmig..."
  const r = await collect({ maxNewTokens: 16, stop: 'mig' });
  tt.equal(r.text, 'a traffic lig', 'text before the stop string');
  tt.equal(r.finish, 'stop');
  tt.same(r.ids, expected.slice(0, 2), 'stopped at the token that completed it');
  tt.notOk(
    r.pieces.some((p) => p.text.includes('m')),
    'no part of the stop string was streamed',
  );
  const two = await collect({ maxNewTokens: 16, stop: ['zzz', 'ga tr'] });
  tt.equal(two.text, 'a traffic ligmi', 'a stop string spanning tokens, one of several');
  const g = await generateText(model, tok, { promptIds: prompt, pixelValues: pix0, maxNewTokens: 16, stop: 'mig' });
  tt.equal(g.text, 'a traffic lig');
  tt.equal(g.finishReason, 'stop');
});

t.test('maxNewTokens is respected and capped by the context', async (tt) => {
  tt.equal((await collect({ maxNewTokens: 3 })).ids.length, 3);
  tt.equal((await collect({ maxNewTokens: 0 })).ids.length, 0);
  const ctx = model.config.text.max_position_embeddings!;
  const filler = new Array(ctx - 3 - prompt.length).fill(311);
  const long = [...prompt, ...filler];
  const r = await collect({ promptIds: long, maxNewTokens: 100 });
  tt.equal(r.ids.length, 3, 'capped at max_position_embeddings - prompt length');
  tt.equal(r.finish, 'length');
  await tt.rejects(collect({ promptIds: [...long, 311, 311, 311], maxNewTokens: 5 }), /context holds 512/, 'a full context is an error');
  await tt.rejects(collect({ maxNewTokens: -1 }), /maxNewTokens/);
  await tt.rejects(collect({ temperature: 1, topP: 0 }), /topP/);
});

t.test('a text prompt longer than the length the splice cuts at is refused, not cut', async (tt) => {
  const config = model.config as { maxLength: number };
  const was = config.maxLength;
  config.maxLength = 40;
  try {
    const text = new Array(41).fill(311);
    await tt.rejects(collect({ promptIds: text, maxNewTokens: 2 }), /\[generate\] the prompt takes 41 positions; the model cuts its input at 40/);
    const b = new L.DecodeBatcher(model, tok);
    await tt.rejects(
      b.submit({ promptIds: text, maxNewTokens: 2 }),
      /\[DecodeBatcher\] request 0 takes 41 positions; the model cuts its input at 40/,
    );
    tt.equal((await collect({ promptIds: text.slice(1), maxNewTokens: 2 })).ids.length, 2, '40 positions are fine');
    tt.ok(prompt.length > 40, `the llava-hf image prompt (${prompt.length} positions, expanded image tokens) is never cut`);
    tt.equal((await collect({ maxNewTokens: 2 })).ids.length, 2, 'and still generates');
  } finally {
    config.maxLength = was;
  }
});

t.test('EOS stops generation', async (tt) => {
  const r = await collect({ maxNewTokens: 16, eosTokenId: expected[1] });
  tt.same(r.ids, expected.slice(0, 2), 'EOS token is the last id');
  tt.equal(r.finish, 'eos');
  tt.equal(r.text, tok.decode(expected.slice(0, 1)), 'EOS adds no text');
  const list = await collect({ maxNewTokens: 16, eosTokenId: [7, expected[1]] });
  tt.same(list.ids, expected.slice(0, 2), 'a list of EOS ids');
  tt.equal((await collect({ maxNewTokens: 5, eosTokenId: null })).ids.length, 5, 'null disables EOS');
});

t.test('sampler maths', async (tt) => {
  const logits = [Math.log(0.2), Math.log(0.5), Math.log(0.3)];
  const d = samplingDistribution(logits, { temperature: 1 });
  tt.same(d.ids, [0, 1, 2], 'no sort without top-p/top-k');
  tt.ok(Math.abs(d.probs[1] - 0.5) < 1e-12);
  const p = samplingDistribution(logits, { temperature: 1, topP: 0.75 });
  tt.same(p.ids, [1, 2], 'top-p keeps the smallest set reaching p');
  tt.ok(Math.abs(p.probs[0] - 0.625) < 1e-12 && Math.abs(p.probs[1] - 0.375) < 1e-12, 'renormalised');
  tt.same(samplingDistribution(logits, { temperature: 1, topP: 0.85 }).ids, [1, 2, 0]);
  tt.same(samplingDistribution(logits, { temperature: 1, topP: 0.5 }).ids, [1], 'exactly reaching p is enough');
  tt.same(samplingDistribution(logits, { temperature: 1, topK: 2 }).ids, [1, 2]);
  const sharp = samplingDistribution(logits, { temperature: 0.5 });
  tt.ok(Math.abs(sharp.probs[1] - 0.25 / 0.38) < 1e-12, 'temperature 0.5 squares the probabilities');
  const ties = samplingDistribution([1, 2, 2, 0], { temperature: 1, topP: 1e-9 });
  tt.same(ties.ids, [1], 'ties go to the lower id');
  const rng = seededRandom(7);
  const n = 20000;
  const counts = [0, 0, 0];
  for (let i = 0; i < n; i++) counts[sampleToken(logits, { temperature: 1 }, rng)]++;
  tt.ok(
    counts.every((c, i) => Math.abs(c / n - [0.2, 0.5, 0.3][i]) < 0.015),
    `frequencies ${counts.map((c) => (c / n).toFixed(3))}`,
  );
  const r1 = seededRandom(1);
  const r2 = seededRandom(1);
  const xs = Array.from({ length: 5 }, () => r1());
  tt.same(
    xs,
    Array.from({ length: 5 }, () => r2()),
    'seeded PRNG repeats',
  );
  tt.ok(xs.every((x) => x >= 0 && x < 1));
  tt.throws(() => sampleToken([0, NaN], { temperature: 1 }, rng), /NaN/);
});

t.test('streaming decode: whole UTF-8 characters, stop strings held back', async (tt) => {
  const s = 'héllo ünïcode 日本';
  const ids = tok.encode(s, { addSpecialTokens: false });
  const dec = new StreamDecoder(tok);
  const pieces = ids.map((id) => dec.push(id));
  pieces.push(dec.flush());
  tt.equal(pieces.join(''), s, 'pieces concatenate to the text');
  tt.notOk(
    pieces.some((p) => p.includes('\uFFFD')),
    'no replacement characters streamed',
  );
  tt.ok(pieces.includes('é') || pieces.some((p) => p.endsWith('é')), 'é comes out whole');
  tt.ok(pieces.some((p) => p.includes('日')) && pieces.some((p) => p.includes('本')), 'CJK characters come out whole');

  const d2 = new StreamDecoder(tok, '###');
  const out: string[] = [];
  for (const id of tok.encode('ab###cd', { addSpecialTokens: false })) {
    out.push(d2.push(id));
    if (d2.stopped) break;
  }
  tt.equal(out.join(''), 'ab');
  tt.ok(d2.stopped);
  const d3 = new StreamDecoder(tok, 'abc');
  tt.equal(d3.push(tok.encode('ab', { addSpecialTokens: false })[0]), '', 'a possible stop-string prefix is held');
  tt.equal(d3.flush(), 'a', 'and flushed at the end');
});

t.test('chat: one prompt prints the answer and returns 0', async (tt) => {
  let printed = '';
  const output = { write: (s: string) => (printed += s) };
  const rc = await runChat({
    model: dir,
    image: path.join(dir, 'image0.png'),
    prompt: 'What is unusual about this image?',
    temperature: 0,
    maxNewTokens: 8,
    output,
  });
  tt.equal(rc, 0);
  tt.ok(printed.trim().length > 0, `printed ${JSON.stringify(printed)}`);
  tt.ok(printed.endsWith('\n'));
  let again = '';
  await runChat({
    model: dir,
    image: path.join(dir, 'image0.png'),
    prompt: 'What is unusual about this image?',
    temperature: 0.7,
    seed: 3,
    maxNewTokens: 8,
    output: { write: (s: string) => (again += s) },
  });
  let again2 = '';
  await runChat({
    model: dir,
    image: path.join(dir, 'image0.png'),
    prompt: 'What is unusual about this image?',
    temperature: 0.7,
    seed: 3,
    maxNewTokens: 8,
    output: { write: (s: string) => (again2 += s) },
  });
  tt.equal(again, again2, 'seeded chat is reproducible');
});

t.test('chat: interactive loop keeps going until exit', async (tt) => {
  let printed = '';
  const input = Readable.from(['Describe it.\n', '\n', 'Why?\n', 'exit\n', 'never asked\n']);
  const rc = await runChat({
    model: dir,
    image: path.join(dir, 'image1.png'),
    temperature: 0,
    maxNewTokens: 4,
    input,
    output: { write: (s: string) => (printed += s) },
  });
  tt.equal(rc, 0);
  tt.equal(printed.split('ASSISTANT: ').length - 1, 2, 'two answers');
  tt.ok(printed.startsWith('USER: '));
  let eof = '';
  tt.equal(
    await runChat({
      model: dir,
      image: path.join(dir, 'image1.png'),
      maxNewTokens: 2,
      seed: 1,
      input: Readable.from(['Hi\n']),
      output: { write: (s: string) => (eof += s) },
    }),
    0,
    'EOF ends',
  );
  tt.equal(eof.split('ASSISTANT: ').length - 1, 1);
});

t.test('chat: each turn answers as generateText does on the whole conversation (earlier turns reused, not re-prefilled)', async (tt) => {
  const qs = ['Describe it.', 'Why is that unusual?', 'And the colours?'];
  let printed = '';
  let prefills = 0;
  let extended = 0;
  const proto = LlavaForConditionalGeneration.prototype;
  const [prefill, extend] = [proto.startPrefill, proto.extendPrompt];
  proto.startPrefill = function (...a: Parameters<typeof prefill>) {
    prefills++;
    return prefill.apply(this, a);
  };
  proto.extendPrompt = function (...a: Parameters<typeof extend>) {
    extended++;
    return extend.apply(this, a);
  };
  try {
    await runChat({
      model: dir,
      image: path.join(dir, 'image0.png'),
      temperature: 0,
      maxNewTokens: 6,
      input: Readable.from(qs.map((q) => q + '\n')),
      output: { write: (s: string) => (printed += s) },
    });
  } finally {
    [proto.startPrefill, proto.extendPrompt] = [prefill, extend];
  }
  tt.equal(prefills, 1, 'the image and the first turn are prefilled once');
  tt.equal(extended, 2, 'the later turns feed only what they add');
  const answers = printed
    .split('ASSISTANT: ')
    .slice(1)
    .map((a) => a.split('\nUSER: ')[0].trim());
  const session = openChatSession({ model: dir });
  const pixels = chatPixels(session, path.join(dir, 'image0.png'));
  try {
    const history: Array<[string, string]> = [];
    for (const [i, q] of qs.entries()) {
      const text = session.prompt(q, { image: true, history });
      const g = await generateText(session.model, session.tokenizer, { prompt: text, pixelValues: pixels, maxNewTokens: 6, stop: session.stop });
      tt.equal(answers[i], g.text, `turn ${i + 1}`);
      history.push([q, g.text]);
    }
  } finally {
    pixels.dispose();
    session.dispose();
  }
});

t.test('chat: clear errors', async (tt) => {
  const output = { write: () => true };
  await tt.rejects(runChat({ model: dir, image: path.join(dir, 'missing.png'), prompt: 'x', output }), /image file .*missing\.png not found/);
  await tt.rejects(runChat({ model: dir, image: path.join(dir, 'config.json'), prompt: 'x', output }), /cannot read image/);
  await tt.rejects(runChat({ model: path.join(dir, 'nope'), image: path.join(dir, 'image0.png'), prompt: 'x', output }), /not a model directory/);
  await tt.rejects(runChat({ model: dir, image: path.join(dir, 'image0.png'), prompt: 'x', template: 'bogus', output }), /unknown template 'bogus'/);
  if (!L.cuda.isAvailable())
    await tt.rejects(runChat({ model: dir, image: path.join(dir, 'image0.png'), prompt: 'x', device: 'cuda', output }), /CUDA is not available/);
  tt.equal(defaultAspect(model), 'square', 'llava-hf: the HF processor does not pad');
  tt.equal(defaultTemplate(model, dir), 'llava_hf');
  tt.equal(modelNameFromPath('/m/llava-v1.5-7b/'), 'llava-v1.5-7b');
  tt.equal(modelNameFromPath('/runs/llava-v1.5-7b/checkpoint-100'), 'llava-v1.5-7b_checkpoint-100');
});
