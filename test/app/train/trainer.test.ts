// Trainer (lib/app/train/trainer.ts) and checkpoints (lib/app/train/train_state.ts) on the tiny fixture with the
// generated coloured-shape data: schedule values, batch resolution, weight-decay groups, gradient
// accumulation against the large batch, resume giving the same next losses, overfitting with only the
// intended parameters changing, checkpoint names and round trips, the JSONL log and the loss plot.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PNG } from 'pngjs';
import * as L from '../../../lib';
import { loadLlava } from '../../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../../lib/models/llava';
import { cosineWithWarmup } from '../../../lib/optim';
import { SafetensorsFile } from '../../../lib/io/safetensors';
import { makeDemoData } from '../../../lib/app/train/demo_data';
import { LlavaDataset, DatasetSpec, collate } from '../../../lib/app/train/dataset';
import { Trainer, paramGroups, StepRecord } from '../../../lib/app/train/trainer';
import { TrainerOptions, resolveBatching, stageNumber } from '../../../lib/app/train/options';
import { PRESETS } from '../../../lib/app/train/presets';
import { originalName, loadPartialWeights, readTrainerState, findCheckpoint } from '../../../lib/app/train/train_state';
import { renderLossPlot } from '../../../lib/app/train/loss_plot';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { TEST_DIR } from '../../helpers';
import { tinyDatasetSpec } from '../../tiny_dataset';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-trainer-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const demo = makeDemoData(path.join(tmp, 'demo'));
const tok = Tokenizer.fromDir(FIX);

const spec = (template: string): DatasetSpec => tinyDatasetSpec(demo.imageFolder, { template });
const finetune = (): LlavaDataset => LlavaDataset.fromFile(demo.finetuneJson, spec('v1'), { tokenizer: tok });
const pretrain = (): LlavaDataset => LlavaDataset.fromFile(demo.pretrainJson, spec('plain'), { tokenizer: tok });
/** A dataset of chosen samples of the finetune set. */
function subset(ids: string[], template = 'v1'): LlavaDataset {
  const all = JSON.parse(fs.readFileSync(demo.finetuneJson, 'utf8')) as { id: string }[];
  const f = path.join(tmp, `subset-${ids.join('_')}.json`);
  fs.writeFileSync(f, JSON.stringify(ids.map((id) => all.find((r) => r.id === id))));
  return LlavaDataset.fromFile(f, spec(template), { tokenizer: tok });
}
const quietOpts: Partial<TrainerOptions> = { progress: 'none', log: () => {} };
const snapshot = (m: LlavaForConditionalGeneration): Map<string, Float32Array> =>
  new Map(m.namedParameters().map(([n, p]) => [n, p.dataSync() as Float32Array]));
const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

t.test('schedule: linear warmup from 0, cosine to 0', async (t) => {
  // 100 steps, ratio 0.03 -> ceil(3) = 3 warmup steps.
  t.equal(cosineWithWarmup(0, 100, 1e-3), 0, 'first step runs at lr 0 (HF LambdaLR)');
  t.ok(Math.abs(cosineWithWarmup(1, 100, 1e-3) - 1e-3 / 3) < 1e-15);
  t.equal(cosineWithWarmup(3, 100, 1e-3), 1e-3, 'peak right after warmup');
  t.ok(Math.abs(cosineWithWarmup(3 + 97 / 2, 100, 1e-3) - 5e-4) < 1e-12, 'half way down the cosine');
  t.ok(cosineWithWarmup(99, 100, 1e-3) > 0 && cosineWithWarmup(99, 100, 1e-3) < 1e-6);
  t.equal(cosineWithWarmup(100, 100, 1e-3), 0, 'ends at 0');
  // v1.5 pretrain: ~2180 steps, warmup 66 (docs/reference.md §5).
  t.equal(Math.ceil(0.03 * 2180), 66);
  t.equal(cosineWithWarmup(66, 2180, 1e-3), 1e-3);
  t.ok(cosineWithWarmup(65, 2180, 1e-3) < 1e-3);
});

