// trainer.ts — the two LLaVA training stages (docs/reference.md §5): freezing by stage, AdamW with a cosine schedule
// and 3% warmup, gradient accumulation to the global batch, optional clipping, checkpoints that resume
// with the same data order and schedule, a progress display, a JSONL log and a loss plot.
//
// Semantics (as the reference's HF Trainer, with the differences named):
// - One optimizer step = gradAccum micro-batches. Each micro-batch loss is the token mean over that
//   micro-batch's supervised targets (docs/reference.md §1.8); it is scaled by 1/k before backward, so the step's
//   gradient is the average of the k micro-batch gradients. The logged loss is the mean of the k
//   micro-batch losses. (k = gradAccum, or fewer for the last group of an epoch: an epoch has
//   ceil(ceil(N/micro)/accum) steps. HF instead carries a partial group into the next epoch.)
// - lr for step s (0-based) = cosineWithWarmup(s, totalSteps, lr, warmupRatio): the first step runs at lr 0
//   when there is warmup, as HF's LambdaLR does. totalSteps = maxSteps if given (HF max_steps; epochs then
//   repeat as needed), else epochs × steps per epoch.
// - Data order: epoch e uses `epochOrder(samples, {seed, epoch: e, ...})` (plain seeded shuffle, or the
//   modality-length grouped sampler), cut into micro-batches. A checkpoint stores (epoch, micro-batch
//   index), so a resumed run sees exactly the batches the uninterrupted run would have.
// - Parameters: `model.setStage(stage)` freezes (stage 1: projector only; stage 2: projector + LLM; the
//   vision tower stays frozen unless trainVision). With weightDecay > 0 biases and norm weights go into a
//   no-decay group (HF's get_parameter_names rule, param_groups.ts).
// - bf16: load the model in bf16 (on the GPU); AdamW keeps float32 master weights and moments for
//   low-precision parameters, so updates never accumulate bf16 rounding.
// - Activation checkpointing (gradientCheckpointing): each LLaMA decoder layer keeps only its input
//   and is recomputed in backward (lib/core/recompute.ts); gradients are unchanged.
// - Options: declared once in options.ts (defaults, ranges, what a resume keeps); the constructor
//   resolves them, so `this.opts` is complete. resume() keeps the checkpoint's seed, its schedule (epochs
//   or max steps, and so the length and the epoch bound) unless this run gives one, and refuses a
//   different micro-batch / accumulation.
// - A train() call that would run no optimizer step (a finished schedule, say) throws before touching the
//   output directory: it never writes a "final" model that is the checkpoint again. requestStop() (Ctrl-C in
//   `llava train`) ends the run after the step under way, with a checkpoint and without the final model.
// - Saved model folders record how they were trained (modelFilesPatch: config.json template, aspect and
//   image token scheme; a llava-hf base's Jinja chat_template rewritten), so chat and serve need no flags.
// - At the start of train() the output directory loses the temp entries of a killed run
//   (util/files.ts cleanStaleTemps); old checkpoints are pruned atomically; a torn last log line is dropped.
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../../core/tensor';
import { tidy } from '../../core/memory';
import { noGrad } from '../../core/autograd';
// '../ops' (not its files) so the ops are installed as Tensor methods, which backward() needs.
import { fromTypedArray, mul, copyInto } from '../../ops';
import { AdamW, clipGradNorm, cosineWithWarmup } from '../../optim/adamw';
import type { LlavaForConditionalGeneration } from '../../models/llava';
import { LlavaDataset, CollatedBatch } from './dataset';
import { PrefetchLoader, EncoderPool, microBatches } from './batch_loader';
import { TrainerState, STATE_FILE, OPTIMIZER_FILE, PROJECTOR_FILE, MODEL_FILE, saveOptimizer } from './train_state';
import { readTrainerState, readTrainLog, pruneCheckpoints, nothingToDo, type ModelFilesPatch } from './train_state';
import { setupLora, saveWeights, loadPartialWeights, paramGroups } from './lora'; // PEFT layout when adapters are on
import { writeLossPlot } from './loss_plot';
import { epochOrder } from './sampler';
import { Progress } from '../util/progress';
import { cleanStaleTemps, writeDirAtomic, writeFileAtomic } from '../util/files';
import { modelFilesPatch } from './model_files';
import { RESUME_UNLESS_GIVEN, resolveOne, resolveTrainerOptions } from './options';
import type { ResolvedTrainerOptions, TrainerOptions } from './options';
import { loadCheckpointOptimizer, optimizerPieces, checkSameDataOrder, type DataParallel } from './distributed';
import { PIECES_KEY } from './optimizer_shards';

