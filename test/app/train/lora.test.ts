// LoRA training (lib/app/train/lora.ts, lib/nn/lora.ts) on the tiny fixture with the generated data: only
// the adapters and the projector change (the base stays bit-identical), the loss falls like full
// fine-tuning's, the projector gets its own learning rate, the output is PEFT's layout with the reference's
// names, and that output applied to a fresh base (as --model-base loading does) gives the trained model's
// logits. Also a 4-bit (NF4) frozen base under LoRA.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../../../lib';
import { loadLlava } from '../../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../../lib/models/llava';
import { SafetensorsFile } from '../../../lib/io/safetensors';
import { makeDemoData } from '../../../lib/app/train/demo_data';
import { LlavaDataset } from '../../../lib/app/train/dataset';
import { Trainer } from '../../../lib/app/train/trainer';
import { TrainerOptions } from '../../../lib/app/train/options';
import { allLinearNames, paramGroups } from '../../../lib/app/train/lora';
import { applyPeftAdapter } from '../../../lib/models/peft';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { TEST_DIR, assertClose } from '../../helpers';
import { tinyDatasetSpec } from '../../tiny_dataset';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-lora-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const demo = makeDemoData(path.join(tmp, 'demo'));
const tok = Tokenizer.fromDir(FIX);
const spec = tinyDatasetSpec(demo.imageFolder);
function subset(ids: string[]): LlavaDataset {
  const all = JSON.parse(fs.readFileSync(demo.finetuneJson, 'utf8')) as { id: string }[];
  const f = path.join(tmp, `subset-${ids.join('_')}.json`);
  fs.writeFileSync(f, JSON.stringify(ids.map((id) => all.find((r) => r.id === id))));
  return LlavaDataset.fromFile(f, spec, { tokenizer: tok });
}
const quiet: Partial<TrainerOptions> = { progress: 'none', log: () => {} };
const snapshot = (m: LlavaForConditionalGeneration): Map<string, Float32Array> =>
  new Map(m.namedParameters().map(([n, p]) => [n, p.dataSync() as Float32Array]));
const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
const IDS = ['ft-0', 'ft-4', 'ft-8', 'text-0'];
const STEPS = 30;
const run = { stage: 2, microBatch: 2, gradAccum: 2, maxSteps: STEPS, warmupRatio: 0 } as const;

/** Logits of the text-only sample (eval mode: no dropout). */
function logitsOf(m: LlavaForConditionalGeneration, ds: LlavaDataset): Float32Array {
  m.eval();
  const it = ds.item(ds.samples.findIndex((x) => !x.image));
  return L.noGrad(() =>
    L.tidy(() => {
      const { logits } = m.forward({ inputIds: [it.inputIds], pixelValues: null });
      return logits.dataSync() as Float32Array;
    }),
  );
}

