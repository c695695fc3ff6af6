// pytorch_pickle.ts — what a PyTorch state-dict pickle may ask for, and how its answer becomes a flat list of
// tensor records (storage key, dtype, offset, shape, strides). The file formats around it are pytorch.ts.
//
// The allow-list follows torch.load(weights_only=True) restricted to what a state dict needs:
//   torch._utils._rebuild_tensor_v2 / _rebuild_tensor       a tensor: (storage, offset, size, stride, ...)
//   torch._utils._rebuild_parameter(_with_state)            an nn.Parameter around such a tensor
//   torch._tensor._rebuild_from_type_v2                      a Tensor / Parameter rebuilt through one of the above
//   torch.<Dtype>Storage (in persistent ids)                 every storage with a safetensors dtype
//   torch.Size, torch.Tensor, torch.nn.parameter.Parameter   shapes and the two tensor types
//   collections.OrderedDict, builtins set / frozenset, _codecs.encode (protocol 2's bytes)
// Anything else — os.system, builtins.eval, torch.load itself — is refused when the pickle names it, with
// an error naming the global; nothing is imported or run, ever: the "globals" are JS stand-ins.
import { PyCallable, describe, type PickleHooks } from './pickle';
import type { SafetensorsDtype } from './safetensors_format';

/** torch storage class name -> element dtype. */
export const STORAGE_DTYPES: Readonly<Record<string, SafetensorsDtype>> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** One storage of the checkpoint: the bytes of `data/<key>` (zip) or of the legacy file's record `key`. */
export interface TorchStorage {
  key: string;
  dtype: SafetensorsDtype;
  /** Element count the pickle declares. */
  numel: number;
}

/** One tensor: a strided view of a storage (the storage may be shared by several tensors). */
export interface TorchTensorRef {
  storage: TorchStorage;
  /** Offset into the storage, in elements. */
  offset: number;
  shape: number[];
  /** Strides in elements (>= 0, as torch writes them). */
  stride: number[];
}

class StorageType {
  constructor(
    readonly name: string,
    readonly dtype: SafetensorsDtype,
  ) {}
}
class TensorType {
  constructor(readonly name: string) {}
}

export const MAX_DICT_DEPTH = 32;
const MAX_DIMS = 64;