t.test('presets, stages and batch resolution', async (t) => {
  t.same([PRESETS.paper.pretrain.lr, PRESETS.paper.pretrain.globalBatch, PRESETS.paper.pretrain.epochs], [2e-3, 128, 1]);
  t.same([PRESETS.paper.finetune.lr, PRESETS.paper.finetune.globalBatch, PRESETS.paper.finetune.epochs], [2e-5, 32, 3]);
  t.same([PRESETS['v1.5'].pretrain.lr, PRESETS['v1.5'].pretrain.globalBatch, PRESETS['v1.5'].pretrain.epochs], [1e-3, 256, 1]);
  t.same([PRESETS['v1.5'].finetune.lr, PRESETS['v1.5'].finetune.globalBatch, PRESETS['v1.5'].finetune.epochs], [2e-5, 128, 1]);
  t.equal(stageNumber('pretrain'), 1);
  t.equal(stageNumber('finetune'), 2);
  t.throws(() => stageNumber('stage3'), /unknown stage/);
  t.same(resolveBatching({ globalBatch: 128, microBatch: 16 }), { globalBatch: 128, microBatch: 16, gradAccum: 8 });
  t.same(resolveBatching({ globalBatch: 32, gradAccum: 4 }), { globalBatch: 32, microBatch: 8, gradAccum: 4 });
  t.same(resolveBatching({ microBatch: 2, gradAccum: 3 }), { globalBatch: 6, microBatch: 2, gradAccum: 3 });
  t.same(resolveBatching({ globalBatch: 8 }), { globalBatch: 8, microBatch: 4, gradAccum: 2 });
  t.throws(() => resolveBatching({ globalBatch: 10, microBatch: 4 }), /not divisible/);
  t.throws(() => resolveBatching({ globalBatch: 8, microBatch: 2, gradAccum: 2 }), /!= micro-batch 2 x accumulation 2/);
  t.throws(() => resolveBatching({ globalBatch: 0 }), /positive integer/);
});

t.test('weight decay groups exclude biases and norm weights', async (t) => {
  const m = loadLlava(FIX);
  try {
    m.setStage(2);
    const named = m.namedParameters().filter(([, p]) => p.requiresGrad);
    const g = paramGroups(named, 0.1);
    t.equal(g.length, 2);
    const name = new Map(named.map(([n, p]) => [p, n]));
    const decayNames = g[0].params.map((p) => name.get(p)!);
    const restNames = g[1].params.map((p) => name.get(p)!);
    t.equal(g[0].weightDecay, 0.1);
    t.equal(g[1].weightDecay, 0);
    t.ok(decayNames.includes('language_model.model.layers.0.self_attn.q_proj.weight'));
    t.ok(decayNames.includes('multi_modal_projector.linear_1.weight'));
    t.ok(restNames.includes('multi_modal_projector.linear_1.bias'));
    t.ok(restNames.includes('language_model.model.norm.weight'));
    t.ok(restNames.includes('language_model.model.layers.1.input_layernorm.weight'));
    t.notOk(decayNames.some((n) => /bias|norm/.test(n)));
    t.equal(paramGroups(named, 0).length, 1, 'no decay: one group');
  } finally {
    m.dispose();
  }
});

