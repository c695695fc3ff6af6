// process_group.ts — `dist.init()` and the ProcessGroup: collectives on tensors across the ranks of a job.
//
// Backends, by the device of the tensor: CPU tensors go through MPI (libmpi opened at run time,
// cpp/dist_mpi.cc), CUDA tensors through NCCL (libnccl opened at run time, cpp/dist_nccl.cc; its unique id
// travels by MPI broadcast under mpirun, else by a TCP rendezvous at MASTER_ADDR:MASTER_PORT). A world of
// one needs neither library: every collective is then the identity, so code written for several ranks
// runs unchanged on one.
//
// Every collective is asynchronous: it returns a Work at once and the transfer runs on the addon's
// communication thread (MPI) or the CUDA stream (NCCL), while JavaScript goes on (for example with the
// backward of the layers below). `work.wait()` blocks until it is done, or throws after the group's
// timeout (default 300 s; LLAVA_DIST_TIMEOUT or init({timeoutS})) naming the collective — what a dead or
// hung peer turns into. The tensors of a collective in flight must not be read or written until its
// wait(); their memory stays allocated until then even if they are disposed (the Work holds the storages).
import { Tensor } from '../core/tensor';
import { checkOptions, optionKeys } from '../options';
import { distCall, type DistEntry } from '../core/collective';
import { zeros } from '../ops/creation';
import { copyInto } from '../ops/elementwise';
import { writeBytes } from '../core/dispatch';
import { readDistEnv, pinLocalGpu, type DistEnv } from './env';
import { exchangeId } from './rendezvous';
import { ncclCandidates } from './nccl_path';

export type ReduceOp = 'sum' | 'avg' | 'max' | 'min';
const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'avg', 'max', 'min'];

export interface InitOptions {
  /** Seconds a collective may take before wait() throws (default LLAVA_DIST_TIMEOUT or 300). */
  timeoutS?: number;
  /** 'cuda' also sets up NCCL (each rank on the GPU of its local rank). Default 'cpu'. */
  device?: 'cpu' | 'cuda';
  /** Path of libmpi (default LLAVA_MPI_LIB, then libmpi.so.40). */
  mpiLib?: string;
  /** Path of libnccl (default LLAVA_NCCL_LIB, then libnccl.so.2, then a Python wheel's). */
  ncclLib?: string;
  /** The environment to read the launcher's variables from (default process.env). */
  env?: NodeJS.ProcessEnv;
}
const INIT_KEYS = optionKeys<InitOptions>({ timeoutS: true, device: true, mpiLib: true, ncclLib: true, env: true });

/** A collective in flight. */
export class Work {
  private finished = false;
  constructor(
    private readonly id: number,
    private readonly backend: 'mpi' | 'nccl' | 'none',
    private tensors: Tensor[],
    private readonly timeoutS: number,
  ) {
    if (backend === 'none') this.finished = true;
    // The storages stay allocated until the transfer is over, even if a tensor is disposed meanwhile.
    for (const t of tensors) t.storage.retain();
  }

  /** The tensors this collective reads or writes (held until wait()). */
  get inFlight(): readonly Tensor[] {
    return this.tensors;
  }

  /** Blocks until the collective is complete; throws its error, or a timeout error. Idempotent. */
  wait(): void {
    if (this.finished) return;
    this.finished = true;
    distCall(this.backend === 'mpi' ? 'dist_wait' : 'nccl_wait', [this.id, this.timeoutS]);
    // Released only once the transfer is known to be over (after a timeout it may still write into them).
    for (const t of this.tensors) t.storage.release();
    this.tensors = [];
  }

  /** Whether wait() would return at once (MPI only; NCCL work reports false until waited on). */
  isDone(): boolean {
    if (this.finished) return true;
    return this.backend === 'mpi' ? distCall('dist_done', [this.id]) === 1 : false;
  }
}

function checkOp(op: ReduceOp): ReduceOp {
  if (!REDUCE_OPS.includes(op)) throw new Error(`[dist] unknown reduction '${String(op)}' (${REDUCE_OPS.join(', ')})`);
  return op;
}

