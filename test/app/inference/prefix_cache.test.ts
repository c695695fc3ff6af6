// Prefix caching (lib/app/inference/prefix_cache.ts through DecodeBatcher's prefixCachePositions) on the tiny
// LLaVA fixture in float64: a follow-up turn that resends the conversation reuses the previous turn's keys
// and values (image included) and still generates exactly what it generates alone; a different image key
// or an image after the shared prefix means no reuse; text-only prompts share a preamble; the cache keeps
// to its size, least recently used first, and frees everything on dispose.
import t from 'tap';
import * as L from '../../../lib';
import { generateText, encodePrompt, splicedLength, type GenerateOptions } from '../../../lib/app/inference/generate';
import { DecodeBatcher } from '../../../lib/app/inference/batcher';
import { MIN_REUSE, PrefixCache } from '../../../lib/app/inference/prefix_cache';
import { KVCache } from '../../../lib/models/llama';
import { useFloat64Llava } from './fixture64';

const fx = useFloat64Llava();

const turn1 = 'USER: <image>\nDescribe the picture in a few words. ASSISTANT:';
const next = (reply: string, q: string): string => `${turn1} ${reply}</s>USER: ${q} ASSISTANT:`;

t.test('a follow-up turn reuses the first turn (image included) and generates what it generates alone', async (tt) => {
  const before = L.memory().numTensors;
  const b = new DecodeBatcher(fx.model, fx.tok, { prefixCachePositions: 4096 });
  const r1 = await b.submit({ prompt: turn1, pixelValues: fx.pix[0], prefixKey: 'img0', maxNewTokens: 8 });
  tt.equal(r1.cachedTokens, 0, 'first turn: nothing cached yet');
  tt.equal(b.prefix!.size, 1, 'the first turn was kept');
  const first = splicedLength(fx.model, encodePrompt(fx.model, fx.tok, turn1));
  tt.equal(b.prefix!.positions, first + 7, 'prompt and the 7 reply tokens fed back');

  const follow: GenerateOptions = { prompt: next(r1.text.trim(), 'And the colours?'), pixelValues: fx.pix[0], maxNewTokens: 10 };
  const r2 = await b.submit({ ...follow, prefixKey: 'img0' });
  const alone = await generateText(fx.model, fx.tok, follow);
  tt.ok(r2.cachedTokens >= first - 1, `reused ${r2.cachedTokens} positions (the first turn's prompt has ${first})`);
  tt.same(r2.ids, alone.ids, 'same ids as alone');
  tt.equal(r2.text.trim(), alone.text);

  const other: GenerateOptions = { ...follow, pixelValues: fx.pix[1] };
  const r3 = await b.submit({ ...other, prefixKey: 'img1' });
  tt.equal(r3.cachedTokens, 0, 'another image: no reuse');
  tt.same(r3.ids, (await generateText(fx.model, fx.tok, other)).ids);
  const r4 = await b.submit({ ...other });
  tt.equal(r4.cachedTokens, 0, 'images without a key: no reuse');
  tt.equal(b.prefix!.hits, 1);
  await b.dispose();
  tt.equal(b.prefix!.size, 0);
  tt.equal(L.memory().numTensors, before, 'dispose frees every cached tensor');
});

t.test('text-only prompts share a preamble; the cache keeps to its size', async (tt) => {
  const before = L.memory().numTensors;
  const preamble = 'A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful answers.';
  const ask = (q: string): GenerateOptions => ({ prompt: `${preamble} USER: ${q} ASSISTANT:`, maxNewTokens: 6 });
  const pre = encodePrompt(fx.model, fx.tok, preamble).length;
  const b = new DecodeBatcher(fx.model, fx.tok, { prefixCachePositions: 4096 });
  await b.submit(ask('Count to three.'));
  const r = await b.submit(ask('Name a colour.'));
  tt.ok(r.cachedTokens >= pre - 1, `reused ${r.cachedTokens} positions of the ${pre}-token preamble`);
  tt.same(r.ids, (await generateText(fx.model, fx.tok, ask('Name a colour.'))).ids, 'same ids as alone');
  await b.dispose();

  const one = encodePrompt(fx.model, fx.tok, ask('Count to three.').prompt!).length + 5;
  const small = new DecodeBatcher(fx.model, fx.tok, { prefixCachePositions: one + 3 });
  await small.submit(ask('Count to three.'));
  tt.equal(small.prefix!.positions, one);
  await small.submit({ prompt: 'USER: Something else entirely, with no shared beginning at all. ASSISTANT:', maxNewTokens: 6 });
  tt.equal(small.prefix!.size, 1, 'the older entry was evicted');
  tt.ok(small.prefix!.positions <= one + 3);
  await small.dispose();
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});

