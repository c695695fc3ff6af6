// POST /v1/completions (lib/app/serve/text_completions.ts) on the tiny LLaVA fixture: a raw prompt continued
// as generateText continues it (text or token ids), the reply's text exactly what it adds to the prompt; echo
// with logprobs scores every prompt token as a full forward of the model does, tokens that join to the
// echoed text at their offsets; a stream carries the same text and scores; bad requests are 400s; the
// official SDK's completions.create reads it. lm-evaluation-harness's local-completions scoring request
// (echo, logprobs 1, max_tokens 1, the prompt as token ids) is one of the cases.
import t from 'tap';
import OpenAI from 'openai';
import * as L from '../../../lib';
import { generateText, encodePrompt } from '../../../lib/app/inference/generate';
import { request, server, base, sseEvents, useServer, expectError } from './serve_helpers';

useServer();

const complete = (body: Record<string, unknown>) => request('POST', '/v1/completions', body);
const PROMPT = 'Once upon a time there was a little';

/** log-softmax of the model's logits (a full forward, no cache) at every position of `ids`. */
function scores(ids: number[]): number[][] {
  return L.tidy(() => {
    const { logits } = server.llava.model.forward({ inputIds: [ids], pixelValues: null });
    const V = logits.shape[2];
    const all = logits.toNumbers();
    return ids.map((_, p) => {
      const row = all.slice(p * V, (p + 1) * V);
      const max = Math.max(...row);
      const norm = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      return row.map((x) => x - norm);
    });
  });
}

t.test('a raw prompt is continued as generateText continues it; the text is what the reply adds', async (tt) => {
  const { model, tokenizer } = server.llava;
  const promptIds = encodePrompt(model, tokenizer, PROMPT);
  const want = await generateText(model, tokenizer, { promptIds, temperature: 0, maxNewTokens: 6 });
  const r = await complete({ prompt: PROMPT, max_tokens: 6, temperature: 0, return_token_ids: true });
  tt.equal(r.status, 200, r.text.slice(0, 300));
  tt.match(r.json, { object: 'text_completion', id: /^cmpl-/, usage: { prompt_tokens: promptIds.length, completion_tokens: 6 } });
  const c = r.json.choices[0];
  tt.same(c.token_ids, want.ids, 'the same tokens as generateText');
  tt.equal(c.text, tokenizer.decode([...promptIds, ...want.ids]).slice(tokenizer.decode(promptIds).length), 'the text the reply adds');
  tt.equal(c.logprobs, null);
  const byIds = await complete({ prompt: promptIds, max_tokens: 6, temperature: 0 });
  tt.equal(byIds.json.choices[0].text, c.text, 'the prompt as token ids gives the same');
  const listed = await complete({ prompt: [PROMPT], max_tokens: 6, temperature: 0 });
  tt.equal(listed.json.choices[0].text, c.text, 'and as a list of one prompt');
});

t.test('echo with logprobs: every prompt token scored as a full forward scores it; offsets into the text', async (tt) => {
  const { model, tokenizer } = server.llava;
  const promptIds = encodePrompt(model, tokenizer, PROMPT);
  // lm-evaluation-harness's scoring request (a batch of one prompt, as token ids)
  const r = await complete({ prompt: [promptIds], max_tokens: 1, temperature: 0, echo: true, logprobs: 1, seed: 1234, return_token_ids: true });
  tt.equal(r.status, 200, r.text.slice(0, 300));
  const c = r.json.choices[0];
  const lp = c.logprobs;
  const all = [...promptIds, ...c.token_ids];
  tt.equal(lp.tokens.length, all.length, 'one entry per prompt and reply token');
  tt.equal(lp.token_logprobs[0], null, 'the first token has no score');
  tt.equal(lp.top_logprobs[0], null);
  const ref = scores(all);
  let worst = 0;
  for (let p = 1; p < all.length; p++) worst = Math.max(worst, Math.abs(lp.token_logprobs[p] - ref[p - 1][all[p]]));
  tt.ok(worst < 1e-4, `scores within ${worst.toExponential(2)} of a full forward's log-softmax`);
  tt.ok(
    lp.top_logprobs.slice(1).every((m: Record<string, number>) => Object.keys(m).length === 1),
    'one alternative per token',
  );
  tt.equal(c.text.slice(0, PROMPT.length), PROMPT, 'the echoed prompt leads the text');
  tt.equal(lp.tokens.join(''), c.text, 'the tokens join to the text');
  tt.ok(
    lp.text_offset.every((o: number, i: number) => c.text.slice(o).startsWith(lp.tokens[i])),
    'each token sits at its offset',
  );

  // a prompt longer than one scoring forward (256 positions): scored across the boundary as one forward
  const long = Array.from({ length: 300 }, (_, i) => 3 + ((i * 37) % 200));
  const lr = await complete({ prompt: long, max_tokens: 0, echo: true, logprobs: 0 });
  const lref = scores(long);
  const lworst = Math.max(...long.slice(1).map((id, p) => Math.abs(lr.json.choices[0].logprobs.token_logprobs[p + 1] - lref[p][id])));
  tt.ok(lworst < 1e-4, `300 prompt tokens scored in two forwards: within ${lworst.toExponential(2)} of one`);

  const only = await complete({ prompt: PROMPT, max_tokens: 0, echo: true, logprobs: 0 });
  tt.equal(only.json.choices[0].text, PROMPT, 'max_tokens 0: the prompt alone');
  tt.same(only.json.choices[0].logprobs.token_logprobs.slice(1), lp.token_logprobs.slice(1, promptIds.length), 'the same scores');
  tt.equal(only.json.usage.completion_tokens, 0);
});

