// dist_worker.ts — one rank of the data-parallel bench (dist_cases.ts), started by mpirun: trains the tiny
// fixture (stage 2, f32) for argv[2] optimizer steps of micro-batch 2 per rank with the strategy argv[3]
// (default ddp), gradient buckets of argv[4] MB (default 25) started during backward unless argv[5] is
// 'after-backward'; rank 0 prints one JSON line with the median tokens/s over the steps after the first two
// (tokens of every rank per second).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../lib';
import { loadLlava } from '../lib/models/loader';
import { LlavaDataset, modelSpecFields, resolveProcessorConfig } from '../lib/app/train/dataset';
import { makeDemoData } from '../lib/app/train/demo_data';
import { Trainer } from '../lib/app/train/trainer';
import { DataParallel, type Strategy } from '../lib/app/train/distributed';
import { fixtureDir } from '../test/gpu/fixture';

async function main(): Promise<void> {
  const steps = Number(process.argv[2] ?? 12);
  const strategy = (process.argv[3] ?? 'ddp') as Strategy;
  const bucketMB = Number(process.argv[4] ?? 25);
  const overlap = process.argv[5] !== 'after-backward';
  const pg = await L.dist.init();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `llava-dist-bench-${pg.rank}-`));
  try {
    const demo = makeDemoData(dir);
    const fix = fixtureDir();
    const model = loadLlava(fix);
    const ds = LlavaDataset.fromFile(demo.finetuneJson, {
      imageFolder: demo.imageFolder,
      tokenizerDir: fix,
      processor: resolveProcessorConfig(fix),
      template: 'v1',
      aspect: 'square',
      ...modelSpecFields(model),
    });
    const par = pg.worldSize > 1 ? new DataParallel(pg, strategy, { bucketMB, overlap }) : undefined;
    const tr = new Trainer(model, ds, {
      stage: 2,
      lr: 1e-4,
      microBatch: 2,
      gradAccum: 1,
      maxSteps: steps,
      progress: 'none',
      log: () => {},
      parallel: par,
    });
    const r = await tr.train();
    const tps = r.history
      .slice(2)
      .map((h) => h.tokens_per_s)
      .sort((a, b) => a - b);
    if (pg.rank === 0) console.log(JSON.stringify({ procs: pg.worldSize, tokens_per_s: tps[Math.floor(tps.length / 2)], steps }));
    tr.dispose();
    par?.dispose();
    model.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  pg.destroy(); // after success only: a failed rank aborts the job (below) instead of waiting in finalize
}

main().catch((e) => {
  console.error(e);
  L.dist.processGroup()?.abort(String(e), 2);
  process.exit(2);
});