export type { TrainerOptions } from './options';
export { paramGroups } from './param_groups';

// ---------------------------------------------------------------------------------------------------------
// Records

export interface StepRecord {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  tokens_per_s: number;
  grad_norm?: number;
}

export interface TrainResult {
  steps: number;
  history: StepRecord[];
  firstLoss: number;
  lastLoss: number;
  seconds: number;
  checkpoint: string | null;
  /** requestStop() ended the run early (after a whole optimizer step and a checkpoint; no final model). */
  interrupted: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// Trainer

export const LOG_FILE = 'train_log.jsonl';
export const PLOT_FILE = 'loss.png';

export class Trainer {
  readonly stage: 1 | 2;
  readonly optimizer: AdamW;
  readonly trainable: [string, Tensor][];
  readonly globalBatch: number;
  readonly microBatch: number;
  readonly gradAccum: number;
  readonly stepsPerEpoch: number;
  /** The schedule: epochs, or maxSteps (then epochs repeat as needed); a resume may take the checkpoint's. */
  epochs: number;
  maxSteps: number | undefined;
  state: TrainerState;
  /** Records of the steps run by this object (a resumed run's earlier steps live in train_log.jsonl). */
  readonly history: StepRecord[] = [];
  private readonly log: (m: string) => void;
  private readonly device: Tensor['device'];
  private readonly dtype: Tensor['dtype'];
  private logReady = false;
  private stopRequested = false;
  /** The checkpoint resume() read, for messages. */
  private resumedFrom: string | null = null;
  /** Option names given explicitly to the constructor (a resume keeps their values, options.ts). */
  private readonly given: ReadonlySet<string>;
  /** The options with every default filled in (options.ts). */
  readonly opts: ResolvedTrainerOptions;
  /** Data-parallel training (distributed.ts), or null; `lead` is rank 0, which alone logs and saves. */
  readonly parallel: DataParallel | null;
  private readonly lead: boolean;
  /** The last micro-batch this rank ran: zero3 repeats it, weighted 0, when it has fewer than the others. */
  private lastBatch: CollatedBatch | null = null;

  constructor(
    readonly model: LlavaForConditionalGeneration,
    readonly dataset: LlavaDataset,
    options: TrainerOptions,
  ) {
    const o = (this.opts = resolveTrainerOptions(options));
    this.given = new Set(
      Object.entries(options)
        .filter(([, v]) => v !== undefined)
        .map(([k]) => k),
    );
    this.stage = o.stage;
    this.parallel = o.parallel ?? null;
    this.lead = !this.parallel || this.parallel.rank === 0;
    this.log = this.lead ? o.log : () => undefined;
    const world = this.parallel?.world ?? 1;
    this.globalBatch = o.globalBatch * world;
    this.microBatch = o.microBatch;
    this.gradAccum = o.gradAccum;
    this.epochs = o.epochs;
    this.maxSteps = o.maxSteps;
    model.lm.gradientCheckpointing = o.gradientCheckpointing;
    model.setStage(this.stage, { trainVision: o.trainVision });
    setupLora(model, o, this.log);
    this.trainable = model.namedParameters().filter(([, p]) => p.requiresGrad);
    if (!this.trainable.length) throw new Error('[train] no trainable parameters');
    const w = model.lm.embed.getParameter('weight')!;
    this.device = w.device;
    this.dtype = w.dtype;
    const groups = paramGroups(this.trainable, o.weightDecay, o);
    const adamw = { lr: o.lr, weightDecay: o.weightDecay };
    const params = this.trainable.map(([, p]) => p);
    this.optimizer = this.parallel ? this.parallel.makeOptimizer(params, groups, adamw, model.lm.layers.items) : new AdamW(groups, adamw);
    this.stepsPerEpoch = Math.max(1, Math.ceil(Math.ceil(dataset.length / this.microBatch) / (this.gradAccum * world)));
    this.state = {
      version: 1,
      stage: this.stage,
      step: 0,
      totalSteps: o.maxSteps !== undefined ? o.maxSteps : Math.ceil(this.epochs * this.stepsPerEpoch),
      epoch: 0,
      batchInEpoch: 0,
      seed: o.seed,
      numSamples: dataset.length,
      samplesSeen: 0,
      tokensSeen: 0,
      options: {
        lr: o.lr,
        epochs: this.epochs,
        globalBatch: this.globalBatch,
        microBatch: this.microBatch,
        gradAccum: this.gradAccum,
        maxSteps: o.maxSteps !== undefined ? o.maxSteps : null,
        warmupRatio: o.warmupRatio,
        weightDecay: o.weightDecay,
        maxGradNorm: o.maxGradNorm,
        groupByModalityLength: o.groupByModalityLength,
        template: dataset.spec.template,
        aspect: dataset.spec.aspect,
        dtype: this.dtype,
      },
    };
  }

