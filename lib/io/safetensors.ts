// safetensors reader (the writer is safetensors_write.ts; what both share, safetensors_format.ts).
// Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data section;
// offsets are relative to the start of the data section).
//
// Decisions:
// - Never read a whole file into one Buffer: Node 20 Buffers stop at 4 GiB and LLaVA shards are larger.
//   The header is read once; each tensor is read on demand with positioned fs.readSync calls, in chunks
//   of at most 1 GiB (one read call cannot move more than 2 GiB).
// - read() returns a fresh Uint8Array that owns its ArrayBuffer at offset 0, so any typed view over it is
//   aligned (Buffer.allocUnsafe slices of the shared pool are not).
// - Validation is strict where a bad value would corrupt data (dtype, shape, size = numel * itemsize,
//   offsets inside the data section, no overlap) and lenient where it would not: gaps between tensors are
//   allowed, header key order is ignored. Every error names the file and, where there is one, the tensor.
// - The writer orders tensors by item size (largest first, stable) so every tensor starts aligned to its
//   own item size, pads the header with spaces to a multiple of 8 as the format requires, and writes a
//   temp file in the same directory, fsyncs it and renames it over the target, so a crash never leaves a
//   half-written checkpoint under the real name.
// - Data is little-endian on disk; typed views assume a little-endian host (checked once).
import * as fs from 'fs';
import { bf16ToF32, f16ToF32 } from './half';
import {
  dtypeSizes,
  fail,
  isSafetensorsDtype,
  numelOf,
  IO_CHUNK,
  LITTLE_ENDIAN_HOST,
  MAX_HEADER_BYTES,
  type RawTensor,
  type SafetensorsDtype,
  type SafetensorsHeader,
  type TensorInfo,
  type TensorSource,
} from './safetensors_format';

export * from './safetensors_format';
export { writeSafetensors } from './safetensors_write';

/**
 * The first key that the (valid) JSON text's top-level object holds twice, or null. JSON.parse keeps
 * the last of duplicates silently, so a header naming one tensor twice would lose one of them.
 */
function duplicateTopKey(text: string): string | null {
  const seen = new Set<string>();
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      const start = i;
      for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
      if (depth !== 1) continue;
      let j = i + 1;
      while (j < text.length && ' \t\r\n'.includes(text[j])) j++;
      if (text[j] !== ':') continue;
      const key = JSON.parse(text.slice(start, i + 1)) as string;
      if (seen.has(key)) return key;
      seen.add(key);
    }
  }
  return null;
}