t.test('gradient accumulation = the large batch (equal token counts) = the average of micro-batch gradients', async (t) => {
  const m = loadLlava(FIX);
  const ds = finetune();
  try {
    const tr = new Trainer(m, ds, { ...quietOpts, stage: 2, lr: 1e-3, microBatch: 1, gradAccum: 2 } as TrainerOptions);
    const sup = (pos: number): number =>
      ds
        .item(pos)
        .labels.slice(1)
        .filter((l) => l !== -100).length;
    // Two samples with the same number of supervised tokens ("A red square." / "A blue square.").
    const pa = ds.samples.findIndex((s) => s.image === 'red_square.png');
    const pb = ds.samples.findIndex((s) => s.image === 'blue_square.png');
    const pc = ds.samples.findIndex((s) => s.image === 'red_triangle.png'); // two rounds: more tokens
    t.equal(sup(pa), sup(pb), 'equal supervised counts');
    t.not(sup(pa), sup(pc));
    const batch = (ps: number[]) =>
      collate(
        ps.map((p) => ds.item(p)),
        { padId: ds.padId, format: 'llava-hf', imageSize: 28 },
      );
    const grads = (): Map<string, Float32Array> => {
      const g = new Map(tr.trainable.map(([n, p]) => [n, p.grad!.dataSync() as Float32Array]));
      m.zeroGrad();
      return g;
    };
    const maxDiff = (a: Map<string, Float32Array>, b: Map<string, Float32Array>): { abs: number; rel: number } => {
      let abs = 0;
      let scale = 0;
      for (const [n, x] of a) {
        const y = b.get(n)!;
        for (let i = 0; i < x.length; i++) {
          abs = Math.max(abs, Math.abs(x[i] - y[i]));
          scale = Math.max(scale, Math.abs(y[i]));
        }
      }
      return { abs, rel: abs / scale };
    };
    // accumulate: each micro-batch loss scaled by 1/2
    const la = tr.microStep(batch([pa]), 0.5);
    const lb = tr.microStep(batch([pb]), 0.5);
    const acc = grads();
    const lab = tr.microStep(batch([pa, pb]), 1);
    const big = grads();
    t.ok(Math.abs((la + lb) / 2 - lab) < 1e-5, `logged loss: mean of micro losses ${(la + lb) / 2} = batch token mean ${lab}`);
    // float32 sums in a different order (and a padded row): relative 1e-5 of the largest gradient.
    const d1 = maxDiff(acc, big);
    t.ok(d1.rel < 1e-5, `accumulated vs large batch: rel ${d1.rel.toExponential(2)}`);
    // Unequal counts: the reference's per-micro-batch token mean -> accumulation is the plain average of the
    // two micro-batch gradients, which differs from the large batch's token mean.
    tr.microStep(batch([pa]), 1);
    const ga = grads();
    tr.microStep(batch([pc]), 1);
    const gc = grads();
    tr.microStep(batch([pa]), 0.5);
    tr.microStep(batch([pc]), 0.5);
    const acc2 = grads();
    const avg = new Map([...ga].map(([n, x]) => [n, x.map((v, i) => (v + gc.get(n)![i]) / 2)]));
    const d2 = maxDiff(acc2, avg);
    t.ok(d2.rel < 1e-5, `accumulated = explicit average of micro-batch gradients: rel ${d2.rel.toExponential(2)}`);
    tr.microStep(batch([pa, pc]), 1);
    const big2 = grads();
    t.ok(maxDiff(acc2, big2).rel > 1e-3, 'and differs from the token-mean large batch when counts differ');
    tr.dispose();

    // End to end: micro 1 x accum 2 vs micro 2 x accum 1 on the two equal-count samples, 3 steps.
    const pair = subset([ds.samples[pa].id, ds.samples[pb].id]);
    const run = async (micro: number, accum: number): Promise<{ losses: number[]; w: Float32Array }> => {
      const mm = loadLlava(FIX);
      const tt = new Trainer(mm, pair, {
        ...quietOpts,
        stage: 2,
        lr: 1e-3,
        microBatch: micro,
        gradAccum: accum,
        maxSteps: 3,
        warmupRatio: 0,
        seed: 3,
      } as TrainerOptions);
      const r = await tt.train();
      const w = mm.getParameter('language_model.model.layers.0.mlp.up_proj.weight')!.dataSync() as Float32Array;
      tt.dispose();
      mm.dispose();
      return { losses: r.history.map((h) => h.loss), w };
    };
    const A = await run(1, 2);
    const B = await run(2, 1);
    A.losses.forEach((l, i) => t.ok(Math.abs(l - B.losses[i]) < 1e-5, `step ${i + 1}: ${l} vs ${B.losses[i]}`));
    let wd = 0;
    A.w.forEach((v, i) => (wd = Math.max(wd, Math.abs(v - B.w[i]))));
    // 3 Adam steps of lr 1e-3 move weights by ~3e-3; float32 gradient noise changes that by far less.
    t.ok(wd < 1e-5, `weights after 3 steps agree (max diff ${wd.toExponential(2)})`);
  } finally {
    m.dispose();
  }
});