t.test('find_all_linear_names: every linear of the language model but lm_head', async (t) => {
  const m = loadLlava(FIX);
  t.same(allLinearNames(m), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
  m.dispose();
});

t.test('LoRA stage 2: adapters + projector train, base bit-identical, loss falls like full fine-tuning; PEFT output reloads', async (t) => {
  const ds = subset(IDS);
  // Full fine-tuning reference on the same data and schedule.
  const mf = loadLlava(FIX);
  const full = new Trainer(mf, ds, { ...quiet, ...run, lr: 3e-3 } as TrainerOptions);
  const rf = await full.train();
  full.dispose();
  mf.dispose();

  const m = loadLlava(FIX);
  const before = snapshot(m);
  const out = path.join(tmp, 'lora');
  const tr = new Trainer(m, ds, {
    ...quiet,
    ...run,
    lr: 1e-2,
    loraR: 8,
    loraAlpha: 16,
    loraDropout: 0.05,
    mmProjectorLr: 3e-3,
    outputDir: out,
    baseModelDir: FIX,
  } as TrainerOptions);
  // Optimizer groups: the projector at its own lr.
  const proj = tr.optimizer.groups.filter((g) => g.lrScale !== 1);
  t.equal(proj.length, 1, 'one projector group');
  t.equal(proj[0].params.length, 4, 'projector weights and biases');
  t.ok(Math.abs(proj[0].lrScale - 0.3) < 1e-12, 'lr scale = mm_projector_lr / lr');
  t.equal(tr.trainable.filter(([n]) => /lora_[AB]/.test(n)).length, 2 * 7 * 2, 'A and B on 7 linears x 2 layers');
  t.equal(tr.trainable.length, 2 * 7 * 2 + 4, 'nothing else trains');
  const r = await tr.train();
  tr.dispose();
  const after = snapshot(m);
  let lora = 0;
  for (const [n, v] of after) {
    if (/lora_[AB]\.weight$/.test(n)) {
      lora++;
      if (/lora_B/.test(n))
        t.ok(
          v.some((x) => x !== 0),
          `${n} moved from zero`,
        );
    } else if (n.startsWith('multi_modal_projector.')) t.notOk(same(v, before.get(n)!), `${n} trained`);
    else t.ok(same(v, before.get(n)!), `${n} bit-identical`);
  }
  t.equal(lora, 28);
  const ratioFull = rf.firstLoss / rf.lastLoss;
  const ratioLora = r.firstLoss / r.lastLoss;
  t.ok(Math.abs(r.firstLoss - rf.firstLoss) < 1e-4, `same starting loss (B = 0): ${r.firstLoss.toFixed(4)} vs ${rf.firstLoss.toFixed(4)}`);
  t.ok(
    ratioLora > 3,
    `LoRA loss falls ${r.firstLoss.toFixed(3)} -> ${r.lastLoss.toFixed(3)} (x${ratioLora.toFixed(1)}; full fine-tuning x${ratioFull.toFixed(1)})`,
  );
  t.ok(ratioLora > ratioFull / 4, 'within a factor 4 of full fine-tuning over the same steps');

  // The PEFT layout with the reference's names.
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  t.match(cfg, { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0.05, task_type: 'CAUSAL_LM', bias: 'none', base_model_name_or_path: FIX });
  t.same(cfg.target_modules, allLinearNames(m));
  const ad = SafetensorsFile.open(path.join(out, 'adapter_model.safetensors'));
  t.equal(ad.names().length, 28);
  t.same(ad.info('base_model.model.model.layers.1.mlp.down_proj.lora_A.weight').shape, [8, 112]);
  t.same(ad.info('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight').shape, [48, 8]);
  ad.close();
  const nl = SafetensorsFile.open(path.join(out, 'non_lora_trainables.safetensors'));
  t.same(nl.names().sort(), [
    'base_model.model.model.mm_projector.0.bias',
    'base_model.model.model.mm_projector.0.weight',
    'base_model.model.model.mm_projector.2.bias',
    'base_model.model.model.mm_projector.2.weight',
  ]);
  nl.close();
  t.ok(fs.existsSync(path.join(out, 'config.json')) && fs.existsSync(path.join(out, 'tokenizer.json')), 'config and tokenizer copied from the base');
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'no full model written');

  // Base + adapter (merged, as --model-base loads it) = the trained LoRA model.
  const want = logitsOf(m, ds);
  const fresh = loadLlava(FIX);
  const info = applyPeftAdapter(fresh, out);
  t.equal(info.merged, 14);
  t.equal(info.nonLora, 4);
  // Merged W + s*B*A rounds once in f32: error ~ 1e-6 relative on logits of size ~1.
  assertClose(t, logitsOf(fresh, ds), want, { atol: 2e-5, rtol: 1e-4, msg: 'merged logits == LoRA logits' });
  fresh.dispose();

  // Resume reloads adapters from the checkpoint: the next step of a resumed run equals an uninterrupted one.
  const m2 = loadLlava(FIX);
  const again = new Trainer(m2, ds, {
    ...quiet,
    ...run,
    maxSteps: STEPS + 2,
    lr: 1e-2,
    loraR: 8,
    loraAlpha: 16,
    loraDropout: 0,
    mmProjectorLr: 3e-3,
  } as TrainerOptions);
  again.resume(path.join(out, `checkpoint-${STEPS}`));
  const la = logitsOf(m2, ds);
  assertClose(t, la, want, { atol: 0, rtol: 0, msg: 'resumed adapters and projector are the saved ones' });
  again.dispose();
  m2.dispose();
  m.dispose();
});