function parseHeader(file: string, json: Uint8Array, dataSize: number): Omit<SafetensorsHeader, 'dataStart' | 'fileSize'> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(json);
  } catch {
    fail(file, 'header is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    fail(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) fail(file, 'header JSON is not an object');
  const dup = duplicateTopKey(text);
  if (dup !== null) fail(file, `header names tensor ${JSON.stringify(dup)} more than once`);

  const header = new Map<string, TensorInfo>();
  const metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(file, `__metadata__ value for '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor '${name}'`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, `${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (!isSafetensorsDtype(dtype)) fail(file, `${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) {
      fail(file, `${where}: shape ${JSON.stringify(shape)} is not a list of integers >= 0`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]) {
      fail(file, `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataSize) {
      fail(file, `${where}: data_offsets [${begin}, ${end}] out of range: the data section holds ${dataSize} bytes`);
    }
    const bytes = numelOf(shape) * dtypeSizes[dtype];
    if (!Number.isSafeInteger(bytes) || bytes !== end - begin) {
      fail(file, `${where}: size mismatch: shape [${shape.join(', ')}] of ${dtype} needs ${bytes} bytes but data_offsets span ${end - begin}`);
    }
    header.set(name, { dtype, shape: shape.slice(), dataOffsets: [begin, end] });
  }

  // Overlap check on the non-empty tensors sorted by start (an empty tensor may sit anywhere).
  const spans = [...header].filter(([, i]) => i.dataOffsets[1] > i.dataOffsets[0]);
  spans.sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
  for (let i = 1; i < spans.length; i++) {
    const [pn, p] = spans[i - 1];
    const [cn, c] = spans[i];
    if (c.dataOffsets[0] < p.dataOffsets[1]) {
      fail(file, `tensors '${pn}' [${p.dataOffsets}] and '${cn}' [${c.dataOffsets}] overlap`);
    }
  }
  return { header, metadata };
}

function readExactly(fd: number, dst: Uint8Array, position: number, file: string, what: string): void {
  let done = 0;
  while (done < dst.length) {
    const len = Math.min(IO_CHUNK, dst.length - done);
    const n = fs.readSync(fd, dst, done, len, position + done);
    if (n === 0) fail(file, `unexpected end of file reading ${what} (${done} of ${dst.length} bytes at offset ${position})`);
    done += n;
  }
}

function readHeaderFromFd(fd: number, file: string): SafetensorsHeader {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) fail(file, `file is ${fileSize} bytes, too small to hold the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readExactly(fd, lenBuf, 0, file, 'the header length');
  const n64 = lenBuf.readBigUInt64LE(0);
  if (n64 > BigInt(MAX_HEADER_BYTES)) fail(file, `header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(n64);
  if (8 + n > fileSize) fail(file, `header length ${n} is larger than the file (${fileSize} bytes)`);
  if (n < 2) fail(file, `header length ${n} is too small for a JSON object`);
  const json = new Uint8Array(n);
  readExactly(fd, json, 8, file, 'the header');
  const dataStart = 8 + n;
  return { ...parseHeader(file, json, fileSize - dataStart), dataStart, fileSize };
}

/** Reads and validates only the header of a .safetensors file. */
export function readSafetensorsHeader(filePath: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = fs.openSync(filePath, 'r');
  } catch (e) {
    fail(filePath, `cannot open (${(e as Error).message})`);
  }
  try {
    return readHeaderFromFd(fd, filePath);
  } finally {
    fs.closeSync(fd);
  }
}

/** A typed view of a tensor's bytes in its own dtype (F16/BF16 as raw Uint16 bits, I64 as BigInt64). */
export function typedView(dtype: SafetensorsDtype, data: Uint8Array) {
  if (!LITTLE_ENDIAN_HOST) throw new Error('safetensors: big-endian hosts are not supported');
  const size = dtypeSizes[dtype];
  if (data.byteLength % size !== 0) throw new Error(`safetensors: ${data.byteLength} bytes is not a whole number of ${dtype}`);
  const src = data.byteOffset % size === 0 ? data : data.slice(); // slice() realigns to offset 0
  const n = src.byteLength / size;
  switch (dtype) {
    case 'F64':
      return new Float64Array(src.buffer, src.byteOffset, n);
    case 'F32':
      return new Float32Array(src.buffer, src.byteOffset, n);
    case 'F16':
    case 'BF16':
      return new Uint16Array(src.buffer, src.byteOffset, n);
    case 'I64':
      return new BigInt64Array(src.buffer, src.byteOffset, n);
    case 'I32':
      return new Int32Array(src.buffer, src.byteOffset, n);
    case 'I16':
      return new Int16Array(src.buffer, src.byteOffset, n);
    case 'I8':
      return new Int8Array(src.buffer, src.byteOffset, n);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(src.buffer, src.byteOffset, n);
  }
}

/** Converts raw tensor bytes to float32 (I64 beyond 2^24 loses precision, as any f32 cast does). */
export function toFloat32(dtype: SafetensorsDtype, data: Uint8Array): Float32Array {
  const view = typedView(dtype, data);
  switch (dtype) {
    case 'F32':
      return view as Float32Array;
    case 'F16':
      return f16ToF32(view as Uint16Array);
    case 'BF16':
      return bf16ToF32(view as Uint16Array);
    case 'I64': {
      const v = view as BigInt64Array;
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
      return out;
    }
    default:
      return Float32Array.from(view as Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array);
  }
}

/** One open .safetensors file: header in memory, tensors read on demand. */
export class SafetensorsFile implements TensorSource {
  readonly path: string;
  readonly header: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  readonly dataStart: number;
  readonly fileSize: number;
  private fd: number | null;

  private constructor(filePath: string, fd: number, h: SafetensorsHeader) {
    this.path = filePath;
    this.fd = fd;
    this.header = h.header;
    this.metadata = h.metadata;
    this.dataStart = h.dataStart;
    this.fileSize = h.fileSize;
  }

  static open(filePath: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(filePath, 'r');
    } catch (e) {
      fail(filePath, `cannot open (${(e as Error).message})`);
    }
    try {
      return new SafetensorsFile(filePath, fd, readHeaderFromFd(fd, filePath));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return [...this.header.keys()];
  }

  has(name: string): boolean {
    return this.header.has(name);
  }

  info(name: string): TensorInfo {
    const i = this.header.get(name);
    if (!i) fail(this.path, `no tensor named '${name}'`);
    return { dtype: i.dtype, shape: i.shape.slice(), dataOffsets: [i.dataOffsets[0], i.dataOffsets[1]] };
  }

  read(name: string): RawTensor {
    if (this.fd === null) fail(this.path, `read('${name}') after close()`);
    const i = this.info(name);
    const [begin, end] = i.dataOffsets;
    let data: Uint8Array;
    try {
      data = new Uint8Array(end - begin);
    } catch (e) {
      fail(this.path, `tensor '${name}': cannot allocate ${end - begin} bytes (${(e as Error).message})`);
    }
    readExactly(this.fd, data, this.dataStart + begin, this.path, `tensor '${name}'`);
    return { dtype: i.dtype, shape: i.shape, data };
  }

  readAsFloat32(name: string): Float32Array {
    const t = this.read(name);
    return toFloat32(t.dtype, t.data);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
