// safetensors_format.ts — what the safetensors reader and writer share: the dtype names and sizes,
// the header and tensor record types, and the checks and limits of the format (see safetensors.ts).

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const dtypeSizes: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) in bytes, relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  header: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Absolute file offset of the data section (8 + header length). */
  dataStart: number;
  fileSize: number;
}

export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** The tensor's bytes, little-endian, in a fresh ArrayBuffer (byteOffset 0). */
  data: Uint8Array;
}

export interface TensorToWrite {
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: ArrayBufferView;
}

/** What both a single file and a sharded checkpoint offer. */
export interface TensorSource {
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): RawTensor;
  readAsFloat32(name: string): Float32Array;
  close(): void;
}

export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
export const IO_CHUNK = 1 << 30;
export const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function isSafetensorsDtype(d: unknown): d is SafetensorsDtype {
  return typeof d === 'string' && Object.prototype.hasOwnProperty.call(dtypeSizes, d);
}

/** Element count of a shape (1 for a scalar []). */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function fail(file: string, msg: string): never {
  throw new Error(`safetensors: ${file}: ${msg}`);
}

/** Parses and validates the JSON header; `dataSize` is the byte length of the data section. */