t.test('QLoRA-style: NF4 / int8 frozen base under LoRA trains, base codes unchanged', async (t) => {
  const ds = subset(IDS);
  for (const bits of [4, 8]) {
    const m = loadLlava(FIX);
    const logs: string[] = [];
    const tr = new Trainer(m, ds, {
      ...quiet,
      ...run,
      maxSteps: 12,
      lr: 1e-2,
      loraR: 8,
      loraAlpha: 16,
      loraDropout: 0,
      bits,
      log: (s: string) => logs.push(s),
    } as TrainerOptions);
    const q = m.lm.layers.items[0].self_attn.q_proj;
    t.ok(q.quantized && q.quantized.format === (bits === 4 ? 'nf4' : 'int8'), `q_proj stored as ${q.quantized?.format}`);
    t.notOk(q.hasParameter('weight'), 'the float weight is gone');
    const codes = q.quantized!.codes.dataSync() as Uint8Array;
    const r = await tr.train();
    tr.dispose();
    t.ok(same(Float32Array.from(codes), Float32Array.from(q.quantized!.codes.dataSync() as Uint8Array)), 'codes unchanged');
    t.ok(r.lastLoss < r.firstLoss * 0.6, `bits ${bits}: loss ${r.firstLoss.toFixed(3)} -> ${r.lastLoss.toFixed(3)}`);
    t.ok(
      logs.some((l) => /MiB -> /.test(l)),
      'reports the storage saved',
    );
    m.dispose();
  }
});

t.test('LoRA dropout under --gradient-checkpointing: the recomputed layers draw the same masks (same weights after 2 steps)', async (t) => {
  const ds = subset(IDS);
  const after: Map<string, Float32Array>[] = [];
  for (const gc of [false, true]) {
    const m = loadLlava(FIX);
    const tr = new Trainer(m, ds, {
      ...quiet,
      ...run,
      maxSteps: 2,
      lr: 1e-2,
      loraR: 4,
      loraAlpha: 8,
      loraDropout: 0.3,
      gradientCheckpointing: gc,
    } as TrainerOptions);
    await tr.train();
    tr.dispose();
    after.push(new Map(tr.trainable.map(([n, p]) => [n, p.dataSync() as Float32Array])));
    m.dispose();
  }
  let worst = 0;
  for (const [n, v] of after[0]) {
    const w = after[1].get(n)!;
    for (let i = 0; i < v.length; i++) worst = Math.max(worst, Math.abs(v[i] - w[i]));
  }
  // Same masks: the two runs differ only by float rounding order (none here: the same ops recomputed).
  t.ok(worst < 1e-6, `max weight difference ${worst.toExponential(2)}`);
});

t.test('bf16 base: bf16 adapters with float32 master weights, base bit-identical, loss falls', async (t) => {
  const ds = subset(IDS);
  const m = loadLlava(FIX, { dtype: 'bfloat16' });
  const before = snapshot(m);
  const tr = new Trainer(m, ds, { ...quiet, ...run, maxSteps: 8, lr: 1e-2, loraR: 8, loraAlpha: 16, loraDropout: 0.05 } as TrainerOptions);
  const A = m.lm.layers.items[0].mlp.up_proj.getParameter('lora_A.weight')!;
  t.equal(A.dtype, 'bfloat16', 'adapters take the base dtype');
  const r = await tr.train();
  const master = (tr.optimizer as unknown as { state: Map<L.Tensor, { master: L.Tensor | null }> }).state.get(A)?.master;
  t.equal(master?.dtype, 'float32', 'AdamW keeps a float32 master copy');
  tr.dispose();
  for (const [n, v] of snapshot(m)) if (!/lora_|multi_modal_projector/.test(n)) t.ok(same(v, before.get(n)!), `${n} bit-identical`);
  t.ok(r.lastLoss < r.firstLoss * 0.7, `bf16 loss ${r.firstLoss.toFixed(3)} -> ${r.lastLoss.toFixed(3)}`);
  m.dispose();
});

t.test('LoRA option errors', async (t) => {
  const ds = subset(IDS);
  const m = loadLlava(FIX);
  t.throws(() => new Trainer(m, ds, { ...quiet, stage: 2, lr: 1, bits: 4 } as TrainerOptions), /--bits 4 needs LoRA/);
  t.throws(() => new Trainer(m, ds, { ...quiet, stage: 1, lr: 1, loraR: 4 } as TrainerOptions), /LoRA is for stage 2/);
  t.throws(
    () => new Trainer(m, ds, { ...quiet, stage: 2, lr: 1, loraR: 4, loraTarget: 'q_proj,lm_head' } as TrainerOptions),
    /--lora-target lm_head: not a linear layer/,
  );
  t.throws(() => new Trainer(m, ds, { ...quiet, stage: 2, lr: 1, bits: 5 } as TrainerOptions), /bits must be 16, 8 or 4/);
  t.throws(() => paramGroups([], 0, { lr: 0, mmProjectorLr: 1e-3 }), /needs a positive --lr/);
  m.dispose();
});