  get totalSteps(): number {
    return this.state.totalSteps;
  }

  /** Micro-batches (sample positions) of one epoch, in order. */
  epochPlan(epoch: number): number[][] {
    const order = epochOrder(this.dataset.samples, {
      seed: this.state.seed,
      epoch,
      batchSize: this.microBatch,
      worldSize: this.gradAccum * (this.parallel?.world ?? 1),
      groupByModalityLength: this.opts.groupByModalityLength,
    });
    return microBatches(order, this.microBatch);
  }

  /** lr used by step `s` (0-based). */
  lrAt(s: number): number {
    return cosineWithWarmup(s, this.state.totalSteps, this.opts.lr, this.opts.warmupRatio);
  }

  private toPixels(b: CollatedBatch): Tensor | null {
    if (!b.pixels) return null;
    const S = b.imageSize;
    return fromTypedArray(b.pixels, [b.numImages, 3, S, S], { dtype: this.dtype, device: this.device });
  }

  /** Forward + backward of one micro-batch with its loss scaled by `scale`; returns the unscaled loss. */
  microStep(b: CollatedBatch, scale: number): number {
    const run = (): number =>
      tidy(() => {
        const pixelValues = this.toPixels(b);
        const { loss } = this.model.loss({ inputIds: b.inputIds, attentionMask: b.attentionMask, labels: b.labels, pixelValues });
        (scale === 1 ? loss : mul(loss, scale)).backward();
        return loss.item();
      });
    return this.parallel ? this.parallel.pass(run) : run();
  }

  private scaleGrads(f: number): void {
    noGrad(() => {
      for (const [, p] of this.trainable)
        if (p.grad) {
          const s = mul(p.grad, f);
          copyInto(p.grad, s);
          s.dispose();
        }
    });
  }

  private logPath(): string | null {
    return this.opts.outputDir ? path.join(this.opts.outputDir, LOG_FILE) : null;
  }

  /** Start (or, after resume, trim to the resumed step) the JSONL log; a torn last line is dropped. */
  private prepareLog(): void {
    if (this.logReady) return;
    this.logReady = true;
    const f = this.logPath();
    if (!f || !this.lead) return;
    fs.mkdirSync(path.dirname(f), { recursive: true });
    const keep = this.state.step > 0 ? readTrainLog<StepRecord>(f, this.log).filter((r) => r.step <= this.state.step) : [];
    fs.writeFileSync(f, keep.map((r) => JSON.stringify(r) + '\n').join(''));
  }

  /** All logged steps (earlier runs included when resuming with an output dir). */
  fullHistory(): StepRecord[] {
    const f = this.logPath();
    if (f && fs.existsSync(f)) return readTrainLog<StepRecord>(f, this.log);
    return this.history.slice();
  }

  /** Ends train() after the optimizer step under way (or the next one), with a checkpoint and no final
   *  model: what Ctrl-C does in `llava train`. */
  requestStop(): void {
    this.stopRequested = true;
  }

