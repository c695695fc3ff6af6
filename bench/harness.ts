// harness.ts — what every benchmark case shares: command-line options, the timing loop, the JSON line
// each case prints, and the peers (numpy, PyTorch) run as child processes in the same bench run.
//
// Timing: warm-up calls, then the median of N samples taken with process.hrtime.bigint(). On CUDA a
// sample is `inner` back-to-back calls closed by cuda.synchronize() (queued kernels must finish before
// the clock stops), divided by `inner`; inner is chosen from the warm-up so a sample lasts ~5 ms, which
// hides the per-sample synchronize on small kernels. Each call runs inside tidy(), so a case frees what
// it makes. The median resists the noisy 2-vCPU development machine; compare runs only within one
// process run (docs/anchors.md).
//
// ratio = baseline_ms / median_ms: the engine's speed relative to its baseline (> 1 = faster).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../lib';

export type BenchDevice = 'cpu' | 'cuda';

export interface BenchOptions {
  filter: RegExp | null;
  quick: boolean;
  device: 'cpu' | 'cuda' | 'all';
  out: string | null;
  /** Run the GPU case list on the CPU with shapes shrunk (checks the GPU bench code without a GPU). */
  gpuDryRun: boolean;
  /** Skip the peers (numpy / PyTorch); ratios are then null. */
  noPeers: boolean;
  /** JSON lines only: no table after them (the PNG chart is still written with --out). */
  jsonOnly: boolean;
  python: string;
  /** Samples are this process's CPU time (user + system), not wall time: for a loaded machine, with one thread. */
  cpuTime: boolean;
  /** Run the CPU cases (peer, then ours) this many times and report each case's medians over the rounds. */
  rounds: number;
}

