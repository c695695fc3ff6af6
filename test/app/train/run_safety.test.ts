// A training run survives the ways the first hour ends it early (lib/app/train/trainer.ts, train_state.ts,
// output_dir.ts, lib/app/util/files.ts), on the tiny fixture through the Trainer API:
// - a resume without the schedule continues the checkpoint's (a max-steps run past its first epoch used to
//   stop at once with "loss NaN -> NaN" and write the checkpoint again as the final model); a run with no
//   step left fails and writes nothing;
// - requestStop (what Ctrl-C does) ends after a whole step with a checkpoint and no final model;
// - a killed run's temp entries are cleaned at the next start, a parked checkpoint is put back, old
//   checkpoints go through a temp name, a torn last log line is dropped with a warning naming the file;
// - --save-total-limit keeps N checkpoints (0 = all, default 1), the output directory rules of `llava train`
//   (non-empty refused; --resume; --overwrite-output), the resume command and the small-data start line.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { loadLlava } from '../../../lib/models/loader';
import { writeSafetensors } from '../../../lib/io/safetensors';
import { makeDemoData } from '../../../lib/app/train/demo_data';
import { LlavaDataset } from '../../../lib/app/train/dataset';
import { Trainer, type StepRecord } from '../../../lib/app/train/trainer';
import type { TrainerOptions } from '../../../lib/app/train/options';
import { findCheckpoint, pruneCheckpoints, readTrainLog } from '../../../lib/app/train/train_state';
import { prepareOutputDir, resumeCommand } from '../../../lib/app/train/output_dir';
import { batchText } from '../../../lib/app/cli/train';
import { cleanStaleTemps } from '../../../lib/app/util/files';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { TEST_DIR } from '../../helpers';
import { tinyDatasetSpec } from '../../tiny_dataset';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-safety-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const demo = makeDemoData(path.join(tmp, 'demo'));
const spec = tinyDatasetSpec(demo.imageFolder);
const ds = LlavaDataset.fromFile(demo.finetuneJson, spec, { tokenizer: Tokenizer.fromDir(FIX) }); // 14 samples
// micro 2 x accum 2: 4 optimizer steps per epoch
const base = { stage: 2, lr: 1e-3, microBatch: 2, gradAccum: 2, progress: 'none', log: () => {} } as TrainerOptions;

/** A trainer on a fresh copy of the fixture; `fn` runs it, then both are freed. */
async function withTrainer<T>(o: Partial<TrainerOptions>, fn: (tr: Trainer) => Promise<T>): Promise<T> {
  const m = loadLlava(FIX);
  const tr = new Trainer(m, ds, { ...base, ...o } as TrainerOptions);
  try {
    return await fn(tr);
  } finally {
    tr.dispose();
    m.dispose();
  }
}

/** A process id that is certainly not running (a child that has exited). */
const deadPid = (): number => spawnSync(process.execPath, ['-e', '0']).pid!;
const logSteps = (out: string): number[] => readTrainLog<StepRecord>(path.join(out, 'train_log.jsonl'), () => {}).map((r) => r.step);

t.test('--resume without --max-steps continues the checkpoint schedule past its first epoch', async (t) => {
  const out = path.join(tmp, 'steps');
  await withTrainer({ maxSteps: 7, outputDir: out }, (tr) => tr.train({ untilStep: 5 }));
  const ck = findCheckpoint(out)!;
  t.equal(path.basename(ck), 'checkpoint-5');
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'an unfinished run writes no final model');
  // as `llava train --resume` without --max-steps: the table default (1 epoch = 4 steps) is not "given"
  const r = await withTrainer({ outputDir: out }, async (tr) => {
    tr.resume(ck);
    t.equal(tr.state.epoch, 1, 'the checkpoint is in the second epoch');
    return tr.train();
  });
  t.same(
    r.history.map((h) => h.step),
    [6, 7],
    'the two steps left are trained',
  );
  t.ok(
    r.history.every((h) => Number.isFinite(h.loss)),
    'with finite losses',
  );
  t.same(logSteps(out), [1, 2, 3, 4, 5, 6, 7]);
  t.ok(fs.existsSync(path.join(out, 'model.safetensors')), 'then the final model');

  // resuming the finished run: nothing to do, an error, and the final model is not written again
  const model = path.join(out, 'model.safetensors');
  const before = fs.statSync(model).mtimeMs;
  await withTrainer({ outputDir: out }, async (tr) => {
    tr.resume(findCheckpoint(out)!);
    await t.rejects(tr.train(), /\[train\] nothing to train: the run is already at step 7 of its 7-step schedule \(resumed from .*checkpoint-7\)/);
  });
  t.equal(fs.statSync(model).mtimeMs, before, 'model.safetensors untouched');
  t.same(logSteps(out), [1, 2, 3, 4, 5, 6, 7], 'log untouched');
  // an epoch schedule that is used up is caught the same way
  const ep = path.join(tmp, 'epochs');
  await withTrainer({ epochs: 1, outputDir: ep }, (tr) => tr.train());
  await withTrainer({ outputDir: ep }, async (tr) => {
    tr.resume(findCheckpoint(ep)!);
    await t.rejects(tr.train(), /nothing to train: the run is already at step 4 of its 4-step schedule/);
  });
});

