// check.ts — the GPU check, one command on the lent GPU machine (scripts/gpu_check.sh):
//
//   bash .gpu/run.sh node dist/test/gpu/check.js [--filter REGEX] [--quick] [--no-bench]
//
// (a) device parity: every case of test/gpu/cases.ts on 'cuda' against the CPU, one PASS/FAIL line each
//     with its max errors; (b) memory: the caching allocator reaches a steady state (deviceMallocs, bytes
//     in use and live tensors flat across 3 tiny-LLaVA training steps), an absurd allocation is a JS
//     Error naming CUDA out of memory and the process stays usable; (c) `bench/run.js --device cuda` in a
//     child process (its JSON lines are kept). Between (b) and (c), end to end (test/gpu/e2e.ts, filter
//     'e2e'): `llava verify` on the device in f32 and bf16, and the bundled demo (`npm start`) trained on the
//     device and on the CPU from the same seed, with the same per-step losses (--demo-steps N per stage,
//     default 15, 0 skips the demo). Everything goes to $OUT/gpu_check.json (rewritten after
//     each phase, so a crash still leaves what ran) and $OUT/gpu_check.log. Exit 1 if a parity, memory or (d)
//     check failed, 0 otherwise; without CUDA it prints the reason, writes {skipped: 'cuda'}, runs (d) and exits 0
//     unless (d) failed.
// (d) the host CPU (test/gpu/cpu_amx.ts): where it has AMX (Sapphire Rapids and later Xeons), the AMX-BF16
//     GEMM tile against the AVX512-BF16 tile and a wider reference, its speed against both our other tiles,
//     and, with the bench on, `bench/run.js --device cpu` on the bf16 GEMM rows beside torch's CPU matmul
//     ($OUT/bench_cpu.jsonl); without AMX a SKIP line with the reason. `--filter cpu_amx --no-bench` runs
//     only its parity and timing.
// --self-test runs (a) and (b) with the CPU standing in for the GPU, (c) as `--gpu-dry-run` and (d) on the
// small cases with the AMX instructions emulated (checks this harness on a machine without a GPU or AMX; it
// is no evidence about either). $OUT defaults to out/gpu-check (git-ignored).
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as L from '../../lib';
import { native } from '../../lib/native';
import { loadLlava } from '../../lib/models/loader';
import { AdamW } from '../../lib/optim';
import { CaseResult, formatResult, parityCases, runParityCase } from './cases';
import { amxParity, amxTiming, hostCpu } from './cpu_amx';
import { Check, demoParity, servingParity, verifyOnDevice } from './e2e';
import { fixtureDir, tinyLlavaRef } from './fixture';

interface Opts {
  filter: RegExp | null;
  quick: boolean;
  bench: boolean;
  selfTest: boolean;
  benchArgs: string[];
  /** Optimizer steps per stage of the demo training phase (0: skip it). */
  demoSteps: number;
}

function parse(argv: string[]): Opts {
  const o: Opts = { filter: null, quick: false, bench: true, selfTest: false, benchArgs: [], demoSteps: 15 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--filter') o.filter = new RegExp(argv[++i]);
    else if (a.startsWith('--filter=')) o.filter = new RegExp(a.slice(9));
    else if (a === '--quick') o.quick = true;
    else if (a === '--no-bench') o.bench = false;
    else if (a === '--self-test') o.selfTest = true;
    else if (a === '--bench-args') o.benchArgs = argv[++i].split(/\s+/).filter(Boolean);
    else if (a === '--demo-steps') {
      o.demoSteps = Number(argv[++i]);
      if (!Number.isInteger(o.demoSteps) || o.demoSteps < 0) throw new Error('[gpu-check] --demo-steps takes an integer >= 0');
    } else throw new Error(`[gpu-check] unknown option '${a}'`);
  }
  return o;
}

const OUT = path.resolve(process.env.OUT || path.join('out', 'gpu-check')); // out/ is git-ignored
const logFile = path.join(OUT, 'gpu_check.log');
const jsonFile = path.join(OUT, 'gpu_check.json');
const report: Record<string, unknown> = {};

function log(line: string): void {
  console.log(line);
  fs.appendFileSync(logFile, line + '\n');
}
function save(): void {
  fs.writeFileSync(jsonFile, JSON.stringify(report, null, 1) + '\n');
}

