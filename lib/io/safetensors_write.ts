// safetensors_write.ts — the safetensors writer: tensors ordered by item size so each starts aligned,
// the header padded to a multiple of 8, written to a temp file that is fsynced and renamed over the target
// (format and decisions: safetensors.ts).
import * as fs from 'fs';
import * as path from 'path';
import { randomBytes } from 'crypto';
import { dtypeSizes, fail, isSafetensorsDtype, numelOf, IO_CHUNK, LITTLE_ENDIAN_HOST, type TensorToWrite } from './safetensors_format';

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) {
    done += fs.writeSync(fd, bytes, done, Math.min(IO_CHUNK, bytes.length - done));
  }
}

/**
 * Writes tensors to `filePath` atomically (temp file in the same directory, fsync, rename).
 * Accepts a plain object or a Map (a Map keeps names like "0" in the caller's order).
 */
export function writeSafetensors(
  filePath: string,
  tensors: Record<string, TensorToWrite> | Map<string, TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  if (!LITTLE_ENDIAN_HOST) throw new Error('safetensors: big-endian hosts are not supported');
  const list = [...(tensors instanceof Map ? tensors : Object.entries(tensors))];
  const items = list.map(([name, t]) => {
    const where = `tensor '${name}'`;
    if (name === '__metadata__' || name === '') fail(filePath, `${where}: reserved or empty name`);
    if (!isSafetensorsDtype(t.dtype)) fail(filePath, `${where}: unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((s) => Number.isSafeInteger(s) && s >= 0)) {
      fail(filePath, `${where}: shape ${JSON.stringify(t.shape)} is not a list of integers >= 0`);
    }
    const bytes = numelOf(t.shape) * dtypeSizes[t.dtype];
    if (!ArrayBuffer.isView(t.data) || t.data.byteLength !== bytes) {
      fail(filePath, `${where}: size mismatch: shape [${t.shape.join(', ')}] of ${t.dtype} needs ${bytes} bytes, data has ${t.data?.byteLength}`);
    }
    return { name, t, bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  // Largest item size first keeps every tensor aligned to its item size (the data section starts at a
  // multiple of 8). Array.prototype.sort is stable, so equal sizes keep the caller's order.
  items.sort((a, b) => dtypeSizes[b.t.dtype] - dtypeSizes[a.t.dtype]);

  // Built by hand rather than JSON.stringify(object) so integer-like names keep their position.
  const parts: string[] = [];
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(filePath, `__metadata__ value for '${k}' is not a string`);
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  let offset = 0;
  for (const it of items) {
    const info = { dtype: it.t.dtype, shape: [...it.t.shape], data_offsets: [offset, offset + it.bytes.length] };
    parts.push(`${JSON.stringify(it.name)}:${JSON.stringify(info)}`);
    offset += it.bytes.length;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(padded.length));

  const dir = path.dirname(path.resolve(filePath));
  const tmp = path.join(dir, `.${path.basename(filePath)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
    writeAll(fd, lenBuf);
    writeAll(fd, padded);
    for (const it of items) writeAll(fd, it.bytes);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, filePath);
  } catch (e) {
    if (fd !== null) fs.closeSync(fd);
    try {
      fs.unlinkSync(tmp);
    } catch {
      // the temp file may not exist; the original error is what matters
    }
    fail(filePath, `write failed (${(e as Error).message})`);
  }
  // Make the rename itself durable; some filesystems refuse fsync on a directory, which is not fatal.
  try {
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    // best effort
  }
}
