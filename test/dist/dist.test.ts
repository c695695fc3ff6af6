// Data-parallel training over MPI with 2 processes on the tiny fixture (f32), against one process with the
// same global batch: lib/dist (collectives, timeouts) and lib/app/train/distributed.ts (ddp, zero1, zero2,
// zero3; gradient buckets started during backward by the grad-ready hooks, or after it; sharded
// checkpoints, resumed by the same or another number of processes). The ranks run test/dist/worker.ts under
// mpirun; the one-process reference runs here. Skipped, with the reason, when mpirun is missing (.ci/run
// installs Open MPI).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync, execFileSync } from 'child_process';
import { loadLlava } from '../../lib/models/loader';
import { LlavaDataset } from '../../lib/app/train/dataset';
import { makeDemoData } from '../../lib/app/train/demo_data';
import { Trainer } from '../../lib/app/train/trainer';
import { TEST_DIR } from '../helpers';
import { tinyDatasetSpec } from '../tiny_dataset';

const ROOT = path.join(TEST_DIR, '..');
const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const STEPS = 10;

function mpirunPath(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v mpirun'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}
const mpirun = mpirunPath();
if (!mpirun) t.plan(0, 'mpirun not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev)');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-dist-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs worker.ts on 2 ranks; returns exit status, output and seconds. */
function launch(job: object, timeoutS: number): { status: number | null; out: string; seconds: number } {
  const t0 = Date.now();
  const r = spawnSync(
    mpirun!,
    ['-np', '2', '--oversubscribe', process.execPath, '--import', 'tsx', path.join('test', 'dist', 'worker.ts'), JSON.stringify(job)],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: timeoutS * 1000,
      env: { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_btl: 'self,vader,tcp' },
    },
  );
  return { status: r.status, out: `${r.stdout}\n${r.stderr}`, seconds: (Date.now() - t0) / 1000 };
}

/** ||a - b|| / ||b|| */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30);
}

interface RunFile {
  losses: number[];
  buckets: { duringBackward: number; total: number };
  zero3: { gathers: number; prefetches: number; dropped: number; peakBlocks: number; released: number; trainable: number } | null;
  weights: Record<string, number[]>;
  globalBatch: number;
}

