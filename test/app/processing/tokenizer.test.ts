// Tokenizer parity with the Rust `tokenizers` output stored in the fixture (reference.json tokenizer_cases).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { TEST_DIR } from '../../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8'));
const tok = Tokenizer.fromDir(dir);

t.test('special ids and sizes come from the config', async (t) => {
  t.equal(tok.bosId, 1);
  t.equal(tok.eosId, 2);
  t.equal(tok.unkId, 0);
  t.equal(tok.padId, ref.pad_token_id);
  t.equal(tok.vocabSize, ref.vocab_size);
  t.equal(tok.modelMaxLength, 512);
  t.equal(tok.tokenToId('<image>'), ref.image_token_id);
  t.equal(tok.idToToken(ref.image_token_id), '<image>');
  t.equal(tok.tokenToId('no-such-token'), undefined);
  t.throws(() => tok.idToToken(100000), /not in the vocabulary/);
});

for (const c of ref.tokenizer_cases as { text: string; ids_with_bos: number[]; ids_no_bos: number[]; tokens: string[]; decoded: string }[]) {
  t.test(`case ${JSON.stringify(c.text)}`, async (t) => {
    t.same(tok.encode(c.text), c.ids_with_bos, 'ids with BOS');
    t.same(tok.encode(c.text, { addSpecialTokens: false }), c.ids_no_bos, 'ids without BOS');
    t.same(tok.tokenize(c.text, { addSpecialTokens: true }), c.tokens, 'pieces with <s>');
    t.same(tok.tokenize(c.text), c.tokens.slice(1), 'pieces without <s>');
    t.equal(tok.decode(c.ids_no_bos), c.decoded, 'decode skips special tokens');
    t.equal(tok.decode(c.ids_with_bos), c.decoded, 'BOS is skipped too');
  });
}

t.test('decode keeps special tokens when asked', async (t) => {
  const ids = tok.encode('USER: <image>\nHi', { addSpecialTokens: true });
  const text = tok.decode(ids, { skipSpecialTokens: false });
  t.match(text, /^<s>/);
  t.match(text, /<image>/);
  t.equal(tok.decode([]), '');
  t.equal(tok.decode([1, 2, 676]), '');
  t.throws(() => tok.decode([ref.vocab_size]), /outside the vocabulary/);
  t.throws(() => tok.decode([-1]), /outside the vocabulary/);
});

t.test('decode does not clean up tokenization spaces', async (t) => {
  const s = 'a . b , c ?';
  t.equal(tok.decode(tok.encode(s)), s);
});

t.test('round trip of mixed text', async (t) => {
  for (const s of ['Hello world', 'naïve café — 日本語 😀', 'x\ny\tz', '   leading', 'trailing   ']) {
    t.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
  }
});

t.test('missing or broken files give clear errors', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  t.throws(() => Tokenizer.fromDir(tmp), /tokenizer\.json not found/);
  fs.writeFileSync(path.join(tmp, 'tokenizer.json'), '{not json');
  t.throws(() => Tokenizer.fromDir(tmp), /malformed JSON/);
  // Without tokenizer_config.json: no pad, default max length, BOS from the post-processor.
  fs.copyFileSync(path.join(dir, 'tokenizer.json'), path.join(tmp, 'tokenizer.json'));
  const bare = Tokenizer.fromDir(tmp);
  t.equal(bare.padId, undefined);
  t.ok(bare.modelMaxLength > 1e20);
  t.same(bare.encode('What is unusual about this image?'), ref.tokenizer_cases[1].ids_with_bos);
  // A config whose pad_token is unset (null) leaves padId undefined.
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  fs.writeFileSync(path.join(tmp, 'tokenizer_config.json'), JSON.stringify({ ...cfg, pad_token: null, add_eos_token: true }));
  const noPad = Tokenizer.fromDir(tmp);
  t.equal(noPad.padId, undefined);
  t.same(noPad.encode('Hi').at(-1), 2, 'add_eos_token appends </s>');
  fs.writeFileSync(path.join(tmp, 'tokenizer_config.json'), JSON.stringify({ ...cfg, bos_token: '<nope>' }));
  t.throws(() => Tokenizer.fromDir(tmp), /bos_token '<nope>' is not in the vocabulary/);
});
