// zip.ts — a read-only zip archive reader, enough for PyTorch checkpoints (torch.save since 1.6 writes a
// zip of `<archive>/data.pkl`, `<archive>/data/<key>` storages, `<archive>/version`, maybe `byteorder`).
//
// Decisions:
// - Only the central directory is read at open (the end-of-central-directory record, zip64 when its
//   fields are saturated); entry bytes are read on demand with positioned reads, so a storage of a
//   multi-GB shard is never loaded unless asked for, and then only the byte range asked for.
// - torch writes entries stored (method 0); deflate (method 8) is accepted too and inflated whole on
//   read, for archives re-packed by other tools. Encrypted entries and other methods are refused.
// - Every offset and size is checked against the archive before use: an entry whose data would run past
//   the central directory, a local header that is not one, a truncated file — each a clear error naming
//   the archive and the entry, never a short read handed on as data.
// - CRC-32 is checked on whole-entry reads (small entries such as data.pkl); range reads of tensor data skip
//   it, as torch's own reader does.
import * as fs from 'fs';
import * as zlib from 'zlib';
import { IO_CHUNK } from './safetensors_format';

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflated. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  /** Absolute file offset of the entry's data (after its local header). */
  dataOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const MAX_CENTRAL_DIR = 256 * 1024 * 1024;

let crcTable: Uint32Array | null = null;

/** CRC-32 (IEEE 802.3, the zip checksum) of a byte array. */
export function crc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function u64(b: Buffer, at: number, file: string, what: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`zip: ${file}: ${what} ${v} is too large`);
  return Number(v);
}

/** An open zip archive: the directory in memory, entry data read on demand. */
export class ZipReader {
  readonly path: string;
  readonly fileSize: number;
  readonly entries: Map<string, ZipEntry>;
  private fd: number | null;

  private constructor(file: string, fd: number, fileSize: number, entries: Map<string, ZipEntry>) {
    this.path = file;
    this.fd = fd;
    this.fileSize = fileSize;
    this.entries = entries;
  }

  static open(file: string): ZipReader {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new Error(`zip: ${file}: cannot open (${(e as Error).message})`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      return new ZipReader(file, fd, size, readDirectory(fd, file, size));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  fail(msg: string): never {
    throw new Error(`zip: ${this.path}: ${msg}`);
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) this.fail(`no entry named '${name}'`);
    return e;
  }

  /** `length` bytes of a stored entry's data from `start`, in a fresh buffer (byteOffset 0). */
  readRange(e: ZipEntry, start: number, length: number): Uint8Array {
    if (start < 0 || length < 0 || start + length > e.size)
      this.fail(`entry '${e.name}': bytes [${start}, ${start + length}) are outside its ${e.size} bytes`);
    if (e.method !== 0) return this.readAll(e).slice(start, start + length);
    const out = new Uint8Array(length);
    this.pread(out, e.dataOffset + start, `entry '${e.name}'`);
    return out;
  }

  /** The whole (inflated) data of an entry, CRC-checked. */
  readAll(e: ZipEntry): Uint8Array {
    const raw = new Uint8Array(e.compressedSize);
    this.pread(raw, e.dataOffset, `entry '${e.name}'`);
    let data: Uint8Array = raw;
    if (e.method === 8) {
      try {
        data = new Uint8Array(zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) }));
      } catch (err) {
        this.fail(`entry '${e.name}': cannot inflate (${(err as Error).message})`);
      }
      if (data.length !== e.size) this.fail(`entry '${e.name}': inflates to ${data.length} bytes, the directory says ${e.size}`);
    }
    const c = crc32(data);
    if (c !== e.crc32) this.fail(`entry '${e.name}': CRC-32 mismatch (0x${c.toString(16)} != 0x${e.crc32.toString(16)}): the file is damaged`);
    return data;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  private pread(dst: Uint8Array, position: number, what: string): void {
    if (this.fd === null) this.fail(`read of ${what} after close()`);
    let done = 0;
    while (done < dst.length) {
      const n = fs.readSync(this.fd, dst, done, Math.min(IO_CHUNK, dst.length - done), position + done);
      if (n === 0) this.fail(`unexpected end of file reading ${what} (${done} of ${dst.length} bytes at offset ${position})`);
      done += n;
    }
  }
}

