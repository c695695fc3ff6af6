// launch.ts — `llava train --nproc-per-node N`: starts the N ranks on this machine, like torchrun, by
// running this very command line under `mpirun -np N` (MPI is the CPU transport, and it also hands the NCCL
// id to GPU ranks), then exits with mpirun's status. Also the per-rank batch arithmetic of a distributed run.
// Loads no native code: the launcher process never initialises the engine.
import { spawn, execFileSync } from 'child_process';

/** argv without `--nproc-per-node N` / `--nproc-per-node=N`. */
export function withoutFlag(argv: string[], flag: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag) i++;
    else if (!argv[i].startsWith(`${flag}=`)) out.push(argv[i]);
  }
  return out;
}

/** The mpirun on PATH, or null. */
export function findMpirun(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v mpirun'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

/** The mpirun command line that runs `node [execArgv] argv[1..]` on n local ranks. */
export function mpirunArgs(n: number, argv: string[] = process.argv, execArgv: string[] = process.execArgv): string[] {
  const rest = withoutFlag(argv.slice(1), '--nproc-per-node');
  // --oversubscribe: N may exceed the cores Open MPI counts (one rank per GPU, few cores, is normal).
  // --bind-to none: each rank runs its own thread pool; binding all of a rank's threads to one core would starve it.
  return ['-np', String(n), '--oversubscribe', '--bind-to', 'none', process.execPath, ...execArgv, ...rest];
}

/** Runs the command under mpirun with n ranks; resolves to the exit status. */
export function relaunch(n: number, log: (m: string) => void): Promise<number> {
  const mpirun = findMpirun();
  if (!mpirun)
    throw new Error(
      '--nproc-per-node starts its processes through mpirun, which is not installed (Debian: apt-get install openmpi-bin libopenmpi-dev)',
    );
  const args = mpirunArgs(n);
  const env = { ...process.env };
  // Open MPI refuses to run as root unless told twice; a container often is root.
  if (process.getuid?.() === 0) Object.assign(env, { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' });
  log(`[train] starting ${n} processes: mpirun ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(mpirun, args, { stdio: 'inherit', env });
    child.on('error', reject);
    child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 + 15 : 1)));
  });
}

/**
 * Per-rank accumulation for a global batch spread over `world` ranks: `--batch-size` stays the global batch
 * (micro × accumulation × world, as the reference computes it). An explicit `--grad-accum` is per rank.
 */
export function perRankBatching(
  b: { globalBatch: number; microBatch: number; gradAccum: number },
  world: number,
  accumTyped: boolean,
): { globalBatch: number; microBatch: number; gradAccum: number } {
  if (world === 1) return b;
  if (accumTyped) return { ...b, globalBatch: b.microBatch * b.gradAccum * world };
  const per = b.microBatch * world;
  if (b.globalBatch % per)
    throw new Error(`[train] batch size ${b.globalBatch} is not divisible by micro-batch ${b.microBatch} x ${world} processes`);
  return { ...b, gradAccum: b.globalBatch / per };
}
