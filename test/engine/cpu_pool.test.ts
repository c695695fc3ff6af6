// cpu_pool.test.ts — the CPU worker pool's block time (cpp/cpu_backend.cc): idle workers spin for at
// most LLAVA_CPU_SPIN_US microseconds after the last parallel region and then sleep, so a process that
// stops calling kernels stops using CPU: the workers' CPU time (/proc/self/task/<tid>/stat of the threads
// named llava-cpu-<i>; the process's getrusage figure where /proc is missing) stays flat while it idles.
// The window is read at load and settable at run time, and results do not depend on it.
import fs from 'fs';
import t from 'tap';
import * as L from '../../lib';
import { native } from '../../lib/native';

const sleepMs = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};
/** The process's user + system CPU time in ms (getrusage: the figures of /proc/self/stat). */
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** The pool's worker threads (cpp/cpu_backend.cc names them llava-cpu-<i>) as /proc/self/task/<tid>/stat
 *  lines; empty where /proc is missing. Only they are measured: V8's own threads (garbage collection,
 *  compilation) also run after work, and slowly under emulation (the arm64 run), but they are not the pool. */
function workerStats(): string[] {
  if (!fs.existsSync('/proc/self/task')) return [];
  const out: string[] = [];
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      if (!fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').startsWith('llava-cpu-')) continue;
      out.push(fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8'));
    } catch {
      // the thread exited meanwhile
    }
  }
  return out;
}
/** The fields of a stat line after the command name: [0] state, [11] utime, [12] stime (clock ticks). */
const fields = (stat: string): string[] => stat.slice(stat.lastIndexOf(')') + 2).split(' ');

/** Pool workers that are running or runnable (state R). */
const runnableWorkers = (): number => workerStats().filter((s) => fields(s)[0] === 'R').length;

/** CPU time of the pool's workers in ms (user + system; /proc counts in ticks of 10 ms, USER_HZ = 100). */
const workerCpuMs = (): number => workerStats().reduce((a, s) => a + (Number(fields(s)[11]) + Number(fields(s)[12])) * 10, 0);

t.test('the pool stops spinning when the process idles', async (tt) => {
  if (native.numThreads() < 2) {
    tt.skip('a one-thread pool has no workers', () => {});
    return;
  }
  const before = native.cpuSpinUs();
  const x = L.rand([256, 1024]);
  const work = (): void => {
    for (let i = 0; i < 50; i++) L.tidy(() => void L.silu(x));
  };
  try {
    native.cpuSpinUs(20_000);
    work();
    sleepMs(100); // past the 20 ms window: the workers are asleep
    // Where /proc names the workers, their own CPU time; elsewhere the process's (V8's housekeeping included).
    const named = workerStats().length === native.numThreads() - 1;
    const measure = named ? workerCpuMs : cpuMs;
    const c0 = measure();
    sleepMs(500);
    const used = measure() - c0;
    // Sleeping threads use nothing. A worker still spinning would use up to 500 ms here (less on a loaded
    // machine, where its yields hand the core away).
    tt.ok(used < 50, `CPU time of ${named ? 'the pool workers' : 'the process'} during 500 ms of idling: ${used.toFixed(1)} ms`);
    if (fs.existsSync('/proc/self/task')) {
      tt.ok(named, `the ${native.numThreads() - 1} pool workers are named llava-cpu-<i> in /proc`);
      tt.equal(runnableWorkers(), 0, 'no pool worker is running or runnable after the window');
      // The control: inside a 1 s window a worker is seen spinning (runnable), so the check above can
      // fail. Polled from the end of the work: on a loaded machine a worker that finds itself preempted
      // stops spinning early (cpu_backend.cc), so it may be runnable only for a moment.
      // Under qemu (the arm64 run: scripts/check_arm64.sh sets LLAVA_UNDER_QEMU) a worker's emulated checks
      // are so slow that its preemption guard (cpu_backend.cc) puts it to sleep at once: nothing spins to see.
      if (process.env.LLAVA_UNDER_QEMU) return void tt.skip('the spinning control: under qemu the workers sleep at once', () => {});
      native.cpuSpinUs(1_000_000);
      work();
      let seen = false;
      for (let i = 0; i < 200 && !seen; i++) {
        seen = runnableWorkers() >= 1;
        if (!seen) sleepMs(0.1);
      }
      tt.ok(seen, 'inside the window a worker is seen spinning (the check can fail)');
      sleepMs(1100);
      tt.equal(runnableWorkers(), 0, 'and after it, asleep');
    }
  } finally {
    native.cpuSpinUs(before);
    x.dispose();
  }
});

t.test('results are the same whatever the block time', async (tt) => {
  const before = native.cpuSpinUs();
  try {
    const x = L.rand([300, 1001]);
    const out = (us: number): Float32Array => {
      native.cpuSpinUs(us);
      return L.tidy(() => L.silu(x).dataSync() as Float32Array);
    };
    const a = out(0);
    const b = out(1_000_000);
    tt.ok(a.length === b.length && a.every((v, i) => v === b[i]), 'sleep-at-once and 1 s windows agree bit for bit');
    x.dispose();
  } finally {
    native.cpuSpinUs(before);
  }
});

t.test('cpuSpinUs validates its argument; LLAVA_CPU_SPIN_US sets it at load', async (tt) => {
  const before = native.cpuSpinUs();
  tt.equal(native.cpuSpinUs(), before, 'reading leaves it unchanged');
  tt.throws(() => native.cpuSpinUs(-1), /cpuSpinUs: the block time must be an integer from 0 to 1000000/);
  tt.throws(() => native.cpuSpinUs(2e6), /cpuSpinUs: the block time must be an integer/);
  tt.throws(() => native.cpuSpinUs(1.5), /cpuSpinUs: the block time must be an integer/);
  tt.throws(() => native.cpuSpinUs('5' as unknown as number), /cpuSpinUs: the block time must be a number/);
  tt.equal(native.cpuSpinUs(before), before, 'restored');
  const { spawnSync } = await import('child_process');
  const probe = `const { native } = require(${JSON.stringify(require.resolve('../../lib/native'))}); process.stdout.write(String(native.cpuSpinUs()));`;
  const runWith = (v: string): string =>
    spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', probe], { env: { ...process.env, LLAVA_CPU_SPIN_US: v }, encoding: 'utf8' }).stdout;
  tt.equal(runWith('123'), '123', 'LLAVA_CPU_SPIN_US=123');
  tt.equal(runWith('0'), '0', 'LLAVA_CPU_SPIN_US=0 (sleep at once)');
  tt.equal(runWith('99999999'), '1000000', 'capped at 1 s');
  tt.equal(runWith('soon'), '2000', 'not a number: the default, 2000');
});
