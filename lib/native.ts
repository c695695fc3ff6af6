// native.ts — the only file that loads the addon. It speaks storage handles and kernel names (see
// cpp/KERNELS.md for each kernel's argument list); only the engine core imports it (lib/core:
// memory.ts allocates, tensor.ts reads back, dispatch.ts runs kernels and writes bytes, kernels.ts
// lists the registered names, dtype.ts asks about devices) and lib/cuda.ts. Everything above them
// speaks Tensor.
import * as path from 'path';
import * as fs from 'fs';

/**
 * An opaque handle to native memory: a number naming a slot and its generation in the addon's
 * storage table (cpp/binding.cc). The addon refuses a handle that is not live, so a stale or made-up
 * number is an error, never an access to freed memory.
 */
export type StorageHandle = number & { readonly __storage: unique symbol };

/** The wire form of a tensor view passed to kernels. */
export interface NativeView {
  s: StorageHandle;
  d: number;
  sh: number[];
  st: number[];
  o: number;
}
export type KernelArg = NativeView | number | boolean | string | number[] | null | undefined;

interface Addon {
  alloc(device: number, nbytes: number): StorageHandle;
  free(s: StorageHandle): void;
  write(s: StorageHandle, byteOffset: number, data: ArrayBufferView): void;
  read(s: StorageHandle, byteOffset: number, nbytes: number): ArrayBuffer;
  copyBytes(dst: StorageHandle, dstOff: number, src: StorageHandle, srcOff: number, n: number): void;
  /** The bytes of a CPU storage as an ArrayBuffer that does not own them (no copy). */
  hostView(s: StorageHandle): ArrayBuffer;
  run(kernel: string, args: KernelArg[]): void;
  /** Collective communication (cpp/dist_api.h): returns a rank, a size or a work id. */
  dist(entry: string, args: KernelArg[]): number;
  deviceInfo(device: number): { compiled: boolean; available: boolean; description: string };
  memoryStats(device: number): {
    liveStorages: number;
    bytes: number;
    bytesInUse?: number;
    bytesCached?: number;
    deviceMallocs?: number;
    peakBytes?: number;
  };
  synchronize(device: number): void;
  emptyCache(device: number): void;
  kernels(device: number): string[];
  numThreads(): number;
  /**
   * The CPU kernels' instruction set. A cap ('portable', 'avx2', 'avx512', 'avx512bf16', 'amx') and the AMX
   * emulation (LLAVA_CPU_AMX_EMULATE: the AMX tile in software where the CPU has AVX512-BF16 but no AMX) are
   * applied first when given.
   */
  cpuIsa(cap?: string, amxEmulation?: boolean): { active: string; detected: string; avx512bf16: boolean; amxEmulated: boolean };
  /** The CPU pool's block time (µs idle workers spin before sleeping; LLAVA_CPU_SPIN_US), set first when given. */
  cpuSpinUs(us?: number): number;
  /**
   * The CUDA bf16 GEMM's block tile ('auto', or BMxBNxBK with '-pf' for fragment prefetch; cpp/kernel_api.h), set
   * first when given, and every tile name. A benchmark knob.
   */
  cudaGemmTile(tile?: string): { active: string; tiles: string[] };
  /** The kernel profiler (cpp/profiler.h): true starts a recording, false stops it and returns what it timed. */
  profile(start: true): undefined;
  profile(start: false): { kernels: { key: string; device: string; calls: number; totalMs: number; maxMs: number }[]; dropped: number };
}

function load(): { addon: Addon; file: string } {
  const root = path.resolve(__dirname, '..', fs.existsSync(path.resolve(__dirname, '..', 'binding.gyp')) ? '' : '..');
  const candidates = [
    process.env.LLAVA_NATIVE,
    path.join(root, 'build', 'Release', 'llava_native.node'),
    path.join(root, 'build', 'Debug', 'llava_native.node'),
  ].filter((p): p is string => !!p);
  for (const p of candidates) {
    if (fs.existsSync(p)) return { addon: require(p) as Addon, file: p };
  }
  throw new Error(`native addon not found (looked in ${candidates.join(', ')}); run \`npm run build:native\``);
}

const loaded = load();
export const native: Addon = loaded.addon;
/** The file `native` was loaded from: LLAVA_NATIVE when set, else the build folder's addon. */
export const nativeFile: string = loaded.file;