t.test('resume: same data order, same next losses', async (t) => {
  for (const stage of [1, 2] as const) {
    const ds = stage === 1 ? pretrain() : finetune();
    const opts = { ...quietOpts, stage, lr: 2e-3, microBatch: 2, gradAccum: 2, maxSteps: 7, seed: 11, maxGradNorm: 1 } as TrainerOptions;
    // uninterrupted
    const m0 = loadLlava(FIX);
    const full = new Trainer(m0, ds, { ...opts, outputDir: path.join(tmp, `full${stage}`) });
    const r0 = await full.train();
    full.dispose();
    m0.dispose();
    // interrupted after 4 steps (crossing an epoch boundary: 14 or 12 samples = 4 or 3 steps per epoch)
    const out = path.join(tmp, `resume${stage}`);
    const m1 = loadLlava(FIX);
    const first = new Trainer(m1, ds, { ...opts, outputDir: out });
    await first.train({ untilStep: 4 });
    first.dispose();
    m1.dispose();
    const ck = findCheckpoint(out)!;
    t.equal(path.basename(ck), 'checkpoint-4');
    const st = readTrainerState(ck);
    t.equal(st.step, 4);
    t.equal(st.totalSteps, 7);
    t.equal(st.seed, 11);
    t.ok(fs.existsSync(path.join(ck, stage === 1 ? 'mm_projector.safetensors' : 'model.safetensors')));
    t.ok(fs.existsSync(path.join(ck, 'optimizer.safetensors')));
    // a fresh process would start from the base model
    const m2 = loadLlava(FIX);
    const second = new Trainer(m2, ds, { ...opts, outputDir: out });
    second.resume(ck);
    t.equal(second.state.epoch, st.epoch);
    t.equal(second.state.batchInEpoch, st.batchInEpoch);
    const r2 = await second.train();
    second.dispose();
    m2.dispose();
    const want = r0.history.slice(4);
    t.equal(r2.history.length, 3);
    r2.history.forEach((h, i) => {
      t.equal(h.step, want[i].step);
      t.ok(Math.abs(h.loss - want[i].loss) < 1e-6, `stage ${stage} step ${h.step}: resumed ${h.loss} vs uninterrupted ${want[i].loss}`);
      t.equal(h.lr, want[i].lr);
    });
    const lines = fs.readFileSync(path.join(out, 'train_log.jsonl'), 'utf8').trim().split('\n');
    t.equal(lines.length, 7, 'log continues: 4 + 3 lines');
    t.same(
      lines.map((l) => (JSON.parse(l) as StepRecord).step),
      [1, 2, 3, 4, 5, 6, 7],
    );
  }
});

