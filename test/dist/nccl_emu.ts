// nccl_emu.ts — the NCCL path of lib/dist without a GPU, called by test/cuda/cuda_emu_addon.test.ts once it
// has built the emulated CUDA addon: the stand-in libnccl (fake_nccl.cc, NCCL's C functions over MPI) is
// compiled here, then 2 ranks run nccl_worker.ts under mpirun with LLAVA_NATIVE at the emulated addon.
// Skips, with the reason, without mpirun or mpi.h.
import type { Test } from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { run, cleanEnv, tail } from '../cuda_emu/harness';

const MPI_INC = '/usr/lib/x86_64-linux-gnu/openmpi/include';

function which(cmd: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

export async function checkNcclOnEmulator(tt: Test, addon: string, dir: string): Promise<void> {
  const mpirun = which('mpirun');
  const inc = process.env.MPI_INC || MPI_INC;
  if (!mpirun || !fs.existsSync(path.join(inc, 'mpi.h'))) {
    tt.skip(`NCCL path: needs mpirun and ${inc}/mpi.h (apt-get install openmpi-bin libopenmpi-dev)`, () => {});
    return;
  }
  const lib = path.join(dir, 'libnccl_fake.so');
  const b = await run('g++', ['-shared', '-fPIC', '-O1', path.join(__dirname, 'fake_nccl.cc'), `-I${inc}`, '-lmpi', '-o', lib], cleanEnv(), 120_000);
  if (!tt.equal(b.code, 0, 'the stand-in libnccl builds', { output_tail: tail(b.out) })) return;
  const env = cleanEnv({ LLAVA_NATIVE: addon, LLAVA_NCCL_LIB: lib, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' });
  const worker = path.join(__dirname, 'nccl_worker.ts');
  const r = await run(mpirun, ['-np', '2', '--oversubscribe', process.execPath, '--import', 'tsx', worker, dir], env, 300_000);
  const line = r.out.split('\n').find((l) => l.startsWith('NCCL_RESULT '));
  if (!tt.ok(r.code === 0 && line, 'NCCL path: 2 ranks ran on the emulated cuda device', { output_tail: tail(r.out) })) return;
  const o = JSON.parse(line!.slice('NCCL_RESULT '.length));
  tt.ok(o.nccl && o.mpi, 'NCCL communicator up (its id broadcast over MPI)');
  tt.same(o.sum, [3, 4, 6], 'NCCL all_reduce sum on cuda tensors');
  tt.same(o.avgBf16, [1.5, 1, 3], 'NCCL all_reduce avg on bf16');
  tt.same(o.reduceScatter, [3, 6], 'NCCL reduce_scatter');
  tt.same(o.allGather, [0, 10, 1, 11], 'NCCL all_gather');
  tt.same(o.broadcast, [6, 7], 'NCCL broadcast from rank 1');
  tt.match(o.mixed, /different devices/, 'a CPU and a CUDA tensor in one collective are refused');
  const cpu = o.losses.cpu as number[];
  for (const run of ['cuda', 'cuda-zero3']) {
    const cuda = o.losses[run] as number[];
    const worst = Math.max(...cpu.map((l, i) => Math.abs(l - cuda[i]) / Math.abs(l)));
    // The emulated CUDA kernels sum in another order than the CPU ones: agreement to float32 rounding.
    tt.ok(cpu.length === 2 && worst < 1e-4, `${run === 'cuda' ? 'zero2' : 'zero3'} on cuda (NCCL) = zero2 on cpu (MPI): losses ${cuda} vs ${cpu}`);
  }
}
