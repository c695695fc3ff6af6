// convert.ts — writes the safetensors equivalent of a checkpoint (`llava convert`): a PyTorch .bin file
// becomes one .safetensors file; a model folder becomes a folder with the same side files (config,
// tokenizer, preprocessor, ...) and the weights as `model.safetensors`, or, when the input is sharded, one
// `model-0000i-of-0000n.safetensors` per input shard plus `model.safetensors.index.json`.
//
// Decisions:
// - Shard by shard: the tensors of one input shard are read (each one lazily from its file), written,
//   and dropped before the next shard, so peak memory is one shard, as transformers' own conversion.
// - Names, dtypes, shapes and bytes are kept exactly (views are written contiguous, big-endian files
//   little-endian); metadata {"format": "pt"} as transformers writes it.
// - The output must not exist (no silent overwrite of a model folder) and is removed again if the
//   conversion fails; the input's files are untouched.
import * as fs from 'fs';
import * as path from 'path';
import { openStateDict, type StateDict } from './state_dict';
import { writeSafetensors } from './safetensors';
import type { TensorToWrite } from './safetensors_format';
import { checkOptions, optionKeys } from '../options';

export interface ConvertOptions {
  /** Called after each tensor is read: (done, total, name). */
  onProgress?: (done: number, total: number, name: string) => void;
  /** Called after each output file is written. */
  onFile?: (file: string) => void;
}

const CONVERT_KEYS = optionKeys<ConvertOptions>({ onProgress: true, onFile: true });

export interface ConvertResult {
  files: string[];
  tensors: number;
  bytes: number;
}

const WEIGHT_FILE = /\.(bin|pt|pth|ckpt|safetensors)$|^(pytorch_model\.bin|model\.safetensors)\.index\.json$/;

function writeShard(sd: StateDict, names: string[], out: string, state: { done: number; total: number; bytes: number }, opts: ConvertOptions): void {
  const tensors = new Map<string, TensorToWrite>();
  for (const n of names) {
    const t = sd.read(n);
    tensors.set(n, t);
    state.bytes += t.data.byteLength;
    opts.onProgress?.(++state.done, state.total, n);
  }
  writeSafetensors(out, tensors, { format: 'pt' });
  opts.onFile?.(out);
}

/** Converts `input` (file or model folder, either format) to safetensors at `output` (a new file or folder). */
export function convertToSafetensors(input: string, output: string, opts: ConvertOptions = {}): ConvertResult {
  checkOptions('convert', opts, CONVERT_KEYS);
  if (!fs.existsSync(input)) throw new Error(`convert: ${input} does not exist`);
  if (fs.existsSync(output)) throw new Error(`convert: ${output} already exists (choose a new path)`);
  const sd = openStateDict(input);
  const state = { done: 0, total: sd.names().length, bytes: 0 };
  const files: string[] = [];
  const onFile = (f: string): void => {
    files.push(f);
    opts.onFile?.(f);
  };
  try {
    if (fs.statSync(input).isFile()) {
      fs.mkdirSync(path.dirname(path.resolve(output)), { recursive: true });
      writeShard(sd, sd.names(), output, state, { ...opts, onFile });
      return { files, tensors: state.total, bytes: state.bytes };
    }
    fs.mkdirSync(output, { recursive: true });
    for (const f of fs.readdirSync(input)) {
      const src = path.join(input, f);
      if (!WEIGHT_FILE.test(f) && fs.statSync(src).isFile()) fs.copyFileSync(src, path.join(output, f));
    }
    const byFile = new Map<string, string[]>();
    for (const n of sd.names()) {
      const f = sd.fileOf(n);
      byFile.set(f, [...(byFile.get(f) ?? []), n]);
    }
    const shards = sd.files.filter((f) => byFile.has(f));
    if (shards.length <= 1) {
      writeShard(sd, sd.names(), path.join(output, 'model.safetensors'), state, { ...opts, onFile });
      return { files, tensors: state.total, bytes: state.bytes };
    }
    const weightMap: Record<string, string> = {};
    shards.forEach((f, i) => {
      const name = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
      const names = byFile.get(f)!;
      writeShard(sd, names, path.join(output, name), state, { ...opts, onFile });
      for (const n of names) weightMap[n] = name;
    });
    const index = { metadata: { total_size: state.bytes }, weight_map: weightMap };
    const indexFile = path.join(output, 'model.safetensors.index.json');
    fs.writeFileSync(indexFile, JSON.stringify(index, null, 2) + '\n');
    onFile(indexFile);
    return { files, tensors: state.total, bytes: state.bytes };
  } catch (e) {
    // The output did not exist before: remove what was written of it, so no half model is left behind.
    fs.rmSync(output, { recursive: true, force: true });
    throw e;
  } finally {
    sd.close();
  }
}