t.test('requestStop ends after the step under way, with a checkpoint and no final model', async (t) => {
  const out = path.join(tmp, 'stop');
  let tr!: Trainer;
  const r = await withTrainer(
    { maxSteps: 50, outputDir: out, progress: 'plain', logEvery: 1, log: (m) => void (/step 2\//.test(m) && tr.requestStop()) },
    (x) => {
      tr = x;
      return x.train();
    },
  );
  t.equal(r.interrupted, true);
  t.equal(r.steps, 2, 'the step under way finished, no further one began');
  t.equal(r.checkpoint, path.join(out, 'checkpoint-2'));
  t.ok(fs.existsSync(path.join(out, 'checkpoint-2', 'optimizer.safetensors')));
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'no final model');
  const again = await withTrainer({ outputDir: out }, async (x) => {
    x.resume(findCheckpoint(out)!);
    return x.train({ untilStep: 3 });
  });
  t.same(
    again.history.map((h) => h.step),
    [3],
    'the checkpoint resumes',
  );
});

t.test("a killed run's leftovers: temp entries cleaned, a parked checkpoint restored, a torn log line dropped", async (t) => {
  const out = path.join(tmp, 'killed');
  await withTrainer({ maxSteps: 8, outputDir: out, saveSteps: 2, saveTotalLimit: 0 }, (tr) => tr.train({ untilStep: 4 }));
  t.same(
    fs
      .readdirSync(out)
      .filter((n) => n.startsWith('checkpoint-'))
      .sort(),
    ['checkpoint-2', 'checkpoint-4'],
  );
  const pid = deadPid();
  // kill -9 in the middle of writeDirAtomic (a half-built checkpoint), writeFileAtomic and a replacement
  fs.mkdirSync(path.join(out, `.checkpoint-6.tmp-${pid}-0badc0de`));
  fs.writeFileSync(path.join(out, `.trainer_state.json.tmp-${pid}-0badc0de`), '{"ste');
  fs.renameSync(path.join(out, 'checkpoint-2'), path.join(out, `.checkpoint-2.tmp-${pid}-12345678.old`));
  fs.mkdirSync(path.join(out, `.checkpoint-1.tmp-${pid}-87654321.del`));
  // and in the middle of a log line
  fs.appendFileSync(path.join(out, 'train_log.jsonl'), '{"step":5,"epoch":1.1,"lo');
  const logs: string[] = [];
  const r = await withTrainer({ outputDir: out, saveTotalLimit: 0, log: (m) => logs.push(m) }, async (tr) => {
    tr.resume(findCheckpoint(out)!);
    return tr.train({ untilStep: 5 });
  });
  t.same(
    r.history.map((h) => h.step),
    [5],
  );
  const text = logs.join('\n');
  t.match(text, new RegExp(`removed .*\\.checkpoint-6\\.tmp-${pid}-0badc0de \\(left by a killed run\\)`));
  t.match(text, /restored .*checkpoint-2 from \.checkpoint-2\.tmp-/);
  t.match(text, /\[train\] .*train_log\.jsonl: dropped a torn last line \(the run was killed while writing it\): \{"step":5,"epoch":1\.1,"lo/);
  t.same(
    fs.readdirSync(out).filter((n) => n.includes('.tmp-')),
    [],
    'no temp entries left',
  );
  t.ok(fs.existsSync(path.join(out, 'checkpoint-2', 'trainer_state.json')), 'the parked checkpoint is back');
  t.same(logSteps(out), [1, 2, 3, 4, 5], 'the log continues cleanly');
  // a bad line that is not the last one is an error naming the file and the line
  fs.writeFileSync(path.join(out, 'train_log.jsonl'), '{"step":1}\nnot json\n{"step":3}\n');
  t.throws(() => readTrainLog(path.join(out, 'train_log.jsonl'), () => {}), /\[train\] .*train_log\.jsonl: line 2 is not a step record/);
  // a live process's temp entries are left alone
  const live = `.x.tmp-${process.ppid}-aaaaaaaa`;
  fs.writeFileSync(path.join(out, live), '');
  cleanStaleTemps(out);
  t.ok(fs.existsSync(path.join(out, live)), 'a running writer keeps its temp file');
});

t.test('errors on the resume path name the file', async (t) => {
  const out = path.join(tmp, 'broken');
  await withTrainer({ maxSteps: 4, outputDir: out }, (tr) => tr.train({ untilStep: 1 }));
  const ck = path.join(out, 'checkpoint-1');
  const resume = (): Promise<void> => withTrainer({ outputDir: out }, async (tr) => tr.resume(ck));
  const copy = (f: string): string => {
    fs.copyFileSync(path.join(ck, f), path.join(tmp, f));
    return path.join(tmp, f);
  };
  const opt = copy('optimizer.safetensors');
  fs.writeFileSync(path.join(ck, 'optimizer.safetensors'), 'garbage');
  await t.rejects(resume(), /optimizer\.safetensors/);
  fs.copyFileSync(opt, path.join(ck, 'optimizer.safetensors'));
  writeSafetensors(path.join(ck, 'model.safetensors'), {
    'multi_modal_projector.linear_1.weight': { dtype: 'F32', shape: [1, 1], data: new Uint8Array(4) },
  });
  await t.rejects(
    resume(),
    /\[checkpoint\] .*checkpoint-1\/model\.safetensors: \[fromPretrained\] tensor 'multi_modal_projector\.linear_1\.weight' has shape \[1, 1\]/,
  );
  fs.writeFileSync(path.join(ck, 'trainer_state.json'), '{"step": 1,');
  await t.rejects(resume(), /\[checkpoint\] .*checkpoint-1\/trainer_state\.json: invalid JSON/);
});

t.test('--save-total-limit: 0 keeps all, N the newest N (default 1); pruning goes through temp names', async (t) => {
  const count = async (o: Partial<TrainerOptions>, name: string): Promise<string[]> => {
    const out = path.join(tmp, name);
    await withTrainer({ maxSteps: 6, saveSteps: 1, outputDir: out, ...o }, (tr) => tr.train());
    t.same(
      fs.readdirSync(out).filter((n) => n.includes('.tmp-')),
      [],
      `${name}: no temp entries`,
    );
    return fs
      .readdirSync(out)
      .filter((n) => n.startsWith('checkpoint-'))
      .sort();
  };
  t.same(await count({ saveTotalLimit: 0 }, 'keep-all'), [
    'checkpoint-1',
    'checkpoint-2',
    'checkpoint-3',
    'checkpoint-4',
    'checkpoint-5',
    'checkpoint-6',
  ]);
  t.same(await count({ saveTotalLimit: 2 }, 'keep-2'), ['checkpoint-5', 'checkpoint-6']);
  t.same(await count({}, 'keep-default'), ['checkpoint-6'], 'default: the newest one, as the reference scripts');
  const d = path.join(tmp, 'prune');
  for (const n of [3, 10, 7]) fs.mkdirSync(path.join(d, `checkpoint-${n}`), { recursive: true });
  t.same(pruneCheckpoints(d, 1), ['checkpoint-7', 'checkpoint-3'], 'by step number, not by name');
  t.same(fs.readdirSync(d), ['checkpoint-10']);
});

t.test('output directory: non-empty refused unless --resume or --overwrite-output', async (t) => {
  const d = path.join(tmp, 'outdir');
  const log: string[] = [];
  const o = { resume: false, overwrite: false, log: (m: string) => log.push(m) };
  prepareOutputDir(d, o);
  t.ok(fs.existsSync(d), 'created');
  fs.mkdirSync(path.join(d, 'checkpoint-3'));
  for (const f of ['train_log.jsonl', 'model.safetensors', 'config.json', 'notes.txt']) fs.writeFileSync(path.join(d, f), 'x');
  t.throws(
    () => prepareOutputDir(d, o),
    /\[train\] output directory .*outdir is not empty \(checkpoint-3, config\.json, .*\): pass --resume .* --overwrite-output/,
  );
  t.doesNotThrow(() => prepareOutputDir(d, { ...o, resume: true }));
  t.throws(() => prepareOutputDir(d, { ...o, resume: true, overwrite: true }), /contradict/);
  prepareOutputDir(d, { ...o, overwrite: true });
  t.same(fs.readdirSync(d), ['notes.txt'], "only the old run's files go");
  t.match(log.join('\n'), /removed 1 checkpoint folder\(s\) and 3 file\(s\) .*; left alone: notes\.txt/);
  // only a killed run's temp entries: not "non-empty"
  const e = path.join(tmp, 'only-temps');
  fs.mkdirSync(e);
  fs.mkdirSync(path.join(e, `.checkpoint-1.tmp-${deadPid()}-0badc0de`));
  t.doesNotThrow(() => prepareOutputDir(e, o));
});

t.test('the resume command and the small-data start line', async (t) => {
  const cmd = resumeCommand(
    {
      stage: 'finetune',
      baseModelDir: 'm dir',
      data: 'd.json',
      imageFolder: 'img',
      outputDir: 'out',
      maxSteps: 9,
      groupByModalityLength: false,
      overwriteOutput: true,
      resume: 'x',
    },
    'llava',
  );
  t.equal(
    cmd,
    "llava train --stage finetune --model 'm dir' --data d.json --image-folder img --output out --max-steps 9 --no-group-by-modality-length --resume",
  );
  t.equal(batchText(128, 4, 32, 1000), 'global batch 128 = 4 x 32');
  t.equal(
    batchText(256, 4, 64, 12),
    'global batch 256 = 4 x 64, but the data set has only 12 samples: each step takes all 12 (3 micro-batches of up to 4)',
  );
});
