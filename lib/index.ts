// index.ts — the public API: tensors, ops, autograd and memory management.
export { Tensor } from './core/tensor';
export type { Shape, NestedArray, TensorOrScalar } from './core/tensor';
export type { DType, Device } from './core/dtype';
export { noGrad, enableGrad, isGradEnabled } from './core/autograd';
export { tidy, keep, memory, emptyCache } from './core/memory';
export type { MemoryInfo, DeviceMemory } from './core/memory';
export * from './ops';
export * as cuda from './cuda';
