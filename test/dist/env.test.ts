// lib/dist without a second process: launcher variables, the TCP rendezvous of the NCCL id, a world of one
// (every collective the identity), clear errors when MPI or NCCL cannot be opened, and the trainer's
// per-rank plan, batch split and mpirun command line (lib/app/train/distributed.ts, launch.ts).
import t from 'tap';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import * as L from '../../lib';
import { readDistEnv, exchangeId, ncclCandidates, ProcessGroup, pinLocalGpu } from '../../lib/dist';
import { DataParallel, readDistRecord, loadCheckpointOptimizer, DIST_FILE } from '../../lib/app/train/distributed';
import type { AdamW } from '../../lib/optim/adamw';
import { perRankBatching, withoutFlag, mpirunArgs } from '../../lib/app/train/launch';

t.test('launcher variables', async (t) => {
  t.match(readDistEnv({}), { launcher: 'none', rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 29500 });
  t.match(
    readDistEnv({ OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '1', OMPI_COMM_WORLD_LOCAL_SIZE: '2' }),
    { launcher: 'mpirun', rank: 3, worldSize: 4, localRank: 1, localWorldSize: 2 },
  );
  t.match(readDistEnv({ RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '1234' }), {
    launcher: 'torchrun',
    rank: 1,
    localRank: 1,
    masterAddr: '10.0.0.1',
    masterPort: 1234,
  });
  t.match(readDistEnv({ SLURM_PROCID: '5', SLURM_NTASKS: '8', SLURM_LOCALID: '1' }), { launcher: 'slurm', rank: 5, worldSize: 8, localRank: 1 });
  t.throws(() => readDistEnv({ RANK: '2', WORLD_SIZE: '2' }), /RANK=2 is not below WORLD_SIZE=2/);
  t.throws(() => readDistEnv({ RANK: 'x', WORLD_SIZE: '2' }), /RANK="x" is not an integer/);
  t.throws(() => readDistEnv({ RANK: '0' }), /must be set together/);
  t.throws(() => readDistEnv({ RANK: '0', WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '2' }), /rank 1 of 2.*rank 0 of 2/);
  t.throws(() => readDistEnv({ MASTER_PORT: '70000' }), /not a TCP port/);
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

t.test('TCP rendezvous hands rank 0 id to every rank; a missing rank 0 times out', async (t) => {
  const port = await freePort();
  const id = Buffer.alloc(128, 7);
  id[0] = 42;
  const common = { worldSize: 3, addr: '127.0.0.1', port, timeoutS: 10 };
  // The other ranks start first: they retry until rank 0 listens.
  const others = [1, 2].map((rank) => exchangeId({ ...common, rank, payload: null }));
  await new Promise((r) => setTimeout(r, 200));
  const got = await Promise.all([exchangeId({ ...common, rank: 0, payload: id }), ...others]);
  for (const g of got) t.ok(g.equals(id), '128 bytes delivered');
  await t.rejects(exchangeId({ ...common, port: await freePort(), rank: 1, payload: null, timeoutS: 0.5 }), /could not reach rank 0 .* within 0.5 s/);
});

t.test('a world of one: collectives are the identity; errors name the cause', async (t) => {
  const pg = await L.dist.init({ env: {} });
  t.equal(pg.worldSize, 1);
  const a = L.tensor([1, 2], { dtype: 'float32' });
  pg.allReduce(a, 'avg').wait();
  t.same(a.toNumbers(), [1, 2]);
  const out = L.zeros([2]);
  pg.allGather(out, a).wait();
  t.same(out.toNumbers(), [1, 2]);
  pg.barrier().wait();
  t.throws(() => pg.allGather(L.zeros([3]), a), /expected 1 x 2/);
  t.throws(() => pg.allReduce(a, 'prod' as 'sum'), /unknown reduction/);
  pg.destroy();
  t.throws(() => pg.allReduce(a), /destroyed/);
  a.dispose();
  t.throws(() => pg.allReduce(a), /disposed/);
  // Several ranks but the library cannot be opened: a clear error at init().
  await t.rejects(
    L.dist.init({ env: { OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '2' }, mpiLib: '/nonexistent/libmpi.so.40' }),
    /MPI is not available: could not open\n {2}\/nonexistent\/libmpi.so.40/,
  );
  await t.rejects(
    L.dist.init({ env: { RANK: '0', WORLD_SIZE: '2', MASTER_PORT: String(await freePort()) }, device: 'cuda', ncclLib: '/nonexistent/libnccl.so.2' }),
    /NCCL is not available|no CUDA support/,
  );
  const fake = { rank: 0, worldSize: 2 } as unknown as ProcessGroup;
  t.throws(() => new DataParallel(fake, 'zero4' as 'zero3'), /unknown --distributed 'zero4'/);
  t.throws(() => new DataParallel(fake, 'ddp', { bucketMB: 0 }), /bucket size must be a positive number of MB/);
});

t.test('NCCL library search order', async (t) => {
  t.same(ncclCandidates('/x/libnccl.so.2'), ['/x/libnccl.so.2']);
  t.same(ncclCandidates(undefined, { LLAVA_NCCL_LIB: '/y.so' }), ['/y.so']);
  t.equal(ncclCandidates(undefined, {})[0], 'libnccl.so.2');
});

t.test('per-rank plan, batch split and the mpirun command line', async (t) => {
  const plan = [[0], [1], [2], [3], [4], [5], [6]];
  const rank1 = new DataParallel({ rank: 1, worldSize: 2 } as unknown as ProcessGroup, 'ddp').rankPlan(plan, 2);
  // groups of 4 micro-batches; micro-batch j of a group goes to rank j % 2; the short last group too.
  t.same(rank1, [[], [1], [], [3], [], [5], []]);
  t.same(perRankBatching({ globalBatch: 128, microBatch: 16, gradAccum: 8 }, 4, false), { globalBatch: 128, microBatch: 16, gradAccum: 2 });
  t.same(perRankBatching({ globalBatch: 32, microBatch: 16, gradAccum: 2 }, 4, true), { globalBatch: 128, microBatch: 16, gradAccum: 2 });
  t.throws(() => perRankBatching({ globalBatch: 48, microBatch: 16, gradAccum: 3 }, 2, false), /not divisible by micro-batch 16 x 2 processes/);
  t.same(withoutFlag(['a', '--nproc-per-node', '2', 'b', '--nproc-per-node=3'], '--nproc-per-node'), ['a', 'b']);
  const args = mpirunArgs(2, ['node', 'main.js', 'train', '--nproc-per-node', '2', '--lr', '1'], ['--import', 'tsx']);
  t.same(args.slice(0, 2), ['-np', '2']);
  t.same(args.slice(-6), ['--import', 'tsx', 'main.js', 'train', '--lr', '1']);
});

t.test("a checkpoint's record of the processes that wrote it; a missing shard is named", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-ck-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.same(readDistRecord(dir), { worldSize: 1 }, 'one process: no distributed.json');
  t.equal(loadCheckpointOptimizer(dir, null as unknown as AdamW, [], null, 0), false, 'no optimizer file: moments start from zero');
  fs.writeFileSync(path.join(dir, DIST_FILE), JSON.stringify({ strategy: 'zero2', worldSize: 2 }));
  t.same(readDistRecord(dir), { strategy: 'zero2', worldSize: 2 });
  t.throws(() => loadCheckpointOptimizer(dir, null as unknown as AdamW, [], null, 0), /lacks optimizer.rank-0-of-2.safetensors \(a rank died while saving\?\)/);
});

t.test('each rank gets the GPU of its local rank', async (t) => {
  const e1: NodeJS.ProcessEnv = { OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '1' };
  t.equal(pinLocalGpu(e1), '1', 'unset: the local rank');
  const e2: NodeJS.ProcessEnv = { RANK: '2', WORLD_SIZE: '4', LOCAL_RANK: '2', CUDA_VISIBLE_DEVICES: '4,5,6,7' };
  t.equal(pinLocalGpu(e2), '6', "a list: the local rank's entry");
  t.equal(pinLocalGpu({ RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '0', CUDA_VISIBLE_DEVICES: '3' }), '3', 'one device: left alone');
  t.equal(pinLocalGpu({}), undefined, 'one process: left alone');
  t.throws(() => pinLocalGpu({ RANK: '0', WORLD_SIZE: '4', LOCAL_RANK: '3', LOCAL_WORLD_SIZE: '4', CUDA_VISIBLE_DEVICES: '0,1' }), /local rank 3 has no GPU/);
});
