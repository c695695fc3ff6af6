// pool_wake.ts — the CPU pool's wake-up penalty after an idle spell (issue 17), at two block times
// (cpp/cpu_backend.cc: how long idle workers spin before sleeping; native.cpuSpinUs, LLAVA_CPU_SPIN_US).
//
// For each block time, in one process: a steady run of a small two-thread kernel (silu on 64 x 1024
// f32, split in two by the pool) gives the per-call time with hot workers; then the process idles
// 1.5 s (workers asleep, cores left to their sleep states) and the next 40 calls are timed one by one.
// slowdown = mean of those 40 / the steady per-call time (1 = no penalty). The idle spell's own CPU time
// (process.cpuUsage over the 1.5 s) shows spinning ends when the window does: it should be ~0.
// ratio = slowdown at the old 50 us window / slowdown at the current default (> 1: the fix helps).
import * as L from '../lib';
import { native } from '../lib/native';
import { BenchOptions, emit, round, selected } from './harness';

const sleepMs = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

function measure(x: L.Tensor, spinUs: number, calls: number): { steady: number; first: number; idleCpuMs: number } {
  native.cpuSpinUs(spinUs);
  const call = (): void => L.tidy(() => void L.silu(x));
  for (let i = 0; i < 200; i++) call();
  const per: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = nowMs();
    for (let i = 0; i < 100; i++) call();
    per.push((nowMs() - t0) / 100);
  }
  per.sort((a, b) => a - b);
  const steady = per[3];
  const c0 = process.cpuUsage();
  sleepMs(1500);
  const c1 = process.cpuUsage(c0);
  let sum = 0;
  for (let i = 0; i < calls; i++) {
    const t0 = nowMs();
    call();
    sum += nowMs() - t0;
  }
  return { steady, first: sum / calls, idleCpuMs: (c1.user + c1.system) / 1000 };
}

export function runPoolWakeCase(o: BenchOptions): void {
  const rec = { op: 'pool wake', scenario: 'idle 1.5 s then 40 calls', dtype: 'float32', device: 'cpu' as const, shape: '64x1024 silu' };
  if (!selected(o, rec) || native.numThreads() < 2) return;
  const x = L.rand([64, 1024]);
  const before = native.cpuSpinUs();
  try {
    const rounds = o.quick ? 1 : 3;
    const res: Record<number, { steady: number; first: number; idleCpuMs: number }[]> = { 50: [], [before]: [] };
    for (let r = 0; r < rounds; r++) for (const us of [50, before]) res[us].push(measure(x, us, 40));
    const med = (v: number[]): number => v.slice().sort((a, b) => a - b)[v.length >> 1];
    const slow = (us: number): number => med(res[us].map((m) => m.first / m.steady));
    emit({
      ...rec,
      spin_us: before,
      steady_ms: round(med(res[before].map((m) => m.steady)), 4),
      first40_ms: round(med(res[before].map((m) => m.first)), 4),
      slowdown: round(slow(before), 3),
      idle_cpu_ms: round(med(res[before].map((m) => m.idleCpuMs)), 2),
      baseline: 'spin 50 us',
      baseline_steady_ms: round(med(res[50].map((m) => m.steady)), 4),
      baseline_first40_ms: round(med(res[50].map((m) => m.first)), 4),
      baseline_slowdown: round(slow(50), 3),
      ratio: round(slow(50) / slow(before), 3),
      rounds,
    });
  } finally {
    native.cpuSpinUs(before);
    x.dispose();
  }
}
