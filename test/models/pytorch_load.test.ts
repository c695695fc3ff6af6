// The reference's PyTorch checkpoints used by the application: the tiny LLaVA as sharded .bin
// (test/fixtures/torch/tiny-llava-bin) loads into the same parameters as its safetensors and passes
// `llava verify` against the fixture reference; the reference-named mm_projector.bin loads as the trainer's
// --pretrain-mm-mlp-adapter does; `llava convert` round-trips a folder (sharded) and a single file, shows
// progress, and refuses to overwrite (in process; one child process runs the command itself).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as L from '../../lib';
import { loadLlava } from '../../lib/models/loader';
import { loadPartialWeights } from '../../lib/app/train/train_state';
import { convertToSafetensors } from '../../lib/io/convert';
import { SafetensorsFile } from '../../lib/io/safetensors';
import { openStateDict } from '../../lib/io/state_dict';
import { TEST_DIR } from '../helpers';

const ROOT = path.join(TEST_DIR, '..');
const CLI = path.join(ROOT, 'lib', 'app', 'cli', 'main.ts');
const TINY = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const FIX = path.join(TEST_DIR, 'fixtures', 'torch');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-torch-model-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A model folder: the tiny LLaVA's side files (config, tokenizer, ...) with the weights of `weightsDir`. */
function modelDir(name: string, weightsDir: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(TINY)) if (!f.endsWith('.safetensors')) fs.copyFileSync(path.join(TINY, f), path.join(dir, f));
  for (const f of fs.readdirSync(weightsDir)) fs.copyFileSync(path.join(weightsDir, f), path.join(dir, f));
  return dir;
}
const binDir = modelDir('bin', path.join(FIX, 'tiny-llava-bin'));

function paramBytes(m: L.LlavaForConditionalGeneration): Map<string, Buffer> {
  return new Map(m.namedParameters().map(([n, p]) => [n, Buffer.from((p.dataSync() as Float32Array).buffer)]));
}

t.test('loadLlava reads the sharded .bin into the same parameters as the safetensors', async (tt) => {
  const a = loadLlava(binDir);
  const b = loadLlava(TINY);
  const pa = paramBytes(a);
  const pb = paramBytes(b);
  tt.same([...pa.keys()].sort(), [...pb.keys()].sort());
  tt.same(
    [...pa].filter(([n, v]) => !v.equals(pb.get(n)!)).map(([n]) => n),
    [],
    `all ${pa.size} parameters bit-identical`,
  );
  a.dispose();
  b.dispose();
});

t.test('llava verify (the command) passes on the .bin model against the fixture reference', async (tt) => {
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', CLI, 'verify', '--model', binDir, '--reference', path.join(TINY, 'reference.safetensors')],
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
  );
  tt.equal(r.status, 0, r.status === 0 ? 'exit 0' : r.stderr + r.stdout.slice(-500));
  tt.match(r.stdout, /PASSED: \d+ checks/);
  tt.match(r.stdout, /logits/);
});

t.test("mm_projector.bin (the reference's names) loads as --pretrain-mm-mlp-adapter", async (tt) => {
  const m = loadLlava(TINY);
  const want = m.projector.namedParameters().map(([n, p]) => [n, Buffer.from((p.dataSync() as Float32Array).buffer)] as const);
  L.tidy(() => L.noGrad(() => m.projector.parameters().forEach((p) => L.copyInto(p, L.zerosLike(p)))));
  const loaded = loadPartialWeights(m, path.join(FIX, 'mm_projector.bin'), { only: 'projector' });
  tt.same(loaded.sort(), [
    'multi_modal_projector.linear_1.bias',
    'multi_modal_projector.linear_1.weight',
    'multi_modal_projector.linear_2.bias',
    'multi_modal_projector.linear_2.weight',
  ]);
  const got = m.projector.namedParameters().map(([n, p]) => [n, Buffer.from((p.dataSync() as Float32Array).buffer)] as const);
  tt.ok(
    got.every(([n, v], i) => n === want[i][0] && v.equals(want[i][1])),
    'projector restored bit for bit',
  );
  tt.throws(
    () => loadPartialWeights(m, path.join(FIX, 'tiny-llava-bin', 'pytorch_model-00001-of-00002.bin'), { only: 'projector' }),
    /is not a projector tensor/,
  );
  m.dispose();
});

t.test('convert: a sharded .bin folder and a single .bin file round-trip to safetensors', async (tt) => {
  const out = path.join(tmp, 'converted');
  const seen: number[] = [];
  const r = convertToSafetensors(binDir, out, { onProgress: (d) => seen.push(d) });
  tt.equal(r.tensors, 80);
  tt.same(
    seen,
    Array.from({ length: 80 }, (_, i) => i + 1),
    'progress per tensor',
  );
  tt.same(
    fs
      .readdirSync(out)
      .filter((f) => f.includes('safetensors'))
      .sort(),
    ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json'],
  );
  tt.ok(fs.existsSync(path.join(out, 'config.json')) && fs.existsSync(path.join(out, 'tokenizer.json')), 'side files copied');
  tt.notOk(
    fs.readdirSync(out).some((f) => f.endsWith('.bin')),
    'no .bin copied',
  );
  const a = openStateDict(out);
  const b = SafetensorsFile.open(path.join(TINY, 'model.safetensors'));
  tt.equal(a.format, 'safetensors');
  tt.same(
    b.names().filter((n) => !Buffer.from(a.read(n).data).equals(Buffer.from(b.read(n).data))),
    [],
    'every tensor bit-identical to the original safetensors',
  );
  a.close();
  b.close();

  const single = path.join(tmp, 'cases.safetensors');
  convertToSafetensors(path.join(FIX, 'cases.pt'), single);
  const c = SafetensorsFile.open(single);
  const e = SafetensorsFile.open(path.join(FIX, 'cases_expected.safetensors'));
  tt.same(c.names().sort(), e.names().sort());
  tt.same(
    e.names().filter((n) => {
      const x = c.read(n);
      const y = e.read(n);
      return x.dtype !== y.dtype || x.shape.join() !== y.shape.join() || !Buffer.from(x.data).equals(Buffer.from(y.data));
    }),
    [],
    'views written contiguous, every dtype kept',
  );
  tt.equal(c.metadata.format, 'pt');
  c.close();
  e.close();
  tt.throws(() => convertToSafetensors(path.join(FIX, 'cases.pt'), single), /already exists/);
});

t.test('llava convert (the command) shows progress and writes the file', async (tt) => {
  const out = path.join(tmp, 'proj.safetensors');
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'convert', path.join(FIX, 'mm_projector.bin'), out], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
  tt.equal(r.status, 0, r.status === 0 ? 'exit 0' : r.stderr);
  tt.match(r.stderr, /\[convert\] 4\/4 tensors/);
  tt.match(r.stderr, /\[convert\] wrote .*proj\.safetensors/);
  tt.match(r.stdout, /converted 4 tensors/);
  const f = SafetensorsFile.open(out);
  tt.same(f.names().sort(), ['model.mm_projector.0.bias', 'model.mm_projector.0.weight', 'model.mm_projector.2.bias', 'model.mm_projector.2.weight']);
  f.close();
});
