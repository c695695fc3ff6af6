// fixture.ts — the tiny LLaVA fixture (test/fixtures/tiny-llava) as the device checks and the bench use
// it: its directory (found from the source tree or from dist/), the reference batch (2 samples x 143
// tokens, 16 image tokens each, labels, pixels) and the reference tensors computed by transformers in
// float64 (stored as float32). See test/models/llava_model.test.ts for the CPU model test over the same data.
import * as fs from 'fs';
import * as path from 'path';
import * as L from '../../lib';
import { SafetensorsFile } from '../../lib/io/safetensors';
import type { LlavaBatch } from '../../lib/models/llava';

/** test/fixtures/tiny-llava, from test/gpu/*.ts or dist/test/gpu/*.js. */
export function fixtureDir(): string {
  const cands = [
    path.resolve(__dirname, '..', 'fixtures', 'tiny-llava'),
    path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'tiny-llava'),
  ];
  for (const c of cands) if (fs.existsSync(path.join(c, 'config.json'))) return c;
  throw new Error(`tiny-llava fixture not found (looked in ${cands.join(', ')})`);
}

/** An int64 tensor of a safetensors file (the fixtures' token ids) as numbers; test/helpers.ts re-exports it. */
export function readInts(ref: SafetensorsFile, name: string): number[] {
  const r = ref.read(name);
  return Array.from(new BigInt64Array(r.data.buffer, r.data.byteOffset, r.data.byteLength / 8), Number);
}

export interface TinyLlavaRef {
  ref: SafetensorsFile;
  refF(name: string): Float32Array;
  ids: number[][];
  mask: number[][];
  labels: number[][];
  pixelShape: number[];
  pixelValues: Float32Array;
  /** The batch with pixels uploaded to `device` (the caller disposes batch.pixelValues). */
  batch(device: L.Device, dtype?: L.DType): LlavaBatch;
}

let cached: TinyLlavaRef | null = null;

export function tinyLlavaRef(): TinyLlavaRef {
  if (cached) return cached;
  const ref = SafetensorsFile.open(path.join(fixtureDir(), 'reference.safetensors'));
  const refF = (n: string): Float32Array => ref.readAsFloat32(n);
  const refI = (n: string): number[] => readInts(ref, n);
  const T = ref.info('input_ids').shape[1];
  const rows = (a: number[]): number[][] => Array.from({ length: a.length / T }, (_, b) => a.slice(b * T, (b + 1) * T));
  const ids = rows(refI('input_ids'));
  const mask = rows(refI('attention_mask'));
  const labels = rows(refI('labels'));
  const pixelShape = ref.info('pixel_values').shape;
  const pixelValues = refF('pixel_values');
  cached = {
    ref,
    refF,
    ids,
    mask,
    labels,
    pixelShape,
    pixelValues,
    batch: (device, dtype = 'float32') => ({
      inputIds: ids,
      attentionMask: mask,
      labels,
      pixelValues: L.keep(L.tensor(pixelValues, { shape: pixelShape, dtype, device })),
    }),
  };
  return cached;
}