  /**
   * Train until `untilStep` optimizer steps are done (default: the whole schedule). Saves checkpoints every
   * saveSteps and at the end (when outputDir is set), then the final weights and the loss plot.
   */
  async train(o: { untilStep?: number } = {}): Promise<TrainResult> {
    const until = Math.min(o.untilStep ?? this.state.totalSteps, this.state.totalSteps);
    const maxEpochs = this.maxSteps !== undefined ? Infinity : this.epochs;
    const idle = nothingToDo(this.state, until, maxEpochs, this.resumedFrom);
    if (idle) throw new Error(idle);
    const t0 = Date.now();
    this.stopRequested = false;
    if (this.opts.outputDir && this.lead) for (const line of cleanStaleTemps(this.opts.outputDir)) this.log(`[train] ${line} (left by a killed run)`);
    this.prepareLog();
    const progress = new Progress({
      mode: this.lead ? this.opts.progress : 'none',
      label: this.opts.label,
      unit: 'step ',
      total: this.state.totalSteps,
      done: this.state.step,
      every: resolveOne('logEvery', this.opts.logEvery, { totalSteps: this.state.totalSteps }),
      log: this.log,
    });
    let lastCheckpoint: string | null = null;
    const stepsBefore0 = this.history.length;
    const pool = this.opts.workers > 0 ? new EncoderPool(this.dataset.spec, this.opts.workers) : null;
    try {
      while (this.state.step < until && this.state.epoch < maxEpochs && !this.stopRequested) {
        const plan = this.epochPlan(this.state.epoch);
        if (this.state.batchInEpoch >= plan.length) {
          this.state.epoch++;
          this.state.batchInEpoch = 0;
          continue;
        }
        const mine = this.parallel ? this.parallel.rankPlan(plan, this.gradAccum) : plan;
        const loader = new PrefetchLoader(this.dataset, mine.slice(this.state.batchInEpoch), {
          prefetch: this.opts.prefetch,
          pool: pool ?? undefined,
        });
        const stepsBefore = this.state.step;
        const fromStart = this.state.batchInEpoch === 0;
        try {
          while (this.state.step < until && this.state.batchInEpoch < plan.length && !this.stopRequested) {
            const r = await this.optimizerStep(loader, plan.length);
            if (!r) continue;
            this.history.push(r);
            const f = this.logPath();
            if (f && this.lead) fs.appendFileSync(f, JSON.stringify(r) + '\n');
            progress.update(r.step, [`loss ${r.loss.toFixed(4)}`, `lr ${r.lr.toExponential(2)}`, `${r.tokens_per_s.toFixed(0)} tok/s`]);
            const save = this.opts.saveSteps;
            if (this.opts.outputDir && save > 0 && this.state.step % save === 0 && this.state.step < this.state.totalSteps)
              lastCheckpoint = this.saveCheckpoint();
          }
        } finally {
          loader.close();
        }
        if (this.state.batchInEpoch >= plan.length) {
          if (fromStart && this.state.step === stepsBefore)
            throw new Error('[train] a whole epoch produced no optimizer step (every sample was skipped?)');
          this.state.epoch++;
          this.state.batchInEpoch = 0;
        }
      }
    } finally {
      progress.stop();
      pool?.close();
    }
    const interrupted = this.stopRequested && this.state.step < until;
    const ran = this.history.length - stepsBefore0;
    if (ran === 0 && !interrupted)
      throw new Error(`[train] no optimizer step was run (step ${this.state.step} of ${this.state.totalSteps}): nothing saved`);
    if (this.opts.outputDir && ran > 0) {
      lastCheckpoint = this.saveCheckpoint();
      if (!interrupted && (this.state.step >= this.state.totalSteps || o.untilStep === undefined)) this.saveFinal();
    }
    const h = this.history;
    return {
      steps: h.length,
      history: h.slice(),
      firstLoss: h.length ? h[0].loss : NaN,
      lastLoss: h.length ? h[h.length - 1].loss : NaN,
      seconds: (Date.now() - t0) / 1000,
      checkpoint: lastCheckpoint,
      interrupted,
    };
  }

