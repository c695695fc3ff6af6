// safetensors reader/writer: round trips of every dtype, the fixture checkpoints, a table of malformed
// files (each must be an Error naming the problem, never a crash), sharded checkpoints, and half floats.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  SafetensorsFile,
  dtypeSizes,
  readSafetensorsHeader,
  typedView,
  writeSafetensors,
  type SafetensorsDtype,
  type TensorToWrite,
} from '../../lib/io/safetensors';
import { openStateDict } from '../../lib/io/state_dict';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../lib/io/half';
import { TEST_DIR } from '../helpers';

const fixtures = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'st-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sample(dtype: SafetensorsDtype, n: number): ArrayBufferView {
  switch (dtype) {
    case 'F64':
      return Float64Array.from({ length: n }, (_, i) => i * 0.1 - 1e300 * (i === 1 ? 1 : 0));
    case 'F32':
      return Float32Array.from({ length: n }, (_, i) => Math.fround(i * 1.5 - 3));
    case 'F16':
    case 'BF16':
      return Uint16Array.from({ length: n }, (_, i) => (i * 2654435761) & 0xffff);
    case 'I64':
      return BigInt64Array.from({ length: n }, (_, i) => BigInt(i) * -123456789012345n);
    case 'I32':
      return Int32Array.from({ length: n }, (_, i) => i * -100000);
    case 'I16':
      return Int16Array.from({ length: n }, (_, i) => i * -1000);
    case 'I8':
      return Int8Array.from({ length: n }, (_, i) => i - 100);
    case 'U8':
      return Uint8Array.from({ length: n }, (_, i) => (i * 7) & 255);
    case 'BOOL':
      return Uint8Array.from({ length: n }, (_, i) => i & 1);
  }
}

const bytesOf = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

t.test('round trip of every dtype, odd shapes, scalars and empty tensors', async (t) => {
  const tensors: Record<string, TensorToWrite> = {};
  const shapes = [[3, 5], [7], [], [0, 4], [2, 1, 3]];
  for (const dtype of Object.keys(dtypeSizes) as SafetensorsDtype[]) {
    for (const [k, shape] of shapes.entries()) {
      const n = shape.reduce((a, b) => a * b, 1);
      tensors[`${dtype.toLowerCase()}.${k}`] = { dtype, shape, data: sample(dtype, n) };
    }
  }
  tensors['0'] = { dtype: 'U8', shape: [1], data: new Uint8Array([9]) }; // integer-like name
  const file = path.join(tmp, 'all.safetensors');
  writeSafetensors(file, tensors, { format: 'pt', note: 'hé' });

  const raw = fs.readFileSync(file);
  const n = Number(raw.readBigUInt64LE(0));
  t.equal((8 + n) % 8, 0, 'data section starts 8-aligned');
  t.equal(
    raw
      .subarray(8, 8 + n)
      .toString()
      .trimEnd()
      .endsWith('}'),
    true,
    'header padded with spaces',
  );
  t.same(
    fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
    [],
    'no temp file left behind',
  );

  const h = readSafetensorsHeader(file);
  t.equal(h.header.size, Object.keys(tensors).length);
  t.same(h.metadata, { format: 'pt', note: 'hé' });
  t.equal(h.dataStart, 8 + n);
  t.equal(h.fileSize, raw.length);

  const f = SafetensorsFile.open(file);
  t.teardown(() => f.close());
  t.same(new Set(f.names()), new Set(Object.keys(tensors)));
  for (const [name, want] of Object.entries(tensors)) {
    const got = f.read(name);
    t.equal(got.dtype, want.dtype, name);
    t.same(got.shape, want.shape, name);
    t.same(Buffer.from(got.data), Buffer.from(bytesOf(want.data)), `${name} bytes`);
    t.equal(got.data.byteOffset, 0, `${name} owns an aligned buffer`);
    const [b, e] = f.info(name).dataOffsets;
    t.equal(b % dtypeSizes[want.dtype], 0, `${name} offset aligned to its item size`);
    t.equal(e - b, want.data.byteLength);
  }
  t.same(
    Array.from(f.readAsFloat32('i64.1')),
    Array.from({ length: 7 }, (_, i) => Math.fround(i * -123456789012345)),
  );
  t.same(Array.from(f.readAsFloat32('i8.0')).slice(0, 3), [-100, -99, -98]);
  t.same(Array.from(f.readAsFloat32('f32.0')), Array.from(tensors['f32.0'].data as Float32Array));
  t.same(Array.from(f.readAsFloat32('bf16.1')), Array.from(bf16ToF32(tensors['bf16.1'].data as Uint16Array)));
  t.same(Array.from(f.readAsFloat32('f16.1')), Array.from(f16ToF32(tensors['f16.1'].data as Uint16Array)));
  t.equal(f.readAsFloat32('f64.2').length, 1, 'scalar has one element');
  t.equal(f.readAsFloat32('u8.3').length, 0, 'empty tensor');
  t.ok(typedView('I64', f.read('i64.0').data) instanceof BigInt64Array);
  t.throws(() => f.read('nope'), /no tensor named 'nope'/);
  f.close();
  t.throws(() => f.read('u8.0'), /after close/);

  // Overwriting an existing file goes through the temp file too.
  writeSafetensors(file, { x: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } });
  t.same(readSafetensorsHeader(file).header.get('x')?.shape, [1]);
});

