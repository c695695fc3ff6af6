// `llava serve`'s prefix cache (ServeOptions.prefixCache, inference/prefix_cache.ts) on the tiny LLaVA
// fixture: a conversation's next turn, resent whole as chat clients do, reuses the first turn's keys and
// values (usage.prompt_tokens_details.cached_tokens, the Responses API's input_tokens_details) and answers
// exactly as a server without the cache does; another image is not reused; /health reports the cache;
// shutdown frees it.
import t from 'tap';
import * as L from '../../../lib';
import { loadLlava } from '../../../lib/models/loader';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { createServer, type LlavaServer } from '../../../lib/app/serve/server';
import { Q, dataUri, dir, png0, png1, userImage } from './serve_helpers';

async function listen(s: LlavaServer): Promise<string> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
}
const post = async (url: string, path: string, body: unknown): Promise<any> =>
  (await fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json();

t.test('the next turn of a conversation reuses the first and answers as without the cache', async (tt) => {
  const before = L.memory().numTensors;
  const model = loadLlava(dir);
  const tokenizer = Tokenizer.fromDir(dir);
  const cached = createServer({ loaded: { model, tokenizer, dir }, log: () => {} });
  const plain = createServer({ loaded: { model, tokenizer, dir }, prefixCache: 0, log: () => {} });
  try {
    const [a, b] = [await listen(cached), await listen(plain)];
    const ask = { temperature: 0, max_tokens: 8, return_token_ids: true };
    const first = await post(a, '/v1/chat/completions', { ...ask, messages: [userImage(Q, dataUri(png0))] });
    tt.equal(first.usage.prompt_tokens_details.cached_tokens, 0, 'turn 1: nothing cached yet');
    const turn2 = (png: Buffer) => [
      userImage(Q, dataUri(png)),
      { role: 'assistant', content: first.choices[0].message.content },
      { role: 'user', content: 'And what colours are in it?' },
    ];
    const r = await post(a, '/v1/chat/completions', { ...ask, messages: turn2(png0) });
    const want = await post(b, '/v1/chat/completions', { ...ask, messages: turn2(png0) });
    const reused = r.usage.prompt_tokens_details.cached_tokens;
    tt.ok(reused >= first.usage.prompt_tokens - 1, `turn 2 reused ${reused} positions (turn 1's prompt: ${first.usage.prompt_tokens})`);
    tt.same(r.choices[0].token_ids, want.choices[0].token_ids, 'the same answer as without the cache');
    tt.equal(want.usage.prompt_tokens_details.cached_tokens, 0);

    const other = await post(a, '/v1/chat/completions', { ...ask, messages: turn2(png1) });
    tt.equal(other.usage.prompt_tokens_details.cached_tokens, 0, 'another image: nothing reused');

    const resp = await post(a, '/v1/responses', {
      input: turn2(png0).map((m, i) =>
        i === 0
          ? {
              role: 'user',
              content: [
                { type: 'input_text', text: Q },
                { type: 'input_image', image_url: dataUri(png0) },
              ],
            }
          : m,
      ),
      temperature: 0,
      max_output_tokens: 8,
    });
    tt.ok(
      resp.usage.input_tokens_details.cached_tokens >= reused,
      `the Responses API reports it too (${resp.usage.input_tokens_details.cached_tokens})`,
    );

    const h = (await (await fetch(a + '/health')).json()) as { prefix_cache: Record<string, number> };
    tt.equal(h.prefix_cache.max_positions, 512, "default: the model's context length");
    tt.ok(h.prefix_cache.hits >= 2 && h.prefix_cache.positions <= 512 && h.prefix_cache.entries >= 1, JSON.stringify(h.prefix_cache));
    const off = (await (await fetch(b + '/health')).json()) as { prefix_cache: unknown };
    tt.equal(off.prefix_cache, null, 'prefixCache 0: off');
    tt.throws(() => createServer({ loaded: { model, tokenizer, dir }, prefixCache: -1 }), /prefixCache must be an integer >= 0/);
    tt.throws(() => createServer({ loaded: { model, tokenizer, dir }, prefillChunk: 2.5 }), /prefillChunk must be an integer >= 0 \(got 2.5\)/);
  } finally {
    for (const s of [cached, plain]) {
      await new Promise<void>((r) => s.close(() => r()));
      await s.llava.shutdown();
    }
    model.dispose();
  }
  tt.equal(L.memory().numTensors, before, 'shutdown freed the cache');
});
