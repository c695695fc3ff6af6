// state_dict.ts — one entry point for checkpoints in either format: safetensors (safetensors.ts) or PyTorch
// pickles (pytorch.ts), a single file or a sharded directory. Callers get a TensorSource and stay
// format-agnostic.
//
// Decisions:
// - The format of a file is read from its first bytes, not its name: HF repos hold `.bin` zips, people
//   rename `.pt` to `.pth`, and a safetensors file starts with its 8-byte header length instead.
// - A directory is searched by the standard names first, safetensors before PyTorch as transformers does:
//   model.safetensors.index.json, model.safetensors, pytorch_model.bin.index.json, pytorch_model.bin; then
//   any *.safetensors, then any *.bin (training_args / optimizer / scheduler / rng_state files excepted). So
//   a repo that ships both formats loads its safetensors, and one with the reference's .bin shards loads
//   those even if a stray *.safetensors file sits next to them.
// - A sharded index (either kind) is checked as the safetensors one is: shards are plain files of the
//   directory, each listed tensor is in its shard, no tensor is in two shards.
import * as fs from 'fs';
import * as path from 'path';
import { PytorchFile, sniffTorchFormat } from './pytorch';
import { SafetensorsFile } from './safetensors';
import type { RawTensor, TensorInfo, TensorSource } from './safetensors_format';

export type CheckpointFormat = 'safetensors' | 'pytorch';

/** A TensorSource that also says where it came from. */
export interface StateDict extends TensorSource {
  readonly format: CheckpointFormat;
  /** The files it reads, in shard order. */
  readonly files: string[];
  /** The index's "metadata" (e.g. total_size) or the single safetensors file's __metadata__. */
  readonly metadata: Record<string, unknown>;
  /** The file that holds a tensor. */
  fileOf(name: string): string;
}

const BIN_EXT = /\.(bin|pt|pth|ckpt)$/;

/** 'pytorch' or 'safetensors' by content (a zip or pickle is PyTorch; anything else is tried as safetensors). */
export function checkpointFormat(file: string): CheckpointFormat {
  return sniffTorchFormat(file) === null ? 'safetensors' : 'pytorch';
}

function openFile(file: string): SafetensorsFile | PytorchFile {
  if (!fs.existsSync(file)) throw new Error(`checkpoint: ${file} not found`);
  return checkpointFormat(file) === 'pytorch' ? PytorchFile.open(file) : SafetensorsFile.open(file);
}

/** Several files (or one) seen as one state dict. */
class MultiFile implements StateDict {
  readonly format: CheckpointFormat;
  readonly files: string[];
  readonly metadata: Record<string, unknown>;
  private readonly owner: Map<string, TensorSource>;
  private readonly opened: (SafetensorsFile | PytorchFile)[];

  constructor(
    format: CheckpointFormat,
    opened: (SafetensorsFile | PytorchFile)[],
    owner: Map<string, TensorSource>,
    metadata: Record<string, unknown>,
  ) {
    this.format = format;
    this.opened = opened;
    this.files = opened.map((f) => f.path);
    this.owner = owner;
    this.metadata = metadata;
  }
  names(): string[] {
    return [...this.owner.keys()];
  }
  has(name: string): boolean {
    return this.owner.has(name);
  }
  fileOf(name: string): string {
    return (this.get(name) as SafetensorsFile | PytorchFile).path;
  }
  info(name: string): TensorInfo {
    return this.get(name).info(name);
  }
  read(name: string): RawTensor {
    return this.get(name).read(name);
  }
  readAsFloat32(name: string): Float32Array {
    return this.get(name).readAsFloat32(name);
  }
  close(): void {
    for (const f of this.opened) f.close();
  }
  private get(name: string): TensorSource {
    const f = this.owner.get(name);
    if (!f) throw new Error(`checkpoint: no tensor named '${name}' in ${this.files.join(', ')}`);
    return f;
  }
}

