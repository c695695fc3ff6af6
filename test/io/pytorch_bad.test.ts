// Bad PyTorch checkpoints, one table: each file is built here (or cut from a real torch.save fixture) and
// must fail at open with an Error naming the problem — never a crash, a hang or a silent wrong tensor.
// The pickles that ask for os.system / builtins.eval / subprocess.Popen would create a marker file if
// anything ran them: the marker must not exist afterwards, and the error must name the global.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PytorchFile } from '../../lib/io/pytorch';
import { openStateDict } from '../../lib/io/state_dict';
import { TEST_DIR } from '../helpers';
import { Pickle, f32Bytes, makeZip, stateDictPickle, torchZip } from './torch_files';

const FIX = path.join(TEST_DIR, 'fixtures', 'torch');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-torch-bad-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const marker = path.join(tmp, 'PWNED');
const cases = fs.readFileSync(path.join(FIX, 'cases.pt'));
const legacy = fs.readFileSync(path.join(FIX, 'cases_legacy.pt'));
const w = { key: '0', numel: 4, shape: [4] };
const good = f32Bytes([1, 2, 3, 4]);

/** A state dict {'w': tensor} whose pickle then calls `module.name(arg)` and stores the result under 'x'. */
function evil(module: string, name: string, arg: string, how: 'global' | 'stack' | 'inst' = 'global'): Uint8Array {
  const p = new Pickle()
    .proto(how === 'stack' ? 4 : 2)
    .global('collections', 'OrderedDict')
    .emptyTuple()
    .reduce();
  p.str('w').tensor(w).setitem().str('x');
  if (how === 'inst') return p.mark().str(arg).inst(module, name).setitem().bytes();
  if (how === 'stack') p.stackGlobal(module, name);
  else p.global(module, name);
  return p.mark().str(arg).tuple().reduce().setitem().bytes();
}

function nestedLists(depth: number): Uint8Array {
  const p = new Pickle().proto();
  for (let i = 0; i < depth; i++) p.emptyList().mark();
  return p.bytes(); // never closed: the depth limit must stop it first
}

function nestedDicts(depth: number): Uint8Array {
  const p = new Pickle().proto().emptyDict();
  for (let i = 0; i < depth; i++) p.str('k').emptyDict();
  for (let i = 0; i < depth; i++) p.setitem();
  return p.bytes();
}

/** Billion laughs: level i is a list of 10 references to level i-1 (memo GET), 40 levels deep. */
function memoBomb(): Uint8Array {
  const p = new Pickle().proto().emptyList().put(0).mark();
  for (let j = 0; j < 10; j++) p.str('lol');
  p.appends().op(0x30); // POP: each level lives on in the memo only
  for (let i = 1; i < 40; i++) {
    p.emptyList().put(i).mark();
    for (let j = 0; j < 10; j++) p.get(i - 1);
    p.appends().op(0x30);
  }
  return p.get(39).bytes();
}