t.test("resume: the checkpoint's schedule unless this run gives one, its seed always, micro-batch and accumulation must match", async (t) => {
  const ds = finetune();
  const out = path.join(tmp, 'resume-precedence');
  const base = { ...quietOpts, stage: 2, lr: 1e-3, microBatch: 2, gradAccum: 2 } as TrainerOptions;
  const m0 = loadLlava(FIX);
  const first = new Trainer(m0, ds, { ...base, maxSteps: 5, seed: 7, outputDir: out });
  await first.train({ untilStep: 1 });
  first.dispose();
  m0.dispose();
  const ck = findCheckpoint(out)!;
  const logs: string[] = [];
  const m1 = loadLlava(FIX);
  try {
    // no schedule given: the checkpoint's (max steps 5), even though this run's default would be 1 epoch
    const kept = new Trainer(m1, ds, { ...base, seed: 8, warmupRatio: 0.5, log: (m) => logs.push(m) });
    t.equal(kept.state.totalSteps, 4, 'this run alone: one epoch of 14 samples = 4 steps');
    kept.resume(ck);
    t.equal(kept.state.totalSteps, 5, "the checkpoint's schedule length");
    t.equal(kept.maxSteps, 5, "and its step-based schedule (epochs repeat), so it cannot stop at the epoch's end");
    t.equal(kept.state.seed, 7, "the checkpoint's seed, over this run's --seed");
    t.equal(kept.state.step, 1);
    t.match(logs.join('\n'), /\[train\] resuming with the checkpoint's schedule length 5 \(this run computed 4\)/);
    t.equal(kept.lrAt(1), cosineWithWarmup(1, 5, 1e-3, 0.5), "lr and warmup ratio are this run's own");
    kept.dispose();
    // a schedule given explicitly wins
    const again = new Trainer(m1, ds, { ...base, maxSteps: 9, seed: 8, log: (m) => logs.push(m) });
    again.resume(ck);
    t.equal(again.state.totalSteps, 9, "this run's --max-steps, given explicitly");
    t.equal(again.state.seed, 7);
    t.match(logs.join('\n'), /\[train\] schedule length 9 from this run's epochs \/ max steps \(the checkpoint's was 5\)/);
    again.dispose();
    // the caller says which options were typed (llava train: the flags on its command line)
    const typed = new Trainer(m1, ds, { ...base, maxSteps: 9, epochs: 1 });
    typed.resume(ck, { given: ['stage', 'lr'] });
    t.equal(typed.state.totalSteps, 5, 'maxSteps from a preset or default is not "given"');
    typed.dispose();
    const other = new Trainer(m1, ds, { ...base, microBatch: 1, gradAccum: 4, maxSteps: 5 });
    t.throws(() => other.resume(ck), /\[train\] checkpoint .* used microBatch 2, this run 1: the data order would differ/);
    other.dispose();
  } finally {
    m1.dispose();
  }
});

t.test('overfitting a handful of samples; only the intended parameters change', async (t) => {
  const m = loadLlava(FIX);
  try {
    const before = snapshot(m);
    const isVision = (n: string): boolean => n.startsWith('vision_tower.');
    const isProj = (n: string): boolean => n.startsWith('multi_modal_projector.');
    // stage 1: projector only
    const s1 = new Trainer(m, pretrain(), { ...quietOpts, stage: 1, lr: 1e-2, microBatch: 4, gradAccum: 1, maxSteps: 30 } as TrainerOptions);
    const r1 = await s1.train();
    s1.dispose();
    const mid = snapshot(m);
    for (const [n, v] of before) {
      if (isProj(n)) t.notOk(same(v, mid.get(n)!), `stage 1 changed ${n}`);
      else t.ok(same(v, mid.get(n)!), `stage 1 left ${n} bit-identical`);
    }
    t.ok(r1.lastLoss < r1.firstLoss, `stage 1 loss falls ${r1.firstLoss.toFixed(3)} -> ${r1.lastLoss.toFixed(3)}`);
    // stage 2: projector + LLM on 4 samples
    const ds = subset(['ft-0', 'ft-4', 'ft-8', 'text-0']);
    const s2 = new Trainer(m, ds, { ...quietOpts, stage: 2, lr: 3e-3, microBatch: 2, gradAccum: 2, maxSteps: 40 } as TrainerOptions);
    const r2 = await s2.train();
    s2.dispose();
    const after = snapshot(m);
    t.ok(r2.firstLoss / r2.lastLoss > 5, `stage 2 overfits: ${r2.firstLoss.toFixed(3)} -> ${r2.lastLoss.toFixed(4)}`);
    let lmChanged = 0;
    for (const [n, v] of mid) {
      if (isVision(n)) t.ok(same(v, after.get(n)!), `stage 2 left ${n} bit-identical`);
      else if (!same(v, after.get(n)!)) lmChanged++;
    }
    const nonVision = [...mid.keys()].filter((n) => !isVision(n)).length;
    t.equal(lmChanged, nonVision, 'stage 2 changed every projector and language-model parameter');
  } finally {
    m.dispose();
  }
});