t.test('2 MPI ranks: collectives, ddp = one process, zero1/2/3 = ddp, sharded resume', async (t) => {
  const demo = makeDemoData(path.join(tmp, 'demo'));
  const out = path.join(tmp, 'out');
  fs.mkdirSync(out);
  // One process, same global batch (micro 1 x accumulation 2 = micro 1 x accumulation 1 x 2 ranks); and a
  // checkpoint of it after STEPS - 1 steps, which the 2 ranks resume (1 -> 2 processes).
  const ds = LlavaDataset.fromFile(demo.finetuneJson, tinyDatasetSpec(demo.imageFolder));
  const opts = { stage: 2 as const, lr: 1e-3, microBatch: 1, warmupRatio: 0, seed: 3, maxGradNorm: 1, maxSteps: STEPS, progress: 'none' as const, log: () => {} };
  const oneCk = path.join(tmp, 'one-ck');
  {
    const m = loadLlava(FIX);
    const tr1 = new Trainer(m, ds, { ...opts, gradAccum: 2, outputDir: oneCk, plot: false });
    await tr1.train({ untilStep: STEPS - 1 });
    tr1.dispose();
    m.dispose();
  }
  const model = loadLlava(FIX);
  const tr = new Trainer(model, ds, { ...opts, gradAccum: 2 });
  const ref = await tr.train();
  const frozen = model.namedParameters().filter(([, p]) => !p.requiresGrad).map(([n]) => n);
  const refW = new Map(model.namedParameters().map(([n, p]) => [n, p.dataSync() as Float32Array]));
  tr.dispose();
  model.dispose();

  const run = launch({ mode: 'train', demoDir: path.dirname(demo.finetuneJson), out, steps: STEPS, oneCk }, 240);
  if (run.status !== 0) t.fail(`mpirun failed (${run.status}):\n${run.out.slice(-3000)}`);
  t.equal(run.status, 0, `mpirun -np 2 ran in ${run.seconds.toFixed(1)} s`);
  if (run.status !== 0) return;
  const ranks = [0, 1].map((r) => JSON.parse(fs.readFileSync(path.join(out, `rank${r}.json`), 'utf8')));
  const [c0, c1] = ranks.map((r) => r.collectives);
  t.same(c0.sum, [3, 4, 6], 'all_reduce sum');
  t.same(c0.avgBf16, [1.5, 1, 3], 'all_reduce avg on bf16 (through f32)');
  t.same(c1.avgBf16, c0.avgBf16);
  t.same(c0.max, [1, 0], 'all_reduce max on f64');
  t.same(c0.inFlight.slice(1), [c0.inFlight[0], c0.inFlight[0] - 1], 'a tensor disposed in flight keeps its storage until wait()');
  t.same([c0.reduceScatter, c1.reduceScatter], [[3, 6], [9, 12]], 'reduce_scatter: rank r gets block r summed');
  t.same([c0.allGather, c1.allGather], [[0, 10, 1, 11], [0, 10, 1, 11]], 'all_gather');
  t.same([c0.broadcast, c1.broadcast], [[6, 7], [6, 7]], 'broadcast from rank 1');
  t.match(c0.errors, [/input has 4 elements, expected 2 x 3/, /output has 3 elements/, /root 2 is not a rank/, /unknown reduction 'prod'/, /must be contiguous/]);
  t.match(ranks[0].mismatch, /ranks disagree on the model config: rank 0 differs from rank\(s\) 1/, 'config mismatch detected at start');

  const init = loadLlava(FIX);
  const initW = new Map(init.namedParameters().map(([n, p]) => [n, p.dataSync() as Float32Array]));
  init.dispose();
  t.ok(frozen.length > 0, `${frozen.length} frozen parameters (vision tower)`);

  const names = ['ddp', 'ddp-after-backward', 'zero1', 'zero2', 'zero2-after-backward', 'zero3'];
  const runs = Object.fromEntries(names.map((s) => [s, JSON.parse(fs.readFileSync(path.join(out, `${s}.json`), 'utf8')) as RunFile]));
  t.equal(runs.ddp.globalBatch, 2, 'global batch = micro x accumulation x world');
  t.equal(runs.ddp.losses.length, STEPS);
  const worst = (a: RunFile, refLoss: number[], refWeights: Map<string, ArrayLike<number>>): [number, number] => [
    relDiff(a.losses, refLoss),
    Math.max(...[...refWeights].map(([n, w]) => relDiff(a.weights[n], w))),
  ];
  const [dl, dw] = worst(runs.ddp, ref.history.map((h) => h.loss), refW);
  t.ok(dl <= 1e-6, `ddp losses vs one process: rel diff ${dl.toExponential(2)}`);
  t.ok(dw <= 1e-6, `ddp weights vs one process: worst rel diff ${dw.toExponential(2)}`);
  const ddpW = new Map(Object.entries(runs.ddp.weights));
  for (const s of names.slice(1)) {
    const [l, w] = worst(runs[s], runs.ddp.losses, ddpW);
    t.ok(l <= 1e-6 && w <= 1e-6, `${s} vs ddp (small buckets started during backward): losses ${l.toExponential(2)}, weights ${w.toExponential(2)}`);
  }
  for (const s of ['ddp', 'zero2']) {
    const b = runs[s].buckets;
    t.ok(b.total >= 3 * STEPS && b.duringBackward === b.total, `${s}: all ${b.total} buckets of the ${STEPS} steps started during backward`);
  }
  const mb2 = JSON.parse(fs.readFileSync(path.join(out, 'zero3-mb2.json'), 'utf8')) as RunFile;
  const ddpMb2 = JSON.parse(fs.readFileSync(path.join(out, 'ddp-mb2.json'), 'utf8')) as RunFile;
  const [lm, wm] = worst(mb2, ddpMb2.losses, new Map(Object.entries(ddpMb2.weights)));
  t.ok(lm <= 1e-6 && wm <= 1e-6, `zero3 = ddp across a short last step that rank 1 has no micro-batch in: losses ${lm.toExponential(2)}, weights ${wm.toExponential(2)}`);
  const z3 = runs.zero3.zero3!;
  t.equal(z3.released, z3.trainable, `zero3: between steps all ${z3.trainable} trainable parameters hold no memory (only the rank's shard)`);
  t.equal(z3.peakBlocks, 2, 'zero3: two decoder layers gathered at most (the one running, the next one prefetched)');
  // Per step: layer 1 while layer 0 runs forward, layer 0 while layer 1 is recomputed in backward.
  t.same([z3.prefetches, z3.dropped], [STEPS * 2, 0], `zero3: ${z3.prefetches} prefetches, none unused`);
  // Per step on the tiny fixture's 2 layers: the rest once, each layer for forward and again for backward.
  t.equal(z3.gathers, STEPS * 5, `zero3: ${z3.gathers} all-gathers in ${STEPS} steps`);
  for (const s of ['ddp-after-backward', 'zero2-after-backward']) t.equal(runs[s].buckets.duringBackward, 0, `${s}: none during backward`);
  for (const s of names)
    t.ok(
      frozen.every((n) => Buffer.compare(Buffer.from(Float32Array.from(runs[s].weights[n]).buffer), Buffer.from(initW.get(n)!.buffer)) === 0),
      `${s}: frozen parameters bit-identical`,
    );
  t.ok(ranks[0].ckFiles.includes('optimizer.rank-0-of-2.safetensors') && ranks[0].ckFiles.includes('optimizer.rank-1-of-2.safetensors'), 'one optimizer shard per rank');
  for (const r of ranks) {
    t.equal(r.live.tensors[1], r.live.tensors[0], `rank ${r.rank}: live tensors flat across 13 trainings (${r.live.tensors[0]})`);
    t.ok(r.live.bytes[1] <= r.live.bytes[0], `rank ${r.rank}: live CPU bytes do not grow (${r.live.bytes[0]} -> ${r.live.bytes[1]})`);
  }
  t.same(
    ranks.map((r) => r.stopped),
    [
      [1, true],
      [1, true],
    ],
    'a stop asked on rank 1 stops both ranks after the same step',
  );
  t.same(ranks[0].resumedLosses, [runs.zero2.losses[STEPS - 1]], 'sharded checkpoint -> resume: the same next loss');
  t.same(ranks[0].resumedLosses3, [runs.zero3.losses[STEPS - 1]], 'zero3: sharded checkpoint -> resume: the same next loss');
  const resumed3 = JSON.parse(fs.readFileSync(path.join(out, 'zero3-resumed.json'), 'utf8')) as RunFile;
  const exported = loadLlava(path.join(out, 'ck3'));
  const exportDiff = Math.max(...exported.namedParameters().map(([n, p]) => relDiff(p.dataSync() as Float32Array, resumed3.weights[n])));
  exported.dispose();
  t.equal(exportDiff, 0, 'zero3: the consolidated export loads with loadLlava and equals the trained weights');
  const [l3, w3] = worst(resumed3, runs.zero3.losses.slice(-1), ddpW);
  t.ok(l3 <= 1e-6 && w3 <= 1e-6, `zero3 resumed = ddp after ${STEPS} steps: weights ${w3.toExponential(2)}`);

  // Another world size: the one-process checkpoint resumed by 2 zero3 ranks; the 2-rank zero2 checkpoint
  // resumed by one process (the optimizer state cut again for the new layout, optimizer_shards.ts).
  const fromOne = JSON.parse(fs.readFileSync(path.join(out, 'from-one.json'), 'utf8')) as RunFile;
  const [l12, w12] = worst(fromOne, ref.history.slice(-1).map((h) => h.loss), refW);
  t.ok(l12 <= 1e-6 && w12 <= 1e-6, `1 -> 2 processes (zero3): the next loss ${l12.toExponential(2)} and the weights ${w12.toExponential(2)} as one process`);
  {
    const m = loadLlava(FIX);
    const tr2 = new Trainer(m, ds, { ...opts, gradAccum: 2 });
    tr2.resume(path.join(out, 'two-ck'));
    t.equal(tr2.gradAccum, 2);
    const r = await tr2.train();
    const w = Object.fromEntries(m.namedParameters().map(([n, p]) => [n, Array.from(p.dataSync() as Float32Array)]));
    const [l21, w21] = worst({ ...fromOne, losses: r.history.map((h) => h.loss), weights: w }, ref.history.slice(-1).map((h) => h.loss), refW);
    t.ok(l21 <= 1e-6 && w21 <= 1e-6, `2 -> 1 process (zero2 shards): the next loss ${l21.toExponential(2)} and the weights ${w21.toExponential(2)} as one process`);
    tr2.dispose();
    m.dispose();
  }
});