const touch = `touch ${marker}`;
const table: [string, () => Uint8Array | Buffer, RegExp][] = [
  ['truncated zip (half of cases.pt)', () => cases.subarray(0, cases.length >> 1), /no end-of-central-directory record.*truncated/],
  ['truncated zip (last byte cut)', () => cases.subarray(0, cases.length - 1), /no end-of-central-directory record/],
  [
    'zip whose middle was cut out (directory offsets lie)',
    () => Buffer.concat([cases.subarray(0, 1500), cases.subarray(cases.length - 1200)]),
    /zip: .*(runs past|damaged|no local header|outside the archive)/,
  ],
  ['CRC mismatch in data.pkl', () => Buffer.from(cases).fill(0x41, 200, 201), /CRC-32 mismatch/],
  [
    'lying size: storage says 12 floats, entry holds 4',
    () => torchZip(stateDictPickle({ w: { ...w, numel: 12, shape: [12] } }), { 0: good }),
    /storage '0' declares 12 x F32 = 48 bytes but its data record holds 16 bytes/,
  ],
  [
    'lying size: entry larger than the storage',
    () => torchZip(stateDictPickle({ w }), { 0: f32Bytes([1, 2, 3, 4, 5]) }),
    /declares 4 x F32 = 16 bytes but its data record holds 20/,
  ],
  [
    'storage offset out of range',
    () => torchZip(stateDictPickle({ w: { ...w, offset: 3, shape: [2] } }), { 0: good }),
    /tensor 'w'.*offset 3 reaches element 4, but storage '0' holds 4 elements/,
  ],
  [
    'strides out of range',
    () => torchZip(stateDictPickle({ w: { ...w, shape: [2, 2], stride: [3, 1] } }), { 0: good }),
    /strides \[3,1\].*reaches element 4/,
  ],
  [
    'an expanded view too large for memory',
    () => torchZip(stateDictPickle({ w: { ...w, shape: [2 ** 26, 2 ** 26], stride: [0, 0] } }), { 0: good }),
    /tensor 'w': shape \[67108864,67108864\] of F32 would need \d+ bytes, over the 4294967296-byte limit/,
  ],
  ['missing data entry', () => torchZip(stateDictPickle({ w }), {}), /storage '0' has no data record \(missing entry data\/0\)/],
  [
    'os.system via GLOBAL + REDUCE',
    () => torchZip(evil('os', 'system', touch), { 0: good }),
    /global 'os\.system' is not allowed.*nothing was executed/,
  ],
  ['posix.system', () => torchZip(evil('posix', 'system', touch), { 0: good }), /global 'posix\.system' is not allowed/],
  [
    'builtins.eval (Python 2 name)',
    () => torchZip(evil('__builtin__', 'eval', `__import__('os').system('${touch}')`), { 0: good }),
    /global 'builtins\.eval' is not allowed/,
  ],
  ['builtins.exec', () => torchZip(evil('builtins', 'exec', 'x=1'), { 0: good }), /global 'builtins\.exec' is not allowed/],
  [
    'subprocess.Popen via STACK_GLOBAL',
    () => torchZip(evil('subprocess', 'Popen', touch, 'stack'), { 0: good }),
    /global 'subprocess\.Popen' is not allowed/,
  ],
  ['os.system via INST', () => torchZip(evil('os', 'system', touch, 'inst'), { 0: good }), /global 'os\.system' is not allowed/],
  [
    'torch.load (a torch global outside the list)',
    () => torchZip(evil('torch', 'load', '/etc/passwd'), { 0: good }),
    /global 'torch\.load' is not allowed/,
  ],
  [
    'a complex storage type',
    () => torchZip(stateDictPickle({ w: { ...w, storageType: 'ComplexFloatStorage' } }), { 0: good }),
    /torch\.ComplexFloatStorage' is a storage type with no safetensors dtype/,
  ],
  [
    'REDUCE on a non-callable',
    () => torchZip(new Pickle().proto().str('a').emptyTuple().reduce().bytes(), {}),
    /REDUCE on "a", which is not an allowed callable/,
  ],
  ['recursion bomb: 100000 nested lists', () => torchZip(nestedLists(100000), {}), /nesting deeper than 1000 levels/],
  ['recursion bomb: 100 nested dicts', () => torchZip(nestedDicts(100), {}), /dicts nest deeper than 32 levels/],
  ['memo bomb (10^40 leaves by reference) is not a state dict', () => torchZip(memoBomb(), {}), /holds a list of 10, not a state dict/],
  ['unknown opcode', () => torchZip(new Pickle().proto().op(0xff).bytes(), {}), /at byte 2: unknown opcode 0xff/],
  ['truncated pickle', () => torchZip(stateDictPickle({ w }).subarray(0, 60), { 0: good }), /truncated pickle/],
  ['NEWOBJ', () => torchZip(new Pickle().proto().global('collections', 'OrderedDict').emptyTuple().op(0x81).bytes(), {}), /NEWOBJ .* not supported/],
  [
    'persistent id that is not a storage',
    () => torchZip(new Pickle().proto().str('x').binpersid().bytes(), {}),
    /persistent id "x" is not a storage reference/,
  ],
  [
    'storage key with a path in it',
    () => torchZip(stateDictPickle({ w: { ...w, key: '../../etc/passwd' } }), { 0: good }),
    /storage key .* is not a plain name/,
  ],
  ['negative size', () => torchZip(stateDictPickle({ w: { ...w, shape: [-4], stride: [1] } }), { 0: good }), /size\[0\] is -4, not an integer >= 0/],
  ['STOP with leftovers', () => torchZip(new Pickle().proto().none().none().bytes(), {}), /STOP with 2 values/],
  ['memo GET of a key never stored', () => torchZip(new Pickle().proto().get(7).bytes(), {}), /memo key 7 was never stored/],
  ['bad byteorder record', () => torchZip(stateDictPickle({ w }), { 0: good }, { byteorder: 'middle' }), /byteorder record says "middle"/],
  ['zip without data.pkl', () => makeZip([['archive/version', Buffer.from('3\n')]]), /zip archive without data\.pkl/],
  [
    'two data.pkl entries',
    () =>
      makeZip([
        ['a/data.pkl', stateDictPickle({})],
        ['b/data.pkl', stateDictPickle({})],
      ]),
    /holds 2 data\.pkl entries/,
  ],
  ['not a checkpoint at all', () => Buffer.from('hello, world\n'), /not a PyTorch checkpoint/],
  ['legacy file cut in a storage record', () => legacy.subarray(0, legacy.length - 10), /runs past the end of the file/],
  ['legacy file with a wrong magic number', () => Buffer.from(legacy).fill(0x00, 4, 5), /not a PyTorch checkpoint/],
];

t.test('bad files: a clear error each, nothing executed', async (tt) => {
  for (const [name, make, re] of table) {
    const f = path.join(tmp, name.replace(/[^a-z0-9]+/gi, '_') + '.pt');
    fs.writeFileSync(f, make());
    let err: unknown = null;
    try {
      PytorchFile.open(f).close();
    } catch (e) {
      err = e;
    }
    tt.ok(err instanceof Error, `${name}: throws an Error`);
    tt.match((err as Error)?.message ?? '', re, name);
    tt.ok(((err as Error)?.message ?? '').includes(f), `${name}: the error names the file`);
  }
  tt.notOk(fs.existsSync(marker), 'no pickle ran a command');
});

t.test('openStateDict reports a bad shard of a sharded .bin folder by its file', async (tt) => {
  const dir = path.join(tmp, 'sharded');
  fs.mkdirSync(dir);
  const src = path.join(FIX, 'tiny-llava-bin');
  for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(dir, f));
  const shard = path.join(dir, 'pytorch_model-00002-of-00002.bin');
  fs.truncateSync(shard, 1000);
  tt.throws(() => openStateDict(dir), new RegExp(`${shard.replace(/[.]/g, '\\.')}: no end-of-central-directory record`));
  fs.rmSync(shard);
  tt.throws(() => openStateDict(dir), /missing shard .*pytorch_model-00002-of-00002\.bin/);
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ weight_map: { x: '../evil.bin' } }));
  tt.throws(() => openStateDict(dir), /tensor 'x' maps to invalid shard file/);
});