/** The hooks for one pickle; `fail` throws an error that names the file. */
export function stateDictHooks(fail: (msg: string) => never, opts: { legacy?: boolean } = {}): PickleHooks & { storages: Map<string, TorchStorage> } {
  const storages = new Map<string, TorchStorage>();
  const int = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${what} is ${describe(v)}, not an integer >= 0`);
    return v as number;
  };
  const ints = (v: unknown, what: string): number[] => {
    if (!Array.isArray(v) || v.length > MAX_DIMS) fail(`${what} is ${describe(v)}, not a tuple of at most ${MAX_DIMS} integers`);
    return (v as unknown[]).map((x, i) => int(x, `${what}[${i}]`));
  };
  const tensor = (args: unknown[], fn: string): TorchTensorRef => {
    const [storage, offset, size, stride] = args;
    if (args.length < 4) fail(`${fn} called with ${args.length} arguments`);
    if (!storage || typeof storage !== 'object' || !('key' in storage)) fail(`${fn}: the storage argument is ${describe(storage)}`);
    const shape = ints(size, `${fn} size`);
    const strides = ints(stride, `${fn} stride`);
    if (shape.length !== strides.length) fail(`${fn}: size [${shape}] and stride [${strides}] differ in length`);
    return { storage: storage as TorchStorage, offset: int(offset, `${fn} storage offset`), shape, stride: strides };
  };
  const isTensor = (v: unknown): v is TorchTensorRef => typeof v === 'object' && v !== null && 'storage' in v && 'stride' in v;
  const parameter = (fn: string) =>
    new PyCallable(fn, (args) => {
      if (!isTensor(args[0])) fail(`${fn}: the data argument is ${describe(args[0])}, not a tensor`);
      return args[0];
    });

  const allowed: Record<string, unknown> = {
    'torch._utils._rebuild_tensor_v2': new PyCallable('torch._utils._rebuild_tensor_v2', (a) => tensor(a, '_rebuild_tensor_v2')),
    'torch._utils._rebuild_tensor': new PyCallable('torch._utils._rebuild_tensor', (a) => tensor(a, '_rebuild_tensor')),
    'torch._utils._rebuild_parameter': parameter('torch._utils._rebuild_parameter'),
    'torch._utils._rebuild_parameter_with_state': parameter('torch._utils._rebuild_parameter_with_state'),
    'torch._tensor._rebuild_from_type_v2': new PyCallable('torch._tensor._rebuild_from_type_v2', ([func, type, args]) => {
      if (!(func instanceof PyCallable) || !(type instanceof TensorType) || !Array.isArray(args))
        fail(`_rebuild_from_type_v2(${describe(func)}, ${describe(type)}, ...) is not a tensor rebuild`);
      return (func as PyCallable).call(args as unknown[]);
    }),
    'torch.Tensor': new TensorType('torch.Tensor'),
    'torch.nn.parameter.Parameter': new TensorType('torch.nn.parameter.Parameter'),
    'torch.Size': new PyCallable('torch.Size', ([v]) => ints(v ?? [], 'torch.Size')),
    'collections.OrderedDict': new PyCallable('collections.OrderedDict', ([items]) => {
      const d = new Map<unknown, unknown>();
      if (items === undefined) return d;
      if (!Array.isArray(items)) fail(`OrderedDict(${describe(items)}) is not supported`);
      for (const kv of items as unknown[]) {
        if (!Array.isArray(kv) || kv.length !== 2) fail(`OrderedDict item ${describe(kv)} is not a pair`);
        d.set(kv[0], kv[1]);
      }
      return d;
    }),
    'builtins.set': new PyCallable('builtins.set', ([v]) => new Set(Array.isArray(v) ? v : [])),
    'builtins.frozenset': new PyCallable('builtins.frozenset', ([v]) => new Set(Array.isArray(v) ? v : [])),
    '_codecs.encode': new PyCallable('_codecs.encode', ([s, enc]) => {
      if (typeof s !== 'string' || (enc !== 'latin1' && enc !== 'latin-1')) fail(`_codecs.encode(${describe(s)}, ${describe(enc)}) is not supported`);
      return new Uint8Array(Buffer.from(s as string, 'latin1'));
    }),
  };
  for (const [cls, dtype] of Object.entries(STORAGE_DTYPES)) allowed[`torch.${cls}`] = new StorageType(`torch.${cls}`, dtype);

  return {
    storages,
    findGlobal(module, name) {
      // Python 3 writes protocol-2 pickles with Python 2's module names.
      const full = `${module === '__builtin__' ? 'builtins' : module}.${name}`;
      if (Object.prototype.hasOwnProperty.call(allowed, full)) return allowed[full];
      if (/^torch\.[A-Za-z0-9]*Storage$/.test(full))
        fail(`global '${full}' is a storage type with no safetensors dtype (complex, quantized or float8 tensors are not supported)`);
      fail(
        `global '${full}' is not allowed: a state dict needs only tensors, storages and OrderedDict (weights_only semantics; nothing was executed)`,
      );
    },
    persistentLoad(pid) {
      // zip: ('storage', type, key, location, numel); legacy adds view_metadata (None unless a pre-1.0 view).
      if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) fail(`persistent id ${describe(pid)} is not a storage reference`);
      const [, type, key, , numel, view] = pid as unknown[];
      if (!(type instanceof StorageType)) fail(`persistent id names storage type ${describe(type)}`);
      if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(key)) fail(`storage key ${describe(key)} is not a plain name`);
      if (opts.legacy && view !== null && view !== undefined) fail(`storage '${key}' is a pre-1.0 storage view, which is not supported`);
      const n = int(numel, `storage '${key}' size`);
      const st = type as StorageType;
      const prev = storages.get(key as string);
      if (prev) {
        if (prev.dtype !== st.dtype || prev.numel !== n)
          fail(`storage '${key}' is declared twice, as ${prev.numel} x ${prev.dtype} and ${n} x ${st.dtype}`);
        return prev;
      }
      const s: TorchStorage = { key: key as string, dtype: st.dtype, numel: n };
      storages.set(key as string, s);
      return s;
    },
    build(obj, state) {
      // Module.state_dict() sets `_metadata` on its OrderedDict; _rebuild_parameter_with_state handles its own.
      if (obj instanceof Map || isTensor(obj)) return obj;
      fail(`BUILD (set the state of) a ${describe(obj)} with ${describe(state)} is not supported`);
    },
  };
}

/**
 * The tensors of an unpickled state dict, by name. Nested dicts ({"model": {...}}) are flattened with
 * dotted names up to MAX_DICT_DEPTH levels; entries that are not tensors (an epoch counter, a list) are
 * returned in `skipped`.
 */
export function flattenStateDict(root: unknown, fail: (msg: string) => never): { tensors: Map<string, TorchTensorRef>; skipped: string[] } {
  if (!(root instanceof Map)) fail(`holds a ${describe(root)}, not a state dict (a dict of tensors)`);
  const tensors = new Map<string, TorchTensorRef>();
  const skipped: string[] = [];
  const walk = (d: Map<unknown, unknown>, prefix: string, depth: number): void => {
    if (depth > MAX_DICT_DEPTH) fail(`dicts nest deeper than ${MAX_DICT_DEPTH} levels at '${prefix}' (a recursion bomb?)`);
    for (const [k, v] of d) {
      if (typeof k !== 'string' && typeof k !== 'number') fail(`state dict key ${describe(k)} is not a string`);
      const name = prefix + String(k);
      if (v instanceof Map) walk(v, name + '.', depth + 1);
      else if (typeof v === 'object' && v !== null && 'storage' in v && 'stride' in v) {
        if (tensors.has(name)) fail(`tensor name '${name}' appears twice`);
        tensors.set(name, v as TorchTensorRef);
      } else skipped.push(name);
    }
  };
  walk(root as Map<unknown, unknown>, '', 0);
  return { tensors, skipped };
}
