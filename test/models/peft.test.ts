// peft.test.ts — PEFT LoRA adapters made by torch (test/fixtures/tiny-llava-lora/make_adapter.py: PEFT's
// names for the reference's model, adapter_config.json as PEFT writes it) applied to the tiny base the way
// --model-base loading does, `merge-lora` folders, quantized loading, and bad adapter files.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as L from '../../lib';
import { loadLlava } from '../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../lib/models/llava';
import { SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors';
import { applyPeftAdapter, readTensorFile, parsePeftLoraName } from '../../lib/models/peft';
import { LlavaSession } from '../../lib/app/processing/session';
import { mergeLoraFolder } from '../../lib/app/train/lora';
import { TEST_DIR, assertClose } from '../helpers';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const LORA = path.join(TEST_DIR, 'fixtures', 'tiny-llava-lora');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-peft-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const exp = SafetensorsFile.open(path.join(LORA, 'expected.safetensors'));
const IDS = [...exp.readAsFloat32('input_ids')].map(Math.round);
const baseLogits = exp.readAsFloat32('base_logits');
const loraLogits = exp.readAsFloat32('lora_logits');
exp.close();
// float32 engine vs float64 torch over 2 layers, C 48, V 678: logits ~1, observed error ~1e-6.
const TOL = { atol: 2e-5, rtol: 1e-4 };

function logits(m: LlavaForConditionalGeneration): Float32Array {
  return L.noGrad(() => L.tidy(() => m.forward({ inputIds: [IDS], pixelValues: null }).logits.dataSync() as Float32Array));
}

t.test('the torch forward of the fixture script equals the engine on the base (the oracle is sound)', async (t) => {
  const m = loadLlava(FIX);
  assertClose(t, logits(m), baseLogits, { ...TOL, msg: 'base logits' });
  m.dispose();
});

t.test('base + PEFT adapter (merged on load) = torch base + separate LoRA branch', async (t) => {
  const m = loadLlava(FIX);
  const r = applyPeftAdapter(m, LORA);
  t.equal(r.merged, 14, '7 targets x 2 layers');
  t.equal(r.nonLora, 4, 'projector weights and biases from non_lora_trainables');
  t.same(r.config.target_modules.length, 7);
  assertClose(t, logits(m), loraLogits, { ...TOL, msg: 'LoRA logits' });
  const nl = SafetensorsFile.open(path.join(LORA, 'non_lora_trainables.safetensors'));
  assertClose(t, m.projector.linears[1].weight, nl.readAsFloat32('base_model.model.model.mm_projector.2.weight'), {
    atol: 0,
    rtol: 0,
    msg: 'projector loaded',
  });
  nl.close();
  m.dispose();
});

t.test('the same adapter as PyTorch pickles (adapter_model.bin, non_lora_trainables.bin) gives the same model', async (t) => {
  const m = loadLlava(FIX);
  const r = applyPeftAdapter(m, path.join(LORA, 'bin'));
  t.equal(r.merged, 14, '7 targets x 2 layers');
  t.equal(r.nonLora, 4, 'projector weights and biases from non_lora_trainables.bin');
  assertClose(t, logits(m), loraLogits, { ...TOL, msg: 'LoRA logits from the .bin adapter' });
  m.dispose();
});

t.test('sessions: --model-base loads base + adapter; an adapter alone or a base "adapter" is refused', async (t) => {
  const s = LlavaSession.load(LORA, { modelBase: FIX, images: false });
  assertClose(t, logits(s.model), loraLogits, { ...TOL, msg: 'session logits' });
  t.ok(s.tokenizer, 'tokenizer from the base (the adapter folder has none)');
  s.dispose();
  t.throws(() => LlavaSession.load(LORA, { images: false }), /holds a LoRA adapter \(adapter_config.json\): pass --model-base/);
  t.throws(() => LlavaSession.load(FIX, { modelBase: FIX, images: false }), /has no adapter_config.json/);
  t.throws(() => LlavaSession.load(FIX, { load8bit: true, load4bit: true, images: false }), /exclude each other/);
});

t.test('merge-lora writes a model folder whose logits are base + adapter', async (t) => {
  const out = path.join(tmp, 'merged');
  const logs: string[] = [];
  t.equal(
    mergeLoraFolder(LORA, FIX, out, (m) => logs.push(m)),
    14,
  );
  t.match(logs.join('\n'), /merged 14 adapters \(r 4, alpha 8\)/);
  const m = loadLlava(out);
  assertClose(t, logits(m), loraLogits, { ...TOL, msg: 'merged folder logits' });
  m.dispose();
  t.throws(() => mergeLoraFolder(LORA, FIX, FIX), /must be a new folder/);
});

t.test('--load-8bit / --load-4bit: quantized language model, logits near the float ones', async (t) => {
  for (const [k, tol] of [
    ['load8bit', 0.03],
    ['load4bit', 0.4],
  ] as const) {
    const s = LlavaSession.load(FIX, { [k]: true, images: false });
    const q = s.model.lm.layers.items[1].mlp.down_proj;
    t.ok(q.quantized, `${k}: down_proj quantized (${q.quantized?.format})`);
    t.notOk(s.model.lm.lmHead.quantized, 'lm_head stays float');
    const got = logits(s.model);
    // A smoke bound, relative to the largest logit (the exact checks of the formats and kernels are in
    // test/nn/lora_quant_ops.test.ts): per weight int8 errs by <= 0.4% of its row's absmax, NF4 by <= 15% of
    // its block's; through 14 layers of this random tiny model that measured 1.2% and 19% of the top logit.
    let worst = 0;
    let top = 0;
    for (let i = 0; i < got.length; i++) {
      worst = Math.max(worst, Math.abs(got[i] - baseLogits[i]));
      top = Math.max(top, Math.abs(baseLogits[i]));
    }
    t.ok(worst / top < tol, `${k}: max |logit - float logit| / max |logit| = ${(worst / top).toFixed(4)} < ${tol}`);
    s.dispose();
  }
});

t.test('bad adapter files: missing or unknown files, unpaired or unknown tensors, wrong targets', async (t) => {
  t.throws(() => readTensorFile('/x/adapter_model.bin'), /adapter_model\.bin/);
  const junk = path.join(tmp, 'adapter.npz');
  fs.writeFileSync(junk, 'PK not really');
  t.throws(() => readTensorFile(junk), /adapter\.npz/);
  t.same(parsePeftLoraName('base_model.model.model.layers.3.mlp.up_proj.lora_B.weight'), {
    path: 'language_model.model.layers.3.mlp.up_proj',
    which: 'B',
  });
  t.same(parsePeftLoraName('base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight'), {
    path: 'language_model.model.layers.0.self_attn.q_proj',
    which: 'A',
  });
  const dir = (name: string, tensors: Record<string, Float32Array | [number[], Float32Array]>, cfg: Record<string, unknown> = {}): string => {
    const d = path.join(tmp, name);
    fs.mkdirSync(d, { recursive: true });
    const conf = { ...JSON.parse(fs.readFileSync(path.join(LORA, 'adapter_config.json'), 'utf8')), ...cfg };
    fs.writeFileSync(path.join(d, 'adapter_config.json'), JSON.stringify(conf));
    const w: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const [n, v] of Object.entries(tensors)) {
      const [shape, data] = Array.isArray(v) ? v : [[v.length], v];
      w[n] = { dtype: 'F32', shape, data };
    }
    writeSafetensors(path.join(d, 'adapter_model.safetensors'), w);
    return d;
  };
  const A = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
  const B = 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight';
  const m = loadLlava(FIX);
  t.throws(() => applyPeftAdapter(m, dir('unpaired', { [A]: [[2, 48], new Float32Array(96)] })), /has lora_A without lora_B/);
  t.throws(() => applyPeftAdapter(m, dir('odd-name', { 'base_model.model.model.layers.0.foo': new Float32Array(2) })), /is not a LoRA tensor name/);
  const bad = 'base_model.model.model.layers.0.self_attn.zz_proj.lora_';
  t.throws(
    () =>
      applyPeftAdapter(
        m,
        dir('no-layer', { [bad + 'A.weight']: [[2, 48], new Float32Array(96)], [bad + 'B.weight']: [[48, 2], new Float32Array(96)] }),
      ),
    /targets 'language_model.model.layers.0.self_attn.zz_proj', which is not a Linear layer/,
  );
  t.throws(
    () => applyPeftAdapter(m, dir('shape', { [A]: [[2, 40], new Float32Array(80)], [B]: [[48, 2], new Float32Array(96)] })),
    /do not fit weight \[48, 48\]/,
  );
  t.throws(
    () =>
      applyPeftAdapter(
        m,
        dir('pattern', { [A]: [[2, 48], new Float32Array(96)], [B]: [[48, 2], new Float32Array(96)] }, { alpha_pattern: { q_proj: 3 } }),
      ),
    /alpha_pattern is not supported yet/,
  );
  t.throws(
    () => applyPeftAdapter(m, dir('ia3', { [A]: [[2, 48], new Float32Array(96)], [B]: [[48, 2], new Float32Array(96)] }, { peft_type: 'IA3' })),
    /peft_type "IA3" is not supported/,
  );
  assertClose(t, logits(m), baseLogits, { ...TOL, msg: 'failed applications left the model unchanged' });
  m.dispose();
});

