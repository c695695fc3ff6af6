// Continuous batching (lib/app/inference/batcher.ts) on the tiny LLaVA fixture, in float64 where summation
// order cannot flip a token: requests that join a running batch mid-flight, wait for a free row, finish at
// different steps or are aborted must each generate what `generate` generates for them alone (ids, text,
// streamed pieces); failures stay with their request; no tensor leaks. Also KVCache.gather, which moves
// rows between caches when requests join and leave.
import t, { type Test } from 'tap';
import * as L from '../../../lib';
import { KVCache } from '../../../lib/models/llama';
import { generate, type GenerateOptions, type GeneratedPiece } from '../../../lib/app/inference/generate';
import { DecodeBatcher, type BatchResult } from '../../../lib/app/inference/batcher';
import { useFloat64Llava } from './fixture64';

const fx = useFloat64Llava();

const USER = (q: string, image: boolean): string => `USER: ${image ? '<image>\n' : ''}${q} ASSISTANT:`;

// Different lengths, images or none, greedy and seeded sampling, a stop string, different token caps.
const REQS: GenerateOptions[] = [
  { prompt: USER('Describe the picture.', true), maxNewTokens: 24 },
  { prompt: USER('Count to ten.', false), maxNewTokens: 9 },
  { prompt: USER('What colour is it, and why?', true), temperature: 0.9, topP: 0.8, seed: 7, maxNewTokens: 30 },
  { prompt: USER('Say hi.', false), temperature: 1.3, topK: 20, seed: 11, maxNewTokens: 16, stop: ['e'] },
  { prompt: USER('A long question that takes more positions than the others do, about nothing at all.', false), maxNewTokens: 5 },
];
const req = (i: number): GenerateOptions => ({ ...REQS[i], pixelValues: REQS[i].prompt!.includes('<image>') ? fx.pix[i % 2] : null });

interface Alone {
  pieces: GeneratedPiece[];
  ids: number[];
  text: string;
  finishReason: string;
}
/** What `generate` streams for a request alone: its pieces and its return value. */
async function alone(o: GenerateOptions): Promise<Alone> {
  const it = generate(fx.model, fx.tok, o);
  const pieces: GeneratedPiece[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) return { pieces, ids: r.value.ids, text: r.value.text, finishReason: r.value.finishReason };
    pieces.push(r.value);
  }
}

function same(tt: Test, got: BatchResult, pieces: GeneratedPiece[], want: Alone, name: string): void {
  tt.same(got.ids, want.ids, `${name}: ids`);
  tt.equal(got.text, want.text, `${name}: text`);
  tt.equal(got.finishReason, want.finishReason, `${name}: finish reason (${want.finishReason})`);
  tt.same(pieces, want.pieces, `${name}: streamed pieces`);
}

t.test('requests joining a running batch mid-flight each generate what they generate alone', async (tt) => {
  const want: Alone[] = [];
  for (let i = 0; i < REQS.length; i++) want.push(await alone(req(i)));
  tt.ok(want[0].ids.length >= 3 && want[1].ids.length >= 2, 'requests 0 and 1 run long enough for others to join');
  tt.ok(new Set(want.map((w) => w.ids.length)).size >= 3, `they end at different steps (${want.map((w) => w.ids.length)})`);
  const before = L.memory().numTensors;
  const b = new DecodeBatcher(fx.model, fx.tok, { maxBatch: 3 });
  const pieces: GeneratedPiece[][] = REQS.map(() => []);
  const started: number[] = [];
  const done: Promise<BatchResult>[] = [];
  let waiting = -1;
  const submit = (i: number, then?: (p: GeneratedPiece) => void): void => {
    done[i] = b.submit({
      ...req(i),
      onStart: () => started.push(i),
      onPiece: (p) => {
        pieces[i].push(p);
        then?.(p);
      },
    });
  };
  // 1 joins after 0's third token; 2, 3 and 4 after 1's second. With 3 rows, 3 and 4 wait for a row.
  submit(0, (p) => {
    if (p.index === 2)
      submit(1, (q) => {
        if (q.index !== 1) return;
        [2, 3, 4].forEach((i) => submit(i));
        waiting = b.waiting;
      });
  });
  await b.idle();
  tt.equal(done.length, 5, 'every request was submitted');
  const got = await Promise.all(done);
  got.forEach((g, i) => same(tt, g, pieces[i], want[i], `request ${i}`));
  tt.ok(got.every((g) => g.started));
  tt.same(started, [0, 1, 2, 3, 4], 'started in arrival order');
  tt.equal(waiting, 3, 'three requests were waiting right after they came');
  tt.equal(b.maxRunning, 3, 'never more rows than maxBatch');
  tt.equal(b.running + b.waiting, 0);
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});

