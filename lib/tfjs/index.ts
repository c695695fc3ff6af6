// index.ts — `llava-node/tfjs`: importing it registers the TensorFlow.js backends.
//
//   require('llava-node/tfjs'); await tf.setBackend('llava');
//
// `llava` keeps tensors in the engine's CPU storage; `llava-cuda` (registered only when the addon
// has CUDA and a GPU is present) keeps them in device memory. Each registers a kernel for every
// kernel tfjs-backend-cpu registers: our native kernel where one exists (kernels_*.ts), otherwise
// tfjs-backend-cpu's implementation running over our storage (see README "Use as a TensorFlow.js
// backend" for the list). Neither backend takes priority over tfjs's own: users opt in.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { LlavaBackend } from './backend';
import { NATIVE_KERNELS } from './kernels';
import { isAvailable as cudaAvailable } from '../cuda';

export { LlavaBackend } from './backend';

/** Backend names this module registers. */
export const BACKEND_NAME = 'llava';
export const CUDA_BACKEND_NAME = 'llava-cuda';

/** Names of the kernels that run natively on `llava` (the rest reuse tfjs-backend-cpu's code). */
export const nativeKernelNames: string[] = Object.keys(NATIVE_KERNELS).sort();

function registerKernels(backendName: string): void {
  for (const cfg of tf.getKernelsForBackend('cpu')) {
    if (tf.getKernel(cfg.kernelName, backendName)) continue;
    const own = NATIVE_KERNELS[cfg.kernelName];
    const fallback = cfg.kernelFunc;
    const name = cfg.kernelName;
    // Native kernels fail with "[kernel] reason" (cpp/KERNELS.md); say which tfjs kernel called them.
    // tfjs-backend-cpu's own errors pass through unchanged (tfjs-core's specs match their text).
    const fn: tf.KernelFunc = own
      ? (args) => {
          try {
            return own(args, fallback);
          } catch (e) {
            const msg = (e as Error).message ?? String(e);
            if (msg.startsWith('[')) throw new Error(`[llava] ${name}: ${msg}`);
            throw e;
          }
        }
      : fallback;
    tf.registerKernel({
      kernelName: cfg.kernelName,
      backendName,
      kernelFunc: (args) => (args.backend as LlavaBackend).runKernel(() => fn(args)),
      setupFunc: cfg.setupFunc,
      disposeFunc: cfg.disposeFunc,
    });
  }
}

if (!tf.findBackendFactory(BACKEND_NAME)) {
  tf.registerBackend(BACKEND_NAME, () => new LlavaBackend('cpu'), 0);
  registerKernels(BACKEND_NAME);
  if (cudaAvailable()) {
    tf.registerBackend(CUDA_BACKEND_NAME, () => new LlavaBackend('cuda'), 0);
    registerKernels(CUDA_BACKEND_NAME);
  }
}
