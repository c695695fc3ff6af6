// Chunked prefill (LlavaForConditionalGeneration.startPrefill, DecodeBatcher's prefillChunk) on the tiny
// LLaVA fixture in float64: a left-padded batch fed a few columns at a time leaves the same cache and the
// same last logits as one prefill, and so does a chunk fed in one forward with another batch's decode step
// (nextWithStep), whose logits equal the step's alone; in the batcher, a long prompt joining a running
// batch goes in a chunk a turn beside a decode step of the running rows, and every request still generates
// what it generates alone; aborts and failures in the middle of a prefill end only the requests it was
// admitting, and a failed joint forward is redone as two; n choices of one prompt joining in chunks share it.
import t, { type Test } from 'tap';
import * as L from '../../../lib';
import { PromptPrefill } from '../../../lib/models/prompt_prefill';
import { encodePrompt, generate, type GenerateOptions, type GeneratedPiece } from '../../../lib/app/inference/generate';
import { DecodeBatcher, type BatchRequest, type BatchResult } from '../../../lib/app/inference/batcher';
import { useFloat64Llava } from './fixture64';

const fx = useFloat64Llava();

const USER = (q: string, image: boolean): string => `USER: ${image ? '<image>\n' : ''}${q} ASSISTANT:`;
const maxDiff = (a: number[], b: number[]): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), a.length === b.length ? 0 : Infinity);

t.test('a prefill fed a few columns at a time equals one prefill: cache and last logits', async (tt) => {
  const rows = [
    encodePrompt(fx.model, fx.tok, USER('A long question about the picture, with many words in it?', true)),
    encodePrompt(fx.model, fx.tok, USER('Hi', false)),
  ];
  const before = L.memory().numTensors;
  const whole = fx.model.prefillBatch(rows, fx.pix[0], 80);
  const run = fx.model.startPrefill(rows, fx.pix[0], 80);
  const W = run.width;
  tt.same(run.lengths, whole.lengths, 'the same spliced lengths');
  tt.same(run.keyMaskRows(), whole.keyMask, 'the same key mask');
  tt.ok(W > 12, `a prompt of ${W} columns`);
  const sizes = [3, 5, 1, 3];
  let logits: L.Tensor | null = null;
  let calls = 0;
  while (!logits) {
    const n = sizes[calls++ % sizes.length];
    const fed = run.fed;
    logits = run.next(n);
    tt.equal(run.fed, Math.min(W, fed + n), `chunk ${calls}: ${run.fed - fed} columns`);
    if (!logits) tt.ok(run.fed < W, 'no logits before the last column');
  }
  tt.equal(run.cache.length, whole.cache.length, `cache filled to ${W}`);
  const d = maxDiff(logits.toNumbers(), whole.logits.toNumbers());
  tt.ok(d < 1e-12, `last logits of both rows: max difference ${d.toExponential(2)}`);
  let dk = 0;
  for (let i = 0; i < whole.cache.layers; i++)
    for (const [a, b] of [
      [run.cache.k[i], whole.cache.k[i]],
      [run.cache.v[i], whole.cache.v[i]],
    ])
      dk = Math.max(
        dk,
        L.tidy(() => maxDiff(L.narrow(a, 2, 0, W).toNumbers(), L.narrow(b, 2, 0, W).toNumbers())),
      );
  tt.ok(dk < 1e-12, `keys and values of every layer: max difference ${dk.toExponential(2)}`);
  tt.throws(() => run.next(1), /this prefill is complete/);
  logits.dispose();
  run.dispose();
  run.cache.dispose();

  // A chunk in one forward with a decode step of two other rows (left-padded, so with a key mask).
  const other = [encodePrompt(fx.model, fx.tok, USER('Say hi.', false)), encodePrompt(fx.model, fx.tok, USER('Count to ten, please.', false))];
  const decodeAfter = () => {
    const pre = fx.model.prefillBatch(other, null, 64);
    const host = pre.logits.toNumbers();
    pre.logits.dispose();
    const V = host.length / 2;
    const tokens = [0, 1].map((b) => host.slice(b * V, (b + 1) * V).reduce((best, x, i, a) => (x > a[best] ? i : best), 0));
    const W2 = pre.keyMask[0].length;
    const keyMask = pre.keyMask.map((m) => [...m, 1]);
    return { cache: pre.cache, tokens, positions: pre.lengths.map((l) => l), keyMask, W2 };
  };
  const alone = decodeAfter();
  const stepAlone = fx.model.decodeStepBatch(alone.tokens, alone.positions, alone.cache, alone.keyMask);
  const joint = decodeAfter();
  const mixed = fx.model.startPrefill(rows, fx.pix[0], 80);
  const both = mixed.nextWithStep(5, { tokens: joint.tokens, positions: joint.positions, cache: joint.cache, keyMask: joint.keyMask });
  tt.equal(both.logits, null, 'a first chunk of 5 columns: no prefill logits yet');
  const ds = maxDiff(both.step.toNumbers(), stepAlone.toNumbers());
  tt.ok(ds < 1e-12, `the decode step's logits beside a chunk: max difference ${ds.toExponential(2)} from the step alone`);
  tt.same([joint.cache.length, mixed.cache.length], [alone.cache.length, 5], 'each cache advanced by its own columns');
  const rest = mixed.next()!;
  const dr = maxDiff(rest.toNumbers(), whole.logits.toNumbers());
  tt.ok(dr < 1e-12, `and the prefill's last logits: max difference ${dr.toExponential(2)} from one prefill`);
  const dc = L.tidy(() =>
    maxDiff(L.narrow(joint.cache.k[1], 2, 0, joint.W2 + 1).toNumbers(), L.narrow(alone.cache.k[1], 2, 0, alone.W2 + 1).toNumbers()),
  );
  tt.ok(dc < 1e-12, `the step's keys in its own cache: max difference ${dc.toExponential(2)}`);
  tt.throws(() => mixed.nextWithStep(1, { ...joint, cache: mixed.cache }), /the decode step needs its own cache/);
  [stepAlone, both.step, rest].forEach((x) => x.dispose());
  [alone.cache, joint.cache, mixed.cache].forEach((c) => c.dispose());
  mixed.dispose();
  whole.cache.dispose();
  whole.logits.dispose();

  const idle = fx.model.startPrefill(rows.slice(1), null, 8);
  tt.throws(() => idle.next(0), /at least one column \(got 0\)/);
  idle.dispose();
  idle.cache.dispose();
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});

