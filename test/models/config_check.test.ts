// A config.json that disagrees with its checkpoint (num_hidden_layers 1e7, a wrong hidden size) must be
// refused before the model is built — an error naming the key, at once, with nothing allocated — instead
// of growing to gigabytes of parameters and aborting.
import t from 'tap';
import type { Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../../lib';
import { loadLlava, loadLlama, loadClipVision } from '../../lib/models/loader';
import { SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors';
import { TEST_DIR } from '../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-cfgcheck-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** A checkpoint dir: the fixture's weights (optionally a subset, renamed) with `config`. */
function dirWith(config: unknown, rename: (n: string) => string | null = (x) => x): string {
  const d = path.join(tmp, `c${n++}`);
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(config));
  const src = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
  const out: Record<string, { dtype: 'F32'; shape: number[]; data: Uint8Array }> = {};
  for (const k of src.names()) {
    const m = rename(k);
    if (m) out[m] = { dtype: 'F32', shape: src.info(k).shape, data: src.read(k).data };
  }
  src.close();
  writeSafetensors(path.join(d, 'model.safetensors'), out);
  return d;
}

function refused(tt: Test, what: string, load: () => { dispose(): void }, re: RegExp): void {
  const before = L.memory();
  const t0 = Date.now();
  let err: unknown = null;
  try {
    load().dispose();
  } catch (e) {
    err = e;
  }
  tt.ok(err instanceof Error, `${what}: throws`);
  tt.match((err as Error).message, re, `${what}: ${(err as Error).message}`);
  tt.ok(Date.now() - t0 < 5000, `${what}: at once`);
  const after = L.memory();
  tt.equal(after.numTensors, before.numTensors, `${what}: no tensor left`);
  tt.equal(after.cpu.bytes, before.cpu.bytes, `${what}: no byte left`);
}

t.test('llava-hf config against its checkpoint', async (tt) => {
  const text = (o: object): object => ({ ...cfg, text_config: { ...cfg.text_config, ...o } });
  const vision = (o: object): object => ({ ...cfg, vision_config: { ...cfg.vision_config, ...o } });
  const cases: [string, object, RegExp][] = [
    [
      'num_hidden_layers 1e7',
      text({ num_hidden_layers: 1e7 }),
      /^\[fromPretrained\] text config key 'num_hidden_layers' is 10000000, but the checkpoint holds layers numbering 2/,
    ],
    ['num_hidden_layers 3', text({ num_hidden_layers: 3 }), /text config key 'num_hidden_layers' is 3/],
    ['hidden_size', text({ hidden_size: 4096 }), /text config key 'hidden_size' is 4096, but the checkpoint embed_tokens.weight has columns: 48/],
    ['vocab_size', text({ vocab_size: 1e9 }), /text config key 'vocab_size' is 1000000000/],
    ['intermediate_size', text({ intermediate_size: 11008 }), /text config key 'intermediate_size' is 11008/],
    ['fractional layers', text({ num_hidden_layers: 2.5 }), /text config key 'num_hidden_layers' must be a non-negative integer, got 2.5/],
    [
      'vision layers',
      vision({ num_hidden_layers: 1e7 }),
      /vision config key 'num_hidden_layers' is 10000000, but the checkpoint holds layers numbering 3/,
    ],
    ['vision hidden_size', vision({ hidden_size: 1024 }), /vision config key 'hidden_size' is 1024/],
    ['vision patch_size', vision({ patch_size: 14 }), /vision config key 'patch_size' is 14/],
    ['vision intermediate_size', vision({ intermediate_size: 4096 }), /vision config key 'intermediate_size' is 4096/],
  ];
  for (const [what, config, re] of cases) refused(tt, what, () => loadLlava(dirWith(config)), re);
  // The unchanged config still loads.
  const m = loadLlava(dirWith(cfg));
  tt.equal(m.config.text.num_hidden_layers, 2);
  m.dispose();
});

t.test('plain LLaMA and CLIP checkpoints', async (tt) => {
  const llama = (o: object): string =>
    dirWith({ ...cfg.text_config, ...o }, (k) => (k.startsWith('language_model.') ? k.slice('language_model.'.length) : null));
  refused(tt, 'llama layers', () => loadLlama(llama({ num_hidden_layers: 1e7 })), /text config key 'num_hidden_layers' is 10000000/);
  const clip = (o: object): string =>
    dirWith({ ...cfg.vision_config, ...o }, (k) => (k.startsWith('vision_tower.') ? k.slice('vision_tower.'.length) : null));
  refused(tt, 'clip layers', () => loadClipVision(clip({ num_hidden_layers: 1e7 })), /vision config key 'num_hidden_layers' is 10000000/);
  const ok = loadLlama(llama({}));
  ok.dispose();
  const okc = loadClipVision(clip({}));
  okc.dispose();
});