t.test('command line: chat --model-base --load-8bit answers; merge-lora writes a loadable folder', async (t) => {
  const cli = (...args: string[]): { code: number; out: string; err: string } => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(TEST_DIR, '..', 'lib', 'app', 'cli', 'main.ts'), ...args], {
      cwd: path.join(TEST_DIR, '..'),
      encoding: 'utf8',
      env: { ...process.env, FORCE_COLOR: '0' },
      timeout: 120_000,
    });
    return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
  };
  const img = path.join(FIX, 'image0.png');
  const chat = cli(
    'chat',
    '--model',
    LORA,
    '--model-base',
    FIX,
    '--load-8bit',
    '--image',
    img,
    '--prompt',
    'hi',
    '--temperature',
    '0',
    '--max-new-tokens',
    '3',
  );
  t.equal(chat.code, 0, `chat exit 0 (${chat.err.slice(-300)})`);
  t.match(chat.err, /merged the LoRA adapter of .* \(14 layers, r 4, alpha 8\)/);
  t.match(chat.err, /stored as int8/);
  const out = path.join(tmp, 'cli-merged');
  const merge = cli('merge-lora', '--model-path', LORA, '--model-base', FIX, '--save-model-path', out);
  t.equal(merge.code, 0, merge.err.slice(-300));
  const m = loadLlava(out);
  assertClose(t, logits(m), loraLogits, { ...TOL, msg: 'CLI-merged folder logits' });
  m.dispose();
});
