// env.ts — where this process sits in a distributed job, read from its launcher's environment.
//
// Launchers and their variables:
//   mpirun (Open MPI)   OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE
//   torchrun and alike  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
//   srun (SLURM)        SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
// `llava train --nproc-per-node N` runs mpirun itself (lib/app/train/launch.ts), so its ranks read the first
// set. When two sets are present they must agree. No variables at all: a world of one.

/** How a process was launched and its place in the job. */
export interface DistEnv {
  launcher: 'mpirun' | 'torchrun' | 'slurm' | 'none';
  rank: number;
  worldSize: number;
  /** Rank among the processes of this machine: the index of the GPU this rank uses. */
  localRank: number;
  localWorldSize: number;
  /** Rendezvous address for the NCCL id when MPI is not there to broadcast it. */
  masterAddr: string;
  masterPort: number;
}

function int(env: NodeJS.ProcessEnv, key: string, min: number): number | undefined {
  const v = env[key];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v.trim()) || Number(v) < min) throw new Error(`[dist] ${key}=${JSON.stringify(v)} is not an integer >= ${min}`);
  return Number(v);
}

interface Found {
  launcher: DistEnv['launcher'];
  rank: number;
  size: number;
  local?: number;
  localSize?: number;
}

function read(env: NodeJS.ProcessEnv, launcher: Found['launcher'], keys: [string, string, string, string?]): Found | null {
  const rank = int(env, keys[0], 0);
  const size = int(env, keys[1], 1);
  if (rank === undefined && size === undefined) return null;
  if (rank === undefined || size === undefined) throw new Error(`[dist] ${keys[0]} and ${keys[1]} must be set together (launcher ${launcher})`);
  if (rank >= size) throw new Error(`[dist] ${keys[0]}=${rank} is not below ${keys[1]}=${size}`);
  return { launcher, rank, size, local: int(env, keys[2], 0), localSize: keys[3] ? int(env, keys[3], 1) : undefined };
}

/** Reads the launcher variables (see the file header); throws on malformed or contradicting values. */
export function readDistEnv(env: NodeJS.ProcessEnv = process.env): DistEnv {
  const found = [
    read(env, 'mpirun', ['OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_SIZE']),
    read(env, 'torchrun', ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE']),
    read(env, 'slurm', ['SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID']),
  ].filter((f): f is Found => f !== null);
  const masterPort = int(env, 'MASTER_PORT', 1) ?? 29500;
  if (masterPort > 65535) throw new Error(`[dist] MASTER_PORT=${masterPort} is not a TCP port`);
  const masterAddr = env.MASTER_ADDR || '127.0.0.1';
  if (!found.length) return { launcher: 'none', rank: 0, worldSize: 1, localRank: 0, localWorldSize: 1, masterAddr, masterPort };
  const f = found[0];
  for (const g of found.slice(1))
    if (g.rank !== f.rank || g.size !== f.size)
      throw new Error(`[dist] the ${f.launcher} variables say rank ${f.rank} of ${f.size}, the ${g.launcher} ones rank ${g.rank} of ${g.size}`);
  const localRank = f.local ?? found.find((g) => g.local !== undefined)?.local ?? 0;
  const localWorldSize = f.localSize ?? found.find((g) => g.localSize !== undefined)?.localSize ?? f.size;
  if (localRank >= localWorldSize) throw new Error(`[dist] local rank ${localRank} is not below the local world size ${localWorldSize}`);
  return { launcher: f.launcher, rank: f.rank, worldSize: f.size, localRank, localWorldSize, masterAddr, masterPort };
}

/**
 * Gives this rank the GPU of its local rank, through CUDA_VISIBLE_DEVICES (the addon uses device 0 of what
 * it sees): unset, it becomes the local rank; a list of several devices (SLURM and others show every rank
 * all of a machine's GPUs) becomes its entry at the local rank. Must run before CUDA is first touched.
 * Returns what CUDA_VISIBLE_DEVICES is now (undefined for a world of one, left alone).
 */
export function pinLocalGpu(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const d = readDistEnv(env);
  if (d.worldSize === 1) return env.CUDA_VISIBLE_DEVICES;
  const list = (env.CUDA_VISIBLE_DEVICES ?? '').split(',').filter((s) => s.trim() !== '');
  if (!list.length) env.CUDA_VISIBLE_DEVICES = String(d.localRank);
  else if (list.length > 1) {
    if (d.localRank >= list.length)
      throw new Error(`[dist] local rank ${d.localRank} has no GPU: CUDA_VISIBLE_DEVICES lists ${list.length} (${list.join(',')})`);
    env.CUDA_VISIBLE_DEVICES = list[d.localRank].trim();
  }
  return env.CUDA_VISIBLE_DEVICES;
}