t.test('extendPrompt after a cached prefix gives the logits of a full prefill (float64)', (tt) => {
  const before = L.memory().numTensors;
  const ids = encodePrompt(fx.model, fx.tok, next('A red light.', 'And the colours?'));
  const cut = encodePrompt(fx.model, fx.tok, turn1).length;
  const full = fx.model.prefill(ids, fx.pix[0], ids.length + 4);
  const head = fx.model.prefill(ids.slice(0, cut), fx.pix[0], cut + 1);
  const P = splicedLength(fx.model, ids.slice(0, cut));
  const copy = KVCache.gather([{ cache: head.cache, rows: [0], filled: P }], P, P + ids.length);
  const lg = fx.model.extendPrompt(ids.slice(cut), P, copy);
  const a = full.logits.toNumbers();
  const b = lg.toNumbers();
  const err = Math.max(...a.map((x, i) => Math.abs(x - b[i])));
  tt.ok(err < 1e-10, `max |difference| ${err.toExponential(2)}`);
  tt.equal(copy.length, full.length, 'the same positions filled');
  tt.throws(() => fx.model.extendPrompt([fx.model.config.imageTokenIndex], copy.length, copy), /text tokens only/);
  tt.throws(() => fx.model.extendPrompt([5], copy.length + 1, copy), /filled to/);
  [full.logits, full.cache, head.logits, head.cache, copy, lg].forEach((x) => x.dispose());
  tt.equal(L.memory().numTensors, before);
  tt.end();
});

t.test('PrefixCache.lookup: what counts as a reusable prefix', (tt) => {
  const before = L.memory().numTensors;
  const c = new PrefixCache(fx.model, 1000);
  const img = fx.model.config.imageTokenIndex;
  const text = Array.from({ length: 40 }, (_, i) => 100 + i);
  const entry = (ids: number[]): KVCache => {
    const k = fx.model.lm.newCache(1, splicedLength(fx.model, ids));
    k.length = splicedLength(fx.model, ids);
    return k;
  };
  c.store(text, '', entry(text));
  tt.equal(c.lookup([...text, 7], '')?.tokens, 40, 'the whole entry, one token left to feed');
  tt.equal(c.lookup(text, '')?.tokens, 39, 'the same prompt: all but its last token');
  tt.equal(c.lookup([...text.slice(0, MIN_REUSE - 1), 1, 2, 3], ''), null, `fewer than ${MIN_REUSE} positions: not worth it`);
  tt.equal(c.lookup([...text.slice(0, 30), img, 5], ''), null, 'an image after the prefix needs the full prefill');
  const withImg = [...text.slice(0, 20), ...Array(fx.model.numImageTokens).fill(img), 9, 9, 9];
  c.store(withImg, 'a', entry(withImg));
  tt.equal(c.lookup([...withImg, 4], 'a')?.tokens, withImg.length, 'same image key');
  tt.equal(c.lookup([...withImg, 4], 'b'), null, 'another image key: its image would follow any usable prefix');
  tt.throws(() => c.store([1, 2], '', entry([1, 2, 3])), /exactly the positions of its ids/);
  tt.throws(() => new PrefixCache(fx.model, -1), /non-negative integer/);
  c.dispose();
  tt.equal(L.memory().numTensors, before);
  tt.end();
});
