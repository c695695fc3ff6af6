// Chat completions' logprobs and top_logprobs (lib/app/serve/logprobs.ts, inference/logprobs.ts) on the tiny
// LLaVA fixture: every generated token's log-probability equals the log-softmax of the model's own logits
// for the whole sequence (a full forward, no KV cache); the alternatives are the likeliest tokens, sorted;
// token text and bytes agree and join to the reply; a stream carries the same entries, spread over its
// chunks; bad values are 400s.
import t from 'tap';
import * as L from '../../../lib';
import { stepLogprobs } from '../../../lib/app/inference/logprobs';
import { tokenBytes } from '../../../lib/app/serve/logprobs';
import { chat, expectError, server, sseEvents, useServer } from './serve_helpers';

useServer();

const ASK = { messages: [{ role: 'user', content: 'Tell me a story about a small red bird.' }], max_tokens: 10 };

interface Entry {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** log-softmax rows of the model's logits over prompt + reply (no cache), for the reply's tokens. */
function reference(promptIds: number[], ids: number[]): number[][] {
  const { model } = server.llava;
  return L.tidy(() => {
    const { logits } = model.forward({ inputIds: [[...promptIds, ...ids]], pixelValues: null });
    const [, T, V] = logits.shape;
    const all = logits.toNumbers();
    return ids.map((_, k) => {
      const row = all.slice((T - ids.length - 1 + k) * V, (T - ids.length + k) * V);
      const max = Math.max(...row);
      const norm = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      return row.map((x) => x - norm);
    });
  });
}

t.test('greedy: each token and its alternatives against a full forward of the model', async (tt) => {
  const r = await chat({ ...ASK, temperature: 0, logprobs: true, top_logprobs: 3, return_token_ids: true });
  tt.equal(r.status, 200, r.text.slice(0, 300));
  const choice = r.json.choices[0];
  const ids: number[] = choice.token_ids;
  const content: Entry[] = choice.logprobs.content;
  const eos = ids[ids.length - 1] === server.llava.tokenizer.eosId ? 1 : 0;
  tt.equal(content.length, ids.length - eos, `one entry per generated token (${ids.length}, EOS excluded)`);
  const ref = reference(r.json.prompt_token_ids, ids);
  let worst = 0;
  content.forEach((e, k) => {
    worst = Math.max(worst, Math.abs(e.logprob - ref[k][ids[k]]));
    tt.same(e.bytes, tokenBytes(server.llava.tokenizer, ids[k]), `token ${k}: its bytes`);
    tt.equal(e.top_logprobs.length, 3);
    tt.equal(e.top_logprobs[0].token, e.token, `token ${k}: greedy picks the likeliest`);
    tt.equal(e.top_logprobs[0].logprob, e.logprob);
    tt.ok(e.logprob <= 0 && e.top_logprobs.every((a, i) => i === 0 || a.logprob <= e.top_logprobs[i - 1].logprob), 'sorted, at most 0');
    const best = [...ref[k].keys()].sort((a, b) => ref[k][b] - ref[k][a]).slice(0, 3);
    tt.same(
      e.top_logprobs.map((a) => a.bytes),
      best.map((id) => tokenBytes(server.llava.tokenizer, id)),
      `token ${k}: the 3 likeliest tokens of the full forward`,
    );
  });
  tt.ok(worst < 1e-4, `log-probabilities within ${worst.toExponential(2)} of the full forward's`);
  const joined = Buffer.concat(content.map((e) => Buffer.from(e.bytes))).toString('utf8');
  tt.ok(joined.trim().startsWith(choice.message.content), 'the tokens join to the reply');

  // streamed: the same entries, spread over the chunks
  const s = await chat({ ...ASK, temperature: 0, logprobs: true, top_logprobs: 3, stream: true });
  const chunks = sseEvents(s.text).filter((e) => e !== '[DONE]');
  const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
  tt.same(streamed, content, 'a stream carries the same entries');
  tt.ok(chunks.filter((c) => c.choices[0]?.logprobs).length > 1, 'over several chunks');

  const off = await chat({ ...ASK, temperature: 0, logprobs: false });
  tt.equal(off.json.choices[0].logprobs, null, 'logprobs: false gives null');
});

t.test('sampled choices: log-probabilities of the raw distribution, not the tempered one', async (tt) => {
  const r = await chat({ ...ASK, temperature: 1.5, seed: 3, n: 2, logprobs: true, return_token_ids: true });
  tt.equal(r.status, 200, r.text.slice(0, 300));
  for (const c of r.json.choices) {
    const ids: number[] = c.token_ids;
    const ref = reference(r.json.prompt_token_ids, ids);
    const content: Entry[] = c.logprobs.content;
    tt.same(
      content.map((e) => e.top_logprobs.length),
      content.map(() => 0),
      'no alternatives without top_logprobs',
    );
    const worst = Math.max(...content.map((e, k) => Math.abs(e.logprob - ref[k][ids[k]])));
    tt.ok(worst < 1e-4, `choice ${c.index}: within ${worst.toExponential(2)} of the untempered log-softmax`);
  }
});

t.test('stepLogprobs: log-softmax in float64, ties by id', async (tt) => {
  const s = stepLogprobs([1, 3, 3, -2], 0, 2);
  const norm = Math.log(Math.exp(1) + 2 * Math.exp(3) + Math.exp(-2));
  tt.ok(Math.abs(s.logprob - (1 - norm)) < 1e-15);
  tt.same(
    s.top.map((x) => x.token),
    [1, 2],
  );
  tt.throws(() => stepLogprobs([0, 1], 2, 1), /token 2 outside/);
  tt.throws(() => stepLogprobs([0, 1], 0, 21), /top must be an integer in \[0, 20\]/);
});

t.test('bad logprobs requests are 400s', async (tt) => {
  expectError(tt, await chat({ ...ASK, top_logprobs: 2 }), 400, /'top_logprobs' needs 'logprobs': true/, 'invalid_value', 'top_logprobs');
  expectError(tt, await chat({ ...ASK, logprobs: true, top_logprobs: 21 }), 400, /'top_logprobs' must be <= 20/, 'invalid_value');
  expectError(tt, await chat({ ...ASK, logprobs: 'yes' }), 400, /'logprobs' must be a boolean/, 'invalid_type');
});
