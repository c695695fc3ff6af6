// gemm_tile.test.ts — the CUDA GEMM's tile knob (native.cudaGemmTile and LLAVA_CUDA_GEMM_TILE,
// cpp/kernel_api.h): the names it offers, setting and reading back, and clear errors for a bad name, in
// every build (a CPU-only build takes the knob and never reads it). Each tile's results are checked against the CPU by the device
// parity cases (test/gpu/cases_core.ts, run on the emulated addon in CI and on a GPU by the GPU check)
// and the emulator's kernel tests (test/cuda_emu/test_main.cc).
import t from 'tap';
import * as L from '../../lib';
import { native } from '../../lib/native';
import { forcedGemmTiles } from '../gpu/cases_core';

t.test('tile names, set and read back', async (tt) => {
  const { active, tiles } = native.cudaGemmTile();
  tt.equal(active, 'auto', 'the engine picks the tile unless told');
  tt.equal(tiles[0], 'auto');
  tt.ok(tiles.includes('128x128x32') && tiles.includes('64x64x32'), `the two default tiles are offered: ${tiles.join(', ')}`);
  for (const name of tiles) tt.ok(/^(auto|(wgmma-)?\d+x\d+x\d+(-pf)?)$/.test(name), `${name} is [wgmma-]BMxBNxBK[-pf]`);
  tt.same(
    tiles.filter((n) => n.startsWith('wgmma-')),
    ['wgmma-128x128x64', 'wgmma-128x256x64'],
    'the Hopper tiles (cuda/matmul_sm90.cu) are offered, last',
  );
  tt.ok(
    tiles.slice(-2).every((n) => n.startsWith('wgmma-')),
    'the wgmma names close the list',
  );
  try {
    for (const name of tiles) tt.equal(native.cudaGemmTile(name).active, name, `set ${name}`);
    tt.equal(native.cudaGemmTile().active, tiles[tiles.length - 1], 'a read does not change it');
  } finally {
    native.cudaGemmTile('auto');
  }
  tt.equal(native.cudaGemmTile().active, 'auto');
});

t.test('bad names fail clearly and change nothing', async (tt) => {
  native.cudaGemmTile('64x64x32');
  try {
    tt.throws(() => native.cudaGemmTile('128x128'), /unknown tile '128x128' \(auto, 128x128x32, 64x64x32/);
    tt.throws(() => native.cudaGemmTile(128 as unknown as string), { name: 'TypeError', message: /must be a string/ });
    tt.equal(native.cudaGemmTile().active, '64x64x32', 'the tile set before is still active');
  } finally {
    native.cudaGemmTile('auto');
  }
});

t.test('the tiles the parity table and the GPU bench force', async (tt) => {
  const sm90 = /\(sm_90[,)]/.test(L.cuda.describe());
  const tiles = forcedGemmTiles();
  tt.notOk(tiles.includes('auto'), 'auto is not a forced tile');
  tt.ok(tiles.includes('128x128x32-pf'), 'the mma.sync tiles are always there');
  tt.equal(
    tiles.some((n) => n.startsWith('wgmma-')),
    sm90,
    `the wgmma tiles only on an sm_90 device (${L.cuda.describe()})`,
  );
  process.env.LLAVA_SKIP_WGMMA = '1';
  try {
    tt.notOk(
      forcedGemmTiles().some((n) => n.startsWith('wgmma-')),
      'LLAVA_SKIP_WGMMA leaves them out (scripts/gpu_check.sh sets it after they failed)',
    );
  } finally {
    delete process.env.LLAVA_SKIP_WGMMA;
  }
});

t.test('LLAVA_CUDA_GEMM_TILE sets the tile at load; an unknown name is reported and ignored', async (tt) => {
  const { spawnSync } = await import('child_process');
  const probe = `const { native } = require(${JSON.stringify(require.resolve('../../lib/native'))}); process.stdout.write(native.cudaGemmTile().active);`;
  const runWith = (tile: string) =>
    spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', probe], { env: { ...process.env, LLAVA_CUDA_GEMM_TILE: tile }, encoding: 'utf8' });
  tt.equal(runWith('wgmma-128x256x64').stdout, 'wgmma-128x256x64', 'a known name is active from the start');
  tt.equal(runWith('').stdout, 'auto', 'empty: auto');
  const bad = runWith('256x256');
  tt.equal(bad.stdout, 'auto', 'an unknown name leaves auto');
  tt.match(bad.stderr, /LLAVA_CUDA_GEMM_TILE='256x256' is not a tile \(auto, 128x128x32, .*wgmma-128x256x64\); using auto/, 'and says so');
});
