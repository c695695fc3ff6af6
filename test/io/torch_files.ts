// torch_files.ts — builds PyTorch-style checkpoints byte by byte for the reader's tests: a zip writer
// (stored or deflated entries, optional zip64 records) and a pickle assembler, so each bad-file case of
// test/io/pytorch_bad.test.ts is one small, readable recipe instead of a committed binary.
import * as zlib from 'zlib';
import { crc32 } from '../../lib/io/zip';

export interface ZipOptions {
  /** Write zip64 extra fields and end records even though nothing needs them. */
  zip64?: boolean;
  /** Entry names to store deflated. */
  deflate?: string[];
}

/** A zip archive of the given entries, in order. */
export function makeZip(entries: [string, Uint8Array][], opts: ZipOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (const [name, data] of entries) {
    const nameB = Buffer.from(name, 'utf8');
    const deflate = opts.deflate?.includes(name) ?? false;
    const body = deflate ? zlib.deflateRawSync(data) : Buffer.from(data);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(opts.zip64 ? 45 : 20, 4);
    local.writeUInt16LE(deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameB.length, 26);
    parts.push(local, nameB, body);
    const extra = Buffer.alloc(opts.zip64 ? 28 : 0);
    if (opts.zip64) {
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(data.length), 4);
      extra.writeBigUInt64LE(BigInt(body.length), 12);
      extra.writeBigUInt64LE(BigInt(off), 20);
    }
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(45, 4);
    c.writeUInt16LE(45, 6);
    c.writeUInt16LE(deflate ? 8 : 0, 10);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(opts.zip64 ? 0xffffffff : body.length, 20);
    c.writeUInt32LE(opts.zip64 ? 0xffffffff : data.length, 24);
    c.writeUInt16LE(nameB.length, 28);
    c.writeUInt16LE(extra.length, 30);
    c.writeUInt32LE(opts.zip64 ? 0xffffffff : off, 42);
    central.push(c, nameB, extra);
    off += 30 + nameB.length + body.length;
  }
  const cd = Buffer.concat(central);
  const tail: Buffer[] = [];
  if (opts.zip64) {
    const e64 = Buffer.alloc(56);
    e64.writeUInt32LE(0x06064b50, 0);
    e64.writeBigUInt64LE(44n, 4);
    e64.writeBigUInt64LE(BigInt(entries.length), 24);
    e64.writeBigUInt64LE(BigInt(entries.length), 32);
    e64.writeBigUInt64LE(BigInt(cd.length), 40);
    e64.writeBigUInt64LE(BigInt(off), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(off + cd.length), 8);
    loc.writeUInt32LE(1, 16);
    tail.push(e64, loc);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(opts.zip64 ? 0xffff : entries.length, 8);
  end.writeUInt16LE(opts.zip64 ? 0xffff : entries.length, 10);
  end.writeUInt32LE(opts.zip64 ? 0xffffffff : cd.length, 12);
  end.writeUInt32LE(opts.zip64 ? 0xffffffff : off, 16);
  return Buffer.concat([...parts, cd, ...tail, end]);
}

/** A pickle assembler: each method appends opcodes; bytes() adds STOP. */
export class Pickle {
  private out: number[] = [];
  private raw(...b: number[]): this {
    this.out.push(...b);
    return this;
  }
  private text(s: string): number[] {
    return [...Buffer.from(s, 'utf8')];
  }
  proto(v = 2): this {
    return this.raw(0x80, v);
  }
  mark(): this {
    return this.raw(0x28);
  }
  global(module: string, name: string): this {
    return this.raw(0x63, ...this.text(`${module}\n${name}\n`));
  }
  stackGlobal(module: string, name: string): this {
    return this.str(module).str(name).raw(0x93);
  }
  inst(module: string, name: string): this {
    return this.raw(0x69, ...this.text(`${module}\n${name}\n`));
  }
  str(s: string): this {
    const b = this.text(s);
    const n = Buffer.alloc(4);
    n.writeUInt32LE(b.length);
    return this.raw(0x58, ...n, ...b);
  }
  int(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return this.raw(0x4a, ...b);
  }
  none(): this {
    return this.raw(0x4e);
  }
  false(): this {
    return this.raw(0x89);
  }
  tuple(): this {
    return this.raw(0x74);
  }
  emptyTuple(): this {
    return this.raw(0x29);
  }
  emptyList(): this {
    return this.raw(0x5d);
  }
  emptyDict(): this {
    return this.raw(0x7d);
  }
  append(): this {
    return this.raw(0x61);
  }
  appends(): this {
    return this.raw(0x65);
  }
  setitem(): this {
    return this.raw(0x73);
  }
  setitems(): this {
    return this.raw(0x75);
  }
  reduce(): this {
    return this.raw(0x52);
  }
  binpersid(): this {
    return this.raw(0x51);
  }
  put(i: number): this {
    return this.raw(0x71, i);
  }
  get(i: number): this {
    return this.raw(0x68, i);
  }
  op(b: number): this {
    return this.raw(b);
  }
  ints(v: number[]): this {
    this.mark();
    for (const x of v) this.int(x);
    return this.tuple();
  }
  /** _rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict()) as a REDUCE. */
  tensor(t: TensorSpec): this {
    this.global('torch._utils', '_rebuild_tensor_v2').mark();
    this.mark()
      .str('storage')
      .global('torch', t.storageType ?? 'FloatStorage')
      .str(t.key)
      .str('cpu')
      .int(t.numel)
      .tuple()
      .binpersid();
    this.int(t.offset ?? 0)
      .ints(t.shape)
      .ints(t.stride ?? rowMajor(t.shape))
      .false();
    this.global('collections', 'OrderedDict').emptyTuple().reduce();
    return this.tuple().reduce();
  }
  bytes(): Uint8Array {
    return new Uint8Array([...this.out, 0x2e]);
  }
}

export interface TensorSpec {
  key: string;
  numel: number;
  shape: number[];
  stride?: number[];
  offset?: number;
  storageType?: string;
}

export function rowMajor(shape: number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/** The pickle of {name: tensor} as torch.save writes a state dict (an OrderedDict). */
export function stateDictPickle(tensors: Record<string, TensorSpec>): Uint8Array {
  const p = new Pickle().proto().global('collections', 'OrderedDict').emptyTuple().reduce().mark();
  for (const [name, t] of Object.entries(tensors)) p.str(name).tensor(t);
  return p.setitems().bytes();
}

/** A torch.save-style zip: archive/data.pkl, archive/data/<key>, archive/version, maybe archive/byteorder. */
export function torchZip(pkl: Uint8Array, storages: Record<string, Uint8Array>, opts: ZipOptions & { byteorder?: string } = {}): Buffer {
  const entries: [string, Uint8Array][] = [['archive/data.pkl', pkl]];
  if (opts.byteorder !== undefined) entries.push(['archive/byteorder', Buffer.from(opts.byteorder)]);
  for (const [k, v] of Object.entries(storages)) entries.push([`archive/data/${k}`, v]);
  entries.push(['archive/version', Buffer.from('3\n')]);
  return makeZip(entries, opts);
}

/** f32 values as little-endian bytes. */
export function f32Bytes(v: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(v).buffer);
}
