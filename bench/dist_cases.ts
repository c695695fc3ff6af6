// dist_cases.ts — data-parallel scaling on the CPU: the tiny fixture trained by 1 and by 2 MPI processes,
// one compute thread each (LLAVA_NUM_THREADS=1), micro-batch 2 per process (so the global batch grows with
// the processes). Reports tokens/s of the whole job and the scaling efficiency
// tokens_per_s(2) / (2 x tokens_per_s(1)); two processes run ddp and zero2 with their gradient buckets
// reduced after backward (the baseline) and started during backward by the grad hooks, each with 0.05 MB
// buckets (8 per step on the tiny model), and zero3 (one unit per decoder layer, gathered for forward and
// again for the recomputed backward). Skipped, with the reason, without mpirun.
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
  const base = { op: 'dist_train', scenario: 'tiny-llava stage 2 over MPI, 1 thread per process', dtype: 'float32', device: 'cpu' };
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
  let one = 0;
  const cases: [number, string, string][] = [
    [1, 'ddp', 'during'],
    [2, 'ddp', 'after-backward'],
    [2, 'ddp', 'during'],
    [2, 'zero2', 'after-backward'],
    [2, 'zero2', 'during'],
    [2, 'zero3', 'during'],
  ];
  for (const [n, strategy, when] of cases) {
    const args = ['-np', String(n), '--oversubscribe', '--bind-to', 'none', process.execPath, ...(ts ? ['--import', 'tsx'] : [])];
    args.push(worker, String(steps), strategy, '0.05', when);
    const r = spawnSync(bin, args, { encoding: 'utf8', env, timeout: 600_000 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{"procs"'));
    if (r.status !== 0 || !line) {
      emit({ ...base, procs: n, skipped: `mpirun exited ${r.status}: ${r.stderr.slice(-300)}` });
      return;
    }
    const rec = JSON.parse(line) as { tokens_per_s: number };
    if (n === 1) one = rec.tokens_per_s;
    emit({
      ...base,
      shape:
        n === 1
          ? '1 process, micro-batch 2'
          : `2 processes, micro-batch 2 each, ${strategy}, buckets reduced ${when === 'during' ? 'during' : 'after'} backward`,
      procs: n,
      tokens_per_s: rec.tokens_per_s,
      scaling_efficiency: Number((rec.tokens_per_s / (n * one)).toFixed(3)),
      steps,
    });
  }
}