t.test('writer rejects bad input', async (t) => {
  const file = path.join(tmp, 'bad-write.safetensors');
  t.throws(() => writeSafetensors(file, { a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /size mismatch/);
  t.throws(() => writeSafetensors(file, { a: { dtype: 'Q4' as SafetensorsDtype, shape: [1], data: new Uint8Array(1) } }), /unknown dtype/);
  t.throws(() => writeSafetensors(file, { a: { dtype: 'U8', shape: [-1], data: new Uint8Array(1) } }), /shape/);
  t.throws(() => writeSafetensors(file, { __metadata__: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } }), /reserved/);
  t.throws(() => writeSafetensors(path.join(tmp, 'no-such-dir', 'x.safetensors'), {}), /write failed/);
  t.notOk(fs.existsSync(file));
});

t.test('fixture checkpoints: f32 and bf16', async (t) => {
  const f32 = SafetensorsFile.open(path.join(fixtures, 'model.safetensors'));
  const bf = SafetensorsFile.open(path.join(fixtures, 'model.bf16.safetensors'));
  t.teardown(() => {
    f32.close();
    bf.close();
  });
  t.equal(f32.names().length, 80);
  t.same(f32.metadata, { format: 'pt' });
  t.same(f32.info('language_model.model.embed_tokens.weight'), {
    dtype: 'F32',
    shape: [678, 48],
    dataOffsets: [130176, 260352],
  });
  t.same(new Set(bf.names()), new Set(f32.names()));
  for (const name of f32.names()) {
    const a = f32.readAsFloat32(name);
    const braw = bf.read(name);
    t.equal(braw.dtype, 'BF16');
    t.same(braw.shape, f32.info(name).shape);
    // torch rounds f32 -> bf16 to nearest even: our narrowing must give the very same bits...
    const bits = typedView('BF16', braw.data) as Uint16Array;
    const mine = f32ToBf16(a);
    let same = true;
    for (let i = 0; i < bits.length; i++)
      if (bits[i] !== mine[i]) {
        same = false;
        break;
      }
    t.ok(same, `${name}: f32ToBf16 matches the bf16 file bit for bit`);
    // ...and widening stays within bf16's half-ulp of the f32 weights: 8 significant bits, so 2^-8 relative.
    const b = bf.readAsFloat32(name);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(Math.abs(a[i]), 1e-30));
    t.ok(worst <= 2 ** -8, `${name}: max relative diff ${worst}`);
  }
  const ref = SafetensorsFile.open(path.join(fixtures, 'reference.safetensors'));
  t.teardown(() => ref.close());
  const ids = ref.read('input_ids');
  t.equal(ids.dtype, 'I64');
  t.same(ids.shape, [2, 143]);
  t.same(ref.read('image0.rgb').shape, [30, 40, 3]);
});

