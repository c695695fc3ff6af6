// gemm_tile.test.ts — the CUDA GEMM's tile knob (native.cudaGemmTile, cpp/kernel_api.h): the names it
// offers, setting and reading back, and clear errors for a bad name, in every build (a CPU-only build
// takes the knob and never reads it). Each tile's results are checked against the CPU by the device
// parity cases (test/gpu/cases_core.ts, run on the emulated addon in CI and on a GPU by the GPU check)
// and the emulator's kernel tests (test/cuda_emu/test_main.cc).
import t from 'tap';
import { native } from '../../lib/native';

t.test('tile names, set and read back', async (tt) => {
  const { active, tiles } = native.cudaGemmTile();
  tt.equal(active, 'auto', 'the engine picks the tile unless told');
  tt.equal(tiles[0], 'auto');
  tt.ok(tiles.includes('128x128x32') && tiles.includes('64x64x32'), `the two default tiles are offered: ${tiles.join(', ')}`);
  for (const name of tiles) tt.ok(/^(auto|\d+x\d+x\d+(-pf)?)$/.test(name), `${name} is BMxBNxBK[-pf]`);
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
