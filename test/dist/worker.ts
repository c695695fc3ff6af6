// worker.ts — one rank of the 2-process tests in dist.test.ts, started by mpirun (never by tap: the name has
// no .test.ts). argv[2] is a JSON job: { mode, demoDir, out, steps, oneCk }. Modes:
//   train  collectives on CPU tensors, then the tiny fixture trained with ddp, zero1, zero2 and zero3, with
//          gradient buckets reduced during or after backward (losses, final weights, bucket and zero3
//          counts written by rank 0 to out/<run>.json), zero2 and zero3 sharded checkpoints resumed for one
//          more step, and a one-process checkpoint (job.oneCk) resumed by both ranks;
//   hang   rank 1 stops itself (SIGSTOP); rank 0's all-reduce must time out and abort the job;
//   die    rank 1 is killed (SIGKILL) before the all-reduce; the launcher must end rank 0.
import * as fs from 'fs';
import * as path from 'path';
import * as L from '../../lib';
import { loadLlava } from '../../lib/models/loader';
import { LlavaDataset } from '../../lib/app/train/dataset';
import { Trainer } from '../../lib/app/train/trainer';
import { DataParallel, type Strategy } from '../../lib/app/train/distributed';
import { findCheckpoint } from '../../lib/app/train/train_state';
import { TEST_DIR } from '../helpers';
import { tinyDatasetSpec } from '../tiny_dataset';

interface Job {
  mode: 'train' | 'hang' | 'die';
  /** A one-process checkpoint folder the ranks resume (1 -> 2 processes). */
  oneCk?: string;
  demoDir: string;
  out: string;
  steps: number;
}
const job = JSON.parse(process.argv[2]) as Job;
const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const f32 = { dtype: 'float32' as const };

export const trainOptions = (steps: number) => ({
  stage: 2 as const,
  lr: 1e-3,
  microBatch: 1,
  warmupRatio: 0,
  seed: 3,
  maxGradNorm: 1,
  maxSteps: steps,
  progress: 'none' as const,
  log: () => {},
});

function dataset(): LlavaDataset {
  return LlavaDataset.fromFile(path.join(job.demoDir, 'finetune.json'), tinyDatasetSpec(path.join(job.demoDir, 'images')));
}

function collectives(pg: L.dist.ProcessGroup): Record<string, unknown> {
  const r = pg.rank;
  const out: Record<string, unknown> = {};
  const a = L.tensor([1 + r, 2, 3], f32);
  const w = pg.allReduce(a, 'sum');
  w.wait();
  out.sum = a.toNumbers();
  const b = L.tensor([1 + r, 2 * r, 3], { dtype: 'bfloat16' });
  pg.allReduce(b, 'avg').wait();
  out.avgBf16 = b.toNumbers();
  const mx = L.tensor([r, -r], { dtype: 'float64' });
  pg.allReduce(mx, 'max').wait();
  out.max = mx.toNumbers();
  const rs = L.zeros([2]);
  pg.reduceScatter(rs, L.tensor([1, 2, 3, 4].map((x) => x * (r + 1)), f32)).wait();
  out.reduceScatter = rs.toNumbers();
  const ag = L.zeros([4]);
  pg.allGather(ag, L.tensor([r, 10 + r], f32)).wait();
  out.allGather = ag.toNumbers();
  const bc = L.tensor([r + 5, r + 6], f32);
  pg.broadcast(bc, 1).wait();
  out.broadcast = bc.toNumbers();
  pg.barrier().wait();
  // Disposed while in flight: the storage lives until wait(), then goes.
  const d = L.tensor([1, 2], f32);
  const live = L.memory().cpu.storages;
  const wd = pg.allReduce(d);
  d.dispose();
  const during = L.memory().cpu.storages;
  wd.wait();
  out.inFlight = [live, during, L.memory().cpu.storages];
  const errors: string[] = [];
  for (const bad of [
    () => pg.reduceScatter(L.zeros([3]), L.zeros([4])),
    () => pg.allGather(L.zeros([3]), L.zeros([2])),
    () => pg.broadcast(L.zeros([2]), 2),
    () => pg.allReduce(L.zeros([2]), 'prod' as 'sum'),
    () => pg.allReduce(L.zeros([2, 2]).transpose(0, 1)),
  ])
    try {
      bad();
      errors.push('no error');
    } catch (e) {
      errors.push((e as Error).message);
    }
  out.errors = errors;
  return out;
}

// Small buckets (the tiny model is ~1 MB): several buckets, started during backward by the grad hooks.
const SMALL = { bucketMB: 0.05 };

async function train(
  pg: L.dist.ProcessGroup,
  strategy: Strategy,
  o: { outputDir?: string; until?: number; resume?: boolean; bucketMB?: number; overlap?: boolean; microBatch?: number } = {},
) {
  const model = loadLlava(FIX);
  const par = new DataParallel(pg, strategy, { bucketMB: o.bucketMB, overlap: o.overlap });
  par.checkSame('model config', model.config);
  const tr = new Trainer(model, dataset(), { ...trainOptions(job.steps), microBatch: o.microBatch ?? 1, gradAccum: 1, parallel: par, outputDir: o.outputDir, plot: false, baseModelDir: FIX });
  if (o.resume) tr.resume(findCheckpoint(o.outputDir!)!);
  const r = await tr.train({ untilStep: o.until });
  const buckets = par.bucketCounts;
  // zero3: between steps the trainable parameters hold no memory (only this rank's shard exists).
  const zero3 = par.zero3Stats && { ...par.zero3Stats, released: tr.trainable.filter(([, p]) => p.isReleased).length, trainable: tr.trainable.length };
  tr.dispose();
  par.dispose(); // zero3 makes the parameters whole again
  const weights = Object.fromEntries(model.namedParameters().map(([n, p]) => [n, Array.from(p.dataSync() as Float32Array)]));
  model.dispose();
  return { losses: r.history.map((h) => h.loss), weights, globalBatch: tr.globalBatch, buckets, zero3 };
}