export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  private destroyed = false;

  constructor(
    readonly env: DistEnv,
    readonly timeoutS: number,
    /** MPI is up (CPU collectives possible). */
    readonly mpi: boolean,
    /** NCCL is up (CUDA collectives possible). */
    readonly nccl: boolean,
  ) {
    this.rank = env.rank;
    this.worldSize = env.worldSize;
    this.localRank = env.localRank;
  }

  private backendFor(t: Tensor, what: string): 'mpi' | 'nccl' | 'none' {
    t.assertAlive(`dist.${what}`);
    if (this.destroyed) throw new Error(`[dist.${what}] the process group was destroyed`);
    if (!t.isContiguous()) throw new Error(`[dist.${what}] the tensor must be contiguous`);
    if (this.worldSize === 1) return 'none';
    if (t.device === 'cuda') {
      if (!this.nccl) throw new Error(`[dist.${what}] CUDA tensors need NCCL: call dist.init({ device: 'cuda' })`);
      return 'nccl';
    }
    if (!this.mpi)
      throw new Error(
        `[dist.${what}] CPU tensors need MPI, and this job (launcher ${this.env.launcher}) has no MPI world: launch it with mpirun -np N or llava train --nproc-per-node N`,
      );
    return 'mpi';
  }

  private start(entry: string, backend: 'mpi' | 'nccl' | 'none', args: (Tensor | number | string)[]): Work {
    if (backend === 'none') return new Work(0, 'none', [], this.timeoutS);
    const id = distCall(`${backend}_${entry}` as DistEntry, args);
    return new Work(
      id,
      backend,
      args.filter((a): a is Tensor => a instanceof Tensor),
      this.timeoutS,
    );
  }

  /** In place: t becomes the reduction of every rank's t. */
  allReduce(t: Tensor, op: ReduceOp = 'sum'): Work {
    return this.start('all_reduce', this.backendFor(t, 'allReduce'), [t, checkOp(op)]);
  }

  /** `input` holds worldSize blocks of out.numel elements; `out` gets the reduction of block `rank`. */
  reduceScatter(out: Tensor, input: Tensor, op: ReduceOp = 'sum'): Work {
    const b = this.backendFor(input, 'reduceScatter');
    if (this.backendFor(out, 'reduceScatter') !== b) throw new Error('[dist.reduceScatter] output and input are on different devices');
    if (input.numel !== out.numel * this.worldSize)
      throw new Error(`[dist.reduceScatter] input has ${input.numel} elements, expected ${this.worldSize} x ${out.numel}`);
    if (b === 'none') {
      if (out !== input) copyInto(out, input);
      return this.start('', 'none', []);
    }
    return this.start('reduce_scatter', b, [out, input, checkOp(op)]);
  }

  /** `out` gets worldSize blocks, block r being rank r's `input` (which may be this rank's block of out). */
  allGather(out: Tensor, input: Tensor): Work {
    const b = this.backendFor(input, 'allGather');
    if (this.backendFor(out, 'allGather') !== b) throw new Error('[dist.allGather] output and input are on different devices');
    if (out.numel !== input.numel * this.worldSize)
      throw new Error(`[dist.allGather] output has ${out.numel} elements, expected ${this.worldSize} x ${input.numel}`);
    if (b === 'none') {
      if (out.storage !== input.storage || out.offset !== input.offset) copyInto(out, input);
      return this.start('', 'none', []);
    }
    return this.start('all_gather', b, [out, input]);
  }

  /** In place: every rank's t becomes rank `root`'s. */
  broadcast(t: Tensor, root = 0): Work {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize)
      throw new Error(`[dist.broadcast] root ${root} is not a rank of a world of ${this.worldSize}`);
    return this.start('broadcast', this.backendFor(t, 'broadcast'), [t, root]);
  }

  /** Completes once every rank has called it. */
  barrier(): Work {
    if (this.destroyed) throw new Error('[dist.barrier] the process group was destroyed');
    if (this.worldSize === 1 || !this.mpi) {
      if (this.worldSize > 1) throw new Error('[dist.barrier] needs MPI (launch with mpirun)');
      return this.start('', 'none', []);
    }
    return this.start('barrier', 'mpi', []);
  }

  /** Ends the group (after the collectives already queued). Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.nccl) distCall('nccl_destroy', []);
    if (this.mpi) distCall('mpi_finalize', [this.timeoutS]);
    if (current === this) current = null;
  }

  /** Prints `message` and ends this process and, through the launcher, every rank of the job. */
  abort(message: string, code = 1): never {
    process.stderr.write(`[dist] rank ${this.rank}: ${message}\n`);
    if (this.mpi) distCall('mpi_abort', [code]);
    process.exit(code);
  }
}

