// pytorch.ts — reads PyTorch checkpoints (`.bin`, `.pt`, `.pth`) written by torch.save, as a TensorSource
// like the safetensors reader: names, dtype and shape from the pickle, tensor bytes read on demand.
//
// Formats:
// - zip (torch >= 1.6): `<archive>/data.pkl` (the pickled state dict; tensors refer to storages by
//   persistent id), `<archive>/data/<key>` (one stored entry per storage, raw elements),
//   `<archive>/byteorder` ("little" or "big"; absent means little), `<archive>/version`.
// - legacy (torch < 1.6, `_use_new_zipfile_serialization=False`): five pickles in a row (magic number,
//   protocol version, sys_info, the object, the storage keys), then per key an 8-byte element count and the
//   raw elements. The older tar format (torch < 0.4) is refused by name.
//
// Decisions:
// - The pickle runs in the restricted unpickler (pickle.ts) with the state-dict allow-list
//   (pytorch_pickle.ts): no global outside it is ever resolved, let alone called.
// - Everything is validated at open, before any tensor is read: each storage's entry exists and holds
//   exactly numel * itemsize bytes, each tensor's furthest element lies inside its storage.
// - read(name) reads only the byte span of the storage the tensor covers and returns the elements
//   contiguous in row-major order (a transposed or sliced view is gathered; storages shared by
//   several tensors are read once per tensor). Big-endian files are byte-swapped to little-endian.
// - info(name).dataOffsets is the tensor's byte span inside its storage (not a file offset).
import * as fs from 'fs';
import { unpickle, type PickleHooks } from './pickle';
import { flattenStateDict, stateDictHooks, type TorchStorage, type TorchTensorRef } from './pytorch_pickle';
import { dtypeSizes, numelOf, type RawTensor, type TensorInfo, type TensorSource } from './safetensors_format';
import { toFloat32 } from './safetensors';
import { ZipReader } from './zip';

export type { TorchStorage, TorchTensorRef } from './pytorch_pickle';

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
/** LONG1's little-endian bytes of LEGACY_MAGIC. */
const LEGACY_MAGIC_BYTES = Buffer.from('6cfc9c46f9206aa85019', 'hex');
const LEGACY_PROTOCOL = 1001;
const MAX_PICKLE_BYTES = 1 << 30;
/** The largest tensor one read returns: Node 20's largest ArrayBuffer (4 GiB). */
const MAX_TENSOR_BYTES = 2 ** 32;

interface StorageBytes {
  /** Bytes present for the storage. */
  size: number;
  read(start: number, length: number): Uint8Array;
}