// ------------------------------------------------------------------ (b) memory
function memorySteadyState(dev: L.Device): Check {
  const r = tinyLlavaRef();
  const model = loadLlava(fixtureDir(), { device: dev });
  const batch = r.batch(dev);
  try {
    model.setStage(2);
    const opt = new AdamW(
      model.parameters().filter((p) => p.requiresGrad),
      { lr: 1e-5, weightDecay: 0 },
    );
    const step = (): void => {
      L.tidy(() => model.loss(batch).loss.backward());
      opt.stepUpdate();
      opt.zeroGrad();
    };
    step(); // first step: optimizer state and the allocator's blocks come into being
    step();
    const snap = (): Record<string, number> => {
      const m = L.memory();
      const d = dev === 'cuda' ? m.cuda! : m.cpu;
      return {
        numTensors: m.numTensors,
        storages: d.storages,
        bytes: d.bytes,
        deviceMallocs: d.deviceMallocs ?? -1,
        bytesInUse: d.bytesInUse ?? -1,
        bytesCached: d.bytesCached ?? -1,
      };
    };
    const before = snap();
    for (let i = 0; i < 3; i++) step();
    const after = snap();
    opt.dispose();
    // On the CPU stand-in of --self-test, blocks under 16 KiB bypass the host cache and each counts as an
    // allocation from the OS, so only the CUDA allocator is held to a flat allocation count.
    const keys = ['numTensors', 'storages', 'bytes', 'bytesInUse', ...(dev === 'cuda' ? ['deviceMallocs'] : [])];
    const flat = keys.filter((k) => before[k] !== after[k]);
    return {
      name: 'caching allocator steady state (3 tiny-LLaVA stage-2 steps)',
      pass: flat.length === 0,
      detail: flat.length
        ? `changed across steps: ${flat.map((k) => `${k} ${before[k]} -> ${after[k]}`).join(', ')}`
        : `flat: deviceMallocs ${after.deviceMallocs}, bytesInUse ${after.bytesInUse}, cached ${after.bytesCached}, tensors ${after.numTensors}`,
      values: { before, after },
    };
  } finally {
    batch.pixelValues?.dispose();
    model.dispose();
  }
}

function oomIsAnError(dev: L.Device): Check[] {
  const out: Check[] = [];
  for (const [label, n] of [
    ['1 TiB', 2 ** 38],
    ['200 GiB', 50 * 2 ** 30],
  ] as [string, number][]) {
    const t0 = L.memory().numTensors;
    let msg = '';
    let threw = false;
    try {
      const t = L.empty([n], { dtype: 'float32', device: dev });
      t.dispose();
    } catch (e) {
      threw = e instanceof Error;
      msg = (e as Error).message;
    }
    const named = /out of memory/i.test(msg);
    out.push({
      name: `allocating ${label} on ${dev} throws a JS Error`,
      pass: dev === 'cuda' ? threw && named && L.memory().numTensors === t0 : true,
      detail: threw ? msg.slice(0, 300) : dev === 'cuda' ? 'no error was thrown' : 'CPU stand-in: allocation did not fail (not a CUDA check)',
    });
  }
  // Still usable: a 1 GiB allocation, a matmul against the CPU, readback, stats.
  let ok = false;
  let detail = '';
  try {
    ok = L.tidy(() => {
      const big = L.full([256, 1024, 1024], 1, { dtype: 'float32', device: dev });
      L.copyInto(L.select(big, 0, 255), L.full([1024, 1024], 2, { device: dev }));
      const s = L.max(big).item() + L.sum(L.select(big, 0, 0)).item();
      const a = L.tensor(
        Float32Array.from({ length: 64 * 48 }, (_, i) => Math.sin(i)),
        { shape: [64, 48], device: dev },
      );
      const b = L.tensor(
        Float32Array.from({ length: 48 * 32 }, (_, i) => Math.cos(i)),
        { shape: [48, 32], device: dev },
      );
      const c = L.matmul(a, b).dataSync();
      const ref = L.matmul(L.to(a, 'cpu'), L.to(b, 'cpu')).dataSync();
      let err = 0;
      for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs((c[i] as number) - (ref[i] as number)));
      detail = `1 GiB tensor ok (max + row sum = ${s}); matmul max err vs cpu ${err.toExponential(2)}`;
      return s === 2 + 2 ** 20 && err < 1e-4;
    });
  } catch (e) {
    detail = `error after OOM: ${(e as Error).message}`;
  }
  out.push({ name: 'the process stays usable after the OOM errors', pass: ok, detail });
  return out;
}

