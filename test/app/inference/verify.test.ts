// `llava verify` on the tiny LLaVA fixture: it passes on the real reference, and fails (exit code 1, naming
// the tensor) on corrupted copies written with writeSafetensors.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../../../lib';
import { SafetensorsFile, writeSafetensors, TensorToWrite, SafetensorsDtype } from '../../../lib/io/safetensors';
import { runVerify, compare, formatTable } from '../../../lib/app/inference/verify';
import { TEST_DIR } from '../../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const refPath = path.join(dir, 'reference.safetensors');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-verify-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function verify(reference: string, extra: Record<string, unknown> = {}): Promise<{ rc: number; out: string }> {
  const lines: string[] = [];
  const rc = await runVerify({ model: dir, reference, log: (l) => lines.push(l), ...extra });
  return { rc, out: lines.join('\n') };
}

/** A copy of the reference with `edit` applied to a map of its raw tensors. */
function corrupted(name: string, edit: (m: Map<string, TensorToWrite>) => void): string {
  const src = SafetensorsFile.open(refPath);
  const m = new Map<string, TensorToWrite>();
  for (const n of src.names()) {
    const r = src.read(n);
    m.set(n, { dtype: r.dtype as SafetensorsDtype, shape: r.shape, data: r.data });
  }
  src.close();
  edit(m);
  const file = path.join(tmp, name);
  writeSafetensors(file, m);
  return file;
}

function f32(m: Map<string, TensorToWrite>, name: string): Float32Array {
  const d = m.get(name)!.data;
  return new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4);
}

t.test('passes on the fixture', async (tt) => {
  const before = L.memory().numTensors;
  const report = path.join(tmp, 'report.json');
  const { rc, out } = await verify(refPath, { out: report });
  tt.equal(rc, 0, 'exit code 0');
  tt.match(out, /PASSED: 42 checks/);
  for (const name of [
    'vision_select_features',
    'image_features',
    'logits',
    'stage1.loss',
    'stage2.loss',
    'greedy.output_ids',
    'stage1.frozen',
    'stage2.frozen',
    'stage2.grad.language_model.lm_head.weight',
  ])
    tt.match(out, new RegExp(`^${name.replace(/\./g, '\\.')}\\s+\\[[\\d,]+\\]\\s.*ok`, 'm'), `${name} row ok`);
  tt.match(out, /atol 0\.0001, rtol 0\.001/, 'float32 default tolerances');
  const json = JSON.parse(fs.readFileSync(report, 'utf8'));
  tt.equal(json.passed, true);
  tt.equal(json.rows.length, 42);
  tt.equal(L.memory().numTensors, before, 'no tensors leak');
});

t.test('perturbed logits fail with exit code 1 and name the tensor', async (tt) => {
  // position 5 of sample 0 is attended
  const file = corrupted('bad-logits.safetensors', (m) => (f32(m, 'logits')[5 * 678 + 10] += 0.01));
  const { rc, out } = await verify(file);
  tt.equal(rc, 1, 'exit code 1');
  tt.match(out, /^logits\s+\[2,143,678\]\s+1\.00e-2\s+\S+\s+FAIL \(1 of \d+ elements out of tolerance\)/m);
  tt.match(out, /FAILED: 1 of 42 checks \(logits\)/);
});

t.test('logits are compared at attended positions only', async (tt) => {
  let padPos = -1;
  const file = corrupted('pad-logits.safetensors', (m) => {
    const d = m.get('attention_mask')!.data;
    const mask = new BigInt64Array(d.buffer, d.byteOffset, d.byteLength / 8);
    padPos = mask.findIndex((v) => v === 0n);
    f32(m, 'logits')[padPos * 678] = 1e6;
  });
  tt.ok(padPos > 0, 'the fixture has padding');
  tt.equal((await verify(file)).rc, 0, 'garbage at a padding position does not matter');
});

t.test('a wrong gradient, a leaked gradient, wrong greedy ids', async (tt) => {
  const g = corrupted('bad-grad.safetensors', (m) => (f32(m, 'stage1.grad.multi_modal_projector.linear_2.bias')[3] *= 1.5));
  const r1 = await verify(g);
  tt.equal(r1.rc, 1);
  tt.match(r1.out, /^stage1\.grad\.multi_modal_projector\.linear_2\.bias .*FAIL/m);
  // stage 2 without the norm weight's gradient: that parameter is expected frozen, but it trains
  const leak = corrupted('leak.safetensors', (m) => m.delete('stage2.grad.language_model.model.norm.weight'));
  const r2 = await verify(leak);
  tt.equal(r2.rc, 1);
  tt.match(r2.out, /^stage2\.frozen .*FAIL \(frozen parameters got gradients: language_model\.model\.norm\.weight\)/m);
  const ids = corrupted('bad-greedy.safetensors', (m) => {
    const d = m.get('greedy.output_ids')!.data;
    new BigInt64Array(d.buffer, d.byteOffset, d.byteLength / 8)[6] = 7n;
  });
  const r3 = await verify(ids);
  tt.equal(r3.rc, 1);
  tt.match(r3.out, /^greedy\.output_ids .*FAIL .*first difference at 6/m);
});

t.test('a reference with only some quantities checks only those', async (tt) => {
  const only = corrupted('only.safetensors', (m) => {
    for (const k of [...m.keys()]) if (!['pixel_values', 'image_features'].includes(k)) m.delete(k);
  });
  const { rc, out } = await verify(only);
  tt.equal(rc, 0);
  tt.match(out, /PASSED: 1 checks/);
});

t.test('options and errors', async (tt) => {
  const { rc, out } = await verify(refPath, { dtype: 'bfloat16' });
  tt.equal(rc, 0, 'bfloat16 passes with its looser defaults');
  tt.match(out, /looser defaults for bfloat16/);
  const strict = await verify(refPath, { atol: 0, rtol: 0 });
  tt.equal(strict.rc, 1, 'zero tolerance fails');
  tt.match(strict.out, /\(given\)/);
  await tt.rejects(verify(path.join(tmp, 'nope.safetensors')), /reference file .* not found/);
  await tt.rejects(verify(refPath, { dtype: 'int8' }), /unsupported dtype 'int8'/);
  await tt.rejects(verify(refPath, { atol: -1 }), /atol must be/);
  if (!L.cuda.isAvailable()) await tt.rejects(verify(refPath, { device: 'cuda' }), /CUDA is not available/);
});

t.test('compare and the table', async (tt) => {
  const r = compare('x', [1, 2.01, NaN], [3], [1, 2, 3], [3], { atol: 0, rtol: 0.01 });
  tt.equal(r.ok, false);
  tt.match(r.note!, /1 of 3/);
  tt.ok(Number.isNaN(r.maxAbsErr!));
  tt.equal(compare('y', [1, 2], [2], [1, 2, 3], [3], { atol: 1, rtol: 1 }).note, 'shape [2] != expected [3]');
  const lines = formatTable([compare('z', [1], [1], [1], [1], { atol: 0, rtol: 0 })]);
  tt.match(lines[0], /^name\s+shape\s+max abs err\s+max rel err\s+status$/);
  tt.match(lines[2], /^z\s+\[1\]\s+0\.00e\+0\s+0\.00e\+0\s+ok$/);
});