/** The first bytes say which format a file is in. */
export function sniffTorchFormat(file: string): 'zip' | 'legacy' | 'tar' | null {
  const b = Buffer.alloc(512);
  const fd = fs.openSync(file, 'r');
  let n = 0;
  try {
    n = fs.readSync(fd, b, 0, 512, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (n >= 4 && b.readUInt32LE(0) === 0x04034b50) return 'zip';
  // A legacy file opens with a pickled magic number (LONG1 after PROTO, maybe a FRAME). "0x80 then a small
  // byte" alone is not enough: a safetensors header length such as 0x280 starts the same way.
  if (n >= 2 && b[0] === 0x80 && b[1] <= 5 && b.subarray(0, 32).indexOf(LEGACY_MAGIC_BYTES) >= 0) return 'legacy';
  if (n >= 262 && b.toString('latin1', 257, 262) === 'ustar') return 'tar';
  return null;
}

/** One open PyTorch checkpoint file. */
export class PytorchFile implements TensorSource {
  readonly path: string;
  readonly format: 'zip' | 'legacy';
  readonly bigEndian: boolean;
  /** Entries of the state dict that are not tensors (skipped). */
  readonly skipped: string[];
  private readonly tensors: Map<string, TorchTensorRef>;
  private readonly storageBytes: Map<string, StorageBytes>;
  private closeFn: (() => void) | null;

  private constructor(
    file: string,
    format: 'zip' | 'legacy',
    parts: { tensors: Map<string, TorchTensorRef>; skipped: string[]; bytes: Map<string, StorageBytes>; bigEndian: boolean; close: () => void },
  ) {
    this.path = file;
    this.format = format;
    this.tensors = parts.tensors;
    this.skipped = parts.skipped;
    this.storageBytes = parts.bytes;
    this.bigEndian = parts.bigEndian;
    this.closeFn = parts.close;
  }

  /** Opens and validates a checkpoint; tensors are not read yet. */
  static open(file: string): PytorchFile {
    const fail = (msg: string): never => {
      throw new Error(`pytorch: ${file}: ${msg}`);
    };
    if (!fs.existsSync(file)) fail('not found');
    const kind = sniffTorchFormat(file);
    if (kind === 'tar') fail('the tar checkpoint format of torch < 0.4 is not supported (re-save it with a newer torch)');
    if (kind === null) fail('not a PyTorch checkpoint: neither a zip archive (torch >= 1.6) nor a legacy pickle');
    const parts = kind === 'zip' ? openZip(file, fail) : openLegacy(file, fail);
    try {
      validate(parts.tensors, parts.bytes, fail);
    } catch (e) {
      parts.close();
      throw e;
    }
    return new PytorchFile(file, kind as 'zip' | 'legacy', parts);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The tensor's storage view (storage, offset, shape, strides) as the pickle describes it. */
  ref(name: string): TorchTensorRef {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`pytorch: ${this.path}: no tensor named '${name}'`);
    return t;
  }

  info(name: string): TensorInfo {
    const t = this.ref(name);
    const [begin, end] = spanOf(t);
    return { dtype: t.storage.dtype, shape: t.shape.slice(), dataOffsets: [begin, end] };
  }

  read(name: string): RawTensor {
    if (this.closeFn === null) throw new Error(`pytorch: ${this.path}: read('${name}') after close()`);
    const t = this.ref(name);
    const size = dtypeSizes[t.storage.dtype];
    if (numelOf(t.shape) === 0) return { dtype: t.storage.dtype, shape: t.shape.slice(), data: new Uint8Array(0) };
    const [begin, end] = spanOf(t);
    const span = this.storageBytes.get(t.storage.key)!.read(begin, end - begin);
    const data = isRowMajor(t) ? span : gather(span, t, size);
    if (this.bigEndian && size > 1) swapBytes(data, size);
    return { dtype: t.storage.dtype, shape: t.shape.slice(), data };
  }

  readAsFloat32(name: string): Float32Array {
    const t = this.read(name);
    return toFloat32(t.dtype, t.data);
  }

  close(): void {
    this.closeFn?.();
    this.closeFn = null;
  }
}

/** [begin, end) bytes of the storage a tensor touches ([x, x] for an empty tensor). */
function spanOf(t: TorchTensorRef): [number, number] {
  const size = dtypeSizes[t.storage.dtype];
  if (numelOf(t.shape) === 0) return [t.offset * size, t.offset * size];
  let last = t.offset;
  for (let d = 0; d < t.shape.length; d++) last += (t.shape[d] - 1) * t.stride[d];
  return [t.offset * size, (last + 1) * size];
}

/** True when the strides are the row-major ones (dims of size 1 may have any stride). */
function isRowMajor(t: TorchTensorRef): boolean {
  let expect = 1;
  for (let d = t.shape.length - 1; d >= 0; d--) {
    if (t.shape[d] !== 1 && t.stride[d] !== expect) return false;
    expect *= t.shape[d];
  }
  return true;
}

/**
 * Copies a strided view (span starts at the view's first element) into a fresh row-major buffer, plane by
 * plane over the last two dims. A plane whose rows are contiguous is copied row by row; any other (a
 * transpose) in 64 x 64 tiles, so both the reads and the writes stay within a few cache lines.
 */
function gather(span: Uint8Array, t: TorchTensorRef, size: number): Uint8Array {
  const n = numelOf(t.shape);
  const out = new Uint8Array(n * size);
  // 8-byte items move as two 32-bit words; typed copies never touch float values (NaN bits survive).
  const words = size === 8 ? 2 : 1;
  const unit = size === 8 ? 4 : size;
  const Arr = unit === 1 ? Uint8Array : unit === 2 ? Uint16Array : Uint32Array;
  const src = new Arr(span.buffer as ArrayBuffer, span.byteOffset, span.byteLength / unit);
  const dst = new Arr(out.buffer, 0, out.byteLength / unit);
  const nd = t.shape.length;
  const C = t.shape[nd - 1];
  const sC = t.stride[nd - 1] * words;
  const R = nd >= 2 ? t.shape[nd - 2] : 1;
  const sR = nd >= 2 ? t.stride[nd - 2] * words : 0;
  const outer = Math.max(0, nd - 2);
  const idx = new Array<number>(outer).fill(0);
  const TILE = 64;
  let base = 0; // offset in units (relative to the span) of the current plane
  for (let o = 0; o < n * words; o += R * C * words) {
    if (sC === words || R === 1) {
      for (let i = 0, d = o; i < R; i++)
        for (let j = 0, s = base + i * sR; j < C; j++, s += sC) for (let w = 0; w < words; w++) dst[d++] = src[s + w];
    } else {
      for (let i0 = 0; i0 < R; i0 += TILE)
        for (let j0 = 0; j0 < C; j0 += TILE) {
          const i1 = Math.min(R, i0 + TILE);
          const j1 = Math.min(C, j0 + TILE);
          for (let i = i0; i < i1; i++) {
            let s = base + i * sR + j0 * sC;
            let d = o + (i * C + j0) * words;
            if (words === 1) for (let j = j0; j < j1; j++, s += sC) dst[d++] = src[s];
            else for (let j = j0; j < j1; j++, s += sC) ((dst[d++] = src[s]), (dst[d++] = src[s + 1]));
          }
        }
    }
    for (let d = outer - 1; d >= 0; d--) {
      base += t.stride[d] * words;
      if (++idx[d] < t.shape[d]) break;
      base -= t.stride[d] * words * t.shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

function swapBytes(data: Uint8Array, size: number): void {
  for (let i = 0; i < data.length; i += size) data.subarray(i, i + size).reverse();
}

function validate(tensors: Map<string, TorchTensorRef>, bytes: Map<string, StorageBytes>, fail: (m: string) => never): void {
  for (const [key, s] of storagesOf(tensors)) {
    const b = bytes.get(key);
    if (!b) fail(`storage '${key}' has no data record (missing entry data/${key})`);
    const need = s.numel * dtypeSizes[s.dtype];
    if (b.size !== need) fail(`storage '${key}' declares ${s.numel} x ${s.dtype} = ${need} bytes but its data record holds ${b.size} bytes`);
  }
  for (const [name, t] of tensors) {
    const size = dtypeSizes[t.storage.dtype];
    const bytes = numelOf(t.shape) * size;
    // An expanded (stride 0) view may be far larger than its storage; it must still fit one buffer.
    if (!Number.isSafeInteger(bytes) || bytes > MAX_TENSOR_BYTES)
      fail(`tensor '${name}': shape [${t.shape}] of ${t.storage.dtype} would need ${bytes} bytes, over the ${MAX_TENSOR_BYTES}-byte limit`);
    if (bytes === 0) continue;
    const [, end] = spanOf(t);
    if (!Number.isSafeInteger(end) || end > t.storage.numel * size)
      fail(
        `tensor '${name}': shape [${t.shape}] with strides [${t.stride}] at storage offset ${t.offset} reaches element ${end / size - 1}, ` +
          `but storage '${t.storage.key}' holds ${t.storage.numel} elements`,
      );
  }
}

function storagesOf(tensors: Map<string, TorchTensorRef>): Map<string, TorchStorage> {
  const out = new Map<string, TorchStorage>();
  for (const t of tensors.values()) out.set(t.storage.key, t.storage);
  return out;
}

type Parts = { tensors: Map<string, TorchTensorRef>; skipped: string[]; bytes: Map<string, StorageBytes>; bigEndian: boolean; close: () => void };

function openZip(file: string, fail: (m: string) => never): Parts {
  const zip = ZipReader.open(file);
  try {
    const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n) || n === 'data.pkl');
    if (pkls.length === 0)
      fail(
        zip.entries.has('constants.pkl') || [...zip.entries.keys()].some((n) => n.endsWith('/constants.pkl'))
          ? 'a TorchScript archive, not a torch.save checkpoint'
          : 'zip archive without data.pkl: not a torch.save checkpoint',
      );
    if (pkls.length > 1) fail(`zip archive holds ${pkls.length} data.pkl entries (${pkls.join(', ')})`);
    const prefix = pkls[0].slice(0, -'data.pkl'.length);
    const pklEntry = zip.entry(pkls[0]);
    if (pklEntry.size > MAX_PICKLE_BYTES) fail(`data.pkl is ${pklEntry.size} bytes, over the ${MAX_PICKLE_BYTES}-byte limit`);
    let bigEndian = false;
    const bo = zip.entries.get(prefix + 'byteorder');
    if (bo) {
      const s = Buffer.from(zip.readAll(bo)).toString('latin1').trim();
      if (s !== 'little' && s !== 'big') fail(`byteorder record says ${JSON.stringify(s)}`);
      bigEndian = s === 'big';
    }
    const hooks = stateDictHooks(fail);
    const { value } = unpickle(zip.readAll(pklEntry), hooks, `${file}: ${pkls[0]}`);
    const { tensors, skipped } = flattenStateDict(value, fail);
    const bytes = new Map<string, StorageBytes>();
    for (const key of hooks.storages.keys()) {
      const e = zip.entries.get(`${prefix}data/${key}`);
      if (e) bytes.set(key, { size: e.size, read: (start, length) => zip.readRange(e, start, length) });
    }
    return { tensors, skipped, bytes, bigEndian, close: () => zip.close() };
  } catch (e) {
    zip.close();
    throw e;
  }
}

function openLegacy(file: string, fail: (m: string) => never): Parts {
  const fd = fs.openSync(file, 'r');
  try {
    const fileSize = fs.fstatSync(fd).size;
    // The pickles are small next to the storages after them; read a growing prefix until they parse.
    let head = new Uint8Array(0);
    let values: unknown[] = [];
    let end = 0;
    let hooks = stateDictHooks(fail, { legacy: true });
    for (let want = Math.min(fileSize, 1 << 16); ; want = Math.min(fileSize, want * 4)) {
      head = new Uint8Array(want);
      fs.readSync(fd, head, 0, want, 0);
      hooks = stateDictHooks(fail, { legacy: true });
      const plain: PickleHooks = { findGlobal: (m, n) => hooks.findGlobal(m, n) };
      try {
        values = [];
        end = 0;
        for (let i = 0; i < 5; i++) {
          const r = unpickle(head, i === 3 ? hooks : plain, `${file}: pickle ${i + 1} of 5`, end);
          values.push(r.value);
          end = r.end;
        }
        break;
      } catch (e) {
        if (want >= fileSize || want >= MAX_PICKLE_BYTES || !/truncated pickle/.test((e as Error).message)) throw e;
      }
    }
    const [magic, protocol, sysInfo, root, keys] = values;
    if (magic !== LEGACY_MAGIC) fail('legacy pickle without the torch.save magic number: not a PyTorch checkpoint');
    if (protocol !== LEGACY_PROTOCOL) fail(`legacy protocol version ${String(protocol)} is not supported (expected ${LEGACY_PROTOCOL})`);
    const littleEndian = sysInfo instanceof Map ? sysInfo.get('little_endian') !== false : true;
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) fail('the storage key list is not a list of strings');
    const { tensors, skipped } = flattenStateDict(root, fail);
    // Storage records follow in key order: an 8-byte element count, then the elements.
    const bytes = new Map<string, StorageBytes>();
    let pos = end;
    for (const key of keys as string[]) {
      const st = hooks.storages.get(key);
      if (!st) fail(`storage '${key}' is listed but no tensor uses it`);
      if (pos + 8 > fileSize) fail(`file ends before the record of storage '${key}' (truncated)`);
      const n8 = Buffer.alloc(8);
      fs.readSync(fd, n8, 0, 8, pos);
      const count = Number(littleEndian ? n8.readBigUInt64LE(0) : n8.readBigUInt64BE(0));
      const size = count * dtypeSizes[st.dtype];
      const at = pos + 8;
      if (!Number.isSafeInteger(size) || at + size > fileSize)
        fail(`storage '${key}' record of ${count} elements runs past the end of the file (truncated or lying size)`);
      bytes.set(key, {
        size,
        read: (start, length) => {
          const out = new Uint8Array(length);
          if (fs.readSync(fd, out, 0, length, at + start) !== length) fail(`short read in storage '${key}'`);
          return out;
        },
      });
      pos = at + size;
    }
    return { tensors, skipped, bytes, bigEndian: !littleEndian, close: () => fs.closeSync(fd) };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
