// dist_cases.ts — data-parallel scaling on the CPU: the tiny fixture trained by 1 and by 2 MPI processes,
// one compute thread each (LLAVA_NUM_THREADS=1), micro-batch 2 per process (so the global batch grows with
// the processes). Reports tokens/s of the whole job and the scaling efficiency
// tokens_per_s(2) / (2 x tokens_per_s(1)). Skipped, with the reason, without mpirun.
import * as path from 'path';
import { spawnSync, execFileSync } from 'child_process';
import { emit, type BenchOptions } from './harness';

function mpirun(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v mpirun'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

export function runDistCases(o: BenchOptions): void {
  const base = { op: 'dist_train', scenario: 'tiny-llava stage 2 ddp over MPI, 1 thread per process', dtype: 'float32', device: 'cpu' };
  if (o.filter && !o.filter.test(`${base.op} ${base.scenario} float32 cpu`)) return;
  const bin = mpirun();
  if (!bin) {
    emit({ ...base, skipped: 'mpirun not found (apt-get install openmpi-bin)' });
    return;
  }
  const ts = __filename.endsWith('.ts');
  const worker = path.join(__dirname, ts ? 'dist_worker.ts' : 'dist_worker.js');
  const steps = o.quick ? 8 : 20;
  const env = { ...process.env, LLAVA_NUM_THREADS: '1', OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
  const tps: number[] = [];
  for (const n of [1, 2]) {
    const args = [
      '-np',
      String(n),
      '--oversubscribe',
      '--bind-to',
      'none',
      process.execPath,
      ...(ts ? ['--import', 'tsx'] : []),
      worker,
      String(steps),
    ];
    const r = spawnSync(bin, args, { encoding: 'utf8', env, timeout: 600_000 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{"procs"'));
    if (r.status !== 0 || !line) {
      emit({ ...base, procs: n, skipped: `mpirun exited ${r.status}: ${r.stderr.slice(-300)}` });
      return;
    }
    const rec = JSON.parse(line) as { tokens_per_s: number };
    tps.push(rec.tokens_per_s);
    emit({
      ...base,
      shape: `${n} process${n > 1 ? 'es' : ''}, micro-batch 2 each`,
      procs: n,
      tokens_per_s: rec.tokens_per_s,
      scaling_efficiency: n === 1 ? 1 : Number((rec.tokens_per_s / (n * tps[0])).toFixed(3)),
      steps,
    });
  }
}