t.test('a hung rank ends the job with an error within the timeout; a killed rank ends it too', async (t) => {
  const hang = launch({ mode: 'hang', demoDir: tmp, out: tmp, steps: 0 }, 60);
  t.not(hang.status, 0, 'non-zero exit');
  t.match(hang.out, /no answer from the other ranks within 3 s/, 'names the timeout');
  t.ok(hang.seconds < 45, `ended after ${hang.seconds.toFixed(1)} s`);
  const die = launch({ mode: 'die', demoDir: tmp, out: tmp, steps: 0 }, 60);
  t.not(die.status, 0, 'non-zero exit');
  t.match(die.out, /signal 9|Killed|no answer/, 'the launcher reports the dead rank');
  t.ok(die.seconds < 45, `ended after ${die.seconds.toFixed(1)} s`);
});

t.test('llava train --nproc-per-node 2 runs the ranks itself; rank 0 alone prints; zero1 shards the checkpoint', async (t) => {
  const demo = makeDemoData(path.join(tmp, 'cli-demo'));
  const out = path.join(tmp, 'cli-out');
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'lib', 'app', 'cli', 'main.ts'), 'train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson]
      .concat(['--image-folder', demo.imageFolder, '--output', out, '--max-steps', '2', '--batch-size', '4', '--micro-batch-size', '1'])
      .concat(['--nproc-per-node', '2', '--distributed', 'zero1', '--progress', 'plain']),
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
  );
  t.equal(r.status, 0, `exit 0 (${r.stderr.slice(-1500)})`);
  t.match(r.stdout, /starting 2 processes: mpirun -np 2/);
  t.match(r.stdout, /global batch 4 = 1 x 4, .*2 processes \(zero1\)/, 'global batch = micro x accumulation x world');
  t.equal(r.stdout.match(/\[train\] loading/g)?.length, 1, 'one rank prints');
  const ck = path.join(out, 'checkpoint-2');
  t.same(
    fs.readdirSync(ck).filter((f) => f.startsWith('optimizer') || f === 'distributed.json'),
    ['distributed.json', 'optimizer.rank-0-of-2.safetensors', 'optimizer.rank-1-of-2.safetensors'],
  );
  t.equal(fs.readFileSync(path.join(out, 'train_log.jsonl'), 'utf8').trim().split('\n').length, 2, 'one log line per step');
  // --resume takes the checkpoint's per-process accumulation: the global batch stays 4.
  const again = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'lib', 'app', 'cli', 'main.ts'), 'train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson]
      .concat(['--image-folder', demo.imageFolder, '--output', out, '--max-steps', '3', '--resume', '--nproc-per-node', '2', '--distributed', 'zero1']),
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
  );
  t.equal(again.status, 0, `resume exits 0 (${again.stderr.slice(-1500)})`);
  t.match(again.stdout, /global batch 4 = 1 x 4, .*2 processes \(zero1\)/, 'resumed with the same global batch');
  t.match(again.stdout, /resumed from .*checkpoint-2 at step 2\/3/);
  // One process resumes the 2-process zero1 checkpoint: the global batch carries over (accumulation 4).
  const one = spawnSync(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'lib', 'app', 'cli', 'main.ts'), 'train', '--stage', 'finetune', '--model', FIX, '--data', demo.finetuneJson]
      .concat(['--image-folder', demo.imageFolder, '--output', out, '--max-steps', '4', '--resume']),
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
  );
  t.equal(one.status, 0, `2 -> 1 process resume exits 0 (${one.stderr.slice(-1500)})`);
  t.match(one.stdout, /global batch 4 = 1 x 4/, 'one process takes the global batch, accumulation 4');
  t.match(one.stdout, /resumed from .*checkpoint-3 at step 3\/4/);
  // The consolidated export is the usual model folder.
  const m = loadLlava(out);
  t.ok(m.namedParameters().length > 0, 'the final model loads');
  m.dispose();
});
