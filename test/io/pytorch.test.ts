// PyTorch checkpoints that torch 1.13 wrote (test/fixtures/torch, made by make_torch_fixtures.py) and a few
// built here byte by byte: every dtype, views (transposed, offset, step, stride 0, shared storages), the
// legacy non-zip format, the sharded tiny LLaVA and the reference's mm_projector.bin — each tensor equal bit
// for bit to what torch/safetensors hold. Also: zip64 records, deflated entries, a big-endian file, NaN
// payloads through an 8-byte gather, and laziness (opening reads no tensor bytes; a read reads one span).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PytorchFile } from '../../lib/io/pytorch';
import { openStateDict, checkpointFormat } from '../../lib/io/state_dict';
import { SafetensorsFile } from '../../lib/io/safetensors';
import { TEST_DIR } from '../helpers';
import { Pickle, f32Bytes, stateDictPickle, torchZip } from './torch_files';

const FIX = path.join(TEST_DIR, 'fixtures', 'torch');
const TINY = path.join(TEST_DIR, 'fixtures', 'tiny-llava', 'model.safetensors');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-torch-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

for (const file of ['cases.pt', 'cases_legacy.pt']) {
  t.test(`${file}: every dtype and view equals torch's contiguous copy bit for bit`, async (tt) => {
    const p = PytorchFile.open(path.join(FIX, file));
    const e = SafetensorsFile.open(path.join(FIX, 'cases_expected.safetensors'));
    tt.equal(p.format, file === 'cases.pt' ? 'zip' : 'legacy');
    tt.same(p.names(), e.names(), 'same names, same order');
    for (const n of e.names()) {
      const a = p.read(n);
      const b = e.read(n);
      tt.equal(a.dtype, b.dtype, `${n} dtype`);
      tt.same(a.shape, b.shape, `${n} shape`);
      tt.ok(same(a.data, b.data), `${n} bytes`);
      tt.same(p.info(n).shape, b.shape);
    }
    // The views keep the layout torch saved: one storage, its own offset and strides.
    tt.same(p.ref('transposed').stride, [1, 6]);
    tt.equal(p.ref('rows_3_to_9').offset, 18);
    tt.same(p.ref('step2').stride, [6, 2]);
    tt.same(p.ref('expanded').stride, [0, 1]);
    tt.equal(p.ref('transposed').storage, p.ref('rows_3_to_9').storage, 'views share one storage record');
    tt.same(p.info('rows_3_to_9').dataOffsets, [72, 216], 'info gives the byte span inside the storage');
    tt.same([...p.readAsFloat32('scalar')], [3.25]);
    tt.same(p.skipped, []);
    p.close();
    e.close();
    tt.throws(() => p.read('f32'), /after close/);
  });
}

t.test('the sharded tiny LLaVA (.bin + index) equals model.safetensors bit for bit', async (tt) => {
  const dir = path.join(FIX, 'tiny-llava-bin');
  const sd = openStateDict(dir);
  const ref = SafetensorsFile.open(TINY);
  tt.equal(sd.format, 'pytorch');
  tt.equal(sd.files.length, 2);
  tt.same(sd.names().sort(), ref.names().sort());
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'pytorch_model.bin.index.json'), 'utf8'));
  tt.same(sd.metadata, index.metadata);
  let bad = 0;
  for (const n of ref.names()) {
    if (path.basename(sd.fileOf(n)) !== index.weight_map[n]) bad++;
    const a = sd.read(n);
    const b = ref.read(n);
    if (a.dtype !== b.dtype || a.shape.join() !== b.shape.join() || !same(a.data, b.data)) bad++;
  }
  tt.equal(bad, 0, `${ref.names().length} tensors equal and in the shard the index names`);
  sd.close();
  ref.close();
});

t.test("mm_projector.bin holds the projector under the reference's names", async (tt) => {
  const p = openStateDict(path.join(FIX, 'mm_projector.bin'));
  const ref = SafetensorsFile.open(TINY);
  tt.same(p.names(), ['model.mm_projector.0.weight', 'model.mm_projector.0.bias', 'model.mm_projector.2.weight', 'model.mm_projector.2.bias']);
  for (const [a, b] of [
    ['model.mm_projector.0.weight', 'multi_modal_projector.linear_1.weight'],
    ['model.mm_projector.2.bias', 'multi_modal_projector.linear_2.bias'],
  ])
    tt.ok(same(p.read(a).data, ref.read(b).data), a);
  p.close();
  ref.close();
});