/** What `generate` streams for a request alone, and its return value. */
async function alone(o: GenerateOptions): Promise<{ pieces: GeneratedPiece[]; ids: number[]; text: string }> {
  const it = generate(fx.model, fx.tok, o);
  const pieces: GeneratedPiece[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) return { pieces, ids: r.value.ids, text: r.value.text };
    pieces.push(r.value);
  }
}

const RUNNING: GenerateOptions = { prompt: USER('Count to ten.', false), maxNewTokens: 40, temperature: 0.8, seed: 3 };
const LONG = (): GenerateOptions => ({
  prompt: USER('Describe the picture in detail: the colours, the shapes and what they might mean together.', true),
  pixelValues: fx.pix[1],
  maxNewTokens: 6,
});

/** Runs RUNNING, lets `joiner` join after its second token (and `late` during the joiner's prefill), and
 *  logs the order of events. */
async function scenario(b: DecodeBatcher, joiner: BatchRequest, late?: GenerateOptions) {
  const log: string[] = [];
  const pieces: GeneratedPiece[][] = [[], [], []];
  const done: Promise<BatchResult>[] = [];
  let prefilling = 0;
  done[0] = b.submit({
    ...RUNNING,
    onPiece: (p) => {
      pieces[0].push(p);
      log.push('run');
      prefilling = Math.max(prefilling, b.prefilling);
      if (p.index === 1)
        done[1] = b.submit({
          ...joiner,
          onStart: () => (log.push('join-start'), joiner.onStart?.()),
          onPiece: (q) => (pieces[1].push(q), log.push('join')),
        });
      done[1]?.catch(() => {}); // settled below

      if (late && b.prefilling > 0 && !done[2])
        done[2] = b.submit({ ...late, onStart: () => log.push('late-start'), onPiece: (q) => pieces[2].push(q) });
    },
  });
  await b.idle();
  const settled = await Promise.allSettled(done);
  return { log, pieces, settled, prefilling };
}

function same(tt: Test, got: PromiseSettledResult<BatchResult>, pieces: GeneratedPiece[], want: Awaited<ReturnType<typeof alone>>, name: string) {
  if (got.status !== 'fulfilled') return tt.fail(`${name}: ${String(got.reason)}`);
  tt.same(got.value.ids, want.ids, `${name}: ids`);
  tt.equal(got.value.text, want.text, `${name}: text`);
  tt.same(pieces, want.pieces, `${name}: streamed pieces`);
}

t.test('a long prompt joins a running batch a chunk a turn; the running row decodes between its chunks', async (tt) => {
  const late: GenerateOptions = { prompt: USER('Say hi.', false), maxNewTokens: 4 };
  const want = [await alone(RUNNING), await alone(LONG()), await alone(late)];
  const before = L.memory().numTensors;
  const b = new DecodeBatcher(fx.model, fx.tok, { maxBatch: 4, prefillChunk: 4 });
  const { log, pieces, settled, prefilling } = await scenario(b, LONG(), late);
  ['running', 'joining', 'late'].forEach((name, i) => same(tt, settled[i], pieces[i], want[i], name));
  const W = (settled[1] as PromiseFulfilledResult<BatchResult>).value.promptLength;
  const between = log.slice(log.indexOf('join-start'), log.indexOf('join')).filter((e) => e === 'run').length;
  tt.equal(prefilling, 1, 'the joining request was seen prefilling');
  tt.equal(between, Math.ceil(W / 4), `${W} prompt columns in chunks of 4: a running step in each chunk's forward`);
  tt.ok(log.indexOf('late-start') > log.indexOf('join'), `a request that came during the prefill waited for it to end (${log.join(' ')})`);
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');

  // prefillChunk 0: the same prompt goes in at once, beside one running step
  const whole = await scenario(new DecodeBatcher(fx.model, fx.tok, { maxBatch: 4, prefillChunk: 0 }), LONG());
  same(tt, whole.settled[1], whole.pieces[1], want[1], 'joining, whole prefill');
  tt.equal(whole.log.indexOf('join'), whole.log.indexOf('join-start') + 2, 'whole: its first token came after one running step');
});