t.test('streamed: the chunks join to the same text and logprobs', async (tt) => {
  const body = { prompt: PROMPT, max_tokens: 8, temperature: 0, echo: true, logprobs: 2 };
  const plain = (await complete(body)).json.choices[0];
  const s = await complete({ ...body, stream: true, stream_options: { include_usage: true } });
  const events = sseEvents(s.text);
  tt.equal(events[events.length - 1], '[DONE]');
  const chunks = events.filter((e) => e !== '[DONE]' && e.choices.length > 0);
  tt.equal(chunks.map((e) => e.choices[0].text).join(''), plain.text, 'the texts join');
  for (const k of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset'])
    tt.same(
      chunks.flatMap((e) => e.choices[0].logprobs?.[k] ?? []),
      plain.logprobs[k],
      `${k} join`,
    );
  tt.match(events[events.length - 2], { choices: [], usage: { completion_tokens: 8 } }, 'usage last');
});

t.test('bad requests are 400s', async (tt) => {
  const V = server.llava.model.config.text.vocab_size;
  expectError(tt, await complete({ prompt: ['a', 'b'] }), 400, /one prompt per request/, 'invalid_value', 'prompt');
  expectError(tt, await complete({ prompt: '' }), 400, /must not be empty/);
  expectError(tt, await complete({}), 400, /'prompt' is required/);
  expectError(tt, await complete({ prompt: 'x', suffix: 'y' }), 400, /suffix/, 'unsupported_parameter');
  expectError(tt, await complete({ prompt: 'x', best_of: 3 }), 400, /best_of/, 'unsupported_parameter');
  expectError(tt, await complete({ prompt: 'x', max_tokens: 0 }), 400, /unless 'echo' is true/);
  expectError(tt, await complete({ prompt: [1, V] }), 400, new RegExp(`token id ${V} outside`));
  expectError(tt, await complete({ prompt: [1, server.llava.model.config.imageTokenIndex] }), 400, /image placeholder/);
  expectError(tt, await complete({ prompt: 'x', logprobs: 21 }), 400, /'logprobs' must be <= 20/);
  expectError(tt, await complete({ prompt: 'x', frequency_penalty: 1 }), 400, /penalties/);
  expectError(tt, await complete({ prompt: 'x', stream_options: 'yes' }), 400, /'stream_options' must be an object/, 'invalid_type');
  expectError(tt, await complete({ prompt: 'x', stream_options: { include_usage: true } }), 400, /only allowed with stream: true/);
});

t.test('a text prompt the splice would cut is a 400 before it queues, on both completions endpoints', async (tt) => {
  const config = server.llava.model.config as { maxLength: number };
  const was = config.maxLength;
  config.maxLength = 40;
  try {
    const long = 'word '.repeat(40);
    const re = /the prompt takes \d+ positions; the model cuts its input at 40 \(tokenizer_model_max_length\)/;
    expectError(tt, await complete({ prompt: long }), 400, re, 'context_length_exceeded', 'prompt');
    expectError(
      tt,
      await request('POST', '/v1/chat/completions', { messages: [{ role: 'user', content: long }] }),
      400,
      re,
      'context_length_exceeded',
    );
  } finally {
    config.maxLength = was;
  }
});

t.test('the official SDK: completions.create, plain and with echo and logprobs', async (tt) => {
  const client = new OpenAI({ apiKey: 'none', baseURL: `${base}/v1`, maxRetries: 0 });
  const r = await client.completions.create({ model: 'x', prompt: PROMPT, max_tokens: 4, temperature: 0, echo: true, logprobs: 1 });
  tt.equal(r.object, 'text_completion');
  tt.ok(r.choices[0].text.startsWith(PROMPT));
  tt.equal(r.choices[0].logprobs?.token_logprobs?.[0], null);
  tt.ok((r.choices[0].logprobs?.tokens?.length ?? 0) > 4);
});
