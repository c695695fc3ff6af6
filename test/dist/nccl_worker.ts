// nccl_worker.ts — one rank of the NCCL-path check (test/cuda/cuda_emu_addon.test.ts), started by mpirun with
// LLAVA_NATIVE at the emulated CUDA addon and LLAVA_NCCL_LIB at the stand-in libnccl (fake_nccl.cc): the
// NCCL id goes through MPI, collectives run on 'cuda' tensors through cpp/dist_nccl.cc, and zero2 and zero3
// training of the tiny fixture on 'cuda' (NCCL) are compared with zero2 on 'cpu' (MPI). Rank 0 prints one JSON line.
import * as path from 'path';
import * as L from '../../lib';
import { loadLlava } from '../../lib/models/loader';
import { LlavaDataset } from '../../lib/app/train/dataset';
import { makeDemoData } from '../../lib/app/train/demo_data';
import { Trainer } from '../../lib/app/train/trainer';
import { DataParallel } from '../../lib/app/train/distributed';
import { TEST_DIR } from '../helpers';
import { tinyDatasetSpec } from '../tiny_dataset';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const dev = { device: 'cuda' as const };

async function main(): Promise<void> {
  const pg = await L.dist.init({ device: 'cuda', timeoutS: 60 });
  const r = pg.rank;
  const out: Record<string, unknown> = { nccl: pg.nccl, mpi: pg.mpi };
  const a = L.tensor([1 + r, 2, 3], { dtype: 'float32', ...dev });
  pg.allReduce(a, 'sum').wait();
  out.sum = a.toNumbers();
  const b = L.tensor([1 + r, 2 * r, 3], { dtype: 'bfloat16', ...dev });
  pg.allReduce(b, 'avg').wait();
  out.avgBf16 = b.toNumbers();
  const rs = L.zeros([2], dev);
  pg.reduceScatter(rs, L.tensor([1, 2, 3, 4].map((x) => x * (r + 1)), { dtype: 'float32', ...dev })).wait();
  out.reduceScatter = rs.toNumbers();
  const ag = L.zeros([4], dev);
  pg.allGather(ag, L.tensor([r, 10 + r], { dtype: 'float32', ...dev })).wait();
  out.allGather = ag.toNumbers();
  const bc = L.tensor([r + 5, r + 6], { dtype: 'float32', ...dev });
  pg.broadcast(bc, 1).wait();
  out.broadcast = bc.toNumbers();
  let mixed = '';
  try {
    pg.reduceScatter(L.zeros([2], dev), L.zeros([4]));
  } catch (e) {
    mixed = (e as Error).message;
  }
  out.mixed = mixed;

  const demo = makeDemoData(path.join(process.argv[2], `demo-${r}`));
  const losses: Record<string, number[]> = {};
  const runs = [
    ['cpu', 'zero2'],
    ['cuda', 'zero2'],
    ['cuda', 'zero3'],
  ] as const;
  for (const [device, strategy] of runs) {
    const ds = LlavaDataset.fromFile(demo.finetuneJson, tinyDatasetSpec(demo.imageFolder));
    const model = loadLlava(FIX, { device });
    const par = new DataParallel(pg, strategy);
    const tr = new Trainer(model, ds, { stage: 2, lr: 1e-3, microBatch: 1, gradAccum: 1, maxSteps: 2, warmupRatio: 0, seed: 3, progress: 'none', log: () => {}, parallel: par });
    losses[`${device}${strategy === 'zero3' ? '-zero3' : ''}`] = (await tr.train()).history.map((h) => h.loss);
    tr.dispose();
    par.dispose();
    model.dispose();
  }
  out.losses = losses;
  if (r === 0) console.log(`NCCL_RESULT ${JSON.stringify(out)}`);
  pg.destroy();
}

main().catch((e) => {
  console.error(e);
  L.dist.processGroup()?.abort(String((e as Error).stack ?? e), 2);
  process.exit(2);
});