  /** One optimizer step over the next group of micro-batches; null when every sample of it was dropped. */
  private async optimizerStep(loader: PrefetchLoader, planLength: number): Promise<StepRecord | null> {
    const t0 = performance.now();
    const k = Math.min(this.gradAccum * (this.parallel?.world ?? 1), planLength - this.state.batchInEpoch);
    let lossSum = 0;
    let n = 0;
    let [inTokens, samples, tokens] = [0, 0, 0];
    for (let i = 0; i < k; i++) {
      const e = await loader.nextEntry();
      if (!e) break;
      this.state.batchInEpoch++;
      if (!e.batch) continue;
      this.parallel?.beforeMicroBatch(i, k);
      const l = this.microStep(e.batch, 1 / k);
      if (!Number.isFinite(l)) {
        this.optimizer.zeroGrad();
        throw new Error(`[train] non-finite loss ${l} at step ${this.state.step + 1} (samples ${e.batch.ids.join(', ')})`);
      }
      this.lastBatch = e.batch;
      lossSum += l;
      n++;
      inTokens += e.batch.inputTokens;
      samples += e.batch.ids.length;
      tokens += e.batch.supervisedTokens;
    }
    if (this.parallel) {
      // zero3's padding passes and the gradient buckets go before any other collective of the step.
      const last = this.lastBatch;
      this.parallel.flushGrads(k, last && ((): void => void this.microStep(last, 0)));
      [lossSum, n, inTokens, samples, tokens] = this.parallel.stepStats([lossSum, n, inTokens, samples, tokens]);
    }
    this.state.samplesSeen += samples;
    this.state.tokensSeen += tokens;
    if (n === 0) return null;
    // Dropped micro-batches: average over the ones that ran (distributed: on the summed gradients).
    if (this.parallel) this.parallel.syncGrads(n < k ? k / n : 1);
    else if (n < k) this.scaleGrads(k / n);
    const params = this.trainable.map(([, p]) => p);
    let gradNorm: number | undefined;
    if (this.opts.maxGradNorm > 0)
      gradNorm = this.parallel ? this.parallel.clipGradNorm(params, this.opts.maxGradNorm) : clipGradNorm(params, this.opts.maxGradNorm);
    const lr = this.lrAt(this.state.step);
    this.optimizer.stepUpdate(lr);
    this.parallel?.afterStep(params);
    this.optimizer.zeroGrad();
    this.state.step++;
    const dt = (performance.now() - t0) / 1000;
    const rec: StepRecord = {
      step: this.state.step,
      epoch: Number((this.state.epoch + this.state.batchInEpoch / planLength).toFixed(4)),
      loss: lossSum / n,
      lr,
      tokens_per_s: Number((inTokens / Math.max(dt, 1e-9)).toFixed(1)),
    };
    if (gradNorm !== undefined) rec.grad_norm = gradNorm;
    return rec;
  }

  /** Write checkpoint-{step} under outputDir (atomically) and prune old ones; returns its path. */
  saveCheckpoint(dir?: string): string {
    const out = this.opts.outputDir;
    const target = dir ?? (out ? path.join(out, `checkpoint-${this.state.step}`) : null);
    if (!target) throw new Error('[train] saveCheckpoint needs a directory (no outputDir set)');
    const lead = (tmp: string): void => {
      saveWeights(this.model, tmp, this.stage, this.opts.baseModelDir, this.modelFilesPatch());
      const pieces = optimizerPieces(
        this.optimizer,
        this.trainable.map(([, p]) => p),
        this.parallel,
      );
      if (!this.parallel?.sharded) saveOptimizer(this.optimizer, path.join(tmp, OPTIMIZER_FILE), { [PIECES_KEY]: JSON.stringify(pieces) });
      writeFileAtomic(path.join(tmp, STATE_FILE), JSON.stringify(this.state, null, 2) + '\n');
    };
    if (this.parallel) this.parallel.saveCheckpoint(target, this.optimizer, lead);
    else writeDirAtomic(target, lead);
    if (!dir && out && this.lead) pruneCheckpoints(out, this.opts.saveTotalLimit);
    return target;
  }

