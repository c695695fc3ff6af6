// runtime.ts — the one check of a `--device` / `--dtype` pair for every command that loads a model
// (train, chat, verify, serve, eval answers): the device must be cpu or cuda, the dtype one the caller
// supports, and a cuda request fails at once, with the reason, when this machine has no usable GPU.
//
// The choice lists are exported for commander's `.choices(...)`. lib/cuda (and with it the native addon)
// is required only inside checkRuntime, so importing this file for the lists keeps `--help` fast.
import type { DType, Device } from '../../core/dtype';

export const DEVICES: readonly Device[] = ['cpu', 'cuda'];
/** Parameter dtypes for inference (chat, verify, serve, eval answers). */
export const INFERENCE_DTYPES: readonly DType[] = ['float32', 'bfloat16', 'float16'];
/** Parameter dtypes for training (bfloat16 keeps float32 master weights in AdamW). */
export const TRAIN_DTYPES = ['float32', 'bfloat16'] as const satisfies readonly DType[];

export interface RuntimeCheck<D extends DType> {
  /** Dtypes the caller accepts (default INFERENCE_DTYPES). */
  dtypes?: readonly D[];
  /** Error prefix: `[area] ...` (default 'runtime'). */
  area?: string;
}

/** Validates a device / dtype pair (undefined: cpu / float32); `--device cuda` without CUDA is an error. */
export function checkRuntime<D extends DType = DType>(
  device: string | undefined,
  dtype: string | undefined,
  o: RuntimeCheck<D> = {},
): { device: Device; dtype: D } {
  const area = o.area ?? 'runtime';
  const dtypes = (o.dtypes ?? INFERENCE_DTYPES) as readonly string[];
  const dev = device ?? 'cpu';
  if (!(DEVICES as readonly string[]).includes(dev)) throw new Error(`[${area}] unknown device '${dev}' (${DEVICES.join(' or ')})`);
  const dt = dtype ?? 'float32';
  if (!dtypes.includes(dt)) throw new Error(`[${area}] unsupported dtype '${dt}' (${dtypes.join(', ')})`);
  if (dev === 'cuda') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const cuda = require('../../cuda') as typeof import('../../cuda');
    if (!cuda.isAvailable())
      throw new Error(`[${area}] --device cuda: CUDA is not available (${cuda.describe().replace(/^CUDA (is )?not available:\s*/i, '')})`);
  }
  return { device: dev as Device, dtype: dt as D };
}