let current: ProcessGroup | null = null;

/** The group init() made, or null. */
export function processGroup(): ProcessGroup | null {
  return current;
}

/** The collective timeout from LLAVA_DIST_TIMEOUT (seconds), or 300. */
export function defaultTimeout(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.LLAVA_DIST_TIMEOUT;
  if (v === undefined || v === '') return 300;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`[dist] LLAVA_DIST_TIMEOUT=${JSON.stringify(v)} must be a positive number of seconds`);
  return n;
}

/**
 * Joins the job this process was launched into (env.ts lists the launchers). Under mpirun MPI is
 * initialised (CPU collectives); with device 'cuda' NCCL too, on the GPU of the local rank
 * (env.ts pinLocalGpu: CUDA_VISIBLE_DEVICES narrowed to it; call that before CUDA is first used). Returns the existing group when called again.
 */
export async function init(o: InitOptions = {}): Promise<ProcessGroup> {
  checkOptions('dist', o, INIT_KEYS);
  if (current) return current;
  const env = readDistEnv(o.env ?? process.env);
  const timeoutS = o.timeoutS ?? defaultTimeout(o.env ?? process.env);
  if (!(timeoutS > 0)) throw new Error(`[dist] timeoutS must be positive (got ${timeoutS})`);
  let mpi = false;
  if (env.worldSize > 1 && (env.launcher === 'mpirun' || o.mpiLib)) {
    const size = distCall('mpi_init', [o.mpiLib ?? null, timeoutS]);
    if (size !== env.worldSize)
      throw new Error(`[dist] MPI sees a world of ${size} processes, the launcher's variables say ${env.worldSize}`);
    const r = distCall('mpi_rank', []);
    if (r !== env.rank) throw new Error(`[dist] MPI rank ${r} differs from the launcher's rank ${env.rank}`);
    mpi = true;
  }
  let nccl = false;
  if (o.device === 'cuda' && env.worldSize > 1) {
    pinLocalGpu(o.env ?? process.env);
    const libs = ncclCandidates(o.ncclLib).join(':');
    const id = zeros([128], { dtype: 'uint8', device: 'cpu' });
    try {
      if (env.rank === 0) distCall('nccl_unique_id', [id, libs]);
      if (mpi) new Work(distCall('mpi_broadcast', [id, 0]), 'mpi', [id], timeoutS).wait();
      else {
        const payload = env.rank === 0 ? Buffer.from(id.dataSync() as Uint8Array) : null;
        const got = await exchangeId({ rank: env.rank, worldSize: env.worldSize, addr: env.masterAddr, port: env.masterPort, payload, timeoutS });
        if (got.length !== 128) throw new Error(`[dist] rendezvous delivered ${got.length} bytes, not a 128-byte NCCL id`);
        writeBytes(id, got);
      }
      distCall('nccl_init', [id, env.rank, env.worldSize, libs]);
      nccl = true;
    } finally {
      id.dispose();
    }
  }
  current = new ProcessGroup(env, timeoutS, mpi, nccl);
  // A script that ends without destroy(): finalise MPI anyway, or mpirun reports the job as failed.
  if (mpi) process.once('exit', () => finalizeQuietly());
  return current;
}

function finalizeQuietly(): void {
  try {
    current?.destroy();
  } catch {
    // exiting anyway
  }
}