export function parseOptions(argv: string[]): BenchOptions {
  const o: BenchOptions = {
    filter: null,
    quick: false,
    device: 'all',
    out: null,
    gpuDryRun: false,
    noPeers: false,
    jsonOnly: false,
    python: process.env.PYTHON ?? 'python3',
    cpuTime: false,
    rounds: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = (): string => {
      const eq = a.indexOf('=');
      if (eq >= 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new Error(`[bench] ${a} needs a value`);
      return v;
    };
    const key = a.split('=')[0];
    if (key === '--filter') o.filter = new RegExp(val());
    else if (key === '--quick') o.quick = true;
    else if (key === '--device') {
      const d = val();
      if (d !== 'cpu' && d !== 'cuda' && d !== 'all') throw new Error(`[bench] --device must be cpu, cuda or all, got '${d}'`);
      o.device = d;
    } else if (key === '--out') o.out = val();
    else if (key === '--gpu-dry-run') o.gpuDryRun = true;
    else if (key === '--no-peers') o.noPeers = true;
    else if (key === '--json') o.jsonOnly = true;
    else if (key === '--python') o.python = val();
    else if (key === '--rounds') {
      const v = val();
      o.rounds = Number(v);
      if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new Error(`[bench] --rounds must be a whole number >= 1, got '${v}'`);
    } else if (key === '--cpu-time') {
      o.cpuTime = true;
      clock = 'cpu';
    } else if (key === '--help' || key === '-h') {
      console.log(
        'usage: npm run bench -- [--filter REGEX] [--quick] [--device cpu|cuda|all] [--out FILE]\n' +
          '                        [--no-peers] [--python PY] [--gpu-dry-run] [--json] [--cpu-time] [--rounds N]\n' +
          'Prints one JSON line per case, then a table of them (not with --json); ratio = baseline_ms / median_ms\n' +
          '(> 1: the engine is faster). --out FILE also writes the JSON lines to FILE and a chart of the ratios\n' +
          'beside it (FILE with .png for its extension).\n' +
          '--filter matches "op scenario dtype device shape"; --gpu-dry-run runs the GPU list on the CPU at toy sizes.\n' +
          '--cpu-time: CPU samples are process CPU time on both sides (a loaded machine; run with LLAVA_NUM_THREADS=1).\n' +
          "--rounds N: the CPU cases N times over (each round the peer, then ours); the table shows each case's median\n" +
          'over the rounds and the range of its per-round ratios (for a machine whose speed drifts).',
      );
      process.exit(0);
    } else throw new Error(`[bench] unknown option '${a}' (see --help)`);
  }
  return o;
}

// ------------------------------------------------------------------ output
let outFd: number | null = null;
export function openOut(file: string | null): void {
  if (!file) return;
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  outFd = fs.openSync(file, 'w');
}
/** Every line emitted in this run, for the table and chart that follow the JSON (bench/report.ts). */
export const emitted: Record<string, unknown>[] = [];

/** The round (--rounds) whose lines are being emitted, written into each of them; null outside rounds. */
let currentRound: number | null = null;
export function setRound(r: number | null): void {
  currentRound = r;
}

/** Print one JSON line (and append it to --out). */
export function emit(rec: Record<string, unknown>): void {
  if (currentRound !== null) rec = { ...rec, round: currentRound };
  const line = JSON.stringify(rec);
  console.log(line);
  emitted.push(rec);
  if (outFd !== null) fs.writeSync(outFd, line + '\n');
}
export function closeOut(): void {
  if (outFd !== null) fs.closeSync(outFd);
  outFd = null;
}

// ------------------------------------------------------------------ timing
export interface TimeOptions {
  device: BenchDevice;
  warmup?: number;
  /** Samples to take (the median is reported). */
  reps?: number;
  /** Stop sampling after this much time (at least `minReps` samples are always taken). */
  maxMs?: number;
  minReps?: number;
}
export interface Timing {
  median_ms: number;
  min_ms: number;
  samples: number;
}

// The sample clock: wall time, or (--cpu-time) the process's user + system CPU time, which other
// processes on a loaded machine do not inflate (with one thread it is the kernel's own time).
let clock: 'wall' | 'cpu' = 'wall';
const now = (): bigint => {
  if (clock === 'wall') return process.hrtime.bigint();
  const u = process.cpuUsage();
  return BigInt(u.user + u.system) * 1000n;
};
const ms = (a: bigint, b: bigint): number => Number(b - a) / 1e6;

function sync(device: BenchDevice): void {
  if (device === 'cuda') L.cuda.synchronize();
}

/** Run fn (inside tidy) repeatedly; return the median time of one call. */
export function timeIt(fn: () => unknown, o: TimeOptions): Timing {
  const warmup = o.warmup ?? 3;
  const reps = o.reps ?? 10;
  const minReps = o.minReps ?? 3;
  const maxMs = o.maxMs ?? 5000;
  const call = (): void => {
    L.tidy(() => {
      fn();
    });
  };
  sync(o.device);
  let warmMs = 0;
  for (let i = 0; i < warmup; i++) {
    const t0 = now();
    call();
    sync(o.device);
    warmMs = ms(t0, now());
  }
  // A sample of a sub-5 ms op is a batch of calls (as bench/numpy_peer.py does), so it is not dominated
  // by synchronize() on the GPU or by timer and wake-up noise on the CPU.
  const inner = warmMs > 0 ? Math.max(1, Math.min(50, Math.floor(5 / warmMs))) : 1;
  const samples: number[] = [];
  const start = now();
  while (samples.length < reps) {
    const t0 = now();
    for (let j = 0; j < inner; j++) call();
    sync(o.device);
    samples.push(ms(t0, now()) / inner);
    if (samples.length >= minReps && ms(start, now()) > maxMs) break;
  }
  return summarize(samples);
}

/** Median and minimum of the samples (ms). */
export function summarize(samples: number[]): Timing {
  samples.sort((a, b) => a - b);
  return { median_ms: round(samples[Math.floor(samples.length / 2)]), min_ms: round(samples[0]), samples: samples.length };
}

/** timeIt for an async workload of its own (long runs: one call per sample, no inner batching). */
export async function timeItAsync(fn: () => Promise<unknown>, o: TimeOptions): Promise<Timing> {
  const samples: number[] = [];
  for (let i = 0; i < (o.warmup ?? 1); i++) await fn();
  sync(o.device);
  const start = now();
  while (samples.length < (o.reps ?? 5)) {
    const t0 = now();
    await fn();
    sync(o.device);
    samples.push(ms(t0, now()));
    if (samples.length >= (o.minReps ?? 3) && ms(start, now()) > (o.maxMs ?? 5000)) break;
  }
  return summarize(samples);
}

export function round(x: number, digits = 4): number {
  if (!Number.isFinite(x)) return x;
  if (x === 0) return 0;
  const p = Math.pow(10, digits - 1 - Math.floor(Math.log10(Math.abs(x))));
  return Math.round(x * p) / p;
}

// ------------------------------------------------------------------ records
export interface CaseRecord {
  op: string;
  scenario: string;
  dtype: string;
  device: BenchDevice;
  shape: string;
}

/** Does --filter select this case? */
export function selected(opts: BenchOptions, c: CaseRecord): boolean {
  return !opts.filter || opts.filter.test(`${c.op} ${c.scenario} ${c.dtype} ${c.device} ${c.shape}`);
}

export type Throughput = { gflops: number } | { tflops: number } | { gbps: number } | { tokens_per_s: number } | Record<string, never>;

/** Throughput figure for `work` units done in `t` ms: FLOPs → gflops (CPU) / tflops (CUDA), bytes → gbps. */
export function throughput(kind: 'flops' | 'bytes' | 'tokens' | 'none', work: number, t: number, device: BenchDevice): Throughput {
  if (kind === 'none' || !(t > 0)) return {};
  const perS = work / (t / 1e3);
  if (kind === 'flops') return device === 'cuda' ? { tflops: round(perS / 1e12) } : { gflops: round(perS / 1e9) };
  if (kind === 'bytes') return { gbps: round(perS / 1e9) };
  return { tokens_per_s: round(perS) };
}

/** The one JSON line of a case: the engine's figure, its baseline and the ratio. */
export function report(
  c: CaseRecord,
  t: Timing,
  kind: 'flops' | 'bytes' | 'tokens' | 'none',
  work: number,
  baseline: { name: string; ms: number | null; note?: string } | null,
  extra: Record<string, unknown> = {},
): void {
  const base = baseline && baseline.ms !== null && baseline.ms > 0 ? baseline.ms : null;
  emit({
    ...c,
    median_ms: t.median_ms,
    ...throughput(kind, work, t.median_ms, c.device),
    baseline: baseline?.name ?? null,
    baseline_ms: base !== null ? round(base) : null,
    ...(base !== null && kind !== 'none' ? { baseline_throughput: throughput(kind, work, base, c.device) } : {}),
    ratio: base !== null ? round(base / t.median_ms, 3) : null,
    samples: t.samples,
    ...(baseline?.note ? { note: baseline.note } : {}),
    ...extra,
  });
}

// ------------------------------------------------------------------ peers
export interface PeerResult {
  ok: boolean;
  /** key → median ms (keys are the case keys both sides agree on). */
  times: Map<string, Record<string, unknown>>;
  reason?: string;
  version?: string;
}

/**
 * Run a Python peer script once for all its cases. It prints one JSON object per line; lines with a
 * `key` field are results, a line with `skipped` means the peer cannot run here (no numpy / no torch /
 * no GPU), and anything else is ignored.
 */
export function runPeer(python: string, script: string, args: string[], timeoutMs: number): PeerResult {
  const r = spawnSync(python, [script, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (r.error) return { ok: false, times: new Map(), reason: `${python} ${path.basename(script)}: ${r.error.message}` };
  const times = new Map<string, Record<string, unknown>>();
  let skipped: string | undefined;
  let version: string | undefined;
  for (const line of (r.stdout ?? '').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as Record<string, unknown>;
      if (typeof j.skipped === 'string') skipped = `${j.skipped}: ${String(j.reason ?? '')}`;
      if (typeof j.peer === 'string') version = j.peer;
      if (typeof j.key === 'string') times.set(j.key, j);
    } catch {
      /* not a result line */
    }
  }
  if (skipped) return { ok: false, times, reason: skipped };
  if (r.status !== 0 && times.size === 0) {
    const err = (r.stderr ?? '').trim().split('\n').slice(-3).join(' | ');
    return { ok: false, times, reason: `${path.basename(script)} exited ${r.status ?? r.signal}: ${err}` };
  }
  return { ok: true, times, version };
}

/** Run a peer script (in bench/) with `--spec FILE`, the spec written to a temporary file: argv has length
 *  limits and stdin is the peer's to ignore. */
export function runPeerSpec(python: string, script: string, spec: unknown, timeoutMs: number): PeerResult {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bench-peer-')), 'spec.json');
  fs.writeFileSync(file, JSON.stringify(spec));
  try {
    return runPeer(python, path.join(benchDir(), script), ['--spec', file], timeoutMs);
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
}

/** The peer's median for a case key, or null. */
export function peerMs(p: PeerResult | null, key: string): number | null {
  const j = p?.times.get(key);
  return j && typeof j.median_ms === 'number' ? j.median_ms : null;
}

/** Where the peer scripts sit (bench/ in the source tree; dist/bench/run.js looks two levels up). */
export function benchDir(): string {
  for (const d of [__dirname, path.resolve(__dirname, '..', '..', 'bench')]) if (fs.existsSync(path.join(d, 'numpy_peer.py'))) return d;
  return __dirname;
}

/** Seeded uniform tensor in [-1, 1) on a device (generated there). */
export function randU(shape: number[], dtype: L.DType, device: BenchDevice, seed: number): L.Tensor {
  return L.tidy(() => {
    const g = new L.Generator(seed);
    return L.sub(L.mul(L.rand(shape, { dtype, device, generator: g }), 2), 1);
  });
}

/** FLOPs of attention over [B, H, T, D] queries and S keys (the backward counted as 2.5 forwards). */
export function attentionFlops(B: number, H: number, T: number, S: number, D: number, causal: boolean, bwd: boolean): number {
  const f = (4 * B * H * T * S * D) / (causal ? 2 : 1);
  return bwd ? f * 3.5 : f;
}