t.test('aborted or failing in the middle of a chunked prefill: only that request ends', async (tt) => {
  const want = await alone(RUNNING);
  const before = L.memory().numTensors;
  const ac = new AbortController();
  const aborting = await scenario(new DecodeBatcher(fx.model, fx.tok, { prefillChunk: 4 }), {
    ...LONG(),
    signal: ac.signal,
    onStart: () => setImmediate(() => ac.abort()),
  });
  same(tt, aborting.settled[0], aborting.pieces[0], want, 'running, beside an abort');
  const r = aborting.settled[1] as PromiseFulfilledResult<BatchResult>;
  tt.match(r.value, { finishReason: 'aborted', started: true, ids: [] }, 'the aborted request ends with no token');
  tt.equal(L.memory().numTensors, before, 'no tensor leaked after the abort');

  // The joint forward fails once: redone as two forwards, nothing is lost.
  const proto = PromptPrefill.prototype;
  const [next, nextWithStep] = [proto.next, proto.nextWithStep];
  let joint = 0;
  proto.nextWithStep = function (this: PromptPrefill, ...a: Parameters<typeof nextWithStep>) {
    if (++joint === 1) throw new Error('joint forward failed');
    return nextWithStep.apply(this, a);
  };
  try {
    const retried = await scenario(new DecodeBatcher(fx.model, fx.tok, { prefillChunk: 4 }), LONG());
    same(tt, retried.settled[0], retried.pieces[0], want, 'running, after a failed joint forward');
    same(tt, retried.settled[1], retried.pieces[1], await alone(LONG()), 'joining, after a failed joint forward');
    tt.ok(joint > 2, `the later chunks went jointly again (${joint} joint calls)`);
  } finally {
    proto.nextWithStep = nextWithStep;
  }
  // Every joint forward fails and so does the joining prompt's second chunk alone: that request fails,
  // the running one does not.
  let calls = 0;
  proto.nextWithStep = () => {
    throw new Error('joint forward failed');
  };
  proto.next = function (this: PromptPrefill, n?: number) {
    if (++calls === 3) throw new Error('chunk failed'); // 1: the running request's prompt, 2: the first chunk
    return next.call(this, n);
  };
  try {
    const failing = await scenario(new DecodeBatcher(fx.model, fx.tok, { prefillChunk: 4 }), LONG());
    same(tt, failing.settled[0], failing.pieces[0], want, 'running, beside a failure');
    tt.match(failing.settled[1], { status: 'rejected', reason: { message: 'chunk failed' } }, 'the request whose chunk failed is rejected');
  } finally {
    [proto.next, proto.nextWithStep] = [next, nextWithStep];
  }
  tt.equal(L.memory().numTensors, before, 'no tensor leaked after the failure');
  tt.throws(() => new DecodeBatcher(fx.model, fx.tok, { prefillChunk: -1 }), /prefillChunk must be a non-negative integer \(got -1\)/);
});

t.test('n choices and a second prompt join a running batch in one chunked prefill (one row each, shared prompt once)', async (tt) => {
  const choice = (seed: number): GenerateOptions => ({ ...LONG(), temperature: 0.9, seed, maxNewTokens: 8 });
  const other: GenerateOptions = { prompt: USER('Count to five.', false), maxNewTokens: 5 };
  const want = [await alone(RUNNING), await alone(choice(1)), await alone(choice(2)), await alone(other)];
  const before = L.memory().numTensors;
  const b = new DecodeBatcher(fx.model, fx.tok, { maxBatch: 4, prefillChunk: 4 });
  const widths: number[] = [];
  const start = fx.model.startPrefill;
  fx.model.startPrefill = function (ids, ...rest) {
    widths.push(ids.length);
    return start.call(this, ids, ...rest);
  };
  const pieces: GeneratedPiece[][] = [[], [], [], []];
  let joining: Promise<BatchResult[]> | null = null;
  try {
    const first = b.submit({
      ...RUNNING,
      onPiece: (p) => {
        pieces[0].push(p);
        if (p.index === 1)
          joining = b.submitAll([choice(1), choice(2), other].map((r, i) => ({ ...r, onPiece: (q: GeneratedPiece) => pieces[i + 1].push(q) })));
      },
    });
    const got = [await first, ...(await joining!)];
    got.forEach((g, i) => {
      tt.same(g.ids, want[i].ids, `request ${i}: ids`);
      tt.same(pieces[i], want[i].pieces, `request ${i}: pieces`);
    });
  } finally {
    fx.model.startPrefill = start;
  }
  tt.same(widths, [1, 2], 'the running prompt, then one prefill of the two distinct prompts for three requests');
  tt.equal(b.maxRunning, 4);
  tt.equal(L.memory().numTensors, before, 'no tensor leaked');
});
