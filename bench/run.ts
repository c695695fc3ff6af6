// run.ts — `npm run bench` (node dist/bench/run.js): the engine's benchmark cases, one JSON line each.
//
//   npm run bench -- [--filter REGEX] [--quick] [--device cpu|cuda|all] [--out FILE] [--json]
//   npx tsx bench/run.ts --quick --device cpu          (from the source tree)
//
// Each line: {op, scenario, dtype, device, shape, median_ms, gflops | tflops (CUDA) | gbps | tokens_per_s,
// baseline, baseline_ms, ratio, samples}. The baseline is measured in the same run: numpy for CPU matmul
// (bench/numpy_peer.py); for the fused ops on the CPU, PyTorch on the CPU when it is installed, numpy
// otherwise, with the engine's own composite fallback beside it (composite_ms, composite_ratio); PyTorch
// on the GPU (bench/torch_peer.py). ratio = baseline_ms / median_ms, so > 1 means the engine is faster.
// After the JSON lines comes a readable table of them (--json leaves it out), and with --out FILE a PNG
// chart of the ratios is written beside FILE (bench/report.ts). --rounds N runs the CPU cases N times
// (peer, then ours, each round): the lines of a round carry `round`, and one line per case follows with
// `rounds`, the medians over the rounds, and ratio_min / ratio_max of the per-round ratios; the table
// shows those (the machine's speed can drift between a peer's run and ours).
// The first line names the run (node version, CUDA device or null, options); lines with `skipped` say
// why a group did not run (no numpy, no torch, no CUDA); a final `summary` line per device gives the
// wall time and the live tensor count (a leak shows there). GPU timings are host-side (hrtime around
// calls closed by cuda.synchronize()), so they include N-API launch overhead; the peer uses CUDA events.
// Cases live in cpu_cases.ts, serve_cases.ts (continuous batching), tfjs_cases.ts (TensorFlow.js on llava vs
// tfjs-backend-cpu/wasm) and gpu_cases.ts; timing and output in harness.ts.
import * as L from '../lib';
import { BenchOptions, closeOut, emit, emitted, openOut, parseOptions, setRound } from './harness';
import { combineRounds, finishReport } from './report';
import { runCpuCases } from './cpu_cases';
import { runGpuCases } from './gpu_cases';
import { runDistCases } from './dist_cases';
import { runServeCases } from './serve_cases';

/**
 * The TensorFlow.js cases, loaded here rather than imported: TensorFlow.js is a peer dependency (with its
 * backends and tsx for its gradients), absent from a production install such as the GPU check's carry, where
 * the rest of the bench must still run. Without it a `skipped` line says why.
 */
async function tfjsCases(opts: BenchOptions): Promise<void> {
  let mod: typeof import('./tfjs_cases');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require('./tfjs_cases');
  } catch (e) {
    emit({ op: 'tfjs', device: 'cpu', skipped: 'tfjs', reason: `TensorFlow.js did not load: ${(e as Error).message.split('\n')[0]}` });
    return;
  }
  await mod.runTfjsCases(opts);
}

async function main(): Promise<number> {
  let opts;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  openOut(opts.out);
  try {
    emit({
      bench: 'llava-node',
      node: process.version,
      cuda: L.cuda.isAvailable() ? L.cuda.describe() : null,
      quick: opts.quick,
      device: opts.device,
    });
    if (opts.gpuDryRun) runGpuCases(opts);
    else {
      if (opts.device === 'cpu' || opts.device === 'all') {
        for (let r = 1; r <= opts.rounds; r++) {
          if (opts.rounds > 1) setRound(r);
          runCpuCases(opts);
        }
        setRound(null);
        if (opts.rounds > 1) combineRounds(emitted).forEach((rec) => emit(rec));
        runDistCases(opts);
        await runServeCases(opts);
        await tfjsCases(opts);
      }
      if (opts.device === 'cuda' || opts.device === 'all') runGpuCases(opts);
    }
  } finally {
    closeOut();
  }
  finishReport(emitted, opts);
  return 0;
}

main().then((code) => {
  process.exitCode = code;
});