// ------------------------------------------------------------------ (c) bench
function runBench(o: Opts, device: 'cuda' | 'cpu', extra: string[]): Promise<{ rc: number | null; lines: unknown[]; wall_s: number }> {
  const compiled = !__filename.endsWith('.ts');
  const script = compiled ? path.resolve(__dirname, '..', '..', 'bench', 'run.js') : path.resolve(__dirname, '..', '..', 'bench', 'run.ts');
  const args = [
    ...(compiled ? [] : ['--import', 'tsx']),
    script,
    '--device',
    device,
    '--out',
    path.join(OUT, `bench_${device}.jsonl`),
    ...(o.quick ? ['--quick'] : []),
    ...extra,
  ];
  log(`# bench: ${path.basename(process.execPath)} ${args.join(' ')}`);
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: unknown[] = [];
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        log(`bench ${line}`);
        try {
          lines.push(JSON.parse(line));
        } catch {
          /* not JSON */
        }
      }
    });
    child.stderr.on('data', (d: Buffer) =>
      d
        .toString()
        .split('\n')
        .filter(Boolean)
        .forEach((l) => log(`bench! ${l}`)),
    );
    child.on('close', (rc) => resolve({ rc, lines, wall_s: (Date.now() - t0) / 1000 }));
  });
}

// ------------------------------------------------------------------ (d) host CPU
/** Phase (d): its checks, which the summary line counts beside the parity and memory checks. */
async function hostAmx(o: Opts): Promise<Check[]> {
  if (o.filter && !o.filter.test('cpu_amx')) return [];
  const host = hostCpu();
  report.hostCpu = host;
  log(`# (d) host CPU: ${host.model}; our kernels detect ${host.detected}; ${host.threads} threads`);
  const emulate = host.detected !== 'amx';
  if (emulate && !o.selfTest) {
    log(`SKIP cpu_amx: the host CPU runs ${host.detected}, not AMX (no AMX-TILE/AMX-BF16, or the kernel refused the tile state)`);
    return [];
  }
  const cases = amxParity({ small: emulate || o.quick });
  report.cpuAmx = cases;
  for (const c of cases) log(`${c.pass ? 'PASS' : 'FAIL'} cpu_amx/${c.name}${emulate ? ' (emulated)' : ''} | ${c.detail}`);
  save();
  if (!emulate) {
    const rows = amxTiming(o.quick ? 3 : 7);
    report.cpuAmxTiming = rows;
    for (const r of rows)
      log(`# cpu_amx timing ${r.case}: amx ${r.amx_ms} ms (${r.amx_gflops} GFLOP/s), ${r.vs_avx512bf16}x the AVX512-BF16 tile, ${r.vs_f32}x our f32`);
    save();
    if (o.bench) {
      const b = await runBench(o, 'cpu', ['--filter', '^(matmul square (1024|2048) bfloat16|linear) ']);
      report.benchCpu = b;
      log(`# cpu bench exited ${b.rc} after ${b.wall_s.toFixed(1)} s`);
    }
  }
  return cases.map((c) => ({ name: `cpu_amx/${c.name}`, pass: c.pass, detail: c.detail }));
}