async function main(): Promise<void> {
  const pg = await L.dist.init({ timeoutS: job.mode === 'train' ? 60 : 3 });
  if (job.mode !== 'train') {
    if (pg.rank === 1) process.kill(process.pid, job.mode === 'hang' ? 'SIGSTOP' : 'SIGKILL');
    const t0 = Date.now();
    try {
      pg.allReduce(L.ones([4])).wait();
    } catch (e) {
      pg.abort(`${(e as Error).message} (after ${((Date.now() - t0) / 1000).toFixed(1)} s)`, 3);
    }
    return;
  }
  const res: Record<string, unknown> = { rank: pg.rank, world: pg.worldSize, collectives: collectives(pg) };
  const before = L.memory();
  const runs: [string, Strategy, { bucketMB?: number; overlap?: boolean; microBatch?: number }][] = [
    ['ddp', 'ddp', SMALL],
    ['ddp-after-backward', 'ddp', { overlap: false }], // one 25 MB bucket, reduced after backward
    ['zero1', 'zero1', SMALL],
    ['zero2', 'zero2', SMALL],
    ['zero2-after-backward', 'zero2', { ...SMALL, overlap: false }],
    ['zero3', 'zero3', {}],
    // Micro-batches of 2: the epoch ends with a short step of one micro-batch, which rank 1 has none of
    // (zero3 then repeats its last micro-batch weighted 0, so that both ranks gather alike).
    ['ddp-mb2', 'ddp', { microBatch: 2 }],
    ['zero3-mb2', 'zero3', { microBatch: 2 }],
  ];
  for (const [name, s, o] of runs) {
    const r = await train(pg, s, o);
    if (pg.rank === 0) fs.writeFileSync(path.join(job.out, `${name}.json`), JSON.stringify(r));
    res[name] = r.losses;
  }
  // Frozen parameters (the vision tower in stage 2) stay bit-identical: compare against a fresh load after a run.
  // zero2 checkpoint after step `steps - 1`, resumed for the last step.
  const ck = path.join(job.out, 'ck');
  await train(pg, 'zero2', { ...SMALL, outputDir: ck, until: job.steps - 1 });
  res.ckFiles = fs.readdirSync(findCheckpoint(ck)!).sort();
  // Kept for the one-process resume in dist.test.ts (2 -> 1); the resume below replaces it in ck.
  if (pg.rank === 0) fs.cpSync(findCheckpoint(ck)!, path.join(job.out, 'two-ck'), { recursive: true });
  const resumed = await train(pg, 'zero2', { ...SMALL, outputDir: ck, resume: true });
  res.resumedLosses = resumed.losses;
  // The same for zero3, whose resumed run ends with the consolidated export (rank 0 writes what it trained).
  const ck3 = path.join(job.out, 'ck3');
  await train(pg, 'zero3', { outputDir: ck3, until: job.steps - 1 });
  const resumed3 = await train(pg, 'zero3', { outputDir: ck3, resume: true });
  res.resumedLosses3 = resumed3.losses;
  if (pg.rank === 0) fs.writeFileSync(path.join(job.out, 'zero3-resumed.json'), JSON.stringify(resumed3));
  // 1 -> 2 processes: a copy of the one-process checkpoint resumed by both ranks under zero3.
  const fromOne = path.join(job.out, 'from-one');
  if (pg.rank === 0) fs.cpSync(job.oneCk!, fromOne, { recursive: true });
  pg.barrier().wait();
  const r1 = await train(pg, 'zero3', { outputDir: fromOne, resume: true });
  if (pg.rank === 0) fs.writeFileSync(path.join(job.out, 'from-one.json'), JSON.stringify(r1));
  {
    // A stop asked on rank 1 only (its signal): both ranks stop after the same step.
    const model = loadLlava(FIX);
    const par = new DataParallel(pg, 'ddp');
    const tr = new Trainer(model, dataset(), { ...trainOptions(job.steps), gradAccum: 1, parallel: par });
    par.onStop = () => tr.requestStop();
    if (pg.rank === 1) par.requestStop();
    const r = await tr.train();
    res.stopped = [r.steps, r.interrupted];
    tr.dispose();
    par.dispose();
    model.dispose();
  }
  const after = L.memory();
  res.live = { tensors: [before.numTensors, after.numTensors], bytes: [before.cpu.bytes, after.cpu.bytes] };
  let e = '';
  try {
    new DataParallel(pg, 'zero2').checkSame('model config', { rank: pg.rank });
  } catch (err) {
    e = (err as Error).message;
  }
  res.mismatch = e;
  fs.writeFileSync(path.join(job.out, `rank${pg.rank}.json`), JSON.stringify(res));
  pg.destroy();
}

main().catch((e) => {
  const pg = L.dist.processGroup();
  if (pg) pg.abort((e as Error).stack ?? String(e), 2);
  console.error(e);
  process.exit(2);
});