function rawFile(header: string | Buffer, data: Buffer | number = 0, lenOverride?: bigint): Buffer {
  const h = typeof header === 'string' ? Buffer.from(header) : header;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(h.length));
  return Buffer.concat([len, h, typeof data === 'number' ? Buffer.alloc(data) : data]);
}

t.test('malformed files are Errors that name the problem', async (t) => {
  const good = fs.readFileSync(path.join(fixtures, 'model.safetensors'));
  const ent = (o: object) => JSON.stringify(o);
  const cases: [string, Buffer, RegExp][] = [
    ['empty file', Buffer.alloc(0), /too small/],
    ['truncated length', Buffer.alloc(5), /too small/],
    ['truncated file', good.subarray(0, good.length - 100), /out of range/],
    ['truncated header', good.subarray(0, 500), /larger than the file/],
    ['header length larger than file', rawFile('{}', 0, 1000n), /header length 1000 is larger than the file/],
    ['absurd header length', rawFile('{}', 0, 2n ** 60n), /exceeds/],
    ['bad JSON', rawFile('{"a": [1,'), /not valid JSON/],
    ['not UTF-8', rawFile(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /UTF-8/],
    ['JSON array', rawFile('[1,2]'), /not an object/],
    ['unknown dtype', rawFile(ent({ w: { dtype: 'F8', shape: [2], data_offsets: [0, 2] } }), 2), /tensor 'w': unknown dtype "F8"/],
    ['missing dtype', rawFile(ent({ w: { shape: [2], data_offsets: [0, 2] } }), 2), /unknown dtype/],
    ['negative dim', rawFile(ent({ w: { dtype: 'U8', shape: [-2], data_offsets: [0, 2] } }), 2), /tensor 'w': shape/],
    ['float dim', rawFile(ent({ w: { dtype: 'U8', shape: [1.5], data_offsets: [0, 2] } }), 2), /shape/],
    [
      'size mismatch with shape',
      rawFile(ent({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }), 24),
      /tensor 'w': size mismatch.*needs 24 bytes but data_offsets span 20/,
    ],
    [
      'offsets out of range',
      rawFile(ent({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }), 8),
      /tensor 'w': data_offsets \[0, 16\] out of range/,
    ],
    ['reversed offsets', rawFile(ent({ w: { dtype: 'U8', shape: [0], data_offsets: [4, 2] } }), 8), /data_offsets/],
    ['bad offsets type', rawFile(ent({ w: { dtype: 'U8', shape: [2], data_offsets: ['0', 2] } }), 8), /data_offsets/],
    [
      'overlapping tensors',
      rawFile(
        ent({
          a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
          b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
        }),
        12,
      ),
      /tensors 'a' .* and 'b' .* overlap/,
    ],
    ['bad metadata', rawFile(ent({ __metadata__: { a: 1 } })), /__metadata__ value for 'a'/],
    // JSON.parse would keep the last 'w' silently.
    [
      'duplicated tensor name',
      rawFile(
        '{"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}, "v": {"dtype": "U8", "shape": [0], "data_offsets": [2, 2]},\n  "w" : {"dtype": "U8", "shape": [1], "data_offsets": [2, 3]}}',
        3,
      ),
      /header names tensor "w" more than once/,
    ],
    [
      'duplicated escaped name',
      rawFile(
        '{"a\\"b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a\\u0022b": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}',
        2,
      ),
      /header names tensor "a\\"b" more than once/,
    ],
  ];
  for (const [what, bytes, re] of cases) {
    const file = path.join(tmp, `bad-${what.replace(/\W+/g, '_')}.safetensors`);
    fs.writeFileSync(file, bytes);
    t.throws(() => readSafetensorsHeader(file), re, what);
    t.throws(() => SafetensorsFile.open(file), new RegExp(file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), `${what}: names the file`);
  }
  t.throws(() => readSafetensorsHeader(path.join(tmp, 'missing.safetensors')), /cannot open/);
  // The same name inside a tensor's entry or in __metadata__ is not a duplicate tensor.
  const nested = path.join(tmp, 'nested-names.safetensors');
  fs.writeFileSync(
    nested,
    rawFile(
      '{"__metadata__": {"w": "x", "dtype": "y"}, "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "w2": {"dtype": "U8", "shape": [0], "data_offsets": [1, 1]}}',
      1,
    ),
  );
  t.same([...readSafetensorsHeader(nested).header.keys()].sort(), ['w', 'w2']);
  // Gaps between tensors are tolerated (nothing is corrupted by them).
  const gap = path.join(tmp, 'gap.safetensors');
  fs.writeFileSync(gap, rawFile(ent({ a: { dtype: 'U8', shape: [2], data_offsets: [4, 6] } }), Buffer.from([0, 0, 0, 0, 7, 8])));
  const g = SafetensorsFile.open(gap);
  t.same(Array.from(g.read('a').data), [7, 8]);
  g.close();
  // A file truncated after open: the read fails cleanly.
  const shrink = path.join(tmp, 'shrink.safetensors');
  writeSafetensors(shrink, { a: { dtype: 'F32', shape: [64], data: new Float32Array(64) } });
  const s = SafetensorsFile.open(shrink);
  fs.truncateSync(shrink, s.dataStart + 10);
  t.throws(() => s.read('a'), /unexpected end of file reading tensor 'a'/);
  s.close();
});

t.test('sharded checkpoints', async (t) => {
  const dir = path.join(tmp, 'sharded');
  fs.mkdirSync(dir);
  const a = Float32Array.from([1, 2, 3, 4]);
  const b = Uint16Array.from([0x3f80, 0x4000]);
  const c = Int32Array.from([7, -7]);
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), {
    'w.a': { dtype: 'F32', shape: [2, 2], data: a },
    'w.c': { dtype: 'I32', shape: [2], data: c },
  });
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), { 'w.b': { dtype: 'BF16', shape: [2], data: b } });
  const index = {
    metadata: { total_size: 28 },
    weight_map: { 'w.a': 'model-00001-of-00002.safetensors', 'w.b': 'model-00002-of-00002.safetensors', 'w.c': 'model-00001-of-00002.safetensors' },
  };
  const indexPath = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(indexPath, JSON.stringify(index));
  const m = openStateDict(dir);
  t.same(m.names().sort(), ['w.a', 'w.b', 'w.c']);
  t.same(m.metadata, { total_size: 28 });
  t.same(Array.from(m.readAsFloat32('w.a')), [1, 2, 3, 4]);
  t.same(Array.from(m.readAsFloat32('w.b')), [1, 2]);
  t.same(Array.from(m.readAsFloat32('w.c')), [7, -7]);
  t.same(m.info('w.b').shape, [2]);
  t.match(m.fileOf('w.b'), /00002/);
  t.throws(() => m.read('w.z'), /no tensor named 'w.z'/);
  m.close();

  // Tensor listed for a shard that lacks it.
  fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { ...index.weight_map, 'w.b': 'model-00001-of-00002.safetensors' } }));
  t.throws(() => openStateDict(dir), /'w.b' is listed for shard model-00001-of-00002.safetensors but that file does not contain it/);
  // The same tensor in two shards.
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), {
    'w.b': { dtype: 'BF16', shape: [2], data: b },
    'w.a': { dtype: 'F32', shape: [2, 2], data: a },
  });
  fs.writeFileSync(indexPath, JSON.stringify(index));
  t.throws(() => openStateDict(dir), /'w.a' is duplicated/);
  // Missing shard, path escapes, broken index.
  fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { ...index.weight_map, 'w.d': 'model-00003-of-00003.safetensors' } }));
  t.throws(() => openStateDict(dir), /missing shard .*model-00003-of-00003/);
  fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { 'w.a': '../x.safetensors' } }));
  t.throws(() => openStateDict(dir), /invalid shard file/);
  fs.writeFileSync(indexPath, '{"weight_map": ');
  t.throws(() => openStateDict(dir), /cannot parse/);
  fs.writeFileSync(indexPath, '{}');
  t.throws(() => openStateDict(dir), /no "weight_map"/);

  // No index: model.safetensors wins (the fixture dir also holds reference.safetensors).
  const fx = openStateDict(fixtures);
  t.equal(fx.names().length, 80);
  t.match(fx.fileOf('multi_modal_projector.linear_1.weight'), /model\.safetensors$/);
  fx.close();
  // No index and no model.safetensors: every *.safetensors is merged; duplicates rejected.
  fs.rmSync(indexPath);
  t.throws(() => openStateDict(dir), /'w.a' is duplicated/);
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), { 'w.b': { dtype: 'BF16', shape: [2], data: b } });
  t.same(openStateDict(dir).names().sort(), ['w.a', 'w.b', 'w.c']);
  // A single file path works too; an empty or missing directory does not.
  t.same(openStateDict(path.join(dir, 'model-00002-of-00002.safetensors')).names(), ['w.b']);
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  t.throws(() => openStateDict(empty), /has no safetensors/);
  t.throws(() => openStateDict(path.join(tmp, 'nope')), /does not exist/);
});

