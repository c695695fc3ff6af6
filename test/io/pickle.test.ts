// The restricted unpickler (lib/io/pickle.ts) against Python's own pickler: one dict of plain values written
// with protocols 0 to 5 (test/fixtures/torch/values_p*.pkl, made by make_torch_fixtures.py) must read back
// the same in every protocol — ints of every width (BININT1/2, BININT, LONG1, text INT/LONG), floats (text and
// binary), text with escapes, bytes (protocol 2's _codecs.encode included), nested lists, tuples and dicts, a
// set (builtins.set or EMPTY_SET/ADDITEMS), memo-shared references, frames.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { unpickle, isTuple } from '../../lib/io/pickle';
import { stateDictHooks } from '../../lib/io/pytorch_pickle';
import { TEST_DIR } from '../helpers';

const FIX = path.join(TEST_DIR, 'fixtures', 'torch');

/** The Python-side values as JSON-able data (big ints as strings, bytes as hex, tuples and sets marked). */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return `big:${v}`;
  if (v instanceof Uint8Array) return `bytes:${Buffer.from(v).toString('hex')}`;
  if (v instanceof Set) return { set: [...v].map(plain) };
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), plain(x)]));
  if (Array.isArray(v)) return isTuple.has(v) ? { tuple: v.map(plain) } : v.map(plain);
  return v;
}

const expected = {
  small: 5,
  byte: 200,
  word: 40000,
  neg: -300,
  int32: -(2 ** 31),
  big: `big:${2n ** 70n}`,
  negbig: `big:${-(2n ** 65n)}`,
  float: 1.5,
  tiny: 1e-300,
  text: 'h\u00e9llo \u2603 "quoted"\n',
  bytes: 'bytes:00ff0a',
  list: [1, [2, 3], []],
  tuple: { tuple: [1, 'a'] },
  tuple3: { tuple: [1, 2, 3] },
  none: null,
  bools: [true, false],
  dict: { a: { b: 1 }, n: {} },
  set: { set: [7] },
  a: ['shared'],
  b: ['shared'],
};

for (let proto = 0; proto <= 5; proto++) {
  t.test(`protocol ${proto}: Python's pickle reads back equal`, async (tt) => {
    const data = new Uint8Array(fs.readFileSync(path.join(FIX, `values_p${proto}.pkl`)));
    const hooks = stateDictHooks((m) => {
      throw new Error(m);
    });
    const { value, end } = unpickle(data, hooks, `values_p${proto}.pkl`);
    tt.equal(end, data.length, 'stops at the end');
    tt.same(plain(value), expected);
    const m = value as Map<string, unknown>;
    tt.equal(m.get('a'), m.get('b'), 'a memo reference stays one shared object');
  });
}