// ------------------------------------------------------------------ main
async function main(): Promise<number> {
  const o = parse(process.argv.slice(2));
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(logFile, '');
  const t0 = Date.now();
  const available = L.cuda.isAvailable();
  Object.assign(report, {
    node: process.version,
    started: new Date().toISOString(),
    cuda: available,
    device: L.cuda.describe(),
    threads: native.numThreads(),
  });
  if (!available && !o.selfTest) {
    const reason = L.cuda.describe();
    log(`SKIP gpu check: CUDA unavailable (${reason})`);
    Object.assign(report, { skipped: 'cuda', reason });
    save();
    console.log(JSON.stringify({ skipped: 'cuda', reason }));
    // A GPU host whose driver failed still has its CPU: (d) runs where that CPU has AMX.
    const host = await hostAmx(o);
    save();
    return host.every((c) => c.pass) ? 0 : 1;
  }
  const dev: L.Device = available ? 'cuda' : 'cpu';
  log(
    `# gpu check on ${dev}${o.selfTest && !available ? ' (SELF-TEST: the CPU stands in for the GPU; proves nothing about CUDA)' : ''}: ${L.cuda.describe()}; node ${process.version}; OUT=${OUT}`,
  );
  if (available) {
    const cpuK = new Set(native.kernels(0));
    const cudaK = new Set(native.kernels(1));
    const missing = [...cpuK].filter((k) => !cudaK.has(k));
    report.kernels = { cpu: cpuK.size, cuda: cudaK.size, missingOnCuda: missing };
    log(`# kernels: ${cudaK.size} on cuda, ${cpuK.size} on cpu${missing.length ? `; missing on cuda: ${missing.join(', ')}` : ''}`);
  }

  // (a) parity
  const cases = parityCases().filter((c) => (!o.filter || o.filter.test(`${c.group}/${c.name}`)) && !(o.quick && c.slow));
  log(`# (a) device parity: ${cases.length} cases, ${dev} vs cpu`);
  const results: CaseResult[] = [];
  for (const c of cases) {
    const r = runParityCase(c, dev, 'cpu');
    results.push(r);
    log(formatResult(r));
    if (results.length % 20 === 0) {
      report.parity = results;
      save();
    }
  }
  const failed = results.filter((r) => !r.pass);
  report.parity = results;
  report.paritySummary = {
    total: results.length,
    passed: results.length - failed.length,
    failed: failed.length,
    failedNames: failed.map((r) => `${r.group}/${r.name}`),
  };
  log(`# parity: ${results.length - failed.length} passed, ${failed.length} failed`);
  save();

  // (b) memory
  const mem: Check[] = [];
  if (!o.filter || o.filter.test('memory')) {
    log('# (b) memory');
    try {
      mem.push(memorySteadyState(dev));
    } catch (e) {
      mem.push({ name: 'caching allocator steady state', pass: false, detail: `error: ${(e as Error).message}` });
    }
    mem.push(...oomIsAnError(dev));
    for (const m of mem) log(`${m.pass ? 'PASS' : 'FAIL'} memory/${m.name} | ${m.detail}`);
    if (dev === 'cuda') L.emptyCache();
    report.memory = mem;
    report.memoryAfter = L.memory();
    save();
  }

  // (b) end to end: `llava verify` on the device in f32 and bf16, the demo trained on the device and the CPU
  const e2e: Check[] = [];
  if (!o.filter || o.filter.test('e2e')) {
    log('# (b) end to end: llava verify, demo training, continuous batching');
    const guard = async (name: string, f: () => Promise<Check>): Promise<void> => {
      try {
        e2e.push(await f());
      } catch (e) {
        e2e.push({ name, pass: false, detail: `error: ${(e as Error).message}` });
      }
      const c = e2e[e2e.length - 1];
      log(`${c.pass ? 'PASS' : 'FAIL'} e2e/${c.name} | ${c.detail}`);
    };
    for (const dtype of ['float32', 'bfloat16'] as const) await guard(`llava verify ${dtype}`, () => verifyOnDevice(dev, dtype, log));
    if (o.demoSteps > 0) await guard('demo training', () => demoParity(dev, o.quick ? Math.min(5, o.demoSteps) : o.demoSteps));
    await guard('continuous batching', () => servingParity(dev));
    report.e2e = e2e;
    save();
  }

  // (c) bench
  if (o.bench) {
    // In a self-test the bench runs its GPU table on the CPU at toy sizes (checks the spawn and the parse).
    if (o.selfTest && !available) o.benchArgs.push('--gpu-dry-run', '--no-peers');
    log(`# (c) bench --device cuda${o.selfTest && !available ? ' (dry run on the CPU)' : ''}`);
    const b = await runBench(o, 'cuda', o.benchArgs);
    report.bench = b;
    log(`# bench exited ${b.rc} after ${b.wall_s.toFixed(1)} s`);
  }

  // (d) host CPU
  const host = await hostAmx(o);

  const checks = [...mem, ...e2e, ...host];
  const checksFailed = checks.filter((m) => !m.pass).length;
  const wall = (Date.now() - t0) / 1000;
  report.wall_s = wall;
  report.ok = failed.length === 0 && checksFailed === 0;
  save();
  log(
    `${results.length + checks.length - failed.length - checksFailed} passed, ${failed.length + checksFailed} failed (${wall.toFixed(1)} s; ${jsonFile})`,
  );
  return report.ok ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(e);
    try {
      Object.assign(report, { error: String((e as Error).stack ?? e) });
      save();
    } catch {
      /* OUT not writable */
    }
    process.exitCode = 2;
  },
);