t.test('a request that ends with its first token leaves at once; one that joins after it still matches', async (tt) => {
  const one = { ...req(1), maxNewTokens: 1 };
  const want = [await alone(req(0)), await alone(one), await alone(req(3))];
  const before = L.memory().numTensors;
  const b = new DecodeBatcher(fx.model, fx.tok, { maxBatch: 3 });
  const pieces: GeneratedPiece[][] = [[], [], []];
  const done: Promise<BatchResult>[] = [];
  done[0] = b.submit({
    ...req(0),
    onPiece: (p) => {
      pieces[0].push(p);
      if (p.index === 1) done[1] = b.submit({ ...one, onPiece: (q) => pieces[1].push(q) });
      if (p.index === 3) done[2] = b.submit({ ...req(3), onPiece: (q) => pieces[2].push(q) });
    },
  });
  await b.idle();
  const got = await Promise.all(done);
  got.forEach((g, i) => same(tt, g, pieces[i], want[i], `request ${i}`));
  tt.equal(got[1].ids.length, 1);
  tt.equal(b.maxRunning, 2, 'the one-token request had left before the third joined');
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});

t.test('requests with the same prompt and image (n choices) share one prefill and still match each alone', async (tt) => {
  const seeds = [5, 6, 7];
  const choice = (seed: number): GenerateOptions => ({ ...req(2), seed });
  const want: Alone[] = [];
  for (const seed of seeds) want.push(await alone(choice(seed)));
  tt.ok(new Set(want.map((w) => w.ids.join())).size > 1, 'the seeds give different replies');
  const before = L.memory().numTensors;
  const prefilled: number[] = [];
  const prefill = fx.model.startPrefill;
  fx.model.startPrefill = function (ids, ...rest) {
    prefilled.push(ids.length);
    return prefill.call(this, ids, ...rest);
  };
  try {
    const b = new DecodeBatcher(fx.model, fx.tok, { maxBatch: 4 });
    const pieces: GeneratedPiece[][] = seeds.map(() => []);
    const got = await b.submitAll([...seeds.map((seed, i) => ({ ...choice(seed), onPiece: (p: GeneratedPiece) => pieces[i].push(p) })), req(1)]);
    seeds.forEach((seed, i) => same(tt, got[i], pieces[i], want[i], `seed ${seed}`));
    tt.same(got[3].ids, (await alone(req(1))).ids, 'the other prompt admitted with them');
    tt.same(prefilled, [2], 'one prefill of the two distinct prompts for four requests');
  } finally {
    fx.model.startPrefill = prefill;
  }
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});

t.test('aborts: a waiting request never runs, a running one stops at once, the others are unaffected', async (tt) => {
  const want0 = await alone(req(0));
  const want2 = await alone(req(2));
  const before = L.memory().numTensors;
  const b = new DecodeBatcher(fx.model, fx.tok, { maxBatch: 2 });
  const ac0 = new AbortController();
  const ac1 = new AbortController();
  const p0: GeneratedPiece[] = [];
  const p2: GeneratedPiece[] = [];
  const r0 = b.submit({
    ...req(0),
    signal: ac0.signal,
    onPiece: (p) => {
      p0.push(p);
      if (p.index === 4) ac0.abort();
    },
  });
  const r2 = b.submit({ ...req(2), onPiece: (p) => p2.push(p) });
  let began1 = false;
  const r1 = b.submit({ ...req(1), signal: ac1.signal, onStart: () => (began1 = true) });
  ac1.abort(); // still waiting for a row
  const [g0, g1, g2] = await Promise.all([r0, r1, r2]);
  tt.equal(g0.finishReason, 'aborted');
  tt.same(g0.ids, want0.ids.slice(0, 5), 'the aborted request kept the tokens it had, and no more');
  tt.same(
    g1,
    { text: '', ids: [], finishReason: 'aborted', promptLength: g1.promptLength, started: false, cachedTokens: 0 },
    'the waiting one never ran',
  );
  tt.notOk(began1);
  same(tt, g2, p2, want2, 'its neighbour');
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});