t.test('openStateDict reads safetensors too, by content, and says which format', async (tt) => {
  tt.equal(checkpointFormat(TINY), 'safetensors');
  tt.equal(checkpointFormat(path.join(FIX, 'cases_legacy.pt')), 'pytorch');
  const renamed = path.join(tmp, 'weights.bin');
  fs.copyFileSync(TINY, renamed); // a safetensors file under a .bin name is still safetensors
  const sd = openStateDict(renamed);
  tt.equal(sd.format, 'safetensors');
  tt.equal(sd.names().length, 80);
  sd.close();
  const dir = openStateDict(path.dirname(TINY));
  tt.equal(dir.format, 'safetensors');
  tt.same(dir.files, [TINY], 'the model file, not reference.safetensors');
  dir.close();
  // A safetensors header of 0x280 bytes starts 80 02, like a protocol-2 pickle: still safetensors.
  const json = Buffer.from(JSON.stringify({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }).padEnd(0x280, ' '));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const tricky = path.join(tmp, 'tricky.safetensors');
  fs.writeFileSync(tricky, Buffer.concat([len, json, Buffer.from(f32Bytes([2.5]))]));
  tt.equal(checkpointFormat(tricky), 'safetensors');
  const tr = openStateDict(tricky);
  tt.same([...tr.readAsFloat32('x')], [2.5]);
  tr.close();
  // .bin shards with their index win over a stray *.safetensors file next to them
  const mixed = path.join(tmp, 'mixed');
  fs.mkdirSync(mixed);
  for (const f of fs.readdirSync(path.join(FIX, 'tiny-llava-bin'))) fs.copyFileSync(path.join(FIX, 'tiny-llava-bin', f), path.join(mixed, f));
  fs.copyFileSync(path.join(FIX, 'cases_expected.safetensors'), path.join(mixed, 'stray.safetensors'));
  const m = openStateDict(mixed);
  tt.equal(m.format, 'pytorch');
  tt.equal(m.names().length, 80);
  m.close();
});

t.test('lazy: opening reads no tensor bytes, a read reads only its span', async (tt) => {
  const file = path.join(FIX, 'tiny-llava-bin', 'pytorch_model-00001-of-00002.bin');
  // Patch the module object itself (an `import * as` namespace is a copy with getters onto it).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const cjs = require('fs') as { readSync: typeof fs.readSync };
  const real = cjs.readSync;
  let bytes = 0;
  cjs.readSync = ((...a: unknown[]) => {
    const n = (real as (...x: unknown[]) => number)(...a);
    bytes += n;
    return n;
  }) as typeof fs.readSync;
  try {
    const p = PytorchFile.open(file);
    const atOpen = bytes;
    const pkl = 9300; // data.pkl is about 9 KB; the directory a few KB; the file is 471 KB
    tt.ok(atOpen < 3 * pkl + 512 + 65 * 1024 && atOpen < fs.statSync(file).size / 3, `open read ${atOpen} bytes`);
    bytes = 0;
    const r = p.read('language_model.model.norm.weight');
    tt.equal(bytes, r.data.byteLength, 'one tensor read = its own bytes');
    p.close();
  } finally {
    cjs.readSync = real;
  }
});

t.test('zip64 records, deflated entries and a big-endian file read correctly', async (tt) => {
  const pkl = stateDictPickle({ w: { key: '0', numel: 6, shape: [2, 3] }, wt: { key: '0', numel: 6, shape: [3, 2], stride: [1, 3] } });
  const vals = [1.5, -2, 3.25, 0, 1e-30, -7];
  const cases: [string, Buffer][] = [
    ['zip64', torchZip(pkl, { 0: f32Bytes(vals) }, { zip64: true })],
    ['deflate', torchZip(pkl, { 0: f32Bytes(vals) }, { deflate: ['archive/data.pkl', 'archive/data/0'] })],
    ['big-endian', torchZip(pkl, { 0: new Uint8Array(Buffer.from(f32Bytes(vals)).swap32()) }, { byteorder: 'big' })],
    ['little byteorder record', torchZip(pkl, { 0: f32Bytes(vals) }, { byteorder: 'little' })],
  ];
  for (const [name, bytes] of cases) {
    const f = path.join(tmp, `${name}.pt`);
    fs.writeFileSync(f, bytes);
    const p = PytorchFile.open(f);
    tt.same(
      [...p.readAsFloat32('w')],
      vals.map((v) => Math.fround(v)),
      `${name}: w`,
    );
    tt.same(
      [...p.readAsFloat32('wt')],
      [1.5, 0, -2, 1e-30, 3.25, -7].map((v) => Math.fround(v)),
      `${name}: transposed`,
    );
    p.close();
  }
});

t.test('an 8-byte gather keeps NaN payloads and int64 bits', async (tt) => {
  const raw = new Uint8Array(48);
  const dv = new DataView(raw.buffer);
  for (let i = 0; i < 6; i++) dv.setUint32(i * 8, 0x10000 * (i + 1) + 7, true);
  dv.setUint32(12, 0x7ff00001, true); // element 1: a signalling NaN with payload
  dv.setUint32(20, 0xfff80000 | 0x1234, true); // element 2: a quiet NaN with payload
  const pkl = new Pickle()
    .proto()
    .global('collections', 'OrderedDict')
    .emptyTuple()
    .reduce()
    .mark()
    .str('d')
    .tensor({ key: '0', numel: 6, shape: [3, 2], stride: [1, 3], storageType: 'DoubleStorage' })
    .str('l')
    .tensor({ key: '1', numel: 6, shape: [2, 3], stride: [1, 2], storageType: 'LongStorage' })
    .setitems()
    .bytes();
  const f = path.join(tmp, 'nan.pt');
  fs.writeFileSync(f, torchZip(pkl, { 0: raw, 1: raw }));
  const p = PytorchFile.open(f);
  const order = [0, 3, 1, 4, 2, 5];
  const want = Buffer.concat(order.map((i) => Buffer.from(raw.subarray(i * 8, i * 8 + 8))));
  tt.ok(same(p.read('d').data, want), 'f64 transposed, bits kept');
  const want2 = Buffer.concat([0, 2, 4, 1, 3, 5].map((i) => Buffer.from(raw.subarray(i * 8, i * 8 + 8))));
  tt.ok(same(p.read('l').data, want2), 'i64 strided, bits kept');
  p.close();
});