function readAt(fd: number, position: number, length: number, file: string, what: string): Buffer {
  const b = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, b, done, length - done, position + done);
    if (n === 0) throw new Error(`zip: ${file}: unexpected end of file reading ${what}`);
    done += n;
  }
  return b;
}

function readDirectory(fd: number, file: string, size: number): Map<string, ZipEntry> {
  const fail = (msg: string): never => {
    throw new Error(`zip: ${file}: ${msg}`);
  };
  // The end record is 22 bytes plus a comment of up to 65535 bytes, at the very end of the file.
  const tailLen = Math.min(size, 22 + 65535 + 20);
  const tail = readAt(fd, size - tailLen, tailLen, file, 'the end of the archive');
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD && i + 22 + tail.readUInt16LE(i + 20) === tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) fail('no end-of-central-directory record: not a zip archive, or the file is truncated');
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  let cdEnd = size - tailLen + eocd; // where the directory must end (start of the end records)
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== SIG_EOCD64_LOCATOR) fail('saturated end record but no zip64 locator');
    const at = u64(tail, loc + 8, file, 'zip64 end record offset');
    if (at + 56 > size - tailLen + loc) fail(`zip64 end record offset ${at} out of range`);
    const rec = readAt(fd, at, 56, file, 'the zip64 end record');
    if (rec.readUInt32LE(0) !== SIG_EOCD64) fail(`no zip64 end record at offset ${at}`);
    count = u64(rec, 32, file, 'entry count');
    cdSize = u64(rec, 40, file, 'central directory size');
    cdOffset = u64(rec, 48, file, 'central directory offset');
    cdEnd = at;
  }
  if (cdOffset + cdSize > cdEnd)
    fail(`central directory [${cdOffset}, ${cdOffset + cdSize}) runs past its end record at ${cdEnd}: the file is truncated or damaged`);
  if (cdSize > MAX_CENTRAL_DIR) fail(`central directory of ${cdSize} bytes exceeds the ${MAX_CENTRAL_DIR}-byte limit`);
  const cd = readAt(fd, cdOffset, cdSize, file, 'the central directory');

  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) fail(`central directory entry ${i} is damaged`);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let csize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let local = cd.readUInt32LE(p + 42);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cd.length) fail(`central directory entry ${i} runs past the directory`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 extended information: the saturated fields, in the order usize, csize, offset.
    for (let x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen;) {
      const id = cd.readUInt16LE(x);
      const len = cd.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let q = x + 4;
        const take = (): number => {
          if (q + 8 > x + 4 + len) fail(`entry '${name}': short zip64 extra field`);
          const v = u64(cd, q, file, `entry '${name}' zip64 field`);
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = take();
        if (csize === 0xffffffff) csize = take();
        if (local === 0xffffffff) local = take();
      }
      x += 4 + len;
    }
    p = next;
    if (flags & 1) fail(`entry '${name}' is encrypted`);
    if (method !== 0 && method !== 8) fail(`entry '${name}' uses compression method ${method} (only stored and deflate are supported)`);
    if (method === 0 && csize !== usize) fail(`entry '${name}' is stored but its sizes differ (${csize} vs ${usize})`);
    if (local + 30 > cdOffset) fail(`entry '${name}': local header offset ${local} is outside the archive data`);
    const lh = readAt(fd, local, 30, file, `the local header of '${name}'`);
    if (lh.readUInt32LE(0) !== SIG_LOCAL) fail(`entry '${name}': no local header at offset ${local}`);
    const dataOffset = local + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
    if (dataOffset + csize > cdOffset)
      fail(
        `entry '${name}': data [${dataOffset}, ${dataOffset + csize}) runs past the archive data (ends at ${cdOffset}): the file is truncated or damaged`,
      );
    if (entries.has(name)) fail(`entry '${name}' appears twice`);
    entries.set(name, { name, method, compressedSize: csize, size: usize, crc32: crc, dataOffset });
  }
  return entries;
}