  /** How saved model folders differ from the base's files (model_files.ts). */
  modelFilesPatch(): ModelFilesPatch {
    return modelFilesPatch(this.model, this.dataset.spec, this.opts.configPatch);
  }

  /** Final weights in outputDir (stage 1: mm_projector.safetensors; stage 2: model.safetensors + configs),
   *  trainer_state.json and loss.png. */
  saveFinal(): void {
    const out = this.opts.outputDir;
    if (!out) return;
    // Every rank takes part when the weights are sharded (zero3 gathers them); rank 0 writes.
    const write = (): void => void (this.lead && saveWeights(this.model, out, this.stage, this.opts.baseModelDir, this.modelFilesPatch()));
    if (this.parallel) this.parallel.withWeights(write);
    else write();
    if (!this.lead) return;
    writeFileAtomic(path.join(out, STATE_FILE), JSON.stringify(this.state, null, 2) + '\n');
    if (this.opts.plot) {
      const pts = this.fullHistory().map((r) => ({ step: r.step, loss: r.loss }));
      writeLossPlot(path.join(out, PLOT_FILE), pts, { title: `stage ${this.stage} loss` });
    }
  }

  /**
   * Continue from a checkpoint directory: weights, optimizer moments, step, epoch and data position. The
   * schedule (epochs / max steps, options.ts `onResume: 'checkpoint-unless-given'`) is the checkpoint's
   * unless one of them is in `given` (default: the options given to the constructor; `llava train` passes
   * the flags typed on its command line); the seed is always the checkpoint's.
   */
  resume(dir: string, o: { given?: Iterable<string> } = {}): void {
    const s = readTrainerState(dir);
    if (s.stage !== this.stage) throw new Error(`[train] checkpoint ${dir} is from stage ${s.stage}, this run is stage ${this.stage}`);
    if (s.numSamples !== this.dataset.length)
      throw new Error(
        `[train] checkpoint ${dir} was trained on ${s.numSamples} samples, the dataset now has ${this.dataset.length}: the data order would differ`,
      );
    const rec = s.options ?? {};
    checkSameDataOrder(dir, rec, { ...this.opts, globalBatch: this.globalBatch }, this.parallel?.world ?? 1);
    const given = new Set(o.given ?? this.given);
    const ownSchedule = RESUME_UNLESS_GIVEN.some((k: string) => given.has(k));
    const computed = this.state.totalSteps;
    const wfile = path.join(dir, this.stage === 1 ? PROJECTOR_FILE : MODEL_FILE);
    const load = (): void => void loadPartialWeights(this.model, wfile, this.stage === 1 ? { only: 'projector' } : {});
    if (this.parallel) this.parallel.withWeights(load, true);
    else load();
    // Any world size and strategy wrote it (distributed.ts, optimizer_shards.ts).
    const params = this.trainable.map(([, p]) => p);
    if (!loadCheckpointOptimizer(dir, this.optimizer, params, this.parallel, s.step))
      this.log(`[train] ${dir} has no ${OPTIMIZER_FILE}: optimizer moments start from zero`);
    this.optimizer.step = s.step;
    // The checkpoint's seed and data position replace this run's; the options it recorded stay on record
    // under this run's schedule when this run gives its own, and with this run's per-process batching.
    this.state = { ...s, options: { ...this.state.options, ...rec, gradAccum: this.gradAccum, globalBatch: this.globalBatch } };
    if (ownSchedule) {
      this.state.totalSteps = computed;
      this.state.options.epochs = this.epochs;
      this.state.options.maxSteps = this.maxSteps ?? null;
      if (computed !== s.totalSteps)
        this.log(`[train] schedule length ${computed} from this run's epochs / max steps (the checkpoint's was ${s.totalSteps})`);
    } else {
      const ms = rec.maxSteps;
      this.maxSteps = typeof ms === 'number' ? ms : undefined;
      if (typeof rec.epochs === 'number') this.epochs = rec.epochs;
      if (s.totalSteps !== computed)
        this.log(`[train] resuming with the checkpoint's schedule length ${s.totalSteps} (this run computed ${computed})`);
    }
    this.resumedFrom = dir;
    this.logReady = false;
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}