/** Opens files as one state dict; a tensor in two of them is an error. */
function openMany(paths: string[], metadata: Record<string, unknown> = {}): StateDict {
  const opened: (SafetensorsFile | PytorchFile)[] = [];
  try {
    for (const p of paths) opened.push(openFile(p));
    const owner = new Map<string, TensorSource>();
    for (const f of opened)
      for (const n of f.names()) {
        const prev = owner.get(n) as SafetensorsFile | PytorchFile | undefined;
        if (prev) throw new Error(`checkpoint: tensor '${n}' is duplicated in ${prev.path} and ${f.path}`);
        owner.set(n, f);
      }
    const kinds = new Set(opened.map((f) => (f instanceof PytorchFile ? 'pytorch' : 'safetensors')));
    if (kinds.size > 1) throw new Error(`checkpoint: ${paths.join(', ')} mix safetensors and PyTorch files`);
    const meta = opened.length === 1 && opened[0] instanceof SafetensorsFile ? { ...opened[0].metadata } : metadata;
    return new MultiFile([...kinds][0] as CheckpointFormat, opened, owner, meta);
  } catch (e) {
    for (const f of opened) f.close();
    throw e;
  }
}

/** A sharded checkpoint's index (`weight_map`: tensor name -> shard file of the directory), either format. */
function openIndex(dir: string, indexPath: string): StateDict {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new Error(`checkpoint: ${indexPath}: cannot parse (${(e as Error).message})`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap))
    throw new Error(`checkpoint: ${indexPath}: no "weight_map" object`);
  const entries = Object.entries(weightMap as Record<string, unknown>);
  const shards = new Set<string>();
  for (const [name, shard] of entries) {
    if (typeof shard !== 'string' || shard === '' || shard !== path.basename(shard) || shard === '..')
      throw new Error(`checkpoint: ${indexPath}: tensor '${name}' maps to invalid shard file ${JSON.stringify(shard)}`);
    shards.add(shard);
  }
  const paths = [...shards].sort().map((s) => path.join(dir, s));
  for (const p of paths) if (!fs.existsSync(p)) throw new Error(`checkpoint: ${indexPath}: missing shard ${p}`);
  const meta = (index as { metadata?: unknown }).metadata;
  const sd = openMany(paths, typeof meta === 'object' && meta !== null ? { ...meta } : {});
  for (const [name, shard] of entries) {
    if (!sd.has(name) || path.basename(sd.fileOf(name)) !== shard) {
      sd.close();
      throw new Error(`checkpoint: ${indexPath}: tensor '${name}' is listed for shard ${shard as string} but that file does not contain it`);
    }
  }
  return sd;
}

/**
 * Opens a checkpoint: a single file in either format, or a directory (sharded or not) in either format.
 * Tensors are read on demand; close() releases the files.
 */
export function openStateDict(p: string): StateDict {
  if (!fs.existsSync(p)) throw new Error(`checkpoint: ${p} does not exist`);
  if (fs.statSync(p).isFile()) return openMany([p]);
  const has = (f: string): boolean => fs.existsSync(path.join(p, f));
  const list = (re: RegExp): string[] =>
    fs
      .readdirSync(p)
      .filter((f) => re.test(f) && fs.statSync(path.join(p, f)).isFile())
      .sort()
      .map((f) => path.join(p, f));
  for (const [index, single] of [
    ['model.safetensors.index.json', 'model.safetensors'],
    ['pytorch_model.bin.index.json', 'pytorch_model.bin'],
  ]) {
    if (has(index)) return openIndex(p, path.join(p, index));
    if (has(single)) return openMany([path.join(p, single)]);
  }
  const safetensors = list(/\.safetensors$/);
  if (safetensors.length) return openMany(safetensors);
  const bins = list(BIN_EXT).filter((f) => !/(^|\/)(training_args|optimizer|scheduler|rng_state[^/]*)\.(bin|pt|pth)$/.test(f));
  if (bins.length) return openMany(bins);
  throw new Error(
    `checkpoint: ${p} has no safetensors (model.safetensors[.index.json], *.safetensors) or PyTorch (pytorch_model.bin[.index.json], *.bin) weights`,
  );
}