t.test('checkpoint files: projector naming, stage 2 from the projector, final model loads back', async (t) => {
  const out1 = path.join(tmp, 'ck1');
  const m = loadLlava(FIX);
  try {
    const s1 = new Trainer(m, pretrain(), {
      ...quietOpts,
      stage: 1,
      lr: 5e-3,
      microBatch: 4,
      gradAccum: 1,
      maxSteps: 3,
      outputDir: out1,
      baseModelDir: FIX,
    } as TrainerOptions);
    await s1.train();
    s1.dispose();
    const pf = path.join(out1, 'mm_projector.safetensors');
    const f = SafetensorsFile.open(pf);
    t.same(f.names().sort(), [
      'model.mm_projector.0.bias',
      'model.mm_projector.0.weight',
      'model.mm_projector.2.bias',
      'model.mm_projector.2.weight',
    ]);
    t.same(f.info('model.mm_projector.0.weight').shape, [48, 32]);
    const w2 = f.readAsFloat32('model.mm_projector.2.weight');
    f.close();
    t.ok(same(w2, m.getParameter('multi_modal_projector.linear_2.weight')!.dataSync() as Float32Array), 'saved projector = trained projector');
    t.ok(fs.existsSync(path.join(out1, 'config.json')), 'stage 1 also writes the config');
    t.notOk(fs.existsSync(path.join(out1, 'model.safetensors')), 'stage 1 writes the projector alone');
    t.equal(fs.readdirSync(out1).filter((n) => n.includes('.tmp-')).length, 0, 'no temp files left');
    t.same(
      fs.readdirSync(out1).filter((n) => n.startsWith('checkpoint-')),
      ['checkpoint-3'],
    );
    t.equal(originalName('multi_modal_projector.linear_1.bias'), 'model.mm_projector.0.bias');
    t.equal(originalName('language_model.model.layers.3.mlp.up_proj.weight'), 'model.layers.3.mlp.up_proj.weight');
    t.equal(originalName('language_model.lm_head.weight'), 'lm_head.weight');
    t.equal(originalName('vision_tower.vision_model.pre_layrnorm.weight'), 'model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight');

    // stage 2 starts from the projector file
    const m2 = loadLlava(FIX);
    try {
      loadPartialWeights(m2, pf, { only: 'projector' });
      t.ok(same(m2.getParameter('multi_modal_projector.linear_2.weight')!.dataSync() as Float32Array, w2), 'projector loaded into a fresh model');
      t.throws(() => loadPartialWeights(m2, path.join(FIX, 'model.safetensors'), { only: 'projector' }), /not a projector tensor/);
      const out2 = path.join(tmp, 'ck2');
      const s2 = new Trainer(m2, finetune(), {
        ...quietOpts,
        stage: 2,
        lr: 1e-3,
        microBatch: 2,
        gradAccum: 2,
        maxSteps: 3,
        maxGradNorm: 1,
        outputDir: out2,
        baseModelDir: FIX,
      } as TrainerOptions);
      await s2.train();
      s2.dispose();
      for (const n of [
        'model.safetensors',
        'config.json',
        'tokenizer.json',
        'preprocessor_config.json',
        'train_log.jsonl',
        'loss.png',
        'trainer_state.json',
      ])
        t.ok(fs.existsSync(path.join(out2, n)), `${n} written`);
      const log = fs
        .readFileSync(path.join(out2, 'train_log.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as StepRecord);
      t.equal(log.length, 3);
      for (const r of log) {
        t.ok(
          ['step', 'epoch', 'loss', 'lr', 'tokens_per_s', 'grad_norm'].every((k) => k in r),
          `log line has every field: ${JSON.stringify(r)}`,
        );
        t.ok(r.grad_norm! > 0 && r.tokens_per_s > 0);
      }
      // the output directory is a loadable model with the trained weights
      const back = loadLlava(out2);
      try {
        const b = collate(
          [0, 12].map((p) => finetune().item(p)),
          { padId: 677, format: 'llava-hf', imageSize: 28 },
        );
        const lossOf = (mm: LlavaForConditionalGeneration): number =>
          L.tidy(() =>
            mm
              .loss({
                inputIds: b.inputIds,
                attentionMask: b.attentionMask,
                labels: b.labels,
                pixelValues: L.tensor(b.pixels!, { shape: [b.numImages, 3, 28, 28] }),
              })
              .loss.item(),
          );
        t.equal(lossOf(back), lossOf(m2), 'reloaded model gives the same loss');
      } finally {
        back.dispose();
      }
    } finally {
      m2.dispose();
    }
  } finally {
    m.dispose();
  }
});

t.test('bf16 training keeps float32 master weights and saves float32', async (t) => {
  const m = loadLlava(FIX, { dtype: 'bfloat16' });
  try {
    const out = path.join(tmp, 'bf16');
    const ds = subset(['ft-0', 'ft-5']);
    const tr = new Trainer(m, ds, {
      ...quietOpts,
      stage: 2,
      lr: 3e-3,
      microBatch: 2,
      gradAccum: 1,
      maxSteps: 8,
      warmupRatio: 0,
      outputDir: out,
      baseModelDir: FIX,
    } as TrainerOptions);
    const r = await tr.train();
    t.ok(tr.optimizer.stateTensors().has('0.master'), 'master copies for bf16 parameters');
    tr.dispose();
    t.ok(Number.isFinite(r.lastLoss) && r.lastLoss < r.firstLoss, `bf16 loss falls ${r.firstLoss.toFixed(3)} -> ${r.lastLoss.toFixed(3)}`);
    const f = SafetensorsFile.open(path.join(out, 'model.safetensors'));
    t.equal(f.info('language_model.model.norm.weight').dtype, 'F32');
    f.close();
  } finally {
    m.dispose();
  }
});

t.test('memory is flat across training steps', async (t) => {
  const m = loadLlava(FIX);
  try {
    const tr = new Trainer(m, finetune(), { ...quietOpts, stage: 2, lr: 1e-3, microBatch: 2, gradAccum: 2, maxSteps: 6 } as TrainerOptions);
    await tr.train({ untilStep: 2 });
    const before = L.memory();
    await tr.train({ untilStep: 5 });
    const after = L.memory();
    t.equal(after.numTensors, before.numTensors, 'live tensors flat');
    t.equal(after.cpu.bytes, before.cpu.bytes, 'bytes flat');
    tr.dispose();
  } finally {
    m.dispose();
  }
});

t.test('loss plot is a PNG with a curve', async (t) => {
  const pts = Array.from({ length: 50 }, (_, i) => ({ step: i + 1, loss: 6 * Math.exp(-i / 10) + 0.05 }));
  const png = PNG.sync.read(renderLossPlot(pts, { width: 320, height: 200, title: 'loss' }));
  t.equal(png.width, 320);
  t.equal(png.height, 200);
  let blue = 0;
  for (let i = 0; i < png.width * png.height; i++) if (png.data[i * 4 + 2] > 150 && png.data[i * 4] < 100) blue++;
  t.ok(blue > 100, `curve pixels drawn (${blue})`);
  t.ok(PNG.sync.read(renderLossPlot([])).width > 0, 'empty history still renders');
});