t.test('a failure stays with its request; bad requests are refused at once', async (tt) => {
  const want1 = await alone(req(1));
  const before = L.memory().numTensors;
  const b = new DecodeBatcher(fx.model, fx.tok, { maxBatch: 4 });
  const boom = b.submit({
    ...req(0),
    onStart: () => {
      throw new Error('start hook failed');
    },
  });
  const late = b.submit({
    ...req(3),
    onPiece: (p) => {
      if (p.index === 2) throw new Error('piece hook failed');
    },
  });
  const p1: GeneratedPiece[] = [];
  const ok = b.submit({ ...req(1), onPiece: (p) => p1.push(p) });
  await tt.rejects(boom, /start hook failed/);
  await tt.rejects(late, /piece hook failed/);
  same(tt, await ok, p1, want1, 'the request beside them');
  // A prefill that fails (its image was freed while it waited) fails only the request it was admitting.
  const want0 = await alone(req(0));
  const p0: GeneratedPiece[] = [];
  let bad: Promise<unknown> | null = null;
  const running = b.submit({
    ...req(0),
    onPiece: (p) => {
      p0.push(p);
      if (p.index !== 1) return;
      const img = L.keep(L.zeros([1, 3, 28, 28], { dtype: 'float64' }));
      bad = b.submit({ prompt: USER('x', true), pixelValues: img, maxNewTokens: 4 }).catch((e: Error) => e);
      img.dispose();
    },
  });
  same(tt, await running, p0, want0, 'the running request beside a failed prefill');
  tt.match(String(await bad), /disposed/, 'the request whose prefill failed is rejected');
  const small = L.zeros([1, 3, 14, 14], { dtype: 'float64' });
  await tt.rejects(b.submit({ prompt: USER('x', true), pixelValues: small }), /request 0: pixelValues must be \[N, 3, 28, 28\], got \[1,3,14,14\]/);
  small.dispose();
  await tt.rejects(b.submit({}), /\[DecodeBatcher\] request 0: give promptIds or prompt/);
  await tt.rejects(b.submit({ ...req(1), bogus: 1 } as GenerateOptions), /bogus/);
  await tt.rejects(b.submit({ prompt: USER('x', true) }), /request 0 has 1 image placeholder\(s\) but 0 image\(s\)/);
  await tt.rejects(b.submit({ prompt: 'x', maxNewTokens: 1.5 }), /maxNewTokens must be a non-negative integer/);
  const none = await b.submit({ prompt: USER('x', false), maxNewTokens: 0 });
  tt.same([none.ids, none.finishReason], [[], 'length'], 'no token asked: no prefill, finish length');
  tt.throws(() => new DecodeBatcher(fx.model, fx.tok, { maxBatch: 0 }), /maxBatch must be a positive integer/);
  tt.throws(() => new DecodeBatcher(fx.model, fx.tok, { size: 2 } as never), /size/);
  await b.idle();
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});

t.test('KVCache.gather: rows of several caches, right-aligned at the new length', (tt) => {
  const before = L.memory().numTensors;
  const make = (B: number, len: number, seed: number): KVCache => {
    const c = new KVCache(2, B, 2, 6, 3, 'float64', 'cpu');
    c.length = len;
    L.tidy(() =>
      [...c.k, ...c.v].forEach((x, n) =>
        L.copyInto(
          x,
          L.tensor(
            Array.from({ length: x.numel }, (_, i) => seed * 1000 + n * 100 + i),
            { shape: x.shape, dtype: 'float64' },
          ),
        ),
      ),
    );
    return c;
  };
  const a = make(3, 4, 1);
  const c = make(2, 2, 2);
  const g = KVCache.gather(
    [
      { cache: a, rows: [2, 0, 1] },
      { cache: c, rows: [1] },
    ],
    5,
    7,
  );
  tt.same([g.B, g.capacity, g.length], [4, 7, 5]);
  const col = (x: L.Tensor, b: number, h: number, s: number): number[] =>
    x.toNumbers().slice(((b * x.shape[1] + h) * x.shape[2] + s) * 3, ((b * x.shape[1] + h) * x.shape[2] + s + 1) * 3);
  for (let layer = 0; layer < 2; layer++)
    for (const [src, dst] of [
      [a.k[layer], g.k[layer]],
      [a.v[layer], g.v[layer]],
    ] as const)
      for (const [to, from] of [
        [0, 2],
        [1, 0],
        [2, 1],
      ])
        for (let h = 0; h < 2; h++) {
          tt.same(col(dst, to, h, 0), [0, 0, 0], 'a column left of a shorter source is zero');
          for (let s = 0; s < 4; s++)
            if (JSON.stringify(col(dst, to, h, s + 1)) !== JSON.stringify(col(src, from, h, s))) tt.fail(`row ${to} col ${s + 1}`);
        }
  tt.same(col(g.k[1], 3, 1, 3), col(c.k[1], 1, 1, 0), "the second part's first column lands at length - 2");
  tt.same(col(g.k[1], 3, 1, 2), [0, 0, 0]);
  const cut = KVCache.gather([{ cache: a, rows: [1] }], 2, 2);
  tt.same(col(cut.v[0], 0, 1, 0), col(a.v[0], 1, 1, 2), 'a shorter length drops the first columns');
  tt.throws(() => KVCache.gather([{ cache: a, rows: [3] }], 2, 4), /row 3 not in \[0, 3\)/);
  tt.throws(() => KVCache.gather([{ cache: a, rows: [0] }], 5, 4), /length 5 must be an integer in \[0, capacity 4\]/);
  tt.throws(() => KVCache.gather([], 1, 1), /at least one part/);
  [a, c, g, cut].forEach((x) => x.dispose());
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
  tt.end();
});