t.test('half conversions', async (t) => {
  // Every f16 value survives f16 -> f32 -> f16 (NaNs stay NaN).
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const wide = f16ToF32(all);
  const back = f32ToF16(wide);
  let bad = 0;
  for (let i = 0; i < 65536; i++) {
    const isNaN16 = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (isNaN16 ? !Number.isNaN(wide[i]) || (back[i] & 0x7c00) !== 0x7c00 || !(back[i] & 0x3ff) : back[i] !== i) bad++;
  }
  t.equal(bad, 0, 'f16 round trip');
  t.same(Array.from(f16ToF32(Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x7c00, 0x8000]))), [
    1,
    -2,
    65504,
    2 ** -24,
    2 ** -14,
    Infinity,
    -0,
  ]);
  // Rounding to nearest even at the interesting edges.
  t.same(
    Array.from(f32ToF16([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519.99, 65520, 2 ** -25, 2 ** -25 * 1.0001, 2 ** -26, -0, 1e10])),
    [0x3c00, 0x3c02, 0x7bff, 0x7bff, 0x7c00, 0x0000, 0x0001, 0x0000, 0x8000, 0x7c00],
  );
  // Random f32: the result is the nearest f16 (checked against both neighbours).
  let notNearest = 0;
  for (let k = 0; k < 20000; k++) {
    const x = Math.fround((Math.random() - 0.5) * 2 ** (Math.random() * 40 - 26));
    const h = f32ToF16([x])[0];
    const y = f16ToF32(Uint16Array.of(h))[0];
    const up = f16ToF32(Uint16Array.of(h + 1))[0];
    const down = f16ToF32(Uint16Array.of(h === 0 || h === 0x8000 ? h : h - 1))[0];
    if (Math.abs(x - y) > Math.abs(x - up) || Math.abs(x - y) > Math.abs(x - down)) notNearest++;
  }
  t.equal(notNearest, 0, 'f32ToF16 is nearest');
  // bf16: exact for values with 8 significant bits, ties to even, NaN kept.
  t.same(Array.from(bf16ToF32(f32ToBf16([1, -2.5, 3.140625, 1 + 2 ** -8, 1 + 3 * 2 ** -8]))), [1, -2.5, 3.140625, 1, 1 + 2 ** -6]);
  t.ok(Number.isNaN(bf16ToF32(f32ToBf16([NaN]))[0]));
  t.equal(bf16ToF32(f32ToBf16([3.4e38]))[0], Infinity, 'overflow rounds to infinity');
  t.equal(bf16ToF32(f32ToBf16([-Infinity]))[0], -Infinity);
});
