// lib/dist — training past one device: process groups and collectives over MPI (CPU tensors) and NCCL
// (CUDA tensors), both opened at run time (README "Training on several GPUs or machines").
export { init, processGroup, defaultTimeout, ProcessGroup, Work } from './process_group';
export type { InitOptions, ReduceOp } from './process_group';
export { readDistEnv, pinLocalGpu } from './env';
export type { DistEnv } from './env';
export { exchangeId } from './rendezvous';
export { ncclCandidates } from './nccl_path';
