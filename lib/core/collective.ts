// collective.ts — how the distributed layer (lib/dist) reaches the addon's collective entry points
// (cpp/dist_api.h: MPI in dist_mpi.cc, NCCL in dist_nccl.cc). Like dispatch.ts's kernel(), it passes
// tensors as checked views; unlike a kernel, an entry point returns a number (a size, a rank, a work id).
import { native, KernelArg } from '../native';
import { Tensor } from './tensor';
import type { Arg } from './dispatch';

export type DistEntry =
  | 'mpi_init'
  | 'mpi_rank'
  | 'mpi_all_reduce'
  | 'mpi_reduce_scatter'
  | 'mpi_all_gather'
  | 'mpi_broadcast'
  | 'mpi_barrier'
  | 'mpi_finalize'
  | 'mpi_abort'
  | 'dist_wait'
  | 'dist_done'
  | 'nccl_unique_id'
  | 'nccl_init'
  | 'nccl_all_reduce'
  | 'nccl_reduce_scatter'
  | 'nccl_all_gather'
  | 'nccl_broadcast'
  | 'nccl_wait'
  | 'nccl_destroy';

/** Call a collective entry point of the addon. */
export function distCall(name: DistEntry, args: Arg[]): number {
  const wire: KernelArg[] = args.map((a) => (a instanceof Tensor ? a.v(name) : a));
  return native.dist(name, wire);
}
